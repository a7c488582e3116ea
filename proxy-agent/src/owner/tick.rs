//! The periodic work (every second) and the full scans it starts: expiry,
//! placement, Agones growth, and the repairs a scan finds.

use std::time::{Duration, Instant};

use proxy_common::Counter;

use super::Owner;
use crate::{
    cluster::{index::MergeReport, now_ns},
    dataplane::scanner::ScanPart,
};

impl Owner {
    /// The periodic work; errors are logged and retried next tick.
    pub(super) fn tick(&mut self) {
        let started = Instant::now();
        self.settle_forwarded(); // forwarded requests nobody answered
        let raw = &self.cluster.cfg.raw;
        let move_ns = raw.move_timeout_ms * 1_000_000;
        match self.cluster.expire_moving(now_ns(), move_ns) {
            Ok(0) => {}
            Ok(n) => {
                self.expired_moving += n as u64;
                log::info!("expired {n} moved sessions that never reconnected");
            }
            Err(e) => log::warn!("expiring moved sessions: {e:#}"),
        }
        let loads = self.cluster.loads();
        if let Err(e) = self.cluster.refresh_placement(&loads) {
            log::warn!("refreshing placement: {e:#}");
        }
        if self.links.agones.is_some() {
            // Departed shards whose players have all moved leave the maps.
            self.reconcile_desired(false);
            self.maybe_grow();
        }
        self.maybe_scan();
        self.last_tick_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        self.publish();
    }

    /// Starts a full scan when one is due: at the interval, or at once when
    /// the ring overflowed or the index holds far more pending players than
    /// the LRU can (a flood: evictions only a scan sees).
    pub(super) fn maybe_scan(&mut self) {
        if self.scan.in_flight {
            return;
        }
        let lost = self.cluster.tables().counter(Counter::SessionEventLost).unwrap_or_else(|e| {
            log::warn!("{e:#}");
            0
        });
        let due = self.scan.last_started.elapsed() >= self.scan.interval
            || lost > self.scan.lost_at_start
            || self.cluster.index.pending_len() > 2 * self.cluster.cfg.raw.max_pending as usize;
        if !due {
            return;
        }
        let generation = self.cluster.index.begin_scan();
        if self.scan.scanner.send(generation).is_ok() {
            self.scan.in_flight = true;
            self.scan.generation = generation;
            self.scan.merged = MergeReport::default();
            self.scan.expired = 0;
            self.scan.last_started = Instant::now();
            self.scan.lost_at_start = lost;
        }
    }

    /// Merges a scan's chunk as it comes (the owner answers requests between
    /// two), and finishes the merge at its end.
    pub(super) fn scanned(&mut self, generation: u64, result: Result<ScanPart, String>, took: Duration) {
        if !self.scan.in_flight || generation != self.scan.generation {
            return; // a scan given up on: its chunks go back unread
        }
        let idle_ns = self.cluster.cfg.raw.session_idle_timeout_ms * 1_000_000;
        let chunk = match result {
            Ok(ScanPart::Chunk(chunk)) => chunk,
            Ok(ScanPart::Done) => return self.scan_done(generation, took),
            Err(e) => {
                self.give_up_scan();
                log::warn!("scanning the session tables: {e}; the index keeps the events and the chunks merged so far");
                return;
            }
        };
        let merged = &mut self.scan.merged;
        match self.cluster.merge_scan_chunk(generation, chunk.pending, chunk.entries(), now_ns(), idle_ns, merged) {
            Ok(idle) => {
                self.scan.expired += idle;
                self.share_touches();
            }
            Err(e) => {
                self.give_up_scan();
                log::warn!("applying the session scan: {e:#}");
            }
        }
    }

    /// Ignores the rest of the scan in flight (the next one starts clean);
    /// the idle sessions its chunks removed still count.
    pub(super) fn give_up_scan(&mut self) {
        self.scan.in_flight = false;
        self.expired_idle += std::mem::take(&mut self.scan.expired) as u64;
    }

    pub(super) fn scan_done(&mut self, generation: u64, took: Duration) {
        self.scan.in_flight = false;
        let mut report = std::mem::take(&mut self.scan.merged);
        report.removed += self.cluster.index.finish_scan(generation);
        let expired = std::mem::take(&mut self.scan.expired);
        self.scan.done += 1;
        self.scan.last_ms = Some(took.as_secs_f64() * 1000.0);
        self.scan.repaired.add(&report);
        self.expired_idle += expired as u64;
        if expired > 0 {
            log::info!("expired {expired} idle sessions");
        }
        let loads = self.cluster.loads();
        if let Err(e) = self.cluster.refresh_placement(&loads) {
            log::warn!("refreshing placement after a scan: {e:#}");
        }
        if report.added + report.corrected > 0 {
            log::warn!(
                "the session scan repaired the index: {} sessions no event reported, {} corrected",
                report.added,
                report.corrected
            );
        }
    }
}
