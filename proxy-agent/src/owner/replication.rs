//! Replication, the owner's side: this node's own session changes (the data
//! plane's promotions and re-handshakes, the model's moves and promotions)
//! stamped and queued for every peer; peers' records judged by their stamps
//! (the newer wins, on every node alike) and written; snapshots for peers
//! that connect; touches so that no node expires a player another forwards.

use std::{collections::HashMap, sync::Arc, time::Duration};

use proxy_common::SessionKey;

use super::Owner;
use crate::{
    cluster::now_ns,
    control::views::PeersView,
    peers::{clock::Clock, Board, Outbox, Record, SessionRecord, Stamp, Touch},
};

/// What the owner needs to replicate, when `peers:` is configured.
pub struct PeerLinks {
    pub node: String,
    pub outbox: Outbox,
    pub board: Arc<Board>,
    pub join_timeout: Duration,
}

pub(super) struct Replication {
    links: PeerLinks,
    clock: Clock,
    /// The stamp of the record each session was last set by (made here or
    /// heard); a session without one lost its stamp in a restart and
    /// yields to any peer's record.
    stamps: HashMap<SessionKey, Stamp>,
    /// Ready once: a peer's snapshot arrived, or none answered in time.
    synced: bool,
    applied: u64,
    unchanged: u64,
    stale: u64,
    unroutable: u64,
}

impl Replication {
    pub(super) fn new(links: PeerLinks) -> Replication {
        let clock = Clock::new(crate::peers::origin_id(&links.node));
        Replication {
            links,
            clock,
            stamps: HashMap::new(),
            synced: false,
            applied: 0,
            unchanged: 0,
            stale: 0,
            unroutable: 0,
        }
    }
}

impl Replication {
    pub(super) fn origin(&self) -> u32 {
        self.clock.origin()
    }

    pub(super) fn send(&self, records: Vec<Record>) {
        self.links.outbox.send(records);
    }
}

impl Owner {
    /// Queues records of these sessions (changed here) for every peer.
    pub(super) fn share_sessions(&mut self, keys: impl IntoIterator<Item = SessionKey>) {
        let Some(rep) = self.replication.as_mut() else { return };
        let mut records = Vec::new();
        for key in keys {
            let stamp = rep.clock.now();
            if let Some(r) = self.cluster.session_record(&key, stamp) {
                rep.stamps.insert(key, stamp);
                records.push(Record::Session(r));
            }
        }
        rep.links.outbox.send(records);
    }

    /// The model's own session changes since the last look.
    pub(super) fn share_model_changes(&mut self) {
        let changed = self.cluster.take_changed();
        if !changed.is_empty() {
            self.share_sessions(changed);
        }
    }

    /// Tells the peers which players this node forwarded lately.
    pub(super) fn share_touches(&mut self) {
        let seen = std::mem::take(&mut self.cluster.recently_seen);
        let Some(rep) = self.replication.as_ref() else { return };
        let records = seen
            .iter()
            .filter_map(|k| {
                let r = self.cluster.session_record(k, Stamp::default())?;
                Some(Record::Touch(Touch { frontend: r.frontend, client: r.client }))
            })
            .collect();
        rep.links.outbox.send(records);
    }

    /// Every established session, for a peer that just connected.
    pub(super) fn peer_snapshot(&mut self) -> Vec<Record> {
        let Some(rep) = self.replication.as_ref() else { return Vec::new() };
        let unstamped = Stamp { time: 0, origin: rep.clock.origin() };
        self.cluster
            .established_keys()
            .iter()
            .filter_map(|k| self.cluster.session_record(k, rep.stamps.get(k).copied().unwrap_or(unstamped)))
            .map(Record::Session)
            .collect()
    }

    /// A peer's records: the newer stamp wins; winners are written.
    pub(super) fn peer_records(&mut self, from: &str, records: Vec<Record>) {
        let Some(rep) = self.replication.as_mut() else { return };
        let mut winners: Vec<(SessionKey, SessionRecord)> = Vec::new();
        let (mut asks, mut answers) = (Vec::new(), Vec::new());
        let now = now_ns();
        for record in records {
            match record {
                Record::Session(r) => {
                    rep.clock.merge(r.stamp);
                    let Some(key) = self.cluster.key_of(r.frontend, r.client) else {
                        rep.unroutable += 1;
                        continue;
                    };
                    if rep.stamps.get(&key).is_some_and(|mine| *mine >= r.stamp) {
                        // Older than ours, yet the peer holds the player.
                        if self.cluster.index.get(&key).is_some() {
                            self.cluster.peer_seen.insert(key, now);
                        }
                        rep.stale += 1;
                        continue;
                    }
                    rep.stamps.insert(key, r.stamp);
                    winners.retain(|(k, _)| *k != key);
                    winners.push((key, r));
                }
                Record::Touch(t) => {
                    // Only players held here: a touch never grows the map by itself.
                    let key = self.cluster.key_of(t.frontend, t.client).filter(|k| self.cluster.index.get(k).is_some());
                    if let Some(key) = key {
                        self.cluster.peer_seen.insert(key, now);
                    }
                }
                Record::SnapshotEnd { .. } => rep.synced = true,
                Record::Ask { token, origin, body } => asks.push((token, origin, body)),
                Record::Answer { token, origin, ok, body } => answers.push((token, origin, ok, body)),
            }
        }
        match self.cluster.apply_peer_sessions(&winners) {
            Ok(done) => {
                rep.applied += done.written as u64;
                rep.unchanged += done.unchanged as u64;
                rep.unroutable += done.unroutable as u64;
            }
            Err(e) => log::warn!("writing {} sessions from peer {from}: {e:#}", winners.len()),
        }
        for (token, origin, body) in asks {
            self.on_ask(token, origin, &body);
        }
        for (token, origin, ok, body) in answers {
            self.on_answer(token, origin, ok, body);
        }
    }

    /// Why this node cannot route every player yet, if so.
    pub(super) fn peers_not_synced(&self) -> Option<String> {
        let rep = self.replication.as_ref()?;
        if rep.synced {
            return None;
        }
        rep.links.board.synced(rep.links.join_timeout).err()
    }

    /// Once synced, a node stays ready (a peer that comes later merges in).
    pub(super) fn latch_peers_synced(&mut self) {
        if self.replication.is_some() && self.peers_not_synced().is_none() {
            if let Some(rep) = self.replication.as_mut() {
                if !rep.synced {
                    log::info!("in sync with the peers: ready");
                }
                rep.synced = true;
            }
        }
    }

    pub(super) fn peers_view(&self) -> Option<PeersView> {
        let rep = self.replication.as_ref()?;
        Some(PeersView {
            node: rep.links.node.clone(),
            links: rep.links.board.view(),
            records_applied: rep.applied,
            records_unchanged: rep.unchanged,
            records_stale: rep.stale,
            records_unroutable: rep.unroutable,
            away: rep.links.board.away(),
        })
    }
}
