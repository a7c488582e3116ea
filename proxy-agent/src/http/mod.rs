//! Prometheus metrics over plain HTTP (`metrics_listen`): `/metrics` in the
//! text exposition format, `/live` and `/ready` for probes. A scrape renders
//! the cluster owner's last snapshot: it never waits for the owner and reads
//! no map.

use std::{fmt::Write as _, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{cluster::owner::OwnerHandle, control::views::StatusView};

pub async fn serve(listener: TcpListener, owner: OwnerHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, owner.clone()));
            }
            Err(e) => crate::control::accept_failed("metrics", e).await,
        }
    }
}

async fn answer(mut stream: TcpStream, owner: OwnerHandle) {
    let mut buf = [0u8; 1024];
    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await else {
        return;
    };
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/metrics" => ("200 OK", render(&owner.snapshot().status)),
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

/// The metrics text of one status snapshot.
pub fn render(st: &StatusView) -> String {
    let mut out = String::new();
    let counters: Vec<(String, f64)> = st.counters.iter().map(|(k, v)| (label(&[("outcome", k)]), *v as f64)).collect();
    family(
        &mut out,
        "samp_proxy_packets_total",
        "counter",
        "Data-plane outcomes, one per packet (and events: session_placed, session_promoted, session_event_lost)",
        &counters,
    );
    let (mut packets, mut bytes, mut players, mut capacity, mut up, mut rtt, mut role) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in &st.shards {
        let n = s.name.as_str();
        let t = &s.traffic;
        packets.push((label(&[("shard", n), ("direction", "to_shard")]), t.packets_to_shard as f64));
        packets.push((label(&[("shard", n), ("direction", "from_shard")]), t.packets_from_shard as f64));
        bytes.push((label(&[("shard", n), ("direction", "to_shard")]), t.bytes_to_shard as f64));
        bytes.push((label(&[("shard", n), ("direction", "from_shard")]), t.bytes_from_shard as f64));
        for (state, v) in [("established", s.established), ("pending", s.pending), ("moving", s.moving)] {
            players.push((label(&[("shard", n), ("state", state)]), v as f64));
        }
        capacity.push((label(&[("shard", n)]), s.capacity as f64));
        up.push((label(&[("shard", n)]), if s.health == "down" { 0.0 } else { 1.0 }));
        if let Some(ms) = s.rtt_ms {
            rtt.push((label(&[("shard", n)]), ms / 1000.0));
        }
        let drained = if s.drained { "true" } else { "false" };
        role.push((label(&[("shard", n), ("role", &s.role), ("drained", drained)]), 1.0));
    }
    family(&mut out, "samp_proxy_shard_packets_total", "counter", "Packets forwarded to and from each shard", &packets);
    family(&mut out, "samp_proxy_shard_bytes_total", "counter", "IPv4 bytes forwarded to and from each shard", &bytes);
    family(&mut out, "samp_proxy_shard_sessions", "gauge", "Sessions routed to each shard, by state", &players);
    family(&mut out, "samp_proxy_shard_capacity", "gauge", "Configured player slots of each shard", &capacity);
    family(&mut out, "samp_proxy_shard_up", "gauge", "1 when the shard answers its SA:MP query probes", &up);
    family(&mut out, "samp_proxy_shard_probe_rtt_seconds", "gauge", "Round trip of the last answered ping probe", &rtt);
    family(&mut out, "samp_proxy_shard_info", "gauge", "Role and drain state of each shard", &role);
    let a = &st.agent;
    let count = |kind: &str| a.events_total.get(kind).copied().unwrap_or(0) as f64;
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
        (label(&[("reason", "idle")]), a.expired_idle as f64),
        (label(&[("reason", "moved_never_reconnected")]), a.expired_moving as f64),
    ];
    family(&mut out, "samp_proxy_sessions_expired_total", "counter", "Sessions removed by the agent", &expired);
    let parked = vec![(String::new(), a.parked_failovers as f64)];
    family(&mut out, "samp_proxy_parked_failovers", "gauge", "Failed shards whose players found no room yet", &parked);
    let i = &a.index;
    family(
        &mut out,
        "samp_proxy_index_sessions",
        "gauge",
        "Sessions in the agent's index (established and pending)",
        &[(String::new(), i.sessions as f64)],
    );
    family(
        &mut out,
        "samp_proxy_index_scans_total",
        "counter",
        "Full scans of the session tables",
        &[(String::new(), i.scans as f64)],
    );
    let repaired = vec![
        (label(&[("kind", "added")]), i.repaired_added as f64),
        (label(&[("kind", "removed")]), i.repaired_removed as f64),
    ];
    family(
        &mut out,
        "samp_proxy_index_repairs_total",
        "counter",
        "Sessions a scan found that the event ring had not reported (added) or that the tables dropped silently (removed)",
        &repaired,
    );
    let info = vec![(label(&[("version", &a.version)]), 1.0)];
    family(&mut out, "samp_proxy_agent_info", "gauge", "The agent's version", &info);
    out
}
