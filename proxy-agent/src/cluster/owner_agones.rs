//! The owner's Agones side: GameServers become shards (and stop being
//! ones) through the same reconcile as a file reload; a dead shard's
//! players get a freshly allocated shard when this replica is the decider,
//! or wait for the decider's record when it is not; growth keeps headroom.
//!
//! Every replica, the decider included, moves players on a recorded
//! decision (`samp-proxy.dev/serves` on the new shard's GameServer); the
//! decider applies its own at once (it knows it before the API echoes it)
//! and writes the record, which the others apply when their watch sees it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use super::super::owner::Owner;
use crate::{
    agones::{
        allocate::{Answer, Ask, Purpose},
        discover::{self, Decision, Discovery, GameServers},
        gameserver::{annotation, with_name, GameServer},
        lease::Leadership,
        AgonesHandle, Command,
    },
    config::{Shard, ShardSource},
    control::views::KubernetesView,
    events::EventKind,
};

/// The least time between two allocations for one dead shard (a pool that
/// is empty answers UnAllocated at once; health rounds come every 200 ms).
const RETRY_ALLOCATION: Duration = Duration::from_secs(1);
/// The least time between two growth allocations of one frontend.
const GROWTH_COOLDOWN: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct AgonesState {
    pub handle: Option<AgonesHandle>,
    gameservers: GameServers,
    discovery: Discovery,
    leadership: Option<Leadership>,
    /// The last error of each API user (watch, client), cleared on success.
    api_errors: BTreeMap<String, String>,
    /// Allocations asked and not answered yet.
    in_flight: Vec<(Purpose, usize, Instant)>,
    /// Decisions carried out here (or found already made at start).
    applied: HashSet<Decision>,
    /// The first GameServer list has been seen (its records are history).
    seen_first: bool,
    /// Shards allocated here that the watch has not reported yet.
    early: Vec<GameServer>,
    /// Dead shards of this replica waiting on the decider, since when.
    waiting: HashMap<String, Instant>,
    last_attempt: HashMap<String, Instant>,
    last_growth: HashMap<usize, Instant>,
    allocations: BTreeMap<String, u64>,
}

impl AgonesState {
    pub fn leading(&self) -> bool {
        self.leadership.as_ref().is_some_and(|l| l.leading)
    }

    /// What is wrong with the API, if anything.
    pub fn api_error(&self) -> Option<String> {
        let lease = self.leadership.as_ref().and_then(|l| l.error.clone()).map(|e| format!("lease: {e}"));
        let others = self.api_errors.iter().map(|(who, e)| format!("{who}: {e}"));
        let all: Vec<String> = lease.into_iter().chain(others).collect();
        (!all.is_empty()).then(|| all.join("; "))
    }
}

impl Owner {
    pub(super) fn use_agones(&mut self, handle: AgonesHandle) {
        self.agones.handle = Some(handle);
    }

    pub(super) fn kubernetes_view(&self) -> Option<KubernetesView> {
        self.agones.handle.as_ref()?;
        let a = &self.agones;
        let cfg = &self.cluster.cfg;
        let frontends = cfg.frontends.iter().enumerate().filter(|(_, f)| f.agones.is_some());
        Some(KubernetesView {
            leading: a.leading(),
            holder: a.leadership.as_ref().and_then(|l| l.holder.clone()),
            api_error: a.api_error(),
            pool_ready: frontends
                .map(|(i, f)| (f.name.clone(), a.discovery.pool_ready.get(i).copied().unwrap_or(0)))
                .collect(),
            unusable: a.discovery.unusable.clone(),
            allocations: a.allocations.clone(),
            allocating: a.in_flight.len(),
        })
    }

    pub(super) fn on_gameservers(&mut self, namespace: String, list: Vec<GameServer>) {
        // An allocation's answer may come before the watch shows the change.
        let caught_up = |e: &GameServer| list.iter().any(|g| g.name == e.name && g.state != "Ready");
        self.agones.early.retain(|e| !(e.namespace == namespace && caught_up(e)));
        self.agones.gameservers.insert(namespace, list);
        let watched = self.file.frontends.iter().filter_map(|f| f.agones.as_ref());
        let all_listed = watched.clone().all(|a| self.agones.gameservers.contains_key(&a.namespace));
        let first = self.cluster.awaiting_discovery && all_listed;
        if first {
            // Every namespace listed: what the pins hold beyond it is stale.
            self.cluster.awaiting_discovery = false;
        }
        self.sync_discovered(first);
        if !self.agones.seen_first {
            // Records already on GameServers when the agent starts were
            // carried out before (the pinned maps kept their groups).
            self.agones.seen_first = true;
            self.agones.applied.extend(self.agones.discovery.decisions.iter().cloned());
        }
        self.apply_decisions();
        self.retry_parked_when_pool_fills();
    }

    pub(super) fn on_leadership(&mut self, l: Leadership) {
        let was = self.agones.leadership.as_ref().map(|o| (o.leading, o.holder.clone()));
        if was != Some((l.leading, l.holder.clone())) {
            let detail = match (l.leading, &l.holder) {
                (true, _) => "this replica holds the Lease: it decides failovers and growth".to_string(),
                (false, Some(h)) if !h.is_empty() => format!("replica `{h}` decides"),
                _ => "nobody holds the Lease".to_string(),
            };
            self.events.record(EventKind::Decider, l.holder.as_deref().unwrap_or("-"), None, vec![], 0, detail);
        }
        let became_leader = l.leading && !self.agones.leading();
        self.agones.leadership = Some(l);
        if became_leader {
            self.retry_parked();
        }
    }

    pub(super) fn on_kubernetes_error(&mut self, who: &str, error: Option<String>) {
        match error {
            Some(e) => {
                if self.agones.api_errors.insert(who.into(), e.clone()).is_none() {
                    log::warn!("Kubernetes API ({who}): {e}; forwarding goes on with the shards known");
                }
            }
            None => {
                if self.agones.api_errors.remove(who).is_some() {
                    log::info!("Kubernetes API ({who}) answers again");
                }
            }
        }
    }

    /// The discovered shards from the GameServers (plus those allocated
    /// here and not yet watched), reconciled into the maps; shards whose
    /// GameServer left are failed over at once.
    /// `force`: reconcile even when the shard list did not change.
    fn sync_discovered(&mut self, force: bool) {
        let mut all = self.agones.gameservers.clone();
        for gs in &self.agones.early {
            let list = all.entry(gs.namespace.clone()).or_default();
            list.retain(|g| g.name != gs.name);
            list.push(gs.clone());
        }
        let found = discover::discover(&self.file, &all);
        for u in &found.unusable {
            let known = self.agones.discovery.unusable.iter().any(|o| o.name == u.name && o.problem == u.problem);
            if !known {
                let detail = format!("{}; fix: {}", u.problem, u.fix);
                log::warn!("GameServer {}/{} cannot be a shard: {detail}", u.namespace, u.name);
                self.events.record(EventKind::GameserverUnusable, &u.name, None, vec![], 0, detail);
            }
        }
        // Discovered shards that are no longer Allocated (or no longer exist).
        let mut newly_departed = Vec::new();
        for s in &self.cluster.cfg.shards {
            let discovered = matches!(s.source, ShardSource::GameServer { .. });
            if discovered
                && !found.shards.iter().any(|f| f.name == s.name)
                && !self.cluster.departed.contains_key(&s.name)
            {
                let why = match all.get(namespace_of(s)).and_then(|l| l.iter().find(|g| g.name == s.name)) {
                    Some(gs) if gs.state != "Allocated" => format!("its GameServer is {}", gs.state),
                    Some(_) => "its GameServer cannot serve any more".to_string(),
                    None => "its GameServer was deleted".to_string(),
                };
                newly_departed.push((s.name.clone(), why));
            }
        }
        for (name, why) in &newly_departed {
            self.cluster.departed.insert(name.clone(), why.clone());
        }
        self.agones.discovery = found;
        self.reconcile_desired(force);
        for (name, why) in newly_departed {
            let Ok(i) = self.cluster.shard(&name) else { continue };
            let players = self.cluster.players_on(i, &self.cluster.loads());
            self.events.record(EventKind::HealthDown, &name, None, vec![], players, why);
            self.fail_over(i, players);
        }
    }

    /// The desired cluster (the file's shards, the discovered ones, and
    /// departed ones that still hold players) into the maps.
    pub(super) fn reconcile_desired(&mut self, force: bool) {
        let loads = self.cluster.loads();
        let mut shards: Vec<Shard> = self.agones.discovery.shards.clone();
        let cluster = &self.cluster;
        let keep = cluster.cfg.shards.iter().enumerate().filter(|(i, s)| {
            cluster.departed.contains_key(&s.name)
                && !shards.iter().any(|d| d.name == s.name)
                && cluster.has_sessions(*i, &loads)
        });
        shards.extend(keep.map(|(_, s)| s.clone()).collect::<Vec<_>>());
        let desired = discover::compose(&self.file, &shards);
        if desired == self.cluster.cfg && !force {
            return;
        }
        match self.cluster.reconcile(desired) {
            Ok(changes) => {
                self.cluster.departed.retain(|name, _| self.cluster.cfg.shards.iter().any(|s| &s.name == name));
                if !changes.is_empty() {
                    log::info!("shards: {}", changes.join("; "));
                }
            }
            Err(e) => log::warn!("applying the discovered shards: {e}"),
        }
    }

    /// A shard of an Agones frontend went down with players: allocate a
    /// fresh shard (decider), or wait for the decider's record (others).
    /// Returns whether players moved now.
    pub(super) fn agones_fail_over(&mut self, i: usize, players: usize) -> Option<bool> {
        let handle = self.agones.handle.clone()?;
        if self.cluster.cfg.raw.role == crate::config::NodeRole::Return {
            return Some(false); // the ingress agents move players; a game node only follows
        }
        let shard = &self.cluster.cfg.shards[i];
        let agones = self.cluster.cfg.frontends[shard.frontend].agones.clone()?;
        let name = shard.name.clone();
        let frontend = shard.frontend;
        if !self.agones.leading() {
            let since = *self.agones.waiting.entry(name.clone()).or_insert_with(Instant::now);
            let k = self.cluster.cfg.kubernetes();
            let patience = Duration::from_millis(k.lease_duration_ms + 2 * k.allocation_timeout_ms);
            if since.elapsed() < patience {
                self.park(&name);
                return Some(false);
            }
            // No decider decided in time (none is reachable): this
            // replica's own rule, as without Agones.
            self.agones.waiting.remove(&name);
            return Some(self.fail_over_by_rule(
                i,
                players,
                "no decision from the decider in time; this replica's own rule",
            ));
        }
        let asked = self.agones.in_flight.iter().any(|(p, _, _)| *p == Purpose::Failover { dead: name.clone() });
        let recent = self.agones.last_attempt.get(&name).is_some_and(|t| t.elapsed() < RETRY_ALLOCATION);
        if !asked && !recent {
            let ask = Ask {
                frontend,
                namespace: agones.namespace.clone(),
                pool_labels: agones.pool_labels.clone(),
                labels: agones.labels.clone(),
                purpose: Purpose::Failover { dead: name.clone() },
                deadline: Duration::from_millis(self.cluster.cfg.kubernetes().allocation_timeout_ms),
            };
            self.agones.in_flight.push((ask.purpose.clone(), frontend, Instant::now()));
            self.agones.last_attempt.insert(name.clone(), Instant::now());
            handle.send(Command::Allocate(ask));
        }
        self.park(&name);
        Some(false)
    }

    /// Parked shards are tried again on every health round.
    fn park(&mut self, name: &str) {
        if !self.parked.iter().any(|p| p == name) {
            self.parked.push(name.to_string());
        }
    }

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

    fn fail_over_after_allocation(&mut self, dead: &str, answer: &Answer, ms: f64) {
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
        match self.cluster.move_groups(from, to, players) {
            Ok(r) => {
                let detail = format!(
                    "{} players moving together to fresh GameServer {} (allocated in {ms:.0} ms)",
                    r.moved, r.to
                );
                self.failed_over(dead, &r, detail);
                self.agones.applied.insert(Decision { dead: dead.into(), target: gs.name.clone() });
                self.record(
                    &gs.namespace,
                    &gs.name,
                    annotation::SERVES,
                    with_name(gs.annotations.get(annotation::SERVES), dead),
                    format!("serves {dead}"),
                );
            }
            Err(e) => {
                self.fail_over_by_rule(from, players, &format!("moving to {} failed: {e}", gs.name));
            }
        }
    }

    /// A failover of `dead` done: the event, the leases, and it waits no more.
    pub(super) fn failed_over(&mut self, dead: &str, r: &crate::control::views::MoveReport, detail: String) {
        self.events.record(EventKind::Failover, dead, Some(&r.to), r.groups.clone(), r.moved, detail);
        self.leases_follow_shard(dead, &r.to);
        self.parked.retain(|p| p != dead);
        self.agones.waiting.remove(dead);
    }

    /// The rule without a fresh shard: an empty listed standby, else the
    /// roomiest active shard, else parked. `why` says why no fresh shard.
    fn fail_over_by_rule(&mut self, from: usize, players: usize, why: &str) -> bool {
        let dead = self.cluster.cfg.shards[from].name.clone();
        match self.cluster.failover(from, None) {
            Ok(r) => {
                let to = self.cluster.shard(&r.to).ok();
                let path = match to.map(|t| self.cluster.role(t)) {
                    Some(crate::config::Role::Standby) => "a listed standby",
                    _ => "the roomiest active shard",
                };
                let detail = format!("{why}; {} players moving together to {path}, {}", r.moved, r.to);
                self.failed_over(&dead, &r, detail);
                if self.agones.leading() {
                    self.record_fallback(&dead, &r.to);
                }
                true
            }
            Err(e) => {
                let detail = format!("{why}; {e}; retried as soon as a GameServer is Ready or capacity appears");
                self.events.record(EventKind::FailoverParked, &dead, None, vec![], players, detail);
                self.park(&dead);
                false
            }
        }
    }

    /// Records a fallback so the other replicas make the same move: on the
    /// target's GameServer, else on the dead shard's.
    fn record_fallback(&mut self, dead: &str, to: &str) {
        self.agones.applied.insert(Decision { dead: dead.into(), target: to.into() });
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

    fn gameserver(&self, name: &str) -> Option<GameServer> {
        self.agones.gameservers.values().flatten().chain(&self.agones.early).find(|g| g.name == name).cloned()
    }

    fn record(&self, namespace: &str, name: &str, key: &str, value: String, what: String) {
        if let Some(h) = &self.agones.handle {
            let annotations = BTreeMap::from([(key.to_string(), value)]);
            h.send(Command::Annotate { namespace: namespace.into(), name: name.into(), annotations, what });
        }
    }

    /// Moves players as the decider's records say, once each.
    fn apply_decisions(&mut self) {
        let todo: Vec<Decision> =
            self.agones.discovery.decisions.iter().filter(|d| !self.agones.applied.contains(*d)).cloned().collect();
        for d in todo {
            let (Ok(from), Ok(to)) = (self.cluster.shard(&d.dead), self.cluster.shard(&d.target)) else {
                continue; // not known here (yet): retried on the next list
            };
            self.agones.applied.insert(d.clone());
            let players = self.cluster.players_on(from, &self.cluster.loads());
            if from == to || players == 0 {
                continue;
            }
            match self.cluster.move_groups(from, to, players) {
                Ok(r) => {
                    let detail = format!("{} players moving together to {} (the decider's record)", r.moved, r.to);
                    self.failed_over(&d.dead, &r, detail);
                }
                Err(e) => log::warn!("applying the decider's record {} -> {}: {e}", d.dead, d.target),
            }
        }
    }

    /// A Ready GameServer appeared in a pool: parked failovers try again.
    fn retry_parked_when_pool_fills(&mut self) {
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
        let Some(handle) = self.agones.handle.clone() else { return };
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

fn namespace_of(s: &Shard) -> &str {
    match &s.source {
        ShardSource::GameServer { namespace, .. } => namespace,
        ShardSource::File => "",
    }
}
