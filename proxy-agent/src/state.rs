//! The agent's state and what each control request does to it.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::{
    cluster::{now_ns, ClientSelector, Cluster},
    config::{self, Role},
    dataplane::Dataplane,
    protocol::Request,
};

pub struct AgentState {
    pub dp: Dataplane,
    pub cluster: Cluster,
    pub config_path: PathBuf,
    pub expired_idle: u64,
    pub expired_moving: u64,
}

impl AgentState {
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
                log::info!(
                    "migration to {}: {} players moving ({} already there), groups repointed: {:?}",
                    report.to,
                    report.moved,
                    report.already_there,
                    report.groups
                );
                Ok(json!(report))
            }
            Request::Drain { shard } => self.drain(&shard, true),
            Request::Undrain { shard } => self.drain(&shard, false),
            Request::Reload => self.reload().map(|changes| json!({ "changes": changes })),
        }
    }

    fn drain(&mut self, shard: &str, drained: bool) -> Result<Value, String> {
        let changed = self.cluster.set_drained(&mut self.dp.tables, shard, drained)?;
        let verb = if drained { "drained" } else { "undrained" };
        if changed {
            log::info!("shard {shard} {verb}");
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
                    "role": match s.role { Role::Active => "active", Role::Standby => "standby" },
                    "drained": c.drained(i, tables),
                    "health": "unchecked",
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
