//! The data plane's maps in memory, for tests without root: [`FakeMaps`]
//! keeps every map the cluster model touches with the kernel semantics it
//! relies on, [`FaultyMaps`] refuses chosen writes, and [`Dump`] is a
//! stable text of every map for golden comparisons (as Cilium's
//! pkg/loadbalancer does with its fake maps).
//!
//! What is modelled: arrays of the kernel's sizes (an index past the end is
//! an error, an unwritten slot reads as zeros, a dump returns every slot);
//! hash maps with their capacity (inserting a new key into a full map is an
//! error; removing a missing key is an error, except where `remove_session`
//! turns ENOENT into `Ok(false)`); batched writes as one write per entry, so
//! a fault part way leaves a prefix written, as BPF_MAP_UPDATE_BATCH does;
//! per-CPU maps (COUNTERS, BACKEND_STATS) as one value each (the sum).
//!
//! What is not: PENDING's LRU order (a full PENDING evicts its least
//! recently seen entry by `last_seen_ns`, not by last access); the data
//! plane itself (no packets: tests write sessions with `insert_session`);
//! the maps the agent never writes through the model (PEERS, the caches,
//! QUERY_SOURCES, SESSION_EVENTS); map-in-map, pinning, flags.
//!
//! Clones of a `FakeMaps` share the maps, as two handles on pinned maps do:
//! a test hands one to `Cluster::start` and reads the other.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::{anyhow, Context, Result};
use proxy_common::{
    maps as names,
    net::{addr_from_map, port_from_map},
    Backend, BackendStats, Counter, Frontend, FrontendKey, Group, Meter, PortEntry, QueryAnswer, QuerySettings,
    Reverse, Session, SessionKey, ShardState, Tunnel, MAX_BACKENDS, MAX_FRONTENDS, MAX_GROUPS, PLACEMENT_SLOTS,
    QUERY_SLOTS,
};

use super::{map_writer::MapWriter, tables::Scan, TableSizes};
use store::{insert, remove, session_order, set, sorted_sessions};

mod dump;
mod faulty;
mod store;

pub use dump::Dump;
pub use faulty::{Fault, FaultyMaps};

/// Entries handed to `each_session` at a time: small, so that tests with a
/// handful of sessions cross chunk boundaries as a big table does.
const CHUNK: usize = 3;

/// PORTS is indexed by every UDP port.
const PORTS: usize = 1 << 16;

/// Asked before every single-entry write, with the map's name: an error
/// refuses the write.
type Gate<'a> = dyn FnMut(&'static str) -> Result<()> + 'a;

fn open(_: &'static str) -> Result<()> {
    Ok(())
}

/// Every map the cluster model reads or writes.
struct Maps {
    sizes: TableSizes,
    /// SITES and TUNNEL_PEERS, as last written.
    sites: Vec<(u32, Tunnel)>,
    tunnel_peers: Vec<(u32, Tunnel)>,
    frontends: HashMap<FrontendKey, Frontend>,
    ports: Vec<PortEntry>,
    placement: Vec<u32>,
    groups: Vec<Group>,
    shard_state: Vec<ShardState>,
    meter: Vec<Meter>,
    backends: Vec<Backend>,
    reverse: HashMap<u32, Reverse>,
    sessions: HashMap<SessionKey, Session>,
    pending: HashMap<SessionKey, Session>,
    counters: Vec<u64>,
    backend_stats: Vec<BackendStats>,
    query_answers: Vec<QueryAnswer>,
    query_settings: QuerySettings,
    session_cache_generation: u32,
}

impl Maps {
    fn new(sizes: TableSizes) -> Self {
        Self {
            sizes,
            sites: Vec::new(),
            tunnel_peers: Vec::new(),
            frontends: HashMap::new(),
            ports: vec![PortEntry::default(); PORTS],
            placement: vec![0; (MAX_FRONTENDS * PLACEMENT_SLOTS) as usize],
            groups: vec![Group::default(); MAX_GROUPS as usize],
            shard_state: vec![ShardState::default(); MAX_BACKENDS as usize],
            meter: vec![Meter::default(); MAX_BACKENDS as usize],
            backends: vec![Backend::default(); MAX_BACKENDS as usize],
            reverse: HashMap::new(),
            sessions: HashMap::new(),
            pending: HashMap::new(),
            counters: vec![0; Counter::ALL.len()],
            backend_stats: vec![BackendStats::default(); MAX_BACKENDS as usize],
            query_answers: vec![QueryAnswer::default(); (MAX_FRONTENDS * QUERY_SLOTS) as usize],
            query_settings: QuerySettings::default(),
            session_cache_generation: 0,
        }
    }

    fn table(&mut self, pending: bool) -> (&mut HashMap<SessionKey, Session>, &'static str, u32) {
        if pending {
            (&mut self.pending, names::PENDING, self.sizes.pending)
        } else {
            (&mut self.sessions, names::SESSIONS, self.sizes.sessions)
        }
    }

    /// One session written, as the kernel does: SESSIONS refuses a new key
    /// when full, PENDING (an LRU) makes room by evicting.
    fn put_session(&mut self, pending: bool, key: SessionKey, session: Session) -> Result<()> {
        let (map, name, capacity) = self.table(pending);
        if pending && !map.contains_key(&key) && map.len() >= capacity as usize {
            let oldest = map.iter().min_by_key(|(k, s)| (s.last_seen_ns, session_order(k))).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        insert(map, name, capacity, key, session)
    }

    /// Writes entries one by one (each through the gate); on a refusal,
    /// how many were written and why.
    fn write_sessions(
        &mut self,
        gate: &mut Gate<'_>,
        pending: bool,
        entries: &[(SessionKey, Session)],
    ) -> Result<(), (usize, anyhow::Error)> {
        let name = self.table(pending).1;
        for (i, (k, v)) in entries.iter().enumerate() {
            gate(name).and_then(|()| self.put_session(pending, *k, *v)).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// As `batch::update_all_or_nothing`, with its messages.
    fn rewrite_sessions(
        &mut self,
        gate: &mut Gate<'_>,
        pending: bool,
        new: &[(SessionKey, Session)],
        old: &[(SessionKey, Session)],
    ) -> Result<()> {
        debug_assert_eq!(new.len(), old.len());
        let name = self.table(pending).1;
        let written = match self.write_sessions(gate, pending, new) {
            Ok(()) => Ok(()),
            Err((done, error)) => {
                let undo = &old[..done.min(old.len())];
                match self.write_sessions(gate, pending, undo) {
                    Ok(()) => Err(anyhow!(
                        "entry {} of {} refused ({error:#}); the {done} written before it were restored",
                        done + 1,
                        new.len()
                    )),
                    Err((undone, again)) => Err(anyhow!(
                        "entry {} of {} refused ({error:#}) and restoring the {done} written before it failed too ({again:#}): {} entries keep their new value",
                        done + 1,
                        new.len(),
                        done - undone
                    )),
                }
            }
        }
        .with_context(|| format!("writing {} sessions of {name}", new.len()));
        let voided = if pending { Ok(()) } else { self.void_session_cache(gate) };
        written.and(voided)
    }

    fn upsert_sessions(&mut self, gate: &mut Gate<'_>, entries: &[(SessionKey, Session)]) -> Result<()> {
        let written = self
            .write_sessions(gate, false, entries)
            .map_err(|(done, e)| e.context(format!("writing peer sessions into SESSIONS ({done} written)")));
        written.and(self.void_session_cache(gate))
    }

    fn void_session_cache(&mut self, gate: &mut Gate<'_>) -> Result<()> {
        gate(names::SESSION_CACHE_GENERATION).context("writing SESSION_CACHE_GENERATION")?;
        self.session_cache_generation = self.session_cache_generation.wrapping_add(1);
        Ok(())
    }

    fn write_placement(
        &mut self,
        gate: &mut Gate<'_>,
        frontend_id: u32,
        old: Option<&[u32]>,
        new: &[u32],
    ) -> Result<()> {
        let base = frontend_id * PLACEMENT_SLOTS;
        for (slot, group) in new.iter().enumerate() {
            if old.is_some_and(|o| o.get(slot) == Some(group)) {
                continue;
            }
            gate(names::PLACEMENT)
                .and_then(|()| set(&mut self.placement, names::PLACEMENT, base + slot as u32, *group))
                .context("writing PLACEMENT")?;
        }
        Ok(())
    }

    fn remove_session(&mut self, gate: &mut Gate<'_>, pending: bool, key: &SessionKey) -> Result<bool> {
        let (_, name, _) = self.table(pending);
        gate(name).context("removing a session")?;
        Ok(self.table(pending).0.remove(key).is_some())
    }

    fn promote(&mut self, gate: &mut Gate<'_>, key: &SessionKey, session: Session) -> Result<()> {
        gate(names::SESSIONS)
            .and_then(|()| self.put_session(false, *key, session))
            .context("promoting a session into SESSIONS")?;
        self.remove_session(gate, true, key)?;
        Ok(())
    }

    /// The writes of `MapWriter` other than the batches, each one map update.
    fn write(&mut self, gate: &mut Gate<'_>, w: Write<'_>) -> Result<()> {
        match w {
            Write::Group(id, g) => gate(names::GROUPS)
                .and_then(|()| set(&mut self.groups, names::GROUPS, id, g))
                .with_context(|| format!("writing GROUPS[{id}]")),
            Write::ShardState(id, s) => gate(names::SHARD_STATE)
                .and_then(|()| set(&mut self.shard_state, names::SHARD_STATE, id, s))
                .with_context(|| format!("writing SHARD_STATE[{id}]")),
            Write::Backend(id, b) => gate(names::BACKENDS)
                .and_then(|()| set(&mut self.backends, names::BACKENDS, id, b))
                .with_context(|| format!("writing BACKENDS[{id}]")),
            Write::ClearBackend(id) => gate(names::BACKENDS)
                .and_then(|()| set(&mut self.backends, names::BACKENDS, id, Backend::default()))
                .with_context(|| format!("clearing BACKENDS[{id}]")),
            Write::Reverse(addr, r) => gate(names::REVERSE)
                .and_then(|()| insert(&mut self.reverse, names::REVERSE, MAX_BACKENDS, addr, r))
                .context("writing REVERSE"),
            Write::RemoveReverse(addr) => gate(names::REVERSE)
                .and_then(|()| remove(&mut self.reverse, names::REVERSE, &addr))
                .context("removing from REVERSE"),
            Write::Frontend(key, f) => gate(names::FRONTENDS)
                .and_then(|()| insert(&mut self.frontends, names::FRONTENDS, MAX_FRONTENDS, key, f))
                .context("writing FRONTENDS"),
            Write::RemoveFrontend(key) => gate(names::FRONTENDS)
                .and_then(|()| remove(&mut self.frontends, names::FRONTENDS, &key))
                .context("removing from FRONTENDS"),
            Write::Port(port, e) => gate(names::PORTS)
                .and_then(|()| set(&mut self.ports, names::PORTS, port as u32, e))
                .with_context(|| format!("writing PORTS[{port}]")),
            Write::Meter(id, m) => gate(names::METER)
                .and_then(|()| set(&mut self.meter, names::METER, id, m))
                .with_context(|| format!("writing METER[{id}]")),
            Write::QueryAnswer(index, a) => gate(names::QUERY_ANSWERS)
                .and_then(|()| set(&mut self.query_answers, names::QUERY_ANSWERS, index, *a))
                .with_context(|| format!("writing QUERY_ANSWERS[{index}]")),
            Write::QuerySettings(s) => {
                gate(names::QUERY_SETTINGS).context("writing QUERY_SETTINGS")?;
                self.query_settings = s;
                Ok(())
            }
        }
    }
}

/// One single-update write.
enum Write<'a> {
    Group(u32, Group),
    ShardState(u32, ShardState),
    Backend(u32, Backend),
    ClearBackend(u32),
    Reverse(u32, Reverse),
    RemoveReverse(u32),
    Frontend(FrontendKey, Frontend),
    RemoveFrontend(FrontendKey),
    Port(u16, PortEntry),
    Meter(u32, Meter),
    QueryAnswer(u32, &'a QueryAnswer),
    QuerySettings(QuerySettings),
}

/// The data plane's maps in memory (see the module's notes). Clones share
/// the maps.
#[derive(Clone)]
pub struct FakeMaps {
    maps: Arc<Mutex<Maps>>,
}

impl Default for FakeMaps {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FakeMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FakeMaps:\n{}", self.dump())
    }
}

impl FakeMaps {
    /// Empty maps of the kernel's default sizes.
    pub fn new() -> Self {
        Self::sized(TableSizes::default())
    }

    /// Empty maps with session tables of these sizes.
    pub fn sized(sizes: TableSizes) -> Self {
        Self { maps: Arc::new(Mutex::new(Maps::new(sizes))) }
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        // A test that panicked holding the lock leaves maps worth reading.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a session as the data plane would (a new player placed, a
    /// promotion); SESSIONS refuses a new key when full.
    pub fn insert_session(&self, pending: bool, key: SessionKey, session: Session) -> Result<()> {
        self.lock().put_session(pending, key, session)
    }

    /// One session as the table holds it.
    pub fn session(&self, pending: bool, key: &SessionKey) -> Option<Session> {
        self.lock().table(pending).0.get(key).copied()
    }

    /// Adds to a counter, as the data plane's CPUs would.
    pub fn add_counter(&self, c: Counter, n: u64) {
        self.lock().counters[c as usize] += n;
    }

    /// Sets a shard's traffic (summed over CPUs).
    pub fn set_backend_stats(&self, backend: u32, stats: BackendStats) -> Result<()> {
        set(&mut self.lock().backend_stats, names::BACKEND_STATS, backend, stats)
    }

    /// One frontend's row of PLACEMENT.
    pub fn placement_row(&self, frontend_id: u32) -> Vec<u32> {
        let base = (frontend_id * PLACEMENT_SLOTS) as usize;
        self.lock().placement[base..base + PLACEMENT_SLOTS as usize].to_vec()
    }

    pub fn group(&self, id: u32) -> Group {
        self.lock().groups[id as usize]
    }

    pub fn session_cache_generation(&self) -> u32 {
        self.lock().session_cache_generation
    }

    /// Every map's contents as stable text (see [`Dump`]).
    pub fn dump(&self) -> Dump {
        Dump::of(&self.lock())
    }
}

impl MapWriter for FakeMaps {
    fn read_groups(&self) -> Result<Vec<Group>> {
        Ok(self.lock().groups.clone())
    }
    fn read_shard_states(&self) -> Result<Vec<ShardState>> {
        Ok(self.lock().shard_state.clone())
    }
    fn read_backends(&self) -> Result<Vec<Backend>> {
        Ok(self.lock().backends.clone())
    }
    fn frontend_entries(&self) -> Result<Vec<(FrontendKey, Frontend)>> {
        let mut all: Vec<_> = self.lock().frontends.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable_by_key(|(k, _)| (k.vip, k.port));
        Ok(all)
    }
    fn reverse_entries(&self) -> Result<Vec<(u32, Reverse)>> {
        let mut all: Vec<_> = self.lock().reverse.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable_by_key(|(addr, _)| *addr);
        Ok(all)
    }
    fn scan_sessions(&self) -> Result<Scan> {
        let maps = self.lock();
        Ok(Scan { established: sorted_sessions(&maps.sessions), pending: sorted_sessions(&maps.pending) })
    }
    fn each_session(&self, pending: bool, each: &mut dyn FnMut(&[SessionKey], &[Session])) -> Result<()> {
        // Copied out first: `each` may call back into these maps.
        let all = {
            let maps = self.lock();
            sorted_sessions(if pending { &maps.pending } else { &maps.sessions })
        };
        for chunk in all.chunks(CHUNK) {
            let (keys, values): (Vec<SessionKey>, Vec<Session>) = chunk.iter().copied().unzip();
            each(&keys, &values);
        }
        Ok(())
    }
    fn counter(&self, c: Counter) -> Result<u64> {
        Ok(self.lock().counters[c as usize])
    }
    fn backend_stats(&self, backend: u32) -> Result<BackendStats> {
        self.lock().backend_stats.get(backend as usize).copied().context("reading BACKEND_STATS: index past the end")
    }
    fn write_group(&mut self, id: u32, group: Group) -> Result<()> {
        self.lock().write(&mut open, Write::Group(id, group))
    }
    fn write_shard_state(&mut self, backend: u32, state: ShardState) -> Result<()> {
        self.lock().write(&mut open, Write::ShardState(backend, state))
    }
    fn write_backend(&mut self, id: u32, backend: Backend) -> Result<()> {
        self.lock().write(&mut open, Write::Backend(id, backend))
    }
    fn clear_backend(&mut self, id: u32) -> Result<()> {
        self.lock().write(&mut open, Write::ClearBackend(id))
    }
    fn write_reverse(&mut self, addr: u32, reverse: Reverse) -> Result<()> {
        self.lock().write(&mut open, Write::Reverse(addr, reverse))
    }
    fn remove_reverse(&mut self, addr: u32) -> Result<()> {
        self.lock().write(&mut open, Write::RemoveReverse(addr))
    }
    fn write_frontend(&mut self, key: FrontendKey, frontend: Frontend) -> Result<()> {
        self.lock().write(&mut open, Write::Frontend(key, frontend))
    }
    fn remove_frontend(&mut self, key: FrontendKey) -> Result<()> {
        self.lock().write(&mut open, Write::RemoveFrontend(key))
    }
    fn write_port(&mut self, port: u16, entry: PortEntry) -> Result<()> {
        self.lock().write(&mut open, Write::Port(port, entry))
    }
    fn write_meter(&mut self, backend: u32, meter: Meter) -> Result<()> {
        self.lock().write(&mut open, Write::Meter(backend, meter))
    }
    fn write_placement(&mut self, frontend_id: u32, old: Option<&[u32]>, new: &[u32]) -> Result<()> {
        self.lock().write_placement(&mut open, frontend_id, old, new)
    }
    fn write_query_answer(&mut self, index: u32, answer: &QueryAnswer) -> Result<()> {
        self.lock().write(&mut open, Write::QueryAnswer(index, answer))
    }
    fn write_query_settings(&mut self, settings: QuerySettings) -> Result<()> {
        self.lock().write(&mut open, Write::QuerySettings(settings))
    }
    fn rewrite_sessions(
        &mut self,
        pending: bool,
        new: &[(SessionKey, Session)],
        old: &[(SessionKey, Session)],
    ) -> Result<()> {
        self.lock().rewrite_sessions(&mut open, pending, new, old)
    }
    fn upsert_sessions(&mut self, entries: &[(SessionKey, Session)]) -> Result<()> {
        self.lock().upsert_sessions(&mut open, entries)
    }
    fn void_session_cache(&mut self) -> Result<()> {
        self.lock().void_session_cache(&mut open)
    }
    fn write_tunnels(&mut self, sites: &[(u32, Tunnel)], peers: &[(u32, Tunnel)]) -> Result<()> {
        let mut m = self.lock();
        (m.sites, m.tunnel_peers) = (sites.to_vec(), peers.to_vec());
        Ok(())
    }
    fn promote(&mut self, key: &SessionKey, session: Session) -> Result<()> {
        self.lock().promote(&mut open, key, session)
    }
    fn remove_session(&mut self, pending: bool, key: &SessionKey) -> Result<bool> {
        self.lock().remove_session(&mut open, pending, key)
    }
}

#[cfg(test)]
mod tests;
