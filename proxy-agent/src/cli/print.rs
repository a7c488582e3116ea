//! Human tables for each reply, from the typed views.

use crate::control::views::{DrainView, Event, MoveReport, ReloadView, SessionView, ShardView, StatusView};

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn status(st: &StatusView) {
    for fe in &st.frontends {
        println!("frontend {} {}", fe.name, fe.address);
    }
    shards(&st.shards);
    let t = &st.totals;
    println!("total: {} players / {} slots ({} pending, {} moving)", t.players, t.capacity, t.pending, t.moving);
    let a = &st.agent;
    println!("expired: {} idle, {} moved-but-never-reconnected", a.expired_idle, a.expired_moving);
    if let Some(p) = &a.peers {
        peers(p);
    }
    if let Some(k) = &a.kubernetes {
        let decider = match (k.leading, &k.holder) {
            (true, _) => "this replica".to_string(),
            (false, Some(h)) if !h.is_empty() => h.clone(),
            _ => "nobody".to_string(),
        };
        let pools: Vec<String> = k.pool_ready.iter().map(|(f, n)| format!("{f}: {n} Ready")).collect();
        println!("kubernetes: decider {decider}; pools {}; allocating {}", pools.join(", "), k.allocating);
        if let Some(e) = &k.api_error {
            println!("kubernetes API UNREACHABLE: {e} (forwarding goes on with the shards known)");
        }
        for u in &k.unusable {
            println!("GameServer {}/{} cannot be a shard: {}; fix: {}", u.namespace, u.name, u.problem, u.fix);
        }
    }
}

pub fn shards(shards: &[ShardView]) {
    println!(
        "{:<10} {:<16} {:<8} {:<8} {:<10} {:>7} {:>8} {:>7} {:>6}  GROUPS",
        "SHARD", "ADDRESS", "ROLE", "STATE", "HEALTH", "PLAYERS", "CAPACITY", "PENDING", "MOVING"
    );
    for x in shards {
        let state = if x.drained { "drained" } else { "open" };
        let groups: Vec<String> = x.groups.iter().map(u32::to_string).collect();
        println!(
            "{:<10} {:<16} {:<8} {:<8} {:<10} {:>7} {:>8} {:>7} {:>6}  {}",
            x.name,
            x.address,
            x.role,
            state,
            x.health,
            x.players,
            x.capacity,
            x.pending,
            x.moving,
            groups.join(",")
        );
    }
    for x in shards.iter().filter(|x| x.site.is_some()) {
        let rtt = x.rtt_ms.map_or("no answer yet".to_string(), |ms| format!("probe round trip {ms:.1} ms"));
        println!("{} sits in site {} (through its tunnel): {rtt}", x.name, x.site.as_deref().unwrap_or(""));
    }
}

pub fn sessions(list: &[SessionView]) {
    println!("{:<22} {:<8} {:<10} {:<12} {:>6} {:>9}", "CLIENT", "FRONTEND", "SHARD", "STATE", "GROUP", "IDLE(ms)");
    for x in list {
        println!("{:<22} {:<8} {:<10} {:<12} {:>6} {:>9}", x.client, x.frontend, x.shard, x.state, x.group, x.idle_ms);
    }
    println!("{} sessions", list.len());
}

pub fn moved(r: &MoveReport) {
    print!("moving {} players to {}", r.moved, r.to);
    if !r.groups.is_empty() {
        print!(" ({} groups repointed)", r.groups.len());
    }
    println!("; {} already there. They reconnect on their own: no kick.", r.already_there);
}

pub fn drain(d: &DrainView) {
    let what = if d.drained { "drained: no new players" } else { "open for new players" };
    let note = if d.changed { "" } else { " (no change)" };
    println!("shard {} {what}{note}", d.shard);
}

pub fn events(list: &[Event]) {
    println!(
        "{:<13} {:<16} {:<10} {:<10} {:>7}  {:<8} DETAIL",
        "AT(ms)", "EVENT", "SHARD", "TARGET", "PLAYERS", "GROUPS"
    );
    for e in list {
        let groups: Vec<String> = e.groups.iter().map(u32::to_string).collect();
        println!(
            "{:<13} {:<16} {:<10} {:<10} {:>7}  {:<8} {}",
            e.at_ms,
            e.kind,
            e.shard,
            opt(&e.target),
            e.players,
            groups.join(","),
            e.detail
        );
    }
}

pub fn failover(shard: &str, r: &MoveReport) {
    println!("failover of {shard}: {} players moving together to {}; they reconnect on their own.", r.moved, r.to);
}

pub fn reload(r: &ReloadView) {
    if r.changes.is_empty() {
        println!("reloaded: no change");
    }
    for c in &r.changes {
        println!("reloaded: {c}");
    }
}

/// The peer links, one line each way.
fn peers(p: &crate::control::views::PeersView) {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    println!(
        "peers: this node is {}; records applied {}, stale {}, unroutable {}",
        p.node, p.records_applied, p.records_stale, p.records_unroutable
    );
    for o in &p.links.outbound {
        let name = o.name.clone().unwrap_or_else(|| "?".into());
        let state = match o.away_s {
            None => "connected".to_string(),
            Some(s) => format!("AWAY {s:.0} s ({})", o.last_error.as_deref().unwrap_or("never connected")),
        };
        println!(
            "  to {name} {}: {state}; lag p50 {} p99 {}; queue {}; last snapshot {} sessions in {}",
            o.address,
            ms(o.lag_p50_ms),
            ms(o.lag_p99_ms),
            o.queue_depth,
            opt(&o.last_snapshot_sessions),
            ms(o.last_snapshot_ms)
        );
    }
    for i in &p.links.inbound {
        let state = if i.connected { "connected" } else { "not connected" };
        println!(
            "  from {}: {state}; {} records; snapshot {} sessions",
            i.name,
            i.received_records,
            opt(&i.snapshot_sessions)
        );
    }
    if !p.links.refused.is_empty() {
        let r: Vec<String> = p.links.refused.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  refused: {}", r.join(", "));
    }
}
