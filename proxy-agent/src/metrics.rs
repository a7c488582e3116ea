//! Prometheus metrics over plain HTTP (`metrics_listen`): `/metrics` in the
//! text exposition format, `/live` and `/ready` for probes. Written by hand:
//! a few dozen lines, no HTTP stack needed.

use std::{fmt::Write as _, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Mutex,
};

use crate::{config::Role, state::AgentState};

pub async fn serve(listener: TcpListener, state: Arc<Mutex<AgentState>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(answer(stream, state.clone()));
    }
}

async fn answer(mut stream: TcpStream, state: Arc<Mutex<AgentState>>) {
    let mut buf = [0u8; 1024];
    let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await else {
        return;
    };
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/metrics" => ("200 OK", render(&*state.lock().await)),
        "/live" | "/ready" => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "try /metrics, /live or /ready\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}

/// One metric family: HELP and TYPE lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Label values are shard names and counter names: `[A-Za-z0-9_-]`, no escaping needed.
fn label(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

pub fn render(st: &AgentState) -> String {
    let mut out = String::new();
    let tables = &st.dp.tables;
    let c = &st.cluster;
    let counters: Vec<(String, f64)> = tables
        .all_counters()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (label(&[("outcome", k.name())]), v as f64))
        .collect();
    family(
        &mut out,
        "samp_proxy_packets_total",
        "counter",
        "Data-plane outcomes, one per packet (and events: session_placed, session_promoted)",
        &counters,
    );
    let loads = c.loads(tables);
    let (mut packets, mut bytes, mut players, mut capacity, mut up, mut rtt, mut role) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, s) in c.cfg.shards.iter().enumerate() {
        let id = c.ids[i];
        let n = s.name.as_str();
        let stats = tables.backend_stats(id.backend).unwrap_or_default();
        packets.push((label(&[("shard", n), ("direction", "to_shard")]), stats.packets_in as f64));
        packets.push((label(&[("shard", n), ("direction", "from_shard")]), stats.packets_out as f64));
        bytes.push((label(&[("shard", n), ("direction", "to_shard")]), stats.bytes_in as f64));
        bytes.push((label(&[("shard", n), ("direction", "from_shard")]), stats.bytes_out as f64));
        let load = loads.get(&id.backend).copied().unwrap_or_default();
        for (state, v) in [("established", load.established), ("pending", load.pending), ("moving", load.moving)] {
            players.push((label(&[("shard", n), ("state", state)]), v as f64));
        }
        capacity.push((label(&[("shard", n)]), s.capacity as f64));
        up.push((label(&[("shard", n)]), if c.is_up(i) { 1.0 } else { 0.0 }));
        if let Some(ms) = c.health.get(n).and_then(|h| h.rtt_ms) {
            rtt.push((label(&[("shard", n)]), ms / 1000.0));
        }
        let r = match c.role(i) {
            Role::Active => "active",
            Role::Standby => "standby",
        };
        let drained = if c.drained(i, tables) { "true" } else { "false" };
        role.push((label(&[("shard", n), ("role", r), ("drained", drained)]), 1.0));
    }
    family(&mut out, "samp_proxy_shard_packets_total", "counter", "Packets forwarded to and from each shard", &packets);
    family(&mut out, "samp_proxy_shard_bytes_total", "counter", "IPv4 bytes forwarded to and from each shard", &bytes);
    family(&mut out, "samp_proxy_shard_sessions", "gauge", "Sessions routed to each shard, by state", &players);
    family(&mut out, "samp_proxy_shard_capacity", "gauge", "Configured player slots of each shard", &capacity);
    family(&mut out, "samp_proxy_shard_up", "gauge", "1 when the shard answers its SA:MP query probes", &up);
    family(&mut out, "samp_proxy_shard_probe_rtt_seconds", "gauge", "Round trip of the last answered ping probe", &rtt);
    family(&mut out, "samp_proxy_shard_info", "gauge", "Role and drain state of each shard", &role);
    let count = |kind: &str| st.events_total.get(kind).copied().unwrap_or(0) as f64;
    let events: Vec<(String, f64)> = ["failover", "failover_parked", "migration", "health_down", "health_up"]
        .iter()
        .map(|k| (label(&[("kind", k)]), count(k)))
        .collect();
    family(
        &mut out,
        "samp_proxy_events_total",
        "counter",
        "Health changes, failovers and migrations since the agent started",
        &events,
    );
    let expired = vec![
        (label(&[("reason", "idle")]), st.expired_idle as f64),
        (label(&[("reason", "moved_never_reconnected")]), st.expired_moving as f64),
    ];
    family(&mut out, "samp_proxy_sessions_expired_total", "counter", "Sessions removed by the agent", &expired);
    let parked = vec![(String::new(), st.parked.len() as f64)];
    family(&mut out, "samp_proxy_parked_failovers", "gauge", "Failed shards whose players found no room yet", &parked);
    let info = vec![(label(&[("version", env!("CARGO_PKG_VERSION"))]), 1.0)];
    family(&mut out, "samp_proxy_agent_info", "gauge", "The agent's version", &info);
    out
}
