//! `cargo xtask demo`: the project's story, live, for a newcomer to watch.
//!
//! Builds client, proxy and shard namespaces (198.18.0.0/15), starts the real
//! agent with the XDP data plane (and `/metrics`), three active `samp-shard`
//! processes and a standby, and a few hundred simulated players that speak
//! the SA:MP wire format to the one public address (the VIP). While a live
//! table counts every second, it tells the story in labelled steps:
//!
//! 1. query: a server-browser `i` query to the VIP (the cluster is ONE server);
//! 2. migrate: the real CLI moves three chosen players from s1 to s2, and each
//!    one's arrival is timed;
//! 3. failover: s1's process is killed; the agent repoints its group to the
//!    standby s4 and every one of its players comes back there, timed.
//!
//! Each step runs at a fraction of the run (or when the one before it ends)
//! and is skipped, with a line saying so, when the run is too short for it.
//! Prints a summary and where the metrics were; tears everything down at the
//! end, on Ctrl-C and on failure.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use proxy_agent::{control::views::Event, protocol::Request, tables::Tables};
use proxy_common::Counter;
use tests::{
    agent::{agent_bin, Agent},
    netns,
    sim::{
        player::{self, PlayerConfig, PlayerStats, Players},
        shard::ShardStats,
        wire::{self, Info},
    },
    topology::Topology,
};

#[derive(Parser)]
#[command(about = "Watch the SA:MP cluster proxy: one address, shards, a query, a migration, a failover")]
struct Args {
    #[arg(long, default_value_t = 300)]
    players: usize,
    /// Length of the run; the story's steps are placed at fractions of it
    /// (about 20 s or more shows them all).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Game packets per second per player.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
}

/// `(name, capacity, role)`; shard `i` runs in shard namespace `i`.
const SHARDS: [(&str, u32, &str); 4] =
    [("s1", 500, "active"), ("s2", 300, "active"), ("s3", 200, "active"), ("s4", 500, "standby")];
/// Where the agent serves Prometheus text, inside the proxy namespace.
const METRICS_LISTEN: &str = "127.0.0.1:9478";
const DASHBOARD: &str = "deploy/grafana/samp-proxy-dashboard.json";
/// Silence after which a simulated player handshakes again ("Reconnecting...").
const RECONNECT_AFTER: Duration = Duration::from_secs(2);
/// The agent's default handshake pacing per shard (`handshake_rate`).
const HANDSHAKE_RATE: f64 = 250.0;
const QUERY_WAIT: Duration = Duration::from_secs(2);
const MIGRATE_DEADLINE: Duration = Duration::from_secs(30);
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The shard processes; killed on drop, whatever happened.
struct Shards(Vec<Child>);

impl Drop for Shards {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: signalling our own child; it is reaped only below, so
            // the pid is still its own even if it already exited.
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

fn read_stats(path: &Path) -> ShardStats {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What the story did, for the summary.
#[derive(Default)]
struct Told {
    query: String,
    migrate: String,
    failover: String,
    /// The shards a player the story moved must have been on, in order.
    paths: BTreeMap<usize, Vec<String>>,
    /// Steps that ran and did not do what they should.
    failed: Vec<String>,
}

/// The running demo, shared by the live table (main thread) and the story.
struct Run<'a> {
    started: Instant,
    seconds: Duration,
    players: &'a Players,
    agent: &'a Agent,
    topo: &'a Topology,
    s1_pid: u32,
    /// A story step is under way: the table goes on past the end for it.
    busy: AtomicBool,
    /// The table has stopped: the story skips what is left.
    over: AtomicBool,
    s1_dead: AtomicBool,
    told: Mutex<Told>,
}

impl Run<'_> {
    fn t(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn left(&self) -> Duration {
        self.seconds.saturating_sub(self.started.elapsed())
    }

    fn halted(&self) -> bool {
        STOP.load(Ordering::Relaxed) || self.over.load(Ordering::Relaxed)
    }

    fn player(&self, i: usize) -> PlayerStats {
        self.players.stats[i].lock().unwrap().clone()
    }

    fn on(&self, i: usize, shard: &str) -> bool {
        let p = self.players.stats[i].lock().unwrap();
        p.connected && p.current_shard() == Some(shard)
    }

    fn tell(&self, f: impl FnOnce(&mut Told)) {
        f(&mut self.told.lock().unwrap());
    }

    /// Waits until `at` into the run, then opens the step `title` if `needs`
    /// fits in what is left of the run. Returns the summary's reason when
    /// the step does not run (`None`: it runs, and `busy` is set).
    fn begin(&self, at: Duration, needs: Duration, title: &str) -> Option<String> {
        while self.started.elapsed() < at && !self.halted() {
            std::thread::sleep(POLL);
        }
        self.busy.store(true, Ordering::Relaxed);
        if STOP.load(Ordering::Relaxed) {
            return Some("interrupted".into());
        }
        let left = self.left();
        if self.over.load(Ordering::Relaxed) || left < needs {
            self.busy.store(false, Ordering::Relaxed);
            let why = format!(
                "skipped (needs about {:.0} s, the run has {:.0} s left; --seconds 20 or more shows it)",
                needs.as_secs_f64().ceil(),
                left.as_secs_f64()
            );
            println!("--- t={}s  {title}: {why}", self.t());
            return Some(why);
        }
        println!("--- t={}s  {title}", self.t());
        None
    }
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
    println!("demo: building namespaces: client, proxy, 4 shards (198.18.0.0/15)");
    let topo = Topology::build(SHARDS.len(), 4)?;
    let dir = std::env::temp_dir().join(format!("samp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stats_files: Vec<PathBuf> = SHARDS.iter().map(|(name, ..)| dir.join(format!("{name}.json"))).collect();
    let mut children = Vec::new();
    for (i, ns) in topo.shards.iter().enumerate() {
        let (name, capacity, _) = SHARDS[i];
        let child = ns
            .spawn_command(&sibling("samp-shard"))?
            .args(["--name", name, "--max-players", &capacity.to_string(), "--stats-file"])
            .arg(&stats_files[i])
            .stdout(Stdio::null())
            .spawn()
            .context("starting samp-shard")?;
        children.push(child);
    }
    let shards = Shards(children);
    let s1_pid = shards.0[0].id();
    let spec: Vec<(usize, u32, &str)> = SHARDS.iter().enumerate().map(|(i, &(_, cap, role))| (i, cap, role)).collect();
    let yaml = topo.config_of(&spec, &format!("metrics_listen: {METRICS_LISTEN}\n"));
    let agent = Agent::start(&topo.proxy, &yaml)?;
    let ns = topo.proxy.name.clone();
    println!("demo: agent up, XDP attached to {} in the proxy namespace", topo.proxy_ifs.join(", "));
    for (i, ip) in topo.shard_ips.iter().enumerate() {
        let (name, capacity, role) = SHARDS[i];
        let note = if role == "standby" { " (gets no newcomers; takes over a shard that dies)" } else { "" };
        println!("      shard {name} at {ip}:7777, capacity {capacity}, {role}{note}");
    }
    println!("      metrics: http://{METRICS_LISTEN}/metrics inside namespace {ns}");
    println!(
        "demo: {} players connect to {} for {} s at {} packets/s each; one that hears nothing for {} reconnects",
        args.players,
        topo.vip(),
        args.seconds,
        args.rate,
        secs(RECONNECT_AFTER)
    );
    println!(
        "      the story: a query, then a migration at t={}s and a failover at t={}s (steps that do not fit are skipped)\n",
        args.seconds / 4,
        args.seconds / 2
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Players stop when the table does; the duration is only a backstop.
    let backstop = Duration::from_secs(args.seconds) + MIGRATE_DEADLINE + FAILOVER_DEADLINE;
    let mut cfg = PlayerConfig::new(topo.vip(), backstop);
    cfg.rate_hz = args.rate;
    cfg.reconnect_after = RECONNECT_AFTER;
    let sockets = topo.player_sockets(args.players)?;
    let players = rt.block_on(async { player::start(sockets, &cfg) })?;
    let tables = agent.tables()?;

    let run = Run {
        started: Instant::now(),
        seconds: Duration::from_secs(args.seconds),
        players: &players,
        agent: &agent,
        topo: &topo,
        s1_pid,
        busy: AtomicBool::new(false),
        over: AtomicBool::new(false),
        s1_dead: AtomicBool::new(false),
        told: Mutex::new(Told::default()),
    };
    println!(
        "{:>4}  {:<6} {:>8} {:>9} {:>10} {:>10}   proxy",
        "t(s)", "shard", "players", "capacity", "packets", "pkt/s"
    );
    let live = std::thread::scope(|scope| {
        let teller = scope.spawn(|| story(&run));
        let live = live_table(&run, &tables, &stats_files);
        run.over.store(true, Ordering::Relaxed);
        let _ = teller.join();
        live
    });
    players.stop();
    let told = std::mem::take(&mut *run.told.lock().unwrap());
    drop(run);
    live?;
    let stats = rt.block_on(players.join());
    let shard_stats: Vec<ShardStats> = stats_files.iter().map(|p| read_stats(p)).collect();

    println!("\nsummary");
    let connected = stats.iter().filter(|p| p.connects > 0).count();
    let standby = |name: &str| SHARDS.iter().any(|&(n, _, role)| n == name && role == "standby");
    let as_told = stats
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            let path: Vec<&str> = p.shards.iter().map(|(s, _)| s.as_str()).collect();
            match told.paths.get(i) {
                Some(want) => path == *want,
                None => path.len() == 1 && !standby(path[0]),
            }
        })
        .count();
    let from_vip = stats.iter().all(|p| p.wrong_source == 0);
    let real_addr = stats.iter().all(|p| p.wrong_seen == 0);
    let total_cap: u32 = SHARDS.iter().filter(|s| s.2 == "active").map(|s| s.1).sum();
    println!("  players connected:            {connected} / {}", stats.len());
    println!("  moved only when told or when their shard died: {as_told} / {}", stats.len());
    println!("  every reply from {}:  {}", topo.vip(), if from_vip { "yes" } else { "NO" });
    println!("  shards saw real client addr:  {}", if real_addr { "yes" } else { "NO" });
    println!("  query:     {}", told.query);
    println!("  migrate:   {}", told.migrate);
    println!("  failover:  {}", told.failover);
    for (i, s) in shard_stats.iter().enumerate() {
        let (name, capacity, role) = SHARDS[i];
        let placed = stats.iter().filter(|p| p.shards.first().is_some_and(|(s, _)| s == name)).count();
        let now = stats.iter().filter(|p| p.current_shard() == Some(name)).count();
        let share = if role == "standby" {
            "standby".to_string()
        } else {
            format!("capacity share {:>4.1}%", 100.0 * capacity as f64 / total_cap as f64)
        };
        println!(
            "  {name}: placed {placed:>4} ({:>4.1}%, {share}), at the end {now:>4}; {} game packets, {} bad checksums",
            100.0 * placed as f64 / stats.len().max(1) as f64,
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
    let scraped = scrape(&topo);
    println!("\nmetrics");
    println!("  Prometheus text was served at http://{METRICS_LISTEN}/metrics inside namespace {ns}");
    println!("  (while a demo runs: ip netns exec {ns} curl -s http://{METRICS_LISTEN}/metrics)");
    match scraped {
        Ok(body) => {
            let samples: Vec<&str> = body.lines().filter(|l| l.starts_with("samp_proxy_")).collect();
            let mut shown: Vec<&str> = samples
                .iter()
                .copied()
                .filter(|l| {
                    l.starts_with("samp_proxy_events_total")
                        || (l.starts_with("samp_proxy_shard_sessions{") && l.contains("established"))
                })
                .take(10)
                .collect();
            if shown.is_empty() {
                shown = samples.iter().copied().take(5).collect();
            }
            println!("  a scrape at the end: {} samples, among them", samples.len());
            for l in shown {
                println!("    {l}");
            }
        }
        Err(e) => println!("  a scrape at the end failed: {e:#}"),
    }
    println!("  Grafana dashboard: {DASHBOARD} (import it; it reads the Prometheus that scrapes /metrics)");

    drop(tables);
    drop(agent);
    drop(shards);
    drop(topo);
    let _ = std::fs::remove_dir_all(&dir);
    if STOP.load(Ordering::Relaxed) {
        return Ok(());
    }
    for f in &told.failed {
        eprintln!("demo: {f}");
    }
    if connected != stats.len() || as_told != stats.len() || !from_vip || !real_addr || !told.failed.is_empty() {
        bail!("the run was not clean (see the summary)");
    }
    Ok(())
}

/// Prints the table every second until the run is over and no story step
/// is under way, or Ctrl-C.
fn live_table(run: &Run, tables: &Tables, stats_files: &[PathBuf]) -> Result<()> {
    let mut last_packets = vec![0u64; stats_files.len()];
    let mut next = run.started + Duration::from_secs(1);
    let mut said_over = false;
    loop {
        if STOP.load(Ordering::Relaxed) {
            println!("\ndemo: interrupted, tearing down");
            return Ok(());
        }
        if run.left().is_zero() {
            if !run.busy.load(Ordering::Relaxed) {
                return Ok(());
            }
            if !said_over {
                said_over = true;
                println!("--- t={}s  time is up: the table goes on until the step under way ends", run.t());
            }
        }
        if Instant::now() < next {
            std::thread::sleep(POLL);
            continue;
        }
        next += Duration::from_secs(1);
        let t = run.t();
        let counter = |c| tables.counter(c).unwrap_or(0);
        let placed = counter(Counter::SessionPlaced);
        let fwd = counter(Counter::IngressRedirect) + counter(Counter::IngressPassNeigh);
        let drops: u64 = Counter::ALL.iter().filter(|c| c.name().starts_with("drop_")).map(|&c| counter(c)).sum();
        let scan = tables.scan_sessions()?;
        let mut out = std::io::stdout().lock();
        for (i, path) in stats_files.iter().enumerate() {
            let s = read_stats(path);
            let dead = i == 0 && run.s1_dead.load(Ordering::Relaxed);
            let packets = s.game_packets();
            let rate = if dead { 0 } else { packets.saturating_sub(last_packets[i]) };
            last_packets[i] = packets;
            let proxy = match i {
                0 => format!("placed {placed}, forwarded {fwd}"),
                1 => format!("sessions {} established, {} pending", scan.established.len(), scan.pending.len()),
                2 => format!("drops {drops}"),
                _ => format!(
                    "  of them {} from moving players, {} paced handshakes",
                    counter(Counter::DropMoving),
                    counter(Counter::DropMetered)
                ),
            };
            writeln!(
                out,
                "{:>4}  {:<6} {:>8} {:>9} {:>10} {:>10}   {}",
                if i == 0 { t.to_string() } else { String::new() },
                SHARDS[i].0,
                if dead { "dead".to_string() } else { s.connected_players().to_string() },
                SHARDS[i].1,
                packets,
                rate,
                proxy
            )?;
        }
    }
}

/// The story, step by step, beside the table.
fn story(run: &Run) {
    if let Err(e) = steps(run) {
        println!("--- t={}s  the story stopped: {e:#}", run.t());
        run.tell(|t| t.failed.push(format!("{e:#}")));
    }
    run.busy.store(false, Ordering::Relaxed);
}

fn steps(run: &Run) -> Result<()> {
    // Everyone connected first (or 10 s, or the end of the run).
    let by = Duration::from_secs(10).min(run.seconds);
    while !run.halted() && run.started.elapsed() < by && !run.players.snapshot().iter().all(|p| p.connected) {
        std::thread::sleep(POLL);
    }
    query(run)?;
    run.busy.store(false, Ordering::Relaxed);
    migrate(run)?;
    run.busy.store(false, Ordering::Relaxed);
    failover(run)
}

/// Step 1: an `i` query to the VIP, as a server browser sends it.
fn query(run: &Run) -> Result<()> {
    let title = "query: the cluster answers the server browser as ONE server";
    // A second in, so the shards' own counts (read by the health probes) are in.
    if let Some(why) = run.begin(Duration::from_secs(1), QUERY_WAIT + Duration::from_millis(500), title) {
        run.tell(|t| t.query = why);
        return Ok(());
    }
    let vip = run.topo.vip();
    let from = run.topo.client_ips[0];
    let sock = run.topo.client.run(move || UdpSocket::bind(SocketAddrV4::new(from, 0)))??;
    sock.connect(vip)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let request = wire::query_request(vip, b'i', &[]);
    let playing = run.players.snapshot().iter().filter(|p| p.connected).count();
    println!("    $ SAMP query 'i' from {} to {vip} ({playing} players are playing)", sock.local_addr()?);
    let sent = Instant::now();
    sock.send(&request)?;
    let mut buf = [0u8; 2048];
    let answer = loop {
        if sent.elapsed() >= QUERY_WAIT || STOP.load(Ordering::Relaxed) {
            break None;
        }
        // Timeouts, and an ICMP error reported on the connected socket: wait on.
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let reply = &buf[..n];
        if reply.len() >= 11 && reply[..11] == request[..11] {
            if let Some(info) = Info::parse(reply) {
                break Some((info, sent.elapsed()));
            }
        }
    };
    match answer {
        Some((info, rtt)) => {
            println!(
                "    query: \"{}\": {} / {} players, gamemode \"{}\", language \"{}\"{} (answered in {:.2} ms)",
                info.hostname,
                info.players,
                info.max_players,
                info.gamemode,
                info.language,
                if info.password { ", password" } else { "" },
                rtt.as_secs_f64() * 1000.0
            );
            run.tell(|t| {
                t.query = format!(
                    "answered as one server: \"{}\", {} / {} players",
                    info.hostname, info.players, info.max_players
                )
            });
        }
        None => {
            println!("    query: no answer within {QUERY_WAIT:?} (see the agent's log and `drop_query_*` below)");
            run.tell(|t| t.query = "no answer".into());
        }
    }
    Ok(())
}

/// Step 2: three chosen players of s1 move to s2 through the real CLI.
fn migrate(run: &Run) -> Result<()> {
    let title = "migrate: three chosen players move, silently";
    if let Some(why) = run.begin(run.seconds / 4, RECONNECT_AFTER + Duration::from_secs(3), title) {
        run.tell(|t| t.migrate = why);
        return Ok(());
    }
    let chosen: Vec<usize> = (0..run.players.stats.len())
        .filter(|&i| {
            let p = run.player(i);
            p.connected && p.shards.len() == 1 && p.current_shard() == Some("s1")
        })
        .take(3)
        .collect();
    if chosen.is_empty() {
        println!("    migrate: nobody is on s1 to move");
        run.tell(|t| t.migrate = "skipped: nobody was on s1".into());
        return Ok(());
    }
    let clients: Vec<String> = chosen.iter().map(|&i| run.player(i).local).collect();
    let mut cli = Command::new(agent_bin());
    cli.arg("migrate");
    for c in &clients {
        cli.args(["--client", c]);
    }
    cli.args(["--to", "s2", "--socket"]).arg(&run.agent.socket);
    let t0 = Instant::now();
    let out = cli.output().context("running proxy-agent migrate")?;
    let mut text = format!(
        "    $ proxy-agent migrate --client {} --to s2 --socket {}",
        clients.join(" --client "),
        run.agent.socket.display()
    );
    for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
        text.push_str(&format!("\n    | {line}"));
    }
    text.push_str(&format!(
        "\n    migrate: their packets stop reaching s1 at once; after {} of silence each client \
         reconnects to the same VIP and lands on s2",
        secs(RECONNECT_AFTER)
    ));
    println!("{text}");
    if !out.status.success() {
        bail!("proxy-agent migrate failed ({})", out.status);
    }
    run.tell(|t| {
        for &i in &chosen {
            t.paths.insert(i, vec!["s1".into(), "s2".into()]);
        }
    });
    let mut arrived: Vec<Option<Duration>> = vec![None; chosen.len()];
    while arrived.iter().any(Option::is_none) && t0.elapsed() < MIGRATE_DEADLINE {
        if run.halted() {
            return Ok(());
        }
        for (k, &i) in chosen.iter().enumerate() {
            if arrived[k].is_none() && run.on(i, "s2") {
                arrived[k] = Some(t0.elapsed());
                println!("    migrate: {} arrived on s2 {} after the command", clients[k], secs(t0.elapsed()));
            }
        }
        std::thread::sleep(POLL);
    }
    let times: Vec<String> = arrived.iter().flatten().map(|d| secs(*d)).collect();
    if times.len() == chosen.len() {
        let others = (0..run.players.stats.len())
            .filter(|i| !chosen.contains(i))
            .filter(|&i| run.player(i).shards.len() == 1)
            .count();
        println!(
            "    migrate: all {} chosen players arrived on s2 (after {}); {others} others stayed where they were",
            chosen.len(),
            times.join(", ")
        );
        run.tell(|t| {
            t.migrate =
                format!("{} chosen players s1 -> s2 with the CLI, each on s2 after {}", chosen.len(), times.join(", "))
        });
    } else {
        let what = format!(
            "only {} of {} chosen players reached s2 within {}",
            times.len(),
            chosen.len(),
            secs(MIGRATE_DEADLINE)
        );
        println!("    migrate: {what}");
        run.tell(|t| {
            t.migrate = what.clone();
            t.failed.push(format!("migrate: {what}"));
        });
    }
    Ok(())
}

/// Step 3: s1's process dies; the agent fails its group over to the standby.
fn failover(run: &Run) -> Result<()> {
    let title = "failover: shard s1 dies";
    let on_s1: Vec<usize> =
        (0..run.players.stats.len()).filter(|&i| run.player(i).current_shard() == Some("s1")).collect();
    // Detection (3 probes), the players' silence, and their handshakes
    // (two each) at the standby's pace, with room to spare.
    let needs =
        Duration::from_secs(3) + RECONNECT_AFTER + Duration::from_secs_f64(2.0 * on_s1.len() as f64 / HANDSHAKE_RATE);
    if let Some(why) = run.begin(run.seconds / 2, needs, title) {
        run.tell(|t| t.failover = why);
        return Ok(());
    }
    // Who is on s1 now (the step may have started later than planned).
    let on_s1: Vec<usize> =
        (0..run.players.stats.len()).filter(|&i| run.player(i).current_shard() == Some("s1")).collect();
    if on_s1.is_empty() {
        println!("    failover: nobody is on s1");
        run.tell(|t| t.failover = "skipped: nobody was on s1".into());
        return Ok(());
    }
    println!(
        "    failover: s1 has {} players; s4 is the standby, empty; killing s1's samp-shard (pid {})",
        on_s1.len(),
        run.s1_pid
    );
    // SAFETY: SIGKILL to our own child, which `Shards` reaps only at
    // teardown, so the pid cannot have been reused.
    unsafe { libc::kill(run.s1_pid as i32, libc::SIGKILL) };
    let died = Instant::now();
    let died_ms = unix_ms();
    run.s1_dead.store(true, Ordering::Relaxed);
    let mut repointed: Option<(Duration, String)> = None;
    let mut last_events = died;
    let mut first_back: Option<Duration> = None;
    let mut all_back: Option<Duration> = None;
    while died.elapsed() < FAILOVER_DEADLINE {
        if run.halted() {
            return Ok(());
        }
        if repointed.is_none() && last_events.elapsed() >= Duration::from_millis(100) {
            last_events = Instant::now();
            let events: Vec<Event> =
                serde_json::from_value(proxy_agent::cli::send(&run.agent.socket, &Request::Events)?)
                    .context("reading the agent's events")?;
            if let Some(e) = events.iter().find(|e| e.kind == "failover" && e.shard == "s1") {
                let after = Duration::from_millis(e.at_ms.saturating_sub(died_ms));
                let target = e.target.clone().unwrap_or_default();
                let groups = if e.groups.len() == 1 {
                    "its group".to_string()
                } else {
                    format!("its {} groups", e.groups.len())
                };
                // Why s1 was marked down: its refusals (a killed process)
                // or, on a silent host, the missed probes.
                let why = events
                    .iter()
                    .rfind(|d| d.kind == "health_down" && d.shard == "s1")
                    .map_or_else(|| "it went down".to_string(), |d| d.detail.clone());
                println!(
                    "    failover: s1 went down: {why}; {} ms after the kill the agent had repointed {groups} \
                     ({} players) to {target}, one GROUPS write each",
                    after.as_millis(),
                    e.players
                );
                run.tell(|t| {
                    for &i in &on_s1 {
                        t.paths.insert(i, vec!["s1".into(), target.clone()]);
                    }
                });
                repointed = Some((after, target));
            }
        }
        if let Some((_, target)) = &repointed {
            let back = on_s1.iter().filter(|&&i| run.on(i, target)).count();
            if back > 0 && first_back.is_none() {
                first_back = Some(died.elapsed());
                println!(
                    "    failover: the first of them is back on {target} {} after the kill (silence, then a new handshake)",
                    secs(died.elapsed())
                );
            }
            if back == on_s1.len() {
                all_back = Some(died.elapsed());
                break;
            }
        }
        std::thread::sleep(POLL);
    }
    match (repointed, all_back) {
        (Some((after, target)), Some(back)) => {
            let line = format!(
                "s1 died; {:.2} s later its group moved to {target}; all {} of its players were back on {target} after {}",
                after.as_secs_f64(),
                on_s1.len(),
                secs(back)
            );
            println!("    failover: {line}");
            run.tell(|t| t.failover = line);
        }
        (repointed, _) => {
            let what = match repointed {
                None => format!("the agent did not fail s1 over within {}", secs(FAILOVER_DEADLINE)),
                Some((_, target)) => {
                    let back = on_s1.iter().filter(|&&i| run.on(i, &target)).count();
                    format!(
                        "only {back} of s1's {} players were back on {target} within {}",
                        on_s1.len(),
                        secs(FAILOVER_DEADLINE)
                    )
                }
            };
            println!("    failover: {what}");
            run.tell(|t| {
                t.failover = what.clone();
                t.failed.push(format!("failover: {what}"));
            });
        }
    }
    Ok(())
}

/// One `/metrics` scrape from inside the proxy namespace.
fn scrape(topo: &Topology) -> Result<String> {
    let addr: SocketAddr = METRICS_LISTEN.parse()?;
    let mut s = topo.proxy.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))??;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}
