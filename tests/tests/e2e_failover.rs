//! Health checks and whole-group failover, end to end: real probes over the
//! SA:MP query protocol, real XDP, simulated shards that die, hang or lose
//! their link, and players that reconnect on their own.

use std::time::Duration;

use proxy_agent::protocol::Request;
use serde_json::Value;
use tests::{
    scenario::{on_shard, wait_for, Scenario},
    sim::player::Players,
};

fn events(sc: &Scenario) -> Vec<Value> {
    sc.agent.request(&Request::Events).unwrap().as_array().unwrap().clone()
}

fn has_event(sc: &Scenario, kind: &str, shard: &str) -> bool {
    events(sc).iter().any(|e| e["kind"] == kind && e["shard"] == shard)
}

fn shard_list(players: &Players) -> Vec<Vec<String>> {
    players.snapshot().iter().map(|p| p.shards.iter().map(|(s, _)| s.clone()).collect()).collect()
}

fn all_on(players: &Players, shard: &str) -> bool {
    players.snapshot().iter().all(|p| p.connected && p.current_shard() == Some(shard))
}

fn drain(sc: &Scenario, shard: &str, on: bool) {
    let req = if on { Request::Drain { shard: shard.into() } } else { Request::Undrain { shard: shard.into() } };
    sc.agent.request(&req).unwrap();
}

#[test]
fn a_dead_shard_fails_over_to_the_standby_then_to_the_roomiest_shard() {
    let sc = Scenario::start(3, |t| t.config_of(&[(0, 100, "active"), (1, 100, "active"), (2, 100, "standby")], ""))
        .unwrap();
    let cfg = sc.player_config();
    // A busy B (s2) with 30 players, then 50 players on A (s1).
    drain(&sc, "s1", true);
    let on_b = sc.players(30, &cfg).unwrap();
    Scenario::wait_playing(&on_b, 5);
    drain(&sc, "s1", false);
    drain(&sc, "s2", true);
    let on_a = sc.players(50, &cfg).unwrap();
    Scenario::wait_playing(&on_a, 5);
    drain(&sc, "s2", false);
    assert!(all_on(&on_b, "s2") && all_on(&on_a, "s1"));

    // A's process dies: every one of its 50 players lands on the standby.
    let mut shards = sc.shards;
    let sc = Scenario { shards: Vec::new(), ..sc };
    shards[0].stop();
    wait_for("A's 50 players on the standby", Duration::from_secs(30), || all_on(&on_a, "s3"));
    for list in shard_list(&on_a) {
        assert_eq!(list, ["s1", "s3"], "an A player went elsewhere first");
    }
    for p in on_b.snapshot() {
        assert_eq!((p.connects, p.shards.len()), (1, 1), "B's player {} was disturbed", p.local);
    }
    let ev = events(&sc);
    let fo = ev.iter().find(|e| e["kind"] == "failover" && e["shard"] == "s1").expect("a failover event");
    assert_eq!(fo["target"], "s3");
    assert_eq!(fo["players"], 50);
    assert!(has_event(&sc, "health_down", "s1"));
    let st = sc.agent.request(&Request::Status).unwrap();
    let s1 = st["shards"].as_array().unwrap().iter().find(|s| s["name"] == "s1").unwrap().clone();
    assert_eq!(s1["health"], "down");
    assert_eq!(s1["players"], 0);

    // The standby dies too: no standby left, so the 50 go to B, the shard
    // with the most room (A is down), all together.
    shards[2].stop();
    wait_for("the 50 on B", Duration::from_secs(30), || all_on(&on_a, "s2"));
    for list in shard_list(&on_a) {
        assert_eq!(list, ["s1", "s3", "s2"]);
    }
    let fo = events(&sc).into_iter().rfind(|e| e["kind"] == "failover").unwrap();
    assert_eq!((fo["shard"].as_str(), fo["target"].as_str()), (Some("s3"), Some("s2")));
    on_a.stop();
    on_b.stop();
    drop(shards);
}

#[test]
fn no_room_parks_the_group_until_capacity_appears() {
    let yaml = |t: &tests::topology::Topology, cap2: u32| t.config_of(&[(0, 100, "active"), (1, cap2, "active")], "");
    let sc = Scenario::start(2, |t| yaml(t, 20)).unwrap();
    drain(&sc, "s2", true);
    let players = sc.players(30, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 5);
    drain(&sc, "s2", false);
    let mut shards = sc.shards;
    let sc = Scenario { shards: Vec::new(), ..sc };
    shards[0].stop();
    wait_for("the failover to park", Duration::from_secs(20), || has_event(&sc, "failover_parked", "s1"));
    let parked = events(&sc).into_iter().find(|e| e["kind"] == "failover_parked").unwrap();
    assert!(parked["detail"].as_str().unwrap().contains("30 players together"), "{parked}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(on_shard(&players.snapshot(), "s2").is_empty(), "a parked group must not be split onto a small shard");

    // Capacity appears (s2 grows): the parked group moves, whole.
    let extra = format!("bpffs: {}\ncontrol_socket: {}\n", sc.agent.pins.path.display(), sc.agent.socket.display());
    std::fs::write(&sc.agent.config_path, format!("{}{extra}", yaml(&sc.topo, 100))).unwrap();
    sc.agent.request(&Request::Reload).unwrap();
    wait_for("the parked players on s2", Duration::from_secs(30), || all_on(&players, "s2"));
    assert!(has_event(&sc, "failover", "s1"));
    players.stop();
    drop(shards);
}

#[test]
fn a_cut_link_fails_over_and_a_flap_does_not() {
    let sc = Scenario::start(2, |t| t.config_of(&[(0, 100, "active"), (1, 100, "standby")], "")).unwrap();
    let players = sc.players(20, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 5);
    // A hang shorter than the hysteresis window (3 probes x 200 ms): no failover.
    sc.shards[0].set_muted(true);
    std::thread::sleep(Duration::from_millis(300));
    sc.shards[0].set_muted(false);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!has_event(&sc, "health_down", "s1"), "a flap inside the hysteresis window failed over: {:?}", events(&sc));
    for p in players.snapshot() {
        assert_eq!((p.connects, p.shards.len()), (1, 1), "{} was moved by a flap", p.local);
    }
    // Now the shard's link goes down.
    sc.topo.shards[0].ip(&["link", "set", "eth0", "down"]).unwrap();
    wait_for("all 20 on the standby", Duration::from_secs(30), || all_on(&players, "s2"));
    assert!(has_event(&sc, "failover", "s1"));
    players.stop();
}

#[test]
fn failover_by_hand_takes_the_same_path() {
    let sc = Scenario::start(2, |t| t.config(&[100, 100], "metrics_listen: 127.0.0.1:9477\n")).unwrap();
    drain(&sc, "s2", true);
    let players = sc.players(10, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 5);
    drain(&sc, "s2", false);
    let (ok, _, err) = sc.agent.cli(&["failover", "s1", "--to", "s9"]).unwrap();
    assert!(!ok && err.contains("no shard named `s9`"), "{err}");
    let (ok, out, err) = sc.agent.cli(&["failover", "s1"]).unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("10 players moving together to s2"), "{out}");
    wait_for("the 10 on s2", Duration::from_secs(30), || all_on(&players, "s2"));
    let (ok, out, _) = sc.agent.cli(&["events"]).unwrap();
    assert!(ok && out.contains("failover") && out.contains("manual"), "{out}");
    let json: Value = serde_json::from_str(&sc.agent.cli(&["events", "--json"]).unwrap().1).unwrap();
    assert!(json.as_array().unwrap().iter().any(|e| e["kind"] == "failover" && e["target"] == "s2"));

    // The same story in Prometheus metrics.
    let metrics = scrape(&sc, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    let body = metrics.split("\r\n\r\n").nth(1).unwrap();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line `{line}`"));
        assert!(value.parse::<f64>().is_ok(), "bad value in `{line}`");
        let name = series.split('{').next().unwrap();
        // A histogram's samples are its name plus _bucket, _sum or _count.
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| body.contains(&format!("# TYPE {f} histogram"))))
            .unwrap_or(name);
        assert!(body.contains(&format!("# TYPE {name} ")), "no TYPE for {name}");
    }
    for want in [
        "samp_proxy_events_total{kind=\"failover\"} 1",
        "samp_proxy_shard_sessions{shard=\"s2\",state=\"established\"} 10",
        "samp_proxy_shard_sessions{shard=\"s1\",state=\"established\"} 0",
        "samp_proxy_shard_up{shard=\"s1\"} 1",
        "samp_proxy_shard_capacity{shard=\"s2\"} 100",
    ] {
        assert!(body.contains(want), "metrics lack `{want}`:\n{body}");
    }
    // Metrics are the agent's last snapshot (taken every second): the
    // packets counted keep up with the traffic within a tick.
    wait_for("the metrics to count the traffic", Duration::from_secs(10), || {
        let metrics = scrape(&sc, "/metrics");
        let redirected = metrics
            .lines()
            .find(|l| l.starts_with("samp_proxy_packets_total{outcome=\"ingress_redirect\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        redirected.is_some_and(|n| n > 100.0)
    });
    assert!(scrape(&sc, "/live").contains("200 OK"));
    assert!(scrape(&sc, "/nope").contains("404"));
    players.stop();
}

/// An HTTP GET to the agent's metrics port, from inside the proxy namespace.
fn scrape(sc: &Scenario, path: &str) -> String {
    use std::io::{Read, Write};
    sc.topo
        .proxy
        .run(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}
