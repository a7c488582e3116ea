//! The whole cluster of the soak, built from the harness's pieces: two
//! ingress nodes behind an ECMP router (`ha::ecmp`), two game nodes with
//! direct server return (a `return` agent each), seven shard processes in
//! pods (five listed: three active, two standby; two GameServers of the
//! stand-in Agones API, `super::agones`, in the same frontend), and the
//! MariaDB that is the account leases' store (and the coordinator's, which
//! an Agones frontend leaves to the Kubernetes Lease).

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Context, Result};
use proxy_agent::leases::{LeaseConfig, LeaseStore};
use tokio::runtime::Runtime;

use super::{agones::Agones, shards::ShardProc};
use crate::{
    agent::{agent_bin, Agent},
    dsr::pod_ip,
    ha::{
        cluster::{ingress_yaml, METRICS_PORT, SECRET},
        ecmp::Ecmp,
        topology::ingress_ip,
    },
    mariadb::MariaDb,
};

pub const NODES: usize = 2;
/// Pod `p` runs on game node `POD_GAME[p]`; shard `s{p+1}`, listed with
/// `ROLES[p]`, or past them a GameServer (`agones::PODS`).
pub const POD_GAME: [usize; 7] = [0, 1, 0, 1, 0, 1, 0];
pub const ROLES: [&str; 5] = ["active", "active", "active", "standby", "standby"];
/// Room for every player of a run on one shard: failovers merge groups, and
/// a failover that fits nowhere is parked (correctly), not a fault of the soak's.
pub const CAPACITY: u32 = 1000;
pub const SHARD_SECRET: &str = "soak-shard-secret-0123456789";
pub const LEASE_SECONDS: u32 = 8;
/// Player addresses in the client namespace.
pub const CLIENT_IPS: usize = 40;

pub struct Cluster {
    pub net: Ecmp,
    pub db: MariaDb,
    pub shards: Vec<ShardProc>,
    pub games: Vec<Agent>,
    /// Per ingress node; a node that is down keeps its `Agent` (stopped).
    pub ingress: Vec<Agent>,
    pub ingress_up: Vec<bool>,
    pub rt: Runtime,
    pub leases: LeaseStore,
    pub agones: Agones,
}

pub fn shard_name(p: usize) -> String {
    format!("s{}", p + 1)
}

fn ingress_extra(db: &MariaDb) -> String {
    format!(
        "shard_secret: {SHARD_SECRET}\ncoordinator:\n  database: \"{url}\"\n  lease_ms: 1500\n\
         leases:\n  database: \"{url}\"\n  lease_seconds: {LEASE_SECONDS}\n  connect_timeout_ms: 2000\n",
        url = db.socket_url()
    )
}

impl Cluster {
    pub fn build() -> Result<Cluster> {
        let db = MariaDb::start().context("starting MariaDB")?;
        let net = Ecmp::build(NODES, &POD_GAME, CLIENT_IPS)?;
        // A pod's own requests to the ingress nodes (area transfers) keep the
        // pod's address, as inside a Kubernetes cluster network.
        for g in &net.net.games {
            g.exec("nft", &["insert", "rule", "ip", "nat", "post", "ip", "daddr", "198.18.1.0/24", "return"])?;
        }
        let shards = (0..POD_GAME.len())
            .map(|p| ShardProc::spawn(&net.net.pods[p], &shard_name(p)))
            .collect::<Result<Vec<_>>>()?;
        // One frontend: the listed shards and the Agones GameServers.
        let shards_yaml = net.net.shards_yaml(&ROLES, CAPACITY).replacen(
            "\nshards:\n",
            &format!("\n{}shards:\n", Agones::frontend_yaml()),
            1,
        );
        let every_ns: Vec<_> = net.net.ingress.iter().chain(&net.net.games).collect();
        let agones = Agones::start(&every_ns)?;
        let reports: Vec<String> = (0..NODES).map(|n| format!("{}:{METRICS_PORT}", ingress_ip(n))).collect();
        let games = net
            .net
            .games
            .iter()
            .enumerate()
            .map(|(g, ns)| {
                let yaml = format!(
                    "role: return\ningress_agents: [{}]\nnode_secret: {SECRET}\n{}{shards_yaml}",
                    reports.join(", "),
                    agones.yaml(ns, &format!("game{}", g + 1))
                );
                Agent::start(ns, &yaml)
            })
            .collect::<Result<Vec<_>>>()?;
        let extra = ingress_extra(&db);
        let ingress = (0..NODES)
            .map(|i| {
                let ns = &net.net.ingress[i];
                let extra = format!("{extra}{}", agones.yaml(ns, &format!("in{}", i + 1)));
                Agent::start(ns, &ingress_yaml(i, NODES, &shards_yaml, &extra))
            })
            .collect::<Result<Vec<_>>>()?;
        migrate_schema(&ingress[0])?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let cfg = LeaseConfig { database: Some(db.url()), lease_seconds: LEASE_SECONDS, connect_timeout_ms: 2000 };
        let leases = rt.block_on(LeaseStore::connect(&cfg)).context("the gamemodes' lease store")?;
        let c = Cluster { net, db, shards, games, ingress, ingress_up: vec![true; NODES], rt, leases, agones };
        c.wait_ready(Duration::from_secs(60))?;
        Ok(c)
    }

    /// The live ingress agents, with their node index.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Agent)> {
        self.ingress.iter().enumerate().filter(|(i, _)| self.ingress_up[*i])
    }

    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.live().all(|(_, a)| status(a)["agent"]["ready"] == true) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "ingress agents not ready after {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The HTTP address of ingress node `i`'s agent (area transfers).
    pub fn http_of(&self, i: usize) -> SocketAddrV4 {
        SocketAddrV4::new(ingress_ip(i), METRICS_PORT)
    }

    pub fn shard_index(name: &str) -> Option<usize> {
        name.strip_prefix('s')?.parse::<usize>().ok()?.checked_sub(1)
    }

    pub fn pod_ip_of(name: &str) -> Option<std::net::Ipv4Addr> {
        Self::shard_index(name).map(pod_ip)
    }
}

pub fn status(agent: &Agent) -> serde_json::Value {
    agent.request(&proxy_agent::protocol::Request::Status).unwrap_or_default()
}

/// The lease schema, by the agent's own command (as an operator does once).
fn migrate_schema(agent: &Agent) -> Result<()> {
    let out = std::process::Command::new(agent_bin())
        .args(["db", "migrate", "--config"])
        .arg(&agent.config_path)
        .env_remove(proxy_agent::leases::DATABASE_ENV)
        .output()?;
    anyhow::ensure!(out.status.success(), "db migrate: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
