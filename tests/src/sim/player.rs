//! Simulated players: each a UDP socket that handshakes like the SA:MP client
//! (24 with cookie 0 -> 26 -> 24 with cookie ^ 0x6969 -> 25), then sends
//! scrambled game packets at a game rate and checks every reply: it must come
//! from the public address, and the shard must have seen the player's real
//! address. A player whose shard stays silent for `reconnect_after`
//! handshakes again to the same address, as the client does after "Lost
//! connection to the server. Reconnecting...".

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use proxy_common::samp;
use serde::Serialize;
use tokio::{net::UdpSocket, task::JoinHandle, time::Instant};

use super::wire::{self, Echo};

#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// The public address (VIP:port).
    pub server: SocketAddrV4,
    /// Game packets per second once connected (the client sends ~33 at 30 ms sync).
    pub rate_hz: f64,
    /// Filler bytes per game packet.
    pub packet_size: usize,
    /// How long each player plays.
    pub duration: Duration,
    /// Silence after which a connected player handshakes again.
    pub reconnect_after: Duration,
    /// How long to wait for a handshake answer before sending it again.
    pub handshake_retry: Duration,
}

impl PlayerConfig {
    pub fn new(server: SocketAddrV4, duration: Duration) -> Self {
        Self {
            server,
            rate_hz: 30.0,
            packet_size: 60,
            duration,
            reconnect_after: Duration::from_secs(3),
            handshake_retry: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PlayerStats {
    pub local: String,
    pub connected: bool,
    /// Completed handshakes (1 for a player that never lost its shard).
    pub connects: u32,
    pub handshakes_sent: u64,
    pub sent: u64,
    /// Echoes received.
    pub received: u64,
    /// Echo counts per shard name, in the order the shards were first seen.
    pub shards: Vec<(String, u64)>,
    /// Datagrams that did not come from the public address.
    pub wrong_source: u64,
    /// Echoes in which the shard saw an address other than ours.
    pub wrong_seen: u64,
    /// `sim::clock_ms` when this player lost its shard and began to reconnect.
    pub reconnect_ms: Vec<u64>,
    /// `sim::clock_ms` of the last echo.
    pub last_echo_ms: Option<u64>,
    /// The longest silence between two echoes since the last `reset_gaps`.
    pub max_gap_ms: u64,
    /// The shard of the last echo.
    pub last_shard: Option<String>,
}

impl PlayerStats {
    fn echo(&mut self, shard: &str) {
        self.received += 1;
        let now = super::clock_ms();
        if let Some(last) = self.last_echo_ms {
            self.max_gap_ms = self.max_gap_ms.max(now.saturating_sub(last));
        }
        self.last_echo_ms = Some(now);
        match self.shards.iter_mut().find(|(s, _)| s == shard) {
            Some((_, n)) => *n += 1,
            None => self.shards.push((shard.to_string(), 1)),
        }
        if self.last_shard.as_deref() != Some(shard) {
            self.last_shard = Some(shard.to_string());
        }
    }

    /// The shard this player was last echoed by (a player back on a shard
    /// it visited before is on that shard, whatever the order of `shards`).
    pub fn current_shard(&self) -> Option<&str> {
        self.last_shard.as_deref()
    }
}

pub struct Players {
    pub stats: Vec<Arc<Mutex<PlayerStats>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Players {
    pub fn snapshot(&self) -> Vec<PlayerStats> {
        self.stats.iter().map(|s| s.lock().unwrap().clone()).collect()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Forgets the silences so far: `max_gap_ms` measures from now on.
    pub fn reset_gaps(&self) {
        for s in &self.stats {
            s.lock().unwrap().max_gap_ms = 0;
        }
    }

    /// Waits for every player to finish (their `duration`, or `stop`).
    pub async fn join(self) -> Vec<PlayerStats> {
        for t in self.tasks {
            let _ = t.await;
        }
        self.stats.iter().map(|s| s.lock().unwrap().clone()).collect()
    }
}

/// Plays `sockets` against `server` on a runtime of its own until every
/// player is connected and has had `echoes` echoes, runs `meanwhile` with
/// them still playing, then stops them and returns their stats. A player
/// reconnects only after 20 s of silence: longer than any hiccup of a loaded
/// 2-core machine, so a reconnect is the proxy's fault.
pub fn play_until(
    sockets: Vec<std::net::UdpSocket>,
    server: SocketAddrV4,
    echoes: u64,
    meanwhile: impl FnOnce(&Players),
) -> Vec<PlayerStats> {
    use crate::scenario::wait_for;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let mut cfg = PlayerConfig::new(server, Duration::from_secs(60));
    cfg.reconnect_after = Duration::from_secs(20);
    let players = rt.block_on(async { start(sockets, &cfg) }).expect("starting the players");
    wait_for("all players to connect", Duration::from_secs(60), || players.snapshot().iter().all(|p| p.connected));
    wait_for(&format!("{echoes} echoes per player"), Duration::from_secs(60), || {
        players.snapshot().iter().all(|p| p.received >= echoes)
    });
    meanwhile(&players);
    players.stop();
    rt.block_on(players.join())
}

/// Starts one player per socket on the current tokio runtime. The sockets were
/// opened (and bound) inside the client namespace.
pub fn start(sockets: Vec<std::net::UdpSocket>, cfg: &PlayerConfig) -> anyhow::Result<Players> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    let count = sockets.len().max(1);
    for (i, s) in sockets.into_iter().enumerate() {
        s.set_nonblocking(true)?;
        let local = s.local_addr()?.to_string();
        let socket = UdpSocket::from_std(s)?;
        let st = Arc::new(Mutex::new(PlayerStats { local, ..Default::default() }));
        stats.push(st.clone());
        // Spread the players' send phases over one packet interval.
        let phase = Duration::from_secs_f64(i as f64 / count as f64 / cfg.rate_hz);
        tasks.push(tokio::spawn(play(socket, cfg.clone(), st, stop.clone(), phase)));
    }
    Ok(Players { stats, stop, tasks })
}

async fn play(
    socket: UdpSocket,
    cfg: PlayerConfig,
    st: Arc<Mutex<PlayerStats>>,
    stop: Arc<AtomicBool>,
    phase: Duration,
) {
    let port = cfg.server.port();
    let server = SocketAddr::V4(cfg.server);
    let local = match socket.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => return,
    };
    let deadline = Instant::now() + cfg.duration;
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut connected = false;
    let mut last_rx = Instant::now();
    let mut handshake_at = Instant::now();
    let mut seq = 0u32;
    let mut buf = [0u8; 1500];
    let send_handshake = |cookie: u16| {
        let w = wire::handshake_request(cookie, port);
        st.lock().unwrap().handshakes_sent += 1;
        w
    };
    let _ = socket.send_to(&send_handshake(0), server).await;
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if from != server {
                    st.lock().unwrap().wrong_source += 1;
                    continue;
                }
                let data = &buf[..n];
                match data.first() {
                    Some(&samp::ID_OPEN_CONNECTION_COOKIE) if n == 3 => {
                        let cookie = u16::from_le_bytes([data[1], data[2]]);
                        let w = send_handshake(cookie ^ samp::COOKIE_XOR);
                        let _ = socket.send_to(&w, server).await;
                        handshake_at = Instant::now();
                    }
                    Some(&samp::ID_OPEN_CONNECTION_REPLY) if !connected => {
                        connected = true;
                        last_rx = Instant::now();
                        let mut s = st.lock().unwrap();
                        s.connected = true;
                        s.connects += 1;
                    }
                    _ => {
                        if let Some(echo) = Echo::decode(data) {
                            last_rx = Instant::now();
                            let mut s = st.lock().unwrap();
                            s.echo(&echo.shard);
                            if echo.seen != local {
                                s.wrong_seen += 1;
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= deadline || stop.load(Ordering::Relaxed) {
                    break;
                }
                if connected {
                    if now - last_rx > cfg.reconnect_after {
                        // "Lost connection to the server. Reconnecting..."
                        connected = false;
                        {
                            let mut s = st.lock().unwrap();
                            s.connected = false;
                            s.reconnect_ms.push(super::clock_ms());
                        }
                        let _ = socket.send_to(&send_handshake(0), server).await;
                        handshake_at = now;
                        continue;
                    }
                    seq = seq.wrapping_add(1);
                    let _ = socket.send_to(&wire::game_packet(seq, cfg.packet_size, port), server).await;
                    st.lock().unwrap().sent += 1;
                } else if now - handshake_at > cfg.handshake_retry {
                    let _ = socket.send_to(&send_handshake(0), server).await;
                    handshake_at = now;
                }
            }
        }
    }
}
