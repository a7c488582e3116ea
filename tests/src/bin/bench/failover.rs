//! `cargo xtask bench failover`: how long a dead shard's players wait.
//!
//! Part 1, shard death -> its group repointed in the data plane (the GROUPS
//! entry of the dead shard's home group changes; read from the pinned map),
//! p50/max over repeated runs, for each way a shard dies:
//! - its process crashed while its host lives (the socket is closed: the
//!   shard's kernel answers port unreachable, seen by the data plane and by
//!   the probes);
//! - its host went silent (nothing answers: the miss-count path);
//! - its GameServer was deleted (Agones columns only).
//!
//! Each beside each: a listed standby (no Kubernetes), and Agones with the
//! stand-in API server answering allocations after 50 ms and after 200 ms
//! (a fresh GameServer is allocated for every failover); and two agent
//! replicas with one decider (the follower repoints when the decider's
//! record reaches it through its watch).
//!
//! Part 2, with players: death -> repoint, each player's reconnect handshake
//! -> its arrival at the standby, and death -> every player back.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tests::{
    agent::Agent,
    agones,
    kube_api::KubeApi,
    scenario::{wait_for, Scenario},
};

/// How a shard dies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Death {
    Crash,
    Silent,
    Deleted,
}

impl Death {
    fn label(self) -> &'static str {
        match self {
            Death::Crash => "process crashed (port unreachable)",
            Death::Silent => "host silent (3 missed probes)",
            Death::Deleted => "GameServer deleted",
        }
    }
}

/// Where the players go.
#[derive(Clone, Copy)]
enum Setup {
    Standby,
    Agones { delay_ms: u64, replicas: usize },
}

/// The dead shard's home group and backend, from the agent's status.
fn home_of(agent: &Agent, shard: &str) -> Result<(u32, u32)> {
    let st = agent.request(&proxy_agent::protocol::Request::Status)?;
    let s = st["shards"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == shard))
        .with_context(|| format!("no shard {shard} in the status"))?;
    let n = |v: &Value| v.as_u64().map(|x| x as u32).context("a number");
    Ok((n(&s["home_group"])?, n(&s["backend"])?))
}

fn shard_up(agent: &Agent, shard: &str) -> bool {
    agent.request(&proxy_agent::protocol::Request::Status).is_ok_and(|st| {
        st["shards"].as_array().is_some_and(|l| l.iter().any(|s| s["name"] == shard && s["health"] == "up"))
    })
}

/// One run: the time from the death of s1 to its group repointed, on every
/// replica (the slowest).
fn run(setup: Setup, death: Death) -> Result<Duration> {
    let mut api: Option<KubeApi> = None;
    let mut scenarios = Vec::new();
    match setup {
        Setup::Standby => {
            scenarios.push(Scenario::start(3, |t| t.config_of(&[(0, 1000, "active"), (1, 1000, "standby")], ""))?)
        }
        Setup::Agones { delay_ms, replicas } => {
            let (sc, k) = agones::scenario(&["Allocated", "Ready", "Ready"], "replica-0", "")?;
            k.set_allocation_delay(Duration::from_millis(delay_ms));
            scenarios.push(sc);
            for r in 1..replicas {
                scenarios.push(agones::replica(&k, 3, &format!("replica-{r}"), "")?);
            }
            api = Some(k);
        }
    }
    for sc in &scenarios {
        wait_for("s1 up", Duration::from_secs(20), || shard_up(&sc.agent, "s1"));
    }
    if let Some(k) = &api {
        wait_for("a decider", Duration::from_secs(10), || {
            k.lease(agones::LEASE_NS, agones::LEASE).is_some_and(|l| l["spec"]["holderIdentity"].is_string())
        });
    }
    // Players at a game's rate: a crash is seen first through their packets.
    let mut all_players = Vec::new();
    for sc in &scenarios {
        let mut cfg = sc.player_config();
        cfg.rate_hz = 30.0;
        let players = sc.players(10, &cfg)?;
        Scenario::wait_playing(&players, 3);
        all_players.push(players);
    }
    let watched: Vec<_> =
        scenarios.iter().map(|sc| Ok((home_of(&sc.agent, "s1")?, sc.agent.tables()?))).collect::<Result<Vec<_>>>()?;
    let mut died = Instant::now();
    for sc in &mut scenarios {
        match death {
            // The socket closes when the shard's thread ends: the crash.
            Death::Crash => {
                sc.shards[0].stop();
                died = Instant::now();
            }
            Death::Silent => sc.shards[0].set_muted(true),
            Death::Deleted => {}
        }
    }
    if death == Death::Deleted {
        api.as_ref().context("GameServer deletion needs Agones")?.delete_gameserver(agones::NS, "s1")?;
    }
    let mut slowest = Duration::ZERO;
    for ((group, backend), tables) in &watched {
        loop {
            if tables.groups.get(group, 0)?.backend != *backend {
                slowest = slowest.max(died.elapsed());
                break;
            }
            if died.elapsed() > Duration::from_secs(30) {
                bail!("group not repointed within 30 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    for p in &all_players {
        p.stop();
    }
    Ok(slowest)
}

fn p50_max(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("{:.0} / {:.0}", ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

pub fn matrix(runs: usize, delays: &[u64]) -> Result<()> {
    println!("failover: shard death -> its group repointed, ms p50 / max over {runs} runs; default health settings");
    let mut columns: Vec<(String, Setup)> = vec![("listed standby".into(), Setup::Standby)];
    for &d in delays {
        columns.push((format!("agones, API {d} ms"), Setup::Agones { delay_ms: d, replicas: 1 }));
    }
    if let Some(&d) = delays.first() {
        columns.push((format!("2 replicas, API {d} ms"), Setup::Agones { delay_ms: d, replicas: 2 }));
    }
    print!("{:<36}", "death");
    for (name, _) in &columns {
        print!(" {name:>22}");
    }
    println!();
    for death in [Death::Crash, Death::Silent, Death::Deleted] {
        print!("{:<36}", death.label());
        for (_, setup) in &columns {
            if death == Death::Deleted && matches!(setup, Setup::Standby) {
                print!(" {:>22}", "-");
                continue;
            }
            let times = (0..runs).map(|_| run(*setup, death)).collect::<Result<Vec<_>>>()?;
            print!(" {:>22}", p50_max(times));
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
        println!();
    }
    println!("  repointed = the dead shard's home group points elsewhere in the pinned GROUPS map (on every replica);");
    println!(
        "  agones: a fresh GameServer is allocated each time; 2 replicas: the slower of the decider and the follower."
    );
    Ok(())
}
