//! One message in, one handler out: `handle` only dispatches; each
//! message's handling is its own short function.

use std::net::SocketAddrV4;

use tokio::sync::oneshot;

use super::{msg::Msg, Owner};
use crate::{
    control::protocol::Request,
    events::EventKind,
    health::{ProbeOutcome, ProbePlan, Target},
    leases::mover::LeaseOutcome,
    sites::Via,
};

impl Owner {
    pub(super) fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Control(req, reply) => {
                let Some((req, reply)) = self.control_through_log(req, reply) else { return };
                let mutates =
                    !matches!(req, Request::Status | Request::Shards | Request::Sessions { .. } | Request::Events);
                let result = self.control(req);
                let _ = reply.send(result);
                if mutates {
                    self.publish();
                }
            }
            Msg::ProbePlan(reply) => self.send_probe_plan(reply),
            Msg::HealthRound(results) => self.on_health_round(results),
            Msg::ProbedNow(shard, outcome) => {
                if self.health_round(vec![(shard, outcome)]) {
                    self.write_answers();
                    self.publish();
                }
            }
            Msg::Scanned { generation, result, took } => self.scanned(generation, result, took),
            Msg::Transfer(ask, reply) => {
                let result = self.transfer(ask);
                let changed = result.is_ok();
                let _ = reply.send(result);
                if changed {
                    self.publish();
                }
            }
            Msg::Refused(names, reply) => {
                let _ = reply.send(self.on_refused(&names));
            }
            Msg::Answered(list, reply) => {
                let _ = reply.send(self.on_answered(&list));
            }
            Msg::LeaseOutcome(o) => self.on_lease_outcome(o),
            Msg::DeciderStatus(s) => {
                self.on_decider_status(s);
                self.publish();
            }
            Msg::Decisions(batch) => self.on_decisions(batch),
            Msg::Decided(token, result) => self.on_decided(token, result),
            Msg::PeerSnapshot(reply) => {
                let _ = reply.send(self.peer_snapshot());
            }
            Msg::PeerRecords(from, records, reply) => {
                self.peer_records(&from, records);
                let _ = reply.send(());
            }
            Msg::Attached => {
                self.attached = true;
                self.publish();
            }
            Msg::GameServers(namespace, list) => {
                self.on_gameservers(namespace, list);
                self.publish();
            }
            Msg::Leadership(l) => {
                self.on_leadership(l);
                self.publish();
            }
            Msg::KubernetesError(who, error) => {
                self.on_kubernetes_error(&who, error);
                self.publish();
            }
            Msg::Allocation(ask, answer, took) => {
                self.on_allocation(ask, answer, took);
                self.publish();
            }
            Msg::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    pub(super) fn send_probe_plan(&self, reply: oneshot::Sender<ProbePlan>) {
        let c = &self.cluster.cfg;
        let targets = c
            .shards
            .iter()
            .map(|s| Target {
                name: s.name.clone(),
                addr: SocketAddrV4::new(s.address, c.frontends[s.frontend].address.port()),
                via: Via::of(c, s.site),
            })
            .collect();
        let _ = reply.send(ProbePlan { targets, health: c.raw.health.clone() });
    }

    pub(super) fn on_health_round(&mut self, results: Vec<(String, ProbeOutcome)>) {
        for (_, outcome) in &results {
            if let ProbeOutcome::Answered(r) = outcome {
                self.probe_rtt.observe(r.rtt.as_secs_f64());
            }
        }
        self.health_rounds += 1;
        let changed = self.health_round(results);
        // What the browser sees follows the cluster within one round.
        self.write_answers();
        if changed || self.health_rounds == 1 {
            self.publish();
        }
    }

    pub(super) fn write_answers(&mut self) {
        if let Err(e) = self.cluster.write_answers() {
            log::warn!("writing the query answers: {e:#}");
        }
    }

    pub(super) fn on_refused(&mut self, names: &[String]) -> usize {
        let c = &self.cluster;
        let shards = names.iter().filter_map(|n| c.cfg.shards.iter().position(|s| &s.name == n)).collect();
        let probed = self.probe_now(shards);
        log::info!("a game node saw {} refuse a player: {probed} probed now", names.join(", "));
        probed
    }

    pub(super) fn on_answered(&mut self, list: &[crate::cluster::answered::Answered]) -> usize {
        let promoted = match self.cluster.promote_answered(list) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("promoting players accepted on game nodes: {e:#}");
                0
            }
        };
        self.promoted_by_nodes += promoted as u64;
        promoted
    }

    pub(super) fn on_lease_outcome(&mut self, o: LeaseOutcome) {
        let kind = match (&o.result, o.gave_up) {
            (Ok(_), _) => EventKind::LeaseMove,
            (Err(_), false) => EventKind::LeaseMoveFailed,
            (Err(_), true) => EventKind::LeaseMoveGaveUp,
        };
        let seconds = self.links.leases.as_ref().map(|m| m.lease_seconds).unwrap_or(0);
        let moved = *o.result.as_ref().unwrap_or(&0) as usize;
        let (from, to) = (o.attempted.from().to_string(), o.attempted.to().to_string());
        self.events.record(kind, &from, Some(&to), vec![], moved, o.detail(seconds));
        self.publish();
    }
}
