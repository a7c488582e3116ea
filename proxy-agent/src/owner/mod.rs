//! The owner: one OS thread that holds the cluster model (and so every map
//! handle) and serialises everything done to it. The control socket, the
//! health loop, the HTTP endpoint, the Kubernetes task and the signal
//! handlers reach it through the ports they define (`handle`), with typed
//! messages (`msg`) and typed replies; readers that must not wait take the
//! snapshot it publishes after every change and every tick (`snapshot`).
//! Its map I/O never runs on the async runtime's threads, and the one slow
//! read (the full session scan) runs on the scanner's thread while the
//! owner keeps answering.
//!
//! Rooms: `dispatch` (a message to its handler), `requests` (the control
//! socket's and the shards' requests), `health_rounds` (probes and the
//! data plane's session events), `failover` (the policy's decisions
//! applied), `from_agones` and `allocations` (GameServers as shards),
//! `tick` (the periodic work and the scans), `event_log`.
//!
//! Every tick (1 s): fold in the data plane's session events (also before
//! each message), expire moved sessions that never came back, refresh
//! placement, publish the snapshot, and start a full scan when one is due.

mod allocations;
mod decisions;
mod dispatch;
mod event_log;
mod failover;
mod forwarding;
mod from_agones;
mod handle;
mod health_rounds;
mod msg;
mod replication;
mod requests;
mod snapshot;
mod tick;

#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::{mpsc::UnboundedSender, watch};

pub use decisions::DeciderLink;
use event_log::EventLog;
use from_agones::AgonesState;
pub use handle::OwnerHandle;
pub use msg::Msg;
pub use replication::PeerLinks;

use crate::{
    agones::AgonesHandle,
    cluster::{answered::Answered, index::MergeReport, snapshot::Snapshot, Cluster},
    config::Validated,
    control::views::HistogramView,
    dataplane::session_events::SessionEvents,
    health::UrgentProbe,
    leases::mover::LeaseMover,
    query::ResponderCounts,
};

/// How often the owner looks at the event ring when nothing else wakes it:
/// a 1 MiB ring holds about 32,000 events, so this keeps up with a flood;
/// and a shard's refusal of its players (a crashed process) waits at most
/// this long before the shard is probed. A look at an empty ring costs a
/// few microseconds.
const RING_POLL: Duration = Duration::from_millis(10);
const TICK: Duration = Duration::from_secs(1);
/// The longest time between two full scans (repairs and idle expiry).
const MAX_SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Where the owner's own requests and reports go, all known at start
/// (the composition root makes every channel before it spawns anything).
pub struct Links {
    /// Hands account leases along with the players, when leases are on.
    pub leases: Option<LeaseMover>,
    /// Commands to the Kubernetes task, when a frontend uses Agones.
    pub agones: Option<AgonesHandle>,
    pub node: NodeLinks,
    /// The other ingress agents, when `peers:` is configured.
    pub peers: Option<PeerLinks>,
    /// The coordinator's decider, when `coordinator:` is configured.
    pub decider: Option<DeciderLink>,
}

/// What a node does with what its data plane sees.
pub enum NodeLinks {
    /// An ingress node probes: shards seen refusing players are probed at once.
    Ingress { urgent_probes: UnboundedSender<UrgentProbe> },
    /// A game node (`role: return`) tells the ingress agents instead.
    Return { answered: UnboundedSender<Vec<Answered>>, refused: UnboundedSender<Vec<String>> },
}

/// The owner's end of its channels, made before anything is spawned.
pub struct Inbox {
    rx: mpsc::Receiver<Msg>,
    publish: watch::Sender<Arc<Snapshot>>,
}

/// The owner's channels: the handle every client holds, and the inbox the
/// owner thread reads once it starts.
pub fn channel() -> (OwnerHandle, Inbox) {
    let (tx, rx) = mpsc::channel();
    let (publish, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    (OwnerHandle { tx, snapshot }, Inbox { rx, publish })
}

/// What the owner thread is started with.
pub struct Start {
    pub cluster: Cluster,
    pub config_path: PathBuf,
    pub ring: SessionEvents,
    pub responder_counts: Arc<ResponderCounts>,
    /// The scanner thread's requests: the generation to scan.
    pub scanner: mpsc::Sender<u64>,
    pub links: Links,
}

struct ScanState {
    scanner: mpsc::Sender<u64>,
    in_flight: bool,
    /// The generation of the scan in flight.
    generation: u64,
    /// What merging its chunks found so far.
    merged: MergeReport,
    expired: usize,
    last_started: Instant,
    interval: Duration,
    done: u64,
    last_ms: Option<f64>,
    repaired: MergeReport,
    /// `session_event_lost` when the last scan began.
    lost_at_start: u64,
}

pub(crate) struct Owner {
    cluster: Cluster,
    /// The config file as last loaded; the cluster's config is this plus
    /// the shards discovered from Agones.
    file: Validated,
    /// Shards from Agones GameServers (inert without `agones` frontends).
    agones: AgonesState,
    config_path: PathBuf,
    events: EventLog,
    /// Shards that went down whose players found no room yet: retried on
    /// every health round until capacity appears.
    parked: Vec<String>,
    /// Parked shards whose `failover_parked` event was recorded: said once,
    /// not on every round that retries them.
    parked_said: std::collections::BTreeSet<String>,
    expired_idle: u64,
    expired_moving: u64,
    /// Pending players promoted because a game node's shard accepted them.
    promoted_by_nodes: u64,
    ring: SessionEvents,
    scan: ScanState,
    publish: watch::Sender<Arc<Snapshot>>,
    last_tick_ms: Option<f64>,
    attached: bool,
    health_rounds: u64,
    reloads: BTreeMap<String, u64>,
    probe_rtt: HistogramView,
    responder_counts: Arc<ResponderCounts>,
    /// Where the owner's own requests and reports go.
    links: Links,
    /// Sharing sessions with the other ingress agents.
    replication: Option<replication::Replication>,
    /// Listed shards' failovers, moves and drains through the coordinator.
    decider: Option<decisions::DeciderState>,
    /// Shard-level requests sent to the decider, and peers' carried out here.
    forwarding: forwarding::Forwarding,
}

/// The time between full scans: often enough for the idle timeout to be
/// kept within half its length, at most every `MAX_SCAN_INTERVAL`.
fn scan_interval(idle_timeout_ms: u64) -> Duration {
    Duration::from_millis(idle_timeout_ms / 2).clamp(Duration::from_millis(500), MAX_SCAN_INTERVAL)
}

/// Starts the owner thread on `inbox`; the handle from `channel` reaches it.
pub fn start(inbox: Inbox, start: Start) -> Result<std::thread::JoinHandle<()>> {
    let mut owner = Owner::new(start, inbox.publish);
    owner.drain_ring();
    owner.publish();
    Ok(std::thread::Builder::new().name("cluster-owner".into()).spawn(move || owner.run(inbox.rx))?)
}

impl Owner {
    fn new(mut s: Start, publish: watch::Sender<Arc<Snapshot>>) -> Owner {
        let replication = s.links.peers.take().map(replication::Replication::new);
        let decider = s.links.decider.take().map(decisions::DeciderState::new);
        let interval = scan_interval(s.cluster.cfg.raw.session_idle_timeout_ms);
        Owner {
            file: s.cluster.cfg.clone(),
            agones: AgonesState::default(),
            cluster: s.cluster,
            config_path: s.config_path,
            events: EventLog::default(),
            parked: Vec::new(),
            parked_said: Default::default(),
            expired_idle: 0,
            expired_moving: 0,
            promoted_by_nodes: 0,
            ring: s.ring,
            scan: ScanState {
                scanner: s.scanner,
                in_flight: false,
                generation: 0,
                merged: MergeReport::default(),
                expired: 0,
                last_started: Instant::now(),
                interval,
                done: 0,
                last_ms: None,
                repaired: MergeReport::default(),
                lost_at_start: 0,
            },
            publish,
            last_tick_ms: None,
            attached: false,
            health_rounds: 0,
            reloads: BTreeMap::new(),
            probe_rtt: HistogramView::for_probe_rtt(),
            responder_counts: s.responder_counts,
            links: s.links,
            replication,
            decider,
            forwarding: Default::default(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now()).min(RING_POLL);
            match rx.recv_timeout(wait) {
                Ok(Msg::Shutdown(done)) => {
                    let _ = done.send(());
                    return;
                }
                Ok(msg) => {
                    self.drain_ring();
                    self.handle(msg);
                    self.share_model_changes();
                    self.settle_forwarded();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.drain_ring(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
    }
}
