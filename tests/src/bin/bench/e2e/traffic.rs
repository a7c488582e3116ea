//! The traffic of `bench e2e`: 64 player flows (connected UDP sockets in the
//! client namespace), a rate-limited `sendmmsg` generator, a `recvmmsg` sink
//! in the shard namespace that answers handshakes and queries like a shard
//! and can echo, and a low-rate ping-pong for latency. Every loop is bounded
//! in time and count, and stops when `STOP` is set (Ctrl-C).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use proxy_common::samp;
use tests::{
    sim::wire::{self, Info},
    topology::{Topology, PORT},
};

use super::STOP;

pub const FLOWS: usize = 64;
/// UDP payload bytes of every generated packet.
pub const PAYLOAD: usize = 64;
/// Messages per `sendmmsg` call (all on one flow's socket).
const BATCH: usize = 32;
/// The generator wakes this often and sends what the rate says is due.
const TICK: Duration = Duration::from_micros(500);
/// At most this many ticks' worth of packets are caught up at once; a
/// generator further behind forgives the rest (it shows as a shortfall).
const CATCH_UP_TICKS: u64 = 4;

/// Nice value of every thread that carries the bench's traffic (generator,
/// sink, ping-pong, relay): another process on the machine must not starve
/// them. It changes nothing on a quiet machine.
pub const NICE: libc::c_int = -20;

/// Sets the nice value of one thread (`tid`; 0 = the calling thread).
pub fn renice(tid: i32) -> Result<()> {
    // SAFETY: setpriority on a thread id; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) } != 0 {
        bail!("setting nice {NICE} on thread {tid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to one CPU and gives it the traffic's priority.
pub fn pin_to(cpu: usize) -> Result<()> {
    renice(0)?;
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked by the caller: 2 CPUs).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set is valid for its size.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        bail!("pinning a thread to CPU{cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's id of the calling thread.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: usize) {
    let v = bytes as libc::c_int;
    // SAFETY: setsockopt on an open socket with a c_int value (root may
    // exceed rmem_max with SO_RCVBUFFORCE; the bench runs as root).
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// A scrambled SA:MP game packet (ID_PLAYER_SYNC) of exactly `PAYLOAD` bytes.
pub fn payload(seq: u32) -> Vec<u8> {
    let p = wire::game_packet(seq, PAYLOAD - 6, PORT);
    debug_assert_eq!(p.len(), PAYLOAD);
    p
}

/// The player flows: one connected UDP socket each, on fixed source ports
/// spread over the client addresses, kept for the whole bench (so the data
/// plane's sessions and conntrack entries stay the same flows).
pub struct Flows {
    pub socks: Vec<UdpSocket>,
    pub local: Vec<SocketAddrV4>,
}

impl Flows {
    pub fn open(topo: &Topology) -> Result<Flows> {
        let ips = topo.client_ips.clone();
        let local: Vec<SocketAddrV4> =
            (0..FLOWS).map(|i| SocketAddrV4::new(ips[i % ips.len()], 40_000 + i as u16)).collect();
        let addrs = local.clone();
        let socks = topo.client.run(move || {
            addrs.iter().map(|a| UdpSocket::bind(a).with_context(|| format!("binding {a}"))).collect::<Result<Vec<_>>>()
        })??;
        Ok(Flows { socks, local })
    }

    /// Points every flow at `target` (a connected socket accepts datagrams
    /// from that address only: replies must come from it).
    pub fn connect(&self, target: SocketAddrV4) -> Result<()> {
        for s in &self.socks {
            s.connect(target)?;
        }
        Ok(())
    }

    /// Throws away whatever waits in the flows' receive queues.
    pub fn drain(&self) -> Result<()> {
        let mut buf = [0u8; 2048];
        for s in &self.socks {
            s.set_nonblocking(true)?;
            for _ in 0..10_000 {
                if s.recv(&mut buf).is_err() {
                    break;
                }
            }
            s.set_nonblocking(false)?;
        }
        Ok(())
    }

    /// The SA:MP handshake on every flow (24 with cookie 0 -> 26 -> 24 with
    /// cookie ^ 0x6969 -> 25), as a client does, so that the data plane
    /// admits each source and promotes it when the shard answers. Retries
    /// every 200 ms; fails after `timeout`.
    pub fn handshake(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        for (i, s) in self.socks.iter().enumerate() {
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut cookie = None;
            let mut connected = false;
            while !connected {
                if Instant::now() > deadline || STOP.load(Ordering::Relaxed) {
                    bail!("flow {} did not complete the SA:MP handshake within {timeout:?}", self.local[i]);
                }
                let w = wire::handshake_request(cookie.map(|c: u16| c ^ samp::COOKIE_XOR).unwrap_or(0), PORT);
                s.send(&w)?;
                while Instant::now() < deadline {
                    let Ok(n) = s.recv(&mut buf) else { break };
                    match buf[..n] {
                        [samp::ID_OPEN_CONNECTION_COOKIE, lo, hi] => {
                            cookie = Some(u16::from_le_bytes([lo, hi]));
                            break;
                        }
                        [samp::ID_OPEN_CONNECTION_REPLY, _] => {
                            connected = true;
                            break;
                        }
                        _ => {}
                    }
                }
            }
            s.set_read_timeout(None)?;
        }
        Ok(())
    }
}

/// What one generator run offered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offer {
    /// rate x window: what should have been sent.
    pub target: u64,
    pub sent: u64,
    /// Failed `sendmmsg` calls (ENOBUFS, EAGAIN...).
    pub errors: u64,
    /// CPU time of the generator's thread (exact), which includes the
    /// softirq work its sends run inline (this kernel has no
    /// IRQ_TIME_ACCOUNTING, so that time is charged to the thread).
    pub thread_ns: u64,
}

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends `rate` packets a second for `window` over all flows, in batches
/// of up to `BATCH` on one flow at a time (flows in turn), waking every
/// `TICK` and sleeping in between, so the generator's own CPU is small and
/// the same for every path. Run it on a thread pinned to CPU0.
pub fn offer(flows: &Flows, rate: u64, window: Duration) -> Offer {
    let target = (rate as f64 * window.as_secs_f64()).round() as u64;
    let data = payload(1);
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: all-zero mmsghdrs are valid (no name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: prctl with an integer argument; 1 µs of timer slack so the
    // ticks are kept (the default 50 µs would stretch them).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    let per_tick = (rate as f64 * TICK.as_secs_f64()).ceil() as u64;
    let cap = per_tick.max(1) * CATCH_UP_TICKS;
    let (mut sent, mut forgiven, mut errors) = (0u64, 0u64, 0u64);
    let mut flow = 0usize;
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let mut next = start;
    loop {
        let elapsed = start.elapsed();
        // The last round sends what is still due, so a generator that kept
        // up sends exactly rate x window.
        let last = elapsed >= window || STOP.load(Ordering::Relaxed);
        let due = if last { target } else { ((rate as u128 * elapsed.as_nanos()) / 1_000_000_000) as u64 };
        let mut owed = due.min(target).saturating_sub(sent + forgiven);
        if owed > cap {
            forgiven += owed - cap;
            owed = cap;
        }
        while owed > 0 {
            let n = owed.min(BATCH as u64) as usize;
            let fd = flows.socks[flow].as_raw_fd();
            flow = (flow + 1) % FLOWS;
            // SAFETY: `msgs` holds BATCH valid headers pointing at `iov`,
            // which points at `data`; both outlive the call.
            let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
            if r <= 0 {
                errors += 1;
                break;
            }
            sent += r as u64;
            owed -= r as u64;
        }
        if last {
            break;
        }
        next += TICK;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Offer { target, sent, errors, thread_ns: thread_cpu_ns() - cpu0 }
}

/// What the sink has counted, shared with its thread.
#[derive(Default)]
pub struct SinkCounts {
    /// Data datagrams (neither handshakes nor queries).
    pub data: AtomicU64,
    pub handshakes: AtomicU64,
    pub queries: AtomicU64,
    /// Source address of the last data datagram (host order).
    pub last_source: AtomicU32,
    pub tid: AtomicI32,
}

/// The receiving end, standing in for a shard: one socket on the shard's
/// port in the shard namespace, read with `recvmmsg` by a thread pinned to
/// CPU1. It answers the SA:MP handshake (cookie from the client IP, as the
/// shard simulator does) and the agent's `p`/`i` health probes, counts data
/// datagrams, and echoes them while `echo` is set.
pub struct Sink {
    pub counts: Arc<SinkCounts>,
    pub echo: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    pub fn spawn(sock: UdpSocket, cpu: usize) -> Result<Sink> {
        set_rcvbuf(&sock, 8 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let counts = Arc::new(SinkCounts::default());
        let echo = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let thread = {
            let (counts, echo, stop) = (counts.clone(), echo.clone(), stop.clone());
            std::thread::Builder::new().name("e2e-sink".into()).spawn(move || {
                let pinned = pin_to(cpu);
                counts.tid.store(gettid(), Ordering::Relaxed);
                let ok = pinned.is_ok();
                let _ = pinned_tx.send(pinned);
                if ok {
                    sink_loop(&sock, &counts, &echo, &stop);
                }
            })?
        };
        pinned_rx.recv().context("the sink thread died")??;
        Ok(Sink { counts, echo, stop, thread: Some(thread) })
    }

    pub fn data(&self) -> u64 {
        self.counts.data.load(Ordering::Relaxed)
    }

    /// Waits until no data datagram has arrived for 20 ms (at most 500 ms):
    /// what was in flight when the generator stopped is counted.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut last = self.data();
        let mut quiet = 0;
        while quiet < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            let now = self.data();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const SINK_SEED: u32 = 0x5eed_e2e0;

/// The cookie a shard gives `client` (from its IP, as open.mp derives it).
fn cookie_for(client: Ipv4Addr) -> u16 {
    let h = (SINK_SEED ^ u32::from(client)).wrapping_mul(0x9e37_79b1);
    (h >> 16) as u16
}

/// The answer a shard gives to a control datagram (handshake or query), or
/// `None` for a data datagram.
fn answer(data: &[u8], from: SocketAddrV4, counts: &SinkCounts) -> Option<Option<Vec<u8>>> {
    if samp::is_query(data) {
        counts.queries.fetch_add(1, Ordering::Relaxed);
        return Some(match data[10] {
            b'p' if data.len() >= 15 => Some(data[..15].to_vec()),
            b'i' => Some(
                Info {
                    password: false,
                    players: 0,
                    max_players: 1000,
                    hostname: "e2e sink".into(),
                    gamemode: "bench".into(),
                    language: "en".into(),
                }
                .reply(data),
            ),
            _ => None,
        });
    }
    if data.len() == samp::HANDSHAKE_WIRE_LEN {
        let mut plain = [0u8; 4];
        if samp::unscramble(data, PORT, &mut plain) == Some(3) && plain[0] == samp::ID_OPEN_CONNECTION_REQUEST {
            counts.handshakes.fetch_add(1, Ordering::Relaxed);
            let cookie = cookie_for(*from.ip());
            let got = u16::from_le_bytes([plain[1], plain[2]]);
            return Some(Some(if got == cookie ^ samp::COOKIE_XOR {
                vec![samp::ID_OPEN_CONNECTION_REPLY, 0]
            } else {
                let [lo, hi] = cookie.to_le_bytes();
                vec![samp::ID_OPEN_CONNECTION_COOKIE, lo, hi]
            }));
        }
    }
    None
}

fn sockaddr_v4(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)), u16::from_be(sa.sin_port))
}

fn sink_loop(sock: &UdpSocket, counts: &SinkCounts, echo: &AtomicBool, stop: &AtomicBool) {
    const N: usize = 64;
    const SIZE: usize = 2048;
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; SIZE]; N];
    // SAFETY: all-zero sockaddr_in values are valid.
    let mut names: Vec<libc::sockaddr_in> = (0..N).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: SIZE }).collect();
    // SAFETY: all-zero mmsghdrs are valid.
    let mut msgs: Vec<libc::mmsghdr> = (0..N).map(|_| unsafe { std::mem::zeroed() }).collect();
    // SAFETY: as above.
    let mut out: Vec<libc::mmsghdr> = (0..N).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut out_iovs: Vec<libc::iovec> =
        (0..N).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..N {
            msgs[i].msg_hdr.msg_name = &mut names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        // SAFETY: N headers, each pointing at its own name and buffer, all
        // alive across the call; the socket's receive timeout bounds it.
        let got = unsafe {
            libc::recvmmsg(fd, msgs.as_mut_ptr(), N as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if got <= 0 {
            continue;
        }
        let echoing = echo.load(Ordering::Relaxed);
        let (mut data, mut echoes) = (0u64, 0usize);
        for i in 0..got as usize {
            let len = msgs[i].msg_len as usize;
            let from = sockaddr_v4(&names[i]);
            match answer(&bufs[i][..len], from, counts) {
                Some(Some(reply)) => {
                    let _ = sock.send_to(&reply, SocketAddr::V4(from));
                }
                Some(None) => {}
                None => {
                    data += 1;
                    counts.last_source.store(u32::from(*from.ip()), Ordering::Relaxed);
                    if echoing {
                        out_iovs[echoes] =
                            libc::iovec { iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: len };
                        out[echoes].msg_hdr.msg_name = &mut names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
                        out[echoes].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                        out[echoes].msg_hdr.msg_iov = &mut out_iovs[echoes];
                        out[echoes].msg_hdr.msg_iovlen = 1;
                        echoes += 1;
                    }
                }
            }
        }
        counts.data.fetch_add(data, Ordering::Relaxed);
        if echoes > 0 {
            // SAFETY: `echoes` headers point at names and buffers filled by
            // the receive above, alive across the call.
            unsafe { libc::sendmmsg(fd, out.as_mut_ptr(), echoes as libc::c_uint, 0) };
        }
    }
}

/// Round trips of a low-rate ping-pong: `samples` datagrams, one at a time,
/// flows in turn, `gap` apart; each must come back byte for byte from the
/// flow's peer (the connected socket drops anything else) within 50 ms.
/// Returns (RTTs in ns, replies lost).
pub fn ping_pong(flows: &Flows, samples: usize, gap: Duration, first_seq: u32) -> Result<(Vec<u64>, u64)> {
    let mut rtts = Vec::with_capacity(samples);
    let mut lost = 0u64;
    let mut buf = [0u8; 2048];
    for s in &flows.socks {
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
    }
    for i in 0..samples {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let s = &flows.socks[i % FLOWS];
        let p = payload(first_seq.wrapping_add(i as u32));
        let t0 = Instant::now();
        s.send(&p)?;
        loop {
            match s.recv(&mut buf) {
                Ok(n) if buf[..n] == p[..] => {
                    rtts.push(t0.elapsed().as_nanos() as u64);
                    break;
                }
                Ok(_) if t0.elapsed() < Duration::from_millis(50) => continue,
                _ => {
                    lost += 1;
                    break;
                }
            }
        }
        std::thread::sleep(gap);
    }
    for s in &flows.socks {
        s.set_read_timeout(None)?;
    }
    Ok((rtts, lost))
}
