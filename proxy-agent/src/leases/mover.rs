//! Account leases follow player moves. The owner thread repoints players
//! first (map writes, at once) and then hands the matching lease move here:
//! a database that is slow or down never holds a player back. A move that
//! fails is retried with back-off, in order (a later move may build on an
//! earlier one), until it succeeds or the leases would have expired anyway.
//! Every outcome goes back to the owner, which records it as an event, so
//! `proxy-agent events` and `samp_proxy_events_total` say what happened.

use std::{
    collections::VecDeque,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{LeaseConfig, LeaseStore};

/// Leases to hand from one shard to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseMove {
    /// Every live lease of `from` (a failover, `migrate --from`).
    Shard { from: String, to: String },
    /// The leases of these players of `from` (`migrate` of chosen players,
    /// an area transfer).
    Clients { from: String, clients: Vec<SocketAddrV4>, to: String },
}

impl LeaseMove {
    pub fn from(&self) -> &str {
        match self {
            LeaseMove::Shard { from, .. } | LeaseMove::Clients { from, .. } => from,
        }
    }

    pub fn to(&self) -> &str {
        match self {
            LeaseMove::Shard { to, .. } | LeaseMove::Clients { to, .. } => to,
        }
    }

    fn what(&self) -> String {
        match self {
            LeaseMove::Shard { .. } => "every lease".into(),
            LeaseMove::Clients { clients, .. } => format!("the leases of {} players", clients.len()),
        }
    }
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub struct LeaseOutcome {
    pub attempted: LeaseMove,
    /// Leases moved, or why not.
    pub result: Result<u64, String>,
    /// 1 for the first try.
    pub attempt: u32,
    /// No more retries: the leases have expired by now anyway.
    pub gave_up: bool,
    /// How long the successful attempt took.
    pub took: Duration,
}

impl LeaseOutcome {
    /// One line for the event log.
    pub fn detail(&self, lease_seconds: u32) -> String {
        let m = &self.attempted;
        match &self.result {
            Ok(n) => format!("{n} leases handed to {} ({}) in {:.1} ms", m.to(), m.what(), self.took.as_secs_f64() * 1e3),
            Err(e) if self.gave_up => {
                format!("gave up handing {} to {} after {} attempts: {e}; they have expired by now", m.what(), m.to(), self.attempt)
            }
            Err(e) => format!(
                "handing {} to {} failed (attempt {}): {e}; the players moved anyway, their leases expire within {lease_seconds} s unless a retry succeeds",
                m.what(),
                m.to(),
                self.attempt
            ),
        }
    }
}

/// The owner's end: queue a lease move.
#[derive(Clone)]
pub struct LeaseMover {
    tx: mpsc::UnboundedSender<LeaseMove>,
    pub lease_seconds: u32,
}

impl LeaseMover {
    /// Starts the mover on the current tokio runtime; `report` gets every
    /// outcome (it must not block).
    pub fn spawn(cfg: LeaseConfig, report: impl Fn(LeaseOutcome) + Send + 'static) -> LeaseMover {
        let (tx, rx) = mpsc::unbounded_channel();
        let lease_seconds = cfg.lease_seconds;
        tokio::spawn(run(cfg, rx, report));
        LeaseMover { tx, lease_seconds }
    }

    pub fn send(&self, m: LeaseMove) {
        let _ = self.tx.send(m);
    }
}

/// How long one attempt may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

fn back_off(attempt: u32) -> Duration {
    Duration::from_millis(500u64 << attempt.min(6)).min(Duration::from_secs(30))
}

async fn run(cfg: LeaseConfig, mut rx: mpsc::UnboundedReceiver<LeaseMove>, report: impl Fn(LeaseOutcome)) {
    let mut store: Option<LeaseStore> = None;
    let mut queue: VecDeque<(LeaseMove, u32, Instant)> = VecDeque::new();
    // Past this, a lease that was not moved has expired: retrying is moot.
    let give_up_after = Duration::from_secs(2 * cfg.lease_seconds as u64);
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(m) => queue.push_back((m, 0, Instant::now())),
                None => return,
            }
        }
        while let Ok(m) = rx.try_recv() {
            queue.push_back((m, 0, Instant::now()));
        }
        let Some((m, attempts, first)) = queue.front_mut() else { continue };
        *attempts += 1;
        let started = Instant::now();
        let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(&cfg, &mut store, m)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer from the database within {ATTEMPT_TIMEOUT:?}")),
        };
        let took = started.elapsed();
        let failed = result.is_err();
        if failed {
            store = None; // reconnect on the next attempt
        }
        let gave_up = failed && first.elapsed() >= give_up_after;
        let attempt = *attempts;
        report(LeaseOutcome { attempted: m.clone(), result, attempt, gave_up, took });
        if failed && !gave_up {
            // Wait, but keep queueing what arrives meanwhile.
            let wake = tokio::time::sleep(back_off(attempt));
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = &mut wake => break,
                    next = rx.recv() => match next {
                        Some(m) => queue.push_back((m, 0, Instant::now())),
                        None => return,
                    },
                }
            }
        } else {
            queue.pop_front();
        }
    }
}

async fn attempt(cfg: &LeaseConfig, store: &mut Option<LeaseStore>, m: &LeaseMove) -> Result<u64, String> {
    if store.is_none() {
        *store = Some(LeaseStore::connect(cfg).await.map_err(|e| format!("{e:#}"))?);
    }
    let s = store.as_ref().expect("connected above");
    let moved = match m {
        LeaseMove::Shard { from, to } => s.move_shard(from, to).await,
        LeaseMove::Clients { from, clients, to } => s.move_clients(from, clients, to).await,
    };
    moved.map_err(|e| format!("{e:#}"))
}
