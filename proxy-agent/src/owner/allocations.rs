//! Fresh shards from Agones: what an allocation's answer does to the
//! players waiting for it (through the one failover policy), the
//! decider's records of its fallbacks, and growth for headroom.

use std::time::{Duration, Instant};

use super::Owner;
use crate::{
    agones::{
        allocate::{Answer, Ask, Purpose},
        discover::Decision,
        gameserver::{annotation, with_name},
        Command,
    },
    cluster::failover_policy,
    events::EventKind,
};

/// The least time between two growth allocations of one frontend.
const GROWTH_COOLDOWN: Duration = Duration::from_secs(10);

impl Owner {
    /// What an allocation came to.
    pub(super) fn on_allocation(&mut self, ask: Ask, answer: Answer, took: Duration) {
        self.agones.in_flight.retain(|(p, f, _)| !(*p == ask.purpose && *f == ask.frontend));
        *self.agones.allocations.entry(answer.outcome().into()).or_default() += 1;
        let ms = took.as_secs_f64() * 1000.0;
        if let Answer::Allocated(gs) = &answer {
            self.agones.early.push(gs.clone());
            self.sync_discovered(false);
        }
        match ask.purpose {
            Purpose::Growth => {
                let (kind, detail) = match &answer {
                    Answer::Allocated(gs) => {
                        (EventKind::Grow, format!("allocated {} in {ms:.0} ms for headroom", gs.name))
                    }
                    other => (EventKind::GrowFailed, format!("{} ({ms:.0} ms)", other.why_not())),
                };
                let fe = self.cluster.cfg.frontends[ask.frontend].name.clone();
                self.events.record(kind, &fe, None, vec![], 0, detail);
            }
            Purpose::Failover { dead } => self.fail_over_after_allocation(&dead, &answer, ms),
        }
    }

    pub(super) fn fail_over_after_allocation(&mut self, dead: &str, answer: &Answer, ms: f64) {
        let Ok(from) = self.cluster.shard(dead) else { return };
        let players = self.cluster.players_on(from, &self.cluster.loads());
        if players == 0 || self.cluster.is_up(from) {
            return; // moved meanwhile, or back: the new shard just serves
        }
        let fresh = match answer {
            Answer::Allocated(gs) => self.cluster.shard(&gs.name).ok().map(|i| (i, gs.clone())),
            _ => None,
        };
        let Some((to, gs)) = fresh else {
            let why = match answer {
                Answer::Allocated(gs) => format!("allocated {} but it cannot be a shard (see its event)", gs.name),
                other => other.why_not(),
            };
            self.fail_over_by_rule(from, players, &format!("{why} after {ms:.0} ms"));
            return;
        };
        let decision = failover_policy::after_allocation(players, Some(to), &[]);
        if self.apply_failover(from, players, decision, Some(format!("allocated in {ms:.0} ms"))) == Some(to) {
            // The allocation's answer carries no uid: the watch's copy of
            // the same object does (the record lands on it).
            let on = self.gameserver(&gs.name).map(|g| g.uid.clone()).unwrap_or_default();
            self.agones.applied.insert(Decision { dead: dead.into(), target: gs.name.clone(), on });
            self.record(
                &gs.namespace,
                &gs.name,
                annotation::SERVES,
                with_name(gs.annotations.get(annotation::SERVES), dead),
                format!("serves {dead}"),
            );
        }
    }

    /// Records a fallback so the other replicas make the same move: on the
    /// target's GameServer, else on the dead shard's.
    pub(super) fn record_fallback(&mut self, dead: &str, to: &str) {
        // Keyed like the record discovery will read back (see `Decision`).
        let on = self.gameserver(to).or_else(|| self.gameserver(dead)).map(|g| g.uid.clone()).unwrap_or_default();
        self.agones.applied.insert(Decision { dead: dead.into(), target: to.into(), on });
        if let Some(gs) = self.gameserver(to) {
            let value = with_name(gs.annotations.get(annotation::SERVES), dead);
            self.record(&gs.namespace.clone(), to, annotation::SERVES, value, format!("serves {dead}"));
        } else if let Some(gs) = self.gameserver(dead) {
            self.record(&gs.namespace.clone(), dead, annotation::MOVED_TO, to.to_string(), format!("moved to {to}"));
        } else {
            log::info!(
                "failover {dead} -> {to} is not recorded: neither is a GameServer; each replica decides it by its rule"
            );
        }
    }

    /// A Ready GameServer appeared in a pool: parked failovers try again.
    pub(super) fn retry_parked_when_pool_fills(&mut self) {
        if self.agones.leading() && self.agones.discovery.pool_ready.iter().any(|&n| n > 0) && !self.parked.is_empty() {
            for name in self.parked.clone() {
                self.agones.last_attempt.remove(&name);
            }
            self.retry_parked();
        }
    }

    /// Allocates one more shard for each Agones frontend whose active
    /// shards' free slots fell under its headroom (decider only).
    pub(super) fn maybe_grow(&mut self) {
        let Some(handle) = self.links.agones.clone() else { return };
        if !self.agones.leading() {
            return;
        }
        let cfg = self.cluster.cfg.clone();
        let loads = self.cluster.loads();
        for (fi, fe) in cfg.frontends.iter().enumerate() {
            let Some(agones) = &fe.agones else { continue };
            if agones.headroom == 0 || self.agones.in_flight.iter().any(|(_, f, _)| *f == fi) {
                continue;
            }
            if self.agones.last_growth.get(&fi).is_some_and(|t| t.elapsed() < GROWTH_COOLDOWN) {
                continue;
            }
            let serving: Vec<usize> = (0..cfg.shards.len())
                .filter(|&i| cfg.shards[i].frontend == fi && self.cluster.takes_players(i))
                .collect();
            // A shard whose size is not known yet (not probed) would look full.
            if serving.iter().any(|&i| self.cluster.size_unknown(i)) {
                continue;
            }
            let free: usize = serving.iter().map(|&i| self.cluster.free_slots(i, &loads)).sum();
            if free >= agones.headroom as usize {
                continue;
            }
            let ask = Ask {
                frontend: fi,
                namespace: agones.namespace.clone(),
                pool_labels: agones.pool_labels.clone(),
                labels: agones.labels.clone(),
                purpose: Purpose::Growth,
                deadline: Duration::from_millis(cfg.kubernetes().allocation_timeout_ms),
            };
            log::info!(
                "frontend {}: {free} free slots, under the headroom of {}: allocating a shard",
                fe.name,
                agones.headroom
            );
            self.agones.in_flight.push((Purpose::Growth, fi, Instant::now()));
            self.agones.last_growth.insert(fi, Instant::now());
            handle.send(Command::Allocate(ask));
        }
    }
}
