//! `cargo xtask bench memory`: what the session tables cost the kernel, from
//! the kernel's own accounting (`memlock` in each map's fdinfo), with
//! 1,048,576 sessions; and the agent's resident memory (VmRSS) with 100,000
//! and 1,000,000 established sessions indexed: as soon as the index holds
//! them, then once one more full scan has been merged (what the agent keeps
//! while it scans and after), with the peak (VmHWM) so far; and after a
//! restart that finds the million sessions pinned.

use std::{
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use crate::IDLE_TIMEOUT_MS;
use anyhow::{bail, Context, Result};
use proxy_agent::{
    batch,
    cluster::now_ns,
    dataplane::{Dataplane, TableSizes},
    protocol::Request,
};
use proxy_common::{
    net::{addr_to_map, port_to_map},
    Session, SessionKey,
};
use tests::{
    pins::PinDir,
    scenario::{wait_for, Scenario},
};

fn key(i: usize) -> SessionKey {
    let ip = [198, 19, (i / 256 % 256) as u8, (i % 256) as u8];
    SessionKey { client_addr: addr_to_map(ip), client_port: port_to_map(10_000 + (i / 65_536) as u16), frontend: 0 }
}

/// The kernel's `memlock` figure for the map pinned at `path`, in bytes.
fn memlock(path: &std::path::Path) -> Result<u64> {
    let map = aya::maps::MapData::from_pin(path)?;
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no memlock line in the map's fdinfo")
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field}"))
}

fn rss_kib(pid: u32) -> Result<u64> {
    proc_kib(pid, "VmRSS")
}

/// `sessions`: what SESSIONS is sized for and filled with (a million by
/// default); `agent_sessions`: the counts the agent's RSS is read at;
/// `idle_timeout_ms`: the agent's idle timeout, which sets its full scans'
/// interval (half of it, 0.5-10 s; the sessions written are dated so they
/// stay fresh for `IDLE_TIMEOUT_MS` whatever it is).
pub fn memory(sessions: u32, agent_sessions: &[usize], idle_timeout_ms: u64) -> Result<()> {
    if agent_sessions.iter().any(|&n| n > sessions as usize) || !agent_sessions.is_sorted() {
        bail!("--agent-sessions must ascend and stay within --sessions {sessions}");
    }
    // 1. The kernel's memory for a million sessions.
    let pins = PinDir::new("bench-memory")?;
    let sizes = TableSizes { sessions, pending: proxy_common::MAX_PENDING };
    let (_dp, tables) = Dataplane::load_sized(pins.path(), sizes)?;
    let empty = memlock(&pins.path().join(proxy_common::maps::SESSIONS))?;
    let entries: Vec<(SessionKey, Session)> =
        (0..sessions as usize).map(|i| (key(i), Session { group: 1, epoch: 0, last_seen_ns: 1 })).collect();
    batch::update(&tables.sessions, &entries)?;
    let full = memlock(&pins.path().join(proxy_common::maps::SESSIONS))?;
    let mut all = 0;
    for e in std::fs::read_dir(pins.path())? {
        let e = e?;
        if e.file_type()?.is_file() {
            all += memlock(&e.path()).unwrap_or(0);
        }
    }
    println!("memory: kernel accounting (fdinfo memlock), SESSIONS sized for {sessions} sessions");
    println!(
        "  SESSIONS empty {:.1} MiB, with {sessions} sessions {:.1} MiB ({} bytes a session; preallocated)",
        empty as f64 / 1048576.0,
        full as f64 / 1048576.0,
        full / sessions as u64
    );
    println!("  every pinned map together: {:.1} MiB (goal: 256 MiB for 1 M sessions)", all as f64 / 1048576.0);
    drop(tables);

    // 2. The agent's resident memory with its index.
    let extra = format!("max_sessions: {sessions}\nsession_idle_timeout_ms: {idle_timeout_ms}\n");
    let ahead_ns = IDLE_TIMEOUT_MS.saturating_sub(idle_timeout_ms) * 1_000_000;
    let mut sc = Scenario::start(2, |t| t.config(&[1000, 1000], &extra))?;
    let pid = sc.agent.pid().context("agent pid")?;
    let tables = sc.agent.tables()?;
    let st = sc.agent.request(&Request::Status)?;
    let home = st["shards"][0]["home_group"].as_u64().context("home group")? as u32;
    let epoch = tables.groups.get(&home, 0)?.epoch;
    println!("memory: agent VmRSS (2 shards, established sessions written into SESSIONS, indexed)");
    println!("  at start: {} KiB", rss_kib(pid)?);
    let mut written = 0;
    for &n in agent_sessions {
        let now = now_ns() + ahead_ns;
        let batch: Vec<(SessionKey, Session)> =
            (written..n).map(|i| (key(i), Session { group: home, epoch, last_seen_ns: now })).collect();
        batch::update(&tables.sessions, &batch)?;
        written = n;
        wait_for("the agent to index the sessions", Duration::from_secs(60), || {
            sc.agent.request(&Request::Status).map(|s| s["totals"]["players"] == n as u64).unwrap_or(false)
        });
        println!("  {n:>9} sessions: {} KiB (goal: 50 MiB)", rss_kib(pid)?);
        let scans = || -> u64 {
            let st = sc.agent.request(&Request::Status).ok();
            st.and_then(|s| s["agent"]["index"]["scans"].as_u64()).unwrap_or(0)
        };
        // The scan that indexed them may still be finishing: wait for the
        // end of the one after it.
        let after = scans() + 2;
        wait_for("a full scan of the sessions", Duration::from_secs(60), || scans() >= after);
        println!(
            "  {n:>9} sessions, after a full scan: {} KiB; peak so far (VmHWM, as the index grew): {} KiB",
            rss_kib(pid)?,
            proc_kib(pid, "VmHWM")?
        );
    }
    sc.agent.stop()?;
    sc.agent.restart(&sc.topo.proxy)?;
    let pid = sc.agent.pid().context("agent pid")?;
    wait_for("the restarted agent to index the sessions", Duration::from_secs(60), || {
        sc.agent.request(&Request::Status).map(|s| s["totals"]["players"] == written as u64).unwrap_or(false)
    });
    println!(
        "  restarted with {written} sessions pinned: {} KiB; peak (VmHWM): {} KiB",
        rss_kib(pid)?,
        proc_kib(pid, "VmHWM")?
    );
    Ok(())
}
