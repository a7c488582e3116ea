//! What every peer link is doing, for `status`, `/metrics` and readiness:
//! written by the links, read by whoever shows it. One lock, held for a
//! few field updates at a time.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddrV4,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Lag samples kept per peer (the last ones; p50/p99 are over these).
const LAG_SAMPLES: usize = 2048;

#[derive(Debug, Default)]
struct Outbound {
    name: Option<String>,
    connected_at: Option<Instant>,
    away_since: Option<Instant>,
    sent_records: u64,
    sent_bytes: u64,
    queue_depth: usize,
    lag_us: VecDeque<u64>,
    snapshots: u64,
    last_snapshot: Option<(usize, Duration, Instant)>,
    resyncs: u64,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Inbound {
    connected: usize,
    received_records: u64,
    snapshot_received: Option<(u32, Instant)>,
    last_refusal: Option<String>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    outbound: BTreeMap<SocketAddrV4, Outbound>,
    inbound: BTreeMap<String, Inbound>,
    refused: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
pub struct Board {
    inner: Mutex<Inner>,
    /// How long a peer may stay away before it is reported.
    pub away_after: Duration,
}

/// One outbound link as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutboundView {
    pub address: String,
    pub name: Option<String>,
    pub connected: bool,
    /// Seconds since it was last connected (or since start), when away.
    pub away_s: Option<f64>,
    pub sent_records: u64,
    /// Bytes of frames sent (headers and tags included).
    #[serde(default)]
    pub sent_bytes: u64,
    pub queue_depth: usize,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub snapshots: u64,
    pub last_snapshot_sessions: Option<usize>,
    pub last_snapshot_ms: Option<f64>,
    pub last_snapshot_age_s: Option<f64>,
    /// Times it fell behind and was sent a fresh snapshot.
    pub resyncs: u64,
    pub last_error: Option<String>,
}

/// One peer's connections to this node as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InboundView {
    pub name: String,
    pub connected: bool,
    pub received_records: u64,
    /// Sessions in the last snapshot it sent, and how long ago.
    pub snapshot_sessions: Option<u32>,
    pub snapshot_age_s: Option<f64>,
    pub last_refusal: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BoardView {
    pub outbound: Vec<OutboundView>,
    pub inbound: Vec<InboundView>,
    /// Refused connections and frames, by reason.
    pub refused: BTreeMap<String, u64>,
}

fn quantile(sorted: &[u64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q).round() as usize] as f64 / 1000.0)
}

impl Board {
    /// A board for links to `peers` (known from the start, so readiness
    /// waits for them even before their links are spawned).
    pub fn new(away_after: Duration, peers: &[SocketAddrV4]) -> Board {
        let inner = Inner {
            started: Instant::now(),
            outbound: peers.iter().map(|&a| (a, Outbound::default())).collect(),
            inbound: BTreeMap::new(),
            refused: BTreeMap::new(),
        };
        Board { inner: Mutex::new(inner), away_after }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn out_connected(&self, addr: SocketAddrV4, name: &str) {
        self.with(|i| {
            let o = i.outbound.entry(addr).or_default();
            o.name = Some(name.to_string());
            o.connected_at = Some(Instant::now());
            o.last_error = None;
        });
    }

    pub fn out_lost(&self, addr: SocketAddrV4, why: String) {
        self.with(|i| {
            let o = i.outbound.entry(addr).or_default();
            if o.connected_at.take().is_some() || o.away_since.is_none() {
                o.away_since = Some(Instant::now());
            }
            o.last_error = Some(why);
            o.queue_depth = 0;
        });
    }

    pub fn sent(&self, addr: SocketAddrV4, records: usize, bytes: usize, queue_depth: usize) {
        self.with(|i| {
            let o = i.outbound.entry(addr).or_default();
            o.sent_records += records as u64;
            o.sent_bytes += bytes as u64;
            o.queue_depth = queue_depth;
        });
    }

    /// A batch made `lag` ago is now in the peer's maps.
    pub fn acked(&self, addr: SocketAddrV4, lag: Duration) {
        self.with(|i| {
            let o = i.outbound.entry(addr).or_default();
            if o.lag_us.len() == LAG_SAMPLES {
                o.lag_us.pop_front();
            }
            o.lag_us.push_back(lag.as_micros() as u64);
        });
    }

    pub fn snapshot_sent(&self, addr: SocketAddrV4, sessions: usize, took: Duration) {
        self.with(|i| {
            let o = i.outbound.entry(addr).or_default();
            o.snapshots += 1;
            o.last_snapshot = Some((sessions, took, Instant::now()));
        });
    }

    pub fn resynced(&self, addr: SocketAddrV4) {
        self.with(|i| i.outbound.entry(addr).or_default().resyncs += 1);
    }

    pub fn in_connected(&self, name: &str) {
        self.with(|i| i.inbound.entry(name.to_string()).or_default().connected += 1);
    }

    pub fn in_lost(&self, name: &str) {
        self.with(|i| {
            let e = i.inbound.entry(name.to_string()).or_default();
            e.connected = e.connected.saturating_sub(1);
        });
    }

    pub fn received(&self, name: &str, records: usize) {
        self.with(|i| i.inbound.entry(name.to_string()).or_default().received_records += records as u64);
    }

    pub fn snapshot_received(&self, name: &str, sessions: u32) {
        self.with(|i| {
            i.inbound.entry(name.to_string()).or_default().snapshot_received = Some((sessions, Instant::now()))
        });
    }

    /// A refused connection or frame (`from`: the peer, when known).
    pub fn refused(&self, reason: &'static str, from: Option<&str>, why: String) {
        self.with(|i| {
            *i.refused.entry(reason).or_default() += 1;
            if let Some(name) = from {
                i.inbound.entry(name.to_string()).or_default().last_refusal = Some(why);
            }
        });
    }

    /// Whether this node has the cluster's state: some peer's whole
    /// snapshot arrived, or nobody answered for `join_timeout` (the first node).
    pub fn synced(&self, join_timeout: Duration) -> Result<(), String> {
        self.with(|i| {
            let got = i.inbound.values().filter(|p| p.snapshot_received.is_some()).count();
            if got > 0 || i.outbound.is_empty() {
                return Ok(());
            }
            // A peer that answers either way is alive and will send its
            // state: wait for it. Only a node nobody answers is the first.
            let answering = i.inbound.values().filter(|p| p.connected > 0).count()
                + i.outbound.values().filter(|o| o.connected_at.is_some()).count();
            let waited = i.started.elapsed();
            if answering == 0 && waited >= join_timeout {
                return Ok(());
            }
            Err(format!(
                "syncing with its peers: no peer's snapshot yet ({answering} links up; {:.1} of {:.1} s waited for a first answer)",
                waited.as_secs_f64(),
                join_timeout.as_secs_f64()
            ))
        })
    }

    pub fn view(&self) -> BoardView {
        self.with(|i| {
            let now = Instant::now();
            let outbound = i
                .outbound
                .iter()
                .map(|(addr, o)| {
                    let mut lag: Vec<u64> = o.lag_us.iter().copied().collect();
                    lag.sort_unstable();
                    let away = o.connected_at.is_none().then(|| now - o.away_since.unwrap_or(i.started));
                    OutboundView {
                        address: addr.to_string(),
                        name: o.name.clone(),
                        connected: o.connected_at.is_some(),
                        away_s: away.map(|d| d.as_secs_f64()),
                        sent_records: o.sent_records,
                        sent_bytes: o.sent_bytes,
                        queue_depth: o.queue_depth,
                        lag_p50_ms: quantile(&lag, 0.5),
                        lag_p99_ms: quantile(&lag, 0.99),
                        snapshots: o.snapshots,
                        last_snapshot_sessions: o.last_snapshot.map(|s| s.0),
                        last_snapshot_ms: o.last_snapshot.map(|s| s.1.as_secs_f64() * 1000.0),
                        last_snapshot_age_s: o.last_snapshot.map(|s| (now - s.2).as_secs_f64()),
                        resyncs: o.resyncs,
                        last_error: o.last_error.clone(),
                    }
                })
                .collect();
            let inbound = i
                .inbound
                .iter()
                .map(|(name, p)| InboundView {
                    name: name.clone(),
                    connected: p.connected > 0,
                    received_records: p.received_records,
                    snapshot_sessions: p.snapshot_received.map(|s| s.0),
                    snapshot_age_s: p.snapshot_received.map(|s| (now - s.1).as_secs_f64()),
                    last_refusal: p.last_refusal.clone(),
                })
                .collect();
            let refused = i.refused.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            BoardView { outbound, inbound, refused }
        })
    }

    /// Peers away longer than `away_after` (reported in status and logs).
    pub fn away(&self) -> Vec<String> {
        self.view()
            .outbound
            .into_iter()
            .filter(|o| o.away_s.is_some_and(|s| s >= self.away_after.as_secs_f64()))
            .map(|o| o.name.unwrap_or(o.address))
            .collect()
    }
}
