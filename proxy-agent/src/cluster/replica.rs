//! The model's side of peer replication: a session as a record that any
//! ingress node can read (its frontend's public address and its shard's
//! address, never this node's ids), and a peer's records written into this
//! node's maps under this node's own groups. Which record wins is decided
//! before (the owner keeps the stamps); this writes what won.

use std::net::SocketAddrV4;

use anyhow::Result;
use proxy_common::{
    net::{addr_to_map, port_to_map},
    Session, SessionKey,
};

use super::{client_of, now_ns, Cluster};
use crate::peers::{SessionRecord, Stamp};

/// What became of a peer's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: usize,
    /// Already so here: nothing written.
    pub unchanged: usize,
    /// Naming a frontend or shard this node does not have (yet): skipped.
    pub unroutable: usize,
}

impl Cluster {
    /// The session of `key` as a record, when it is established here.
    pub fn session_record(&self, key: &SessionKey, stamp: Stamp) -> Option<SessionRecord> {
        let entry = self.index.get(key)?;
        if entry.pending {
            return None;
        }
        let group = self.group(entry.group());
        let shard = self.shard_by_backend(group.backend)?;
        let fe = self.frontend_ids.iter().position(|&id| id == u32::from(key.frontend))?;
        Some(SessionRecord {
            frontend: self.cfg.frontends[fe].address,
            client: client_of(key),
            shard: self.cfg.shards[shard].address,
            moving: group.epoch != entry.epoch(),
            stamp,
        })
    }

    /// The key a record names on this node.
    pub fn key_of(&self, frontend: SocketAddrV4, client: SocketAddrV4) -> Option<SessionKey> {
        let fe = self.cfg.frontends.iter().position(|f| f.address == frontend)?;
        Some(SessionKey {
            client_addr: addr_to_map(client.ip().octets()),
            client_port: port_to_map(client.port()),
            frontend: self.frontend_ids[fe] as u16,
        })
    }

    /// Sessions this model changed itself since the last call (chosen
    /// players moved, players promoted for a game node): what the peers
    /// must hear besides the data plane's own events.
    pub fn take_changed(&mut self) -> Vec<SessionKey> {
        std::mem::take(&mut self.changed_sessions)
    }

    /// Every established session's key (for a snapshot).
    pub fn established_keys(&self) -> Vec<SessionKey> {
        self.index.iter().filter(|(_, s)| !s.pending).map(|(k, _)| *k).collect()
    }

    /// Writes the winning records of a peer into SESSIONS (one batch) and
    /// the index. A player stays in its group when that group already
    /// points at the record's shard (so a group move later takes it along,
    /// as on the peer); otherwise it joins the shard's home group. A pending
    /// copy of the player here is dropped: the peer's shard accepted it.
    pub fn apply_peer_sessions(&mut self, records: &[(SessionKey, SessionRecord)]) -> Result<Applied> {
        let mut report = Applied::default();
        let now = now_ns();
        let mut writes: Vec<(SessionKey, Session, bool)> = Vec::with_capacity(records.len());
        for (key, r) in records {
            let Some(shard) = self.cfg.shards.iter().position(|s| s.address == r.shard) else {
                report.unroutable += 1;
                continue;
            };
            let ids = self.ids[shard];
            let known = self.index.get(key).copied();
            let group = match known {
                Some(k) if self.group(k.group()).backend == ids.backend => k.group(),
                _ => ids.home_group,
            };
            let g = self.group(group);
            let epoch = if r.moving { !g.epoch } else { g.epoch };
            if known.is_some_and(|k| !k.pending && k.group() == group && k.epoch() == epoch) {
                // A peer holds the player: it is not idle here either (a
                // node back from a restart would otherwise expire, at its
                // first scan, every player its peers' snapshot confirmed).
                self.peer_seen.insert(*key, now);
                report.unchanged += 1;
                continue;
            }
            let last_seen_ns = known.map_or(now, |k| k.last_seen_ns().max(now));
            writes.push((*key, Session { group, epoch, last_seen_ns }, known.is_some_and(|k| k.pending)));
        }
        if writes.is_empty() {
            return Ok(report);
        }
        let entries: Vec<(SessionKey, Session)> = writes.iter().map(|(k, s, _)| (*k, *s)).collect();
        self.tables.upsert_sessions(&entries)?;
        for (key, session, was_pending) in writes {
            if was_pending {
                self.tables.remove_session(true, &key)?;
            }
            self.index.set(key, session, false);
            report.written += 1;
        }
        Ok(report)
    }
}
