//! `cargo xtask bench agent`: see `agent.rs`.
//!
//! `cargo xtask bench migrate`: see `migrate` below.
//!
//! `cargo xtask bench sites`: see `sites.rs`.
//!
//! `cargo xtask bench fastpath`: per-packet cost of the data plane through
//! BPF_PROG_TEST_RUN, beside a bare XDP_PASS program measured in the same run.
//!
//! The kernel does not restore the packet between repeats of one test run,
//! and our program rewrites it, so a naive `repeat` would measure the
//! rewritten packet's path. Two methods, both printed:
//!
//! * warm (`repeat` = 200): the bench makes the rewrite a fixed point — the
//!   shard's address is the VIP itself (ingress) and the VIP is registered as
//!   a shard (return) — and starts the packet at TTL 255, so all 200 repeats
//!   run the full hit path (lookups, checksum updates, TTL, MACs, redirect)
//!   with warm caches, as under load. Only bench maps are bent; code is the same.
//! * cold (`repeat` = 1, one syscall per packet): needed for placement, where
//!   every packet must come from a new player. Caches are cold between calls,
//!   and the kernel's per-call timer overhead is in both columns.
//!
//! Case and baseline calls alternate, so machine drift hits both alike; the
//! figure is the median over all calls.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use aya::programs::{TestRun, TestRunOptions};
use clap::{Parser, Subcommand};
use proxy_agent::{
    batch,
    cluster::{ClientSelector, Cluster},
    config,
    dataplane::Dataplane,
    tables::Tables,
};
use proxy_common::{
    net::{addr_to_map, port_to_map},
    Backend, Reverse, Session, SessionKey,
};
use tests::{
    bed::*,
    packet::Udp,
    pins::PinDir,
    scenario::{wait_for, Scenario},
};

mod agent;
mod e2e;
mod failover;
mod ingress;
mod memory;
mod query;
mod sites;
mod tunnel;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// ns per packet: established hit, placement, return path.
    Fastpath {
        /// Test-run calls per case (each alternated with a baseline call).
        #[arg(long, default_value_t = 5_000)]
        calls: u32,
        /// Players (and return-path clients) of the spread rows, at least 4,000.
        #[arg(long, default_value_t = 100_000)]
        spread: usize,
    },
    /// Failover with default settings: shard death to group repointed, and
    /// each player's reconnect handshake to its arrival at the standby.
    Failover {
        /// Runs of each death x setup (part 1).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The stand-in API's allocation delays, one Agones column each.
        #[arg(long, value_delimiter = ',', default_value = "50,200")]
        api_delays_ms: Vec<u64>,
        /// Player counts to run, one scenario each (part 2).
        #[arg(long, value_delimiter = ',', default_value = "50,500")]
        players: Vec<usize>,
        /// Silence after which a simulated client reconnects.
        #[arg(long, default_value_t = 1500)]
        reconnect_ms: u64,
    },
    /// The agent's own costs (status, scrape, migrate --from, idle CPU) at
    /// 1,000 and 100,000 sessions, optionally beside a baseline build.
    Agent {
        #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
        sessions: Vec<usize>,
        /// Another proxy-agent binary to measure first, for the ratio.
        #[arg(long)]
        baseline_agent: Option<std::path::PathBuf>,
        /// Timed `status` requests and scrapes per size (`migrate --from`: a third, at least 2).
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Seconds the idle agent's CPU is read over.
        #[arg(long, default_value_t = 10.0)]
        idle_seconds: f64,
        /// The agent's session_idle_timeout_ms; its full scans run every half of it (0.5-10 s).
        #[arg(long, default_value_t = IDLE_TIMEOUT_MS)]
        idle_timeout_ms: u64,
    },
    /// ns per query answered in the kernel beside XDP_PASS, and queries per
    /// second answered by the kernel path vs a user-space responder.
    Query {
        #[arg(long, default_value_t = 5_000)]
        calls: u32,
        /// Seconds each path is driven on the topology.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Offered queries per second on the topology (below where veth drops).
        #[arg(long, default_value_t = 20_000)]
        rate: u32,
    },
    /// Kernel memory of the session tables for 1 M sessions, and the agent's RSS.
    Memory {
        /// Sessions SESSIONS is sized for and filled with (the agent's `max_sessions`).
        #[arg(long, default_value_t = 1 << 20)]
        sessions: u32,
        /// Sessions indexed by the agent, one RSS reading each, ascending.
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        agent_sessions: Vec<usize>,
        /// The agent's session_idle_timeout_ms; its full scans run every half of it (0.5-10 s).
        #[arg(long, default_value_t = IDLE_TIMEOUT_MS)]
        idle_timeout_ms: u64,
    },
    /// The same player traffic through routing, ours (XDP), nftables DNAT and
    /// a userspace relay: loss-free pps, CPU per packet over routing, latency.
    E2e(e2e::E2eArgs),
    /// Several ingress nodes: replication lag, CPU and bytes per change, a
    /// rejoining node's snapshot, an ingress node's death, the coordinator's takeover.
    Ingress(ingress::IngressArgs),
    /// Shards in another data centre: tunnel vs direct round trip, cross-site failover.
    Sites(sites::SitesArgs),
    /// Time to apply migrations of 1, 100 and 1000 sessions and of a whole group.
    Migrate {
        /// Runs per size; the median is printed.
        #[arg(long, default_value_t = 30)]
        runs: usize,
    },
}

const WARM_REPEAT: u32 = 200;
/// The agent's idle timeout in the agent and memory benches by default: no
/// session they write expires during a run. A shorter one (`--idle-timeout-ms`)
/// makes the agent scan, and so index what the bench wrote, sooner (every half
/// of it, 0.5-10 s); the sessions are then dated ahead, so they still stay
/// fresh for this long.
pub const IDLE_TIMEOUT_MS: u64 = 600_000;
/// Players of the fastpath's "4k spread" row.
const FEW: usize = 4_000;

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Row {
    name: &'static str,
    method: &'static str,
    ns: u64,
    baseline: u64,
}

/// Runs `frames(i)` through the data plane and the baseline, alternating.
fn measure(
    bed: &Bed,
    name: &'static str,
    calls: u32,
    repeat: u32,
    expect: u32,
    frames: impl Fn(u32) -> Vec<u8> + Send + Sync,
) -> Result<Row> {
    measure_arriving(bed, name, calls, repeat, expect, None, frames)
}

/// As `measure`, the frames arriving on interface `arrival` when given
/// (else on loopback, the kernel's default).
fn measure_arriving(
    bed: &Bed,
    name: &'static str,
    calls: u32,
    repeat: u32,
    expect: u32,
    arrival: Option<&str>,
    frames: impl Fn(u32) -> Vec<u8> + Send + Sync,
) -> Result<Row> {
    let ifindex = arrival.map(|name| bed.ifindex(name));
    // One thread in the bed's namespace, pinned, runs every call: the data
    // plane's session cache is per CPU, as a real NIC queue's packets are.
    let (ours, base) = bed.ns.run(|| -> Result<(Vec<u64>, Vec<u64>)> {
        pin_to_cpu(0);
        let mut ours = Vec::with_capacity(calls as usize);
        let mut base = Vec::with_capacity(calls as usize);
        let mut out = vec![0u8; 4096];
        let mut run = |prog: &aya::programs::Xdp, f: &[u8]| -> Result<(u32, u64)> {
            let ctx = ifindex.map(|i| xdp_ctx_arriving_on(i, f.len()));
            let opts = TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                ctx_in: ctx.as_deref(),
                repeat,
                ..Default::default()
            };
            let r = prog.test_run(opts)?;
            Ok((r.return_value, r.duration.as_nanos() as u64))
        };
        for i in 0..calls {
            let f = frames(i);
            let (verdict, ns) = run(bed.dp.program(), &f)?;
            if verdict != expect {
                bail!("{name}: call {i} ended with verdict {verdict}, expected {expect}: the bench is not measuring the path it names");
            }
            ours.push(ns);
            base.push(run(bed.dp.baseline(), &f)?.1);
        }
        Ok((ours, base))
    })??;
    let (mut ours, mut base) = (ours, base);
    let method = if repeat == 1 { "cold" } else { "warm" };
    Ok(Row { name, method, ns: median(&mut ours), baseline: median(&mut base) })
}

fn fastpath(calls: u32, spread: usize) -> Result<()> {
    if !(FEW..=SPREAD_ROOM).contains(&spread) {
        bail!("--spread must be {FEW}..={SPREAD_ROOM}");
    }
    // The spread rows' names ("100k spread" by default).
    let label =
        |path: &str| -> &'static str { Box::leak(format!("{path}, {}k spread", spread / 1000).into_boxed_str()) };
    let mut bed = Bed::new()?;
    // Hold both programs in the kernel's XDP dispatcher for the whole run
    // (attached to a veth pair that stays down): otherwise every repeated
    // test run adds the program to the dispatcher and takes it out again,
    // which costs time and leaves caches cold (PLATFORM.md).
    let hold = std::env::var_os("SAMP_BENCH_NO_HOLD").is_none();
    if hold {
        bed.ns.ip(&["link", "add", "hold0", "type", "veth", "peer", "name", "hold1"])?;
        let Bed { ns, dp, .. } = &mut bed;
        ns.run(|| -> Result<()> {
            dp.attach(&["hold0".to_string()], proxy_agent::config::XdpModeName::Driver)?;
            dp.attach_pass("hold1")
        })??;
    }
    let vip = addr_to_map(VIP.octets());
    // Routes for the fixed-point packets: the VIP is reachable via fwd0 and
    // the client via cli0, both with known neighbours.
    bed.ns.ip(&["route", "add", "198.18.100.1/32", "dev", "fwd0"])?;
    bed.ns.ip(&["neigh", "add", "198.18.100.1", "lladdr", "02:00:00:00:50:02", "dev", "fwd0", "nud", "permanent"])?;

    // Established hit: a known player whose shard (bent: at the VIP) is resolved.
    bed.session(CLIENT, 50000, GROUP_C, false);
    bed.tables.backends.set(GROUP_C, Backend { addr: vip, site: 0 }, 0)?;
    let mut hit = Udp::new(CLIENT, 50000, VIP, PORT, &game_packet());
    hit.ttl = 255;
    let hit = hit.frame();
    let hit_warm = measure(&bed, "established hit", calls, WARM_REPEAT, XDP_REDIRECT, |_| hit.clone())?;
    let hit_cold = measure(&bed, "established hit", calls, 1, XDP_REDIRECT, |_| hit.clone())?;
    // A node with one NIC: the shard is reached through the interface the
    // player's packet came in on, so it goes back out with XDP_TX.
    let hit_arm =
        measure_arriving(&bed, "established hit, one arm", calls, WARM_REPEAT, XDP_TX, Some("fwd0"), |_| hit.clone())?;

    // Return: a reply from a "shard" at the VIP, rewritten to come from the VIP.
    let rev = Reverse { vip, port: proxy_common::net::port_to_map(PORT), frontend: 0, backend: GROUP_C };
    bed.tables.reverse.insert(vip, rev, 0)?;
    let mut reply = Udp::new(VIP, PORT, CLIENT, 50000, &[0xE3; 40]);
    reply.ttl = 255;
    let reply = reply.frame();
    let ret_warm = measure(&bed, "return path", calls, WARM_REPEAT, XDP_REDIRECT, |_| reply.clone())?;
    let ret_cold = measure(&bed, "return path", calls, 1, XDP_REDIRECT, |_| reply.clone())?;
    let ret_arm =
        measure_arriving(&bed, "return path, one arm", calls, WARM_REPEAT, XDP_TX, Some("cli0"), |_| reply.clone())?;

    // Spread: 100,000 established players looked up in turn (one packet per
    // call: each call a different player, so the table is walked as under
    // real load, with cache and TLB misses).
    let spread_sessions = players(spread, GROUP_C, bed.group_epoch(GROUP_C));
    batch::update(&bed.tables.sessions, &spread_sessions)?;
    let spread_frames: Vec<Vec<u8>> = spread_sessions
        .iter()
        .map(|(k, _)| {
            let ip = Ipv4Addr::from(proxy_common::net::addr_from_map(k.client_addr));
            let mut u = Udp::new(ip, proxy_common::net::port_from_map(k.client_port), VIP, PORT, &game_packet());
            u.ttl = 255;
            u.frame()
        })
        .collect();
    // Every player's first packet fills its cache entry, as it does in
    // play; the measured pass then looks each one up again in turn.
    measure(&bed, "spread warm-up", spread as u32, 1, XDP_REDIRECT, |i| spread_frames[i as usize].clone())?;
    // Players are looked up in a fixed random order: the test addresses are
    // consecutive, and taken in order their cache sets would fall on
    // neighbouring pages more often than real players' (random addresses
    // and ports) do, which measured 90 ns too cheap.
    let shuffled = shuffled(spread);
    // 4,000 of them: their cache lines (256 KiB) fit this CPU's L2, but
    // they lie on nearly all 1,024 pages of the cache, as 100,000 do. Beside
    // the 100k row, it shows how much of the spread is page walks (TLB
    // misses) rather than cache lines (`FEW`).
    let few = measure(&bed, "established hit, 4k spread", calls, 1, XDP_REDIRECT, |i| {
        spread_frames[shuffled[i as usize % FEW] as usize].clone()
    })?;
    let spread_row = measure(&bed, label("established hit"), calls.max(spread as u32), 1, XDP_REDIRECT, |i| {
        spread_frames[shuffled[i as usize % spread] as usize].clone()
    })?;

    // Return spread: replies to 100,000 clients in turn (parts of
    // 198.18.0.0/15 the bed does not use, routed through the known client
    // neighbour), after a pass that caches each client's next hop, as play
    // does.
    for range in SPREAD_CLIENT_RANGES {
        bed.ns.ip(&["route", "add", range.0, "via", "198.18.60.2", "dev", "cli0"])?;
    }
    let reply_frames: Vec<Vec<u8>> = (0..spread as u32)
        .map(|i| {
            let client = spread_client(i);
            let mut u = Udp::new(VIP, PORT, client, 50000, &[0xE3; 40]);
            u.ttl = 255;
            u.frame()
        })
        .collect();
    measure(&bed, "return warm-up", spread as u32, 1, XDP_REDIRECT, |i| reply_frames[i as usize].clone())?;
    let ret_spread = measure(&bed, label("return path"), calls.max(spread as u32), 1, XDP_REDIRECT, |i| {
        reply_frames[shuffled[i as usize % spread] as usize].clone()
    })?;

    // Placement: a new source every call, a handshake, hashed into the table.
    bed.place_all_on(GROUP_A);
    let place_cold = measure(&bed, "placement (new player)", calls, 1, XDP_REDIRECT, |i| {
        let client = Ipv4Addr::new(198, 18, 60, 2 + (i / 60000) as u8);
        Udp::new(client, 1024 + (i % 60000) as u16, VIP, PORT, &handshake(0)).frame()
    })?;

    println!("fastpath: {calls} BPF_PROG_TEST_RUN calls per row, median ns per packet");
    println!("  warm = repeat {WARM_REPEAT} per call, caches warm; cold = one packet per call");
    if hold {
        println!("  both programs held in the XDP dispatcher (attached to a down veth) for the whole run");
    } else {
        println!("  programs NOT held in the dispatcher (SAMP_BENCH_NO_HOLD): each test run re-adds them");
    }
    println!("{:<29} {:<6} {:>7} {:>9} {:>7} {:>9}", "path", "method", "ns", "XDP_PASS", "ratio", "added ns");
    // Shards in another site (issue 22): cold rows beside a plain hit in the same bed.
    let tunnel_rows = tunnel::rows(calls)?;
    let rows = [hit_warm, ret_warm, hit_arm, ret_arm, hit_cold, ret_cold, few, spread_row, ret_spread, place_cold];
    for r in rows.into_iter().chain(tunnel_rows) {
        println!(
            "{:<29} {:<6} {:>7} {:>9} {:>6.2}x {:>9}",
            r.name,
            r.method,
            r.ns,
            r.baseline,
            r.ns as f64 / r.baseline.max(1) as f64,
            r.ns as i64 - r.baseline as i64
        );
    }
    Ok(())
}

/// Where the spreads' clients live: parts of the benchmarking range
/// the bed leaves free (it uses 198.18.50-100.x), 102,400 addresses, each
/// (prefix, first address, size).
const SPREAD_CLIENT_RANGES: [(&str, u32, u32); 3] = [
    ("198.19.0.0/16", 0xc613_0000, 1 << 16),
    ("198.18.128.0/17", 0xc612_8000, 1 << 15),
    ("198.18.112.0/20", 0xc612_7000, 1 << 12),
];

/// Addresses in `SPREAD_CLIENT_RANGES`.
const SPREAD_ROOM: usize = 102_400;

/// The `i`th client address of a spread.
fn spread_client(mut i: u32) -> Ipv4Addr {
    for (_, first, size) in SPREAD_CLIENT_RANGES {
        if i < size {
            return Ipv4Addr::from(first + i);
        }
        i -= size;
    }
    panic!("the return spread has room for 102,400 clients");
}

/// 0..n in a fixed pseudo-random order (Fisher-Yates over xorshift64).
fn shuffled(n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// The sessions of `n` players on group `group`, at the group's epoch.
fn players(n: usize, group: u32, epoch: u32) -> Vec<(SessionKey, Session)> {
    (0..n)
        .map(|i| {
            let key = SessionKey {
                client_addr: addr_to_map(spread_client(i as u32).octets()),
                client_port: port_to_map(40000 + (i % 20_000) as u16),
                frontend: 0,
            };
            (key, Session { group, epoch, last_seen_ns: u64::MAX / 2 })
        })
        .collect()
}

fn median_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn migrate(runs: usize) -> Result<()> {
    const SESSIONS: usize = 1000;
    // A fresh data plane with shards a and b (not attached anywhere).
    let fresh = || -> Result<(PinDir, Dataplane, Tables, Cluster)> {
        let pins = PinDir::new("bench-migrate")?;
        let (dp, cluster_tables) = Dataplane::load(pins.path())?;
        let cfg = config::parse(
            "bench",
            "interfaces: [lo]\nfrontends: [{name: play, address: \"198.18.100.1:7777\"}]\nshards:\n  - {name: a, address: 198.18.50.2, capacity: 1000}\n  - {name: b, address: 198.18.50.3, capacity: 1000}\n",
        )?;
        let cluster = Cluster::start(cfg, cluster_tables)?;
        let tables = Tables::open_pinned(pins.path())?;
        Ok((pins, dp, tables, cluster))
    };
    let (_pins, _dp, mut tables, mut cluster) = fresh()?;
    let reset = |cluster: &mut Cluster, t: &mut Tables| -> Result<()> {
        let home = cluster.ids[0].home_group;
        let epoch = t.groups.get(&home, 0)?.epoch;
        batch::update(&t.sessions, &players(SESSIONS, home, epoch))?;
        cluster.rescan()?;
        Ok(())
    };
    println!("migrate: {SESSIONS} established sessions on shard a, moved to b; median of {runs} runs");
    println!("{:<28} {:>12} {:>18}", "migration", "command µs", "map writes µs");
    for n in [1usize, 100, 1000] {
        let (mut whole, mut writes) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            reset(&mut cluster, &mut tables)?;
            let chosen: Vec<ClientSelector> = players(n, 0, 0)
                .iter()
                .map(|(k, _)| ClientSelector {
                    ip: Ipv4Addr::from(proxy_common::net::addr_from_map(k.client_addr)),
                    port: Some(proxy_common::net::port_from_map(k.client_port)),
                })
                .collect();
            let t0 = Instant::now();
            let report = cluster.migrate_clients(&chosen, "b")?;
            whole.push(t0.elapsed());
            if report.moved != n {
                bail!("moved {} of {n}", report.moved);
            }
            // The writes alone: the same batch again, timed on its own.
            let batch_sessions = players(n, cluster.ids[1].home_group, 0);
            let t0 = Instant::now();
            batch::update(&tables.sessions, &batch_sessions)?;
            writes.push(t0.elapsed());
        }
        println!("{:<28} {:>12.0} {:>18.1}", format!("{n} chosen sessions"), median_us(whole), median_us(writes));
    }
    let (mut whole, mut writes) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (_pins, _dp, mut tables, mut cluster) = fresh()?;
        reset(&mut cluster, &mut tables)?;
        let t0 = Instant::now();
        let report = cluster.migrate_shard("a", "b")?;
        whole.push(t0.elapsed());
        if report.moved != SESSIONS || report.groups.len() != 1 {
            bail!("group move moved {} players in {} groups", report.moved, report.groups.len());
        }
        let g = report.groups[0];
        let back = cluster.ids[0].backend;
        let t0 = Instant::now();
        let epoch = tables.groups.get(&g, 0)?.epoch;
        tables.groups.set(g, proxy_common::Group { backend: back, epoch: epoch + 1 }, 0)?;
        writes.push(t0.elapsed());
    }
    println!(
        "{:<28} {:>12.0} {:>18.1}",
        format!("whole group ({SESSIONS} players)"),
        median_us(whole),
        median_us(writes)
    );
    println!("  command = the whole request (checks, session scans, writes, placement refresh);");
    println!("  map writes = the writes that move the players (one batch, or one GROUPS entry).");
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn failover(n: usize, reconnect_ms: u64) -> Result<()> {
    let sc = Scenario::start(2, |t| t.config_of(&[(0, 1000, "active"), (1, 1000, "standby")], ""))?;
    let mut cfg = sc.player_config();
    cfg.rate_hz = 10.0;
    cfg.reconnect_after = Duration::from_millis(reconnect_ms);
    let players = sc.players(n, &cfg)?;
    Scenario::wait_playing(&players, 3);
    let status = sc.agent.request(&proxy_agent::protocol::Request::Status)?;
    let s1 = status["shards"].as_array().unwrap().iter().find(|s| s["name"] == "s1").unwrap().clone();
    let (group, backend) = (s1["home_group"].as_u64().unwrap() as u32, s1["backend"].as_u64().unwrap() as u32);
    let tables = sc.agent.tables()?;
    let mut shards = sc.shards;
    // The agent and topology live on in `_sc`; the shards are ours to kill.
    let _sc = Scenario { shards: Vec::new(), ..sc };
    let died = Instant::now();
    let died_ms = tests::sim::clock_ms();
    shards[0].stop();
    let repointed = loop {
        if tables.groups.get(&group, 0)?.backend != backend {
            break died.elapsed();
        }
        if died.elapsed() > Duration::from_secs(30) {
            bail!("group not repointed within 30 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    wait_for("every player on s2", Duration::from_secs(120), || {
        players.snapshot().iter().all(|p| p.connected && p.current_shard() == Some("s2"))
    });
    let all_back = died.elapsed();
    let arrivals = shards[1].stats().first_handshake_ms;
    let mut lat: Vec<u64> = players
        .snapshot()
        .iter()
        .filter_map(|p| {
            let sent = *p.reconnect_ms.iter().rfind(|&&t| t >= died_ms)?;
            arrivals.get(&p.local).map(|&a| a.saturating_sub(sent))
        })
        .collect();
    lat.sort_unstable();
    if lat.len() != n {
        bail!("measured {} of {n} reconnects", lat.len());
    }
    println!(
        "{n:>8} {:>18.0} {:>28} {:>22.1}",
        repointed.as_secs_f64() * 1000.0,
        format!("{}/{}/{}", percentile(&lat, 0.5), percentile(&lat, 0.95), lat[lat.len() - 1]),
        all_back.as_secs_f64()
    );
    players.stop();
    drop(shards);
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().what {
        What::Fastpath { calls, spread } => fastpath(calls, spread),
        What::Migrate { runs } => migrate(runs),
        What::Agent { sessions, baseline_agent, runs, idle_seconds, idle_timeout_ms } => {
            let effort =
                agent::Effort { runs: runs.max(1), idle: Duration::from_secs_f64(idle_seconds), idle_timeout_ms };
            agent::agent(&sessions, baseline_agent, effort)
        }
        What::Query { calls, seconds, rate } => query::query(calls, seconds, rate),
        What::Memory { sessions, agent_sessions, idle_timeout_ms } => {
            memory::memory(sessions, &agent_sessions, idle_timeout_ms)
        }
        What::E2e(args) => e2e::e2e(&args),
        What::Ingress(args) => ingress::run(&args),
        What::Sites(args) => sites::run(&args),
        What::Failover { runs, api_delays_ms, players, reconnect_ms } => {
            failover::matrix(runs, &api_delays_ms)?;
            println!();
            println!(
                "failover: s1 (active) dies, its players move to s2 (standby); default health and pacing settings"
            );
            println!(
                "{:>8} {:>18} {:>28} {:>22}",
                "players", "death->repoint ms", "reconnect->arrival ms p50/p95/max", "death->all back s"
            );
            for n in players {
                failover(n, reconnect_ms)?;
            }
            Ok(())
        }
    }
}
