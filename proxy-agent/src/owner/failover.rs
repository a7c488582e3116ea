//! Automatic failovers, applied: the policy (`cluster::failover_policy`)
//! decides from plain facts; this file gathers the facts, carries out the
//! decision (maps, allocation, parking) and records it (event, leases,
//! the decider's record). Listed and Agones shards take the same path.

use std::time::{Duration, Instant};

use super::Owner;
use crate::{
    agones::{
        allocate::{Ask, Purpose},
        Command,
    },
    cluster::failover_policy::{self, AgonesSituation, FailoverDecision, ParkReason, Reason, Situation},
    control::views::MoveReport,
    events::EventKind,
};

/// The least time between two allocations for one dead shard (a pool that
/// is empty answers UnAllocated at once; health rounds come every 200 ms).
pub(super) const RETRY_ALLOCATION: Duration = Duration::from_secs(1);

impl Owner {
    /// Fails shard `i` (holding `players`) over as the policy decides.
    /// Returns whether players moved now.
    pub(super) fn fail_over(&mut self, i: usize, players: usize) -> bool {
        if let Some(moved) = self.fail_over_through_log(i, players) {
            return moved;
        }
        let agones = self.agones_situation(i);
        let loads = self.cluster.loads();
        let candidates = self.cluster.failover_candidates(i, &loads);
        let follower_only = !self.cluster.cfg.raw.role.decides();
        let decision = failover_policy::decide(&Situation { players, follower_only, agones, candidates: &candidates });
        let why = agones
            .filter(|a| !a.leading)
            .map(|_| "no decision from the decider in time; this replica's own rule".to_string());
        self.apply_failover(i, players, decision, why).is_some()
    }

    /// Carries out a decision for shard `i`; `why` says, for a move by the
    /// rule on an Agones frontend, why no fresh shard took the players.
    /// Returns the shard the players moved to, if they moved now.
    pub(super) fn apply_failover(
        &mut self,
        i: usize,
        players: usize,
        decision: FailoverDecision,
        why: Option<String>,
    ) -> Option<usize> {
        let name = self.cluster.cfg.shards[i].name.clone();
        if !matches!(decision, FailoverDecision::Park(ParkReason::AwaitingDecider)) {
            self.agones.waiting.remove(&name);
        }
        match decision {
            FailoverDecision::Nothing => {
                self.unpark(&name); // nobody left to move
                None
            }
            FailoverDecision::Move { target, reason } => self.move_dead(i, target, players, reason, why),
            FailoverDecision::Allocate => {
                self.ask_fresh_shard(i);
                self.park(&name);
                None
            }
            FailoverDecision::Park(ParkReason::AwaitingAllocation | ParkReason::AwaitingDecider) => {
                self.park(&name);
                None
            }
            FailoverDecision::Park(ParkReason::NoRoom { roomiest }) => {
                let e = crate::control::error::ControlError::NoFailoverTarget { from: name.clone(), players, roomiest };
                self.parked_for(i, players, &e.to_string(), why.as_deref());
                None
            }
        }
    }

    /// Moves every group of dead shard `from` to `to` and records it.
    pub(super) fn move_dead(
        &mut self,
        from: usize,
        to: usize,
        players: usize,
        reason: Reason,
        why: Option<String>,
    ) -> Option<usize> {
        let dead = self.cluster.cfg.shards[from].name.clone();
        match self.cluster.move_groups(from, to, players) {
            Ok(r) => {
                let detail = match (&reason, &why) {
                    (Reason::FreshGameServer, _) => {
                        let when = why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default();
                        format!("{} players moving together to fresh GameServer {}{when}", r.moved, r.to)
                    }
                    (Reason::DecidersRecord, _) => {
                        format!("{} players moving together to {} ({})", r.moved, r.to, reason.describe())
                    }
                    (_, Some(why)) => {
                        format!("{why}; {} players moving together to {}, {}", r.moved, reason.describe(), r.to)
                    }
                    (_, None) => format!("{} players moving together to {}", r.moved, r.to),
                };
                self.failed_over(&dead, &r, detail);
                let by_rule = matches!(reason, Reason::ListedStandby | Reason::RoomiestActive);
                if by_rule && why.is_some() && self.agones.leading() {
                    self.record_fallback(&dead, &r.to);
                }
                Some(to)
            }
            Err(e) if reason == Reason::FreshGameServer => {
                let target = self.cluster.cfg.shards[to].name.clone();
                self.fail_over_by_rule(from, players, &format!("moving to {target} failed: {e}"))
            }
            Err(e) => {
                self.parked_for(from, players, &e.to_string(), why.as_deref());
                None
            }
        }
    }

    /// The rule without a fresh shard: `why` says why there is none.
    pub(super) fn fail_over_by_rule(&mut self, from: usize, players: usize, why: &str) -> Option<usize> {
        let loads = self.cluster.loads();
        let candidates = self.cluster.failover_candidates(from, &loads);
        let decision = failover_policy::after_allocation(players, None, &candidates);
        self.apply_failover(from, players, decision, Some(why.to_string()))
    }

    /// No room: the shard waits in the parked list; the event says so once.
    pub(super) fn parked_for(&mut self, i: usize, players: usize, problem: &str, why: Option<&str>) {
        let name = self.cluster.cfg.shards[i].name.clone();
        self.park(&name);
        if !self.parked_said.insert(name.clone()) {
            return; // said when it was parked; retried every round without a word
        }
        let detail = match why {
            Some(why) => format!("{why}; {problem}; retried as soon as a GameServer is Ready or capacity appears"),
            None => format!("{problem}; retried as soon as capacity appears"),
        };
        self.events.record(EventKind::FailoverParked, &name, None, vec![], players, detail);
    }

    /// A failover of `dead` done: the event, the leases, and it waits no more.
    pub(super) fn failed_over(&mut self, dead: &str, r: &MoveReport, detail: String) {
        self.events.record(EventKind::Failover, dead, Some(&r.to), r.groups.clone(), r.moved, detail);
        self.leases_follow_shard(dead, &r.to);
        self.unpark(dead);
        self.agones.waiting.remove(dead);
    }

    /// Nothing waits for shard `name` any more.
    pub(super) fn unpark(&mut self, name: &str) {
        self.parked.retain(|p| p != name);
        self.parked_said.remove(name);
    }

    /// Parked shards are tried again on every health round.
    pub(super) fn park(&mut self, name: &str) {
        if !self.parked.iter().any(|p| p == name) {
            self.parked.push(name.to_string());
        }
    }

    /// The Agones facts of shard `i`, when its frontend is an Agones one
    /// and this agent talks to Kubernetes. A follower starts waiting for
    /// the decider's record the first time it is asked.
    pub(super) fn agones_situation(&mut self, i: usize) -> Option<AgonesSituation> {
        self.links.agones.as_ref()?;
        let shard = &self.cluster.cfg.shards[i];
        self.cluster.cfg.frontends[shard.frontend].agones.as_ref()?;
        let name = shard.name.clone();
        let k = self.cluster.cfg.kubernetes();
        let leading = self.agones.leading();
        let waited = if leading {
            Duration::ZERO
        } else {
            self.agones.waiting.entry(name.clone()).or_insert_with(Instant::now).elapsed()
        };
        let asked = self.agones.in_flight.iter().any(|(p, _, _)| *p == Purpose::Failover { dead: name.clone() });
        let recent = self.agones.last_attempt.get(&name).is_some_and(|t| t.elapsed() < RETRY_ALLOCATION);
        Some(AgonesSituation {
            leading,
            waited,
            // With peers, a follower never falls back to its own rule: two
            // ingress nodes could then send one group two ways.
            patience: if self.replication.is_some() {
                Duration::MAX
            } else {
                Duration::from_millis(k.lease_duration_ms + 2 * k.allocation_timeout_ms)
            },
            allocation_pending: asked || recent,
        })
    }

    /// Asks Agones for a fresh shard for dead shard `i` (decider only).
    pub(super) fn ask_fresh_shard(&mut self, i: usize) {
        let Some(handle) = self.links.agones.clone() else { return };
        let shard = &self.cluster.cfg.shards[i];
        let Some(agones) = self.cluster.cfg.frontends[shard.frontend].agones.clone() else { return };
        let (name, frontend) = (shard.name.clone(), shard.frontend);
        let ask = Ask {
            frontend,
            namespace: agones.namespace.clone(),
            pool_labels: agones.pool_labels.clone(),
            labels: agones.labels.clone(),
            purpose: Purpose::Failover { dead: name.clone() },
            deadline: Duration::from_millis(self.cluster.cfg.kubernetes().allocation_timeout_ms),
        };
        self.agones.in_flight.push((ask.purpose.clone(), frontend, Instant::now()));
        self.agones.last_attempt.insert(name, Instant::now());
        handle.send(Command::Allocate(ask));
    }
}
