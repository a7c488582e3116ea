//! The agent's index of every session the data plane holds, so that status,
//! placement, migrations and failovers cost time in proportion to the players
//! (a walk over this index) instead of to the tables' capacity (a kernel
//! scan of 262,144 buckets).
//!
//! It follows the tables from three sources:
//! - the data plane's `SESSION_EVENTS` ring: every placement, promotion and
//!   re-sync it makes;
//! - the agent's own writes (moves, expiry), applied here as they are made;
//! - a full scan at a low rate, which repairs what no event reports: LRU
//!   evictions from PENDING, events lost to a full ring, and each session's
//!   `last_seen_ns` (which the idle expiry needs).
//!
//! A scan is a snapshot taken while events keep flowing, so merging it must
//! not undo newer news: every entry carries the generation of its last
//! change, a scan is tagged with the generation it started in, and an entry
//! changed since then is left as it is. A scan arrives in chunks (SESSIONS
//! first, then PENDING) and is merged chunk by chunk, so the agent never
//! holds a copy of the tables; `finish_scan` then drops what it did not see.
//!
//! Memory: 24 bytes a session (see `session_table`).

mod session_table;

use std::collections::HashMap;

use anyhow::Result;
use proxy_common::{Session, SessionEvent, SessionKey, SESSION_PLACED, SESSION_PROMOTED, SESSION_RESYNCED};

pub use self::session_table::{Indexed, GROUP_LIMIT};
use self::session_table::{Table, SEEN};
use crate::dataplane::map_writer::MapWriter;
pub use crate::dataplane::tables::Scan;

/// What merging a scan found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeReport {
    /// Sessions the index did not know (events lost to a full ring).
    pub added: usize,
    /// Sessions the tables no longer hold (LRU evictions of pending players).
    pub removed: usize,
    /// Sessions whose group, epoch or table differed.
    pub corrected: usize,
}

impl MergeReport {
    pub fn add(&mut self, other: &MergeReport) {
        self.added += other.added;
        self.removed += other.removed;
        self.corrected += other.corrected;
    }
}

/// Sessions of one group by (epoch, pending): what loads are made of.
pub type GroupCounts = HashMap<(u32, bool), usize>;

#[derive(Debug, Default)]
pub struct SessionIndex {
    table: Table,
    /// Bumped by every scan. An entry keeps it modulo 4; `normalized` keeps
    /// the stamps readable (see `age`).
    generation: u32,
    /// The generation in which every stamp was last brought to "changed now"
    /// or "changed before"; from then on stamps differ from `generation` by
    /// at most `generation - normalized + 1`, which must stay under 4.
    normalized: u32,
    /// A scan's chunks were merged and it was not finished: some entries
    /// may carry its `SEEN` mark.
    merging: bool,
    pending: usize,
    /// Kept with every change, so loads cost a walk over the groups, not
    /// over the sessions.
    counts: HashMap<u32, GroupCounts>,
}

impl SessionIndex {
    /// An index holding exactly what a scan found.
    pub fn from_scan(scan: Scan) -> Self {
        let mut index = Self::default();
        index.merge(0, scan);
        index
    }

    /// An index holding what both tables hold, read a batch at a time (as
    /// `Tables::scan_sessions`, PENDING first) and merged as it is read: a
    /// start that finds a million sessions pinned never holds a copy.
    pub fn from_tables(tables: &dyn MapWriter) -> Result<Self> {
        let mut index = Self::default();
        let mut report = MergeReport::default();
        let mut pending = Vec::new();
        tables.each_session(true, &mut |k, v| pending.extend(k.iter().copied().zip(v.iter().copied())))?;
        tables.each_session(false, &mut |k, v| {
            index.merge_chunk(0, false, k.iter().copied().zip(v.iter().copied()), &mut report);
        })?;
        index.merge_chunk(0, true, pending, &mut report);
        index.finish_scan(0);
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.table.len
    }

    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// Slots the table has room for (memory = 24 bytes each).
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Sessions in PENDING.
    pub fn pending_len(&self) -> usize {
        self.pending
    }

    /// Per group: how many sessions it holds at each (epoch, pending).
    pub fn group_counts(&self) -> impl Iterator<Item = (u32, &GroupCounts)> {
        self.counts.iter().map(|(g, c)| (*g, c))
    }

    fn count(&mut self, e: &Indexed, add: bool) {
        let group = self.counts.entry(e.group()).or_default();
        let n = group.entry((e.epoch, e.pending)).or_default();
        if add {
            *n += 1;
            self.pending += e.pending as usize;
            return;
        }
        *n -= 1;
        self.pending -= e.pending as usize;
        if *n == 0 {
            group.remove(&(e.epoch, e.pending));
            if group.is_empty() {
                self.counts.remove(&e.group());
            }
        }
    }

    pub fn get(&self, key: &SessionKey) -> Option<&Indexed> {
        self.table.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SessionKey, &Indexed)> {
        self.table.iter().map(|s| (&s.key, &s.val))
    }

    /// How many generations before the current one `e` last changed: 0, 1,
    /// 2, or 3 for "3 or more".
    fn age(&self, e: &Indexed) -> u32 {
        self.generation.wrapping_sub(e.stamp()) & 3
    }

    fn changed_in(&self, e: &Indexed, started: u32) -> bool {
        self.age(e) <= self.generation.wrapping_sub(started).min(3)
    }

    /// True when the index changed this session in generation `started` or
    /// later (so a scan begun then may be older than what the index knows).
    /// `started` is the last generation `begin_scan` gave.
    pub fn changed_since(&self, key: &SessionKey, started: u64) -> bool {
        self.table.get(key).is_some_and(|e| self.changed_in(e, started as u32))
    }

    /// True when the scan being merged found this session in SESSIONS (a
    /// PENDING copy of it is then a leftover of its promotion).
    pub fn scanned_established(&self, key: &SessionKey) -> bool {
        self.table.get(key).is_some_and(|e| e.seen() && !e.pending)
    }

    /// Records a session as the agent (or the data plane) wrote it.
    pub fn set(&mut self, key: SessionKey, session: Session, pending: bool) {
        let entry = Indexed::new(&session, pending, self.generation);
        match self.table.find(&key) {
            Some(i) => {
                let old = self.table.replace(i, entry);
                self.count(&old, false);
            }
            None => self.table.insert_new(key, entry),
        }
        self.count(&entry, true);
    }

    pub fn remove(&mut self, key: &SessionKey) -> Option<Indexed> {
        let i = self.table.find(key)?;
        let old = self.table.remove_at(i);
        self.count(&old, false);
        Some(old)
    }

    /// Folds one data-plane event in. Unknown kinds are ignored.
    pub fn apply(&mut self, ev: &SessionEvent, now_ns: u64) {
        let known = self.get(&ev.key).copied();
        match ev.kind {
            SESSION_PLACED => {
                self.set(ev.key, Session { group: ev.group, epoch: ev.epoch, last_seen_ns: now_ns }, true);
            }
            SESSION_PROMOTED => {
                let last_seen_ns = known.map_or(now_ns, |k| k.last_seen_ns());
                self.set(ev.key, Session { group: ev.group, epoch: ev.epoch, last_seen_ns }, false);
            }
            SESSION_RESYNCED => {
                let pending = known.is_some_and(|k| k.pending);
                self.set(ev.key, Session { group: ev.group, epoch: ev.epoch, last_seen_ns: now_ns }, pending);
            }
            _ => {}
        }
    }

    /// Starts a scan: changes from now on are newer than what it will read.
    /// (A scan begun before and never finished is given up.)
    pub fn begin_scan(&mut self) -> u64 {
        let next = self.generation.wrapping_add(1).max(1);
        if self.merging || next.wrapping_sub(self.normalized) > 2 || next < self.generation {
            self.normalize();
        }
        self.generation = next;
        next as u64
    }

    /// Clears the scan marks and brings every stamp to "changed in this
    /// generation" or "in the one before".
    fn normalize(&mut self) {
        let g = self.generation;
        for s in self.table.iter_mut() {
            s.val.flags &= !SEEN;
            if s.val.stamp() != g & 3 {
                s.val.set_stamp(g.wrapping_sub(1));
            }
        }
        self.normalized = g;
        self.merging = false;
    }

    /// Merges one chunk of a scan that began in generation `started`, from
    /// PENDING (`pending`) or SESSIONS; SESSIONS must come first (a
    /// promotion racing the scan shows in both tables, and the established
    /// copy is the truth). Sessions unchanged since the scan began take its
    /// word (added, corrected or refreshed); newer ones stay as they are.
    pub fn merge_chunk(
        &mut self,
        started: u64,
        pending: bool,
        entries: impl IntoIterator<Item = (SessionKey, Session)>,
        report: &mut MergeReport,
    ) {
        self.merging = true;
        let started = started as u32;
        for (key, s) in entries {
            let Some(i) = self.table.find(&key) else {
                let mut fresh = Indexed::new(&s, pending, self.generation);
                fresh.flags |= SEEN;
                self.table.insert_new(key, fresh);
                self.count(&fresh, true);
                if started > 0 {
                    report.added += 1;
                }
                continue;
            };
            let e = self.table.value(i);
            if e.seen() {
                continue; // already taken from the established table
            }
            if self.changed_in(&e, started) {
                self.table.value_mut(i).flags |= SEEN;
                continue; // newer than the scan
            }
            let mut fresh = Indexed::new(&s, pending, e.stamp());
            fresh.flags |= SEEN;
            self.table.replace(i, fresh);
            if (e.group(), e.epoch, e.pending) != (fresh.group(), fresh.epoch, pending) {
                report.corrected += 1;
                self.count(&e, false);
                self.count(&fresh, true);
            }
        }
    }

    /// Ends the merge of the scan begun in generation `started`: sessions it
    /// did not see and nothing changed since it began are gone from the
    /// tables. Returns how many were removed.
    pub fn finish_scan(&mut self, started: u64) -> usize {
        let started = started as u32;
        let mut stale: Vec<SessionKey> = Vec::new();
        for s in self.table.iter() {
            if !s.val.seen() && !self.changed_in(&s.val, started) {
                stale.push(s.key);
            }
        }
        self.normalize();
        for key in &stale {
            self.remove(key);
        }
        stale.len()
    }

    /// Merges a whole scan that began in generation `started` (see
    /// `merge_chunk` and `finish_scan`).
    pub fn merge(&mut self, started: u64, scan: Scan) -> MergeReport {
        let mut report = MergeReport::default();
        self.merge_chunk(started, false, scan.established, &mut report);
        self.merge_chunk(started, true, scan.pending, &mut report);
        report.removed = self.finish_scan(started);
        report
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(n: u32) -> SessionKey {
        SessionKey { client_addr: n, client_port: 7, frontend: 0 }
    }

    fn s(group: u32, epoch: u32) -> Session {
        Session { group, epoch, last_seen_ns: 5 }
    }

    fn ev(n: u32, kind: u32, group: u32, epoch: u32) -> SessionEvent {
        SessionEvent { key: key(n), kind, group, epoch, _pad: 0 }
    }

    fn counts(idx: &SessionIndex) -> BTreeMap<u32, usize> {
        idx.group_counts().map(|(g, c)| (g, c.values().sum())).collect()
    }

    #[test]
    fn events_follow_a_player_from_placement_to_resync() {
        let mut idx = SessionIndex::default();
        idx.apply(&ev(1, SESSION_PLACED, 3, 0), 10);
        assert_eq!((idx.len(), idx.pending_len()), (1, 1));
        idx.apply(&ev(1, SESSION_PROMOTED, 3, 0), 20);
        let e = *idx.get(&key(1)).unwrap();
        assert_eq!((e.group(), e.epoch(), e.pending, e.last_seen_ns()), (3, 0, false, 10));
        assert_eq!(idx.pending_len(), 0);
        idx.apply(&ev(1, SESSION_RESYNCED, 3, 1), 30);
        assert_eq!(idx.get(&key(1)).unwrap().epoch(), 1);
        idx.apply(&ev(1, 99, 0, 0), 40);
        assert_eq!(idx.get(&key(1)).unwrap().group(), 3, "unknown kinds change nothing");
        // A shard's refusal names a player but changes no session.
        idx.apply(&ev(1, proxy_common::SESSION_SHARD_REFUSED, 7, 0), 50);
        idx.apply(&ev(2, proxy_common::SESSION_SHARD_REFUSED, 7, 0), 50);
        assert_eq!((idx.len(), idx.get(&key(1)).unwrap().group()), (1, 3), "a refusal is no session event");
    }

    #[test]
    fn a_scan_repairs_lost_events_and_evictions_but_not_newer_news() {
        let mut idx =
            SessionIndex::from_scan(Scan { established: vec![(key(1), s(1, 0))], pending: vec![(key(2), s(1, 0))] });
        assert_eq!((idx.len(), idx.pending_len()), (2, 1));
        let started = idx.begin_scan();
        // After the scan began: player 3 placed, player 1 moved by the agent.
        idx.apply(&ev(3, SESSION_PLACED, 1, 0), 50);
        idx.set(key(1), s(2, 9), false);
        // The scan saw: 1 as it was, 2 evicted, 4 (an event that was lost).
        let report =
            idx.merge(started, Scan { established: vec![(key(1), s(1, 0)), (key(4), s(1, 0))], pending: vec![] });
        assert_eq!(report, MergeReport { added: 1, removed: 1, corrected: 0 });
        assert_eq!(idx.get(&key(1)).unwrap().group(), 2, "the agent's newer write stands");
        assert!(idx.get(&key(2)).is_none(), "the eviction is seen");
        assert!(idx.get(&key(3)).unwrap().pending, "a newer placement stands though the scan missed it");
        assert!(idx.get(&key(4)).is_some());
        assert_eq!((idx.len(), idx.pending_len()), (3, 1));
        assert_eq!(counts(&idx), [(1, 2), (2, 1)].into_iter().collect(), "the per-group counts follow every change");
    }

    #[test]
    fn a_promotion_caught_in_both_tables_counts_once_as_established() {
        let idx =
            SessionIndex::from_scan(Scan { established: vec![(key(1), s(1, 0))], pending: vec![(key(1), s(1, 0))] });
        assert_eq!((idx.len(), idx.pending_len()), (1, 0));
    }

    #[test]
    fn a_scan_merged_in_chunks_matches_one_merged_whole() {
        let established: Vec<(SessionKey, Session)> = (0..5000).map(|n| (key(n), s(n % 7 + 1, n % 3))).collect();
        let pending: Vec<(SessionKey, Session)> = (4990..6000).map(|n| (key(n), s(2, 0))).collect();
        let start = || {
            let mut idx = SessionIndex::default();
            for n in (0..8000).step_by(2) {
                idx.set(key(n), s(1, 0), false);
            }
            idx
        };
        let mut whole = start();
        let started = whole.begin_scan();
        let want = whole.merge(started, Scan { established: established.clone(), pending: pending.clone() });
        let mut chunked = start();
        let started = chunked.begin_scan();
        let mut got = MergeReport::default();
        for c in established.chunks(333) {
            chunked.merge_chunk(started, false, c.iter().copied(), &mut got);
        }
        for c in pending.chunks(100) {
            chunked.merge_chunk(started, true, c.iter().copied(), &mut got);
        }
        got.removed = chunked.finish_scan(started);
        assert_eq!(got, want);
        assert_eq!(got.removed, 1000, "the even keys from 6000 on");
        let all = |i: &SessionIndex| -> BTreeMap<u32, (Session, bool)> {
            i.iter().map(|(k, e)| (k.client_addr, (e.session(), e.pending))).collect()
        };
        assert_eq!(all(&chunked), all(&whole));
        assert_eq!(counts(&chunked), counts(&whole));
        assert_eq!(chunked.pending_len(), 1000, "4990..5000 are established");
    }

    #[test]
    fn changes_between_chunks_stand_and_a_given_up_scan_leaves_no_mark() {
        let mut idx = SessionIndex::default();
        for n in 0..10 {
            idx.set(key(n), s(1, 0), false);
        }
        let started = idx.begin_scan();
        let mut report = MergeReport::default();
        idx.merge_chunk(started, false, (0..5).map(|n| (key(n), s(1, 1))), &mut report);
        assert_eq!(report.corrected, 5);
        // Between two chunks: an event moves player 7, the agent removes 8.
        idx.set(key(7), s(3, 0), false);
        idx.remove(&key(8));
        idx.merge_chunk(started, false, (5..10).map(|n| (key(n), s(1, 1))), &mut report);
        assert_eq!(idx.get(&key(7)).unwrap().group(), 3, "newer than the scan");
        assert_eq!(idx.get(&key(8)).unwrap().epoch(), 1, "the scan read it before the removal: it comes back");
        assert_eq!(report.added, 1);
        // The scan fails before its end: the next one starts clean, and a
        // session its chunks do not hold is removed.
        let started = idx.begin_scan();
        idx.merge_chunk(started, false, (1..10).map(|n| (key(n), s(1, 1))), &mut report);
        assert_eq!(idx.finish_scan(started), 1);
        assert!(idx.get(&key(0)).is_none());
        assert_eq!(idx.get(&key(7)).unwrap().group(), 1, "an old change no longer stands");
    }

    #[test]
    fn stamps_stay_right_across_many_scans_finished_or_not() {
        let mut idx = SessionIndex::default();
        idx.set(key(1), s(1, 0), false);
        for round in 0..40u32 {
            let started = idx.begin_scan();
            assert!(!idx.changed_since(&key(1), started), "round {round}: an old change");
            if round % 5 == 0 {
                idx.set(key(2), s(2, round), false);
                assert!(idx.changed_since(&key(2), started));
            }
            // Finished every third round only.
            if round % 3 == 0 {
                let mut report = MergeReport::default();
                idx.merge_chunk(started, false, [(key(1), s(1, 0)), (key(2), s(2, 0))], &mut report);
                idx.finish_scan(started);
                assert!(idx.iter().all(|(_, e)| !e.seen()), "no mark is left");
            }
            assert!(!idx.changed_since(&key(1), started));
        }
    }
}
