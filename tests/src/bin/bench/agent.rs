//! `cargo xtask bench agent`: what the agent's work costs as the players grow.
//!
//! For 1,000 and 100,000 established sessions (written into the pinned
//! tables in one batch, over three active shards and a standby) it times,
//! through the agent's real interfaces: `status` over the control socket, a
//! `/metrics` scrape over HTTP, `migrate --from` of a 250-player shard to the
//! standby and back, and the agent's CPU per second while idle (the
//! maintenance tick, the health probes and, for this agent, its share of the
//! background scans), read from /proc.
//!
//! With `--baseline-agent PATH` the same runs are made against another build
//! of the agent first (e.g. the last commit before the session index), and
//! each line ends with the ratio baseline / this agent.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use proxy_agent::{batch, cluster::now_ns, protocol::Request};
use proxy_common::{
    net::{addr_to_map, port_to_map},
    Session, SessionKey,
};
use tests::scenario::{wait_for, Scenario};

const METRICS: &str = "127.0.0.1:9477";
/// Players on s3, the shard `migrate --from` moves to the standby and back.
const MOVED: usize = 250;

/// Median figures of one agent build at one size.
struct Figures {
    status_ms: f64,
    scrape_ms: f64,
    migrate_ms: f64,
    idle_cpu_ms_per_s: f64,
    /// The agent's own timing of its last tick (agents that report it).
    tick_ms: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn timed(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(v))
}

/// CPU time (user + system) of a process, in ms, from /proc.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 * 1000.0 / hz)
}

/// One `/metrics` GET; the caller is in the proxy's namespace.
fn scrape() -> Result<()> {
    let mut s = TcpStream::connect(METRICS)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    if !body.contains("samp_proxy_shard_sessions") {
        bail!("the scrape returned no shard metrics");
    }
    Ok(())
}

fn key(i: usize) -> SessionKey {
    let ip = [198, 19, (i / 256 % 256) as u8, (i % 256) as u8];
    SessionKey { client_addr: addr_to_map(ip), client_port: port_to_map(10_000 + (i / 65_536) as u16), frontend: 0 }
}

/// How long each figure is measured for.
#[derive(Clone, Copy)]
pub struct Effort {
    /// Timed `status` requests and scrapes; `migrate --from` gets a third (at least 2).
    pub runs: usize,
    /// The idle CPU window.
    pub idle: Duration,
    /// The agent's session_idle_timeout_ms (`crate::IDLE_TIMEOUT_MS` by default).
    pub idle_timeout_ms: u64,
}

fn run_one(bin: &PathBuf, sessions: usize, effort: Effort) -> Result<Figures> {
    std::env::set_var("PROXY_AGENT_BIN", bin);
    let shards = [(0, 1000, "active"), (1, 1000, "active"), (2, 1000, "active"), (3, 1000, "standby")];
    let extra = format!("metrics_listen: {METRICS}\nsession_idle_timeout_ms: {}\n", effort.idle_timeout_ms);
    let sc = Scenario::start(4, |t| t.config_of(&shards, &extra))?;
    let st = sc.agent.request(&Request::Status)?;
    let home = |name: &str| -> u32 {
        st["shards"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["home_group"].as_u64().unwrap()
            as u32
    };
    let (g1, g2, g3) = (home("s1"), home("s2"), home("s3"));
    let tables = sc.agent.tables()?;
    let now = now_ns() + crate::IDLE_TIMEOUT_MS.saturating_sub(effort.idle_timeout_ms) * 1_000_000;
    let entries: Vec<(SessionKey, Session)> = (0..sessions)
        .map(|i| {
            let group = if i < MOVED {
                g3
            } else if i % 2 == 0 {
                g1
            } else {
                g2
            };
            let epoch = tables.groups.get(&group, 0).unwrap().epoch;
            (key(i), Session { group, epoch, last_seen_ns: now })
        })
        .collect();
    batch::update(&tables.sessions, &entries)?;
    wait_for("the agent to see every session", Duration::from_secs(40), || {
        sc.agent.request(&Request::Status).map(|s| s["totals"]["players"] == sessions as u64).unwrap_or(false)
    });
    let status_ms = timed(effort.runs, || sc.agent.request(&Request::Status).map(|_| ()))?;
    // Entered once, so the timing holds the HTTP exchange alone.
    let scrape_ms = sc.topo.proxy.run(|| timed(effort.runs, scrape))??;
    let mut there = false;
    let migrate_ms = timed((effort.runs / 3).max(2), || {
        let (from, to) = if there { ("s4", "s3") } else { ("s3", "s4") };
        there = !there;
        let r = sc.agent.request(&Request::Migrate { clients: vec![], from: Some(from.into()), to: to.into() })?;
        if r["moved"] != MOVED as u64 {
            bail!("moved {} players, not {MOVED}", r["moved"]);
        }
        Ok(())
    })?;
    let pid = sc.agent.pid().context("agent pid")?;
    let window = effort.idle;
    let (c0, t0) = (cpu_ms(pid)?, Instant::now());
    std::thread::sleep(window);
    let idle_cpu_ms_per_s = (cpu_ms(pid)? - c0) / t0.elapsed().as_secs_f64();
    let tick_ms = sc.agent.request(&Request::Status)?["agent"]["last_tick_ms"].as_f64();
    Ok(Figures { status_ms, scrape_ms, migrate_ms, idle_cpu_ms_per_s, tick_ms })
}

fn line(what: &str, n: usize, base: Option<f64>, ours: f64) {
    match base {
        Some(b) => {
            println!("{what:<34} {n:>7}  baseline {b:>9.2}  this {ours:>9.2}  ratio {:>7.1}x", b / ours.max(1e-3))
        }
        None => println!("{what:<34} {n:>7}  this {ours:>9.2}"),
    }
}

pub fn agent(sizes: &[usize], baseline: Option<PathBuf>, effort: Effort) -> Result<()> {
    if let Some(&n) = sizes.iter().find(|&&n| n < MOVED) {
        bail!("--sessions {n}: at least {MOVED} (the players `migrate --from` moves)");
    }
    let ours = PathBuf::from(std::env::var_os("PROXY_AGENT_BIN").context("PROXY_AGENT_BIN (set by cargo xtask)")?);
    println!("agent: 3 active shards + 1 standby, sessions written into the tables; medians (ms)");
    if let Some(b) = &baseline {
        println!("baseline agent: {}", b.display());
    }
    for &n in sizes {
        let base = baseline.as_ref().map(|b| run_one(b, n, effort)).transpose()?;
        let this = run_one(&ours, n, effort)?;
        line("status (control socket)", n, base.as_ref().map(|f| f.status_ms), this.status_ms);
        line("metrics scrape (HTTP)", n, base.as_ref().map(|f| f.scrape_ms), this.scrape_ms);
        line(&format!("migrate --from ({MOVED} players)"), n, base.as_ref().map(|f| f.migrate_ms), this.migrate_ms);
        line("idle agent CPU, ms per second", n, base.as_ref().map(|f| f.idle_cpu_ms_per_s), this.idle_cpu_ms_per_s);
        if let Some(t) = this.tick_ms {
            line("maintenance tick (agent's timing)", n, base.as_ref().and_then(|f| f.tick_ms), t);
        }
    }
    println!("  idle CPU = the maintenance tick, health probes (4 shards, 5/s) and background scans, from /proc");
    Ok(())
}
