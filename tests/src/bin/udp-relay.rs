//! `udp-relay`: a small userspace UDP forwarder, built the way the usual
//! userspace game-server proxies are (one tokio task reading the public
//! socket, one upstream socket per client flow, replies sent back from the
//! public socket). `cargo xtask bench e2e` runs it as the "userspace proxy"
//! to compare against the XDP data plane and nftables DNAT.
//!
//! What a userspace relay necessarily does, unlike the XDP data plane:
//! it **hides the client's IP**. The shard sees the relay's own address and
//! an ephemeral port per flow, so a real SA:MP server would derive its
//! handshake cookie, bans and rate limits from the relay's address (see
//! `shared/SAMP.md`); it is here only as a cost reference. It keeps the port
//! (it listens on the same port the upstream serves).
//!
//! ```text
//! udp-relay --listen 198.18.100.1:7777 --upstream 198.18.11.2:7777 \
//!           [--bind 198.18.11.1] [--rcvbuf BYTES] [--idle-timeout-s 60] \
//!           [--max-flows 65536] [--seconds 600]
//! ```
//! Prints `READY` on stdout once the public socket is bound; on exit prints
//! its counts on stderr. Flows idle for `--idle-timeout-s` are forgotten; a
//! new client beyond `--max-flows` is dropped; the process exits after
//! `--seconds` (every loop is bounded).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::{net::UdpSocket, task::JoinHandle};

#[derive(Parser)]
struct Args {
    /// Public address clients send to.
    #[arg(long)]
    listen: SocketAddrV4,
    /// The server every flow is relayed to.
    #[arg(long)]
    upstream: SocketAddrV4,
    /// Local address of the upstream sockets (the address the server sees).
    #[arg(long, default_value_t = Ipv4Addr::UNSPECIFIED)]
    bind: Ipv4Addr,
    /// Receive buffer of the public socket in bytes (0: the system default).
    #[arg(long, default_value_t = 0)]
    rcvbuf: usize,
    /// Seconds without a datagram after which a flow is forgotten.
    #[arg(long, default_value_t = 60)]
    idle_timeout_s: u64,
    #[arg(long, default_value_t = 65_536)]
    max_flows: usize,
    /// Lifetime of the process.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

struct Flow {
    upstream: Arc<UdpSocket>,
    last_ms: Arc<AtomicU64>,
    replies: JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    to_upstream: AtomicU64,
    to_client: AtomicU64,
    refused_flows: AtomicU64,
    send_errors: AtomicU64,
}

/// SO_RCVBUFFORCE (root may exceed `net.core.rmem_max`), else SO_RCVBUF.
fn set_rcvbuf(sock: &std::net::UdpSocket, bytes: usize) {
    let v = bytes as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on an open socket with a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(relay(args))
}

async fn relay(args: Args) -> Result<()> {
    let std_listener =
        std::net::UdpSocket::bind(args.listen).with_context(|| format!("binding the public socket {}", args.listen))?;
    if args.rcvbuf > 0 {
        set_rcvbuf(&std_listener, args.rcvbuf);
    }
    std_listener.set_nonblocking(true)?;
    let listener = Arc::new(UdpSocket::from_std(std_listener)?);
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let now_ms = move || started.elapsed().as_millis() as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; 65_536];
    println!("READY");
    loop {
        tokio::select! {
            r = listener.recv_from(&mut buf) => {
                let Ok((n, client)) = r else { continue };
                if !flows.contains_key(&client) {
                    if flows.len() >= args.max_flows {
                        counts.refused_flows.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match open_flow(&args, client, &listener, &counts, now_ms()) {
                        Ok(flow) => {
                            flows.insert(client, flow);
                        }
                        Err(e) => {
                            eprintln!("udp-relay: flow for {client}: {e:#}");
                            continue;
                        }
                    }
                }
                let flow = &flows[&client];
                flow.last_ms.store(now_ms(), Ordering::Relaxed);
                match flow.upstream.send(&buf[..n]).await {
                    Ok(_) => counts.to_upstream.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.send_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            _ = sweep.tick() => {
                let idle_ms = args.idle_timeout_s * 1000;
                let now = now_ms();
                flows.retain(|_, f| {
                    let keep = now.saturating_sub(f.last_ms.load(Ordering::Relaxed)) < idle_ms;
                    if !keep {
                        f.replies.abort();
                    }
                    keep
                });
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    for f in flows.values() {
        f.replies.abort();
    }
    eprintln!(
        "udp-relay: {} flows, {} datagrams to upstream, {} to clients, {} refused flows, {} send errors",
        flows.len(),
        counts.to_upstream.load(Ordering::Relaxed),
        counts.to_client.load(Ordering::Relaxed),
        counts.refused_flows.load(Ordering::Relaxed),
        counts.send_errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// A connected upstream socket for `client`, and the task that sends the
/// server's replies back to the client from the public socket.
fn open_flow(
    args: &Args,
    client: SocketAddr,
    listener: &Arc<UdpSocket>,
    counts: &Arc<Counts>,
    now_ms: u64,
) -> Result<Flow> {
    let s = std::net::UdpSocket::bind(SocketAddrV4::new(args.bind, 0))?;
    s.connect(args.upstream)?;
    s.set_nonblocking(true)?;
    let upstream = Arc::new(UdpSocket::from_std(s)?);
    let last_ms = Arc::new(AtomicU64::new(now_ms));
    let replies = {
        let (upstream, listener, counts) = (upstream.clone(), listener.clone(), counts.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok(n) = upstream.recv(&mut buf).await else { continue };
                match listener.send_to(&buf[..n], client).await {
                    Ok(_) => counts.to_client.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.send_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    Ok(Flow { upstream, last_ms, replies })
}
