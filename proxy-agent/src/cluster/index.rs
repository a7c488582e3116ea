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
//! changed since then is left as it is.

use std::collections::{hash_map::Entry, HashMap};

use proxy_common::{Session, SessionEvent, SessionKey, SESSION_PLACED, SESSION_PROMOTED, SESSION_RESYNCED};

pub use crate::dataplane::tables::Scan;

/// What the index knows of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    pub group: u32,
    pub epoch: u32,
    /// In PENDING (its shard has not answered yet), else in SESSIONS.
    pub pending: bool,
    /// As of the last scan or agent write (the data plane refreshes it
    /// without telling): good for expiry, not for the last second.
    pub last_seen_ns: u64,
    /// Generation of the last change.
    changed: u32,
    /// The last scan that saw it.
    seen_in: u32,
}

impl Indexed {
    pub fn session(&self) -> Session {
        Session { group: self.group, epoch: self.epoch, last_seen_ns: self.last_seen_ns }
    }
}

/// What merging a scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Sessions the index did not know (events lost to a full ring).
    pub added: usize,
    /// Sessions the tables no longer hold (LRU evictions of pending players).
    pub removed: usize,
    /// Sessions whose group, epoch or table differed.
    pub corrected: usize,
}

/// Sessions of one group by (epoch, pending): what loads are made of.
pub type GroupCounts = HashMap<(u32, bool), usize>;

#[derive(Debug, Default)]
pub struct SessionIndex {
    entries: HashMap<SessionKey, Indexed>,
    generation: u32,
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        let group = self.counts.entry(e.group).or_default();
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
                self.counts.remove(&e.group);
            }
        }
    }

    pub fn get(&self, key: &SessionKey) -> Option<&Indexed> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SessionKey, &Indexed)> {
        self.entries.iter()
    }

    /// True when the index changed this session in generation `started` or
    /// later (so a scan begun then may be older than what the index knows).
    pub fn changed_since(&self, key: &SessionKey, started: u64) -> bool {
        self.entries.get(key).is_some_and(|e| e.changed >= started as u32)
    }

    /// Records a session as the agent (or the data plane) wrote it.
    pub fn set(&mut self, key: SessionKey, session: Session, pending: bool) {
        let entry = Indexed {
            group: session.group,
            epoch: session.epoch,
            pending,
            last_seen_ns: session.last_seen_ns,
            changed: self.generation,
            seen_in: 0,
        };
        if let Some(old) = self.entries.insert(key, entry) {
            self.count(&old, false);
        }
        self.count(&entry, true);
    }

    pub fn remove(&mut self, key: &SessionKey) -> Option<Indexed> {
        let old = self.entries.remove(key)?;
        self.count(&old, false);
        Some(old)
    }

    /// Folds one data-plane event in. Unknown kinds are ignored.
    pub fn apply(&mut self, ev: &SessionEvent, now_ns: u64) {
        let known = self.entries.get(&ev.key).copied();
        match ev.kind {
            SESSION_PLACED => {
                self.set(ev.key, Session { group: ev.group, epoch: ev.epoch, last_seen_ns: now_ns }, true);
            }
            SESSION_PROMOTED => {
                let last_seen_ns = known.map_or(now_ns, |k| k.last_seen_ns);
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
    pub fn begin_scan(&mut self) -> u64 {
        self.generation = self.generation.wrapping_add(1).max(1);
        self.generation as u64
    }

    /// Merges a scan that began in generation `started`: sessions unchanged
    /// since then take the scan's word (added, corrected, refreshed or
    /// removed); newer ones stay as they are.
    pub fn merge(&mut self, started: u64, scan: Scan) -> MergeReport {
        let mut report = MergeReport::default();
        let started = started as u32;
        // Established first: a promotion racing the scan shows in both
        // tables, and the established copy is the truth.
        for (pending, list) in [(false, scan.established), (true, scan.pending)] {
            for (key, s) in list {
                let fresh = Indexed {
                    group: s.group,
                    epoch: s.epoch,
                    pending,
                    last_seen_ns: s.last_seen_ns,
                    changed: self.generation,
                    seen_in: started,
                };
                match self.entries.entry(key) {
                    Entry::Occupied(mut o) => {
                        let e = *o.get();
                        if e.seen_in == started {
                            continue; // already taken from the established table
                        }
                        o.get_mut().seen_in = started;
                        if e.changed >= started {
                            continue; // newer than the scan
                        }
                        *o.get_mut() = Indexed { changed: e.changed, ..fresh };
                        if (e.group, e.epoch, e.pending) != (s.group, s.epoch, pending) {
                            report.corrected += 1;
                            self.count(&e, false);
                            self.count(&fresh, true);
                        }
                    }
                    Entry::Vacant(v) => {
                        v.insert(fresh);
                        self.count(&fresh, true);
                        if started > 0 {
                            report.added += 1;
                        }
                    }
                }
            }
        }
        let stale: Vec<SessionKey> =
            self.entries.iter().filter(|(_, e)| e.changed < started && e.seen_in != started).map(|(k, _)| *k).collect();
        for key in stale {
            self.remove(&key);
            report.removed += 1;
        }
        report
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn events_follow_a_player_from_placement_to_resync() {
        let mut idx = SessionIndex::default();
        idx.apply(&ev(1, SESSION_PLACED, 3, 0), 10);
        assert_eq!((idx.len(), idx.pending_len()), (1, 1));
        idx.apply(&ev(1, SESSION_PROMOTED, 3, 0), 20);
        let e = *idx.get(&key(1)).unwrap();
        assert_eq!((e.group, e.epoch, e.pending, e.last_seen_ns), (3, 0, false, 10));
        assert_eq!(idx.pending_len(), 0);
        idx.apply(&ev(1, SESSION_RESYNCED, 3, 1), 30);
        assert_eq!(idx.get(&key(1)).unwrap().epoch, 1);
        idx.apply(&ev(1, 99, 0, 0), 40);
        assert_eq!(idx.get(&key(1)).unwrap().group, 3, "unknown kinds change nothing");
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
        assert_eq!(idx.get(&key(1)).unwrap().group, 2, "the agent's newer write stands");
        assert!(idx.get(&key(2)).is_none(), "the eviction is seen");
        assert!(idx.get(&key(3)).unwrap().pending, "a newer placement stands though the scan missed it");
        assert!(idx.get(&key(4)).is_some());
        assert_eq!((idx.len(), idx.pending_len()), (3, 1));
        let counts: std::collections::BTreeMap<u32, usize> =
            idx.group_counts().map(|(g, c)| (g, c.values().sum())).collect();
        assert_eq!(counts, [(1, 2), (2, 1)].into_iter().collect(), "the per-group counts follow every change");
    }

    #[test]
    fn a_promotion_caught_in_both_tables_counts_once_as_established() {
        let idx =
            SessionIndex::from_scan(Scan { established: vec![(key(1), s(1, 0))], pending: vec![(key(1), s(1, 0))] });
        assert_eq!((idx.len(), idx.pending_len()), (1, 0));
    }
}
