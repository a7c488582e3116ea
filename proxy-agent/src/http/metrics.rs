//! The metrics text of one status snapshot, in the classic Prometheus text
//! format (0.0.4), written by the `prometheus` crate: every scrape fills a
//! fresh registry from the `StatusView` alone, so each value is what the
//! owner last published and nothing is remembered between scrapes. The
//! crate writes HELP and TYPE, orders families by name and labels by label
//! name, and escapes label values.

use std::collections::HashMap;

use prometheus::{
    core::{Collector, Desc},
    proto, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::control::views::{AgentView, HistogramView, IndexView, StatusView};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Query types, as `samp_proxy_queries_total{type}` names them; the data
/// plane counts each as `query_answered_<type>`, the agent keys
/// `queries_answered` by the bare name.
const QUERY_TYPES: [&str; 6] = ["info", "rules", "clients", "detail", "ping", "openmp"];
/// Reasons a query is dropped: counters `drop_query_<reason>`.
const QUERY_DROPS: [&str; 4] = ["rcon", "budget", "malformed", "unanswered"];
const RELOAD_RESULTS: [&str; 3] = ["ok", "refused", "rolled_back"];

/// The metrics text of one status snapshot.
pub fn render(st: &StatusView) -> prometheus::Result<String> {
    let r = Scrape(Registry::new());
    traffic(&r, st)?;
    shards(&r, st)?;
    let a = &st.agent;
    agent(&r, a)?;
    if let Some(k) = &a.kubernetes {
        kubernetes(&r, k)?;
    }
    if let Some(p) = &a.peers {
        super::peer_metrics::peers(&r, p)?;
    }
    if let Some(c) = &a.coordinator {
        super::peer_metrics::coordinator(&r, c)?;
    }
    index(&r, &a.index)?;
    r.gauge("samp_proxy_agent_info", "The agent's version", &["version"])?.with_label_values(&[&a.version]).set(1.0);
    r.gauge("samp_proxy_build_info", "The agent's build: its version", &["version"])?
        .with_label_values(&[&a.version])
        .set(1.0);

    TextEncoder::new().encode_to_string(&r.0.gather())
}

/// Packets by outcome and SA:MP queries, from the data plane's counters.
fn traffic(r: &Scrape, st: &StatusView) -> prometheus::Result<()> {
    let counter = |name: &str| st.counters.get(name).copied().unwrap_or(0);

    let packets = r.counter(
        "samp_proxy_packets_total",
        "Data-plane outcomes, one per packet (and events: session_placed, session_promoted, session_event_lost)",
        &["outcome"],
    )?;
    for (outcome, v) in &st.counters {
        packets.with_label_values(&[outcome]).inc_by(*v);
    }

    let queries = r.counter(
        "samp_proxy_queries_total",
        "SA:MP queries answered, by type, in the data plane (path kernel) or by the agent (path agent)",
        &["type", "path"],
    )?;
    let agent_answered = |kind: &str| st.agent.queries_answered.get(kind).copied().unwrap_or(0);
    for kind in QUERY_TYPES {
        queries.with_label_values(&[kind, "kernel"]).inc_by(counter(&format!("query_answered_{kind}")));
        queries.with_label_values(&[kind, "agent"]).inc_by(agent_answered(kind));
    }
    let query_drops =
        r.counter("samp_proxy_query_drops_total", "SA:MP queries dropped by the data plane, by reason", &["reason"])?;
    for reason in QUERY_DROPS {
        query_drops.with_label_values(&[reason]).inc_by(counter(&format!("drop_query_{reason}")));
    }
    Ok(())
}

/// Traffic, sessions, capacity, health and role of each shard.
fn shards(r: &Scrape, st: &StatusView) -> prometheus::Result<()> {
    let shard_packets = r.counter(
        "samp_proxy_shard_packets_total",
        "Packets forwarded to and from each shard",
        &["shard", "direction"],
    )?;
    let shard_bytes = r.counter(
        "samp_proxy_shard_bytes_total",
        "IPv4 bytes forwarded to and from each shard",
        &["shard", "direction"],
    )?;
    let sessions =
        r.gauge("samp_proxy_shard_sessions", "Sessions routed to each shard, by state", &["shard", "state"])?;
    let capacity = r.gauge("samp_proxy_shard_capacity", "Configured player slots of each shard", &["shard"])?;
    let up = r.gauge("samp_proxy_shard_up", "1 when the shard answers its SA:MP query probes", &["shard"])?;
    let rtt =
        r.gauge("samp_proxy_shard_probe_rtt_seconds", "Round trip of the last answered ping probe", &["shard"])?;
    let info = r.gauge("samp_proxy_shard_info", "Role and drain state of each shard", &["shard", "role", "drained"])?;
    for s in &st.shards {
        let n = s.name.as_str();
        let t = &s.traffic;
        shard_packets.with_label_values(&[n, "to_shard"]).inc_by(t.packets_to_shard);
        shard_packets.with_label_values(&[n, "from_shard"]).inc_by(t.packets_from_shard);
        shard_bytes.with_label_values(&[n, "to_shard"]).inc_by(t.bytes_to_shard);
        shard_bytes.with_label_values(&[n, "from_shard"]).inc_by(t.bytes_from_shard);
        for (state, v) in [("established", s.established), ("pending", s.pending), ("moving", s.moving)] {
            sessions.with_label_values(&[n, state]).set(v as f64);
        }
        capacity.with_label_values(&[n]).set(f64::from(s.capacity));
        up.with_label_values(&[n]).set(if s.health == "down" { 0.0 } else { 1.0 });
        if let Some(ms) = s.rtt_ms {
            rtt.with_label_values(&[n]).set(ms / 1000.0);
        }
        let drained = if s.drained { "true" } else { "false" };
        info.with_label_values(&[n, s.role.as_str(), drained]).set(1.0);
    }
    super::site_metrics::sites(r, st)
}

/// The agent's own counts: probes, events, reloads, expiry, readiness.
fn agent(r: &Scrape, a: &AgentView) -> prometheus::Result<()> {
    r.register(precomputed_histogram(
        "samp_proxy_probe_rtt_seconds",
        "Round trip of every answered ping probe",
        &a.probe_rtt,
    )?)?;
    let events = r.counter(
        "samp_proxy_events_total",
        "Health changes, failovers, migrations, area transfers and lease moves since the agent started",
        &["kind"],
    )?;
    for kind in crate::events::EventKind::ALL.iter().map(|k| k.name()) {
        events.with_label_values(&[kind]).inc_by(a.events_total.get(kind).copied().unwrap_or(0));
    }
    let reloads = r.counter(
        "samp_proxy_config_reloads_total",
        "Config reloads by result: ok, refused (bad file or rule), rolled_back",
        &["result"],
    )?;
    for result in RELOAD_RESULTS {
        reloads.with_label_values(&[result]).inc_by(a.reloads.get(result).copied().unwrap_or(0));
    }
    let expired = r.counter("samp_proxy_sessions_expired_total", "Sessions removed by the agent", &["reason"])?;
    expired.with_label_values(&["idle"]).inc_by(a.expired_idle);
    expired.with_label_values(&["moved_never_reconnected"]).inc_by(a.expired_moving);
    r.gauge("samp_proxy_parked_failovers", "Failed shards whose players found no room yet", &[])?
        .with_label_values(&[] as &[&str])
        .set(a.parked_failovers as f64);
    r.gauge(
        "samp_proxy_ready",
        "1 when the agent is ready: programs attached, a first health round done, nothing half applied",
        &[],
    )?
    .with_label_values(&[] as &[&str])
    .set(if a.ready { 1.0 } else { 0.0 });
    Ok(())
}

/// The agent's session index: its size, its scans and what they repaired.
fn index(r: &Scrape, i: &IndexView) -> prometheus::Result<()> {
    r.gauge("samp_proxy_index_sessions", "Sessions in the agent's index (established and pending)", &[])?
        .with_label_values(&[] as &[&str])
        .set(i.sessions as f64);
    r.counter("samp_proxy_index_scans_total", "Full scans of the session tables", &[])?
        .with_label_values(&[] as &[&str])
        .inc_by(i.scans);
    let repaired = r.counter(
        "samp_proxy_index_repairs_total",
        "Sessions a scan found that the event ring had not reported (added) or that the tables dropped silently (removed)",
        &["kind"],
    )?;
    repaired.with_label_values(&["added"]).inc_by(i.repaired_added);
    repaired.with_label_values(&["removed"]).inc_by(i.repaired_removed);
    Ok(())
}

/// The Agones source: API reachability, the decider, pools, allocations.
fn kubernetes(r: &Scrape, k: &crate::control::views::KubernetesView) -> prometheus::Result<()> {
    let one = |b: bool| if b { 1.0 } else { 0.0 };
    r.gauge(
        "samp_proxy_kubernetes_api_up",
        "1 when the Kubernetes API answers the watch and the Lease; 0: forwarding goes on with the shards known",
        &[],
    )?
    .with_label_values(&[] as &[&str])
    .set(one(k.api_error.is_none()));
    r.gauge("samp_proxy_decider", "1 on the replica that holds the decider's Lease", &[])?
        .with_label_values(&[] as &[&str])
        .set(one(k.leading));
    let pool =
        r.gauge("samp_proxy_pool_ready_gameservers", "Ready GameServers in each frontend's pool", &["frontend"])?;
    for (fe, n) in &k.pool_ready {
        pool.with_label_values(&[fe]).set(*n as f64);
    }
    let unusable = r.gauge(
        "samp_proxy_unusable_gameservers",
        "Allocated GameServers with the frontend's labels that cannot be shards (see `proxy-agent status`)",
        &["frontend"],
    )?;
    for fe in k.pool_ready.keys() {
        unusable.with_label_values(&[fe]).set(k.unusable.iter().filter(|u| &u.frontend == fe).count() as f64);
    }
    let allocations = r.counter(
        "samp_proxy_allocations_total",
        "GameServerAllocations by outcome: allocated, unallocated, contention, error, timeout",
        &["outcome"],
    )?;
    for outcome in ["allocated", "unallocated", "contention", "error", "timeout"] {
        allocations.with_label_values(&[outcome]).inc_by(k.allocations.get(outcome).copied().unwrap_or(0));
    }
    Ok(())
}

/// One scrape's registry.
pub(super) struct Scrape(Registry);

impl Scrape {
    pub(super) fn counter(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
        let v = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(v.clone()))?;
        Ok(v)
    }

    pub(super) fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        let v = GaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(v.clone()))?;
        Ok(v)
    }

    fn register(&self, c: impl Collector + 'static) -> prometheus::Result<()> {
        self.0.register(Box::new(c))
    }
}

/// A family built elsewhere, handed to the registry as it is.
struct Precomputed {
    desc: Desc,
    family: proto::MetricFamily,
}

impl Collector for Precomputed {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![self.family.clone()]
    }
}

/// A histogram whose buckets are already counted (the crate's own
/// `Histogram` only counts observations it makes itself). The buckets are
/// cumulative as they come; the encoder adds `+Inf` (= count) after the
/// last finite bound, so an infinite bound in the view is left to it.
fn precomputed_histogram(name: &str, help: &str, h: &HistogramView) -> prometheus::Result<Precomputed> {
    let desc = Desc::new(name.to_string(), help.to_string(), Vec::new(), HashMap::new())?;
    let mut bounds: Vec<(f64, u64)> = h.buckets.iter().copied().filter(|(bound, _)| bound.is_finite()).collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let buckets = bounds
        .into_iter()
        .map(|(bound, n)| {
            let mut b = proto::Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(n);
            b
        })
        .collect();
    let mut histogram = proto::Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_sum(h.sum);
    histogram.set_sample_count(h.count);
    let mut metric = proto::Metric::default();
    metric.set_histogram(histogram);
    let mut family = proto::MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(proto::MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    Ok(Precomputed { desc, family })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::control::views::{AgentView, IndexView, ShardView, TrafficView};

    fn shard(name: &str) -> ShardView {
        ShardView {
            name: name.into(),
            role: "active".into(),
            health: "up".into(),
            rtt_ms: Some(1.5),
            established: 7,
            pending: 2,
            moving: 1,
            capacity: 100,
            traffic: TrafficView {
                packets_to_shard: 11,
                bytes_to_shard: 1100,
                packets_from_shard: 9,
                bytes_from_shard: 900,
            },
            ..Default::default()
        }
    }

    fn status() -> StatusView {
        let mut probe_rtt = HistogramView::for_probe_rtt();
        for v in [0.0003, 0.0004, 0.002, 0.7, 3.0] {
            probe_rtt.observe(v);
        }
        let counters: BTreeMap<String, u64> = [
            ("ingress_redirect", 1234),
            ("session_promoted", 10),
            ("query_answered_info", 5),
            ("query_answered_ping", 6),
            ("drop_query_rcon", 2),
            ("drop_query_budget", 3),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut down = shard("s2");
        down.health = "down".into();
        down.rtt_ms = None;
        down.drained = true;
        down.role = "standby".into();
        StatusView {
            shards: vec![shard("s1"), down],
            counters,
            agent: AgentView {
                version: "1.2.3".into(),
                events_total: [("failover".to_string(), 2)].into_iter().collect(),
                expired_idle: 4,
                expired_moving: 1,
                parked_failovers: 1,
                ready: true,
                reloads: [("ok".to_string(), 3), ("refused".to_string(), 1)].into_iter().collect(),
                probe_rtt,
                queries_answered: [("clients".to_string(), 8)].into_iter().collect(),
                index: IndexView {
                    sessions: 19,
                    scans: 12,
                    repaired_added: 1,
                    repaired_removed: 2,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The samples of one family, as (labels, value) lines without the name.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.strip_prefix(name)).collect()
    }

    #[test]
    fn every_family_from_the_snapshot() {
        let text = render(&status()).unwrap();
        for want in [
            "# TYPE samp_proxy_packets_total counter",
            "samp_proxy_packets_total{outcome=\"ingress_redirect\"} 1234",
            "samp_proxy_packets_total{outcome=\"session_promoted\"} 10",
            "samp_proxy_shard_packets_total{direction=\"to_shard\",shard=\"s1\"} 11",
            "samp_proxy_shard_packets_total{direction=\"from_shard\",shard=\"s1\"} 9",
            "samp_proxy_shard_bytes_total{direction=\"to_shard\",shard=\"s2\"} 1100",
            "samp_proxy_shard_bytes_total{direction=\"from_shard\",shard=\"s2\"} 900",
            "# TYPE samp_proxy_shard_sessions gauge",
            "samp_proxy_shard_sessions{shard=\"s1\",state=\"established\"} 7",
            "samp_proxy_shard_sessions{shard=\"s1\",state=\"pending\"} 2",
            "samp_proxy_shard_sessions{shard=\"s1\",state=\"moving\"} 1",
            "samp_proxy_shard_capacity{shard=\"s2\"} 100",
            "samp_proxy_shard_up{shard=\"s1\"} 1",
            "samp_proxy_shard_up{shard=\"s2\"} 0",
            "samp_proxy_shard_probe_rtt_seconds{shard=\"s1\"} 0.0015",
            "samp_proxy_shard_info{drained=\"false\",role=\"active\",shard=\"s1\"} 1",
            "samp_proxy_shard_info{drained=\"true\",role=\"standby\",shard=\"s2\"} 1",
            "samp_proxy_events_total{kind=\"failover\"} 2",
            "samp_proxy_events_total{kind=\"migration\"} 0",
            "samp_proxy_sessions_expired_total{reason=\"idle\"} 4",
            "samp_proxy_sessions_expired_total{reason=\"moved_never_reconnected\"} 1",
            "samp_proxy_parked_failovers 1",
            "samp_proxy_index_sessions 19",
            "samp_proxy_index_scans_total 12",
            "samp_proxy_index_repairs_total{kind=\"added\"} 1",
            "samp_proxy_index_repairs_total{kind=\"removed\"} 2",
            "samp_proxy_agent_info{version=\"1.2.3\"} 1",
            "samp_proxy_build_info{version=\"1.2.3\"} 1",
            "samp_proxy_ready 1",
            "samp_proxy_queries_total{path=\"kernel\",type=\"info\"} 5",
            "samp_proxy_queries_total{path=\"kernel\",type=\"ping\"} 6",
            "samp_proxy_queries_total{path=\"kernel\",type=\"openmp\"} 0",
            "samp_proxy_queries_total{path=\"agent\",type=\"clients\"} 8",
            "samp_proxy_queries_total{path=\"agent\",type=\"info\"} 0",
            "samp_proxy_query_drops_total{reason=\"rcon\"} 2",
            "samp_proxy_query_drops_total{reason=\"budget\"} 3",
            "samp_proxy_query_drops_total{reason=\"malformed\"} 0",
            "samp_proxy_query_drops_total{reason=\"unanswered\"} 0",
            "samp_proxy_config_reloads_total{result=\"ok\"} 3",
            "samp_proxy_config_reloads_total{result=\"refused\"} 1",
            "samp_proxy_config_reloads_total{result=\"rolled_back\"} 0",
        ] {
            assert!(text.lines().any(|l| l == want), "no line `{want}` in:\n{text}");
        }
        // A shard that never answered a ping has no round trip.
        assert_eq!(samples(&text, "samp_proxy_shard_probe_rtt_seconds{").len(), 1);
        assert_eq!(samples(&text, "samp_proxy_queries_total{").len(), 12);
        // Every sample has a TYPE and a HELP, and a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad value in `{line}`");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| text.contains(&format!("# TYPE {f} histogram"))))
                .unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {name}");
            assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {name}");
        }
    }

    #[test]
    fn the_histogram_is_cumulative_and_ends_in_inf() {
        let text = render(&status()).unwrap();
        assert!(text.contains("# TYPE samp_proxy_probe_rtt_seconds histogram\n"));
        let buckets: Vec<(String, u64)> = samples(&text, "samp_proxy_probe_rtt_seconds_bucket{le=\"")
            .iter()
            .map(|l| {
                let (le, n) = l.split_once("\"} ").unwrap();
                (le.to_string(), n.parse().unwrap())
            })
            .collect();
        let les: Vec<&str> = buckets.iter().map(|(le, _)| le.as_str()).collect();
        assert_eq!(
            les,
            [
                "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1", "+Inf"
            ]
        );
        let counts: Vec<u64> = buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [0, 0, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 5]);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert!(text.contains("\nsamp_proxy_probe_rtt_seconds_count 5\n"));
        let sum: f64 = samples(&text, "samp_proxy_probe_rtt_seconds_sum ")[0].parse().unwrap();
        assert!((sum - 3.7027).abs() < 1e-9, "{sum}");

        // An explicit +Inf bucket in the view is not written twice, nor as `inf`.
        let mut st = status();
        st.agent.probe_rtt.buckets.push((f64::INFINITY, 5));
        let text = render(&st).unwrap();
        assert_eq!(text.matches("le=\"+Inf\"").count(), 1);
        assert!(!text.contains("le=\"inf\""));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut st = status();
        st.shards[0].name = "we\"ird\\sh\nard".into();
        let text = render(&st).unwrap();
        let want = "samp_proxy_shard_capacity{shard=\"we\\\"ird\\\\sh\\nard\"} 100";
        assert!(text.lines().any(|l| l == want), "no line `{want}` in:\n{text}");
        // The raw newline never reaches the text: every line is a comment or
        // a whole sample.
        for line in text.lines() {
            assert!(line.starts_with("# ") || line.starts_with("samp_proxy_"), "stray line `{line}`");
        }
    }

    #[test]
    fn every_event_kind_has_its_own_series() {
        let text = render(&StatusView::default()).unwrap();
        for k in crate::events::EventKind::ALL {
            let series = format!("samp_proxy_events_total{{kind=\"{}\"}} 0", k.name());
            assert!(text.contains(&series), "{series} missing");
        }
    }

    #[test]
    fn an_empty_snapshot_still_renders() {
        let text = render(&StatusView::default()).unwrap();
        assert!(text.contains("samp_proxy_ready 0\n"), "{text}");
        assert!(text.contains("samp_proxy_probe_rtt_seconds_bucket{le=\"+Inf\"} 0\n"), "{text}");
        assert!(!text.contains("samp_proxy_shard_"), "{text}");
    }
}
