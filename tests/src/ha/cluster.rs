//! The real cluster on a [`MultiIngress`] topology: one simulated shard per
//! pod, a `return` agent on every game node (direct server return, telling
//! every ingress agent whom its shards accepted) and an ingress agent with
//! `peers:` on every ingress node, all sharing one node secret.

use std::time::Duration;

use std::net::Ipv4Addr;

use anyhow::Result;
use proxy_agent::protocol::Request;
use proxy_common::{
    net::{addr_to_map, port_to_map},
    Session, SessionKey,
};
use tokio::runtime::Runtime;

use super::topology::{ingress_ip, MultiIngress};
use crate::{
    agent::Agent,
    scenario::wait_for,
    sim::{
        player::{self, PlayerConfig, Players},
        shard::{self, ShardConfig, ShardHandle},
    },
};

pub const SECRET: &str = "ha-node-secret-0123456789";
pub const PEER_PORT: u16 = 7101;
pub const METRICS_PORT: u16 = 9477;

pub struct HaCluster {
    pub rt: Runtime,
    pub shards: Vec<ShardHandle>,
    pub games: Vec<Agent>,
    /// Per ingress node; None once killed.
    pub ingress: Vec<Option<Agent>>,
    /// The shards part of every agent's config.
    pub shards_yaml: String,
}

/// An ingress agent's config on node `i` of `nodes`.
pub fn ingress_yaml(i: usize, nodes: usize, shards_yaml: &str, extra: &str) -> String {
    let peers: Vec<String> = (0..nodes).map(|n| format!("{}:{PEER_PORT}", ingress_ip(n))).collect();
    format!(
        "role: ingress\ninterfaces: [eth0]\nmetrics_listen: 0.0.0.0:{METRICS_PORT}\nnode_secret: {SECRET}\n\
         peers:\n  node_name: in{}\n  listen: {}:{PEER_PORT}\n  nodes: [{}]\n  join_timeout_ms: 3000\n{extra}{shards_yaml}",
        i + 1,
        ingress_ip(i),
        peers.join(", ")
    )
}

impl HaCluster {
    /// Shards with `roles` (one per pod), game agents, and ingress agents on
    /// every ingress node; returns once every ingress agent is ready.
    pub fn start(net: &MultiIngress, roles: &[&str], capacity: u32, extra: &str) -> Result<HaCluster> {
        let shards_yaml = net.shards_yaml(roles, capacity);
        let shards = (0..roles.len())
            .map(|p| {
                let cfg = ShardConfig { name: format!("s{}", p + 1), max_players: 1000, seed: 3000 + p as u32 };
                Ok(shard::spawn(net.pod_socket(p)?, cfg))
            })
            .collect::<Result<Vec<_>>>()?;
        let nodes = net.ingress.len();
        let reports: Vec<String> = (0..nodes).map(|n| format!("{}:{METRICS_PORT}", ingress_ip(n))).collect();
        let game_yaml =
            format!("role: return\ningress_agents: [{}]\nnode_secret: {SECRET}\n{shards_yaml}", reports.join(", "));
        let games = net.games.iter().map(|g| Agent::start(g, &game_yaml)).collect::<Result<Vec<_>>>()?;
        let ingress = (0..nodes)
            .map(|i| Agent::start(&net.ingress[i], &ingress_yaml(i, nodes, &shards_yaml, extra)).map(Some))
            .collect::<Result<Vec<_>>>()?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let c = HaCluster { rt, shards, games, ingress, shards_yaml };
        c.wait_ready(Duration::from_secs(60));
        Ok(c)
    }

    /// The live ingress agents.
    pub fn live(&self) -> impl Iterator<Item = &Agent> {
        self.ingress.iter().flatten()
    }

    pub fn status(agent: &Agent) -> serde_json::Value {
        agent.request(&Request::Status).unwrap_or_default()
    }

    pub fn wait_ready(&self, timeout: Duration) {
        wait_for("every ingress agent ready", timeout, || {
            self.live().all(|a| Self::status(a)["agent"]["ready"] == true)
        });
    }

    /// Waits until every live ingress agent holds `n` established sessions.
    pub fn wait_established_everywhere(&self, n: u64, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let counts: Vec<u64> =
                self.live().map(|a| Self::status(a)["totals"]["established"].as_u64().unwrap_or(0)).collect();
            if counts.iter().all(|&c| c == n) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "established sessions per ingress node {counts:?}, want {n} on each"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn players(&self, net: &MultiIngress, count: usize, rate_hz: f64) -> Result<Players> {
        let mut cfg = PlayerConfig::new(net.vip(), Duration::from_secs(300));
        cfg.reconnect_after = Duration::from_millis(1500);
        cfg.rate_hz = rate_hz;
        let sockets = net.player_sockets(count)?;
        self.rt.block_on(async { player::start(sockets, &cfg) })
    }

    /// SIGKILLs ingress node `i`'s agent (its data plane keeps forwarding
    /// until the node's links go down too).
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        if let Some(mut a) = self.ingress[i].take() {
            a.kill()?;
        }
        Ok(())
    }

    /// Every agent's log, for a failure message.
    pub fn logs(&self) -> String {
        self.live().chain(&self.games).map(|a| a.log_text()).collect::<Vec<_>>().join("\n-----\n")
    }
}

/// `n` sessions written into node `agent`'s SESSIONS behind its back, on
/// shard `shard` (its home group there), fresh: as if `n` players played.
pub fn fill_sessions(agent: &Agent, shard: &str, n: u32) {
    let st = HaCluster::status(agent);
    let s = st["shards"].as_array().unwrap().iter().find(|s| s["name"] == shard).unwrap();
    let group = s["home_group"].as_u64().unwrap() as u32;
    let mut tables = agent.tables().unwrap();
    let epoch = tables.read_groups().unwrap()[group as usize].epoch;
    let now = proxy_agent::cluster::now_ns();
    let entries: Vec<(SessionKey, Session)> = (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(198, 19, (i >> 9) as u8, (i >> 1) as u8);
            let key = SessionKey {
                client_addr: addr_to_map(ip.octets()),
                client_port: port_to_map(40_000 + (i & 1) as u16),
                frontend: 0,
            };
            (key, Session { group, epoch, last_seen_ns: now })
        })
        .collect();
    tables.upsert_sessions(&entries).unwrap();
}
