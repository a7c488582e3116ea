//! `cargo xtask bench ingress`: several ingress nodes sharing one cluster
//! (issue 20), each figure beside a baseline measured in the same run.
//!
//! 1. Replication lag (a change here -> in the peer's maps, from the
//!    acknowledgements) while players join at a steady rate, beside the
//!    health probes' round trip on the same network; agent CPU per 1,000
//!    changes sent (node 1) and applied (node 2), beside the same agents'
//!    CPU over an equal time with the players idle; bytes per record.
//! 2. Snapshot: a node restarted empty while N sessions exist, until it is
//!    ready, beside the same restart with no sessions.
//! 3. The worst player gap when an ingress node dies behind ECMP, beside
//!    the time the router took to learn of it (the withdrawal).
//! 4. The coordinator's takeover (MariaDB): the decider's agent killed ->
//!    another decides, beside the configured lease.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use tests::{
    agent::Agent,
    ha::{
        cluster::{fill_sessions, ingress_yaml, HaCluster},
        ecmp::Ecmp,
    },
    mariadb::MariaDb,
    scenario::wait_for,
    sim::{clock_ms, player::Players},
};

#[derive(clap::Args)]
pub struct IngressArgs {
    /// Players joining per second (part 1).
    #[arg(long, default_value_t = 1000)]
    pub join_rate: u32,
    /// Seconds they join for (three shards hold 3,000 players).
    #[arg(long, default_value_t = 2.5)]
    pub join_seconds: f64,
    /// Sessions that exist when a node rejoins empty (part 2).
    #[arg(long, default_value_t = 100_000)]
    pub sessions: u32,
    /// Ingress-node deaths to time (part 3).
    #[arg(long, default_value_t = 3)]
    pub deaths: usize,
}

fn cpu_ms(agent: &Agent) -> f64 {
    let pid = agent.pid().unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15; after the name, 12th and 13th numbers.
    f.get(10..12).map_or(0.0, |t| (t[0] + t[1]) as f64 * 10.0)
}

fn outbound(agent: &Agent) -> Value {
    HaCluster::status(agent)["agent"]["peers"]["outbound"][0].clone()
}

/// Starts `count` players, `rate` a second, each sending once a second.
fn join(c: &HaCluster, net: &Ecmp, count: usize, rate: u32) -> Result<Vec<Players>> {
    let per_tick = (rate as usize / 20).max(1);
    let mut all = Vec::new();
    let started = Instant::now();
    for (i, chunk) in (0..count).collect::<Vec<_>>().chunks(per_tick).enumerate() {
        let due = started + Duration::from_millis(50 * i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        all.push(c.players(&net.net, chunk.len(), 1.0)?);
    }
    Ok(all)
}

fn part_lag(args: &IngressArgs) -> Result<()> {
    let net = Ecmp::build(2, &[0, 1, 1], 250)?;
    // Unpaced handshakes: this part measures replication, not the pacer.
    let c = HaCluster::start(&net.net, &["active", "active", "active"], 1000, "handshake_rate: 0\n")?;
    let count = ((args.join_rate as f64 * args.join_seconds) as usize).min(3000);
    let (a, b) = (c.ingress[0].as_ref().unwrap(), c.ingress[1].as_ref().unwrap());
    let (a0, b0, sent0) = (cpu_ms(a), cpu_ms(b), outbound(a)["sent_records"].as_u64().unwrap_or(0));
    let t0 = Instant::now();
    let players = join(&c, &net, count, args.join_rate)?;
    let expected = count as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while HaCluster::status(b)["totals"]["established"].as_u64().unwrap_or(0) < expected {
        anyhow::ensure!(Instant::now() < deadline, "not every player reached node 2's maps");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t0.elapsed();
    let (a1, b1) = (cpu_ms(a), cpu_ms(b));
    let oa = outbound(a);
    let ob = outbound(b);
    let records = oa["sent_records"].as_u64().unwrap_or(0) - sent0 + ob["sent_records"].as_u64().unwrap_or(0);
    // The same time with the same players idle: the baseline CPU.
    std::thread::sleep(Duration::from_millis(200));
    let (ia, ib) = (cpu_ms(a), cpu_ms(b));
    std::thread::sleep(took);
    let (ia, ib) = (cpu_ms(a) - ia, cpu_ms(b) - ib);
    let rtt = HaCluster::status(a)["agent"]["probe_rtt"].clone();
    let probe_ms = rtt["sum"].as_f64().unwrap_or(0.0) / rtt["count"].as_f64().unwrap_or(1.0) * 1000.0;
    let p = |o: &Value, k: &str| o[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "ingress 1: {count} players joining at {}/s over {:.1} s, two ingress nodes",
        args.join_rate,
        took.as_secs_f64()
    );
    for (name, o) in [("node 1 -> node 2", &oa), ("node 2 -> node 1", &ob)] {
        println!(
            "  lag {name}: p50 {:.2} ms, p99 {:.2} ms (goal p99 <= 50 ms); {:.1}x and {:.1}x a health probe's round trip ({probe_ms:.2} ms)",
            p(o, "lag_p50_ms"),
            p(o, "lag_p99_ms"),
            p(o, "lag_p50_ms") / probe_ms,
            p(o, "lag_p99_ms") / probe_ms
        );
    }
    let per_k = |ms: f64| ms / (records.max(1) as f64 / 1000.0);
    println!(
        "  agent CPU per 1,000 changes: node 1 {:.1} ms, node 2 {:.1} ms ({records} changes); idle baseline over the same {:.1} s: {ia:.0} ms and {ib:.0} ms (joining: {:.0} and {:.0} ms)",
        per_k(a1 - a0),
        per_k(b1 - b0),
        took.as_secs_f64(),
        a1 - a0,
        b1 - b0
    );
    let bytes = oa["sent_bytes"].as_f64().unwrap_or(0.0) / oa["sent_records"].as_f64().unwrap_or(1.0).max(1.0);
    println!(
        "  bytes per replicated session: {bytes:.1} on the wire (record {} B; frames of up to 4,096 records, 45 B each)",
        proxy_agent::peers::record::SESSION_BYTES
    );
    for p in players {
        p.stop();
    }
    Ok(())
}

/// Restarts node 2 with empty maps; (seconds until ready, the snapshot's ms).
fn rejoin(c: &mut HaCluster, net: &Ecmp, extra: &str) -> Result<(f64, f64)> {
    c.kill_agent(1)?;
    let t0 = Instant::now();
    let b = Agent::start(&net.net.ingress[1], &ingress_yaml(1, 2, &c.shards_yaml, extra))?;
    wait_for("node 2 ready", Duration::from_secs(120), || HaCluster::status(&b)["agent"]["ready"] == true);
    let ready = t0.elapsed().as_secs_f64();
    c.ingress[1] = Some(b);
    let a = c.ingress[0].as_ref().unwrap();
    wait_for("node 1's snapshot acknowledged", Duration::from_secs(30), || outbound(a)["last_snapshot_ms"].is_f64());
    Ok((ready, outbound(a)["last_snapshot_ms"].as_f64().unwrap_or(f64::NAN)))
}

fn part_snapshot(args: &IngressArgs) -> Result<()> {
    let net = Ecmp::build(2, &[0, 1], 4)?;
    let extra = "session_idle_timeout_ms: 600000\n";
    let mut c = HaCluster::start(&net.net, &["active", "active"], 1000, extra)?;
    let (empty_ready, empty_ms) = rejoin(&mut c, &net, extra)?;
    fill_sessions(c.ingress[0].as_ref().unwrap(), "s1", args.sessions);
    let want = args.sessions as u64;
    wait_for("node 1 indexing them", Duration::from_secs(30), || {
        HaCluster::status(c.ingress[0].as_ref().unwrap())["totals"]["established"].as_u64() == Some(want)
    });
    let (ready, ms) = rejoin(&mut c, &net, extra)?;
    let held = HaCluster::status(c.ingress[1].as_ref().unwrap())["totals"]["established"].as_u64().unwrap_or(0);
    println!("ingress 2: a node restarted with empty maps while {want} sessions exist");
    println!(
        "  ready after {ready:.2} s holding {held}; the snapshot took {ms:.0} ms into its maps (goal <= 2 s); baseline with no sessions: ready after {empty_ready:.2} s, snapshot {empty_ms:.1} ms ({:.2}x the ready time)",
        ready / empty_ready
    );
    Ok(())
}

fn part_death(args: &IngressArgs) -> Result<()> {
    let mut gaps = Vec::new();
    for _ in 0..args.deaths {
        let mut net = Ecmp::build(3, &[0, 1], 100)?;
        let mut c = HaCluster::start(&net.net, &["active", "active"], 200, "")?;
        let players = c.players(&net.net, 150, 30.0)?;
        wait_for("players", Duration::from_secs(60), || {
            players.snapshot().iter().all(|p| p.connected && p.received >= 5)
        });
        c.wait_established_everywhere(150, Duration::from_secs(20));
        players.reset_gaps();
        let t0 = Instant::now();
        c.kill_agent(0)?;
        net.net.kill_node(0)?;
        std::thread::sleep(Duration::from_millis(300));
        net.withdraw(0)?;
        let detected = t0.elapsed().as_millis() as u64;
        wait_for("every player echoed again", Duration::from_secs(10), || {
            players.snapshot().iter().all(|p| p.last_echo_ms.is_some_and(|t| t + 200 > clock_ms()))
        });
        std::thread::sleep(Duration::from_millis(500));
        let s = players.snapshot();
        let worst = s.iter().map(|p| p.max_gap_ms).max().unwrap_or(0);
        let reconnects: u32 = s.iter().map(|p| p.connects - 1).sum();
        gaps.push((worst, detected, reconnects));
        players.stop();
    }
    println!(
        "ingress 3: an ingress node dies behind ECMP (agent SIGKILLed, links down, next hop withdrawn 300 ms later)"
    );
    for (worst, detected, reconnects) in gaps {
        println!(
            "  worst player gap {worst} ms = the router's {detected} ms + {} ms (goal <= 100 ms, players send every 33 ms); reconnects {reconnects}",
            worst as i64 - detected as i64
        );
    }
    println!("  (VRRP: `cargo test --release -p tests --test e2e_ingress_ha -- --nocapture vrrp` prints keepalived's takeover and the worst gap)");
    Ok(())
}

fn part_takeover() -> Result<()> {
    let db = MariaDb::start()?;
    let net = Ecmp::build(2, &[0, 1], 4)?;
    let lease_ms = 2000;
    let extra = format!("coordinator:\n  database: \"{}\"\n  lease_ms: {lease_ms}\n", db.socket_url());
    let mut c = HaCluster::start(&net.net, &["active", "active"], 200, &extra)?;
    let deciding = |a: &Agent| HaCluster::status(a)["agent"]["coordinator"]["deciding"] == true;
    wait_for("a decider", Duration::from_secs(30), || c.live().any(deciding));
    let decider = c.live().position(deciding).context("a decider")?;
    let t0 = Instant::now();
    c.kill_agent(decider)?;
    wait_for("a new decider", Duration::from_secs(30), || c.live().any(deciding));
    let took = t0.elapsed().as_millis();
    println!("ingress 4: the coordinator (MariaDB): the decider's agent killed -> the other decides after {took} ms ({:.2}x the {lease_ms} ms lease; its last renewal was up to a third of it before the kill)", took as f64 / lease_ms as f64);
    println!("  (the Kubernetes Lease: `cargo xtask bench failover` times a killed Agones decider's replacement)");
    drop(db);
    Ok(())
}

pub fn run(args: &IngressArgs) -> Result<()> {
    part_lag(args)?;
    part_snapshot(args)?;
    part_death(args)?;
    part_takeover()
}
