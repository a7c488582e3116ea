//! The independent checker: it reads only what the players and the shards
//! saw (the simulators' own records: each player's echoes, reconnects and
//! sources, each shard incarnation's statistics file) and the soak's own
//! ledger of what it did (who was told to move, which shard it killed),
//! never the agent's view, and judges every sample against the invariants.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
};

use super::{
    history::{Death, History, Told},
    population::{PlayerRec, RECONNECT_AFTER},
};
use crate::sim::{clock_ms, shard::ShardStats};

/// A moved player (told, or its shard died) plays again within this.
pub const MOVE_BOUND_MS: u64 = 30_000;
/// A new player is playing within this of its first handshake.
pub const JOIN_BOUND_MS: u64 = 30_000;
/// How long after being told (or after its shard came back) a player's
/// reconnect is still that fault's doing.
const TOLD_WINDOW_MS: u64 = RECONNECT_AFTER.as_millis() as u64 + 12_000;
const DEATH_TAIL_MS: u64 = RECONNECT_AFTER.as_millis() as u64 + 3_000;

#[derive(Debug, Clone)]
struct Pending {
    reconnect_ms: u64,
    trigger_ms: u64,
    from: String,
    told_to: Option<String>,
    death: Option<usize>,
}

#[derive(Default)]
struct PState {
    shard: Option<String>,
    reconnects: usize,
    pending: Option<Pending>,
    connected_once: bool,
}

struct Group {
    shard: String,
    members: BTreeSet<String>,
    /// Where each member arrived.
    arrivals: BTreeMap<String, String>,
}

#[derive(Default, Debug, Clone)]
pub struct Figures {
    pub checks: u64,
    pub moves_told: u64,
    pub moves_death: u64,
    pub worst_move_ms: u64,
    pub worst_move_who: String,
    pub groups: u64,
    pub group_members: u64,
}

#[derive(Default)]
pub struct Checker {
    players: BTreeMap<String, PState>,
    groups: BTreeMap<usize, Group>,
    unconnected: BTreeMap<(String, usize), u64>,
    pub figures: Figures,
    pub broken: Vec<String>,
}

fn told_applies(told: &[Told], who: &str, shard: &str, r: u64) -> Option<Told> {
    told.iter()
        .rev()
        .find(|t| {
            let whom = t.clients.iter().any(|c| c == who) || t.from_shard.as_deref() == Some(shard);
            whom && t.at_ms <= r + 1000 && r <= t.at_ms + TOLD_WINDOW_MS
        })
        .cloned()
}

/// Every shard a player on `from` was told to go to between `from_ms` and
/// `to_ms`, following whole-shard moves of the shards it was going to.
fn allowed_targets(told: &[Told], who: &str, from: &str, from_ms: u64, to_ms: u64) -> BTreeSet<String> {
    let mut on: BTreeSet<String> = [from.to_string()].into();
    let mut targets = BTreeSet::new();
    for _ in 0..2 {
        for t in told.iter().filter(|t| t.at_ms + 1000 >= from_ms && t.at_ms <= to_ms) {
            let whom = t.clients.iter().any(|c| c == who) || t.from_shard.as_ref().is_some_and(|f| on.contains(f));
            if whom {
                targets.insert(t.to.clone());
                on.insert(t.to.clone());
            }
        }
    }
    targets
}

fn death_applies(deaths: &[Death], shard: &str, from: u64, to: u64) -> Option<usize> {
    deaths.iter().position(|d| {
        d.shard == shard && d.from_ms <= to + 200 && from <= d.to_ms.unwrap_or(u64::MAX).saturating_add(DEATH_TAIL_MS)
    })
}

impl Checker {
    fn bad(&mut self, what: String) {
        if self.broken.len() < 50 {
            self.broken.push(what);
        }
    }

    /// One look at everything.
    pub fn sample(&mut self, roster: &[Arc<PlayerRec>], h: &History, shards: &[(String, usize, ShardStats)]) {
        let (told, deaths) = (h.told_list(), h.deaths());
        self.capture_groups(roster, &deaths);
        for p in roster {
            self.player(p, &told, &deaths);
        }
        let known: BTreeSet<&str> = roster.iter().map(|p| p.local.as_str()).collect();
        self.shards(&known, shards);
    }

    /// The players on a shard when it died: its group, which must arrive
    /// together on one shard.
    fn capture_groups(&mut self, roster: &[Arc<PlayerRec>], deaths: &[Death]) {
        let now = clock_ms();
        for (i, d) in deaths.iter().enumerate() {
            if self.groups.contains_key(&i) {
                continue;
            }
            let members: BTreeSet<String> = roster
                .iter()
                .filter(|p| p.active(now + 10_000))
                .filter(|p| {
                    let st = self.players.get(&p.local);
                    let s = p.snapshot();
                    st.is_some_and(|st| st.shard.as_deref() == Some(&d.shard) && st.pending.is_none())
                        && s.last_echo_ms.is_some_and(|e| e + 2000 >= d.from_ms)
                })
                .map(|p| p.local.clone())
                .collect();
            self.figures.groups += 1;
            self.figures.group_members += members.len() as u64;
            self.groups.insert(i, Group { shard: d.shard.clone(), members, arrivals: BTreeMap::new() });
        }
    }

    fn player(&mut self, p: &PlayerRec, told: &[Told], deaths: &[Death]) {
        let s = p.snapshot();
        let now = clock_ms();
        self.figures.checks += 4;
        if s.wrong_source > 0 {
            self.bad(format!("{} got {} datagrams from an address other than the public one", p.local, s.wrong_source));
        }
        if s.wrong_seen > 0 {
            self.bad(format!(
                "a shard saw {} under another address {} times (a rewritten source)",
                p.local, s.wrong_seen
            ));
        }
        if !s.connected && s.connects == 0 && p.active(now) && now > p.joined_ms + JOIN_BOUND_MS {
            self.bad(format!("{} joined at {} ms and is not playing {JOIN_BOUND_MS} ms later", p.local, p.joined_ms));
        }
        let mut st = self.players.remove(&p.local).unwrap_or_default();
        for &r in &s.reconnect_ms[st.reconnects.min(s.reconnect_ms.len())..] {
            self.reconnected(p, &mut st, r, told, deaths);
        }
        st.reconnects = s.reconnect_ms.len();
        let cur = s.current_shard().map(str::to_string);
        match (&st.pending, &cur) {
            (Some(m), Some(b)) if s.connected && s.last_echo_ms.is_some_and(|e| e > m.reconnect_ms) => {
                let m = m.clone();
                self.arrived(p, &m, b, s.last_echo_ms.unwrap_or(now), told, deaths);
                st.pending = None;
                st.shard = cur.clone();
            }
            (Some(m), _) if now > m.trigger_ms + MOVE_BOUND_MS && p.active(now) => {
                let m = m.clone();
                self.bad(format!(
                    "{} left {} at {} ms and is not playing again {MOVE_BOUND_MS} ms later",
                    p.local, m.from, m.trigger_ms
                ));
                st.pending = None;
            }
            (None, Some(b)) if st.shard.as_ref().is_some_and(|a| a != b) => {
                self.bad(format!(
                    "{} changed from {} to {b} without reconnecting: a split or a stray",
                    p.local,
                    st.shard.as_deref().unwrap_or("-")
                ));
                st.shard = cur.clone();
            }
            (None, Some(_)) if st.shard.is_none() => {
                st.shard = cur.clone();
                st.connected_once = true;
            }
            _ => {}
        }
        self.players.insert(p.local.clone(), st);
    }

    fn reconnected(&mut self, p: &PlayerRec, st: &mut PState, r: u64, told: &[Told], deaths: &[Death]) {
        self.figures.checks += 1;
        let Some(a) = st.shard.clone() else { return };
        if let Some(m) = &st.pending {
            // Lost its new shard before settling: the same move goes on.
            if m.reconnect_ms <= r {
                return;
            }
        }
        let t = told_applies(told, &p.local, &a, r);
        let d = death_applies(deaths, &a, r.saturating_sub(RECONNECT_AFTER.as_millis() as u64 + 500), r);
        let pending = match (t, d) {
            (Some(t), _) => Pending { reconnect_ms: r, trigger_ms: t.at_ms, from: a, told_to: Some(t.to), death: None },
            (None, Some(i)) => {
                Pending { reconnect_ms: r, trigger_ms: deaths[i].from_ms, from: a, told_to: None, death: Some(i) }
            }
            (None, None) => {
                self.bad(format!(
                    "{} reconnected at {r} ms though its shard {a} lived and nobody told it to move",
                    p.local
                ));
                Pending { reconnect_ms: r, trigger_ms: r, from: a, told_to: None, death: None }
            }
        };
        st.pending = Some(pending);
    }

    fn arrived(&mut self, p: &PlayerRec, m: &Pending, b: &str, at: u64, told: &[Told], deaths: &[Death]) {
        self.figures.checks += 2;
        let took = at.saturating_sub(m.trigger_ms);
        if took > self.figures.worst_move_ms {
            self.figures.worst_move_ms = took;
            self.figures.worst_move_who = format!("{} {} -> {b}", p.local, m.from);
        }
        if took > MOVE_BOUND_MS {
            self.bad(format!(
                "{} took {took} ms to play again after leaving {} (bound {MOVE_BOUND_MS})",
                p.local, m.from
            ));
        }
        if let Some(to) = &m.told_to {
            self.figures.moves_told += 1;
            // Told again on the way (a whole-shard move of where it was
            // going), or a shard on its way died: any of those targets.
            let since = m.reconnect_ms.saturating_sub(TOLD_WINDOW_MS);
            let mut allowed = allowed_targets(told, &p.local, &m.from, since, at);
            allowed.insert(to.clone());
            let died = allowed.iter().chain([&m.from]).any(|s| death_applies(deaths, s, m.trigger_ms, at).is_some());
            if !allowed.contains(b) && !died {
                self.bad(format!("{} was told to go to {allowed:?} and arrived on {b}", p.local));
            }
        }
        if let Some(i) = m.death {
            self.figures.moves_death += 1;
            if let Some(g) = self.groups.get_mut(&i) {
                if g.members.contains(&p.local) {
                    g.arrivals.insert(p.local.clone(), b.to_string());
                    let places: BTreeSet<&String> = g.arrivals.values().collect();
                    if places.len() > 1 {
                        let what = format!("{}'s group split on arrival: {:?}", g.shard, g.arrivals);
                        self.bad(what);
                    }
                }
            }
        }
    }

    /// What the shards saw: every game packet from a player the shard
    /// accepted, every address a player's (or a flood's, 198.19/16).
    fn shards(&mut self, known: &BTreeSet<&str>, shards: &[(String, usize, ShardStats)]) {
        for (name, inc, st) in shards {
            self.figures.checks += 2;
            let key = (name.clone(), *inc);
            let before = self.unconnected.insert(key, st.unconnected).unwrap_or(0);
            if st.unconnected > before {
                self.bad(format!(
                    "stray: {name} (incarnation {inc}) got {} game packets from players it never accepted",
                    st.unconnected - before
                ));
            }
            for client in st.clients.keys() {
                let ip: Option<Ipv4Addr> = client.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok());
                let flood = ip.is_some_and(|ip| ip.octets()[..2] == [198, 19]);
                if !flood && !known.contains(client.as_str()) {
                    self.bad(format!("{name} saw a client {client} that is no player: a rewritten address"));
                }
            }
        }
    }

    /// Players whose move is under way.
    pub fn pending(&self) -> usize {
        self.players.values().filter(|p| p.pending.is_some()).count()
    }

    /// At the end: every group arrived on one shard (checked as they came),
    /// and the figures.
    pub fn groups_summary(&self) -> Vec<String> {
        self.groups
            .values()
            .map(|g| {
                let places: BTreeSet<&String> = g.arrivals.values().collect();
                format!("{}: {} members, {} arrived on {:?}", g.shard, g.members.len(), g.arrivals.len(), places)
            })
            .collect()
    }
}
