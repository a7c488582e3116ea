//! The owner's Agones side: GameServers become shards (and stop being
//! ones) through the same reconcile as a file reload; the decider's
//! records on GameServers are applied once each; a shard whose GameServer
//! left fails over at once. Allocations and growth are in `allocations`.
//!
//! Every replica, the decider included, moves players on a recorded
//! decision (`samp-proxy.dev/serves` on the new shard's GameServer); the
//! decider applies its own at once (it knows it before the API echoes it)
//! and writes the record, which the others apply when their watch sees it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Instant,
};

use super::Owner;
use crate::{
    agones::{
        allocate::Purpose,
        discover::{self, Decision, Discovery, GameServers},
        gameserver::GameServer,
        lease::Leadership,
        Command,
    },
    cluster::failover_policy::{FailoverDecision, Reason},
    config::{Shard, ShardSource},
    control::views::KubernetesView,
    events::EventKind,
};

#[derive(Default)]
pub(super) struct AgonesState {
    pub(super) gameservers: GameServers,
    pub(super) discovery: Discovery,
    pub(super) leadership: Option<Leadership>,
    /// The last error of each API user (watch, client), cleared on success.
    pub(super) api_errors: BTreeMap<String, String>,
    /// Allocations asked and not answered yet.
    pub(super) in_flight: Vec<(Purpose, usize, Instant)>,
    /// Decisions carried out here (or found already made at start).
    pub(super) applied: HashSet<Decision>,
    /// The first GameServer list has been seen (its records are history).
    pub(super) seen_first: bool,
    /// Shards allocated here that the watch has not reported yet.
    pub(super) early: Vec<GameServer>,
    /// Dead shards of this replica waiting on the decider, since when.
    pub(super) waiting: HashMap<String, Instant>,
    pub(super) last_attempt: HashMap<String, Instant>,
    pub(super) last_growth: HashMap<usize, Instant>,
    pub(super) allocations: BTreeMap<String, u64>,
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
    pub(super) fn kubernetes_view(&self) -> Option<KubernetesView> {
        self.links.agones.as_ref()?;
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
    pub(super) fn sync_discovered(&mut self, force: bool) {
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

    /// Moves players as the decider's records say, once each.
    pub(super) fn apply_decisions(&mut self) {
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
            let decision = FailoverDecision::Move { target: to, reason: Reason::DecidersRecord };
            self.apply_failover(from, players, decision, None);
        }
    }

    pub(super) fn gameserver(&self, name: &str) -> Option<GameServer> {
        self.agones.gameservers.values().flatten().chain(&self.agones.early).find(|g| g.name == name).cloned()
    }

    pub(super) fn record(&self, namespace: &str, name: &str, key: &str, value: String, what: String) {
        if let Some(h) = &self.links.agones {
            let annotations = BTreeMap::from([(key.to_string(), value)]);
            h.send(Command::Annotate { namespace: namespace.into(), name: name.into(), annotations, what });
        }
    }
}

fn namespace_of(s: &Shard) -> &str {
    match &s.source {
        ShardSource::GameServer { namespace, .. } => namespace,
        ShardSource::File => "",
    }
}
