//! Decisions through the coordinator (`decide`): with several ingress
//! nodes and a `coordinator:`, a failover of a listed shard, a whole-shard
//! move or a drain is made by ONE agent, the decider, which appends it to
//! the log in the database; every agent, the decider included, carries it
//! out when it reads it there, in the log's order. So no two nodes ever
//! send one group to two shards, also while they disagree about a shard's
//! health or cannot reach each other. A follower parks a dead shard's
//! players until the decider's decision arrives (never its own rule).

use std::collections::{BTreeMap, HashMap};

use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::Owner;
use crate::{
    cluster::failover_policy::{self, FailoverDecision},
    control::{error::ControlError, protocol::Request, views::Reply, ControlReply},
    decide::{self, Decision, Round},
    events::EventKind,
};

/// The decider's end, made by the composition root.
pub struct DeciderLink {
    /// This agent's name in the decider row.
    pub me: String,
    /// Decisions to append (with a token the answer comes back with).
    pub asks: UnboundedSender<(u64, Decision)>,
}

pub(super) struct DeciderState {
    link: DeciderLink,
    status: Option<decide::Status>,
    applied: u64,
    next_token: u64,
    /// Dead shards whose move was asked of the log, by token.
    proposed: BTreeMap<String, u64>,
    /// Operators waiting for their decision to be carried out here.
    replies: HashMap<u64, oneshot::Sender<ControlReply>>,
    /// Seq of each appended decision -> its token.
    tokens: HashMap<u64, u64>,
}

impl DeciderState {
    pub(super) fn new(link: DeciderLink) -> DeciderState {
        DeciderState {
            link,
            status: None,
            applied: 0,
            next_token: 1,
            proposed: BTreeMap::new(),
            replies: HashMap::new(),
            tokens: HashMap::new(),
        }
    }

    pub(super) fn deciding(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.deciding.is_some())
    }

    pub(super) fn holder(&self) -> String {
        match self.status.as_ref().and_then(|s| s.round.clone()) {
            Some(Round::Leading { .. }) => self.link.me.clone(),
            Some(Round::Following { holder, .. }) if !holder.is_empty() => holder,
            _ => "nobody (the database has not answered)".into(),
        }
    }

    fn ask(&mut self, d: Decision) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        let _ = self.link.asks.send((token, d));
        token
    }
}

impl Owner {
    /// Whether shard `i`'s failover is the coordinator's to decide.
    fn through_log(&self, i: usize) -> bool {
        let fe = self.cluster.cfg.shards[i].frontend;
        self.decider.is_some() && self.cluster.cfg.frontends[fe].agones.is_none()
    }

    /// A dead listed shard with a coordinator: the decider asks the log,
    /// a follower waits. Returns None when the coordinator is not in charge.
    pub(super) fn fail_over_through_log(&mut self, i: usize, players: usize) -> Option<bool> {
        if !self.through_log(i) {
            return None;
        }
        let name = self.cluster.cfg.shards[i].name.clone();
        let d = self.decider.as_mut().expect("through_log");
        if !d.deciding() {
            let holder = d.holder();
            self.park(&name);
            if self.parked_said.insert(name.clone()) {
                let detail = format!("the decider ({holder}) decides where its players go; waiting for its decision");
                self.events.record(EventKind::FailoverParked, &name, None, vec![], players, detail);
            }
            return Some(false);
        }
        if d.proposed.contains_key(&name) {
            return Some(false);
        }
        let loads = self.cluster.loads();
        let candidates = self.cluster.failover_candidates(i, &loads);
        let decision = failover_policy::after_allocation(players, None, &candidates);
        match decision {
            FailoverDecision::Move { target, reason } => {
                let to = self.cluster.cfg.shards[target].name.clone();
                let d = self.decider.as_mut().expect("through_log");
                let token = d.ask(Decision::MoveShard { from: name.clone(), to, why: reason.describe().into() });
                d.proposed.insert(name.clone(), token);
                self.park(&name);
                Some(false)
            }
            other => Some(self.apply_failover(i, players, other, None).is_some()),
        }
    }

    pub(super) fn on_decider_status(&mut self, s: decide::Status) {
        let Some(d) = self.decider.as_mut() else { return };
        let was = d.deciding();
        d.status = Some(s);
        if d.deciding() != was {
            let detail = if d.deciding() { "this agent decides now" } else { "this agent no longer decides" };
            let who = d.holder();
            self.events.record(EventKind::Decider, &who, None, vec![], 0, detail.to_string());
            if d.deciding() {
                // What waited for a decider is decided now.
                self.retry_parked();
            }
        }
    }

    /// An append came back: its seq (the log will bring it) or why not.
    pub(super) fn on_decided(&mut self, token: u64, result: Result<u64, String>) {
        let Some(d) = self.decider.as_mut() else { return };
        match result {
            Ok(seq) => {
                d.tokens.insert(seq, token);
            }
            Err(why) => {
                log::warn!("the coordinator refused a decision: {why}");
                d.proposed.retain(|_, t| *t != token);
                if let Some(reply) = d.replies.remove(&token) {
                    let _ = reply.send(Err(ControlError::Coordinator(why)));
                }
            }
        }
    }

    /// New entries of the log, carried out in order.
    pub(super) fn on_decisions(&mut self, batch: decide::Result<Vec<(u64, Decision)>>) {
        let entries = match batch {
            Ok(entries) => entries,
            Err(e) => return log::warn!("reading the decisions' log: {e}"),
        };
        for (seq, decision) in entries {
            let Some(d) = self.decider.as_mut() else { return };
            if seq <= d.applied {
                continue;
            }
            d.applied = seq;
            let token = d.tokens.remove(&seq);
            let result = self.carry_out(seq, decision);
            let d = self.decider.as_mut().expect("decider");
            if let Some(reply) = token.and_then(|t| d.replies.remove(&t)) {
                let _ = reply.send(result);
            }
        }
        self.publish();
    }

    fn carry_out(&mut self, seq: u64, decision: Decision) -> ControlReply {
        match decision {
            Decision::MoveShard { from, to, why } => {
                let (f, t) = (self.cluster.shard(&from)?, self.cluster.shard(&to)?);
                let players = self.cluster.players_on(f, &self.cluster.loads());
                let dead = !self.cluster.is_up(f);
                let report = self.cluster.move_groups(f, t, players)?;
                let detail = format!("{} players moving together to {to} (decision #{seq}: {why})", report.moved);
                let kind = if dead { EventKind::Failover } else { EventKind::Migration };
                self.events.record(kind, &from, Some(&to), report.groups.clone(), report.moved, detail);
                if self.decider.as_ref().is_some_and(DeciderState::deciding) {
                    self.leases_follow_shard(&from, &to); // once, by the decider
                }
                self.unpark(&from);
                self.decider.as_mut().expect("decider").proposed.remove(&from);
                Ok(Reply::Moved(report))
            }
            Decision::Drain { shard, drained } => self.drain(&shard, drained).map(Reply::Drain),
        }
    }

    /// A shard-level request with a coordinator: the decider asks the log
    /// and answers once the decision is carried out here; a follower says
    /// who decides. Returns the request back when the coordinator is not
    /// in charge of it.
    pub(super) fn control_through_log(
        &mut self,
        req: Request,
        reply: oneshot::Sender<ControlReply>,
    ) -> Option<(Request, oneshot::Sender<ControlReply>)> {
        let decision = match self.decision_of(&req) {
            None => return Some((req, reply)),
            Some(Err(e)) => {
                let _ = reply.send(Err(e));
                return None;
            }
            Some(Ok(d)) => d,
        };
        let d = self.decider.as_mut().expect("decision_of");
        if !d.deciding() {
            let holder = d.holder();
            if let Some(reply) = self.forward_to_decider(&req, reply) {
                let _ = reply.send(Err(ControlError::NotDecider(holder)));
            }
            return None;
        }
        let token = d.ask(decision);
        d.replies.insert(token, reply);
        None
    }

    /// The decision a request asks for, when the coordinator decides it.
    fn decision_of(&self, req: &Request) -> Option<Result<Decision, ControlError>> {
        self.decider.as_ref()?;
        let listed = |name: &str| self.cluster.shard(name).map(|i| self.through_log(i));
        let d = match req {
            Request::Failover { shard, to } => {
                if !listed(shard).ok()? {
                    return None;
                }
                let from = self.cluster.shard(shard).ok()?;
                let to = match to {
                    Some(t) => t.clone(),
                    None => {
                        let loads = self.cluster.loads();
                        let players = self.cluster.players_on(from, &loads);
                        match self.cluster.pick_target(from, players, &loads) {
                            Ok(t) => self.cluster.cfg.shards[t].name.clone(),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                };
                Decision::MoveShard { from: shard.clone(), to, why: "asked by an operator".into() }
            }
            Request::Migrate { clients, from: Some(from), to } if clients.is_empty() && listed(from).ok()? => {
                Decision::MoveShard { from: from.clone(), to: to.clone(), why: "asked by an operator".into() }
            }
            Request::Drain { shard } if listed(shard).ok()? => Decision::Drain { shard: shard.clone(), drained: true },
            Request::Undrain { shard } if listed(shard).ok()? => {
                Decision::Drain { shard: shard.clone(), drained: false }
            }
            _ => return None,
        };
        Some(Ok(d))
    }

    pub(super) fn decider_view(&self) -> Option<crate::control::views::CoordinatorView> {
        let d = self.decider.as_ref()?;
        Some(crate::control::views::CoordinatorView {
            deciding: d.deciding(),
            holder: d.holder(),
            applied_seq: d.applied,
            error: d.status.as_ref().and_then(|s| s.error.clone()),
            awaiting: d.proposed.keys().cloned().collect(),
        })
    }
}
