//! The seam between the cluster model and the data plane's maps: every read
//! and write `Cluster` makes, as one trait. [`Tables`](super::tables::Tables)
//! implements it over the kernel's maps; [`FakeMaps`](super::fake_maps::FakeMaps)
//! and [`FaultyMaps`](super::fake_maps::FaultyMaps) implement it in memory,
//! so the model, the owner and the failover policy are tested without root.
//!
//! Every write is a single map update (Katran's rule: the data path never
//! sees a half-written value), or, for the batches (`write_placement`,
//! `rewrite_sessions`), a sequence of them with the rollback each documents.
//! Every failure is an error that names the map.

use anyhow::Result;
use proxy_common::{
    Backend, BackendStats, Counter, Frontend, FrontendKey, Group, Meter, PortEntry, QueryAnswer, QuerySettings,
    Reverse, Session, SessionKey, ShardState, Tunnel,
};

pub use super::tables::Scan;

/// What the cluster model reads from and writes to the data plane's maps.
pub trait MapWriter {
    /// The whole GROUPS array (index = group id).
    fn read_groups(&self) -> Result<Vec<Group>>;

    /// The whole SHARD_STATE array (index = backend id).
    fn read_shard_states(&self) -> Result<Vec<ShardState>>;

    /// The whole BACKENDS array (index = backend id).
    fn read_backends(&self) -> Result<Vec<Backend>>;

    /// Every frontend with its id (at most MAX_FRONTENDS).
    fn frontend_entries(&self) -> Result<Vec<(FrontendKey, Frontend)>>;

    /// Every frontend key.
    fn frontend_keys(&self) -> Result<Vec<FrontendKey>> {
        Ok(self.frontend_entries()?.into_iter().map(|(k, _)| k).collect())
    }

    /// REVERSE, in address order.
    fn reverse_entries(&self) -> Result<Vec<(u32, Reverse)>>;

    /// Every established and pending session, PENDING read first (a
    /// promotion racing the read then shows in both tables, not in neither).
    fn scan_sessions(&self) -> Result<Scan>;

    /// Every entry of one session table, handed to `each` a chunk at a time
    /// (keys and values in the same order): the whole table is never held.
    fn each_session(&self, pending: bool, each: &mut dyn FnMut(&[SessionKey], &[Session])) -> Result<()>;

    /// One counter, summed over CPUs.
    fn counter(&self, c: Counter) -> Result<u64>;

    /// Every counter, summed over CPUs.
    fn all_counters(&self) -> Result<Vec<(Counter, u64)>> {
        Counter::ALL.iter().map(|&c| Ok((c, self.counter(c)?))).collect()
    }

    /// One shard's traffic, summed over CPUs.
    fn backend_stats(&self, backend: u32) -> Result<BackendStats>;

    fn write_group(&mut self, id: u32, group: Group) -> Result<()>;

    fn write_shard_state(&mut self, backend: u32, state: ShardState) -> Result<()>;

    fn write_backend(&mut self, id: u32, backend: Backend) -> Result<()>;

    /// Empties one BACKENDS slot (the shard left the config).
    fn clear_backend(&mut self, id: u32) -> Result<()>;

    /// Inserts or replaces a shard's reply rewrite (key: its address).
    fn write_reverse(&mut self, addr: u32, reverse: Reverse) -> Result<()>;

    /// Removes a shard's reply rewrite; an error when it is not there.
    fn remove_reverse(&mut self, addr: u32) -> Result<()>;

    fn write_frontend(&mut self, key: FrontendKey, frontend: Frontend) -> Result<()>;

    /// Removes a frontend; an error when it is not there.
    fn remove_frontend(&mut self, key: FrontendKey) -> Result<()>;

    /// Writes PORTS at `port` (a port as it stands in the header).
    fn write_port(&mut self, port: u16, entry: PortEntry) -> Result<()>;

    fn write_meter(&mut self, backend: u32, meter: Meter) -> Result<()>;

    /// Writes the slots of one frontend's placement row that differ from
    /// `old` (the row as last written; all of them without it), each slot a
    /// single update. A failure part way leaves the slots written so far
    /// new: each holds a valid group either way.
    fn write_placement(&mut self, frontend_id: u32, old: Option<&[u32]>, new: &[u32]) -> Result<()>;

    fn write_query_answer(&mut self, index: u32, answer: &QueryAnswer) -> Result<()>;

    fn write_query_settings(&mut self, settings: QuerySettings) -> Result<()>;

    /// Writes many existing sessions of one table, all or nothing: on a
    /// failure part way, the entries already written get their `old` value
    /// back (same keys, same order) and the error says what failed. The
    /// session cache is voided afterwards (for SESSIONS) either way.
    fn rewrite_sessions(
        &mut self,
        pending: bool,
        new: &[(SessionKey, Session)],
        old: &[(SessionKey, Session)],
    ) -> Result<()>;

    /// Writes established sessions, new or existing (a peer's records):
    /// each a single update; a failure part way leaves those written so far
    /// (each a whole, valid session) and says how many. The session cache
    /// is voided afterwards either way.
    fn upsert_sessions(&mut self, entries: &[(SessionKey, Session)]) -> Result<()>;

    /// Makes SITES hold `sites` (every other slot empty) and TUNNEL_PEERS
    /// hold `peers` (every other key removed), each entry a single update:
    /// a site or peer that stays is never missing in between.
    fn write_tunnels(&mut self, sites: &[(u32, Tunnel)], peers: &[(u32, Tunnel)]) -> Result<()>;

    /// Voids every entry of the data plane's session cache (a bump of
    /// SESSION_CACHE_GENERATION).
    fn void_session_cache(&mut self) -> Result<()>;

    /// Moves a pending session to the established table.
    fn promote(&mut self, key: &SessionKey, session: Session) -> Result<()>;

    /// Removes one session; `Ok(false)` when it was already gone.
    fn remove_session(&mut self, pending: bool, key: &SessionKey) -> Result<bool>;
}
