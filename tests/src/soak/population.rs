//! The players: they join in waves (each on an address and port no other
//! player of the run uses, so what a shard saw from an address is one
//! player's), play at a game rate or idle at a slow one, and leave when
//! their time is up. Some cross a city limit: their shard asks an ingress
//! agent, over the transfer API, to move them to another shard.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;

use super::{
    cluster::{Cluster, CLIENT_IPS, SHARD_SECRET},
    history::{History, Told},
    schedule::Rng,
};
use crate::{
    sim::{
        clock_ms,
        player::{self, PlayerConfig, PlayerStats, Players},
    },
    topology::{PORT, VIP},
};

/// A player leaves this long after the last game packet it sent without
/// an echo: the client's "Lost connection... Reconnecting" (the real
/// client waits longer; a loaded 2-core machine never stalls this long).
pub const RECONNECT_AFTER: Duration = Duration::from_millis(3000);

/// One simulated player of the run.
pub struct PlayerRec {
    pub local: String,
    pub account: String,
    pub stats: Arc<Mutex<PlayerStats>>,
    pub joined_ms: u64,
    /// When its `duration` ends (it stops sending).
    pub leaves_ms: u64,
    pub idle: bool,
}

impl PlayerRec {
    pub fn snapshot(&self) -> PlayerStats {
        self.stats.lock().unwrap().clone()
    }

    /// Still playing (a little margin before its end).
    pub fn active(&self, now: u64) -> bool {
        now + 1000 < self.leaves_ms
    }
}

pub type Roster = Arc<Mutex<Vec<Arc<PlayerRec>>>>;

#[derive(Default, Debug, Clone)]
pub struct Counts {
    pub joined: u64,
    pub transfers_asked: u64,
    pub transfers_refused: u64,
}

pub struct Population {
    pub roster: Roster,
    handles: Vec<Players>,
    next: usize,
    rng: Rng,
    pub counts: Counts,
    next_join_ms: u64,
    next_transfer_ms: u64,
    /// No joins or transfers after this (the quiet end).
    pub until_ms: u64,
}

impl Population {
    pub fn new(seed: u64, until_ms: u64) -> Self {
        Population {
            roster: Arc::default(),
            handles: Vec::new(),
            next: 0,
            rng: Rng::new(seed ^ 0x00B0_0B1E),
            counts: Counts::default(),
            next_join_ms: 0,
            next_transfer_ms: 0,
            until_ms,
        }
    }

    /// `n` players now, each playing for a drawn time (or for `for_ms`).
    pub fn join(&mut self, c: &Cluster, n: usize, for_ms: Option<u64>) -> Result<()> {
        let idle = self.rng.chance(25);
        let play_ms = for_ms.unwrap_or_else(|| self.rng.range(30_000, 150_000));
        let first = self.next;
        self.next += n;
        let sockets = c.net.net.client.run(move || {
            (first..first + n)
                .map(|k| {
                    let ip = Ipv4Addr::new(198, 18, 0, 2 + (k % CLIENT_IPS) as u8);
                    UdpSocket::bind(SocketAddrV4::new(ip, 20_000 + (k / CLIENT_IPS) as u16))
                })
                .collect::<std::io::Result<Vec<_>>>()
        })??;
        let mut cfg = PlayerConfig::new(SocketAddrV4::new(VIP, PORT), Duration::from_millis(play_ms));
        cfg.reconnect_after = RECONNECT_AFTER;
        cfg.rate_hz = if idle { 4.0 } else { 20.0 };
        let players = c.rt.block_on(async { player::start(sockets, &cfg) })?;
        let now = clock_ms();
        let mut roster = self.roster.lock().unwrap();
        for st in &players.stats {
            let local = st.lock().unwrap().local.clone();
            let account = format!("acct_{}", local.replace(['.', ':'], "_"));
            let rec = PlayerRec { local, account, stats: st.clone(), joined_ms: now, leaves_ms: now + play_ms, idle };
            roster.push(Arc::new(rec));
        }
        self.counts.joined += n as u64;
        self.handles.push(players);
        Ok(())
    }

    /// A step of the population's own life: joins and area transfers.
    pub fn tick(&mut self, c: &Cluster, h: &History, now_ms: u64) -> Result<()> {
        if now_ms >= self.until_ms {
            return Ok(());
        }
        if now_ms >= self.next_join_ms {
            let n = self.rng.range(2, 8) as usize;
            self.join(c, n, None)?;
            self.next_join_ms = now_ms + self.rng.range(1_000, 4_000);
        }
        if now_ms >= self.next_transfer_ms {
            self.next_transfer_ms = now_ms + self.rng.range(1_500, 5_000);
            self.transfer(c, h, now_ms);
        }
        Ok(())
    }

    /// A random playing player crosses a city limit: its shard asks an
    /// ingress agent to move it to another live shard.
    fn transfer(&mut self, c: &Cluster, h: &History, now_ms: u64) {
        let candidates: Vec<Arc<PlayerRec>> = self
            .roster
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.active(now_ms + 10_000) && p.snapshot().connected)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let p = candidates[self.rng.below(candidates.len())].clone();
        let Some(from) = p.snapshot().current_shard().map(str::to_string) else { return };
        let alive: Vec<String> =
            (0..c.shards.len()).map(super::cluster::shard_name).filter(|s| *s != from && !h.is_dead(s)).collect();
        if h.is_dead(&from) || alive.is_empty() {
            return;
        }
        let to = alive[self.rng.below(alive.len())].clone();
        let live: Vec<usize> = c.live().map(|(i, _)| i).collect();
        let node = live[self.rng.below(live.len())];
        let Some(pod) = Cluster::shard_index(&from) else { return };
        let body = format!("secret={SHARD_SECRET}&client={}&to={to}", p.local.replace(':', "%3A"));
        self.counts.transfers_asked += 1;
        let answer = http_post(&c.net.net.pods[pod], c.http_of(node), "/shard/transfer", &body);
        match answer {
            Ok((200, text)) if text.trim() == "ok" => h.told(Told {
                at_ms: now_ms,
                clients: vec![p.local.clone()],
                from_shard: None,
                to,
                why: format!("area transfer asked by {from} of in{}", node + 1),
            }),
            other => {
                self.counts.transfers_refused += 1;
                h.note(format!("transfer of {} from {from} to {to} via in{}: {other:?}", p.local, node + 1));
            }
        }
    }

    /// Stops every player.
    pub fn stop(&self) {
        for p in &self.handles {
            p.stop();
        }
    }
}

/// One HTTP/1.1 POST from a namespace, with deadlines; never panics.
pub fn http_post(ns: &crate::netns::NetNs, to: SocketAddrV4, target: &str, body: &str) -> Result<(u16, String)> {
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let raw = ns.run(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(head.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no end of head in `{raw}`"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_string()))
}
