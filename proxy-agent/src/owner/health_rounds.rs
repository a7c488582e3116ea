//! Health: rounds and urgent probes folded in (a shard going down fails
//! over, one coming back takes `recovered_role`), and the data plane's
//! session events, which name the shards seen refusing players.

use std::{net::SocketAddrV4, time::Duration};

use proxy_common::{SESSION_ANSWERED, SESSION_PROMOTED, SESSION_RESYNCED, SESSION_SHARD_REFUSED};

use super::{NodeLinks, Owner};
use crate::{
    cluster::now_ns,
    events::EventKind,
    health::{ProbeOutcome, Transition, UrgentProbe},
};

impl Owner {
    /// Folds one health round in: transitions become events, a shard going
    /// down fails over (or parks), a shard coming back becomes
    /// `recovered_role`, parked shards are retried. Returns whether anything
    /// changed.
    pub(super) fn health_round(&mut self, results: Vec<(String, ProbeOutcome)>) -> bool {
        let cfg = self.cluster.cfg.raw.health.clone();
        let mut changed = false;
        for (name, result) in results {
            let Ok(i) = self.cluster.shard(&name) else { continue };
            let transition = self.cluster.health.entry(name.clone()).or_default().record(result, &cfg);
            match transition {
                Transition::None => {}
                Transition::WentDown(reason) => {
                    changed = true;
                    let players = self.cluster.players_on(i, &self.cluster.loads());
                    let why = reason.detail(&cfg);
                    self.events.record(EventKind::HealthDown, &name, None, vec![], players, why);
                    self.fail_over(i, players);
                }
                Transition::CameUp => {
                    changed = true;
                    let role = self.cluster.cfg.raw.recovered_role;
                    self.cluster.role_override.insert(name.clone(), role);
                    let detail = format!(
                        "answers again; it keeps no old players and is now {}",
                        crate::cluster::status::role_name(role)
                    );
                    self.events.record(EventKind::HealthUp, &name, None, vec![], 0, detail);
                }
            }
        }
        changed |= self.retry_parked();
        if changed {
            let loads = self.cluster.loads();
            if let Err(e) = self.cluster.refresh_placement(&loads) {
                log::warn!("refreshing placement: {e:#}");
            }
        }
        changed
    }

    /// Tries the parked failovers again; returns whether any moved.
    pub(super) fn retry_parked(&mut self) -> bool {
        let mut moved = false;
        for name in self.parked.clone() {
            match self.cluster.shard(&name) {
                Ok(i) if !self.cluster.is_up(i) => {
                    let players = self.cluster.players_on(i, &self.cluster.loads());
                    moved |= self.fail_over(i, players);
                }
                // Back up, or gone from the config: nothing waits any more.
                _ => self.unpark(&name),
            }
        }
        moved
    }

    /// Folds the data plane's session events into the index.
    pub(super) fn drain_ring(&mut self) {
        let now = now_ns();
        let index = &mut self.cluster.index;
        let mut answered = Vec::new();
        let mut refusing = Vec::new();
        let mut routed = Vec::new();
        self.ring.drain(|ev| {
            match ev.kind {
                SESSION_ANSWERED => answered.push(ev),
                // A player's route changed here: the peers hear of it.
                SESSION_PROMOTED | SESSION_RESYNCED => routed.push(ev.key),
                // A shard to probe now; no session changed (the index ignores it).
                SESSION_SHARD_REFUSED => refusing.push(ev.group),
                _ => {}
            }
            index.apply(&ev, now);
        });
        if let (NodeLinks::Return { answered: reporter, .. }, false) = (&self.links.node, answered.is_empty()) {
            let _ = reporter.send(self.cluster.answered_players(&answered));
        }
        self.probe_refusing(refusing);
        if !routed.is_empty() {
            self.share_sessions(routed);
        }
    }

    /// The data plane saw these shards (backend ids) refuse a player's
    /// packet: the health loop probes each one still up at once (two
    /// refusals in a row take it down without waiting for the next round).
    /// A `return` node, which does not probe, names them to the ingress
    /// nodes instead, which do.
    pub(super) fn probe_refusing(&self, backends: Vec<u32>) {
        let c = &self.cluster;
        let shards: Vec<usize> = backends.iter().filter_map(|b| c.ids.iter().position(|id| id.backend == *b)).collect();
        if let (NodeLinks::Return { refused: reporter, .. }, false) = (&self.links.node, shards.is_empty()) {
            let mut names: Vec<String> = shards.iter().map(|&i| c.cfg.shards[i].name.clone()).collect();
            names.sort_unstable();
            names.dedup();
            let _ = reporter.send(names);
        }
        self.probe_now(shards);
    }

    /// Probes each of these shards (indices) still up at once; returns how
    /// many (none on a node that does not probe).
    pub(super) fn probe_now(&self, mut shards: Vec<usize>) -> usize {
        let NodeLinks::Ingress { urgent_probes: urgent } = &self.links.node else { return 0 };
        shards.sort_unstable();
        shards.dedup();
        let c = &self.cluster;
        let mut probed = 0;
        for i in shards {
            if !c.is_up(i) {
                continue;
            }
            let s = &c.cfg.shards[i];
            let _ = urgent.send(UrgentProbe {
                shard: s.name.clone(),
                addr: SocketAddrV4::new(s.address, c.cfg.frontends[s.frontend].address.port()),
                via: crate::sites::Via::of(&c.cfg, s.site),
                wait: Duration::from_millis(c.cfg.raw.health.timeout_ms),
            });
            probed += 1;
        }
        probed
    }
}
