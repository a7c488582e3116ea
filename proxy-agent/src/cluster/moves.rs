//! Moving players: chosen clients (one batched write of their sessions),
//! every player of a shard (one GROUPS write per group), failover (the same,
//! to a target the policy picks), and draining. Each is checked in full
//! before the first write and is all or nothing.

use std::{collections::HashSet, net::SocketAddrV4};

use anyhow::Result;
use proxy_common::{
    net::{addr_to_map, port_to_map},
    Session, SessionKey, ShardState, SHARD_DRAINED,
};

use super::{
    allocate_group, client_of,
    failover_policy::{self, Candidate, ParkReason},
    index::Indexed,
    now_ns, ClientSelector, Cluster, Loads,
};
use crate::{
    config::Role,
    control::{error::ControlError, views::MoveReport},
};

impl Cluster {
    fn check_target(&self, to: usize) -> Result<(), ControlError> {
        if self.drained(to) {
            return Err(ControlError::Drained(self.cfg.shards[to].name.clone()));
        }
        Ok(())
    }

    /// The sessions the selectors name, in their order, each once; an
    /// IP:port is looked up directly, an IP alone walks the index.
    pub(super) fn sessions_of(
        &self,
        clients: &[ClientSelector],
    ) -> Result<Vec<(SessionKey, Session, bool)>, ControlError> {
        let mut chosen: Vec<(SessionKey, Session, bool)> = Vec::new();
        let mut seen: HashSet<SessionKey> = HashSet::new();
        for sel in clients {
            let mut matched = false;
            let mut take = |k: &SessionKey, s: &Indexed| {
                matched = true;
                if seen.insert(*k) {
                    chosen.push((*k, s.session(), s.pending));
                }
            };
            match sel.port {
                Some(port) => {
                    for &fe in &self.frontend_ids {
                        let key = SessionKey {
                            client_addr: addr_to_map(sel.ip.octets()),
                            client_port: port_to_map(port),
                            frontend: fe as u16,
                        };
                        if let Some(s) = self.index.get(&key) {
                            take(&key, s);
                        }
                    }
                }
                None => self.index.iter().filter(|(k, _)| sel.matches(k)).for_each(|(k, s)| take(k, s)),
            }
            if !matched {
                return Err(ControlError::NoSession(sel.shown()));
            }
        }
        Ok(chosen)
    }

    /// Moves chosen players to shard `to` by silent re-routing. Checked in
    /// full first: an unknown client or a target without room moves nobody;
    /// the sessions are then written in one batch per table, all or nothing.
    pub fn migrate_clients(&mut self, clients: &[ClientSelector], to: &str) -> Result<MoveReport, ControlError> {
        let to = self.shard(to)?;
        self.check_target(to)?;
        if clients.is_empty() {
            return Err(ControlError::NoClientGiven);
        }
        let chosen = self.sessions_of(clients)?;
        let target = self.ids[to];
        let target_group = self.group(target.home_group);
        let (already, to_move): (Vec<_>, Vec<_>) = chosen.into_iter().partition(|(_, s, _)| {
            let g = self.group(s.group);
            g.backend == target.backend && g.epoch == s.epoch
        });
        let loads = self.loads();
        let free = self.free_slots(to, &loads);
        if to_move.len() > free {
            return Err(ControlError::NoRoomForClients {
                target: self.cfg.shards[to].name.clone(),
                free,
                asked: to_move.len(),
            });
        }
        let now = now_ns();
        // The moved session joins the target's home group with an epoch that
        // differs from the group's: "moving" until its next handshake.
        let moved = |old: &Session| Session {
            group: target.home_group,
            epoch: !target_group.epoch,
            last_seen_ns: now.max(old.last_seen_ns),
        };
        let mut written: Vec<bool> = Vec::new();
        for pending in [false, true] {
            let old: Vec<(SessionKey, Session)> =
                to_move.iter().filter(|(_, _, p)| *p == pending).map(|(k, s, _)| (*k, *s)).collect();
            let new: Vec<(SessionKey, Session)> = old.iter().map(|(k, s)| (*k, moved(s))).collect();
            if let Err(e) = self.tables.rewrite_sessions(pending, &new, &old) {
                // The table written before this one goes back too.
                for &done in &written {
                    let old: Vec<(SessionKey, Session)> =
                        to_move.iter().filter(|(_, _, p)| *p == done).map(|(k, s, _)| (*k, *s)).collect();
                    let new: Vec<(SessionKey, Session)> = old.iter().map(|(k, s)| (*k, moved(s))).collect();
                    self.tables.rewrite_sessions(done, &old, &new)?;
                }
                return Err(ControlError::dataplane(e.context("moving the chosen players; nobody was moved")));
            }
            written.push(pending);
        }
        let clients_from = self.clients_by_shard(&to_move);
        for (key, old, pending) in &to_move {
            self.index.set(*key, moved(old), *pending);
            self.changed_sessions.push(*key);
        }
        let loads = self.loads();
        self.refresh_placement(&loads)?;
        Ok(MoveReport {
            to: self.cfg.shards[to].name.clone(),
            moved: to_move.len(),
            already_there: already.len(),
            groups: Vec::new(),
            clients_from,
        })
    }

    /// Players grouped by the shard their sessions point at now.
    fn clients_by_shard(&self, sessions: &[(SessionKey, Session, bool)]) -> Vec<(String, Vec<SocketAddrV4>)> {
        let mut by_shard: Vec<(String, Vec<SocketAddrV4>)> = Vec::new();
        for (key, s, _) in sessions {
            let Some(i) = self.shard_by_backend(self.group(s.group).backend) else { continue };
            let client = client_of(key);
            let name = &self.cfg.shards[i].name;
            match by_shard.iter_mut().find(|(n, _)| n == name) {
                Some((_, list)) => list.push(client),
                None => by_shard.push((name.clone(), vec![client])),
            }
        }
        by_shard
    }

    /// Moves every player of shard `from` to shard `to`, together: each group
    /// on `from` is repointed with one write, or nothing moves at all.
    pub fn migrate_shard(&mut self, from: &str, to: &str) -> Result<MoveReport, ControlError> {
        let (from, to) = (self.shard(from)?, self.shard(to)?);
        if from == to {
            return Err(ControlError::SameShard(self.cfg.shards[from].name.clone()));
        }
        self.check_target(to)?;
        let loads = self.loads();
        let players = self.players_on(from, &loads);
        let free = self.free_slots(to, &loads);
        if players > free {
            return Err(ControlError::NoRoomForGroup {
                target: self.cfg.shards[to].name.clone(),
                free,
                from: self.cfg.shards[from].name.clone(),
                players,
            });
        }
        self.move_groups(from, to, players)
    }

    /// Fails every group of shard `from` over to ONE shard: `to` if given,
    /// else an empty standby, else the healthy active shard with the most
    /// room that holds all of `from`'s players. Never splits: when nothing
    /// fits, nothing moves and the error says why.
    pub fn failover(&mut self, from: usize, to: Option<usize>) -> Result<MoveReport, ControlError> {
        let loads = self.loads();
        let players = self.players_on(from, &loads);
        let target = match to {
            Some(t) => {
                if t == from {
                    return Err(ControlError::FailoverToItself(self.cfg.shards[from].name.clone()));
                }
                self.check_target(t)?;
                let free = self.free_slots(t, &loads);
                if players > free {
                    return Err(ControlError::NoRoomForFailover {
                        target: self.cfg.shards[t].name.clone(),
                        free,
                        from: self.cfg.shards[from].name.clone(),
                        players,
                    });
                }
                t
            }
            None => self.pick_target(from, players, &loads)?,
        };
        self.move_groups(from, target, players)
    }

    /// Where `failover` without `--to` sends shard `from`'s players, or why nowhere.
    pub fn pick_target(&self, from: usize, players: usize, loads: &Loads) -> Result<usize, ControlError> {
        let candidates = self.failover_candidates(from, loads);
        failover_policy::pick_target(players, &candidates).map(|(target, _)| target).map_err(|why| {
            let roomiest = match why {
                ParkReason::NoRoom { roomiest } => roomiest,
                ParkReason::AwaitingAllocation | ParkReason::AwaitingDecider => 0,
            };
            ControlError::NoFailoverTarget { from: self.cfg.shards[from].name.clone(), players, roomiest }
        })
    }

    /// Every shard as the failover rule sees it, for a failover of `from`.
    pub fn failover_candidates(&self, from: usize, loads: &Loads) -> Vec<Candidate> {
        let frontend = self.cfg.shards[from].frontend;
        (0..self.cfg.shards.len())
            .map(|i| Candidate {
                index: i,
                eligible: i != from && self.cfg.shards[i].frontend == frontend && self.is_up(i) && !self.drained(i),
                standby: self.role(i) == Role::Standby,
                empty: self.players_on(i, loads) == 0 && !self.holds_foreign_group(i),
                free: self.free_slots(i, loads),
            })
            .collect()
    }

    /// Repoints every group on shard `from` at shard `to` (one write each),
    /// gives `from` a fresh home group, and refreshes placement. A write that
    /// fails puts the groups already repointed back. `players` is how many
    /// players `from` has (for the report).
    pub fn move_groups(&mut self, from: usize, to: usize, players: usize) -> Result<MoveReport, ControlError> {
        let (src, dst) = (self.ids[from], self.ids[to]);
        let groups = self.groups_on(from);
        let before: Vec<_> = groups.iter().map(|&g| (g, self.group(g))).collect();
        for &g in &groups {
            if let Err(e) = self.point_group(g, dst.backend) {
                for &(id, old) in &before {
                    if self.group(id) != old {
                        self.write_group(id, old)?;
                    }
                }
                return Err(ControlError::dataplane(e.context("repointing a group; every group was put back")));
            }
        }
        // `from`'s home group went with its players; new players of `from`
        // (once it takes players again) start a group of their own.
        let mut used = self.used_groups();
        let fresh = allocate_group(&mut used, src.backend)?;
        let flags = self.shard_state[src.backend as usize].flags;
        self.point_group(fresh, src.backend)?;
        self.write_shard_state(src.backend, ShardState { home_group: fresh, flags })?;
        self.ids[from].home_group = fresh;
        let loads = self.loads();
        self.refresh_placement(&loads)?;
        Ok(MoveReport {
            to: self.cfg.shards[to].name.clone(),
            moved: players,
            already_there: 0,
            groups,
            clients_from: Vec::new(),
        })
    }

    /// Sets or clears a shard's drained flag; returns whether it changed.
    pub fn set_drained(&mut self, name: &str, drained: bool) -> Result<bool, ControlError> {
        let i = self.shard(name)?;
        let backend = self.ids[i].backend;
        let mut state = self.shard_state[backend as usize];
        let was = state.flags & SHARD_DRAINED != 0;
        if drained {
            state.flags |= SHARD_DRAINED;
        } else {
            state.flags &= !SHARD_DRAINED;
        }
        self.write_shard_state(backend, state)?;
        let loads = self.loads();
        self.refresh_placement(&loads)?;
        Ok(was != drained)
    }
}
