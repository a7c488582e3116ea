//! Handshake floods. Spoofed sources can send valid handshakes, but never
//! receive the shard's cookie: they must churn only the bounded pending
//! table, cost established players nothing, and be counted by reason. And
//! the per-shard handshake pacer and the per-source query budget must hold
//! exactly while both CPUs race on them.
//!
//! The e2e flood sends 200,000 spoofed sources (a minute of CI at most);
//! `SAMP_FLOOD_SOURCES=1000000 cargo test -p tests --test flood` runs the
//! full million.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::programs::TestRun;
use proxy_agent::protocol::Request;
use proxy_common::{Counter, Meter, QuerySettings};
use tests::{
    bed::*,
    packet::Udp,
    raw::{mac_of, send_frames},
    scenario::{wait_for, Scenario},
    sim::wire,
    topology::{PORT, VIP},
};

const PLAYERS: usize = 20;
const MAX_PENDING: u64 = 1024;
const RATE: u64 = 200;
const BURST: u64 = 20;

fn flood_sources() -> u32 {
    std::env::var("SAMP_FLOOD_SOURCES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000)
}

/// Source `n` of the flood: addresses in 198.19.0.0/16 nobody owns, 16
/// ports each, so a million sources are a million distinct keys.
fn spoofed(n: u32) -> (Ipv4Addr, u16) {
    let addr = n / 16;
    (Ipv4Addr::new(198, 19, (addr >> 8) as u8, addr as u8), 20_000 + (n % 16) as u16 + 16 * (addr >> 16) as u16)
}

#[test]
fn a_million_spoofed_handshakes_churn_only_the_pending_table() {
    let sources = flood_sources();
    let extra = format!("handshake_rate: {RATE}\nhandshake_burst: {BURST}\nmax_pending: {MAX_PENDING}\n");
    let sc = Scenario::start(2, |t| t.config(&[500, 500], &extra)).unwrap();
    let players = sc.players(PLAYERS, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    let before: Vec<_> = players.snapshot().iter().map(|p| p.current_shard().unwrap().to_string()).collect();
    let tables = sc.agent.tables().unwrap();
    let counter = |c| tables.counter(c).unwrap();
    let (placed, metered) = (counter(Counter::SessionPlaced), counter(Counter::DropMetered));

    let proxy_mac = mac_of(&sc.topo.proxy, "to-client").unwrap();
    let client_mac = mac_of(&sc.topo.client, "eth0").unwrap();
    let handshake = wire::handshake_request(0, PORT);
    let started = Instant::now();
    // Frames are built and sent in slices so a million never sit in memory.
    let mut sent = 0;
    for chunk in (0..sources).collect::<Vec<_>>().chunks(50_000) {
        let frames: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&n| {
                let (src, sport) = spoofed(n);
                let mut u = Udp::new(src, sport, VIP, PORT, &handshake);
                u.src_mac = client_mac;
                u.dst_mac = proxy_mac;
                u.frame()
            })
            .collect();
        sent += send_frames(&sc.topo.client, "eth0", &frames, 64).unwrap();
    }
    assert_eq!(sent, sources as usize);
    let counted = || counter(Counter::SessionPlaced) + counter(Counter::DropMetered) - placed - metered;
    let deadline = Instant::now() + Duration::from_secs(30);
    while counted() < sources as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if counted() != sources as u64 {
        let all: Vec<_> = Counter::ALL.iter().map(|&c| (c.name(), counter(c))).filter(|(_, v)| *v > 0).collect();
        panic!("{} of {sources} spoofed handshakes counted; counters: {all:?}", counted());
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let admitted = counter(Counter::SessionPlaced) - placed;
    let held = counter(Counter::DropMetered) - metered;
    println!("{sources} spoofed handshakes in {flood_secs:.1} s: {admitted} admitted by the pacers, {held} held back");
    assert_eq!(admitted + held, sources as u64, "every spoofed handshake is counted by what became of it");
    // Two shards, each paced at RATE with BURST; players' own handshakes
    // were done before the flood.
    let bound = 2 * (BURST + (RATE as f64 * flood_secs).ceil() as u64 + 1);
    assert!(admitted <= bound, "the pacers admitted {admitted}, at most {bound} allowed");

    let in_kernel = tables.scan_sessions().unwrap();
    assert!(
        in_kernel.pending.len() as u64 <= MAX_PENDING,
        "pending table {} beyond its bound",
        in_kernel.pending.len()
    );
    assert_eq!(in_kernel.established.len(), PLAYERS, "no spoofed source became an established session");
    // The agent learns of LRU evictions at its next scan (at most 10 s).
    let status = || sc.agent.request(&Request::Status).unwrap();
    wait_for("status to show the pending table within its bound", Duration::from_secs(15), || {
        status()["totals"]["pending"].as_u64().unwrap() <= MAX_PENDING
    });
    let st = status();
    assert_eq!(st["totals"]["established"], PLAYERS, "{}", st["totals"]);
    assert_eq!(st["totals"]["players"], PLAYERS, "pending handshakes are not players: {}", st["totals"]);
    assert_eq!(counter(Counter::DropMapFull), 0, "the pending LRU evicts, it never refuses");

    // Established players lost nothing: every game packet reached its shard,
    // and nobody changed shard.
    sc.assert_every_packet_arrived(&players);
    let stats = players.snapshot();
    for (p, was) in stats.iter().zip(&before) {
        assert_eq!(p.connects, 1, "{} reconnected", p.local);
        assert_eq!(p.current_shard().unwrap(), was, "{} changed shard", p.local);
    }
}

/// Runs `frame(n)` for n = 0, 1, ... through the data plane on `cpu` until
/// `stop` (at most 2 million runs), returning how many ran.
fn hammer(bed: &Bed, cpu: usize, stop: &AtomicBool, frame: impl Fn(u64) -> Vec<u8> + Send + Sync) -> u64 {
    bed.ns
        .run(|| {
            pin_to_cpu(cpu);
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) && runs < 2_000_000 {
                let input = frame(runs);
                let mut out = vec![0u8; input.len() + 512];
                let opts = aya::programs::TestRunOptions {
                    data_in: Some(&input),
                    data_out: Some(&mut out),
                    ..Default::default()
                };
                bed.dp.program().test_run(opts).expect("BPF_PROG_TEST_RUN");
                runs += 1;
            }
            runs
        })
        .unwrap()
}

/// Both CPUs run `frame` through the data plane for two seconds: (runs, wall ns).
fn race(bed: &Bed, frame: impl Fn(usize, u64) -> Vec<u8> + Sync) -> (u64, u64) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let runs = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (stop, frame) = (&stop, &frame);
                s.spawn(move || hammer(bed, i % cpus, stop, move |n| frame(i, n)))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    (runs, started.elapsed().as_nanos() as u64)
}

#[test]
fn the_pacer_is_exact_while_both_cpus_race() {
    let mut bed = Bed::new().unwrap();
    bed.place_all_on(GROUP_A);
    // 2,000 handshakes a second, no burst: a new slot every 500 µs, and both
    // CPUs hammering the moment each opens.
    let interval_ns = 500_000u64;
    bed.tables.meter.set(1, Meter { tat_ns: 0, interval_ns, tolerance_ns: 0 }, 0).unwrap();
    let (redirected, metered) = (bed.counter(Counter::IngressRedirect), bed.counter(Counter::DropMetered));
    // Fresh sources (ports) per CPU, so each admitted one is a new player.
    let (runs, elapsed_ns) = race(&bed, |cpu, n| {
        let port = (1000 + 30_000 * cpu as u64 + n % 20_000) as u16;
        Udp::new(CLIENT, port, VIP, PORT, &handshake(0)).frame()
    });
    let admitted = bed.counter(Counter::IngressRedirect) - redirected;
    let held = bed.counter(Counter::DropMetered) - metered;
    assert_eq!(admitted + held, runs, "every handshake was admitted or held back");
    // With exact pacing the n-th admission happens at least (n-1) intervals
    // after the first, all inside the run.
    let bound = 1 + elapsed_ns / interval_ns;
    println!("{runs} handshakes from 2 CPUs in {elapsed_ns} ns: {admitted} admitted (at most {bound}), {held} held");
    assert!(admitted <= bound, "the pacer admitted {admitted}, at most {bound} possible");
    assert!(held > admitted, "the test raced the pacer (held {held}, admitted {admitted})");
    assert!(admitted * 4 >= bound, "the pacer admitted {admitted} of {bound} slots: it is not pacing, it is stuck");
}

#[test]
fn the_query_budget_is_exact_while_both_cpus_race() {
    const BUDGET: u32 = 50;
    let mut bed = Bed::new().unwrap();
    bed.tables.write_query_settings(QuerySettings { per_second: BUDGET, agent_addr: 0 }).unwrap();
    let budget_drops = bed.counter(Counter::DropQueryBudget);
    // One source, pings (answered in place), from both CPUs.
    let ping = samp_ping();
    let (runs, elapsed_ns) = race(&bed, |_, _| ping.clone());
    let refused = bed.counter(Counter::DropQueryBudget) - budget_drops;
    let let_through = runs - refused;
    // The run touches at most this many one-second windows.
    let windows = 2 + elapsed_ns / 1_000_000_000;
    let bound = BUDGET as u64 * windows;
    println!("{runs} pings from one source on 2 CPUs: {let_through} let through (at most {bound}), {refused} refused");
    assert!(let_through <= bound, "the budget let {let_through} through, at most {bound}");
    assert!(let_through >= BUDGET as u64, "a whole budget must get through");
}

/// A `p` query with its four-byte token, from the bed's client to the VIP.
fn samp_ping() -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&VIP.octets());
    q.extend_from_slice(&PORT.to_le_bytes());
    q.push(b'p');
    q.extend_from_slice(&[1, 2, 3, 4]);
    Udp::new(CLIENT, 40000, VIP, PORT, &q).frame()
}
