//! `FaultyMaps`: the fake maps, refusing the writes a test chooses.

use super::*;

/// Which writes a [`FaultyMaps`] refuses. Writes are counted one per map
/// update (each entry of a batch is one), from when the fault was armed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The nth write (1-based) to any map fails; the others succeed.
    Nth(usize),
    /// Every write to this map fails (`proxy_common::maps::*`).
    Map(&'static str),
    /// The nth write (1-based) to this map fails; the others succeed.
    NthTo(&'static str, usize),
}

#[derive(Debug, Default)]
struct Plan {
    fault: Option<Fault>,
    writes: usize,
    by_map: HashMap<&'static str, usize>,
    refused: Vec<String>,
}

impl Plan {
    fn check(&mut self, map: &'static str) -> Result<()> {
        let Some(fault) = &self.fault else { return Ok(()) };
        self.writes += 1;
        let to_map = self.by_map.entry(map).or_default();
        *to_map += 1;
        let refuse = match fault {
            Fault::Nth(n) => self.writes == *n,
            Fault::Map(m) => *m == map,
            Fault::NthTo(m, n) => *m == map && *to_map == *n,
        };
        if !refuse {
            return Ok(());
        }
        let what = format!("injected fault: write {} ({} to {map}) refused", self.writes, to_map);
        self.refused.push(what.clone());
        Err(anyhow!(what))
    }
}

/// A [`FakeMaps`] that refuses the writes its armed [`Fault`] names, with
/// an error naming the map. Unarmed it is the fake itself. Clones share
/// the maps and the fault: arm one after handing the other to a `Cluster`.
#[derive(Clone, Default)]
pub struct FaultyMaps {
    maps: FakeMaps,
    plan: Arc<Mutex<Plan>>,
}

impl FaultyMaps {
    pub fn new(maps: FakeMaps) -> Self {
        Self { maps, plan: Arc::default() }
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses the writes `fault` names, counting from now.
    pub fn arm(&self, fault: Fault) {
        *self.plan() = Plan { fault: Some(fault), ..Plan::default() };
    }

    /// Refuses nothing from now on.
    pub fn disarm(&self) {
        self.plan().fault = None;
    }

    /// The writes refused so far (since the last `arm`).
    pub fn refused(&self) -> Vec<String> {
        self.plan().refused.clone()
    }

    /// The maps underneath (shared).
    pub fn maps(&self) -> &FakeMaps {
        &self.maps
    }

    /// Runs `f` on the maps with every write through the armed fault.
    fn gated<R>(&self, f: impl FnOnce(&mut Maps, &mut Gate<'_>) -> R) -> R {
        let plan = &self.plan;
        let mut gate = |map: &'static str| plan.lock().unwrap_or_else(|e| e.into_inner()).check(map);
        f(&mut self.maps.lock(), &mut gate)
    }
}

impl MapWriter for FaultyMaps {
    fn read_groups(&self) -> Result<Vec<Group>> {
        self.maps.read_groups()
    }
    fn read_shard_states(&self) -> Result<Vec<ShardState>> {
        self.maps.read_shard_states()
    }
    fn read_backends(&self) -> Result<Vec<Backend>> {
        self.maps.read_backends()
    }
    fn frontend_entries(&self) -> Result<Vec<(FrontendKey, Frontend)>> {
        self.maps.frontend_entries()
    }
    fn reverse_entries(&self) -> Result<Vec<(u32, Reverse)>> {
        self.maps.reverse_entries()
    }
    fn scan_sessions(&self) -> Result<Scan> {
        self.maps.scan_sessions()
    }
    fn each_session(&self, pending: bool, each: &mut dyn FnMut(&[SessionKey], &[Session])) -> Result<()> {
        self.maps.each_session(pending, each)
    }
    fn counter(&self, c: Counter) -> Result<u64> {
        self.maps.counter(c)
    }
    fn backend_stats(&self, backend: u32) -> Result<BackendStats> {
        self.maps.backend_stats(backend)
    }
    fn write_group(&mut self, id: u32, group: Group) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::Group(id, group)))
    }
    fn write_shard_state(&mut self, backend: u32, state: ShardState) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::ShardState(backend, state)))
    }
    fn write_backend(&mut self, id: u32, backend: Backend) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::Backend(id, backend)))
    }
    fn clear_backend(&mut self, id: u32) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::ClearBackend(id)))
    }
    fn write_reverse(&mut self, addr: u32, reverse: Reverse) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::Reverse(addr, reverse)))
    }
    fn remove_reverse(&mut self, addr: u32) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::RemoveReverse(addr)))
    }
    fn write_frontend(&mut self, key: FrontendKey, frontend: Frontend) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::Frontend(key, frontend)))
    }
    fn remove_frontend(&mut self, key: FrontendKey) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::RemoveFrontend(key)))
    }
    fn write_port(&mut self, port: u16, entry: PortEntry) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::Port(port, entry)))
    }
    fn write_meter(&mut self, backend: u32, meter: Meter) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::Meter(backend, meter)))
    }
    fn write_placement(&mut self, frontend_id: u32, old: Option<&[u32]>, new: &[u32]) -> Result<()> {
        self.gated(|m, g| m.write_placement(g, frontend_id, old, new))
    }
    fn write_query_answer(&mut self, index: u32, answer: &QueryAnswer) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::QueryAnswer(index, answer)))
    }
    fn write_query_settings(&mut self, settings: QuerySettings) -> Result<()> {
        self.gated(|m, g| m.write(g, Write::QuerySettings(settings)))
    }
    fn rewrite_sessions(
        &mut self,
        pending: bool,
        new: &[(SessionKey, Session)],
        old: &[(SessionKey, Session)],
    ) -> Result<()> {
        self.gated(|m, g| m.rewrite_sessions(g, pending, new, old))
    }
    fn upsert_sessions(&mut self, entries: &[(SessionKey, Session)]) -> Result<()> {
        self.gated(|m, g| m.upsert_sessions(g, entries))
    }
    fn void_session_cache(&mut self) -> Result<()> {
        self.gated(|m, g| m.void_session_cache(g))
    }
    fn write_tunnels(&mut self, sites: &[(u32, Tunnel)], peers: &[(u32, Tunnel)]) -> Result<()> {
        self.maps.write_tunnels(sites, peers)
    }
    fn promote(&mut self, key: &SessionKey, session: Session) -> Result<()> {
        self.gated(|m, g| m.promote(g, key, session))
    }
    fn remove_session(&mut self, pending: bool, key: &SessionKey) -> Result<bool> {
        self.gated(|m, g| m.remove_session(g, pending, key))
    }
}
