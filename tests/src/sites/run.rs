//! A running pair of sites (`SitesTopology` with simulated shards and the
//! real agents on both nodes), and a player driven step by step.

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use proxy_agent::protocol::Request;
use proxy_common::samp;

use super::{shared_yaml, Shard, SitesTopology};
use crate::{
    agent::Agent,
    sim::{
        shard::{self, ShardConfig, ShardHandle},
        wire::{self, Echo},
    },
};

/// The topology, the simulated shards, the agents.
pub struct Bed {
    pub t: SitesTopology,
    pub ingress: Agent,
    pub remote: Option<Agent>,
    /// Local shards (`l1`, `l2`), then remote ones (`far1`, `far2`).
    pub sims: Vec<ShardHandle>,
}

impl Bed {
    /// `locals` and `fars` shard namespaces with their simulated shards, the
    /// ingress agent with `shards` (and the site's `mtu`), and the remote
    /// agent when `remote`.
    pub fn start(locals: usize, fars: usize, shards: &[Shard], mtu: Option<u32>, remote: bool) -> Result<Bed> {
        let t = SitesTopology::build(locals, fars, 8)?;
        // The shards run before the agents probe them.
        let mut sims = Vec::new();
        for i in 0..locals {
            let cfg = ShardConfig { name: format!("l{}", i + 1), max_players: 1000, seed: 3000 + i as u32 };
            sims.push(shard::spawn(t.local_socket(i)?, cfg));
        }
        for i in 0..fars {
            let cfg = ShardConfig { name: format!("far{}", i + 1), max_players: 1000, seed: 4000 + i as u32 };
            sims.push(shard::spawn(t.far_socket(i)?, cfg));
        }
        let shared = shared_yaml(shards, mtu);
        // The remote node first: the ingress's first probes then find it.
        let remote = if remote { Some(Agent::start(&t.remote, &t.remote_yaml(&shared))?) } else { None };
        let ingress = Agent::start(&t.ingress, &t.ingress_yaml(&shared))?;
        Ok(Bed { t, ingress, remote, sims })
    }

    pub fn remote(&self) -> &Agent {
        self.remote.as_ref().expect("a remote agent")
    }

    pub fn sim(&self, name: &str) -> &ShardHandle {
        self.sims.iter().find(|s| s.name == name).expect("a shard of that name")
    }

    /// The ingress agent's view of `shard`'s health (`up`, `down`, ...).
    pub fn health(&self, shard: &str) -> String {
        let Ok(st) = self.ingress.request(&Request::Status) else { return String::new() };
        let s = st["shards"].as_array().and_then(|a| a.iter().find(|s| s["name"] == shard).cloned());
        s.map(|s| s["health"].as_str().unwrap_or("").to_string()).unwrap_or_default()
    }

    /// Waits up to 15 s for `shards` to be up; panics with both agents' logs.
    pub fn wait_up(&self, shards: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !shards.iter().all(|s| self.health(s) == "up") {
            if Instant::now() > deadline {
                let remote = self.remote.as_ref().map(|r| r.log_text()).unwrap_or_default();
                panic!(
                    "shards {shards:?} not up within 15 s: status {:?}\nWAN {}\ningress log:\n{}\nremote log:\n{remote}",
                    self.ingress.request(&Request::Status).ok(),
                    self.t.wan_counters(),
                    self.ingress.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connects `n` step-by-step players (each within 10 s).
    pub fn sync_players(&self, n: usize) -> Result<Vec<SyncPlayer>> {
        let vip = self.t.vip();
        self.t.player_sockets(n)?.into_iter().map(|s| SyncPlayer::connect(s, vip, Duration::from_secs(10))).collect()
    }

    /// Drains (or undrains) `shard` on the ingress agent.
    pub fn drain(&self, shard: &str, on: bool) -> Result<()> {
        let req = if on { Request::Drain { shard: shard.into() } } else { Request::Undrain { shard: shard.into() } };
        self.ingress.request(&req).map(|_| ())
    }

    /// A player connected to `want` only: every other of `names` drained
    /// while it handshakes. `nth` picks its address.
    pub fn player_on(&self, want: &str, names: &[&str], nth: usize) -> Result<SyncPlayer> {
        for other in names.iter().filter(|n| **n != want) {
            self.drain(other, true)?;
        }
        self.drain(want, false)?;
        let sock = self.t.player_sockets(nth + 1)?.pop().expect("a socket");
        SyncPlayer::connect(sock, self.t.vip(), Duration::from_secs(10))
    }

    /// `name=value` of each named counter of `agent`.
    pub fn counters(&self, agent: &Agent, names: &[&str]) -> String {
        names.iter().map(|n| format!("{n}={}", counter(agent, n))).collect::<Vec<_>>().join(" ")
    }
}

/// A data-plane counter of `agent` by its `proxy_common::Counter` name, so
/// the tests name the feature's counters without a compile-time dependency.
pub fn counter(agent: &Agent, name: &str) -> u64 {
    let c = proxy_common::Counter::ALL
        .iter()
        .find(|c| c.name() == name)
        .unwrap_or_else(|| panic!("proxy_common::Counter has no `{name}`: is the sites feature merged?"));
    agent.tables().expect("the agent's pinned maps").counter(*c).expect("reading a counter")
}

/// A player driven step by step: it handshakes like the client, then sends
/// one game packet at a time and waits for its echo. For exact accounting
/// and round trips.
pub struct SyncPlayer {
    pub sock: UdpSocket,
    pub server: SocketAddrV4,
    pub local: SocketAddrV4,
    seq: u32,
}

impl SyncPlayer {
    /// Handshakes with `server` (retrying every 300 ms) for up to `timeout`.
    pub fn connect(sock: UdpSocket, server: SocketAddrV4, timeout: Duration) -> Result<SyncPlayer> {
        let SocketAddr::V4(local) = sock.local_addr()? else { bail!("an IPv4 socket") };
        sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        let mut msg = wire::handshake_request(0, server.port()).to_vec();
        while Instant::now() < deadline {
            sock.send_to(&msg, server)?;
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            if from != SocketAddr::V4(server) {
                continue;
            }
            match buf[0] {
                samp::ID_OPEN_CONNECTION_COOKIE if n == 3 => {
                    let cookie = u16::from_le_bytes([buf[1], buf[2]]);
                    msg = wire::handshake_request(cookie ^ samp::COOKIE_XOR, server.port()).to_vec();
                }
                samp::ID_OPEN_CONNECTION_REPLY => return Ok(SyncPlayer { sock, server, local, seq: 0 }),
                _ => {}
            }
        }
        bail!("{local} did not connect to {server} within {timeout:?}")
    }

    /// Sends one game packet of `size` filler bytes and waits up to
    /// `timeout` for its echo: the round trip, the echo, and whether the
    /// reply came from the server's address.
    pub fn ping(&mut self, size: usize, timeout: Duration) -> Result<Option<(Duration, Echo)>> {
        self.seq += 1;
        let t0 = Instant::now();
        self.sock.send_to(&wire::game_packet(self.seq, size, self.server.port()), self.server)?;
        let mut buf = [0u8; 2048];
        while t0.elapsed() < timeout {
            self.sock.set_read_timeout(Some((timeout - t0.elapsed()).max(Duration::from_millis(1))))?;
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else { continue };
            match Echo::decode(&buf[..n]) {
                Some(e) if e.seq == self.seq => {
                    if from != SocketAddr::V4(self.server) {
                        bail!("an echo for {} came from {from}, not {}", self.local, self.server);
                    }
                    return Ok(Some((t0.elapsed(), e)));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// The median of some durations, in microseconds.
pub fn median_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}
