//! The cluster model: the only writer of the data plane's routing maps.
//!
//! It owns the maps (behind `dataplane::map_writer::MapWriter`: the
//! kernel's `Tables`, or `dataplane::fake_maps` in tests), a mirror of the
//! small arrays it alone writes (GROUPS, SHARD_STATE) and an index of the
//! sessions (`index`), so no request reads a table it could know.
//! Everything else (control socket, health loop, metrics, timers) reaches it
//! through the owner thread (`owner`) with typed requests.
//!
//! Rules kept here:
//! - ids are stable: a shard keeps its backend id (found by address in the
//!   pinned BACKENDS) and home group (in the pinned SHARD_STATE) across
//!   reloads and agent restarts, so no session ever points at the wrong place;
//! - a move is silent re-routing: moved sessions get an epoch that differs
//!   from their group's, so the data plane drops their game packets until the
//!   client handshakes again; a whole group moves with one GROUPS write;
//! - nothing is half-done: every request is checked in full before the first
//!   map write, a refused request changes no map, and a batch that fails part
//!   way is rolled back.
//!
//! Rooms: `ids` (stable ids), `reconcile` (desired config -> maps), `moves`
//! (migrations, failover, drain), `expiry` (scans and timeouts), `status`
//! (the views), `index` (sessions), `plan` and `placement` (pure data),
//! `owner` (the thread that serialises every request).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::Result;
use proxy_common::{
    net::{addr_from_map, addr_to_map, port_from_map, port_to_map},
    Group, SessionKey, ShardState, MAX_GROUPS, SHARD_DRAINED,
};

use crate::{
    config::{Role, Validated},
    control::error::ControlError,
    dataplane::map_writer::MapWriter,
    health::Health,
};

pub mod answered;
pub mod answers;
mod expiry;
pub mod failover_policy;
#[cfg(test)]
mod fake_maps_tests;
mod ids;
pub mod index;
mod moves;
pub mod placement;
pub mod plan;
mod reconcile;
pub mod replica;
pub mod snapshot;
pub mod status;
mod transfer;

pub use transfer::TransferAsk;

pub use plan::ShardIds;

use index::SessionIndex;

/// Players on one shard, as the session index says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub established: usize,
    pub pending: usize,
    /// Sessions routed to this shard that have not handshaken since their move.
    pub moving: usize,
}

impl Load {
    /// Established sessions only. A pending session is a handshake its shard
    /// has not accepted yet, which spoofed sources send by the million: it
    /// must fill neither a shard's free slots nor the server browser's
    /// player count. Real newcomers are promoted within two round trips; the
    /// handshake pacer bounds how many can arrive between two placement
    /// rounds (rate + burst a second), which bounds any overfill.
    pub fn players(&self) -> usize {
        self.established
    }
}

/// Players per backend id.
pub type Loads = HashMap<u32, Load>;

/// The player a session key names, as `ip:port`.
pub fn client_of(key: &SessionKey) -> SocketAddrV4 {
    SocketAddrV4::new(addr_from_map(key.client_addr).into(), port_from_map(key.client_port))
}

/// Which players a `migrate --client` names: an IP (every port) or IP:port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSelector {
    pub ip: Ipv4Addr,
    pub port: Option<u16>,
}

impl std::str::FromStr for ClientSelector {
    type Err = ControlError;
    fn from_str(s: &str) -> Result<Self, ControlError> {
        if let Ok(a) = s.parse::<SocketAddrV4>() {
            return Ok(Self { ip: *a.ip(), port: Some(a.port()) });
        }
        s.parse::<Ipv4Addr>().map(|ip| Self { ip, port: None }).map_err(|_| ControlError::BadClient(s.into()))
    }
}

impl ClientSelector {
    pub fn matches(&self, key: &SessionKey) -> bool {
        key.client_addr == addr_to_map(self.ip.octets()) && self.port.is_none_or(|p| key.client_port == port_to_map(p))
    }

    /// As the operator wrote it.
    pub fn shown(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.ip),
            None => self.ip.to_string(),
        }
    }
}

/// The monotonic coarse clock the data plane stamps sessions with.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Free slots per unit of placement weight when several ingress nodes
/// share the cluster (see `weight`).
pub const PLACEMENT_STEP: u32 = 16;

pub struct Cluster {
    pub cfg: Validated,
    /// The data plane's maps: the kernel's (`Tables`), or a fake in tests.
    tables: Box<dyn MapWriter + Send>,
    /// Health by shard name (missing = never probed).
    pub health: HashMap<String, Health>,
    /// Roles changed at run time (a recovered shard becomes `recovered_role`).
    pub role_override: HashMap<String, Role>,
    /// Discovered shards whose GameServer left `Allocated` or was deleted,
    /// with why: down for good, kept only until their players have moved.
    pub departed: HashMap<String, String>,
    /// Shards come from Agones and no GameServer list has arrived since the
    /// agent started: the shards the pinned maps hold beyond the file's
    /// (discovered before a restart) keep their routes and reply rewrites
    /// untouched until it does, so a restart moves and exposes nobody.
    pub awaiting_discovery: bool,
    /// Per config shard.
    pub ids: Vec<ShardIds>,
    /// Per config frontend: its id in FRONTENDS (and its PLACEMENT row).
    pub frontend_ids: Vec<u32>,
    /// GROUPS as this agent wrote it (index = group id); nothing else writes it.
    groups: Vec<Group>,
    /// SHARD_STATE as this agent wrote it (index = backend id).
    shard_state: Vec<ShardState>,
    /// When each group last moved (coarse ns): a moving session's clock
    /// starts at its move, not at its last packet.
    moved_at: HashMap<u32, u64>,
    last_placement: Vec<(u32, Vec<u32>)>,
    pub index: SessionIndex,
    /// Sessions changed by the model itself, for the peers (`take_changed`).
    changed_sessions: Vec<SessionKey>,
    /// When a peer last said it forwards each session (coarse ns): idle
    /// expiry counts it as a packet seen here.
    pub peer_seen: HashMap<SessionKey, u64>,
    /// Established sessions the last scan chunks showed active here.
    pub recently_seen: Vec<SessionKey>,
    /// A config change failed part way and the old one could not be put
    /// back either: the maps hold a mix until the next good reload.
    pub half_applied: bool,
    /// QUERY_ANSWERS as last written, by index (absent = never written).
    written_answers: HashMap<u32, Option<Vec<u8>>>,
    /// Where the agent's query responder listens, if it does.
    responder: Option<Ipv4Addr>,
    /// QUERY_SETTINGS as last written.
    written_settings: Option<proxy_common::QuerySettings>,
}

impl Cluster {
    /// Takes over the maps for `cfg`: reads what they hold once (groups,
    /// shard state, every session), reuses the ids they already hold, and
    /// writes the config's routing.
    pub fn start(cfg: Validated, tables: impl MapWriter + Send + 'static) -> Result<Cluster> {
        let index = SessionIndex::from_tables(&tables)?;
        let mut cluster = Cluster {
            cfg,
            groups: tables.read_groups()?,
            shard_state: tables.read_shard_states()?,
            tables: Box::new(tables),
            health: HashMap::new(),
            role_override: HashMap::new(),
            departed: HashMap::new(),
            awaiting_discovery: false,
            ids: Vec::new(),
            frontend_ids: Vec::new(),
            moved_at: HashMap::new(),
            last_placement: Vec::new(),
            index,
            changed_sessions: Vec::new(),
            peer_seen: HashMap::new(),
            recently_seen: Vec::new(),
            half_applied: false,
            written_answers: HashMap::new(),
            responder: None,
            written_settings: None,
        };
        cluster.awaiting_discovery = cluster.cfg.uses_agones();
        cluster.write_desired()?;
        Ok(cluster)
    }

    /// Reads both session tables now and folds them into the index (for
    /// tools and benchmarks that wrote the tables behind the agent's back;
    /// the running agent scans on its own thread instead).
    pub fn rescan(&mut self) -> Result<index::MergeReport> {
        let generation = self.index.begin_scan();
        let scan = self.tables.scan_sessions()?;
        Ok(self.index.merge(generation, scan))
    }

    /// The maps, for reading counters.
    pub fn tables(&self) -> &(dyn MapWriter + Send) {
        self.tables.as_ref()
    }

    /// Index of a shard by name, or an error listing the names.
    pub fn shard(&self, name: &str) -> Result<usize, ControlError> {
        self.cfg.shards.iter().position(|s| s.name == name).ok_or_else(|| ControlError::UnknownShard {
            name: name.into(),
            known: self.cfg.shards.iter().map(|s| s.name.clone()).collect(),
        })
    }

    fn shard_by_backend(&self, backend: u32) -> Option<usize> {
        self.ids.iter().position(|id| id.backend == backend)
    }

    pub fn group(&self, id: u32) -> Group {
        self.groups.get(id as usize).copied().unwrap_or_default()
    }

    /// Every group that points somewhere (or ever did), with its value.
    fn live_groups(&self) -> impl Iterator<Item = (u32, Group)> + '_ {
        self.groups
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, g)| g.backend != 0 || g.epoch != 0)
            .map(|(i, g)| (i as u32, *g))
    }

    /// Groups that point at shard `i`.
    pub fn groups_on(&self, i: usize) -> Vec<u32> {
        let backend = self.ids[i].backend;
        self.live_groups().filter(|(_, g)| g.backend == backend).map(|(id, _)| id).collect()
    }

    pub fn drained(&self, i: usize) -> bool {
        self.shard_state.get(self.ids[i].backend as usize).is_some_and(|s| s.flags & SHARD_DRAINED != 0)
    }

    /// Points `group` at `backend`, bumping its epoch when that moves it (its
    /// players then re-handshake to the new shard). No write when already there.
    fn point_group(&mut self, group: u32, backend: u32) -> Result<()> {
        let old = self.group(group);
        if old.backend != backend {
            self.write_group(group, Group { backend, epoch: old.epoch.wrapping_add(1) })?;
        }
        Ok(())
    }

    fn write_group(&mut self, id: u32, group: Group) -> Result<()> {
        self.tables.write_group(id, group)?;
        // Cached sessions carry their shard: none may outlive the change.
        self.tables.void_session_cache()?;
        self.groups[id as usize] = group;
        self.moved_at.insert(id, now_ns());
        Ok(())
    }

    fn write_shard_state(&mut self, backend: u32, state: ShardState) -> Result<()> {
        self.tables.write_shard_state(backend, state)?;
        self.shard_state[backend as usize] = state;
        Ok(())
    }

    /// Players per backend: a walk over the index's per-group counts.
    pub fn loads(&self) -> Loads {
        let mut loads = Loads::new();
        for (group, counts) in self.index.group_counts() {
            let Some(g) = self.groups.get(group as usize) else { continue };
            let load = loads.entry(g.backend).or_default();
            for (&(epoch, pending), &n) in counts {
                if pending {
                    load.pending += n;
                } else {
                    load.established += n;
                }
                if epoch != g.epoch {
                    load.moving += n;
                }
            }
        }
        loads
    }

    /// True when some indexed session is moving (its epoch is not its group's).
    fn any_moving(&self) -> bool {
        self.index
            .group_counts()
            .any(|(group, counts)| counts.keys().any(|(epoch, _)| *epoch != self.group(group).epoch))
    }

    pub fn players_on(&self, i: usize, loads: &Loads) -> usize {
        loads.get(&self.ids[i].backend).map(Load::players).unwrap_or(0)
    }

    /// The shard's role now (config, or what a recovery made it).
    pub fn role(&self, i: usize) -> Role {
        let name = &self.cfg.shards[i].name;
        self.role_override.get(name).copied().unwrap_or(self.cfg.shards[i].role)
    }

    pub fn is_up(&self, i: usize) -> bool {
        let name = &self.cfg.shards[i].name;
        !self.departed.contains_key(name) && self.health.get(name).map(|h| h.up).unwrap_or(true)
    }

    /// True when a group other than the shard's own home group points at it.
    fn holds_foreign_group(&self, i: usize) -> bool {
        let id = self.ids[i];
        self.live_groups().any(|(g, grp)| grp.backend == id.backend && g != id.home_group)
    }

    /// A shard's share of new players: its free slots, or 0 when it must get
    /// none (see `takes_players`; full).
    fn weight(&self, i: usize, loads: &Loads) -> u32 {
        if !self.takes_players(i) {
            return 0;
        }
        let free = self.free_slots(i, loads) as u32;
        if self.cfg.raw.peers.is_some() {
            // Several ingress nodes must build the same table, or a player
            // whose first packets reach two nodes lands on two shards: their
            // counts differ by players in flight, so weigh in steps of
            // PLACEMENT_STEP free slots (any room at all weighs one step).
            return free.div_ceil(PLACEMENT_STEP);
        }
        free
    }

    /// False when a shard must get no new players: drained, down, or a
    /// standby that has not received a group.
    pub fn takes_players(&self, i: usize) -> bool {
        let standing_by = self.role(i) == Role::Standby && !self.holds_foreign_group(i);
        self.is_up(i) && !self.drained(i) && !standing_by
    }

    /// A discovered shard whose size only its probe can tell, not probed yet.
    pub fn size_unknown(&self, i: usize) -> bool {
        self.cfg.shards[i].capacity_from_probe()
            && self.health.get(&self.cfg.shards[i].name).and_then(|h| h.max_players).is_none()
    }

    /// Any session (established, pending or moving) routed to shard `i`.
    pub fn has_sessions(&self, i: usize, loads: &Loads) -> bool {
        loads.get(&self.ids[i].backend).is_some_and(|l| l.established + l.pending + l.moving > 0)
    }

    /// Room for players: the configured capacity (or the server's own
    /// `max_players`, if lower) minus its players (sessions here, or what the
    /// server reports, whichever is more). A discovered shard with no cap
    /// has no room until its probe reported `max_players`.
    pub fn free_slots(&self, i: usize, loads: &Loads) -> usize {
        let sessions = self.players_on(i, loads);
        let health = self.health.get(&self.cfg.shards[i].name);
        let reported = health.and_then(|h| h.players).unwrap_or(0) as usize;
        let mut capacity = self.cfg.shards[i].capacity as usize;
        match health.and_then(|h| h.max_players).filter(|&m| m > 0) {
            Some(max) => capacity = capacity.min(max as usize),
            None if self.cfg.shards[i].capacity_from_probe() => capacity = 0,
            None => {}
        }
        capacity.saturating_sub(sessions.max(reported))
    }

    /// Rewrites the placement slots whose group changed (players came or
    /// went, a shard was drained, went down, changed capacity).
    pub fn refresh_placement(&mut self, loads: &Loads) -> Result<()> {
        let weights: Vec<u32> = (0..self.cfg.shards.len()).map(|i| self.weight(i, loads)).collect();
        let rows = plan::placement(&self.cfg, &self.frontend_ids, &self.ids, |i| weights[i]);
        for (fe, row) in &rows {
            let old = self.last_placement.iter().find(|(f, _)| f == fe).map(|(_, r)| r.as_slice());
            self.tables.write_placement(*fe, old, row)?;
        }
        self.last_placement = rows;
        Ok(())
    }

    /// Group ids that cannot be handed out: any group that ever pointed
    /// somewhere (sessions may still name it) and every shard's home group.
    fn used_groups(&self) -> Vec<bool> {
        let mut used = vec![false; MAX_GROUPS as usize];
        used[0] = true;
        for (g, _) in self.live_groups() {
            used[g as usize] = true;
        }
        for st in &self.shard_state {
            if st.home_group != 0 {
                if let Some(u) = used.get_mut(st.home_group as usize) {
                    *u = true;
                }
            }
        }
        used
    }
}

/// A group id nothing uses; prefers `hint` (a shard's backend id, so ids
/// read naturally when nothing has moved).
fn allocate_group(used: &mut [bool], hint: u32) -> Result<u32> {
    let id = if used.get(hint as usize) == Some(&false) {
        hint
    } else {
        used.iter().position(|u| !u).ok_or_else(|| anyhow::anyhow!("no free group id"))? as u32
    };
    used[id as usize] = true;
    Ok(id)
}
