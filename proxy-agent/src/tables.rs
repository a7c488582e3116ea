//! Typed handles on the data plane's maps, and the writes the agent makes.
//! Each write is a single map update: the data path never sees a half-written
//! value (Katran's rule), and a group move is one write.

use std::{collections::HashSet, path::Path};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    Ebpf,
};
use proxy_common::{
    maps as names, Backend, BackendStats, Counter, Frontend, FrontendKey, Group, Meter, PortEntry, Reverse, Session,
    SessionKey, ShardState, PLACEMENT_SLOTS,
};

use crate::plan::RoutingPlan;

pub struct Tables {
    pub frontends: HashMap<MapData, FrontendKey, Frontend>,
    pub ports: Array<MapData, PortEntry>,
    pub placement: Array<MapData, u32>,
    pub groups: Array<MapData, Group>,
    pub shard_state: Array<MapData, ShardState>,
    pub meter: Array<MapData, Meter>,
    pub backends: Array<MapData, Backend>,
    pub reverse: HashMap<MapData, u32, Reverse>,
    pub sessions: HashMap<MapData, SessionKey, Session>,
    pub pending: HashMap<MapData, SessionKey, Session>,
    pub counters: PerCpuArray<MapData, u64>,
    pub backend_stats: PerCpuArray<MapData, BackendStats>,
}

/// Turns one untyped map into the typed handle a field wants.
fn typed<T>(source: &mut impl FnMut(&str) -> Result<aya::maps::Map>, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    T::try_from(source(name)?).with_context(|| format!("map {name} has an unexpected type"))
}

impl Tables {
    /// Opens the maps a running (or stopped) agent pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Self::from_source(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).with_context(|| {
                format!("opening pinned map {}; is the agent running with this bpffs folder?", path.display())
            })?;
            Ok(aya::maps::Map::from_map_data(data)?)
        })
    }

    /// Takes the maps out of a freshly loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_source(|name| ebpf.take_map(name).with_context(|| format!("the eBPF object has no map {name}")))
    }

    fn from_source(mut source: impl FnMut(&str) -> Result<aya::maps::Map>) -> Result<Self> {
        let s = &mut source;
        Ok(Self {
            frontends: typed(s, names::FRONTENDS)?,
            ports: typed(s, names::PORTS)?,
            placement: typed(s, names::PLACEMENT)?,
            groups: typed(s, names::GROUPS)?,
            shard_state: typed(s, names::SHARD_STATE)?,
            meter: typed(s, names::METER)?,
            backends: typed(s, names::BACKENDS)?,
            reverse: typed(s, names::REVERSE)?,
            sessions: typed(s, names::SESSIONS)?,
            pending: typed(s, names::PENDING)?,
            counters: typed(s, names::COUNTERS)?,
            backend_stats: typed(s, names::BACKEND_STATS)?,
        })
    }

    /// Writes a plan: new and changed entries first, then removes what the plan
    /// no longer has. Sessions are never touched, nor the epoch of a group
    /// that already points where it should.
    pub fn apply(&mut self, plan: &RoutingPlan) -> Result<()> {
        for (id, backend) in &plan.backends {
            self.backends.set(*id, backend, 0).context("writing BACKENDS")?;
        }
        for (group, backend) in &plan.home_groups {
            self.point_group(*group, *backend)?;
        }
        for (addr, rev) in &plan.reverse {
            self.reverse.insert(addr, rev, 0).context("writing REVERSE")?;
        }
        for (fe_id, table) in &plan.placement {
            self.write_placement(*fe_id, table)?;
        }
        for (key, fe) in &plan.frontends {
            self.frontends.insert(key, fe, 0).context("writing FRONTENDS")?;
        }
        for (port, entry) in &plan.ports {
            self.ports.set(*port as u32, entry, 0).context("writing PORTS")?;
        }
        // Remove what the plan dropped.
        let keep: HashSet<FrontendKey> = plan.frontends.iter().map(|(k, _)| *k).collect();
        let stale: Vec<FrontendKey> =
            self.frontends.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for key in stale {
            if !plan.ports.iter().any(|(p, _)| *p == key.port) {
                self.ports.set(key.port as u32, PortEntry::default(), 0).context("clearing a stale port")?;
            }
            self.frontends.remove(&key).context("removing a stale frontend")?;
        }
        let keep: HashSet<u32> = plan.reverse.iter().map(|(k, _)| *k).collect();
        let stale: Vec<u32> = self.reverse.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for key in stale {
            self.reverse.remove(&key).context("removing a stale shard reply mapping")?;
        }
        let live: HashSet<u32> = plan.backends.iter().map(|(id, _)| *id).collect();
        for (id, _) in self.used_backends() {
            if !live.contains(&id) {
                self.backends.set(id, Backend::default(), 0).context("clearing a stale backend")?;
                self.shard_state.set(id, ShardState::default(), 0).context("clearing SHARD_STATE")?;
            }
        }
        for (group, g) in self.all_groups() {
            if g.backend != 0 && !live.contains(&g.backend) {
                self.groups
                    .set(group, Group { backend: 0, epoch: g.epoch.wrapping_add(1) }, 0)
                    .context("clearing a stale group")?;
            }
        }
        Ok(())
    }

    /// Points `group` at `backend`, bumping its epoch when that moves it (its
    /// players then re-handshake to the new shard). No-op when already there.
    pub fn point_group(&mut self, group: u32, backend: u32) -> Result<()> {
        let old = self.groups.get(&group, 0).unwrap_or_default();
        if old.backend != backend {
            let new = Group { backend, epoch: old.epoch.wrapping_add(1) };
            self.groups.set(group, new, 0).context("writing GROUPS")?;
        }
        Ok(())
    }

    /// Every group that points somewhere (or ever did), with its value.
    pub fn all_groups(&self) -> Vec<(u32, Group)> {
        let all = crate::batch::dump(&self.groups).unwrap_or_else(|_| {
            self.groups.iter().enumerate().filter_map(|(i, g)| g.ok().map(|g| (i as u32, g))).collect()
        });
        all.into_iter().filter(|(i, g)| *i != 0 && (g.backend != 0 || g.epoch != 0)).collect()
    }

    /// Every backend slot that holds a shard, by id (one batched read).
    pub fn used_backends(&self) -> Vec<(u32, Backend)> {
        let all = crate::batch::dump(&self.backends).unwrap_or_else(|_| {
            self.backends.iter().enumerate().filter_map(|(i, b)| b.ok().map(|b| (i as u32, b))).collect()
        });
        all.into_iter().filter(|(id, b)| *id != 0 && b.addr != 0).collect()
    }

    /// Every backend's bookkeeping, by backend id (one batched read).
    pub fn shard_states(&self) -> Vec<(u32, ShardState)> {
        crate::batch::dump(&self.shard_state).unwrap_or_else(|_| {
            self.shard_state.iter().enumerate().filter_map(|(i, s)| s.ok().map(|s| (i as u32, s))).collect()
        })
    }

    /// Writes one frontend's placement row, slot by slot (each a single update;
    /// a new player landing mid-write gets an old or a new slot, both valid).
    pub fn write_placement(&mut self, frontend_id: u32, table: &[u32]) -> Result<()> {
        let base = frontend_id * PLACEMENT_SLOTS;
        for (slot, group) in table.iter().enumerate() {
            let index = base + slot as u32;
            if self.placement.get(&index, 0).ok() != Some(*group) {
                self.placement.set(index, group, 0).context("writing PLACEMENT")?;
            }
        }
        Ok(())
    }

    /// Writes only the slots that differ from `old` (the row last written);
    /// without `old`, compares against the map.
    pub fn write_placement_diff(&mut self, frontend_id: u32, old: Option<&[u32]>, new: &[u32]) -> Result<()> {
        let Some(old) = old.filter(|o| o.len() == new.len()) else {
            return self.write_placement(frontend_id, new);
        };
        let base = frontend_id * PLACEMENT_SLOTS;
        for (slot, (o, n)) in old.iter().zip(new).enumerate() {
            if o != n {
                self.placement.set(base + slot as u32, n, 0).context("writing PLACEMENT")?;
            }
        }
        Ok(())
    }

    /// One counter summed over CPUs.
    pub fn counter(&self, counter: Counter) -> Result<u64> {
        let values = self.counters.get(&(counter as u32), 0).context("reading COUNTERS")?;
        Ok(values.iter().sum())
    }

    /// Every counter, summed over CPUs.
    pub fn all_counters(&self) -> Result<Vec<(Counter, u64)>> {
        Counter::ALL.iter().map(|&c| Ok((c, self.counter(c)?))).collect()
    }

    pub fn backend_stats(&self, backend: u32) -> Result<BackendStats> {
        let values = self.backend_stats.get(&backend, 0).context("reading BACKEND_STATS")?;
        Ok(values.iter().fold(BackendStats::default(), |mut acc, s| {
            acc.packets_in += s.packets_in;
            acc.bytes_in += s.bytes_in;
            acc.packets_out += s.packets_out;
            acc.bytes_out += s.bytes_out;
            acc
        }))
    }

    /// All established sessions (one batched read).
    pub fn sessions(&self) -> Vec<(SessionKey, Session)> {
        crate::batch::dump(&self.sessions).unwrap_or_else(|_| self.sessions.iter().filter_map(Result::ok).collect())
    }

    /// All pending sessions (one batched read).
    pub fn pending_sessions(&self) -> Vec<(SessionKey, Session)> {
        crate::batch::dump(&self.pending).unwrap_or_else(|_| self.pending.iter().filter_map(Result::ok).collect())
    }
}
