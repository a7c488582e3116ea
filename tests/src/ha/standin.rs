//! Stand-ins for proving the routers without the agent: a UDP echo server
//! per ingress node that stamps its node number on each answer, and a flow
//! driver that sends from many player sockets at a fixed rate and records,
//! per flow, when each answer came and from which node.

use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// No stand-in runs longer than this, whatever the test does.
const HARD_LIMIT: Duration = Duration::from_secs(300);

/// One echo thread per ingress node, on VIP:port in the node's namespace.
/// Each answer is the node's index (one byte) followed by the request.
pub struct EchoNodes {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoNodes {
    pub fn start(nodes: &[NetNs], addr: SocketAddrV4) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, ns) in nodes.iter().enumerate() {
            let socket = ns.run(|| UdpSocket::bind(addr))?.with_context(|| format!("binding {addr} in {}", ns.name))?;
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || echo(&socket, i as u8, &stop)));
        }
        Ok(EchoNodes { stop, threads })
    }
}

fn echo(socket: &UdpSocket, node: u8, stop: &AtomicBool) {
    let until = Instant::now() + HARD_LIMIT;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        if let Ok((n, from)) = socket.recv_from(&mut buf[1..]) {
            buf[0] = node;
            let _ = socket.send_to(&buf[..n + 1], from);
        }
    }
}

impl Drop for EchoNodes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Per flow, every answer: when (since the driver started) and which node.
pub type Answers = Vec<Vec<(Duration, u8)>>;

/// Sends one packet per flow every `interval` until stopped (or `limit`).
pub struct Flows {
    pub started: Instant,
    pub interval: Duration,
    answers: Arc<Mutex<Answers>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Flows {
    pub fn start(sockets: Vec<UdpSocket>, target: SocketAddrV4, interval: Duration, limit: Duration) -> Result<Self> {
        for s in &sockets {
            s.connect(target)?;
            s.set_nonblocking(true)?;
        }
        let answers = Arc::new(Mutex::new(vec![Vec::new(); sockets.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (a, st) = (answers.clone(), stop.clone());
        let limit = limit.min(HARD_LIMIT);
        let thread = std::thread::spawn(move || drive(&sockets, interval, started, started + limit, &a, &st));
        Ok(Flows { started, interval, answers, stop, thread: Some(thread) })
    }

    /// Now, on the driver's clock.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// A copy of the answers so far.
    pub fn answers(&self) -> Answers {
        self.answers.lock().unwrap().clone()
    }

    /// Waits until `cond` holds on the answers so far; fails after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Answers) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !cond(&self.answers.lock().unwrap()) {
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops sending and returns every answer.
    pub fn stop(mut self) -> Result<Answers> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("the flow driver panicked"))??;
        }
        Ok(self.answers())
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn drive(
    sockets: &[UdpSocket],
    interval: Duration,
    started: Instant,
    until: Instant,
    answers: &Mutex<Answers>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut fds: Vec<libc::pollfd> =
        sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let (mut next_send, mut seq) = (Instant::now(), 0u32);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        if Instant::now() >= next_send {
            for (flow, s) in sockets.iter().enumerate() {
                let mut msg = [0u8; 8];
                msg[..4].copy_from_slice(&(flow as u32).to_be_bytes());
                msg[4..].copy_from_slice(&seq.to_be_bytes());
                // A full queue or an unreachable answer just loses a probe.
                let _ = s.send(&msg);
            }
            seq += 1;
            next_send += interval;
        }
        let wait_ms = next_send.saturating_duration_since(Instant::now()).as_millis().min(50) as i32;
        // SAFETY: `fds` is a live array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if ready <= 0 {
            continue;
        }
        let at = started.elapsed();
        let mut got = answers.lock().unwrap();
        for (flow, fd) in fds.iter_mut().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            while let Ok(n) = sockets[flow].recv(&mut buf) {
                if n == 9 {
                    got[flow].push((at, buf[0]));
                }
            }
        }
    }
    Ok(())
}

/// The nodes that answered `flow` within `[from, to)`.
pub fn nodes_between(answers: &[(Duration, u8)], from: Duration, to: Duration) -> Vec<u8> {
    let mut nodes: Vec<u8> = answers.iter().filter(|(t, _)| *t >= from && *t < to).map(|&(_, n)| n).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The longest silence a flow saw in `[from, to]`: between consecutive
/// answers, counted from the last answer before `from` (or `from`) and up
/// to `to` (a flow that never recovers has a gap as long as the window).
pub fn longest_gap(answers: &[(Duration, u8)], from: Duration, to: Duration) -> Duration {
    let mut last = answers.iter().rev().find(|(t, _)| *t < from).map_or(from, |&(t, _)| t);
    let mut gap = Duration::ZERO;
    for &(t, _) in answers.iter().filter(|(t, _)| *t >= from && *t <= to) {
        gap = gap.max(t - last);
        last = t;
    }
    gap.max(to.saturating_sub(last))
}
