//! What `bench e2e` reads around each window: busy CPU from /proc/stat
//! (CPUs x wall - idle - iowait, as PLATFORM.md says: the busy columns are
//! tick-sampled and under-count short bursts), exact run time of chosen
//! processes and threads (schedstat, ns), and the drop counters that say
//! where packets were lost: UDP receive-buffer errors per namespace, device
//! drops, veth's own counters (`ethtool -S`), the kernel's backlog drops.

use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context, Result};
use tests::netns::NetNs;

/// One reading of /proc/stat.
#[derive(Clone)]
pub struct CpuSnap {
    at: Instant,
    /// idle + iowait ticks per CPU.
    idle: Vec<u64>,
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// Nanoseconds per /proc/stat tick.
pub fn tick_ns() -> f64 {
    1e9 / clk_tck() as f64
}

pub fn cpu_snap() -> Result<CpuSnap> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let at = Instant::now();
    let idle = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0)
        })
        .collect();
    Ok(CpuSnap { at, idle })
}

/// Busy CPU between two readings.
#[derive(Debug, Clone, Default)]
pub struct Busy {
    pub wall_ns: f64,
    /// Whole machine, ns of CPU time.
    pub total_ns: f64,
    /// Per CPU, fraction of the wall time it was busy.
    pub per_cpu: Vec<f64>,
}

impl Busy {
    /// CPUs x wall: the machine's capacity over the window.
    pub fn total_wall_cpus_ns(&self) -> f64 {
        self.per_cpu.len() as f64 * self.wall_ns
    }
}

pub fn busy(a: &CpuSnap, b: &CpuSnap) -> Busy {
    let wall_ns = (b.at - a.at).as_nanos() as f64;
    let t = tick_ns();
    let per_cpu: Vec<f64> = a
        .idle
        .iter()
        .zip(&b.idle)
        .map(|(x, y)| (1.0 - (y.saturating_sub(*x)) as f64 * t / wall_ns).clamp(0.0, 1.0))
        .collect();
    let idle_ns: f64 = a.idle.iter().zip(&b.idle).map(|(x, y)| y.saturating_sub(*x) as f64 * t).sum();
    Busy { wall_ns, total_ns: a.idle.len() as f64 * wall_ns - idle_ns, per_cpu }
}

/// Run time (ns, exact) of every thread of process `pid`.
pub fn process_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Run time (ns) of one thread of this process.
pub fn thread_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Drop counters of the topology, by name ("proxy: udp RcvbufErrors",
/// "proxy to-client: rx_queue_0_drops", ...). Only counters that can mean
/// a lost packet are kept.
pub type Drops = BTreeMap<String, u64>;

/// Reads /proc/thread-self/net/{snmp,dev} inside `ns` (per-namespace
/// counters) and `ethtool -S` of the named interfaces.
fn ns_drops(ns: &NetNs, label: &str, ifaces: &[&str], out: &mut Drops) -> Result<()> {
    let (snmp, dev) = ns.run(|| -> Result<(String, String)> {
        Ok((
            std::fs::read_to_string("/proc/thread-self/net/snmp")?,
            std::fs::read_to_string("/proc/thread-self/net/dev")?,
        ))
    })??;
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() >= 2 {
        for (k, v) in udp[0].split_whitespace().zip(udp[1].split_whitespace()).skip(1) {
            if matches!(k, "RcvbufErrors" | "SndbufErrors" | "InErrors" | "InCsumErrors" | "NoPorts") {
                out.insert(format!("{label}: udp {k}"), v.parse().unwrap_or(0));
            }
        }
    }
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() >= 12 {
            out.insert(format!("{label} {}: rx_dropped", name.trim()), f[3]);
            out.insert(format!("{label} {}: tx_dropped", name.trim()), f[11]);
        }
    }
    for ifname in ifaces {
        let Ok(text) = ns.exec("ethtool", &["-S", ifname]) else { continue };
        for l in text.lines() {
            let Some((k, v)) = l.trim().split_once(':') else { continue };
            if k.contains("drop") || k.contains("err") {
                out.insert(format!("{label} {ifname}: {k}"), v.trim().parse().unwrap_or(0));
            }
        }
    }
    Ok(())
}

/// Every drop counter of the client, proxy and shard namespaces, and the
/// kernel's per-CPU backlog drops (`softnet_stat`, column 2).
pub fn drops(client: &NetNs, proxy: &NetNs, shard: &NetNs) -> Result<Drops> {
    let mut out = Drops::new();
    ns_drops(client, "client", &["eth0"], &mut out)?;
    ns_drops(proxy, "proxy", &["to-client", "to-s1"], &mut out)?;
    ns_drops(shard, "shard", &["eth0"], &mut out)?;
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").context("reading softnet_stat")?;
    let backlog: u64 =
        softnet.lines().filter_map(|l| l.split_whitespace().nth(1).and_then(|v| u64::from_str_radix(v, 16).ok())).sum();
    out.insert("kernel: backlog drops (softnet_stat)".into(), backlog);
    Ok(out)
}

/// Counters that grew between two readings.
pub fn grown(a: &Drops, b: &Drops) -> Vec<(String, u64)> {
    b.iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// CPU ticks used so far by every process that is not ours: user + system
/// time of each process plus that of its reaped children (so a compiler
/// that starts and ends inside a window still shows in its parent), kernel
/// threads excluded (they may be doing our softirq work). Tick-sampled: it
/// only detects another load, it is not subtracted from anything.
pub fn foreign_ticks(ours: &[u32]) -> u64 {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let me = std::process::id();
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != me && !ours.contains(pid))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name: state is field 3, so field n is at n - 3.
            let rest = &stat[stat.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let ppid = num(4) as u32;
            if num(9) & PF_KTHREAD != 0 || ppid == me || ours.contains(&ppid) {
                return None;
            }
            Some(num(14) + num(15) + num(16) + num(17))
        })
        .sum()
}

/// Pids of the kernel's softirq threads (`ksoftirqd/N`): softirq work the
/// sending thread could not finish inline runs there.
pub fn ksoftirqd_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("ksoftirqd/")))
        .collect()
}
