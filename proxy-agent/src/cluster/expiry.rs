//! Taking sessions out: moved players who never came back (decided from the
//! index every tick, no table read) and idle players (decided as each chunk
//! of a full scan is merged: the scan carries the data plane's
//! `last_seen_ns`).

use anyhow::Result;
use proxy_common::{Session, SessionKey};

use super::{index::MergeReport, Cluster};

impl Cluster {
    /// Removes moved sessions whose client has not handshaken again within
    /// `move_ns` of the move (a moved client's game packets never refresh
    /// its `last_seen_ns`, so the index's clock is the data plane's).
    pub fn expire_moving(&mut self, now: u64, move_ns: u64) -> Result<usize> {
        if !self.any_moving() {
            return Ok(0);
        }
        let overdue: Vec<(SessionKey, bool)> = self
            .index
            .iter()
            .filter(|(_, s)| {
                let g = self.group(s.group());
                if g.epoch == s.epoch() {
                    return false;
                }
                let since = s.last_seen_ns().max(self.moved_at.get(&s.group()).copied().unwrap_or(0));
                now.saturating_sub(since) > move_ns
            })
            .map(|(k, s)| (*k, s.pending))
            .collect();
        self.remove_sessions(&overdue)
    }

    /// Folds one chunk of a full scan (begun in generation `started`, see
    /// `SessionIndex::merge_chunk`) into the index, adding what it found to
    /// `report`, and first removes the sessions it shows idle longer than
    /// `idle_ns` that nothing has touched since the scan began. Returns how
    /// many of those the tables still held.
    pub fn merge_scan_chunk(
        &mut self,
        started: u64,
        pending: bool,
        entries: &[(SessionKey, Session)],
        now: u64,
        idle_ns: u64,
        report: &mut MergeReport,
    ) -> Result<usize> {
        // A player who plays through another ingress node is not idle here:
        // that node's touches count as packets seen.
        let last_seen =
            |key: &SessionKey, s: &Session| s.last_seen_ns.max(self.peer_seen.get(key).copied().unwrap_or(0));
        let idle: Vec<usize> = (0..entries.len())
            .filter(|&i| {
                let (key, s) = &entries[i];
                now.saturating_sub(last_seen(key, s)) > idle_ns && !self.index.changed_since(key, started)
            })
            .collect();
        if !pending {
            // Players this node forwarded lately: its peers hear of them.
            let recent = entries.iter().filter(|(_, s)| now.saturating_sub(s.last_seen_ns) <= idle_ns / 2);
            self.recently_seen.extend(recent.map(|(k, _)| *k));
        }
        let mut removed = 0;
        for &i in &idle {
            let key = &entries[i].0;
            // Already gone (LRU eviction, a promotion racing) is fine.
            if self.tables.remove_session(pending, key)? {
                removed += 1;
            }
            // An idle PENDING copy of a session this scan found established
            // is a leftover of its promotion, not the session.
            if !(pending && self.index.scanned_established(key)) {
                self.index.remove(key);
                self.peer_seen.remove(key);
            }
        }
        let kept = entries.iter().enumerate().filter(|(i, _)| idle.binary_search(i).is_err()).map(|(_, e)| *e);
        self.index.merge_chunk(started, pending, kept, report);
        Ok(removed)
    }

    /// Removes sessions from their tables and the index; returns how many the
    /// tables still held.
    fn remove_sessions(&mut self, keys: &[(SessionKey, bool)]) -> Result<usize> {
        let mut removed = 0;
        for (key, pending) in keys {
            // Already gone (LRU eviction, a promotion racing) is fine.
            if self.tables.remove_session(*pending, key)? {
                removed += 1;
            }
            self.index.remove(key);
            self.peer_seen.remove(key);
        }
        Ok(removed)
    }
}
