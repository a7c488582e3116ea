//! The agent's state and what each control request does to it.

use std::{collections::VecDeque, net::SocketAddrV4, path::PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    cluster::{now_ns, ClientSelector, Cluster},
    config::{self, Role},
    dataplane::Dataplane,
    health::{ProbeResult, Transition},
    protocol::Request,
};

/// Events kept for `proxy-agent events`.
const MAX_EVENTS: usize = 1000;

/// Something an operator wants to see after the fact.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// health_down | health_up | failover | failover_parked | migration | drain | undrain
    pub kind: &'static str,
    pub shard: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub groups: Vec<u32>,
    pub players: usize,
    pub detail: String,
}

pub struct AgentState {
    pub dp: Dataplane,
    pub cluster: Cluster,
    pub config_path: PathBuf,
    pub expired_idle: u64,
    pub expired_moving: u64,
    pub events: VecDeque<Event>,
    /// Shards that went down whose players found no room yet: retried on
    /// every health round until capacity appears.
    pub parked: Vec<String>,
    /// Events by kind since start (the ring forgets, metrics must not).
    pub events_total: std::collections::HashMap<&'static str, u64>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl AgentState {
    pub fn new(dp: Dataplane, cluster: Cluster, config_path: PathBuf) -> Self {
        Self {
            dp,
            cluster,
            config_path,
            expired_idle: 0,
            expired_moving: 0,
            events: VecDeque::new(),
            parked: Vec::new(),
            events_total: Default::default(),
        }
    }

    /// Records and logs an event.
    pub fn event(
        &mut self,
        kind: &'static str,
        shard: &str,
        target: Option<&str>,
        groups: Vec<u32>,
        players: usize,
        detail: String,
    ) {
        *self.events_total.entry(kind).or_default() += 1;
        let e = Event {
            at_ms: unix_ms(),
            kind,
            shard: shard.into(),
            target: target.map(Into::into),
            groups,
            players,
            detail,
        };
        log::info!(
            "event {}: shard {} {}{}",
            e.kind,
            e.shard,
            e.target.as_deref().map(|t| format!("-> {t} ")).unwrap_or_default(),
            e.detail
        );
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Every shard's name and query address, for a health round.
    pub fn probe_targets(&self) -> Vec<(String, SocketAddrV4)> {
        let c = &self.cluster.cfg;
        c.shards
            .iter()
            .map(|s| (s.name.clone(), SocketAddrV4::new(s.address, c.frontends[s.frontend].address.port())))
            .collect()
    }

    /// Folds one health round in: transitions become events, a shard going
    /// down fails over (or parks), a shard coming back becomes
    /// `recovered_role`, parked shards are retried.
    pub fn health_round(&mut self, results: Vec<(String, Option<ProbeResult>)>) {
        let cfg = self.cluster.cfg.raw.health.clone();
        let mut changed = false;
        for (name, result) in results {
            let Ok(i) = self.cluster.shard(&name) else { continue };
            let transition = self.cluster.health.entry(name.clone()).or_default().record(result, &cfg);
            match transition {
                Transition::None => {}
                Transition::WentDown => {
                    changed = true;
                    let players = self.cluster.players_on(i, &self.dp.tables);
                    self.event(
                        "health_down",
                        &name,
                        None,
                        vec![],
                        players,
                        format!("{} probes unanswered", cfg.down_after),
                    );
                    self.fail_over(i, players);
                }
                Transition::CameUp => {
                    changed = true;
                    let role = self.cluster.cfg.raw.recovered_role;
                    self.cluster.role_override.insert(name.clone(), role);
                    let r = match role {
                        Role::Active => "active",
                        Role::Standby => "standby",
                    };
                    self.event(
                        "health_up",
                        &name,
                        None,
                        vec![],
                        0,
                        format!("answers again; it keeps no old players and is now {r}"),
                    );
                }
            }
        }
        for name in std::mem::take(&mut self.parked) {
            if let Ok(i) = self.cluster.shard(&name) {
                if !self.cluster.is_up(i) {
                    let players = self.cluster.players_on(i, &self.dp.tables);
                    changed |= self.fail_over(i, players);
                }
            }
        }
        if changed {
            if let Err(e) = self.cluster.refresh_placement(&mut self.dp.tables) {
                log::warn!("refreshing placement: {e:#}");
            }
        }
    }

    /// Runs an automatic failover of shard `i` (holding `players`) and
    /// records it; with no room the shard is parked. Returns whether anything moved.
    fn fail_over(&mut self, i: usize, players: usize) -> bool {
        let name = self.cluster.cfg.shards[i].name.clone();
        if players == 0 {
            return false;
        }
        match self.cluster.failover(&mut self.dp.tables, i, None) {
            Ok(r) => {
                self.event(
                    "failover",
                    &name,
                    Some(&r.to),
                    r.groups.clone(),
                    r.moved,
                    format!("{} players moving together to {}", r.moved, r.to),
                );
                true
            }
            Err(why) => {
                self.event(
                    "failover_parked",
                    &name,
                    None,
                    vec![],
                    players,
                    format!("{why}; retried as soon as capacity appears"),
                );
                if !self.parked.contains(&name) {
                    self.parked.push(name);
                }
                false
            }
        }
    }

    /// Carries out one request. Errors name the fault; a refused request has
    /// changed no map.
    pub fn handle(&mut self, req: Request) -> Result<Value, String> {
        match req {
            Request::Status => Ok(self.status()),
            Request::Shards => Ok(self.status()["shards"].clone()),
            Request::Sessions { shard, client } => {
                let client = client.as_deref().map(str::parse::<ClientSelector>).transpose()?;
                let list = self.cluster.sessions(&self.dp.tables, shard.as_deref(), client.as_ref())?;
                Ok(json!(list))
            }
            Request::Migrate { clients, from, to } => {
                let from_label = from.clone().unwrap_or_else(|| format!("clients {}", clients.join(" ")));
                let report = match (clients.is_empty(), from) {
                    (false, None) => {
                        let sel = clients.iter().map(|c| c.parse::<ClientSelector>()).collect::<Result<Vec<_>, _>>()?;
                        self.cluster.migrate_clients(&mut self.dp.tables, &sel, &to)?
                    }
                    (true, Some(from)) => self.cluster.migrate_shard(&mut self.dp.tables, &from, &to)?,
                    (false, Some(_)) => return Err("give either clients or `from`, not both".into()),
                    (true, None) => {
                        return Err("say which players move: clients (IP or IP:PORT) or `from` (a shard)".into())
                    }
                };
                let what = format!(
                    "{} players moving to {} ({} already there)",
                    report.moved, report.to, report.already_there
                );
                self.event("migration", &from_label, Some(&report.to), report.groups.clone(), report.moved, what);
                Ok(json!(report))
            }
            Request::Drain { shard } => self.drain(&shard, true),
            Request::Undrain { shard } => self.drain(&shard, false),
            Request::Reload => self.reload().map(|changes| json!({ "changes": changes })),
            Request::Events => Ok(json!(self.events)),
            Request::Failover { shard, to } => {
                let from = self.cluster.shard(&shard)?;
                let to = to.as_deref().map(|t| self.cluster.shard(t)).transpose()?;
                let report = self.cluster.failover(&mut self.dp.tables, from, to)?;
                let players = report.moved;
                self.event(
                    "failover",
                    &shard,
                    Some(&report.to),
                    report.groups.clone(),
                    players,
                    format!("manual: {players} players moving together to {}", report.to),
                );
                Ok(json!(report))
            }
        }
    }

    fn drain(&mut self, shard: &str, drained: bool) -> Result<Value, String> {
        let changed = self.cluster.set_drained(&mut self.dp.tables, shard, drained)?;
        let verb = if drained { "drained" } else { "undrained" };
        if changed {
            let kind = if drained { "drain" } else { "undrain" };
            self.event(kind, shard, None, vec![], 0, verb.to_string());
        }
        Ok(json!({ "shard": shard, "drained": drained, "changed": changed }))
    }

    /// Re-reads the config file; a bad file leaves the running config.
    pub fn reload(&mut self) -> Result<Vec<String>, String> {
        let new =
            config::load(&self.config_path).map_err(|e| format!("reload refused, the running config stays: {e}"))?;
        let mut ignored = Vec::new();
        let old = &self.cluster.cfg.raw;
        if new.raw.interfaces != old.interfaces || new.raw.xdp_mode != old.xdp_mode {
            ignored.push("interfaces/xdp_mode (restart the agent to change them)");
        }
        if new.raw.bpffs != old.bpffs || new.raw.control_socket != old.control_socket {
            ignored.push("bpffs/control_socket (restart the agent to change them)");
        }
        let mut changes = self.cluster.reload(new, &mut self.dp.tables)?;
        changes.extend(ignored.into_iter().map(|i| format!("not applied: {i}")));
        log::info!(
            "config reloaded: {}",
            if changes.is_empty() { "no change".to_string() } else { changes.join("; ") }
        );
        Ok(changes)
    }

    /// The periodic work: expire sessions, keep placement in line with load.
    pub fn maintain(&mut self) {
        let raw = &self.cluster.cfg.raw;
        let (idle, moving) = (raw.session_idle_timeout_ms * 1_000_000, raw.move_timeout_ms * 1_000_000);
        match self.cluster.expire(&mut self.dp.tables, now_ns(), idle, moving) {
            Ok((i, m)) => {
                self.expired_idle += i as u64;
                self.expired_moving += m as u64;
                if i + m > 0 {
                    log::info!("expired {i} idle sessions and {m} moved sessions that never reconnected");
                }
            }
            Err(e) => log::warn!("expiring sessions: {e:#}"),
        }
        if let Err(e) = self.cluster.refresh_placement(&mut self.dp.tables) {
            log::warn!("refreshing placement: {e:#}");
        }
    }

    pub fn status(&self) -> Value {
        let c = &self.cluster;
        let tables = &self.dp.tables;
        let loads = c.loads(tables);
        let groups = tables.all_groups();
        let shards: Vec<Value> = c
            .cfg
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let id = c.ids[i];
                let load = loads.get(&id.backend).copied().unwrap_or_default();
                let on: Vec<u32> = groups.iter().filter(|(_, g)| g.backend == id.backend).map(|(g, _)| *g).collect();
                json!({
                    "name": s.name,
                    "address": s.address.to_string(),
                    "frontend": c.cfg.frontends[s.frontend].name,
                    "role": match c.role(i) { Role::Active => "active", Role::Standby => "standby" },
                    "drained": c.drained(i, tables),
                    "health": c.health.get(&s.name).map(|h| h.label()).unwrap_or("unchecked"),
                    "rtt_ms": c.health.get(&s.name).and_then(|h| h.rtt_ms),
                    "reported_players": c.health.get(&s.name).and_then(|h| h.players),
                    "parked": self.parked.contains(&s.name),
                    "players": load.players(),
                    "established": load.established,
                    "pending": load.pending,
                    "moving": load.moving,
                    "capacity": s.capacity,
                    "backend": id.backend,
                    "home_group": id.home_group,
                    "groups": on,
                })
            })
            .collect();
        let frontends: Vec<Value> = c
            .cfg
            .frontends
            .iter()
            .zip(&c.frontend_ids)
            .map(|(f, id)| json!({ "name": f.name, "address": f.address.to_string(), "id": id }))
            .collect();
        let counters: serde_json::Map<String, Value> = tables
            .all_counters()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.name().to_string(), json!(v)))
            .collect();
        let players: usize = loads.values().map(|l| l.players()).sum();
        let capacity: u32 = c.cfg.shards.iter().map(|s| s.capacity).sum();
        json!({
            "frontends": frontends,
            "shards": shards,
            "totals": {
                "players": players,
                "capacity": capacity,
                "established": loads.values().map(|l| l.established).sum::<usize>(),
                "pending": loads.values().map(|l| l.pending).sum::<usize>(),
                "moving": loads.values().map(|l| l.moving).sum::<usize>(),
            },
            "agent": {
                "version": env!("CARGO_PKG_VERSION"),
                "config": self.config_path.display().to_string(),
                "expired_idle": self.expired_idle,
                "expired_moving": self.expired_moving,
            },
            "counters": counters,
        })
    }
}
