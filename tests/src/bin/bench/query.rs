//! `cargo xtask bench query`: what answering the server browser costs.
//!
//! 1. ns per query answered by the kernel path (`i` with its ready-made
//!    answer, `p` echoed), one query per BPF_PROG_TEST_RUN call ("cold": an
//!    answer changes the frame, so repeats cannot reuse it), beside a bare
//!    XDP_PASS in the same run.
//! 2. Queries per second and CPU per answered query on the namespace
//!    topology: the same `i` queries from the client namespace, answered (a)
//!    by the data plane at the VIP and (b) by a user-space responder (a plain
//!    UDP socket loop in the proxy namespace, on the proxy's client-side
//!    address, answering with the same bytes), each for a fixed window. The
//!    responder listens on the port after the frontend's (`BASELINE_PORT`):
//!    the agent's own responder for long answers holds the frontend's port
//!    on every address of the proxy namespace. The queries take the same
//!    veths and the same XDP program (which passes them: no frontend there)
//!    either way; only the port differs. CPU
//!    is the whole machine's busy time (idle columns of /proc/stat, as
//!    PLATFORM.md says), generator included, so the ratio understates the
//!    difference; the generator (one thread) is the limit of both rates.

use std::{
    net::{SocketAddrV4, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use proxy_common::QuerySettings;
use tests::{
    bed::*,
    packet::Udp,
    scenario::Scenario,
    topology::{PORT as TOPO_PORT, PROXY_CLIENT_SIDE, VIP as TOPO_VIP},
};

use crate::{measure, Row};

/// The user-space responder's port, on the proxy's client-side address.
/// Not the frontend's: the agent's long-answer responder binds that one on
/// 0.0.0.0 in the proxy namespace, so binding it again fails (EADDRINUSE).
const BASELINE_PORT: u16 = TOPO_PORT + 1;

fn samp_query(server: std::net::Ipv4Addr, port: u16, op: u8, extra: &[u8]) -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&server.octets());
    q.extend_from_slice(&port.to_le_bytes());
    q.push(op);
    q.extend_from_slice(extra);
    q
}

/// (busy, total) CPU jiffies of the whole machine: busy = total - idle - iowait.
fn cpu_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    Ok((total - v[3] - v[4], total))
}

struct Rate {
    sent: u64,
    answered: u64,
    cpu_us_per_query: f64,
}

/// Sends `q` to `target` from the client namespace at `rate` queries a
/// second (bursts of 10) for `window`, and counts the replies.
fn drive(sc: &Scenario, target: SocketAddrV4, q: &[u8], rate: u32, window: Duration) -> Result<Rate> {
    const BURST: u32 = 10;
    let client = sc.topo.client_ips[0];
    let q = q.to_vec();
    let (b0, _) = cpu_jiffies()?;
    let (sent, answered) = sc.topo.client.run(move || -> Result<(u64, u64)> {
        let sock = UdpSocket::bind(SocketAddrV4::new(client, 0))?;
        sock.connect(target)?;
        sock.set_nonblocking(true)?;
        let mut buf = [0u8; 2048];
        let (mut sent, mut got) = (0u64, 0u64);
        let every = Duration::from_secs_f64(BURST as f64 / rate as f64);
        let start = Instant::now();
        let mut next = start;
        while next < start + window {
            for _ in 0..BURST {
                if sock.send(&q).is_ok() {
                    sent += 1;
                }
            }
            next += every;
            while Instant::now() < next {
                match sock.recv(&mut buf) {
                    Ok(n) if n > 11 => got += 1,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        }
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            if let Ok(n) = sock.recv(&mut buf) {
                got += (n > 11) as u64;
            }
        }
        Ok((sent, got))
    })??;
    let (b1, _) = cpu_jiffies()?;
    let busy_s = (b1 - b0) as f64 / 100.0;
    Ok(Rate { sent, answered, cpu_us_per_query: busy_s * 1e6 / answered.max(1) as f64 })
}

/// `rx_queue_0_xdp_tx_errors` of the proxy's client-facing veth.
fn xdp_tx_errors(sc: &Scenario) -> Result<u64> {
    let stats = sc.topo.proxy.exec("ethtool", &["-S", "to-client"])?;
    Ok(stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("rx_queue_0_xdp_tx_errors:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

pub fn query(calls: u32, window_s: u64, rate: u32) -> Result<()> {
    // 1. The program alone.
    let mut bed = Bed::new()?;
    bed.tables.query_settings.set(0, QuerySettings { per_second: 0, agent_addr: 0 }, 0)?;
    let info: Row = measure(&bed, "query `i` answered", calls, 1, XDP_TX, |i| {
        Udp::new(CLIENT, 1024 + (i % 60000) as u16, VIP, PORT, &samp_query(VIP, PORT, b'i', &[])).frame()
    })?;
    let ping: Row = measure(&bed, "query `p` echoed", calls, 1, XDP_TX, |i| {
        Udp::new(CLIENT, 1024 + (i % 60000) as u16, VIP, PORT, &samp_query(VIP, PORT, b'p', &[1, 2, 3, 4])).frame()
    })?;
    println!("query: {calls} BPF_PROG_TEST_RUN calls per row (one query each), median ns");
    for r in [info, ping] {
        println!(
            "{:<26} {:>6} ns  XDP_PASS {:>6} ns  added {:>5} ns  ratio {:>5.2}x",
            r.name,
            r.ns,
            r.baseline,
            r.ns as i64 - r.baseline as i64,
            r.ns as f64 / r.baseline.max(1) as f64
        );
    }
    drop(bed);

    // 2. On the topology: the data plane at the VIP vs a user-space responder.
    let sc = Scenario::start(2, |t| t.config(&[500, 500], "query_budget_per_second: 0\n"))?;
    let q = samp_query(TOPO_VIP, TOPO_PORT, b'i', &[]);
    let sample = sc.topo.client.run(|| -> Result<Vec<u8>> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut buf = [0u8; 2048];
        for _ in 0..20 {
            s.send_to(&q, SocketAddrV4::new(TOPO_VIP, TOPO_PORT))?;
            if let Ok(n) = s.recv(&mut buf) {
                return Ok(buf[..n].to_vec());
            }
        }
        bail!("the VIP did not answer `i` within 6 s")
    })?;
    let sample = match sample {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
    if sample.len() <= 11 {
        bail!("the VIP did not answer `i`");
    }
    let body = sample[11..].to_vec();
    let window = Duration::from_secs(window_s);
    let kernel = drive(&sc, SocketAddrV4::new(TOPO_VIP, TOPO_PORT), &q, rate, window)?;
    let tx_errors = xdp_tx_errors(&sc)?;

    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let stop = stop.clone();
        let ns_name = sc.topo.proxy.name.clone();
        let at = SocketAddrV4::new(PROXY_CLIENT_SIDE, BASELINE_PORT);
        let sock = sc
            .topo
            .proxy
            .run(|| UdpSocket::bind(at))?
            .with_context(|| format!("binding the user-space responder to {at} in the proxy namespace"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        std::thread::spawn(move || {
            let _ = ns_name;
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if n < 11 {
                    continue;
                }
                let mut reply = buf[..11].to_vec();
                reply.extend_from_slice(&body);
                let _ = sock.send_to(&reply, from);
            }
        })
    };
    let user = drive(&sc, SocketAddrV4::new(PROXY_CLIENT_SIDE, BASELINE_PORT), &q, rate, window);
    // Stopped before any error is returned, so the scenario's teardown finds it gone.
    stop.store(true, Ordering::Relaxed);
    let _ = responder.join();
    let user = user?;

    println!("query: `i` at {rate} queries/s from one client thread for {window_s} s each");
    for (name, r) in [("kernel (XDP_TX at the VIP)", &kernel), ("user-space responder", &user)] {
        println!(
            "{:<28} {:>8} sent {:>8} answered ({:>5.1}%)  {:>6.2} µs busy CPU per answered query (whole machine)",
            name,
            r.sent,
            r.answered,
            100.0 * r.answered as f64 / r.sent.max(1) as f64,
            r.cpu_us_per_query
        );
    }
    println!("answered per second, kernel / user space: {:.2}x", kernel.answered as f64 / user.answered.max(1) as f64);
    println!(
        "CPU per answered query, user space / kernel: {:.2}x",
        user.cpu_us_per_query / kernel.cpu_us_per_query.max(1e-9)
    );
    println!("  XDP_TX frames the veth could not hand to the client's side (ethtool xdp_tx_errors): {tx_errors}");
    println!("  (veth: an XDP_TX frame costs the peer a copy; CPU includes the generator and both stacks)");
    Ok(())
}
