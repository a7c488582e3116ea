//! The Prometheus side, checked with Prometheus' own tool: the Grafana
//! dashboard's expressions parse as PromQL (`promtool check rules`), and a
//! real agent's `/metrics` passes `promtool check metrics` and agrees with
//! the traffic the simulated shards saw. promtool comes from the Debian
//! package `prometheus` (`scripts/setup.sh` installs it).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::scenario::{wait_for, Scenario};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/samp-proxy-dashboard.json");
/// Not e2e_failover's 9477: the two tests may run at once.
const METRICS: &str = "127.0.0.1:9479";

/// Runs promtool with `args`, `stdin` on its standard input.
fn promtool(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): run scripts/setup.sh (it installs the Debian package `prometheus`)")
        });
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A temporary folder of this test process, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("samp-proxy-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A rules file with one recording rule per expression, for `promtool check
/// rules`, which parses each one as PromQL.
fn rules_file(dir: &Path, name: &str, exprs: &[String]) -> PathBuf {
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar.
        yaml.push_str(&format!(
            "      - record: dashboard:panel_{}\n        expr: {}\n",
            i + 1,
            serde_json::to_string(expr).unwrap()
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Grafana fills in its variables before Prometheus sees a query; do the
/// same with values Prometheus accepts, so what is checked is PromQL.
fn as_promql(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"), ("$shard", ".*")] {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "the dashboard uses a variable this test does not know: `{expr}`");
    e
}

/// Every `expr` anywhere under `v`.
fn exprs_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs_in(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs_in(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_expressions_pass_promtool() {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("reading {DASHBOARD}: {e}"));
    let dash: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion: {}", dash["schemaVersion"]);
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "DS_PROMETHEUS"),
        "no Prometheus data source variable DS_PROMETHEUS"
    );

    let panels: Vec<&Value> =
        dash["panels"].as_array().expect("panels").iter().filter(|p| p["type"] != "row").collect();
    assert!(panels.len() >= 6, "{} panels; the dashboard needs at least 6", panels.len());
    for p in &panels {
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel `{}` has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel `{}` has no targets", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "a target of panel `{}` has no expr: {t}", p["title"]);
        }
    }
    let mut exprs = Vec::new();
    exprs_in(&dash, &mut exprs);
    let wanted = [
        "samp_proxy_shard_sessions",
        "samp_proxy_shard_packets_total",
        "samp_proxy_shard_bytes_total",
        "outcome=~\"drop_.*\"",
        "samp_proxy_shard_up",
        "histogram_quantile",
        "samp_proxy_probe_rtt_seconds_bucket",
        "samp_proxy_shard_probe_rtt_seconds",
        "samp_proxy_events_total",
        "samp_proxy_queries_total",
        "samp_proxy_query_drops_total",
    ];
    for want in wanted {
        assert!(exprs.iter().any(|e| e.contains(want)), "no dashboard expression uses `{want}`");
    }

    let dir = TempDir::new("dashboard");
    let promql: Vec<String> = exprs.iter().map(|e| as_promql(e)).collect();
    let file = rules_file(&dir.0, "dashboard.rules.yml", &promql);
    let out = promtool(&["check", "rules", file.to_str().unwrap()], b"");
    assert!(out.status.success(), "promtool rejects the dashboard's expressions:\n{}", said(&out));
    assert!(said(&out).contains(&format!("{} rules found", promql.len())), "{}", said(&out));

    // The check can fail: a broken expression is refused.
    let broken = rules_file(&dir.0, "broken.rules.yml", &["rate(samp_proxy_packets_total[5m]".to_string()]);
    let out = promtool(&["check", "rules", broken.to_str().unwrap()], b"");
    assert!(!out.status.success(), "promtool accepted a broken expression:\n{}", said(&out));
}

/// One answer of the agent's HTTP endpoint.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// An HTTP GET to the agent's metrics port, from inside the proxy namespace.
fn get(sc: &Scenario, path: &str) -> Answer {
    let raw = sc
        .topo
        .proxy
        .run(|| {
            let mut s = std::net::TcpStream::connect(METRICS).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head in `{raw}`"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), body.len(), "content-length of {path}");
    }
    Answer { status, headers, body: body.to_string() }
}

/// The value of the sample `series` (name and labels exactly as written).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn to_shard_packets(body: &str) -> f64 {
    ["s1", "s2"]
        .iter()
        .map(|s| {
            sample(body, &format!("samp_proxy_shard_packets_total{{direction=\"to_shard\",shard=\"{s}\"}}"))
                .unwrap_or_else(|| panic!("no to_shard packets for {s}:\n{body}"))
        })
        .sum()
}

#[test]
fn metrics_pass_promtool_and_agree_with_the_traffic() {
    let sc = Scenario::start(2, |t| t.config(&[100, 100], &format!("metrics_listen: {METRICS}\n"))).unwrap();

    // Ready once the programs are attached and a first health round is done.
    wait_for("/ready to answer 200", Duration::from_secs(30), || get(&sc, "/ready").status == 200);
    let ready = get(&sc, "/ready");
    assert_eq!(ready.body, "ok\n");
    let live = get(&sc, "/live");
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));
    let nope = get(&sc, "/nope");
    assert_eq!((nope.status, nope.body.as_str()), (404, "try /metrics, /live, /ready or /shard/transfer\n"));

    let players = sc.players(10, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 5);
    // The snapshot is refreshed every second: wait for it to see the players.
    let established = |b: &str| {
        (1..=2)
            .filter_map(|i| sample(b, &format!("samp_proxy_shard_sessions{{shard=\"s{i}\",state=\"established\"}}")))
            .sum::<f64>()
    };
    wait_for("the metrics to count 10 established players", Duration::from_secs(15), || {
        let m = get(&sc, "/metrics");
        m.status == 200 && established(&m.body) == 10.0
    });

    let m = get(&sc, "/metrics");
    assert_eq!(m.status, 200);
    let content_type = m.headers.get("content-type").map(String::as_str).unwrap_or("");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "Content-Type: {content_type}");
    let out = promtool(&["check", "metrics"], m.body.as_bytes());
    assert!(out.status.success(), "promtool rejects /metrics:\n{}\n{}", said(&out), m.body);
    assert_eq!(established(&m.body), 10.0, "{}", m.body);
    assert_eq!(sample(&m.body, "samp_proxy_packets_total{outcome=\"session_promoted\"}"), Some(10.0), "{}", m.body);
    for want in [
        "samp_proxy_ready 1",
        "samp_proxy_shard_up{shard=\"s1\"} 1",
        "samp_proxy_shard_capacity{shard=\"s2\"} 100",
        "samp_proxy_queries_total{path=\"agent\",type=\"info\"}",
        "samp_proxy_query_drops_total{reason=\"budget\"}",
        "samp_proxy_config_reloads_total{result=\"ok\"} 0",
        "samp_proxy_probe_rtt_seconds_bucket{le=\"+Inf\"}",
        "samp_proxy_build_info{version=",
    ] {
        assert!(m.body.lines().any(|l| l.starts_with(want)), "metrics lack `{want}`:\n{}", m.body);
    }
    // Probes were answered, so the histogram counted them.
    assert!(sample(&m.body, "samp_proxy_probe_rtt_seconds_count").is_some_and(|n| n >= 1.0), "{}", m.body);

    // What the data plane forwarded to the shards is what the shards got.
    // Every datagram from a player crosses the proxy and is counted to_shard
    // (handshakes too: the 24 with cookie 0 and the 24 with the cookie, and
    // retries); the health probes go from the proxy's own stack and are not.
    // The simulator counts every player datagram it receives, each in one
    // place: handshakes and game packets per client, game packets before a
    // handshake (`unconnected`) and bad checksums. So the two are equal once
    // the players stop and the snapshot catches up.
    players.stop();
    sc.rt.block_on(players.join());
    let shards_received = || -> f64 {
        (0..2)
            .map(|i| {
                let st = sc.shard_stats(i);
                let per_client: u64 = st.clients.values().map(|c| c.handshakes + c.packets).sum();
                (per_client + st.unconnected + st.bad_checksum) as f64
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let (kernel, shards) = loop {
        let (kernel, shards) = (to_shard_packets(&get(&sc, "/metrics").body), shards_received());
        if kernel == shards || Instant::now() > deadline {
            break (kernel, shards);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(kernel, shards, "to_shard packets in /metrics vs datagrams the shards received");
    let game: u64 = (0..2).map(|i| sc.shard_stats(i).game_packets()).sum();
    assert!(kernel >= game as f64 + 20.0, "{kernel} packets to shards, {game} game packets: no handshakes counted?");
    // Stable: a snapshot more than a tick later says the same.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(to_shard_packets(&get(&sc, "/metrics").body), kernel);
    assert_eq!(shards_received(), shards);
}
