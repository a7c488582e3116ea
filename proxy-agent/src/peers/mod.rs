//! Ingress agents sharing their routing state, so the network may send any
//! player's packets to any ingress node (a node dies, a next hop is
//! withdrawn, a hash bucket moves) and that node already knows the player.
//!
//! Transport: one TCP connection per ordered pair of agents. Each agent
//! dials every peer it is configured with (`outbound`: it sends its
//! snapshot, then its own changes, in order) and accepts its peers'
//! connections (`inbound`: it applies what they send and acknowledges each
//! frame once the records are in its maps). A stream per peer gives order
//! (one origin's changes arrive as made), back-pressure (a bounded queue;
//! a peer that falls behind is reconnected and sent a fresh snapshot) and
//! a natural join (snapshot, then deltas, on every connection). The agents'
//! HTTP server was the other candidate; a request per change would cost a
//! round trip and give no order between requests.
//!
//! Security: both sides prove the node secret in the handshake
//! (`handshake`), every frame carries an HMAC-SHA256 tag and a rising
//! sequence number (`frame`); a frame that fails is refused, counted and
//! skipped. Frames are signed, not encrypted: keep the peer port on the
//! cluster's own network.
//!
//! Rooms: `record` (what is said), `handshake`, `frame`, `clock` (stamps),
//! `board` (per-peer state for status and metrics), `outbound`, `inbound`.

use std::{
    net::SocketAddrV4,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::{sync::broadcast, task::JoinHandle};

pub mod board;
pub mod clock;
pub mod frame;
pub mod handshake;
mod inbound;
mod outbound;
pub mod record;

pub use board::Board;
pub use record::{Record, SessionRecord, Stamp, Touch};

/// The environment variable that names this node; it wins over `peers.node_name`.
pub const NODE_NAME_ENV: &str = "SAMP_PROXY_NODE_NAME";

/// The `peers:` block of the config: the other ingress agents.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeersConfig {
    /// This node's name among its peers (1..=64 printable ASCII); default
    /// the host name. `SAMP_PROXY_NODE_NAME` wins.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Where this agent accepts its peers' connections (TCP).
    pub listen: SocketAddrV4,
    /// The other ingress agents' `listen` addresses; this node's own may be
    /// listed too (it is skipped), so every node can share one list.
    #[serde(default)]
    pub nodes: Vec<SocketAddrV4>,
    /// With no peer answering for this long after start, this node is
    /// ready alone (the first node of a cluster).
    #[serde(default = "default_join_timeout_ms")]
    pub join_timeout_ms: u64,
}

fn default_join_timeout_ms() -> u64 {
    5000
}

impl PeersConfig {
    /// This node's name: the environment, the file, or the host name.
    pub fn node_name(&self) -> String {
        std::env::var(NODE_NAME_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| self.node_name.clone())
            .unwrap_or_else(host_name)
    }

    /// The peers to dial: every listed node but this one.
    pub fn others(&self) -> Vec<SocketAddrV4> {
        self.nodes.iter().copied().filter(|a| *a != self.listen).collect()
    }
}

/// Whether `name` can name a node (what the handshake accepts).
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_graphic())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| valid_node_name(h))
        .unwrap_or_else(|| "ingress".into())
}

/// A node's id in stamps: a hash of its name (FNV-1a), the same on every node.
pub fn origin_id(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// A batch of this node's own changes, as the owner made them.
#[derive(Debug)]
pub struct Batch {
    pub made: Instant,
    pub records: Vec<Record>,
}

/// Batches a peer link may fall behind before it is resynced with a snapshot.
pub const QUEUE_BATCHES: usize = 4096;

/// The owner's end: where its changes go to every outbound link.
#[derive(Clone)]
pub struct Outbox {
    tx: broadcast::Sender<Arc<Batch>>,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox { tx: broadcast::channel(QUEUE_BATCHES).0 }
    }

    /// Queues records for every connected peer (none connected: dropped;
    /// a peer that connects later gets a snapshot).
    pub fn send(&self, records: Vec<Record>) {
        if !records.is_empty() {
            let _ = self.tx.send(Arc::new(Batch { made: Instant::now(), records }));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.tx.subscribe()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

/// What the peer links need of the owner (implemented by its handle).
pub trait PeersOwner: Clone + Send + Sync + 'static {
    /// Every established session as records, for a peer that just connected.
    fn snapshot_records(&self) -> impl std::future::Future<Output = Option<Vec<Record>>> + Send;
    /// Records from peer `from`; resolves once they are in the maps.
    fn peer_records(&self, from: String, records: Vec<Record>) -> impl std::future::Future<Output = ()> + Send;
}

/// What the links run with.
pub struct Settings {
    pub me: String,
    pub secret: Vec<u8>,
    pub listen: SocketAddrV4,
    pub dial: Vec<SocketAddrV4>,
}

/// How often an idle link says it is alive, and how long a silent one lives.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
pub const SILENCE: Duration = Duration::from_secs(5);

/// Binds the peer port and starts the links: one acceptor, one dialer a peer.
pub async fn spawn(
    settings: Settings,
    owner: impl PeersOwner,
    outbox: Outbox,
    board: Arc<Board>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding the peer port {} (peers.listen)", settings.listen))?;
    let settings = Arc::new(settings);
    let mut tasks = vec![tokio::spawn(inbound::serve(listener, settings.clone(), owner.clone(), board.clone()))];
    for &addr in &settings.dial {
        let link = outbound::Link { addr, settings: settings.clone(), outbox: outbox.clone(), board: board.clone() };
        tasks.push(tokio::spawn(link.run(owner.clone())));
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_ids_are_stable() {
        assert_eq!(super::origin_id("a"), 0xe40c292c);
        assert_ne!(super::origin_id("ingress-1"), super::origin_id("ingress-2"));
    }
}
