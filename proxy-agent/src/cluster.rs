//! The running cluster: which ids each shard holds in the maps, and every
//! change an operator (or the failover logic) makes to routing: placement,
//! migrations, draining, reload, expiry.
//!
//! Rules kept here:
//! - ids are stable: a shard keeps its backend id (found by address in the
//!   pinned BACKENDS) and home group (in the pinned SHARD_STATE) across
//!   reloads and agent restarts, so no session ever points at the wrong place;
//! - a move is silent re-routing: moved sessions get an epoch that differs
//!   from their group's, so the data plane drops their game packets until the
//!   client handshakes again; a whole group moves with one GROUPS write;
//! - nothing is half-done: every request is checked in full before the first
//!   map write, and a refused request changes no map.

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{Context, Result};
use proxy_common::{
    net::{addr_from_map, addr_to_map, port_from_map, port_to_map},
    FrontendKey, Group, Meter, Session, SessionKey, ShardState, MAX_BACKENDS, MAX_FRONTENDS, MAX_GROUPS, SHARD_DRAINED,
};
use serde::Serialize;

use crate::{
    config::{Role, Validated},
    health::Health,
    plan::{self, ShardIds},
    tables::Tables,
};

/// Players on one shard, as the session tables say.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Load {
    pub established: usize,
    pub pending: usize,
    /// Sessions routed to this shard that have not handshaken since their move.
    pub moving: usize,
}

impl Load {
    pub fn players(&self) -> usize {
        self.established + self.pending
    }
}

/// One session as the CLI shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionView {
    pub client: String,
    pub frontend: String,
    pub shard: String,
    pub group: u32,
    /// established | pending | moving
    pub state: &'static str,
    pub idle_ms: u64,
}

/// Which players a `migrate --client` names: an IP (every port) or IP:port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSelector {
    pub ip: Ipv4Addr,
    pub port: Option<u16>,
}

impl std::str::FromStr for ClientSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddrV4>() {
            return Ok(Self { ip: *a.ip(), port: Some(a.port()) });
        }
        s.parse::<Ipv4Addr>()
            .map(|ip| Self { ip, port: None })
            .map_err(|_| format!("`{s}` is not a client IPv4 or IPv4:port"))
    }
}

impl ClientSelector {
    fn matches(&self, key: &SessionKey) -> bool {
        key.client_addr == addr_to_map(self.ip.octets()) && self.port.is_none_or(|p| key.client_port == port_to_map(p))
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MoveReport {
    pub to: String,
    /// Sessions now moving to `to`.
    pub moved: usize,
    /// Sessions that were already on `to`.
    pub already_there: usize,
    /// Groups repointed (a whole-shard move).
    pub groups: Vec<u32>,
}

/// The monotonic coarse clock the data plane stamps sessions with.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct Cluster {
    pub cfg: Validated,
    /// Health by shard name (missing = never probed).
    pub health: HashMap<String, Health>,
    /// Roles changed at run time (a recovered shard becomes `recovered_role`).
    pub role_override: HashMap<String, Role>,
    /// Per config shard.
    pub ids: Vec<ShardIds>,
    /// Per config frontend: its id in FRONTENDS (and its PLACEMENT row).
    pub frontend_ids: Vec<u32>,
    last_placement: Vec<(u32, Vec<u32>)>,
}

/// Group ids that cannot be handed out: any group that ever pointed
/// somewhere (its epoch or backend is set: sessions may still name it) and
/// every shard's home group. A group id is only ever given to sessions after
/// it was pointed, so a never-touched entry cannot be named by a session.
struct Used {
    groups: HashSet<u32>,
}

fn used(tables: &Tables) -> Used {
    let mut groups: HashSet<u32> = tables.all_groups().into_iter().map(|(g, _)| g).collect();
    for (_, st) in tables.shard_states() {
        if st.home_group != 0 {
            groups.insert(st.home_group);
        }
    }
    Used { groups }
}

impl Cluster {
    /// Takes over the maps for `cfg`: reuses the ids pinned maps already hold,
    /// writes the plan and the placement.
    pub fn start(cfg: Validated, tables: &mut Tables) -> Result<Cluster> {
        let mut cluster = Cluster {
            cfg,
            health: HashMap::new(),
            role_override: HashMap::new(),
            ids: Vec::new(),
            frontend_ids: Vec::new(),
            last_placement: Vec::new(),
        };
        cluster.assign(tables)?;
        cluster.apply(tables)?;
        Ok(cluster)
    }

    /// Gives every frontend and shard its ids, keeping those the maps hold.
    fn assign(&mut self, tables: &mut Tables) -> Result<()> {
        let existing_fe: HashMap<FrontendKey, u32> =
            tables.frontends.iter().filter_map(Result::ok).map(|(k, v)| (k, v.id)).collect();
        let (keys, _) = plan::frontends(&self.cfg, &vec![0; self.cfg.frontends.len()]);
        let mut taken: HashSet<u32> = keys.iter().filter_map(|(k, _)| existing_fe.get(k).copied()).collect();
        self.frontend_ids = keys
            .iter()
            .map(|(k, _)| {
                existing_fe.get(k).copied().unwrap_or_else(|| {
                    let id = (0..MAX_FRONTENDS).find(|i| !taken.contains(i)).expect("validated: at most MAX_FRONTENDS");
                    taken.insert(id);
                    id
                })
            })
            .collect();

        let by_addr: HashMap<u32, u32> = tables.used_backends().into_iter().map(|(id, b)| (b.addr, id)).collect();
        let mut taken_backends: HashSet<u32> = by_addr.values().copied().collect();
        let mut used = used(tables);
        let mut ids = Vec::with_capacity(self.cfg.shards.len());
        for shard in &self.cfg.shards {
            let backend = match by_addr.get(&addr_to_map(shard.address.octets())) {
                Some(&id) => id,
                None => {
                    let id = (1..MAX_BACKENDS).find(|i| !taken_backends.contains(i)).context("no free backend id")?;
                    taken_backends.insert(id);
                    tables.shard_state.set(id, ShardState::default(), 0)?;
                    id
                }
            };
            let state = tables.shard_state.get(&backend, 0).unwrap_or_default();
            let home_ok = state.home_group != 0
                && tables.groups.get(&state.home_group, 0).map(|g| g.backend == backend).unwrap_or(false);
            let home_group = if home_ok {
                state.home_group
            } else {
                let g = allocate_group(&mut used, backend)?;
                tables.shard_state.set(backend, ShardState { home_group: g, flags: state.flags }, 0)?;
                g
            };
            ids.push(ShardIds { backend, home_group });
        }
        self.ids = ids;
        Ok(())
    }

    fn apply(&mut self, tables: &mut Tables) -> Result<()> {
        let weights = self.weights(tables);
        let plan = plan::build(&self.cfg, &self.frontend_ids, &self.ids, |i| weights[i]);
        tables.apply(&plan)?;
        let raw = &self.cfg.raw;
        let interval = if raw.handshake_rate == 0 { 0 } else { 1_000_000_000 / raw.handshake_rate as u64 };
        // GCRA admits one more than its tolerance covers: `burst` at once.
        let tolerance = interval * raw.handshake_burst.saturating_sub(1) as u64;
        let meter = Meter { tat_ns: 0, interval_ns: interval, tolerance_ns: tolerance };
        for id in &self.ids {
            tables.meter.set(id.backend, meter, 0).context("writing METER")?;
        }
        self.last_placement = plan.placement;
        Ok(())
    }

    /// Index of a shard by name, or an error listing the names.
    pub fn shard(&self, name: &str) -> Result<usize, String> {
        self.cfg.shards.iter().position(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.cfg.shards.iter().map(|s| s.name.as_str()).collect();
            format!("no shard named `{name}`; shards: {}", names.join(", "))
        })
    }

    fn shard_by_backend(&self, backend: u32) -> Option<usize> {
        self.ids.iter().position(|id| id.backend == backend)
    }

    pub fn drained(&self, i: usize, tables: &Tables) -> bool {
        // One array read; no batch needed.
        tables.shard_state.get(&self.ids[i].backend, 0).map(|s| s.flags & SHARD_DRAINED != 0).unwrap_or(false)
    }

    /// Players per backend id.
    pub fn loads(&self, tables: &Tables) -> HashMap<u32, Load> {
        self.loads_with(tables, &tables.all_groups())
    }

    fn loads_with(&self, tables: &Tables, groups: &[(u32, Group)]) -> HashMap<u32, Load> {
        let groups: HashMap<u32, Group> = groups.iter().copied().collect();
        let mut loads: HashMap<u32, Load> = HashMap::new();
        for (pending, list) in [(false, tables.sessions()), (true, tables.pending_sessions())] {
            for (_, s) in list {
                let Some(g) = groups.get(&s.group) else {
                    continue;
                };
                let load = loads.entry(g.backend).or_default();
                if pending {
                    load.pending += 1;
                } else {
                    load.established += 1;
                }
                if s.epoch != g.epoch {
                    load.moving += 1;
                }
            }
        }
        loads
    }

    /// A shard's share of new players: its free slots, or 0 when it must get
    /// none (drained; standby that has not received a group; full).
    fn weight(&self, i: usize, loads: &HashMap<u32, Load>, tables: &Tables, groups: &[(u32, Group)]) -> u32 {
        if self.drained(i, tables) || !self.is_up(i) {
            return 0;
        }
        if self.role(i) == Role::Standby && !self.holds_foreign_group(i, groups) {
            return 0;
        }
        self.free_slots(i, loads) as u32
    }

    /// The shard's role now (config, or what a recovery made it).
    pub fn role(&self, i: usize) -> Role {
        let name = &self.cfg.shards[i].name;
        self.role_override.get(name).copied().unwrap_or(self.cfg.shards[i].role)
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.health.get(&self.cfg.shards[i].name).map(|h| h.up).unwrap_or(true)
    }

    /// True when a group other than the shard's own home group points at it.
    fn holds_foreign_group(&self, i: usize, groups: &[(u32, Group)]) -> bool {
        let id = self.ids[i];
        groups.iter().any(|(g, grp)| grp.backend == id.backend && *g != id.home_group)
    }

    /// Every shard's placement weight now.
    fn weights(&self, tables: &Tables) -> Vec<u32> {
        let groups = tables.all_groups();
        let loads = self.loads_with(tables, &groups);
        (0..self.cfg.shards.len()).map(|i| self.weight(i, &loads, tables, &groups)).collect()
    }

    /// Rewrites placement rows whose weights changed (players came or went,
    /// a shard was drained, capacity changed).
    pub fn refresh_placement(&mut self, tables: &mut Tables) -> Result<()> {
        let weights = self.weights(tables);
        let rows = plan::placement(&self.cfg, &self.frontend_ids, &self.ids, |i| weights[i]);
        for (fe, row) in &rows {
            let old = self.last_placement.iter().find(|(f, _)| f == fe).map(|(_, r)| r.as_slice());
            tables.write_placement_diff(*fe, old, row)?;
        }
        self.last_placement = rows;
        Ok(())
    }

    /// Room for players: the configured capacity (or the server's own
    /// `max_players`, if lower) minus its players (sessions here, or what the
    /// server reports, whichever is more).
    fn free_slots(&self, i: usize, loads: &HashMap<u32, Load>) -> usize {
        let sessions = loads.get(&self.ids[i].backend).map(Load::players).unwrap_or(0);
        let health = self.health.get(&self.cfg.shards[i].name);
        let reported = health.and_then(|h| h.players).unwrap_or(0) as usize;
        let mut capacity = self.cfg.shards[i].capacity as usize;
        if let Some(max) = health.and_then(|h| h.max_players).filter(|&m| m > 0) {
            capacity = capacity.min(max as usize);
        }
        capacity.saturating_sub(sessions.max(reported))
    }

    /// Fails every group of shard `from` over to ONE shard: `to` if given,
    /// else an empty standby, else the healthy active shard with the most
    /// room that holds all of `from`'s players. Never splits: when nothing
    /// fits, nothing moves and the error says why.
    pub fn failover(&mut self, tables: &mut Tables, from: usize, to: Option<usize>) -> Result<MoveReport, String> {
        let groups = tables.all_groups();
        let loads = self.loads_with(tables, &groups);
        let players = loads.get(&self.ids[from].backend).map(Load::players).unwrap_or(0);
        let target = match to {
            Some(t) => {
                if t == from {
                    return Err(format!("`{}` cannot fail over to itself", self.cfg.shards[from].name));
                }
                self.check_target(t, tables)?;
                let free = self.free_slots(t, &loads);
                if players > free {
                    return Err(format!(
                        "shard `{}` has {free} free slots for `{}`'s {players} players",
                        self.cfg.shards[t].name, self.cfg.shards[from].name
                    ));
                }
                t
            }
            None => self.pick_target(from, players, &loads, &groups, tables)?,
        };
        self.move_groups(tables, from, target, players).map_err(|e| format!("{e:#}"))
    }

    fn pick_target(
        &self,
        from: usize,
        players: usize,
        loads: &HashMap<u32, Load>,
        groups: &[(u32, Group)],
        tables: &Tables,
    ) -> Result<usize, String> {
        let frontend = self.cfg.shards[from].frontend;
        let eligible = |i: &usize| {
            *i != from && self.cfg.shards[*i].frontend == frontend && self.is_up(*i) && !self.drained(*i, tables)
        };
        let empty = |i: usize| {
            loads.get(&self.ids[i].backend).map(Load::players).unwrap_or(0) == 0 && !self.holds_foreign_group(i, groups)
        };
        let standby = (0..self.cfg.shards.len())
            .filter(eligible)
            .find(|&i| self.role(i) == Role::Standby && empty(i) && self.free_slots(i, loads) >= players);
        if let Some(s) = standby {
            return Ok(s);
        }
        (0..self.cfg.shards.len())
            .filter(eligible)
            .filter(|&i| self.role(i) == Role::Active && self.free_slots(i, loads) >= players)
            .max_by_key(|&i| (self.free_slots(i, loads), std::cmp::Reverse(i)))
            .ok_or_else(|| {
                format!(
                    "no healthy shard can take `{}`'s {players} players together (no empty standby; the roomiest active shard has {} free slots)",
                    self.cfg.shards[from].name,
                    (0..self.cfg.shards.len()).filter(eligible).map(|i| self.free_slots(i, loads)).max().unwrap_or(0)
                )
            })
    }

    /// Players a shard holds (sessions routed to it).
    pub fn players_on(&self, i: usize, tables: &Tables) -> usize {
        self.loads(tables).get(&self.ids[i].backend).map(Load::players).unwrap_or(0)
    }

    fn check_target(&self, to: usize, tables: &Tables) -> Result<(), String> {
        if self.drained(to, tables) {
            return Err(format!(
                "shard `{}` is drained; `undrain {}` first or pick another target",
                self.cfg.shards[to].name, self.cfg.shards[to].name
            ));
        }
        Ok(())
    }

    /// Moves chosen players to shard `to` by silent re-routing. Checked in
    /// full first: an unknown client or a target without room moves nobody.
    pub fn migrate_clients(
        &mut self,
        tables: &mut Tables,
        clients: &[ClientSelector],
        to: &str,
    ) -> Result<MoveReport, String> {
        let to = self.shard(to)?;
        self.check_target(to, tables)?;
        if clients.is_empty() {
            return Err("no client given; name players as IP or IP:PORT".into());
        }
        let established = tables.sessions();
        let pending = tables.pending_sessions();
        let mut chosen: Vec<(bool, SessionKey, Session)> = Vec::new();
        for sel in clients {
            let before = chosen.len();
            for (is_pending, list) in [(false, &established), (true, &pending)] {
                for (k, s) in list.iter().filter(|(k, _)| sel.matches(k)) {
                    if !chosen.iter().any(|(_, c, _)| c == k) {
                        chosen.push((is_pending, *k, *s));
                    }
                }
            }
            if chosen.len() == before {
                let shown = match sel.port {
                    Some(p) => format!("{}:{p}", sel.ip),
                    None => sel.ip.to_string(),
                };
                return Err(format!("no session for client {shown}; `sessions` lists the players"));
            }
        }
        let target = self.ids[to];
        let groups: HashMap<u32, Group> = tables.all_groups().into_iter().collect();
        let target_group = groups.get(&target.home_group).copied().unwrap_or_default();
        let (already, to_move): (Vec<_>, Vec<_>) = chosen.into_iter().partition(|(_, _, s)| {
            groups.get(&s.group).map(|g| g.backend == target.backend && g.epoch == s.epoch).unwrap_or(false)
        });
        let loads = self.loads(tables);
        let free = self.free_slots(to, &loads);
        if to_move.len() > free {
            return Err(format!(
                "shard `{}` has {free} free slots, {} players asked to move: nothing was moved",
                self.cfg.shards[to].name,
                to_move.len()
            ));
        }
        let now = now_ns();
        // The moved session joins the target's home group with an epoch that
        // differs from the group's: "moving" until its next handshake.
        for (is_pending, key, old) in &to_move {
            let moved = Session {
                group: target.home_group,
                epoch: !target_group.epoch,
                last_seen_ns: now.max(old.last_seen_ns),
            };
            let map = if *is_pending { &mut tables.pending } else { &mut tables.sessions };
            map.insert(key, moved, 0).map_err(|e| format!("writing a session: {e}"))?;
        }
        self.refresh_placement(tables).map_err(|e| format!("{e:#}"))?;
        Ok(MoveReport {
            to: self.cfg.shards[to].name.clone(),
            moved: to_move.len(),
            already_there: already.len(),
            groups: Vec::new(),
        })
    }

    /// Moves every player of shard `from` to shard `to`, together: each group
    /// on `from` is repointed with one write, or nothing moves at all.
    pub fn migrate_shard(&mut self, tables: &mut Tables, from: &str, to: &str) -> Result<MoveReport, String> {
        let (from, to) = (self.shard(from)?, self.shard(to)?);
        if from == to {
            return Err(format!("`{}` is both source and target", self.cfg.shards[from].name));
        }
        self.check_target(to, tables)?;
        let loads = self.loads(tables);
        let players = loads.get(&self.ids[from].backend).map(Load::players).unwrap_or(0);
        let free = self.free_slots(to, &loads);
        if players > free {
            return Err(format!(
                "shard `{}` has {free} free slots and `{}`'s {players} players move together: nothing was moved",
                self.cfg.shards[to].name, self.cfg.shards[from].name
            ));
        }
        self.move_groups(tables, from, to, players).map_err(|e| format!("{e:#}"))
    }

    /// Repoints every group on shard `from` at shard `to` (one write each),
    /// gives `from` a fresh home group, and refreshes placement.
    /// `players` is how many players `from` has (for the report).
    pub fn move_groups(&mut self, tables: &mut Tables, from: usize, to: usize, players: usize) -> Result<MoveReport> {
        let (src, dst) = (self.ids[from], self.ids[to]);
        let groups: Vec<u32> =
            tables.all_groups().into_iter().filter(|(_, g)| g.backend == src.backend).map(|(id, _)| id).collect();
        for &g in &groups {
            tables.point_group(g, dst.backend)?;
        }
        // `from`'s home group went with its players; new players of `from`
        // (once it takes players again) start a group of their own.
        let mut used = used(tables);
        let fresh = allocate_group(&mut used, src.backend)?;
        let state = tables.shard_state.get(&src.backend, 0).unwrap_or_default();
        tables.point_group(fresh, src.backend)?;
        tables.shard_state.set(src.backend, ShardState { home_group: fresh, flags: state.flags }, 0)?;
        self.ids[from].home_group = fresh;
        self.refresh_placement(tables)?;
        Ok(MoveReport { to: self.cfg.shards[to].name.clone(), moved: players, already_there: 0, groups })
    }

    pub fn set_drained(&mut self, tables: &mut Tables, name: &str, drained: bool) -> Result<bool, String> {
        let i = self.shard(name)?;
        let id = self.ids[i].backend;
        let mut state = tables.shard_state.get(&id, 0).unwrap_or_default();
        let was = state.flags & SHARD_DRAINED != 0;
        if drained {
            state.flags |= SHARD_DRAINED;
        } else {
            state.flags &= !SHARD_DRAINED;
        }
        tables.shard_state.set(id, state, 0).map_err(|e| format!("writing SHARD_STATE: {e}"))?;
        self.refresh_placement(tables).map_err(|e| format!("{e:#}"))?;
        Ok(was != drained)
    }

    /// Switches to a new config. Refused, with nothing changed, when a shard
    /// that still has players would disappear.
    pub fn reload(&mut self, new: Validated, tables: &mut Tables) -> Result<Vec<String>, String> {
        let loads = self.loads(tables);
        let mut changes = Vec::new();
        for (i, old) in self.cfg.shards.iter().enumerate() {
            let kept = new.shards.iter().any(|s| s.name == old.name && s.address == old.address);
            if kept {
                continue;
            }
            let players = loads.get(&self.ids[i].backend).map(Load::players).unwrap_or(0);
            if players > 0 {
                return Err(format!(
                    "reload refused: shard `{}` ({}) still has {players} players; drain it and move them first (`proxy-agent migrate --from {} --to SHARD`); the running config stays",
                    old.name, old.address, old.name
                ));
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
        if let Err(e) = self.assign(tables).and_then(|_| self.apply(tables)) {
            self.cfg = old_cfg;
            let _ = self.assign(tables).and_then(|_| self.apply(tables));
            return Err(format!("reload failed while writing maps, the old config was restored: {e:#}"));
        }
        Ok(changes)
    }

    /// Removes sessions idle longer than `idle_ns`, and moving sessions whose
    /// client has not reconnected within `move_ns`. Returns (idle, moving).
    pub fn expire(&self, tables: &mut Tables, now: u64, idle_ns: u64, move_ns: u64) -> Result<(usize, usize)> {
        let groups: HashMap<u32, Group> = tables.all_groups().into_iter().collect();
        let (mut idle, mut moving) = (0, 0);
        for pending in [false, true] {
            let list = if pending { tables.pending_sessions() } else { tables.sessions() };
            for (key, s) in list {
                let age = now.saturating_sub(s.last_seen_ns);
                let is_moving = groups.get(&s.group).map(|g| g.epoch != s.epoch).unwrap_or(false);
                let expired_moving = is_moving && age > move_ns;
                if !(expired_moving || age > idle_ns) {
                    continue;
                }
                let map = if pending { &mut tables.pending } else { &mut tables.sessions };
                // Already gone (LRU eviction, a race with the data plane) is fine.
                if map.remove(&key).is_ok() {
                    if expired_moving {
                        moving += 1;
                    } else {
                        idle += 1;
                    }
                }
            }
        }
        Ok((idle, moving))
    }

    /// Sessions for the CLI, optionally filtered.
    pub fn sessions(
        &self,
        tables: &Tables,
        shard: Option<&str>,
        client: Option<&ClientSelector>,
    ) -> Result<Vec<SessionView>, String> {
        let shard_filter = shard.map(|s| self.shard(s)).transpose()?;
        let groups: HashMap<u32, Group> = tables.all_groups().into_iter().collect();
        let now = now_ns();
        let mut out = Vec::new();
        for (pending, list) in [(false, tables.sessions()), (true, tables.pending_sessions())] {
            for (k, s) in list {
                if client.is_some_and(|c| !c.matches(&k)) {
                    continue;
                }
                let g = groups.get(&s.group).copied().unwrap_or_default();
                let idx = self.shard_by_backend(g.backend);
                if shard_filter.is_some() && idx != shard_filter {
                    continue;
                }
                let fe = self.frontend_ids.iter().position(|&id| id == k.frontend as u32);
                out.push(SessionView {
                    client: SocketAddrV4::new(
                        Ipv4Addr::from(addr_from_map(k.client_addr)),
                        port_from_map(k.client_port),
                    )
                    .to_string(),
                    frontend: fe.map(|i| self.cfg.frontends[i].name.clone()).unwrap_or_else(|| "?".into()),
                    shard: idx.map(|i| self.cfg.shards[i].name.clone()).unwrap_or_else(|| "(none)".into()),
                    group: s.group,
                    state: if g.epoch != s.epoch {
                        "moving"
                    } else if pending {
                        "pending"
                    } else {
                        "established"
                    },
                    idle_ms: now.saturating_sub(s.last_seen_ns) / 1_000_000,
                });
            }
        }
        out.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(out)
    }
}

/// A group id no session, shard or group uses; prefers `hint` (a shard's
/// backend id, so ids read naturally when nothing has moved).
fn allocate_group(used: &mut Used, hint: u32) -> Result<u32> {
    let id = if !used.groups.contains(&hint) {
        hint
    } else {
        (1..MAX_GROUPS).find(|g| !used.groups.contains(g)).context("no free group id")?
    };
    used.groups.insert(id);
    Ok(id)
}
