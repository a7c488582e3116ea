//! Taking sessions out: moved players who never came back (decided from the
//! index every tick, no table read) and idle players (decided at each full
//! scan, which carries the data plane's `last_seen_ns`).

use anyhow::Result;
use proxy_common::SessionKey;

use super::{
    index::{MergeReport, Scan},
    Cluster,
};

/// Sessions one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub idle: usize,
    pub moving: usize,
}

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
                let g = self.group(s.group);
                if g.epoch == s.epoch {
                    return false;
                }
                let since = s.last_seen_ns.max(self.moved_at.get(&s.group).copied().unwrap_or(0));
                now.saturating_sub(since) > move_ns
            })
            .map(|(k, s)| (*k, s.pending))
            .collect();
        self.remove_sessions(&overdue)
    }

    /// Folds a full scan (begun in generation `started`) into the index, and
    /// first removes the sessions it shows idle longer than `idle_ns` that
    /// nothing has touched since the scan began.
    pub fn merge_scan(
        &mut self,
        started: u64,
        mut scan: Scan,
        now: u64,
        idle_ns: u64,
    ) -> Result<(MergeReport, Expired)> {
        let idle = |s: &proxy_common::Session| now.saturating_sub(s.last_seen_ns) > idle_ns;
        let mut victims: Vec<(SessionKey, bool)> = Vec::new();
        for (pending, list) in [(false, &mut scan.established), (true, &mut scan.pending)] {
            list.retain(|(k, s)| {
                let expire = idle(s) && !self.index.changed_since(k, started);
                if expire {
                    victims.push((*k, pending));
                }
                !expire
            });
        }
        let idle = self.remove_sessions(&victims)?;
        Ok((self.index.merge(started, scan), Expired { idle, moving: 0 }))
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
        }
        Ok(removed)
    }
}
