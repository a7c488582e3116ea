//! A simulated shard: what an open.mp server does at the packet level.
//!
//! - Queries (`SAMP` + header + opcode): `i`, `p` and `r` answered.
//! - Client datagrams are un-scrambled with the server port; a bad checksum is
//!   dropped and counted, as open.mp does.
//! - ID_OPEN_CONNECTION_REQUEST runs the cookie exchange: the cookie comes from
//!   the client IP and a per-process seed, so a cookie from another shard fails.
//! - Game packets from a connected player are echoed, tagged with the shard's
//!   name and the client address it saw; from anyone else they are dropped.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use proxy_common::samp;
use serde::{Deserialize, Serialize};

use super::wire::{Echo, Info, ID_PLAYER_SYNC};

/// What the shard saw from one client address.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientStats {
    pub handshakes: u64,
    /// Game packets echoed.
    pub packets: u64,
    pub connected: bool,
    /// Milliseconds since the shard started, of the last datagram.
    pub last_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardStats {
    pub name: String,
    /// Keyed by the client's `ip:port` as the shard saw it.
    pub clients: BTreeMap<String, ClientStats>,
    pub bad_checksum: u64,
    /// Game packets from clients without a completed handshake.
    pub unconnected: u64,
    pub queries: u64,
    /// `sim::clock_ms` of every handshake datagram that arrived (first 10 000).
    pub handshake_ms: Vec<u64>,
    /// First handshake arrival per client, `sim::clock_ms`.
    pub first_handshake_ms: BTreeMap<String, u64>,
}

impl ShardStats {
    pub fn connected_players(&self) -> usize {
        self.clients.values().filter(|c| c.connected).count()
    }
    pub fn game_packets(&self) -> u64 {
        self.clients.values().map(|c| c.packets).sum()
    }
}

pub struct ShardHandle {
    pub name: String,
    stop: Arc<AtomicBool>,
    mute: Arc<AtomicBool>,
    stats: Arc<Mutex<ShardStats>>,
    thread: Option<JoinHandle<()>>,
}

impl ShardHandle {
    pub fn stats(&self) -> ShardStats {
        self.stats.lock().unwrap().clone()
    }

    /// While muted the shard reads and ignores everything (a hung server).
    pub fn set_muted(&self, muted: bool) {
        self.mute.store(muted, Ordering::Relaxed);
    }

    /// Stops answering and closes the socket: the shard process "dies".
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct ShardConfig {
    pub name: String,
    pub max_players: u16,
    pub seed: u32,
}

/// Which server the shard plays. They differ in their queries: open.mp
/// answers `o` and no `d`; SA:MP 0.3.7 answers `d` (the detailed player
/// list) and no `o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    OpenMp,
    Samp037,
}

/// Serves on `socket` (bound to the shard's port) until stopped, as open.mp.
pub fn spawn(socket: UdpSocket, cfg: ShardConfig) -> ShardHandle {
    spawn_as(socket, cfg, Server::OpenMp)
}

/// As `spawn`, playing `server`.
pub fn spawn_as(socket: UdpSocket, cfg: ShardConfig, server: Server) -> ShardHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let mute = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(ShardStats { name: cfg.name.clone(), ..Default::default() }));
    let name = cfg.name.clone();
    let thread = {
        let (stop, mute, stats) = (stop.clone(), mute.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("shard-{name}"))
            .spawn(move || serve(socket, cfg, server, &stop, &mute, &stats))
            .expect("spawning a shard thread")
    };
    ShardHandle { name, stop, mute, stats, thread: Some(thread) }
}

fn cookie_for(seed: u32, client: &SocketAddrV4) -> u16 {
    let mut h = seed ^ u32::from_be_bytes(client.ip().octets());
    h = h.wrapping_mul(0x9e37_79b1);
    (h >> 16) as u16
}

fn serve(
    socket: UdpSocket,
    cfg: ShardConfig,
    server: Server,
    stop: &AtomicBool,
    mute: &AtomicBool,
    stats: &Mutex<ShardStats>,
) {
    let port = socket.local_addr().map(|a| a.port()).unwrap_or(7777);
    socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let started = Instant::now();
    let mut buf = [0u8; 2048];
    let mut plain = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let SocketAddr::V4(from) = from else { continue };
        if mute.load(Ordering::Relaxed) {
            continue;
        }
        let data = &buf[..n];
        let reply = if samp::is_query(data) {
            query(data, &cfg, server, stats)
        } else {
            handle(data, from, port, &cfg, &mut plain, stats, started)
        };
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, from);
        }
    }
}

/// A query's answer, as the server `server` gives it.
fn query(data: &[u8], cfg: &ShardConfig, server: Server, stats: &Mutex<ShardStats>) -> Option<Vec<u8>> {
    let mut st = stats.lock().unwrap();
    st.queries += 1;
    let players = st.connected_players() as u16;
    match data[10] {
        b'i' => Some(
            Info {
                password: false,
                players,
                max_players: cfg.max_players,
                hostname: format!("shard {}", cfg.name),
                gamemode: "simulated".into(),
                language: "en".into(),
            }
            .reply(data),
        ),
        b'p' if data.len() >= 15 => Some(data[..15].to_vec()),
        b'c' => {
            // Players named after their port, score = game packets echoed.
            let mut out = data[..samp::QUERY_HEADER_LEN].to_vec();
            let connected: Vec<_> = st.clients.iter().filter(|(_, c)| c.connected).collect();
            out.extend_from_slice(&(connected.len() as u16).to_le_bytes());
            for (addr, c) in connected {
                let name = format!("p{}", addr.rsplit(':').next().unwrap_or("0"));
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&(c.packets as i32).to_le_bytes());
            }
            Some(out)
        }
        // An open.mp shard's extension answer: the same on every shard.
        b'o' if server == Server::OpenMp => {
            let mut out = data[..samp::QUERY_HEADER_LEN].to_vec();
            out.extend_from_slice(b"\x01sim-open.mp");
            Some(out)
        }
        // SA:MP 0.3.7's detailed list: id, name, score, ping.
        b'd' if server == Server::Samp037 => {
            let mut out = data[..samp::QUERY_HEADER_LEN].to_vec();
            let connected: Vec<_> = st.clients.iter().filter(|(_, c)| c.connected).collect();
            out.extend_from_slice(&(connected.len() as u16).to_le_bytes());
            for (id, (addr, c)) in connected.into_iter().enumerate() {
                let name = format!("p{}", addr.rsplit(':').next().unwrap_or("0"));
                out.push(id as u8);
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&(c.packets as i32).to_le_bytes());
                out.extend_from_slice(&20u32.to_le_bytes());
            }
            Some(out)
        }
        b'r' => {
            let mut out = data[..samp::QUERY_HEADER_LEN].to_vec();
            out.extend_from_slice(&1u16.to_le_bytes());
            out.extend_from_slice(&[5, b's', b'h', b'a', b'r', b'd', cfg.name.len() as u8]);
            out.extend_from_slice(cfg.name.as_bytes());
            Some(out)
        }
        _ => None,
    }
}

fn handle(
    data: &[u8],
    from: SocketAddrV4,
    port: u16,
    cfg: &ShardConfig,
    plain: &mut [u8],
    stats: &Mutex<ShardStats>,
    started: Instant,
) -> Option<Vec<u8>> {
    let mut st = stats.lock().unwrap();
    let Some(len) = samp::unscramble(data, port, plain) else {
        st.bad_checksum += 1;
        return None;
    };
    let plain = &plain[..len];
    let now_ms = started.elapsed().as_millis() as u64;
    let key = from.to_string();
    match plain[0] {
        samp::ID_OPEN_CONNECTION_REQUEST if len == 3 => {
            let got = u16::from_le_bytes([plain[1], plain[2]]);
            let cookie = cookie_for(cfg.seed, &from);
            let at = super::clock_ms();
            if st.handshake_ms.len() < 10_000 {
                st.handshake_ms.push(at);
            }
            st.first_handshake_ms.entry(key.clone()).or_insert(at);
            let client = st.clients.entry(key).or_default();
            client.handshakes += 1;
            client.last_ms = now_ms;
            if got == cookie ^ samp::COOKIE_XOR {
                client.connected = true;
                Some(vec![samp::ID_OPEN_CONNECTION_REPLY, 0])
            } else {
                // A new attempt (or a cookie from another shard): start over.
                client.connected = false;
                let [lo, hi] = cookie.to_le_bytes();
                Some(vec![samp::ID_OPEN_CONNECTION_COOKIE, lo, hi])
            }
        }
        ID_PLAYER_SYNC if len >= 5 => {
            let seq = u32::from_le_bytes([plain[1], plain[2], plain[3], plain[4]]);
            match st.clients.get_mut(&key) {
                Some(client) if client.connected => {
                    client.packets += 1;
                    client.last_ms = now_ms;
                    Some(Echo { shard: cfg.name.clone(), seen: from, seq }.encode())
                }
                _ => {
                    st.unconnected += 1;
                    None
                }
            }
        }
        _ => None,
    }
}
