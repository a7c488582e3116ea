//! SA:MP-aware health checks: a `p` (ping) query proves the shard's game
//! server answers on its port; an `i` (info) query reports its players and
//! slots, which feed placement. Consecutive misses mark a shard down,
//! consecutive answers up again (hysteresis: no flapping).
//!
//! A shard whose process is gone while its host lives is seen dead at once:
//! its kernel refuses the probe (ICMP port unreachable, which a connected UDP
//! socket reports as ECONNREFUSED); a second ping from a new socket a few
//! milliseconds later confirms it, so one stray ICMP cannot fail a shard
//! over; two refusals in a row mark it down without waiting for
//! `down_after` misses. Silence (a host gone, a link cut, a hung server)
//! keeps the miss count. The data plane sees a crash first (the shard
//! refuses its players' packets): the owner then asks for an immediate probe
//! of that shard outside the rounds ([`UrgentProbe`]).

use std::{
    collections::HashSet,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::UdpSocket,
    sync::mpsc::UnboundedReceiver,
    time::{timeout_at, Instant},
};

use crate::{
    config::HealthConfig,
    sites::{TunnelChannel, TunnelSocket, Via},
};

/// Who to probe and how.
pub struct ProbePlan {
    pub targets: Vec<Target>,
    pub health: HealthConfig,
}

/// One shard to probe: its name, its game address, and the tunnel to its
/// site when it sits in another one (the probe takes the players' path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddrV4,
    pub via: Option<Via>,
}

/// What the probe loop needs of the cluster's owner: the plan of each
/// round, and somewhere to hand the outcomes.
pub trait HealthOwner: Clone + Send + Sync + 'static {
    /// The next round's plan; None when the owner is gone (the loop ends).
    fn probe_plan(&self) -> impl std::future::Future<Output = Option<ProbePlan>> + Send;
    fn health_round(&self, results: Vec<(String, ProbeOutcome)>);
    /// An urgent probe of `shard` found this.
    fn probed_now(&self, shard: String, outcome: ProbeOutcome);
}

pub mod answers;
mod state;

pub use state::{DownReason, Health, Transition};

use answers::ShardAnswers;

/// The ping goes out alone first; the other queries follow its echo, or
/// this long, whichever is first. A dead shard's kernel then refuses one
/// datagram per probe, not five: it rate-limits ICMP errors per destination
/// (`net.ipv4.icmp_ratelimit`: a burst of 6, then 1 a second), and the
/// confirming ping needs one of them.
const PING_HEAD_START: Duration = Duration::from_millis(5);
/// How long after a refusal the confirming ping goes out.
const CONFIRM_AFTER: Duration = Duration::from_millis(5);

/// Probes every shard each `health.interval_ms`, all at once, and hands the
/// round to the cluster's owner (which fails over what went down). Probes
/// the owner asks for at once (`urgent`) run beside the rounds.
pub async fn probe_loop(owner: impl HealthOwner, urgent: UnboundedReceiver<UrgentProbe>) {
    tokio::spawn(urgent_probes(owner.clone(), urgent));
    let mut nonce: u32 = std::process::id();
    while let Some(plan) = owner.probe_plan().await {
        let started = Instant::now();
        let mut probes = tokio::task::JoinSet::new();
        for t in plan.targets {
            nonce = next_nonce(nonce);
            let wait = Duration::from_millis(plan.health.timeout_ms);
            let n = nonce;
            probes.spawn(async move { (t.name, probe_asking(t.addr, t.via.as_ref(), wait, n, Ask::Everything).await) });
        }
        owner.health_round(probes.join_all().await);
        tokio::time::sleep_until(started + Duration::from_millis(plan.health.interval_ms)).await;
    }
}

fn next_nonce(n: u32) -> u32 {
    n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223)
}

/// A probe of one shard now, outside the rounds: the data plane saw the
/// shard refuse a player's packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrgentProbe {
    pub shard: String,
    pub addr: SocketAddrV4,
    pub via: Option<Via>,
    /// `health.timeout_ms`.
    pub wait: Duration,
}

/// Runs each urgent probe at once, one per shard at a time (asks for a shard
/// already being probed are dropped). A ping is enough: only a confirmed
/// refusal goes to the owner, which folds it in as a round's would be; an
/// answer or silence waits for the next round (so a stray ICMP adds no miss).
async fn urgent_probes(owner: impl HealthOwner, mut asks: UnboundedReceiver<UrgentProbe>) {
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut nonce = std::process::id().rotate_left(16);
    while let Some(ask) = asks.recv().await {
        if !in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(ask.shard.clone()) {
            continue;
        }
        nonce = next_nonce(nonce);
        let (owner, in_flight, n) = (owner.clone(), in_flight.clone(), nonce);
        tokio::spawn(async move {
            let outcome = probe_asking(ask.addr, ask.via.as_ref(), ask.wait, n, Ask::Ping).await;
            in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&ask.shard);
            log::debug!("urgent probe of {} ({}): {}", ask.shard, ask.addr, outcome.label());
            if outcome == ProbeOutcome::Refused {
                owner.probed_now(ask.shard, outcome);
            }
        });
    }
}

/// A query request: magic, the address asked, the port (little-endian), opcode.
pub fn query(server: SocketAddrV4, opcode: u8, extra: &[u8]) -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&server.ip().octets());
    q.extend_from_slice(&server.port().to_le_bytes());
    q.push(opcode);
    q.extend_from_slice(extra);
    q
}

/// Players and slots from an `i` reply (after the 11-byte echoed header:
/// password u8, players u16, max players u16, ...).
pub fn parse_info(reply: &[u8], request: &[u8]) -> Option<(u16, u16)> {
    if reply.len() < 16 || reply[..11] != request[..11] {
        return None;
    }
    Some((u16::from_le_bytes([reply[12], reply[13]]), u16::from_le_bytes([reply[14], reply[15]])))
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub rtt: Duration,
    /// (players, max players) when the `i` answer came too.
    pub info: Option<(u16, u16)>,
    /// Its `r`, `c` and `o` answers, for the cluster's own answers; `None`
    /// when only a ping was asked (the last answers stand).
    pub answers: Option<ShardAnswers>,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// The ping was echoed.
    Answered(ProbeResult),
    /// The shard's port refused the probe and, a few ms later, a second
    /// ping: the host lives, the game server does not.
    Refused,
    /// No echo within the wait (host gone, link cut, server hung, or one
    /// refusal not confirmed).
    Silent,
}

impl ProbeOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Answered(_) => "answered",
            Self::Refused => "refused",
            Self::Silent => "silent",
        }
    }
}

/// What to ask a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// `p`, then `i`, `r`, `c` and `o`.
    Everything,
    /// `p` only.
    Ping,
}

/// Probes a shard once: the ping must be echoed within `wait`. Also asks
/// `i`, `r`, `c` and `o`, and waits for them within `wait` (a shard that
/// never answers `o`, as SA:MP 0.3.7, just ends the wait then).
pub async fn probe(shard: SocketAddrV4, wait: Duration, nonce: u32) -> ProbeOutcome {
    probe_asking(shard, None, wait, nonce, Ask::Everything).await
}

/// Pings a shard once (with the same confirmation of a refusal).
pub async fn ping(shard: SocketAddrV4, wait: Duration, nonce: u32) -> ProbeOutcome {
    probe_asking(shard, None, wait, nonce, Ask::Ping).await
}

async fn probe_asking(shard: SocketAddrV4, via: Option<&Via>, wait: Duration, nonce: u32, ask: Ask) -> ProbeOutcome {
    let deadline = Instant::now() + wait;
    match attempt(shard, via, deadline, nonce, ask).await {
        Attempt::Done(outcome) => outcome,
        Attempt::Refused => {
            // Confirm from a new socket (a new port): an error left over on
            // the first one, or one stray ICMP, cannot confirm itself.
            tokio::time::sleep(CONFIRM_AFTER).await;
            let deadline = deadline.max(Instant::now() + CONFIRM_AFTER);
            match attempt(shard, via, deadline, next_nonce(nonce), Ask::Ping).await {
                Attempt::Refused => ProbeOutcome::Refused,
                Attempt::Done(outcome) => outcome,
            }
        }
    }
}

enum Attempt {
    /// The port refused before the ping was echoed.
    Refused,
    Done(ProbeOutcome),
}

fn refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// Where a probe's queries go: a connected UDP socket of its own, or a
/// channel through the tunnel to the shard's site.
enum Link {
    Direct(UdpSocket),
    Tunnel(TunnelChannel),
}

impl Link {
    async fn open(shard: SocketAddrV4, via: Option<&Via>) -> io::Result<Link> {
        match via {
            None => {
                let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
                socket.connect(shard).await?;
                Ok(Link::Direct(socket))
            }
            Some(v) => {
                Ok(Link::Tunnel(TunnelSocket::shared(v.source, v.remote.port()).await?.channel(v.remote, shard)))
            }
        }
    }

    async fn send(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Link::Direct(s) => s.send(data).await,
            Link::Tunnel(t) => t.send(data).await,
        }
    }

    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Direct(s) => s.recv(buf).await,
            Link::Tunnel(t) => t.recv(buf).await,
        }
    }
}

/// One socket's probe. A connected UDP socket gets the shard's ICMP port
/// unreachable as ECONNREFUSED, on a receive or the next send; through a
/// tunnel no refusal comes back (the remote node drops ICMP that names a
/// shard), so a dead remote shard is found by its missed probes.
async fn attempt(shard: SocketAddrV4, via: Option<&Via>, deadline: Instant, nonce: u32, ask: Ask) -> Attempt {
    let Ok(mut socket) = Link::open(shard, via).await else {
        return Attempt::Done(ProbeOutcome::Silent);
    };
    let ping = query(shard, b'p', &nonce.to_le_bytes());
    // `d` is SA:MP 0.3.7's alone: never waited for (open.mp answers no `d`,
    // and 0.3.7 no `o`, so its probe runs to the deadline and `d` is in).
    let [info, rules, clients, openmp, detail] = [b'i', b'r', b'c', b'o', b'd'].map(|op| query(shard, op, &[]));
    let started = Instant::now();
    match socket.send(&ping).await {
        Err(e) if refused(&e) => return Attempt::Refused,
        Err(_) => return Attempt::Done(ProbeOutcome::Silent),
        Ok(_) => {}
    }
    let (mut alive, mut rtt, mut players) = (false, Duration::ZERO, None);
    let mut answers = ShardAnswers::default();
    let mut rest_sent = ask == Ask::Ping;
    let mut buf = [0u8; 65_536];
    loop {
        let all_in = match ask {
            Ask::Ping => alive,
            Ask::Everything => {
                alive
                    && players.is_some()
                    && answers.rules.is_some()
                    && answers.clients.is_some()
                    && answers.openmp.is_some()
            }
        };
        if all_in {
            break;
        }
        if !rest_sent && (alive || Instant::now() >= started + PING_HEAD_START) {
            rest_sent = true;
            for q in [&info, &rules, &clients, &openmp, &detail] {
                match socket.send(q).await {
                    Ok(_) => {}
                    Err(e) if refused(&e) && !alive => return Attempt::Refused,
                    Err(_) => break,
                }
            }
        }
        let until = if rest_sent { deadline } else { (started + PING_HEAD_START).min(deadline) };
        match timeout_at(until, socket.recv(&mut buf)).await {
            Err(_) if Instant::now() >= deadline => break,
            Err(_) => continue, // the head start is over: send the rest
            Ok(Err(e)) if refused(&e) && !alive => return Attempt::Refused,
            Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                let reply = &buf[..n];
                if reply == ping.as_slice() {
                    alive = true;
                    rtt = started.elapsed();
                } else if let Some(p) = parse_info(reply, &info) {
                    players = Some(p);
                } else if let Some(b) = answers::body(reply, &rules) {
                    answers.rules = answers::parse_rules(b);
                } else if let Some(b) = answers::body(reply, &clients) {
                    answers.clients = answers::parse_clients(b);
                } else if let Some(b) = answers::body(reply, &openmp) {
                    answers.openmp = Some(b.to_vec());
                } else if let Some(b) = answers::body(reply, &detail) {
                    answers.detail = answers::parse_detail(b);
                }
            }
        }
    }
    let outcome = match alive {
        true => ProbeOutcome::Answered(ProbeResult {
            rtt,
            info: players,
            answers: (ask == Ask::Everything).then_some(answers),
        }),
        false => ProbeOutcome::Silent,
    };
    Attempt::Done(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ProbeOutcome {
        ProbeOutcome::Answered(ProbeResult {
            rtt: Duration::from_millis(1),
            info: Some((5, 100)),
            answers: Some(ShardAnswers::default()),
        })
    }

    const SILENT: ProbeOutcome = ProbeOutcome::Silent;
    const REFUSED: ProbeOutcome = ProbeOutcome::Refused;
    const MISSED: Transition = Transition::WentDown(DownReason::Missed);
    const GONE: Transition = Transition::WentDown(DownReason::Refused);

    #[test]
    fn hysteresis_needs_consecutive_results() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None, "a flap resets the count");
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(SILENT, &cfg), MISSED);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::CameUp);
        assert_eq!(h.players, Some(5));
    }

    #[test]
    fn a_refusal_marks_a_shard_down_at_once() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(REFUSED, &cfg), GONE, "no waiting for down_after misses");
        assert!(!h.up);
        assert_eq!(h.label(), "down");
        assert_eq!(h.record(REFUSED, &cfg), Transition::None, "already down");
        // Coming back takes up_after answers in a row, as after misses; a
        // refusal in between starts the count again.
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(REFUSED, &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::None);
        assert_eq!(h.record(ok(), &cfg), Transition::CameUp);
        // After misses short of down_after, a refusal ends the wait.
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(REFUSED, &cfg), GONE);
        // A shard refused at its very first probe (configured, not running).
        let mut fresh = Health::default();
        assert_eq!(fresh.record(REFUSED, &cfg), GONE);
    }

    #[test]
    fn silence_keeps_the_miss_count_whatever_came_before() {
        let cfg = HealthConfig { down_after: 2, ..HealthConfig::default() };
        let mut h = Health::default();
        assert_eq!(h.record(SILENT, &cfg), Transition::None);
        assert_eq!(h.record(SILENT, &cfg), MISSED);
        assert_eq!(MISSED, Transition::WentDown(DownReason::Missed));
        assert_eq!(DownReason::Missed.detail(&cfg), "2 probes unanswered");
        assert_eq!(
            DownReason::Refused.detail(&cfg),
            "its game port refused two probes in a row (the server process is gone)"
        );
    }

    #[test]
    fn a_ping_only_answer_keeps_the_last_answers() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        let rules = ShardAnswers { rules: Some(vec![("shard".into(), "s1".into())]), ..ShardAnswers::default() };
        let full = ProbeResult { rtt: Duration::from_millis(1), info: Some((7, 50)), answers: Some(rules.clone()) };
        h.record(ProbeOutcome::Answered(full), &cfg);
        let ping_only = ProbeResult { rtt: Duration::from_millis(2), info: None, answers: None };
        h.record(ProbeOutcome::Answered(ping_only), &cfg);
        assert_eq!((h.answers.clone(), h.players, h.rtt_ms), (rules, Some(7), Some(2.0)));
    }

    #[test]
    fn info_replies_must_echo_the_request() {
        let req = query(SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 7777), b'i', &[]);
        let mut reply = req.clone();
        reply.extend_from_slice(&[0, 7, 0, 50, 0]);
        assert_eq!(parse_info(&reply, &req), Some((7, 50)));
        reply[4] ^= 1;
        assert_eq!(parse_info(&reply, &req), None);
    }

    /// A loopback port nobody listens on (bound, then closed).
    fn closed_port() -> SocketAddrV4 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(a) = s.local_addr().unwrap() else { unreachable!() };
        a
    }

    /// Real sockets on loopback (whose ICMP the kernel never rate-limits):
    /// a closed port is refused twice, a silent one is silence, an echo an answer.
    #[tokio::test]
    async fn probes_tell_a_refusal_from_silence_and_from_an_answer() {
        let wait = Duration::from_millis(150);
        let started = Instant::now();
        assert_eq!(probe(closed_port(), wait, 1).await, ProbeOutcome::Refused);
        assert_eq!(ping(closed_port(), wait, 2).await, ProbeOutcome::Refused);
        assert!(started.elapsed() < wait, "a refusal needs no timeout: {:?}", started.elapsed());

        let mute = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(mute_addr) = mute.local_addr().unwrap() else { unreachable!() };
        let started = Instant::now();
        assert_eq!(probe(mute_addr, wait, 3).await, ProbeOutcome::Silent);
        assert!(started.elapsed() >= wait);

        // An echo of the ping only (as a server busy with the rest would).
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(echo_addr) = echo.local_addr().unwrap() else { unreachable!() };
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                if buf[10] == b'p' {
                    let _ = echo.send_to(&buf[..n], from).await;
                }
            }
        });
        match probe(echo_addr, wait, 4).await {
            ProbeOutcome::Answered(r) => assert_eq!((r.info, r.answers.is_some()), (None, true)),
            other => panic!("{other:?}"),
        }
        match ping(echo_addr, wait, 5).await {
            ProbeOutcome::Answered(r) => assert_eq!(r.answers, None, "a ping asks nothing else"),
            other => panic!("{other:?}"),
        }
    }
}
