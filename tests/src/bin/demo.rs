//! `cargo xtask demo`: one public address in front of three SA:MP shards, in
//! network namespaces on this machine, for a newcomer to watch.
//!
//! Builds client, proxy and shard namespaces (198.18.0.0/15), starts the real
//! agent with the XDP data plane, three `samp-shard` processes and a few
//! hundred simulated players that speak the SA:MP wire format to the VIP;
//! prints a live table and a summary; tears everything down at the end, on
//! Ctrl-C and on failure.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use proxy_common::Counter;
use tests::{
    agent::Agent,
    netns,
    sim::{
        player::{self, PlayerConfig},
        shard::ShardStats,
    },
    topology::Topology,
};

#[derive(Parser)]
#[command(about = "Watch the SA:MP cluster proxy route players to shards")]
struct Args {
    #[arg(long, default_value_t = 300)]
    players: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Game packets per second per player.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
}

const CAPACITIES: [u32; 3] = [500, 300, 200];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The shard processes; killed on drop, whatever happened.
struct Shards(Vec<Child>);

impl Drop for Shards {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().expect("current exe").with_file_name(name)
}

fn read_stats(path: &PathBuf) -> ShardStats {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn main() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let args = Args::parse();
    let result = demo(&args);
    let left = netns::leftovers();
    if !left.is_empty() {
        eprintln!("demo: namespaces left behind: {left:?}");
    }
    match result {
        Ok(()) => println!("demo: done; every namespace, process and XDP attachment removed"),
        Err(e) => {
            eprintln!("demo: {e:#}");
            std::process::exit(1);
        }
    }
}

fn demo(args: &Args) -> Result<()> {
    println!("demo: building namespaces: client, proxy, 3 shards (198.18.0.0/15)");
    let topo = Topology::build(3, 4)?;
    let dir = std::env::temp_dir().join(format!("samp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stats_files: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("s{}.json", i + 1))).collect();
    let mut children = Vec::new();
    for (i, ns) in topo.shards.iter().enumerate() {
        let child = ns
            .spawn_command(&sibling("samp-shard"))?
            .args(["--name", &format!("s{}", i + 1), "--max-players", &CAPACITIES[i].to_string(), "--stats-file"])
            .arg(&stats_files[i])
            .stdout(Stdio::null())
            .spawn()
            .context("starting samp-shard")?;
        children.push(child);
    }
    let shards = Shards(children);
    let agent = Agent::start(&topo.proxy, &topo.config(&CAPACITIES, ""))?;
    println!("demo: agent up, XDP attached to {} in the proxy namespace", topo.proxy_ifs.join(", "));
    for (i, ip) in topo.shard_ips.iter().enumerate() {
        println!("      shard s{} at {ip}:7777, capacity {}", i + 1, CAPACITIES[i]);
    }
    println!(
        "demo: {} players connect to {} for {} s at {} packets/s each\n",
        args.players,
        topo.vip(),
        args.seconds,
        args.rate
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut cfg = PlayerConfig::new(topo.vip(), Duration::from_secs(args.seconds));
    cfg.rate_hz = args.rate;
    cfg.reconnect_after = Duration::from_secs(10);
    let sockets = topo.player_sockets(args.players)?;
    let players = rt.block_on(async { player::start(sockets, &cfg) })?;
    let tables = agent.tables()?;

    let started = Instant::now();
    let mut last_packets = [0u64; 3];
    let mut next = started + Duration::from_secs(1);
    println!(
        "{:>4}  {:<6} {:>8} {:>9} {:>10} {:>10}   proxy",
        "t(s)", "shard", "players", "capacity", "packets", "pkt/s"
    );
    while started.elapsed() < Duration::from_secs(args.seconds) {
        if STOP.load(Ordering::Relaxed) {
            println!("\ndemo: interrupted, tearing down");
            players.stop();
            break;
        }
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        next += Duration::from_secs(1);
        let t = started.elapsed().as_secs();
        let placed = tables.counter(Counter::SessionPlaced)?;
        let fwd = tables.counter(Counter::IngressRedirect)? + tables.counter(Counter::IngressPassNeigh)?;
        let drops: u64 = Counter::ALL
            .iter()
            .filter(|c| c.name().starts_with("drop_"))
            .map(|&c| tables.counter(c).unwrap_or(0))
            .sum();
        for (i, path) in stats_files.iter().enumerate() {
            let s = read_stats(path);
            let packets = s.game_packets();
            let rate = packets.saturating_sub(last_packets[i]);
            last_packets[i] = packets;
            let proxy = match i {
                0 => format!("placed {placed}, forwarded {fwd}"),
                1 => format!(
                    "sessions {} established, {} pending",
                    tables.scan_sessions().unwrap().established.len(),
                    tables.scan_sessions().unwrap().pending.len()
                ),
                _ => format!("drops {drops}"),
            };
            println!(
                "{:>4}  {:<6} {:>8} {:>9} {:>10} {:>10}   {}",
                if i == 0 { t.to_string() } else { String::new() },
                format!("s{}", i + 1),
                s.connected_players(),
                CAPACITIES[i],
                packets,
                rate,
                proxy
            );
        }
    }
    players.stop();
    let stats = rt.block_on(players.join());
    let shard_stats: Vec<ShardStats> = stats_files.iter().map(read_stats).collect();

    println!("\nsummary");
    let connected = stats.iter().filter(|p| p.connects > 0).count();
    let one_shard = stats.iter().filter(|p| p.shards.len() == 1).count();
    let from_vip = stats.iter().all(|p| p.wrong_source == 0);
    let real_addr = stats.iter().all(|p| p.wrong_seen == 0);
    let mut split: BTreeMap<String, usize> = BTreeMap::new();
    for p in &stats {
        if let Some(s) = p.current_shard() {
            *split.entry(s.to_string()).or_default() += 1;
        }
    }
    let total_cap: u32 = CAPACITIES.iter().sum();
    println!("  players connected:            {connected} / {}", stats.len());
    println!("  stayed on one shard:          {one_shard} / {}", stats.len());
    println!("  every reply from {}:  {}", topo.vip(), if from_vip { "yes" } else { "NO" });
    println!("  shards saw real client addr:  {}", if real_addr { "yes" } else { "NO" });
    for (i, s) in shard_stats.iter().enumerate() {
        let name = format!("s{}", i + 1);
        let n = split.get(&name).copied().unwrap_or(0);
        println!(
            "  {name}: {n:>4} players ({:>4.1}%, capacity share {:>4.1}%), {} game packets, {} bad checksums",
            100.0 * n as f64 / stats.len().max(1) as f64,
            100.0 * CAPACITIES[i] as f64 / total_cap as f64,
            s.game_packets(),
            s.bad_checksum
        );
    }
    println!("  data plane counters:");
    for (c, v) in tables.all_counters()? {
        if v > 0 {
            println!("    {:<22} {v}", c.name());
        }
    }
    drop(tables);
    drop(agent);
    drop(shards);
    drop(topo);
    let _ = std::fs::remove_dir_all(&dir);
    if STOP.load(Ordering::Relaxed) {
        return Ok(());
    }
    if connected != stats.len() || one_shard != stats.len() || !from_vip || !real_addr {
        bail!("the run was not clean (see the summary)");
    }
    Ok(())
}
