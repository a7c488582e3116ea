//! The owner: one OS thread that holds the cluster model (and so every map
//! handle) and serialises everything done to it. The control socket, the
//! health loop and the signal handlers send it typed messages and await
//! typed replies; the metrics read the snapshot it publishes after every
//! change and every tick. Its map I/O never runs on the async runtime's
//! threads, and the one slow read (the full session scan) runs on the
//! scanner's thread while the owner keeps answering.
//!
//! Every tick (1 s): fold in the data plane's session events (also before
//! each message), expire moved sessions that never came back, refresh
//! placement, publish the snapshot, and start a full scan when one is due.

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    path::PathBuf,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::Result;
use proxy_common::{Counter, SESSION_ANSWERED, SESSION_SHARD_REFUSED};
use tokio::sync::{oneshot, watch};

#[path = "owner_agones.rs"]
mod agones;

use agones::AgonesState;

use super::{answers::FrontendAnswers, event_log::EventLog, index::MergeReport, now_ns, ClientSelector, Cluster};
use crate::{
    cluster::answered::Answered,
    config::{self, HealthConfig},
    control::{
        error::ControlError,
        protocol::Request,
        views::{AgentView, DrainView, HistogramView, IndexView, MoveReport, ReloadView, Reply, StatusView},
    },
    dataplane::{scanner::ScanPart, session_events::SessionEvents},
    events::EventKind,
    health::{ProbeOutcome, Transition, UrgentProbe},
    leases::mover::{LeaseMove, LeaseMover, LeaseOutcome},
    query::ResponderCounts,
};

/// How often the owner looks at the event ring when nothing else wakes it:
/// a 1 MiB ring holds about 32,000 events, so this keeps up with a flood;
/// and a shard's refusal of its players (a crashed process) waits at most
/// this long before the shard is probed. A look at an empty ring costs a
/// few microseconds.
const RING_POLL: Duration = Duration::from_millis(10);
const TICK: Duration = Duration::from_secs(1);
/// The longest time between two full scans (repairs and idle expiry).
const MAX_SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// What the owner publishes for readers that must not wait on it (metrics).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: StatusView,
    /// The cluster's query answers by frontend, for the agent's responder.
    pub answers: Vec<FrontendAnswers>,
    /// When the snapshot was taken.
    pub taken: Option<Instant>,
}

/// Who to probe and how.
pub struct ProbePlan {
    pub targets: Vec<(String, SocketAddrV4)>,
    pub health: HealthConfig,
}

pub type ControlReply = Result<Reply, ControlError>;

pub enum Msg {
    Control(Request, oneshot::Sender<ControlReply>),
    ProbePlan(oneshot::Sender<ProbePlan>),
    HealthRound(Vec<(String, ProbeOutcome)>),
    /// An urgent probe's outcome (a confirmed refusal), folded in as a round's.
    ProbedNow(String, ProbeOutcome),
    /// Where to ask the health loop for urgent probes.
    UrgentProbes(tokio::sync::mpsc::UnboundedSender<UrgentProbe>),
    /// A part of the scan of `generation` (see `scanner`).
    Scanned {
        generation: u64,
        result: Result<ScanPart, String>,
        took: Duration,
    },
    /// A shard asks for one of its players to move (an area transfer).
    Transfer(TransferAsk, oneshot::Sender<Result<(String, MoveReport), ControlError>>),
    /// Account leases follow moves from now on, through this mover.
    UseLeases(LeaseMover),
    /// A `return` node: players local shards accepted go here.
    ReportAnswered(tokio::sync::mpsc::UnboundedSender<Vec<Answered>>),
    /// An ingress node: game nodes' shards accepted these players.
    Answered(Vec<Answered>, oneshot::Sender<usize>),
    /// A `return` node: shards the data plane saw refuse a player go here.
    ReportRefused(tokio::sync::mpsc::UnboundedSender<Vec<String>>),
    /// An ingress node: a game node saw these shards refuse a player; the
    /// reply is how many are probed now.
    Refused(Vec<String>, oneshot::Sender<usize>),
    /// What became of a lease move.
    LeaseOutcome(LeaseOutcome),
    /// The programs are attached: the data plane forwards.
    Attached,
    /// Shards come from Agones through this task from now on.
    UseAgones(crate::agones::AgonesHandle),
    /// Every GameServer of a watched namespace, after a change.
    GameServers(String, Vec<crate::agones::gameserver::GameServer>),
    /// The decider's Lease: held, followed, or unreachable.
    Leadership(crate::agones::lease::Leadership),
    /// An API user failed (Some) or works again (None).
    KubernetesError(String, Option<String>),
    /// What an allocation came to, and how long it took.
    Allocation(crate::agones::allocate::Ask, crate::agones::allocate::Answer, Duration),
    Shutdown(oneshot::Sender<()>),
}

/// An area transfer request: who asked (the TCP peer), for whom, to where.
#[derive(Debug, Clone)]
pub struct TransferAsk {
    pub requester: std::net::Ipv4Addr,
    pub client: std::net::SocketAddrV4,
    pub to: String,
}

/// The other threads' end of the owner.
#[derive(Clone)]
pub struct OwnerHandle {
    tx: mpsc::Sender<Msg>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl OwnerHandle {
    /// Sends a control request and waits for its reply.
    pub async fn call(&self, req: Request) -> ControlReply {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Control(req, tx)).map_err(|_| ControlError::Unavailable)?;
        rx.await.map_err(|_| ControlError::Unavailable)?
    }

    pub async fn probe_plan(&self) -> Option<ProbePlan> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::ProbePlan(tx)).ok()?;
        rx.await.ok()
    }

    pub fn health_round(&self, results: Vec<(String, ProbeOutcome)>) {
        let _ = self.tx.send(Msg::HealthRound(results));
    }

    /// An urgent probe of `shard` found this.
    pub fn probed_now(&self, shard: String, outcome: ProbeOutcome) {
        let _ = self.tx.send(Msg::ProbedNow(shard, outcome));
    }

    /// Shards the data plane saw refuse a player are probed at once through `tx`.
    pub fn urgent_probes(&self, tx: tokio::sync::mpsc::UnboundedSender<UrgentProbe>) {
        let _ = self.tx.send(Msg::UrgentProbes(tx));
    }

    /// Asks for an area transfer; the reply names the shard that held the
    /// player and what moved.
    pub async fn transfer(&self, ask: TransferAsk) -> Result<(String, MoveReport), ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Transfer(ask, tx)).map_err(|_| ControlError::Unavailable)?;
        rx.await.map_err(|_| ControlError::Unavailable)?
    }

    pub fn report_answered(&self, tx: tokio::sync::mpsc::UnboundedSender<Vec<Answered>>) {
        let _ = self.tx.send(Msg::ReportAnswered(tx));
    }

    /// A `return` node: the shards its data plane sees refuse players
    /// (their process is gone) are named through `tx`.
    pub fn report_refused(&self, tx: tokio::sync::mpsc::UnboundedSender<Vec<String>>) {
        let _ = self.tx.send(Msg::ReportRefused(tx));
    }

    /// A game node saw these shards (by name) refuse players: each one
    /// still up is probed at once. Returns how many.
    pub async fn refused(&self, shards: Vec<String>) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Refused(shards, tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Players game nodes' shards accepted: promoted where pending here.
    pub async fn answered(&self, list: Vec<Answered>) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Answered(list, tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    pub fn use_leases(&self, mover: LeaseMover) {
        let _ = self.tx.send(Msg::UseLeases(mover));
    }

    pub fn lease_outcome(&self, outcome: LeaseOutcome) {
        let _ = self.tx.send(Msg::LeaseOutcome(outcome));
    }

    pub fn attached(&self) {
        let _ = self.tx.send(Msg::Attached);
    }

    pub fn use_agones(&self, handle: crate::agones::AgonesHandle) {
        let _ = self.tx.send(Msg::UseAgones(handle));
    }

    pub fn gameservers(&self, namespace: String, list: Vec<crate::agones::gameserver::GameServer>) {
        let _ = self.tx.send(Msg::GameServers(namespace, list));
    }

    pub fn leadership(&self, l: crate::agones::lease::Leadership) {
        let _ = self.tx.send(Msg::Leadership(l));
    }

    pub fn kubernetes_error(&self, who: &str, error: Option<String>) {
        let _ = self.tx.send(Msg::KubernetesError(who.into(), error));
    }

    pub fn allocation(
        &self,
        ask: crate::agones::allocate::Ask,
        answer: crate::agones::allocate::Answer,
        took: Duration,
    ) {
        let _ = self.tx.send(Msg::Allocation(ask, answer, took));
    }

    /// The last published snapshot; never waits for the owner.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Stops the owner after the message it is handling.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct ScanState {
    scanner: mpsc::Sender<u64>,
    in_flight: bool,
    /// The generation of the scan in flight.
    generation: u64,
    /// What merging its chunks found so far.
    merged: MergeReport,
    expired: usize,
    last_started: Instant,
    interval: Duration,
    done: u64,
    last_ms: Option<f64>,
    repaired: MergeReport,
    /// `session_event_lost` when the last scan began.
    lost_at_start: u64,
}

pub struct Owner {
    cluster: Cluster,
    /// The config file as last loaded; the cluster's config is this plus
    /// the shards discovered from Agones.
    file: crate::config::Validated,
    /// Shards from Agones GameServers (inert without `agones` frontends).
    agones: AgonesState,
    config_path: PathBuf,
    events: EventLog,
    /// Shards that went down whose players found no room yet: retried on
    /// every health round until capacity appears.
    parked: Vec<String>,
    expired_idle: u64,
    expired_moving: u64,
    /// Pending players promoted because a game node's shard accepted them.
    promoted_by_nodes: u64,
    ring: SessionEvents,
    scan: ScanState,
    publish: watch::Sender<Arc<Snapshot>>,
    last_tick_ms: Option<f64>,
    attached: bool,
    health_rounds: u64,
    reloads: BTreeMap<String, u64>,
    probe_rtt: HistogramView,
    responder_counts: Arc<ResponderCounts>,
    /// Hands account leases along with the players, when leases are on.
    leases: Option<LeaseMover>,
    /// A `return` node: where the players local shards accepted go.
    answered_reporter: Option<tokio::sync::mpsc::UnboundedSender<Vec<Answered>>>,
    /// The health loop's urgent probes (nodes that probe: not `return`).
    urgent_probes: Option<tokio::sync::mpsc::UnboundedSender<UrgentProbe>>,
    /// A `return` node: where the shards seen refusing players go.
    refused_reporter: Option<tokio::sync::mpsc::UnboundedSender<Vec<String>>>,
}

/// The time between full scans: often enough for the idle timeout to be
/// kept within half its length, at most every `MAX_SCAN_INTERVAL`.
fn scan_interval(idle_timeout_ms: u64) -> Duration {
    Duration::from_millis(idle_timeout_ms / 2).clamp(Duration::from_millis(500), MAX_SCAN_INTERVAL)
}

/// Starts the owner thread. `scanner` is started by the caller with a
/// `deliver` that sends `Msg::Scanned` to the sender it is given here.
pub fn spawn(
    cluster: Cluster,
    config_path: PathBuf,
    ring: SessionEvents,
    responder_counts: Arc<ResponderCounts>,
    start_scanner: impl FnOnce(mpsc::Sender<Msg>) -> Result<mpsc::Sender<u64>>,
) -> Result<OwnerHandle> {
    let (tx, rx) = mpsc::channel();
    let scanner = start_scanner(tx.clone())?;
    let (publish, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let interval = scan_interval(cluster.cfg.raw.session_idle_timeout_ms);
    let mut owner = Owner {
        file: cluster.cfg.clone(),
        agones: AgonesState::default(),
        cluster,
        config_path,
        events: EventLog::default(),
        parked: Vec::new(),
        expired_idle: 0,
        expired_moving: 0,
        promoted_by_nodes: 0,
        ring,
        scan: ScanState {
            scanner,
            in_flight: false,
            generation: 0,
            merged: MergeReport::default(),
            expired: 0,
            last_started: Instant::now(),
            interval,
            done: 0,
            last_ms: None,
            repaired: MergeReport::default(),
            lost_at_start: 0,
        },
        publish,
        last_tick_ms: None,
        attached: false,
        health_rounds: 0,
        reloads: BTreeMap::new(),
        probe_rtt: HistogramView::for_probe_rtt(),
        responder_counts,
        leases: None,
        answered_reporter: None,
        urgent_probes: None,
        refused_reporter: None,
    };
    owner.drain_ring();
    owner.publish();
    std::thread::Builder::new().name("cluster-owner".into()).spawn(move || owner.run(rx))?;
    Ok(OwnerHandle { tx, snapshot })
}

impl Owner {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now()).min(RING_POLL);
            match rx.recv_timeout(wait) {
                Ok(Msg::Shutdown(done)) => {
                    let _ = done.send(());
                    return;
                }
                Ok(msg) => {
                    self.drain_ring();
                    self.handle(msg);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.drain_ring(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Control(req, reply) => {
                let mutates =
                    !matches!(req, Request::Status | Request::Shards | Request::Sessions { .. } | Request::Events);
                let result = self.control(req);
                let _ = reply.send(result);
                if mutates {
                    self.publish();
                }
            }
            Msg::ProbePlan(reply) => {
                let c = &self.cluster.cfg;
                let targets = c
                    .shards
                    .iter()
                    .map(|s| (s.name.clone(), SocketAddrV4::new(s.address, c.frontends[s.frontend].address.port())))
                    .collect();
                let _ = reply.send(ProbePlan { targets, health: c.raw.health.clone() });
            }
            Msg::HealthRound(results) => {
                for (_, outcome) in &results {
                    if let ProbeOutcome::Answered(r) = outcome {
                        self.probe_rtt.observe(r.rtt.as_secs_f64());
                    }
                }
                self.health_rounds += 1;
                let changed = self.health_round(results);
                // What the browser sees follows the cluster within one round.
                if let Err(e) = self.cluster.write_answers() {
                    log::warn!("writing the query answers: {e:#}");
                }
                if changed || self.health_rounds == 1 {
                    self.publish();
                }
            }
            Msg::Scanned { generation, result, took } => self.scanned(generation, result, took),
            Msg::Transfer(ask, reply) => {
                let result = self.transfer(ask);
                let changed = result.is_ok();
                let _ = reply.send(result);
                if changed {
                    self.publish();
                }
            }
            Msg::UseLeases(mover) => self.leases = Some(mover),
            Msg::ReportAnswered(tx) => self.answered_reporter = Some(tx),
            Msg::UrgentProbes(tx) => self.urgent_probes = Some(tx),
            Msg::ReportRefused(tx) => self.refused_reporter = Some(tx),
            Msg::Refused(names, reply) => {
                let c = &self.cluster;
                let shards = names.iter().filter_map(|n| c.cfg.shards.iter().position(|s| &s.name == n)).collect();
                let probed = self.probe_now(shards);
                log::info!("a game node saw {} refuse a player: {probed} probed now", names.join(", "));
                let _ = reply.send(probed);
            }
            Msg::ProbedNow(shard, outcome) => {
                if self.health_round(vec![(shard, outcome)]) {
                    if let Err(e) = self.cluster.write_answers() {
                        log::warn!("writing the query answers: {e:#}");
                    }
                    self.publish();
                }
            }
            Msg::Answered(list, reply) => {
                let promoted = match self.cluster.promote_answered(&list) {
                    Ok(n) => n,
                    Err(e) => {
                        log::warn!("promoting players accepted on game nodes: {e:#}");
                        0
                    }
                };
                self.promoted_by_nodes += promoted as u64;
                let _ = reply.send(promoted);
            }
            Msg::LeaseOutcome(o) => {
                let kind = match (&o.result, o.gave_up) {
                    (Ok(_), _) => EventKind::LeaseMove,
                    (Err(_), false) => EventKind::LeaseMoveFailed,
                    (Err(_), true) => EventKind::LeaseMoveGaveUp,
                };
                let seconds = self.leases.as_ref().map(|m| m.lease_seconds).unwrap_or(0);
                let moved = *o.result.as_ref().unwrap_or(&0) as usize;
                let (from, to) = (o.attempted.from().to_string(), o.attempted.to().to_string());
                self.events.record(kind, &from, Some(&to), vec![], moved, o.detail(seconds));
                self.publish();
            }
            Msg::Attached => {
                self.attached = true;
                self.publish();
            }
            Msg::UseAgones(handle) => self.use_agones(handle),
            Msg::GameServers(namespace, list) => {
                self.on_gameservers(namespace, list);
                self.publish();
            }
            Msg::Leadership(l) => {
                self.on_leadership(l);
                self.publish();
            }
            Msg::KubernetesError(who, error) => {
                self.on_kubernetes_error(&who, error);
                self.publish();
            }
            Msg::Allocation(ask, answer, took) => {
                self.on_allocation(ask, answer, took);
                self.publish();
            }
            Msg::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// Folds the data plane's session events into the index.
    fn drain_ring(&mut self) {
        let now = now_ns();
        let index = &mut self.cluster.index;
        let mut answered = Vec::new();
        let mut refusing = Vec::new();
        self.ring.drain(|ev| {
            match ev.kind {
                SESSION_ANSWERED => answered.push(ev),
                // A shard to probe now; no session changed (the index ignores it).
                SESSION_SHARD_REFUSED => refusing.push(ev.group),
                _ => {}
            }
            index.apply(&ev, now);
        });
        if let (Some(reporter), false) = (&self.answered_reporter, answered.is_empty()) {
            let _ = reporter.send(self.cluster.answered_players(&answered));
        }
        self.probe_refusing(refusing);
    }

    /// The data plane saw these shards (backend ids) refuse a player's
    /// packet: the health loop probes each one still up at once (two
    /// refusals in a row take it down without waiting for the next round).
    /// A `return` node, which does not probe, names them to the ingress
    /// nodes instead, which do.
    fn probe_refusing(&self, backends: Vec<u32>) {
        let c = &self.cluster;
        let shards: Vec<usize> = backends.iter().filter_map(|b| c.ids.iter().position(|id| id.backend == *b)).collect();
        if let (Some(reporter), false) = (&self.refused_reporter, shards.is_empty()) {
            let mut names: Vec<String> = shards.iter().map(|&i| c.cfg.shards[i].name.clone()).collect();
            names.sort_unstable();
            names.dedup();
            let _ = reporter.send(names);
        }
        self.probe_now(shards);
    }

    /// Probes each of these shards (indices) still up at once; returns how
    /// many (none on a node that does not probe).
    fn probe_now(&self, mut shards: Vec<usize>) -> usize {
        let Some(urgent) = &self.urgent_probes else { return 0 };
        shards.sort_unstable();
        shards.dedup();
        let c = &self.cluster;
        let mut probed = 0;
        for i in shards {
            if !c.is_up(i) {
                continue;
            }
            let s = &c.cfg.shards[i];
            let _ = urgent.send(UrgentProbe {
                shard: s.name.clone(),
                addr: SocketAddrV4::new(s.address, c.cfg.frontends[s.frontend].address.port()),
                wait: Duration::from_millis(c.cfg.raw.health.timeout_ms),
            });
            probed += 1;
        }
        probed
    }

    /// The periodic work; errors are logged and retried next tick.
    fn tick(&mut self) {
        let started = Instant::now();
        let raw = &self.cluster.cfg.raw;
        let move_ns = raw.move_timeout_ms * 1_000_000;
        match self.cluster.expire_moving(now_ns(), move_ns) {
            Ok(0) => {}
            Ok(n) => {
                self.expired_moving += n as u64;
                log::info!("expired {n} moved sessions that never reconnected");
            }
            Err(e) => log::warn!("expiring moved sessions: {e:#}"),
        }
        let loads = self.cluster.loads();
        if let Err(e) = self.cluster.refresh_placement(&loads) {
            log::warn!("refreshing placement: {e:#}");
        }
        if self.agones.handle.is_some() {
            // Departed shards whose players have all moved leave the maps.
            self.reconcile_desired(false);
            self.maybe_grow();
        }
        self.maybe_scan();
        self.last_tick_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        self.publish();
    }

    /// Starts a full scan when one is due: at the interval, or at once when
    /// the ring overflowed or the index holds far more pending players than
    /// the LRU can (a flood: evictions only a scan sees).
    fn maybe_scan(&mut self) {
        if self.scan.in_flight {
            return;
        }
        let lost = self.cluster.tables().counter(Counter::SessionEventLost).unwrap_or_else(|e| {
            log::warn!("{e:#}");
            0
        });
        let due = self.scan.last_started.elapsed() >= self.scan.interval
            || lost > self.scan.lost_at_start
            || self.cluster.index.pending_len() > 2 * self.cluster.cfg.raw.max_pending as usize;
        if !due {
            return;
        }
        let generation = self.cluster.index.begin_scan();
        if self.scan.scanner.send(generation).is_ok() {
            self.scan.in_flight = true;
            self.scan.generation = generation;
            self.scan.merged = MergeReport::default();
            self.scan.expired = 0;
            self.scan.last_started = Instant::now();
            self.scan.lost_at_start = lost;
        }
    }

    /// Merges a scan's chunk as it comes (the owner answers requests between
    /// two), and finishes the merge at its end.
    fn scanned(&mut self, generation: u64, result: Result<ScanPart, String>, took: Duration) {
        if !self.scan.in_flight || generation != self.scan.generation {
            return; // a scan given up on: its chunks go back unread
        }
        let idle_ns = self.cluster.cfg.raw.session_idle_timeout_ms * 1_000_000;
        let chunk = match result {
            Ok(ScanPart::Chunk(chunk)) => chunk,
            Ok(ScanPart::Done) => return self.scan_done(generation, took),
            Err(e) => {
                self.give_up_scan();
                log::warn!("scanning the session tables: {e}; the index keeps the events and the chunks merged so far");
                return;
            }
        };
        let merged = &mut self.scan.merged;
        match self.cluster.merge_scan_chunk(generation, chunk.pending, chunk.entries(), now_ns(), idle_ns, merged) {
            Ok(idle) => self.scan.expired += idle,
            Err(e) => {
                self.give_up_scan();
                log::warn!("applying the session scan: {e:#}");
            }
        }
    }

    /// Ignores the rest of the scan in flight (the next one starts clean);
    /// the idle sessions its chunks removed still count.
    fn give_up_scan(&mut self) {
        self.scan.in_flight = false;
        self.expired_idle += std::mem::take(&mut self.scan.expired) as u64;
    }

    fn scan_done(&mut self, generation: u64, took: Duration) {
        self.scan.in_flight = false;
        let mut report = std::mem::take(&mut self.scan.merged);
        report.removed += self.cluster.index.finish_scan(generation);
        let expired = std::mem::take(&mut self.scan.expired);
        self.scan.done += 1;
        self.scan.last_ms = Some(took.as_secs_f64() * 1000.0);
        self.scan.repaired.add(&report);
        self.expired_idle += expired as u64;
        if expired > 0 {
            log::info!("expired {expired} idle sessions");
        }
        let loads = self.cluster.loads();
        if let Err(e) = self.cluster.refresh_placement(&loads) {
            log::warn!("refreshing placement after a scan: {e:#}");
        }
        if report.added + report.corrected > 0 {
            log::warn!(
                "the session scan repaired the index: {} sessions no event reported, {} corrected",
                report.added,
                report.corrected
            );
        }
    }

    fn publish(&mut self) {
        match self.status() {
            Ok(status) => {
                let answers = self.cluster.answers_by_address();
                let _ = self.publish.send(Arc::new(Snapshot { status, answers, taken: Some(Instant::now()) }));
            }
            Err(e) => log::warn!("building the status snapshot: {e}"),
        }
    }

    fn status(&self) -> Result<StatusView, ControlError> {
        let c = &self.cluster;
        let loads = c.loads();
        Ok(StatusView {
            frontends: c.frontend_views(),
            shards: c.shard_views(&loads, |name| self.parked.iter().any(|p| p == name))?,
            totals: c.totals(&loads),
            agent: AgentView {
                version: env!("CARGO_PKG_VERSION").into(),
                config: self.config_path.display().to_string(),
                expired_idle: self.expired_idle,
                expired_moving: self.expired_moving,
                events_total: self.events.totals(),
                parked_failovers: self.parked.len(),
                last_tick_ms: self.last_tick_ms,
                ready: self.attached && self.health_rounds > 0 && !c.half_applied && self.agones.api_error().is_none(),
                kubernetes: self.kubernetes_view(),
                reloads: self.reloads.clone(),
                probe_rtt: self.probe_rtt.clone(),
                queries_answered: self.responder_counts.by_type().into_iter().collect(),
                index: IndexView {
                    sessions: c.index.len(),
                    scans: self.scan.done,
                    last_scan_ms: self.scan.last_ms,
                    repaired_added: self.scan.repaired.added as u64,
                    repaired_removed: self.scan.repaired.removed as u64,
                },
            },
            counters: c.counters()?,
        })
    }

    /// Carries out one control request. A refused request changed no map.
    fn control(&mut self, req: Request) -> ControlReply {
        match req {
            Request::Status => Ok(Reply::Status(Box::new(self.status()?))),
            Request::Shards => {
                let loads = self.cluster.loads();
                Ok(Reply::Shards(self.cluster.shard_views(&loads, |name| self.parked.iter().any(|p| p == name))?))
            }
            Request::Sessions { shard, client } => {
                let client = client.as_deref().map(str::parse::<ClientSelector>).transpose()?;
                Ok(Reply::Sessions(self.cluster.sessions(shard.as_deref(), client.as_ref())?))
            }
            Request::Migrate { clients, from, to } => self.migrate(clients, from, to).map(Reply::Moved),
            Request::Drain { shard } => self.drain(&shard, true).map(Reply::Drain),
            Request::Undrain { shard } => self.drain(&shard, false).map(Reply::Drain),
            Request::Reload => {
                let result = self.reload();
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(ControlError::ReloadRolledBack(_)) => "rolled_back",
                    Err(_) => "refused",
                };
                *self.reloads.entry(outcome.into()).or_default() += 1;
                result.map(|changes| Reply::Reload(ReloadView { changes }))
            }
            Request::Events => Ok(Reply::Events(self.events.list())),
            Request::Failover { shard, to } => {
                let from = self.cluster.shard(&shard)?;
                let to = to.as_deref().map(|t| self.cluster.shard(t)).transpose()?;
                let report = self.cluster.failover(from, to)?;
                let players = report.moved;
                self.events.record(
                    EventKind::Failover,
                    &shard,
                    Some(&report.to),
                    report.groups.clone(),
                    players,
                    format!("manual: {players} players moving together to {}", report.to),
                );
                self.leases_follow_shard(&shard, &report.to);
                Ok(Reply::Moved(report))
            }
        }
    }

    fn migrate(&mut self, clients: Vec<String>, from: Option<String>, to: String) -> Result<MoveReport, ControlError> {
        let from_label = from.clone().unwrap_or_else(|| format!("clients {}", clients.join(" ")));
        let whole_shard = from.is_some();
        let report = match (clients.is_empty(), from) {
            (false, None) => {
                let sel = clients.iter().map(|c| c.parse::<ClientSelector>()).collect::<Result<Vec<_>, _>>()?;
                self.cluster.migrate_clients(&sel, &to)?
            }
            (true, Some(from)) => self.cluster.migrate_shard(&from, &to)?,
            (false, Some(_)) => return Err(ControlError::ClientsAndFrom),
            (true, None) => return Err(ControlError::NoPlayersNamed),
        };
        let what = format!("{} players moving to {} ({} already there)", report.moved, report.to, report.already_there);
        self.events.record(
            EventKind::Migration,
            &from_label,
            Some(&report.to),
            report.groups.clone(),
            report.moved,
            what,
        );
        if whole_shard {
            self.leases_follow_shard(&from_label, &report.to);
        } else {
            self.leases_follow_clients(&report);
        }
        Ok(report)
    }

    /// The leases of a whole shard's players go where its groups went.
    fn leases_follow_shard(&self, from: &str, to: &str) {
        if let Some(mover) = &self.leases {
            mover.send(LeaseMove::Shard { from: from.into(), to: to.into() });
        }
    }

    /// The leases of chosen players go with them.
    fn leases_follow_clients(&self, report: &MoveReport) {
        if let Some(mover) = &self.leases {
            for (from, clients) in &report.clients_from {
                mover.send(LeaseMove::Clients { from: from.clone(), clients: clients.clone(), to: report.to.clone() });
            }
        }
    }

    /// An area transfer, recorded as an event whether it moved or not.
    fn transfer(&mut self, ask: TransferAsk) -> Result<(String, MoveReport), ControlError> {
        let result = self.cluster.transfer(ask.requester, ask.client, &ask.to);
        match &result {
            Ok((from, report)) => {
                let what = format!("client {} asked by its shard ({} moving)", ask.client, report.moved);
                self.events.record(
                    EventKind::Transfer,
                    from,
                    Some(&report.to),
                    report.groups.clone(),
                    report.moved,
                    what,
                );
                self.leases_follow_clients(report);
            }
            Err(e) => {
                let what = format!("client {} asked by {}: {e}", ask.client, ask.requester);
                self.events.record(
                    EventKind::TransferRefused,
                    &ask.requester.to_string(),
                    Some(&ask.to),
                    vec![],
                    0,
                    what,
                );
            }
        }
        result
    }

    fn drain(&mut self, shard: &str, drained: bool) -> Result<DrainView, ControlError> {
        let changed = self.cluster.set_drained(shard, drained)?;
        if changed {
            let (kind, verb) = if drained { (EventKind::Drain, "drained") } else { (EventKind::Undrain, "undrained") };
            self.events.record(kind, shard, None, vec![], 0, verb.to_string());
        }
        Ok(DrainView { shard: shard.into(), drained, changed })
    }

    /// Re-reads the config file; a bad file leaves the running config.
    fn reload(&mut self) -> Result<Vec<String>, ControlError> {
        let new = config::load(&self.config_path).map_err(|e| ControlError::ConfigRefused(e.to_string()))?;
        let mut ignored = Vec::new();
        let old = &self.cluster.cfg.raw;
        if new.raw.interfaces != old.interfaces || new.raw.xdp_mode() != old.xdp_mode() {
            ignored.push("interfaces/xdp_mode (restart the agent to change them)");
        }
        if new.raw.bpffs != old.bpffs || new.raw.control_socket != old.control_socket {
            ignored.push("bpffs/control_socket (restart the agent to change them)");
        }
        let namespaces = |c: &crate::config::Validated| -> Vec<Option<String>> {
            c.frontends.iter().map(|f| f.agones.as_ref().map(|a| a.namespace.clone())).collect()
        };
        if namespaces(&new) != namespaces(&self.file) || new.raw.kubernetes != self.file.raw.kubernetes {
            ignored.push("kubernetes/agones namespaces (restart the agent to change them)");
        }
        let discovered = self.cluster.cfg.shards.iter().filter(|s| s.source != crate::config::ShardSource::File);
        let desired = crate::agones::discover::compose(&new, &discovered.cloned().collect::<Vec<_>>());
        let mut changes = self.cluster.reconcile(desired)?;
        self.file = new;
        self.scan.interval = scan_interval(self.cluster.cfg.raw.session_idle_timeout_ms);
        changes.extend(ignored.into_iter().map(|i| format!("not applied: {i}")));
        log::info!(
            "config reloaded: {}",
            if changes.is_empty() { "no change".to_string() } else { changes.join("; ") }
        );
        Ok(changes)
    }

    /// Folds one health round in: transitions become events, a shard going
    /// down fails over (or parks), a shard coming back becomes
    /// `recovered_role`, parked shards are retried. Returns whether anything
    /// changed.
    fn health_round(&mut self, results: Vec<(String, ProbeOutcome)>) -> bool {
        let cfg = self.cluster.cfg.raw.health.clone();
        let mut changed = false;
        for (name, result) in results {
            let Ok(i) = self.cluster.shard(&name) else { continue };
            let transition = self.cluster.health.entry(name.clone()).or_default().record(result, &cfg);
            match transition {
                Transition::None => {}
                Transition::WentDown(reason) => {
                    changed = true;
                    let players = self.cluster.players_on(i, &self.cluster.loads());
                    let why = reason.detail(&cfg);
                    self.events.record(EventKind::HealthDown, &name, None, vec![], players, why);
                    self.fail_over(i, players);
                }
                Transition::CameUp => {
                    changed = true;
                    let role = self.cluster.cfg.raw.recovered_role;
                    self.cluster.role_override.insert(name.clone(), role);
                    let detail =
                        format!("answers again; it keeps no old players and is now {}", super::status::role_name(role));
                    self.events.record(EventKind::HealthUp, &name, None, vec![], 0, detail);
                }
            }
        }
        changed |= self.retry_parked();
        if changed {
            let loads = self.cluster.loads();
            if let Err(e) = self.cluster.refresh_placement(&loads) {
                log::warn!("refreshing placement: {e:#}");
            }
        }
        changed
    }

    /// Tries the parked failovers again; returns whether any moved.
    fn retry_parked(&mut self) -> bool {
        let mut moved = false;
        for name in std::mem::take(&mut self.parked) {
            if let Ok(i) = self.cluster.shard(&name) {
                if !self.cluster.is_up(i) {
                    let players = self.cluster.players_on(i, &self.cluster.loads());
                    moved |= self.fail_over(i, players);
                }
            }
        }
        moved
    }

    /// Runs an automatic failover of shard `i` (holding `players`) and
    /// records it; with no room the shard is parked. Returns whether anything moved.
    fn fail_over(&mut self, i: usize, players: usize) -> bool {
        let name = self.cluster.cfg.shards[i].name.clone();
        if players == 0 {
            return false;
        }
        if let Some(moved) = self.agones_fail_over(i, players) {
            return moved;
        }
        match self.cluster.failover(i, None) {
            Ok(r) => {
                let detail = format!("{} players moving together to {}", r.moved, r.to);
                self.failed_over(&name, &r, detail);
                true
            }
            Err(why) => {
                let detail = format!("{why}; retried as soon as capacity appears");
                self.events.record(EventKind::FailoverParked, &name, None, vec![], players, detail);
                if !self.parked.contains(&name) {
                    self.parked.push(name);
                }
                false
            }
        }
    }
}
