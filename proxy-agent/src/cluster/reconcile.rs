//! Desired cluster -> maps: the one path by which a config (at start, on a
//! reload from the file or the CLI, and later from other sources of shards)
//! becomes routing. Sessions are never touched; a group's epoch changes only
//! when the group really moves.

use std::collections::HashSet;

use anyhow::{Context, Result};
use proxy_common::{FrontendKey, Group, Meter, PortEntry, ShardState};

use super::{plan, plan::RoutingPlan, Cluster};
use crate::{config::Validated, control::error::ControlError};

impl Cluster {
    /// Writes what `self.cfg` asks for: ids, shards, frontends, reply
    /// rewrites, home groups, pacers and placement; then clears what it no
    /// longer names.
    pub(super) fn write_desired(&mut self) -> Result<()> {
        self.assign_ids()?;
        let loads = self.loads();
        let plan = plan::build(&self.cfg, &self.frontend_ids, &self.ids);
        self.apply_plan(&plan)?;
        for &(group, backend) in &plan.home_groups {
            self.point_group(group, backend)?;
        }
        self.clear_stale(&plan.backends.iter().map(|(id, _)| *id).collect())?;
        let raw = &self.cfg.raw;
        let interval = if raw.handshake_rate == 0 { 0 } else { 1_000_000_000 / raw.handshake_rate as u64 };
        // GCRA admits one more than its tolerance covers: `burst` at once.
        let tolerance = interval * raw.handshake_burst.saturating_sub(1) as u64;
        let meter = Meter { tat_ns: 0, interval_ns: interval, tolerance_ns: tolerance };
        for backend in self.ids.iter().map(|id| id.backend).collect::<Vec<_>>() {
            self.tables.write_meter(backend, meter)?;
        }
        // Rows of frontends that are new (or new ids) are written in full.
        let live: HashSet<u32> = self.frontend_ids.iter().copied().collect();
        self.last_placement.retain(|(fe, _)| live.contains(fe));
        self.refresh_placement(&loads)?;
        self.write_answers()
    }

    /// Writes the static part of a plan (frontends, ports, shards, reply
    /// rewrites) and removes what the plan no longer has.
    fn apply_plan(&mut self, plan: &RoutingPlan) -> Result<()> {
        let t = &mut self.tables;
        // The data plane caches copies of both (a cached session carries its
        // shard's address, the return path caches REVERSE): void them when
        // either changes.
        let before = (t.read_backends()?, t.reverse_entries()?);
        for (id, backend) in &plan.backends {
            t.write_backend(*id, *backend)?;
        }
        for (addr, rev) in &plan.reverse {
            t.write_reverse(*addr, *rev)?;
        }
        for (key, fe) in &plan.frontends {
            t.write_frontend(*key, *fe)?;
        }
        for (port, entry) in &plan.ports {
            t.write_port(*port, *entry)?;
        }
        t.write_tunnels(&plan.sites, &plan.tunnel_peers)?;
        let keep: HashSet<FrontendKey> = plan.frontends.iter().map(|(k, _)| *k).collect();
        let stale: Vec<FrontendKey> = t.frontend_keys()?.into_iter().filter(|k| !keep.contains(k)).collect();
        for key in stale {
            if !plan.ports.iter().any(|(p, _)| *p == key.port) {
                t.write_port(key.port, PortEntry::default()).context("clearing a stale port")?;
            }
            t.remove_frontend(key).context("removing a stale frontend")?;
        }
        if self.awaiting_discovery {
            return Ok(()); // shards discovered before a restart keep their reply rewrite
        }
        let keep: HashSet<u32> = plan.reverse.iter().map(|(k, _)| *k).collect();
        let stale: Vec<u32> = t.reverse_entries()?.into_iter().map(|(k, _)| k).filter(|k| !keep.contains(k)).collect();
        for key in stale {
            t.remove_reverse(key).context("removing a stale shard reply mapping")?;
        }
        if (t.read_backends()?, t.reverse_entries()?) != before {
            t.void_session_cache()?;
        }
        Ok(())
    }

    /// Backends the config dropped lose their slot and bookkeeping; groups
    /// that pointed at them point nowhere (their packets are dropped).
    fn clear_stale(&mut self, live: &HashSet<u32>) -> Result<()> {
        if self.awaiting_discovery {
            return Ok(()); // their routes wait for the first GameServer list
        }
        let backends = self.tables.read_backends()?;
        for (id, b) in backends.iter().enumerate().skip(1) {
            let id = id as u32;
            if b.addr != 0 && !live.contains(&id) {
                self.tables.clear_backend(id)?;
                self.tables.void_session_cache()?;
                self.write_shard_state(id, ShardState::default()).context("clearing SHARD_STATE")?;
            }
        }
        let stale: Vec<(u32, Group)> =
            self.live_groups().filter(|(_, g)| g.backend != 0 && !live.contains(&g.backend)).collect();
        for (id, g) in stale {
            self.write_group(id, Group { backend: 0, epoch: g.epoch.wrapping_add(1) })
                .context("clearing a stale group")?;
        }
        Ok(())
    }

    /// Switches to a new desired config. Refused, with nothing changed, when
    /// a shard that still has players would disappear; a failure while
    /// writing puts the old config back.
    pub fn reconcile(&mut self, new: Validated) -> Result<Vec<String>, ControlError> {
        let loads = self.loads();
        let mut changes = Vec::new();
        for (i, old) in self.cfg.shards.iter().enumerate() {
            if new.shards.iter().any(|s| s.name == old.name && s.address == old.address) {
                continue;
            }
            let players = self.players_on(i, &loads);
            if players > 0 {
                return Err(ControlError::ShardHasPlayers {
                    name: old.name.clone(),
                    address: old.address.to_string(),
                    players,
                });
            }
            changes.push(format!("removed shard {}", old.name));
        }
        for s in &new.shards {
            match self.cfg.shards.iter().find(|o| o.name == s.name && o.address == s.address) {
                None => changes.push(format!("added shard {}", s.name)),
                Some(o) if o.capacity != s.capacity => {
                    changes.push(format!("shard {} capacity {} -> {}", s.name, o.capacity, s.capacity))
                }
                Some(o) if o.role != s.role => {
                    changes.push(format!("shard {} role {:?} -> {:?}", s.name, o.role, s.role))
                }
                _ => {}
            }
        }
        let old_cfg = std::mem::replace(&mut self.cfg, new);
        if let Err(e) = self.write_desired() {
            self.cfg = old_cfg;
            if let Err(again) = self.write_desired() {
                log::error!("restoring the old config after a failed reload: {again:#}");
                self.half_applied = true;
            }
            return Err(ControlError::ReloadRolledBack(format!("{e:#}")));
        }
        self.half_applied = false;
        Ok(changes)
    }
}
