//! A running cluster for end-to-end tests: the topology, one simulated shard
//! per shard namespace, the agent, and a tokio runtime for players.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::runtime::Runtime;

use crate::{
    agent::Agent,
    sim::{
        player::{self, PlayerConfig, PlayerStats, Players},
        shard::{self, ShardConfig, ShardHandle, ShardStats},
    },
    topology::Topology,
};

pub struct Scenario {
    pub rt: Runtime,
    pub agent: Agent,
    pub shards: Vec<ShardHandle>,
    pub topo: Topology,
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Scenario {
    /// `shard_count` shard namespaces with simulated shards; the agent runs
    /// with the config `yaml` makes (see `Topology::config_of`).
    pub fn start(shard_count: usize, yaml: impl FnOnce(&Topology) -> String) -> Result<Scenario> {
        Self::start_as(shard_count, shard::Server::OpenMp, yaml)
    }

    /// As `start`, with shards playing `server`.
    pub fn start_as(
        shard_count: usize,
        server: shard::Server,
        yaml: impl FnOnce(&Topology) -> String,
    ) -> Result<Scenario> {
        let topo = Topology::build(shard_count, 4)?;
        let shards = (0..shard_count)
            .map(|i| {
                let cfg = ShardConfig { name: format!("s{}", i + 1), max_players: 1000, seed: 1000 + i as u32 };
                Ok(shard::spawn_as(topo.shard_socket(i)?, cfg, server))
            })
            .collect::<Result<Vec<_>>>()?;
        let agent = Agent::start(&topo.proxy, &yaml(&topo))?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok(Scenario { rt, agent, shards, topo })
    }

    /// Player settings for a test: long-lived, game rate, and a reconnect
    /// delay short enough for tests (the real client waits longer).
    pub fn player_config(&self) -> PlayerConfig {
        let mut cfg = PlayerConfig::new(self.topo.vip(), Duration::from_secs(300));
        cfg.reconnect_after = Duration::from_millis(1500);
        cfg
    }

    pub fn players(&self, count: usize, cfg: &PlayerConfig) -> Result<Players> {
        let sockets = self.topo.player_sockets(count)?;
        self.rt.block_on(async { player::start(sockets, cfg) })
    }

    pub fn shard_stats(&self, i: usize) -> ShardStats {
        self.shards[i].stats()
    }

    /// Game packets shard `i` has echoed for one client address.
    pub fn packets_at(&self, i: usize, client: &str) -> u64 {
        self.shard_stats(i).clients.get(client).map(|c| c.packets).unwrap_or(0)
    }

    /// Stops the players and waits until every game packet each one sent
    /// has reached the shard it plays on (shards are named `s1`, `s2`, ...).
    pub fn assert_every_packet_arrived(&self, players: &Players) {
        players.stop();
        std::thread::sleep(Duration::from_millis(100));
        let stats = players.snapshot();
        wait_for("every game packet at its shard", Duration::from_secs(5), || {
            stats.iter().all(|p| {
                let shard = p.current_shard().unwrap();
                let i: usize = shard[1..].parse::<usize>().unwrap() - 1;
                self.packets_at(i, &p.local) == p.sent
            })
        });
    }

    /// Waits until every player is connected and has had `echoes` echoes.
    pub fn wait_playing(players: &Players, echoes: u64) {
        wait_for("players to connect", Duration::from_secs(60), || players.snapshot().iter().all(|p| p.connected));
        wait_for("echoes", Duration::from_secs(60), || players.snapshot().iter().all(|p| p.received >= echoes));
    }
}

/// Players grouped by the shard they are on now.
pub fn on_shard<'a>(stats: &'a [PlayerStats], shard: &str) -> Vec<&'a PlayerStats> {
    stats.iter().filter(|p| p.current_shard() == Some(shard)).collect()
}
