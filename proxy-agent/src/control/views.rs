//! The replies of the control protocol, as types: the agent builds them, the
//! CLI prints them and the metrics render them, so a field is named in one
//! place. On the wire each is the JSON object of its fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `status`: the whole cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    pub frontends: Vec<FrontendView>,
    pub shards: Vec<ShardView>,
    pub totals: Totals,
    pub agent: AgentView,
    /// Data-plane counters by name, summed over CPUs.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FrontendView {
    pub name: String,
    pub address: String,
    pub id: u32,
}

/// One shard: `status`, `shards` and the per-shard metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShardView {
    pub name: String,
    pub address: String,
    pub frontend: String,
    /// active | standby
    pub role: String,
    pub drained: bool,
    /// unchecked | up | down | departed (its GameServer left)
    pub health: String,
    pub rtt_ms: Option<f64>,
    pub reported_players: Option<u16>,
    pub parked: bool,
    /// Established plus pending sessions routed here.
    pub players: usize,
    pub established: usize,
    pub pending: usize,
    /// Sessions routed here that have not handshaken since their move.
    pub moving: usize,
    pub capacity: u32,
    /// Room for new players as placement sees it.
    pub free_slots: usize,
    pub backend: u32,
    pub home_group: u32,
    pub groups: Vec<u32>,
    pub traffic: TrafficView,
    /// `file`, or `gameserver` (discovered from Agones).
    #[serde(default)]
    pub source: String,
    /// Why a discovered shard is down for good (its GameServer left).
    #[serde(default)]
    pub departed: Option<String>,
    /// The site it sits in (reached through that site's tunnel); `None`:
    /// this node's own network.
    #[serde(default)]
    pub site: Option<String>,
}

/// Packets and IPv4 bytes forwarded to and from one shard.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrafficView {
    pub packets_to_shard: u64,
    pub bytes_to_shard: u64,
    pub packets_from_shard: u64,
    pub bytes_from_shard: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub players: usize,
    pub capacity: u32,
    pub established: usize,
    pub pending: usize,
    pub moving: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentView {
    pub version: String,
    pub config: String,
    pub expired_idle: u64,
    pub expired_moving: u64,
    /// Events by kind since the agent started (the event ring forgets).
    pub events_total: BTreeMap<String, u64>,
    pub parked_failovers: usize,
    /// How long the last maintenance tick took (expiry, placement, snapshot).
    pub last_tick_ms: Option<f64>,
    /// Programs attached, a first health round done, and no reload or
    /// failover left half applied: what `/ready` answers.
    pub ready: bool,
    /// Why not, when not ready (the owner's first reason, by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    /// Config reloads by result: ok | refused (bad file or rule) | rolled_back.
    pub reloads: BTreeMap<String, u64>,
    /// Round trip of every answered ping probe, as a histogram.
    pub probe_rtt: HistogramView,
    /// Queries the agent answered itself (answers too long for one frame),
    /// by type: info | rules | clients | detail | ping | openmp.
    pub queries_answered: BTreeMap<String, u64>,
    /// Full scans of the session tables, and what they had to repair.
    pub index: IndexView,
    /// Shards from Agones: absent when no frontend uses it.
    #[serde(default)]
    pub kubernetes: Option<KubernetesView>,
    /// The other ingress agents: absent without `peers:`.
    #[serde(default)]
    pub peers: Option<PeersView>,
    /// The coordinator's decider: absent without `coordinator:`.
    #[serde(default)]
    pub coordinator: Option<CoordinatorView>,
}

/// The one decider of listed shards' failovers, moves and drains.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CoordinatorView {
    /// This agent decides now.
    pub deciding: bool,
    /// Who decides (as last read from the database).
    pub holder: String,
    /// The last decision of the log carried out here.
    pub applied_seq: u64,
    /// The last round's error (the database unreachable, say).
    pub error: Option<String>,
    /// Dead shards whose decision this agent asked for and awaits.
    pub awaiting: Vec<String>,
}

/// Replication with the other ingress agents, as this node sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeersView {
    /// This node's name among its peers.
    pub node: String,
    #[serde(flatten)]
    pub links: crate::peers::board::BoardView,
    /// Peers' session records written here, found already so, older than
    /// what this node holds, or naming a frontend or shard it lacks.
    pub records_applied: u64,
    pub records_unchanged: u64,
    pub records_stale: u64,
    pub records_unroutable: u64,
    /// Peers away longer than their grace (named by name or address).
    pub away: Vec<String>,
}

/// The Agones source as this replica sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KubernetesView {
    /// This replica holds the decider's Lease.
    pub leading: bool,
    /// Who holds it, as last read.
    pub holder: Option<String>,
    /// Why the API is unreachable, when it is (forwarding goes on).
    pub api_error: Option<String>,
    /// Ready GameServers in each Agones frontend's pool.
    pub pool_ready: BTreeMap<String, usize>,
    /// GameServers that should be shards but cannot be, with the fix.
    pub unusable: Vec<crate::agones::discover::Unusable>,
    /// Allocations by outcome: allocated | unallocated | contention | error | timeout.
    pub allocations: BTreeMap<String, u64>,
    /// Allocations asked and not answered yet.
    pub allocating: usize,
}

/// A cumulative histogram: `buckets` are (upper bound, observations at or
/// under it), as Prometheus counts them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HistogramView {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl HistogramView {
    /// Probe round trips, in seconds: 0.1 ms to 1 s.
    pub fn for_probe_rtt() -> Self {
        let bounds = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
        Self { buckets: bounds.iter().map(|&b| (b, 0)).collect(), sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        for (bound, n) in &mut self.buckets {
            if v <= *bound {
                *n += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// The session index's health: how it follows the tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexView {
    pub sessions: usize,
    pub scans: u64,
    pub last_scan_ms: Option<f64>,
    /// Sessions a scan found that no event had reported (a full ring).
    pub repaired_added: u64,
    /// Sessions the tables dropped without an event (LRU evictions).
    pub repaired_removed: u64,
}

/// One session as the CLI shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub client: String,
    pub frontend: String,
    pub shard: String,
    pub group: u32,
    /// established | pending | moving
    pub state: String,
    /// As of the last scan of the tables (see the README).
    pub idle_ms: u64,
}

/// `migrate` and `failover`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MoveReport {
    pub to: String,
    /// Sessions now moving to `to`.
    pub moved: usize,
    /// Sessions that were already on `to`.
    pub already_there: usize,
    /// Groups repointed (a whole-shard move).
    pub groups: Vec<u32>,
    /// For a move of chosen players: who moved, by the shard they were on
    /// (what their account leases follow). Not part of the reply.
    #[serde(skip)]
    pub clients_from: Vec<(String, Vec<std::net::SocketAddrV4>)>,
}

/// `drain` and `undrain`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DrainView {
    pub shard: String,
    pub drained: bool,
    pub changed: bool,
}

/// `reload`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadView {
    pub changes: Vec<String>,
}

/// Something an operator wants to see after the fact (`events`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: crate::events::EventKind,
    pub shard: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub groups: Vec<u32>,
    pub players: usize,
    pub detail: String,
}

/// Every reply, by request. On the wire it is the inner view alone.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Reply {
    Status(Box<StatusView>),
    Shards(Vec<ShardView>),
    Sessions(Vec<SessionView>),
    Moved(MoveReport),
    Drain(DrainView),
    Reload(ReloadView),
    Events(Vec<Event>),
    /// The decider's reply to a request this follower forwarded, as it sent it.
    Forwarded(serde_json::Value),
}
