//! SA:MP-aware health checks: a `p` (ping) query proves the shard's game
//! server answers on its port; an `i` (info) query reports its players and
//! slots, which feed placement. Consecutive misses mark a shard down,
//! consecutive answers up again (hysteresis: no flapping).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{net::UdpSocket, time::timeout};

use crate::{cluster::owner::OwnerHandle, config::HealthConfig};

pub mod answers;

use answers::ShardAnswers;

/// Probes every shard each `health.interval_ms`, all at once, and hands the
/// round to the cluster's owner (which fails over what went down).
pub async fn probe_loop(owner: OwnerHandle) {
    let mut nonce: u32 = std::process::id();
    while let Some(plan) = owner.probe_plan().await {
        let started = tokio::time::Instant::now();
        let mut probes = tokio::task::JoinSet::new();
        for (name, addr) in plan.targets {
            nonce = nonce.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let wait = Duration::from_millis(plan.health.timeout_ms);
            let n = nonce;
            probes.spawn(async move { (name, probe(addr, wait, n).await) });
        }
        owner.health_round(probes.join_all().await);
        tokio::time::sleep_until(started + Duration::from_millis(plan.health.interval_ms)).await;
    }
}

/// A query request: magic, the address asked, the port (little-endian), opcode.
pub fn query(server: SocketAddrV4, opcode: u8, extra: &[u8]) -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&server.ip().octets());
    q.extend_from_slice(&server.port().to_le_bytes());
    q.push(opcode);
    q.extend_from_slice(extra);
    q
}

/// Players and slots from an `i` reply (after the 11-byte echoed header:
/// password u8, players u16, max players u16, ...).
pub fn parse_info(reply: &[u8], request: &[u8]) -> Option<(u16, u16)> {
    if reply.len() < 16 || reply[..11] != request[..11] {
        return None;
    }
    Some((u16::from_le_bytes([reply[12], reply[13]]), u16::from_le_bytes([reply[14], reply[15]])))
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub rtt: Duration,
    /// (players, max players) when the `i` answer came too.
    pub info: Option<(u16, u16)>,
    /// Its `r`, `c` and `o` answers, for the cluster's own answers.
    pub answers: ShardAnswers,
}

/// Probes a shard once: `None` when the ping is not echoed within `wait`.
/// Also asks `i`, `r`, `c` and `o`, and waits for them within `wait` (a
/// shard that never answers `o`, as SA:MP 0.3.7, just ends the wait then).
pub async fn probe(shard: SocketAddrV4, wait: Duration, nonce: u32) -> Option<ProbeResult> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    socket.connect(shard).await.ok()?;
    let ping = query(shard, b'p', &nonce.to_le_bytes());
    let [info, rules, clients, openmp] = [b'i', b'r', b'c', b'o'].map(|op| query(shard, op, &[]));
    let started = Instant::now();
    for q in [&ping, &info, &rules, &clients, &openmp] {
        socket.send(q).await.ok()?;
    }
    let (mut alive, mut rtt, mut players) = (false, Duration::ZERO, None);
    let mut answers = ShardAnswers::default();
    let mut buf = [0u8; 65_536];
    let deadline = started + wait;
    while !(alive
        && players.is_some()
        && answers.rules.is_some()
        && answers.clients.is_some()
        && answers.openmp.is_some())
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Ok(n)) = timeout(left, socket.recv(&mut buf)).await else { break };
        let reply = &buf[..n];
        if reply == ping.as_slice() {
            alive = true;
            rtt = started.elapsed();
        } else if let Some(p) = parse_info(reply, &info) {
            players = Some(p);
        } else if let Some(b) = answers::body(reply, &rules) {
            answers.rules = answers::parse_rules(b);
        } else if let Some(b) = answers::body(reply, &clients) {
            answers.clients = answers::parse_clients(b);
        } else if let Some(b) = answers::body(reply, &openmp) {
            answers.openmp = Some(b.to_vec());
        }
    }
    alive.then_some(ProbeResult { rtt, info: players, answers })
}

/// A shard's health as the agent tracks it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    pub up: bool,
    /// No probe has completed yet.
    pub unchecked: bool,
    pub misses: u32,
    pub successes: u32,
    pub rtt_ms: Option<f64>,
    pub players: Option<u16>,
    pub max_players: Option<u16>,
    /// The last `r`, `c` and `o` answers (kept while the shard answers pings).
    #[serde(skip)]
    pub answers: ShardAnswers,
}

impl Default for Health {
    fn default() -> Self {
        // Optimistic until proven down, so a starting cluster takes players.
        Self {
            up: true,
            unchecked: true,
            misses: 0,
            successes: 0,
            rtt_ms: None,
            players: None,
            max_players: None,
            answers: ShardAnswers::default(),
        }
    }
}

/// What one probe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    CameUp,
}

impl Health {
    /// Folds one probe result in, with hysteresis.
    pub fn record(&mut self, result: Option<ProbeResult>, cfg: &HealthConfig) -> Transition {
        self.unchecked = false;
        match result {
            Some(r) => {
                self.misses = 0;
                self.successes = self.successes.saturating_add(1);
                self.rtt_ms = Some(r.rtt.as_secs_f64() * 1000.0);
                if let Some((p, m)) = r.info {
                    self.players = Some(p);
                    self.max_players = Some(m);
                }
                self.answers = r.answers;
                if !self.up && self.successes >= cfg.up_after {
                    self.up = true;
                    return Transition::CameUp;
                }
            }
            None => {
                self.successes = 0;
                self.misses = self.misses.saturating_add(1);
                if self.up && self.misses >= cfg.down_after {
                    self.up = false;
                    return Transition::WentDown;
                }
            }
        }
        Transition::None
    }

    pub fn label(&self) -> &'static str {
        match (self.unchecked, self.up) {
            (true, _) => "unchecked",
            (false, true) => "up",
            (false, false) => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Option<ProbeResult> {
        Some(ProbeResult { rtt: Duration::from_millis(1), info: Some((5, 100)), answers: ShardAnswers::default() })
    }

    #[test]
    fn hysteresis_needs_consecutive_results() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        assert_eq!(h.record(None, &cfg), Transition::None);
        assert_eq!(h.record(None, &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None, "a flap resets the count");
        assert_eq!(h.record(None, &cfg), Transition::None);
        assert_eq!(h.record(None, &cfg), Transition::None);
        assert_eq!(h.record(None, &cfg), Transition::WentDown);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(None, &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::CameUp);
        assert_eq!(h.players, Some(5));
    }

    #[test]
    fn info_replies_must_echo_the_request() {
        let req = query(SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 7777), b'i', &[]);
        let mut reply = req.clone();
        reply.extend_from_slice(&[0, 7, 0, 50, 0]);
        assert_eq!(parse_info(&reply, &req), Some((7, 50)));
        reply[4] ^= 1;
        assert_eq!(parse_info(&reply, &req), None);
    }
}
