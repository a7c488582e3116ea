//! Typed handles on the data plane's maps, and the reads and writes the agent
//! makes. Each write is a single map update: the data path never sees a
//! half-written value (Katran's rule). Every failure is an error that names
//! the map; nothing is read as a default.

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use proxy_common::{
    maps as names, Backend, BackendStats, Counter, Frontend, FrontendKey, Group, Meter, PortEntry, QueryAnswer,
    QuerySettings, Reverse, Session, SessionKey, ShardState, Tunnel, MAX_SITES, PLACEMENT_SLOTS,
};

use super::{batch, map_writer::MapWriter};

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
    pub query_answers: Array<MapData, QueryAnswer>,
    pub query_settings: Array<MapData, QuerySettings>,
    pub session_cache_generation: Array<MapData, u32>,
    pub peers: HashMap<MapData, u32, u32>,
    pub sites: Array<MapData, Tunnel>,
    pub tunnel_peers: HashMap<MapData, u32, Tunnel>,
}

/// One untyped map from a loaded object or a pin.
type MapSource<'a> = &'a mut dyn FnMut(&str) -> Result<aya::maps::Map>;

/// Turns one untyped map into the typed handle a field wants.
fn typed<T>(source: MapSource<'_>, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    T::try_from(source(name)?).with_context(|| format!("map {name} has an unexpected type"))
}

/// Opens one pinned map by name.
pub fn open_pin(dir: &Path, name: &str) -> Result<aya::maps::Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!("opening pinned map {}; is the agent running with this bpffs folder?", path.display())
    })?;
    Ok(aya::maps::Map::from_map_data(data)?)
}

/// A full read of both session tables.
#[derive(Debug, Default)]
pub struct Scan {
    pub established: Vec<(SessionKey, Session)>,
    pub pending: Vec<(SessionKey, Session)>,
}

/// The two session tables on their own, for the scanner thread.
pub struct SessionTables {
    pub sessions: HashMap<MapData, SessionKey, Session>,
    pub pending: HashMap<MapData, SessionKey, Session>,
}

impl SessionTables {
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        let mut source = |name: &str| open_pin(dir, name);
        Ok(Self { sessions: typed(&mut source, names::SESSIONS)?, pending: typed(&mut source, names::PENDING)? })
    }

    /// Every established and pending session: one batched read of each table.
    pub fn scan(&self) -> Result<Scan> {
        scan(&self.sessions, &self.pending)
    }
}

fn scan(
    sessions: &HashMap<MapData, SessionKey, Session>,
    pending: &HashMap<MapData, SessionKey, Session>,
) -> Result<Scan> {
    // Pending first: a promotion racing the scan then shows in both tables
    // (established wins) rather than in neither.
    let pending = batch::dump(pending).context("reading PENDING")?;
    let established = batch::dump(sessions).context("reading SESSIONS")?;
    Ok(Scan { established, pending })
}

/// The ring of session events, opened from its pin or the loaded object.
pub fn session_events(source: MapSource<'_>) -> Result<RingBuf<MapData>> {
    typed(source, names::SESSION_EVENTS)
}

impl Tables {
    /// Opens the maps a running (or stopped) agent pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Self::from_source(&mut |name| open_pin(dir, name))
    }

    /// Takes the maps out of a freshly loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_source(&mut |name| ebpf.take_map(name).with_context(|| format!("the eBPF object has no map {name}")))
    }

    fn from_source(s: MapSource<'_>) -> Result<Self> {
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
            query_answers: typed(s, names::QUERY_ANSWERS)?,
            query_settings: typed(s, names::QUERY_SETTINGS)?,
            session_cache_generation: typed(s, names::SESSION_CACHE_GENERATION)?,
            peers: typed(s, names::PEERS)?,
            sites: typed(s, names::SITES)?,
            tunnel_peers: typed(s, names::TUNNEL_PEERS)?,
        })
    }

    /// Every frontend key (at most MAX_FRONTENDS).
    pub fn frontend_keys(&self) -> Result<Vec<FrontendKey>> {
        Ok(batch::dump(&self.frontends).context("reading FRONTENDS")?.into_iter().map(|(k, _)| k).collect())
    }

    /// Every frontend with its id.
    pub fn frontend_entries(&self) -> Result<Vec<(FrontendKey, Frontend)>> {
        batch::dump(&self.frontends).context("reading FRONTENDS")
    }

    /// The whole GROUPS array (index = group id): one batched read.
    pub fn read_groups(&self) -> Result<Vec<Group>> {
        Ok(batch::dump(&self.groups).context("reading GROUPS")?.into_iter().map(|(_, g)| g).collect())
    }

    /// The whole SHARD_STATE array (index = backend id): one batched read.
    pub fn read_shard_states(&self) -> Result<Vec<ShardState>> {
        Ok(batch::dump(&self.shard_state).context("reading SHARD_STATE")?.into_iter().map(|(_, s)| s).collect())
    }

    /// The whole BACKENDS array (index = backend id): one batched read.
    pub fn read_backends(&self) -> Result<Vec<Backend>> {
        Ok(batch::dump(&self.backends).context("reading BACKENDS")?.into_iter().map(|(_, b)| b).collect())
    }

    pub fn write_group(&mut self, id: u32, group: Group) -> Result<()> {
        self.groups.set(id, group, 0).with_context(|| format!("writing GROUPS[{id}]"))
    }

    pub fn write_shard_state(&mut self, backend: u32, state: ShardState) -> Result<()> {
        self.shard_state.set(backend, state, 0).with_context(|| format!("writing SHARD_STATE[{backend}]"))
    }

    pub fn clear_backend(&mut self, backend: u32) -> Result<()> {
        self.backends.set(backend, Backend::default(), 0).with_context(|| format!("clearing BACKENDS[{backend}]"))
    }

    pub fn write_query_answer(&mut self, index: u32, answer: &QueryAnswer) -> Result<()> {
        self.query_answers.set(index, answer, 0).with_context(|| format!("writing QUERY_ANSWERS[{index}]"))
    }

    pub fn write_query_settings(&mut self, limit: QuerySettings) -> Result<()> {
        self.query_settings.set(0, limit, 0).context("writing QUERY_SETTINGS")
    }

    pub fn write_meter(&mut self, backend: u32, meter: Meter) -> Result<()> {
        self.meter.set(backend, meter, 0).with_context(|| format!("writing METER[{backend}]"))
    }

    /// Writes the slots of one frontend's placement row that differ from
    /// `old` (the row as last written; all of them without it). Each slot is
    /// a single update: a new player landing mid-write gets an old or a new
    /// slot, both valid.
    pub fn write_placement(&mut self, frontend_id: u32, old: Option<&[u32]>, new: &[u32]) -> Result<()> {
        let base = frontend_id * PLACEMENT_SLOTS;
        let changed: Vec<(u32, u32)> = new
            .iter()
            .enumerate()
            .filter(|(slot, group)| old.is_none_or(|o| o.get(*slot) != Some(group)))
            .map(|(slot, group)| (base + slot as u32, *group))
            .collect();
        // One system call for the changed slots; each slot is still written
        // on its own (no slot is ever half old, half new).
        batch::update(&self.placement, &changed).context("writing PLACEMENT")
    }

    /// Every counter, summed over CPUs.
    pub fn all_counters(&self) -> Result<Vec<(Counter, u64)>> {
        Counter::ALL.iter().map(|&c| Ok((c, self.counter(c)?))).collect()
    }

    /// One shard's traffic, summed over CPUs.
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

    /// Writes many existing sessions of one table, all or nothing: on a
    /// failure part way, the entries already written get their old values
    /// back (`old` holds them, in the same order) and the error says what
    /// failed.
    pub fn rewrite_sessions(
        &mut self,
        pending: bool,
        new: &[(SessionKey, Session)],
        old: &[(SessionKey, Session)],
    ) -> Result<()> {
        let (map, name) = if pending { (&self.pending, "PENDING") } else { (&self.sessions, "SESSIONS") };
        let written = batch::update_all_or_nothing(map, new, old)
            .with_context(|| format!("writing {} sessions of {name}", new.len()));
        // Whatever was written (or rolled back), no cached copy may outlive it.
        let voided = if pending { Ok(()) } else { self.void_session_cache() };
        written.and(voided)
    }

    /// Writes established sessions, new or existing, in batches.
    pub fn upsert_sessions(&mut self, entries: &[(SessionKey, Session)]) -> Result<()> {
        let written = batch::update(&self.sessions, entries)
            .map_err(|e| anyhow::anyhow!("writing {} peer sessions into SESSIONS: {e}", entries.len()));
        written.and(self.void_session_cache())
    }

    /// Voids every entry of the data plane's session cache (and its copy of
    /// REVERSE): the next packet of each player reads SESSIONS again.
    /// Needed after rewriting sessions (a move must take effect at once) and
    /// after any change of GROUPS, BACKENDS or REVERSE (a cached session
    /// carries its shard); removals of sessions need none, since a cached
    /// entry is trusted for about four seconds only and a removed session's
    /// players are idle or moving.
    pub fn void_session_cache(&mut self) -> Result<()> {
        let now = self.session_cache_generation.get(&0, 0).context("reading SESSION_CACHE_GENERATION")?;
        self.session_cache_generation.set(0, now.wrapping_add(1), 0).context("writing SESSION_CACHE_GENERATION")
    }

    /// Moves a pending session to the established table (as the data plane
    /// does when the shard's acceptance crosses this node).
    pub fn promote(&mut self, key: &SessionKey, session: Session) -> Result<()> {
        self.sessions.insert(key, session, 0).context("promoting a session into SESSIONS")?;
        self.remove_session(true, key)?;
        Ok(())
    }

    /// Removes one session; `Ok(false)` when it was already gone.
    pub fn remove_session(&mut self, pending: bool, key: &SessionKey) -> Result<bool> {
        let map = if pending { &mut self.pending } else { &mut self.sessions };
        match map.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e).context("removing a session"),
        }
    }

    /// Every established and pending session (one batched read each): for
    /// the agent's start, when it has no index yet, and for tests.
    pub fn scan_sessions(&self) -> Result<Scan> {
        scan(&self.sessions, &self.pending)
    }

    /// One counter, summed over CPUs.
    pub fn counter(&self, c: Counter) -> Result<u64> {
        let values = self.counters.get(&(c as u32), 0).with_context(|| format!("reading counter {}", c.name()))?;
        Ok(values.iter().sum())
    }

    /// REVERSE, in address order.
    pub fn reverse_entries(&self) -> Result<Vec<(u32, Reverse)>> {
        let mut entries = batch::dump(&self.reverse).context("reading REVERSE")?;
        entries.sort_unstable_by_key(|(addr, _)| *addr);
        Ok(entries)
    }

    /// Every entry of one session table, a batch at a time.
    pub fn each_session(&self, pending: bool, each: &mut dyn FnMut(&[SessionKey], &[Session])) -> Result<()> {
        let (map, name) = if pending { (&self.pending, "PENDING") } else { (&self.sessions, "SESSIONS") };
        batch::dump_each(map, each).with_context(|| format!("reading {name}"))
    }

    pub fn write_backend(&mut self, id: u32, backend: Backend) -> Result<()> {
        self.backends.set(id, backend, 0).with_context(|| format!("writing BACKENDS[{id}]"))
    }

    pub fn write_reverse(&mut self, addr: u32, reverse: Reverse) -> Result<()> {
        self.reverse.insert(addr, reverse, 0).context("writing REVERSE")
    }

    pub fn remove_reverse(&mut self, addr: u32) -> Result<()> {
        self.reverse.remove(&addr).context("removing from REVERSE")
    }

    pub fn write_frontend(&mut self, key: FrontendKey, frontend: Frontend) -> Result<()> {
        self.frontends.insert(key, frontend, 0).context("writing FRONTENDS")
    }

    pub fn remove_frontend(&mut self, key: FrontendKey) -> Result<()> {
        self.frontends.remove(&key).context("removing from FRONTENDS")
    }

    pub fn write_port(&mut self, port: u16, entry: PortEntry) -> Result<()> {
        self.ports.set(port as u32, entry, 0).with_context(|| format!("writing PORTS[{port}]"))
    }

    pub fn write_tunnels(&mut self, sites: &[(u32, Tunnel)], peers: &[(u32, Tunnel)]) -> Result<()> {
        for id in 1..MAX_SITES {
            let tunnel = sites.iter().find(|(s, _)| *s == id).map(|(_, t)| *t).unwrap_or_default();
            if self.sites.get(&id, 0).context("reading SITES")? != tunnel {
                self.sites.set(id, tunnel, 0).with_context(|| format!("writing SITES[{id}]"))?;
            }
        }
        for (addr, tunnel) in peers {
            self.tunnel_peers.insert(addr, tunnel, 0).context("writing TUNNEL_PEERS")?;
        }
        let stale: Vec<u32> =
            self.tunnel_peers.keys().filter_map(|k| k.ok()).filter(|k| !peers.iter().any(|(a, _)| a == k)).collect();
        for addr in stale {
            self.tunnel_peers.remove(&addr).context("removing from TUNNEL_PEERS")?;
        }
        Ok(())
    }
}

/// The kernel's maps behind the seam: each method is the inherent one above.
impl MapWriter for Tables {
    fn read_groups(&self) -> Result<Vec<Group>> {
        Tables::read_groups(self)
    }
    fn read_shard_states(&self) -> Result<Vec<ShardState>> {
        Tables::read_shard_states(self)
    }
    fn read_backends(&self) -> Result<Vec<Backend>> {
        Tables::read_backends(self)
    }
    fn frontend_entries(&self) -> Result<Vec<(FrontendKey, Frontend)>> {
        Tables::frontend_entries(self)
    }
    fn frontend_keys(&self) -> Result<Vec<FrontendKey>> {
        Tables::frontend_keys(self)
    }
    fn reverse_entries(&self) -> Result<Vec<(u32, Reverse)>> {
        Tables::reverse_entries(self)
    }
    fn scan_sessions(&self) -> Result<Scan> {
        Tables::scan_sessions(self)
    }
    fn each_session(&self, pending: bool, each: &mut dyn FnMut(&[SessionKey], &[Session])) -> Result<()> {
        Tables::each_session(self, pending, each)
    }
    fn counter(&self, c: Counter) -> Result<u64> {
        Tables::counter(self, c)
    }
    fn all_counters(&self) -> Result<Vec<(Counter, u64)>> {
        Tables::all_counters(self)
    }
    fn backend_stats(&self, backend: u32) -> Result<BackendStats> {
        Tables::backend_stats(self, backend)
    }
    fn write_group(&mut self, id: u32, group: Group) -> Result<()> {
        Tables::write_group(self, id, group)
    }
    fn write_shard_state(&mut self, backend: u32, state: ShardState) -> Result<()> {
        Tables::write_shard_state(self, backend, state)
    }
    fn write_backend(&mut self, id: u32, backend: Backend) -> Result<()> {
        Tables::write_backend(self, id, backend)
    }
    fn clear_backend(&mut self, id: u32) -> Result<()> {
        Tables::clear_backend(self, id)
    }
    fn write_reverse(&mut self, addr: u32, reverse: Reverse) -> Result<()> {
        Tables::write_reverse(self, addr, reverse)
    }
    fn remove_reverse(&mut self, addr: u32) -> Result<()> {
        Tables::remove_reverse(self, addr)
    }
    fn write_frontend(&mut self, key: FrontendKey, frontend: Frontend) -> Result<()> {
        Tables::write_frontend(self, key, frontend)
    }
    fn remove_frontend(&mut self, key: FrontendKey) -> Result<()> {
        Tables::remove_frontend(self, key)
    }
    fn write_port(&mut self, port: u16, entry: PortEntry) -> Result<()> {
        Tables::write_port(self, port, entry)
    }
    fn write_meter(&mut self, backend: u32, meter: Meter) -> Result<()> {
        Tables::write_meter(self, backend, meter)
    }
    fn write_placement(&mut self, frontend_id: u32, old: Option<&[u32]>, new: &[u32]) -> Result<()> {
        Tables::write_placement(self, frontend_id, old, new)
    }
    fn write_query_answer(&mut self, index: u32, answer: &QueryAnswer) -> Result<()> {
        Tables::write_query_answer(self, index, answer)
    }
    fn write_query_settings(&mut self, settings: QuerySettings) -> Result<()> {
        Tables::write_query_settings(self, settings)
    }
    fn rewrite_sessions(
        &mut self,
        pending: bool,
        new: &[(SessionKey, Session)],
        old: &[(SessionKey, Session)],
    ) -> Result<()> {
        Tables::rewrite_sessions(self, pending, new, old)
    }
    fn upsert_sessions(&mut self, entries: &[(SessionKey, Session)]) -> Result<()> {
        Tables::upsert_sessions(self, entries)
    }
    fn void_session_cache(&mut self) -> Result<()> {
        Tables::void_session_cache(self)
    }
    fn write_tunnels(&mut self, sites: &[(u32, Tunnel)], peers: &[(u32, Tunnel)]) -> Result<()> {
        Tables::write_tunnels(self, sites, peers)
    }
    fn promote(&mut self, key: &SessionKey, session: Session) -> Result<()> {
        Tables::promote(self, key, session)
    }
    fn remove_session(&mut self, pending: bool, key: &SessionKey) -> Result<bool> {
        Tables::remove_session(self, pending, key)
    }
}
