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
    hash::Hash,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::{anyhow, bail, Context, Result};
use proxy_common::{
    maps as names,
    net::{addr_from_map, port_from_map},
    Backend, BackendStats, Counter, Frontend, FrontendKey, Group, Meter, PortEntry, QueryAnswer, QuerySettings,
    Reverse, Session, SessionKey, ShardState, MAX_BACKENDS, MAX_FRONTENDS, MAX_GROUPS, PLACEMENT_SLOTS, QUERY_SLOTS,
};

use super::{map_writer::MapWriter, tables::Scan, TableSizes};

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

/// One array slot, as the kernel's array update: past the end is E2BIG.
fn set<T>(array: &mut [T], name: &str, index: u32, value: T) -> Result<()> {
    let len = array.len();
    let slot = array
        .get_mut(index as usize)
        .ok_or_else(|| anyhow!("{name} has {len} entries, index {index} is past the end (E2BIG)"))?;
    *slot = value;
    Ok(())
}

/// One hash entry, as the kernel's hash update with BPF_ANY: a new key in a
/// full map is E2BIG.
fn insert<K: Hash + Eq, V>(map: &mut HashMap<K, V>, name: &str, capacity: u32, key: K, value: V) -> Result<()> {
    if !map.contains_key(&key) && map.len() >= capacity as usize {
        bail!("{name} is full ({capacity} entries) (E2BIG)");
    }
    map.insert(key, value);
    Ok(())
}

fn remove<K: Hash + Eq, V>(map: &mut HashMap<K, V>, name: &str, key: &K) -> Result<()> {
    map.remove(key).map(|_| ()).ok_or_else(|| anyhow!("{name} has no such key (ENOENT)"))
}

fn session_order(k: &SessionKey) -> (u16, u32, u16) {
    (k.frontend, u32::from_be_bytes(addr_from_map(k.client_addr)), port_from_map(k.client_port))
}

fn sorted_sessions(map: &HashMap<SessionKey, Session>) -> Vec<(SessionKey, Session)> {
    let mut all: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
    all.sort_unstable_by_key(|(k, _)| session_order(k));
    all
}

impl Maps {
    fn new(sizes: TableSizes) -> Self {
        Self {
            sizes,
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
    fn void_session_cache(&mut self) -> Result<()> {
        self.lock().void_session_cache(&mut open)
    }
    fn promote(&mut self, key: &SessionKey, session: Session) -> Result<()> {
        self.lock().promote(&mut open, key, session)
    }
    fn remove_session(&mut self, pending: bool, key: &SessionKey) -> Result<bool> {
        self.lock().remove_session(&mut open, pending, key)
    }
}

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
    fn void_session_cache(&mut self) -> Result<()> {
        self.gated(|m, g| m.void_session_cache(g))
    }
    fn promote(&mut self, key: &SessionKey, session: Session) -> Result<()> {
        self.gated(|m, g| m.promote(g, key, session))
    }
    fn remove_session(&mut self, pending: bool, key: &SessionKey) -> Result<bool> {
        self.gated(|m, g| m.remove_session(g, pending, key))
    }
}

/// Every map's non-empty entries as lines of text, by map name, in a stable
/// order: compare whole dumps, one map (`map`), or all but some (`without`).
/// Sessions are shown without `last_seen_ns` (a move stamps the clock), a
/// placement row as slots per group, a query answer as its length, flags
/// and sum (the body holds the agent's version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub maps: BTreeMap<&'static str, Vec<String>>,
}

fn ip(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr_from_map(addr))
}

fn client(k: &SessionKey) -> String {
    format!("{}:{} frontend {}", ip(k.client_addr), port_from_map(k.client_port), k.frontend)
}

impl Dump {
    fn of(m: &Maps) -> Self {
        let mut maps: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut frontends: Vec<_> = m.frontends.iter().collect();
        frontends.sort_unstable_by_key(|(k, _)| (u32::from(ip(k.vip)), port_from_map(k.port)));
        maps.insert(
            names::FRONTENDS,
            frontends.iter().map(|(k, f)| format!("{}:{} id {}", ip(k.vip), port_from_map(k.port), f.id)).collect(),
        );
        let mut ports: Vec<(u16, &PortEntry)> = m
            .ports
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != PortEntry::default())
            .map(|(p, e)| (port_from_map(p as u16), e))
            .collect();
        ports.sort_unstable_by_key(|(p, _)| *p);
        maps.insert(
            names::PORTS,
            ports
                .iter()
                .map(|(p, e)| format!("{p} vip {} frontend {} flags {}", ip(e.vip), e.frontend, e.flags))
                .collect(),
        );
        let rows = m.placement.chunks(PLACEMENT_SLOTS as usize).enumerate().filter(|(_, r)| r.iter().any(|&g| g != 0));
        maps.insert(
            names::PLACEMENT,
            rows.map(|(fe, row)| {
                let mut by_group: BTreeMap<u32, usize> = BTreeMap::new();
                for &g in row {
                    *by_group.entry(g).or_default() += 1;
                }
                let counts: Vec<String> = by_group.iter().map(|(g, n)| format!("group {g} x {n}")).collect();
                format!("row {fe}: {}", counts.join(", "))
            })
            .collect(),
        );
        let array = |name: &'static str, lines: Vec<String>, maps: &mut BTreeMap<_, _>| {
            maps.insert(name, lines);
        };
        array(names::GROUPS, nonzero(&m.groups, |g| format!("backend {} epoch {}", g.backend, g.epoch)), &mut maps);
        array(
            names::SHARD_STATE,
            nonzero(&m.shard_state, |s| format!("home_group {} flags {}", s.home_group, s.flags)),
            &mut maps,
        );
        array(
            names::METER,
            nonzero(&m.meter, |x| {
                format!("interval_ns {} tolerance_ns {} tat_ns {}", x.interval_ns, x.tolerance_ns, x.tat_ns)
            }),
            &mut maps,
        );
        array(names::BACKENDS, nonzero(&m.backends, |b| ip(b.addr).to_string()), &mut maps);
        let mut reverse: Vec<_> = m.reverse.iter().collect();
        reverse.sort_unstable_by_key(|(a, _)| u32::from(ip(**a)));
        maps.insert(
            names::REVERSE,
            reverse
                .iter()
                .map(|(a, r)| {
                    format!(
                        "{} -> {}:{} frontend {} backend {}",
                        ip(**a),
                        ip(r.vip),
                        port_from_map(r.port),
                        r.frontend,
                        r.backend
                    )
                })
                .collect(),
        );
        for (name, table) in [(names::SESSIONS, &m.sessions), (names::PENDING, &m.pending)] {
            let lines = sorted_sessions(table)
                .iter()
                .map(|(k, s)| format!("{} group {} epoch {}", client(k), s.group, s.epoch))
                .collect();
            maps.insert(name, lines);
        }
        let counters = Counter::ALL
            .iter()
            .filter(|&&c| m.counters[c as usize] != 0)
            .map(|&c| format!("{} {}", c.name(), m.counters[c as usize]))
            .collect();
        maps.insert(names::COUNTERS, counters);
        array(
            names::BACKEND_STATS,
            nonzero(&m.backend_stats, |s| {
                format!(
                    "in {} packets {} bytes, out {} packets {} bytes",
                    s.packets_in, s.bytes_in, s.packets_out, s.bytes_out
                )
            }),
            &mut maps,
        );
        let answers = m
            .query_answers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.len != 0 || a.flags != 0)
            .map(|(i, a)| format!("[{i}] len {} flags {} sum {:#x}", a.len, a.flags, a.body_sum))
            .collect();
        maps.insert(names::QUERY_ANSWERS, answers);
        let s = m.query_settings;
        let settings = if s == QuerySettings::default() {
            Vec::new()
        } else {
            vec![format!("per_second {} agent_addr {}", s.per_second, ip(s.agent_addr))]
        };
        maps.insert(names::QUERY_SETTINGS, settings);
        maps.insert(names::SESSION_CACHE_GENERATION, vec![m.session_cache_generation.to_string()]);
        maps.retain(|_, lines| !lines.is_empty());
        Self { maps }
    }

    /// One map's lines (none when it is empty).
    pub fn map(&self, name: &str) -> &[String] {
        self.maps.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The dump without these maps (SESSION_CACHE_GENERATION, say, which a
    /// rolled-back write still bumps).
    pub fn without(mut self, names: &[&str]) -> Self {
        self.maps.retain(|name, _| !names.contains(name));
        self
    }
}

/// `[index] text` for every slot that is not all zeros.
fn nonzero<T: Default + PartialEq>(array: &[T], show: impl Fn(&T) -> String) -> Vec<String> {
    let zero = T::default();
    array.iter().enumerate().filter(|(_, v)| **v != zero).map(|(i, v)| format!("[{i}] {}", show(v))).collect()
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, lines) in &self.maps {
            writeln!(f, "{name}")?;
            for line in lines {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proxy_common::net::{addr_to_map, port_to_map};

    use super::*;

    fn key(n: u8) -> SessionKey {
        SessionKey { client_addr: addr_to_map([10, 0, 0, n]), client_port: port_to_map(5000), frontend: 0 }
    }

    fn seen(t: u64) -> Session {
        Session { group: 1, epoch: 1, last_seen_ns: t }
    }

    #[test]
    fn an_array_write_past_the_end_fails_naming_the_map() {
        let mut maps = FakeMaps::new();
        let err = maps.write_group(MAX_GROUPS, Group::default()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "writing GROUPS[4096]: GROUPS has 4096 entries, index 4096 is past the end (E2BIG)"
        );
        assert!(maps.write_meter(MAX_BACKENDS - 1, Meter::default()).is_ok());
        assert_eq!(maps.read_groups().unwrap().len(), MAX_GROUPS as usize, "an array dump returns every slot");
    }

    #[test]
    fn a_full_sessions_table_refuses_a_new_key_and_a_full_pending_evicts() {
        let mut maps = FakeMaps::sized(TableSizes { sessions: 2, pending: 2 });
        maps.insert_session(false, key(1), seen(1)).unwrap();
        maps.insert_session(false, key(2), seen(1)).unwrap();
        let err = maps.insert_session(false, key(3), seen(1)).unwrap_err();
        assert!(err.to_string().contains("SESSIONS is full"), "{err}");
        maps.insert_session(false, key(2), seen(9)).unwrap(); // an existing key is an update
        maps.insert_session(true, key(4), seen(5)).unwrap();
        maps.insert_session(true, key(5), seen(3)).unwrap();
        maps.insert_session(true, key(6), seen(7)).unwrap();
        let pending: Vec<_> = maps.scan_sessions().unwrap().pending.into_iter().map(|(k, _)| k).collect();
        assert_eq!(pending, [key(4), key(6)], "the least recently seen was evicted");
        assert!(maps.remove_session(true, &key(4)).unwrap());
        assert!(!maps.remove_session(true, &key(4)).unwrap(), "a second removal finds nothing");
        assert!(maps.remove_frontend(FrontendKey::default()).is_err());
    }

    #[test]
    fn a_fault_counts_each_entry_of_a_batch_and_the_rewrite_rolls_back() {
        let mut faulty = FaultyMaps::default();
        for n in 1..=3 {
            faulty.maps().insert_session(false, key(n), seen(1)).unwrap();
        }
        let old: Vec<_> = (1..=3).map(|n| (key(n), seen(1))).collect();
        let new: Vec<_> = (1..=3).map(|n| (key(n), seen(2))).collect();
        faulty.arm(Fault::Nth(3));
        let err = faulty.rewrite_sessions(false, &new, &old).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "writing 3 sessions of SESSIONS: entry 3 of 3 refused (injected fault: write 3 (3 to SESSIONS) refused); \
             the 2 written before it were restored"
        );
        assert_eq!(faulty.scan_sessions().unwrap().established, old);
        // Writes 4 and 5 restored; 6 voided the cache.
        assert_eq!(faulty.maps().session_cache_generation(), 1);
        faulty.arm(Fault::Map(names::SESSIONS));
        let err = faulty.rewrite_sessions(false, &new, &old).unwrap_err();
        assert!(format!("{err:#}").contains("entry 1 of 3 refused"), "{err:#}");
        faulty.arm(Fault::NthTo(names::PLACEMENT, 2));
        let err = faulty.write_placement(0, None, &[1, 1, 1]).unwrap_err();
        assert_eq!(format!("{err:#}"), "writing PLACEMENT: injected fault: write 2 (2 to PLACEMENT) refused");
        assert_eq!(faulty.maps().placement_row(0)[..3], [1, 0, 0], "a placement write stops part way");
        assert_eq!(faulty.refused().len(), 1);
    }

    #[test]
    fn a_dump_is_stable_text_of_the_non_empty_maps() {
        let mut maps = FakeMaps::new();
        let vip = addr_to_map([198, 18, 100, 1]);
        maps.write_frontend(FrontendKey { vip, port: port_to_map(7777), _pad: 0 }, Frontend { id: 0, _pad: 0 })
            .unwrap();
        maps.write_group(1, Group { backend: 1, epoch: 3 }).unwrap();
        maps.write_backend(1, Backend { addr: addr_to_map([198, 18, 50, 1]), _pad: 0 }).unwrap();
        maps.write_placement(0, None, &[1, 1, 0, 1]).unwrap();
        maps.insert_session(false, key(2), seen(5)).unwrap();
        maps.insert_session(false, key(1), seen(5)).unwrap();
        maps.add_counter(Counter::DropMoving, 2);
        let expected = "\
BACKENDS
  [1] 198.18.50.1
COUNTERS
  drop_moving 2
FRONTENDS
  198.18.100.1:7777 id 0
GROUPS
  [1] backend 1 epoch 3
PLACEMENT
  row 0: group 0 x 4090, group 1 x 3
SESSIONS
  10.0.0.1:5000 frontend 0 group 1 epoch 1
  10.0.0.2:5000 frontend 0 group 1 epoch 1
SESSION_CACHE_GENERATION
  0
";
        assert_eq!(maps.dump().to_string(), expected);
    }
}
