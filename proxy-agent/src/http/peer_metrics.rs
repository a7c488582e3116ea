//! The peer links' families: per peer, whether it is connected each way,
//! how far behind its maps are, its queue and its last snapshot; and what
//! was refused, by reason.

use super::metrics::Scrape;
use crate::control::views::{CoordinatorView, PeersView};

pub(super) fn peers(r: &Scrape, p: &PeersView) -> prometheus::Result<()> {
    let one = |b: bool| if b { 1.0 } else { 0.0 };
    let connected = r.gauge(
        "samp_proxy_peer_connected",
        "1 while the link to (outbound) or from (inbound) the peer is up",
        &["peer", "direction"],
    )?;
    let lag = r.gauge(
        "samp_proxy_peer_replication_lag_seconds",
        "Time from a change here to its being in the peer's maps, over the last 2048 changes",
        &["peer", "quantile"],
    )?;
    let queue = r.gauge("samp_proxy_peer_queue_batches", "Batches of changes waiting for the peer", &["peer"])?;
    let sent = r.counter("samp_proxy_peer_records_sent_total", "Records sent to the peer", &["peer"])?;
    let received = r.counter("samp_proxy_peer_records_received_total", "Records received from the peer", &["peer"])?;
    let snapshot = r.gauge(
        "samp_proxy_peer_last_snapshot_seconds",
        "How long the last snapshot sent to the peer took, until it was in its maps",
        &["peer"],
    )?;
    let away = r.gauge(
        "samp_proxy_peer_away_seconds",
        "How long the outbound link to the peer has been down (0 while up)",
        &["peer"],
    )?;
    let resyncs = r.counter(
        "samp_proxy_peer_resyncs_total",
        "Times the peer fell behind and was sent a fresh snapshot",
        &["peer"],
    )?;
    for o in &p.links.outbound {
        let peer = o.name.clone().unwrap_or_else(|| o.address.clone());
        connected.with_label_values(&[&peer, "outbound"]).set(one(o.connected));
        for (q, v) in [("0.5", o.lag_p50_ms), ("0.99", o.lag_p99_ms)] {
            if let Some(ms) = v {
                lag.with_label_values(&[&peer, q]).set(ms / 1000.0);
            }
        }
        queue.with_label_values(&[&peer]).set(o.queue_depth as f64);
        sent.with_label_values(&[&peer]).inc_by(o.sent_records);
        if let Some(ms) = o.last_snapshot_ms {
            snapshot.with_label_values(&[&peer]).set(ms / 1000.0);
        }
        away.with_label_values(&[&peer]).set(o.away_s.unwrap_or(0.0));
        resyncs.with_label_values(&[&peer]).inc_by(o.resyncs);
    }
    for i in &p.links.inbound {
        connected.with_label_values(&[&i.name, "inbound"]).set(one(i.connected));
        received.with_label_values(&[&i.name]).inc_by(i.received_records);
    }
    let refused = r.counter(
        "samp_proxy_peer_refused_total",
        "Peer connections and frames refused, by reason (wrong_secret, version, garbled, bad_tag, replayed, bad_record, oversize, truncated, too_many_connections, timeout)",
        &["reason"],
    )?;
    for (reason, n) in &p.links.refused {
        refused.with_label_values(&[reason]).inc_by(*n);
    }
    let records = r.counter(
        "samp_proxy_peer_session_records_total",
        "Peers' session records by what became of them: applied, unchanged, stale (older than held), unroutable",
        &["result"],
    )?;
    for (result, n) in [
        ("applied", p.records_applied),
        ("unchanged", p.records_unchanged),
        ("stale", p.records_stale),
        ("unroutable", p.records_unroutable),
    ] {
        records.with_label_values(&[result]).inc_by(n);
    }
    Ok(())
}

/// The coordinator's decider as this agent sees it.
pub(super) fn coordinator(r: &Scrape, c: &CoordinatorView) -> prometheus::Result<()> {
    let none: &[&str] = &[];
    r.gauge("samp_proxy_coordinator_deciding", "1 on the agent that holds the coordinator's decider row", &[])?
        .with_label_values(none)
        .set(if c.deciding { 1.0 } else { 0.0 });
    r.gauge("samp_proxy_coordinator_up", "1 when the coordinator's database answered the last round", &[])?
        .with_label_values(none)
        .set(if c.error.is_none() { 1.0 } else { 0.0 });
    r.gauge("samp_proxy_coordinator_applied_seq", "The last decision of the log carried out here", &[])?
        .with_label_values(none)
        .set(c.applied_seq as f64);
    r.gauge(
        "samp_proxy_coordinator_awaiting",
        "Dead shards whose decision this agent asked for and still awaits",
        &[],
    )?
    .with_label_values(none)
    .set(c.awaiting.len() as f64);
    Ok(())
}
