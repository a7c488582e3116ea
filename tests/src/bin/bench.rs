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

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use proxy_common::{net::addr_to_map, Backend, Reverse};
use tests::{bed::*, packet::Udp};

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
    },
}

const WARM_REPEAT: u32 = 200;

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
    frames: impl Fn(u32) -> Vec<u8>,
) -> Result<Row> {
    let mut ours = Vec::with_capacity(calls as usize);
    let mut base = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let f = frames(i);
        let (verdict, _, ns) = bed.run_prog(bed.dp.program(), &f, repeat);
        if verdict != expect {
            bail!("{name}: call {i} ended with verdict {verdict}, expected {expect}: the bench is not measuring the path it names");
        }
        ours.push(ns);
        let (_, _, ns) = bed.run_prog(bed.dp.baseline(), &f, repeat);
        base.push(ns);
    }
    let method = if repeat == 1 { "cold" } else { "warm" };
    Ok(Row { name, method, ns: median(&mut ours), baseline: median(&mut base) })
}

fn fastpath(calls: u32) -> Result<()> {
    let mut bed = Bed::new()?;
    let vip = addr_to_map(VIP.octets());
    // Routes for the fixed-point packets: the VIP is reachable via fwd0 and
    // the client via cli0, both with known neighbours.
    bed.ns.ip(&["route", "add", "198.18.100.1/32", "dev", "fwd0"])?;
    bed.ns.ip(&["neigh", "add", "198.18.100.1", "lladdr", "02:00:00:00:50:02", "dev", "fwd0", "nud", "permanent"])?;

    // Established hit: a known player whose shard (bent: at the VIP) is resolved.
    bed.session(CLIENT, 50000, GROUP_C, false);
    bed.dp.tables.backends.set(GROUP_C, Backend { addr: vip, _pad: 0 }, 0)?;
    let mut hit = Udp::new(CLIENT, 50000, VIP, PORT, &game_packet());
    hit.ttl = 255;
    let hit = hit.frame();
    let hit_warm = measure(&bed, "established hit", calls, WARM_REPEAT, XDP_REDIRECT, |_| hit.clone())?;
    let hit_cold = measure(&bed, "established hit", calls, 1, XDP_REDIRECT, |_| hit.clone())?;

    // Return: a reply from a "shard" at the VIP, rewritten to come from the VIP.
    let rev = Reverse { vip, port: proxy_common::net::port_to_map(PORT), frontend: 0, backend: GROUP_C };
    bed.dp.tables.reverse.insert(vip, rev, 0)?;
    let mut reply = Udp::new(VIP, PORT, CLIENT, 50000, &[0xE3; 40]);
    reply.ttl = 255;
    let reply = reply.frame();
    let ret_warm = measure(&bed, "return path", calls, WARM_REPEAT, XDP_REDIRECT, |_| reply.clone())?;
    let ret_cold = measure(&bed, "return path", calls, 1, XDP_REDIRECT, |_| reply.clone())?;

    // Placement: a new source every call, a handshake, hashed into the table.
    bed.place_all_on(GROUP_A);
    let place_cold = measure(&bed, "placement (new player)", calls, 1, XDP_REDIRECT, |i| {
        let client = Ipv4Addr::new(198, 18, 60, 2 + (i / 60000) as u8);
        Udp::new(client, 1024 + (i % 60000) as u16, VIP, PORT, &handshake(0)).frame()
    })?;

    println!("fastpath: {calls} BPF_PROG_TEST_RUN calls per row, median ns per packet");
    println!("  warm = repeat {WARM_REPEAT} per call, caches warm; cold = one packet per call");
    println!("{:<26} {:<6} {:>7} {:>9} {:>7} {:>9}", "path", "method", "ns", "XDP_PASS", "ratio", "added ns");
    for r in [hit_warm, ret_warm, hit_cold, ret_cold, place_cold] {
        println!(
            "{:<26} {:<6} {:>7} {:>9} {:>6.2}x {:>9}",
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

fn main() -> Result<()> {
    match Cli::parse().what {
        What::Fastpath { calls } => fastpath(calls),
    }
}
