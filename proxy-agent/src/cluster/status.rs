//! The cluster as the operator sees it: shard views (status, shards,
//! metrics) and session views, built from the index and the mirrors; the
//! only map reads are the counters, once per call.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{client_of, now_ns, ClientSelector, Cluster, Loads};
use crate::{
    config::Role,
    control::{
        error::ControlError,
        views::{FrontendView, SessionView, ShardView, Totals, TrafficView},
    },
};

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Active => "active",
        Role::Standby => "standby",
    }
}

impl Cluster {
    pub fn frontend_views(&self) -> Vec<FrontendView> {
        self.cfg
            .frontends
            .iter()
            .zip(&self.frontend_ids)
            .map(|(f, &id)| FrontendView { name: f.name.clone(), address: f.address.to_string(), id })
            .collect()
    }

    /// Every shard, with its players from `loads`, its traffic from the
    /// per-CPU stats, and `parked(name)` for a failover waiting for room.
    pub fn shard_views(&self, loads: &Loads, parked: impl Fn(&str) -> bool) -> Result<Vec<ShardView>> {
        let mut groups_of: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (g, grp) in self.live_groups() {
            groups_of.entry(grp.backend).or_default().push(g);
        }
        self.cfg
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let id = self.ids[i];
                let load = loads.get(&id.backend).copied().unwrap_or_default();
                let health = self.health.get(&s.name);
                let stats = self.tables.backend_stats(id.backend)?;
                Ok(ShardView {
                    name: s.name.clone(),
                    address: s.address.to_string(),
                    frontend: self.cfg.frontends[s.frontend].name.clone(),
                    role: role_name(self.role(i)).into(),
                    drained: self.drained(i),
                    health: match self.departed.contains_key(&s.name) {
                        true => "departed",
                        false => health.map(|h| h.label()).unwrap_or("unchecked"),
                    }
                    .into(),
                    rtt_ms: health.and_then(|h| h.rtt_ms),
                    site: s.site.map(|i| self.cfg.sites[i].name.clone()),
                    reported_players: health.and_then(|h| h.players),
                    parked: parked(&s.name),
                    players: load.players(),
                    established: load.established,
                    pending: load.pending,
                    moving: load.moving,
                    capacity: match (s.capacity_from_probe(), health.and_then(|h| h.max_players)) {
                        (true, max) => u32::from(max.unwrap_or(0)),
                        (false, _) => s.capacity,
                    },
                    free_slots: self.free_slots(i, loads),
                    backend: id.backend,
                    home_group: id.home_group,
                    groups: groups_of.get(&id.backend).cloned().unwrap_or_default(),
                    traffic: TrafficView {
                        packets_to_shard: stats.packets_in,
                        bytes_to_shard: stats.bytes_in,
                        packets_from_shard: stats.packets_out,
                        bytes_from_shard: stats.bytes_out,
                    },
                    source: match s.source {
                        crate::config::ShardSource::File => "file",
                        crate::config::ShardSource::GameServer { .. } => "gameserver",
                    }
                    .into(),
                    departed: self.departed.get(&s.name).cloned(),
                })
            })
            .collect()
    }

    pub fn totals(&self, loads: &Loads) -> Totals {
        Totals {
            players: loads.values().map(|l| l.players()).sum(),
            capacity: self.cfg.shards.iter().map(|s| s.capacity).sum(),
            established: loads.values().map(|l| l.established).sum(),
            pending: loads.values().map(|l| l.pending).sum(),
            moving: loads.values().map(|l| l.moving).sum(),
        }
    }

    /// Every data-plane counter by name, summed over CPUs.
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self.tables.all_counters()?.into_iter().map(|(c, v)| (c.name().to_string(), v)).collect())
    }

    /// Sessions for the CLI, optionally of one shard or one client, sorted by
    /// client. `idle_ms` is as of the last full scan.
    pub fn sessions(
        &self,
        shard: Option<&str>,
        client: Option<&ClientSelector>,
    ) -> Result<Vec<SessionView>, ControlError> {
        let shard_filter = shard.map(|s| self.shard(s)).transpose()?;
        let now = now_ns();
        let mut out = Vec::new();
        for (k, s) in self.index.iter() {
            if client.is_some_and(|c| !c.matches(k)) {
                continue;
            }
            let g = self.group(s.group());
            let idx = self.shard_by_backend(g.backend);
            if shard_filter.is_some() && idx != shard_filter {
                continue;
            }
            let fe = self.frontend_ids.iter().position(|&id| id == k.frontend as u32);
            let state = if g.epoch != s.epoch() {
                "moving"
            } else if s.pending {
                "pending"
            } else {
                "established"
            };
            out.push(SessionView {
                client: client_of(k).to_string(),
                frontend: fe.map(|i| self.cfg.frontends[i].name.clone()).unwrap_or_else(|| "?".into()),
                shard: idx.map(|i| self.cfg.shards[i].name.clone()).unwrap_or_else(|| "(none)".into()),
                group: s.group(),
                state: state.into(),
                idle_ms: now.saturating_sub(s.last_seen_ns()) / 1_000_000,
            });
        }
        out.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(out)
    }
}
