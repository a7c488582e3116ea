//! Shards from Agones, end to end: real XDP, real players and shards in
//! namespaces, the real kube-rs client in the agent, and the stand-in
//! Kubernetes API server of the harness (`tests::kube_api`; no real API
//! server can run here). GameServers are named after the simulated shards
//! (`s1`, `s2`, ...) and their pod IPs are those shards' addresses, so a
//! player's echoes name the GameServer it plays on.

use std::time::{Duration, Instant};

use proxy_agent::protocol::Request;
use serde_json::Value;
use tests::{
    agones::{self, FLEET_LABEL, FRONTEND_LABEL, LEASE, LEASE_NS, NS},
    kube_api::{AllocationAnswer, GameServerSpec},
    scenario::{wait_for, Scenario},
    sim::player::Players,
    topology::shard_ip,
};

fn status(sc: &Scenario) -> Value {
    sc.agent.request(&Request::Status).unwrap()
}

fn shard<'a>(st: &'a Value, name: &str) -> Option<&'a Value> {
    st["shards"].as_array().unwrap().iter().find(|s| s["name"] == name)
}

fn events(sc: &Scenario) -> Vec<Value> {
    sc.agent.request(&Request::Events).unwrap().as_array().unwrap().clone()
}

fn event<'a>(evs: &'a [Value], kind: &str, shard: &str) -> Option<&'a Value> {
    evs.iter().rev().find(|e| e["kind"] == kind && e["shard"] == shard)
}

/// `wait_for`, printing the agent's events and log when it times out.
fn wait(sc: &Scenario, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            eprintln!("events: {:#?}", events(sc));
            eprintln!("status: {}", status(sc));
            eprintln!("log:\n{}", sc.agent.log_text());
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_on(players: &Players, shard: &str) -> bool {
    players.snapshot().iter().all(|p| p.connected && p.current_shard() == Some(shard))
}

fn wait_up(sc: &Scenario, name: &str) {
    wait_for(&format!("shard {name} up with its size probed"), Duration::from_secs(20), || {
        shard(&status(sc), name).is_some_and(|s| s["health"] == "up" && s["capacity"] == 1000)
    });
}

fn leading(sc: &Scenario) -> bool {
    status(sc)["agent"]["kubernetes"]["leading"] == true
}

#[test]
fn gameservers_become_shards_and_a_deleted_one_fails_over_to_a_fresh_one() {
    let (sc, api) =
        agones::scenario(&["Allocated", "Ready", "Ready"], "replica-a", "metrics_listen: 127.0.0.1:9477\n").unwrap();
    // An Allocated GameServer of the frontend on another port: reported, never used.
    let mut wrong = GameServerSpec::new(NS, "s4").label(FRONTEND_LABEL.0, FRONTEND_LABEL.1).state("Allocated");
    wrong.pod_ip = shard_ip(3).to_string();
    wrong.port = 7000;
    api.add_gameserver(&wrong).unwrap();
    wait_for("s4 reported", Duration::from_secs(10), || {
        status(&sc)["agent"]["kubernetes"]["unusable"].as_array().is_some_and(|u| !u.is_empty())
    });
    wait_up(&sc, "s1");
    wait_for("the decider's Lease", Duration::from_secs(10), || leading(&sc));
    let st = status(&sc);
    let k = &st["agent"]["kubernetes"];
    assert_eq!(k["pool_ready"]["play"], 2, "{k}");
    let unusable = k["unusable"].as_array().unwrap();
    assert_eq!(unusable.len(), 1, "{k}");
    assert_eq!(unusable[0]["name"], "s4");
    assert!(unusable[0]["problem"].as_str().unwrap().contains("7000"), "{k}");
    assert!(shard(&st, "s4").is_none() && shard(&st, "s2").is_none(), "only Allocated, usable GameServers are shards");
    assert_eq!(shard(&st, "s1").unwrap()["source"], "gameserver");
    let lease = api.lease(LEASE_NS, LEASE).expect("the Lease was created");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    let (ok, out, err) = sc.agent.cli(&["status"]).unwrap();
    assert!(ok, "{err}");
    for line in ["kubernetes: decider this replica; pools play: 2 Ready", "GameServer game/s4 cannot be a shard"] {
        assert!(out.contains(line), "`proxy-agent status` lacks {line:?}:\n{out}");
    }

    let cfg = sc.player_config();
    let players = sc.players(12, &cfg).unwrap();
    Scenario::wait_playing(&players, 3);
    assert!(all_on(&players, "s1"), "one shard: everybody plays on s1");

    // Somebody allocates s2 by hand: it becomes a shard without a restart.
    api.modify_gameserver(NS, "s2", |gs| {
        gs["status"]["state"] = "Allocated".into();
        gs["metadata"]["labels"][FRONTEND_LABEL.0] = FRONTEND_LABEL.1.into();
    })
    .unwrap();
    wait_up(&sc, "s2");

    // s1's GameServer is deleted: its players fail over at once, together,
    // to a freshly allocated shard (s3, the only Ready one), not to s2.
    let deleted = Instant::now();
    api.delete_gameserver(NS, "s1").unwrap();
    wait(&sc, "s1's players on the fresh shard s3", Duration::from_secs(30), || all_on(&players, "s3"));
    let took = deleted.elapsed();
    for p in players.snapshot() {
        let path: Vec<&str> = p.shards.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(path, ["s1", "s3"], "player {} went elsewhere", p.local);
    }
    let allocations = api.allocations();
    assert_eq!(allocations.len(), 1, "one allocation for one failure: {allocations:?}");
    assert_eq!(allocations[0].gameserver(), Some("s3"));
    let asked = &allocations[0].request["spec"];
    assert_eq!(asked["metadata"]["annotations"]["samp-proxy.dev/replaces"], "s1");
    assert_eq!(asked["selectors"][0]["matchLabels"][FLEET_LABEL.0], FLEET_LABEL.1);
    let evs = events(&sc);
    let failover = event(&evs, "failover", "s1").expect("a failover event");
    assert_eq!(failover["target"], "s3");
    assert!(failover["detail"].as_str().unwrap().contains("fresh GameServer s3"), "{failover}");
    assert!(event(&evs, "health_down", "s1").unwrap()["detail"].as_str().unwrap().contains("deleted"));
    wait_for("the decision recorded on s3's GameServer", Duration::from_secs(10), || {
        api.gameserver(NS, "s3").is_some_and(|g| g["metadata"]["annotations"]["samp-proxy.dev/serves"] == "s1")
    });
    wait_for("the departed s1 leaves the maps once its players moved", Duration::from_secs(15), || {
        shard(&status(&sc), "s1").is_none()
    });
    println!(
        "GameServer deleted -> every player on the fresh shard: {:.2} s (client reconnect 1.5 s)",
        took.as_secs_f64()
    );

    // The API goes away: forwarding goes on, /ready and the metrics say so.
    api.set_unreachable(true);
    wait_for("the agent to notice the API is gone", Duration::from_secs(10), || {
        status(&sc)["agent"]["kubernetes"]["api_error"].is_string()
    });
    let (code, body) = tests::http::request(&sc.topo.proxy, "127.0.0.1:9477".parse().unwrap(), "GET", "/ready", "");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("Kubernetes API"), "{body}");
    let (_, metrics) = tests::http::request(&sc.topo.proxy, "127.0.0.1:9477".parse().unwrap(), "GET", "/metrics", "");
    assert!(metrics.contains("samp_proxy_kubernetes_api_up 0"), "{metrics}");
    let before: u64 = players.snapshot().iter().map(|p| p.received).sum();
    wait_for("players still playing without the API", Duration::from_secs(10), || {
        players.snapshot().iter().map(|p| p.received).sum::<u64>() > before + 24
    });
    api.set_unreachable(false);
    wait(&sc, "ready again with the API back", Duration::from_secs(20), || {
        tests::http::request(&sc.topo.proxy, "127.0.0.1:9477".parse().unwrap(), "GET", "/ready", "").0 == 200
    });
    assert!(all_on(&players, "s3"));
    players.stop();
}

#[test]
fn a_failed_allocation_takes_the_fallback_and_an_empty_pool_parks_until_a_gameserver_is_ready() {
    let (sc, api) = agones::scenario(&["Allocated", "Allocated", "Ready", "Scheduled"], "replica-a", "").unwrap();
    wait_up(&sc, "s1");
    wait_up(&sc, "s2");
    wait_for("the decider's Lease", Duration::from_secs(10), || leading(&sc));
    let cfg = sc.player_config();
    let players = sc.players(16, &cfg).unwrap();
    Scenario::wait_playing(&players, 3);
    let on = |s: &str| players.snapshot().iter().filter(|p| p.current_shard() == Some(s)).count();
    assert!(on("s1") > 0 && on("s2") > 0, "placement spreads over both shards");

    // 1. The API fails the allocation (503, which kube-rs would resend by
    //    itself: it must not, or a flaky API allocates twice): the roomiest
    //    active shard (s2) takes s1's players.
    api.queue_allocation_answer(AllocationAnswer::Error(503));
    api.delete_gameserver(NS, "s1").unwrap();
    wait_for("s1's players on s2", Duration::from_secs(30), || all_on(&players, "s2"));
    let evs = events(&sc);
    let detail = event(&evs, "failover", "s1").unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("allocation failed") && detail.contains("roomiest active shard, s2"), "{detail}");
    assert_eq!(api.allocations().len(), 1, "the refused allocation was not sent again");

    // 2. The allocation answers after the deadline (300 ms): no shard left
    //    to fall back on, so s2's players wait, parked with the reason...
    api.set_allocation_delay(Duration::from_millis(1500));
    api.delete_gameserver(NS, "s2").unwrap();
    wait_for("s2 parked after the allocation timed out", Duration::from_secs(10), || {
        event(&events(&sc), "failover_parked", "s2")
            .is_some_and(|e| e["detail"].as_str().unwrap().contains("no allocation answer within the deadline"))
    });
    // ...until a retry (a second later) gets s3: the API is fast again, and
    // the late first allocation, when it lands, finds the pool empty.
    api.set_allocation_delay(Duration::ZERO);
    wait_for("s2's players on s3", Duration::from_secs(30), || all_on(&players, "s3"));
    let evs = events(&sc);
    let detail = event(&evs, "failover", "s2").unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("s3"), "{detail}");
    wait_for("the late allocation answered", Duration::from_secs(5), || {
        api.allocations().iter().all(|a| a.answered.is_some())
    });
    let allocated: Vec<_> = api.allocations().iter().filter_map(|a| a.gameserver().map(String::from)).collect();
    assert_eq!(allocated, ["s3"], "one GameServer allocated for s2, however late the first answer");

    // 3. The pool is empty and no shard is left: parked until a GameServer is Ready.
    api.delete_gameserver(NS, "s3").unwrap();
    // Parked while the allocation is asked, then with its answer's reason.
    wait_for("s3 parked on an empty pool", Duration::from_secs(10), || {
        event(&events(&sc), "failover_parked", "s3").is_some()
    });
    assert_eq!(shard(&status(&sc), "s3").unwrap()["parked"], true);
    let parked = event(&events(&sc), "failover_parked", "s3").unwrap()["detail"].as_str().unwrap().to_string();
    assert!(parked.contains("no Ready GameServer"), "{parked}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(players.snapshot().iter().all(|p| p.current_shard() == Some("s3")), "nobody moved anywhere meanwhile");
    let ready_at = Instant::now();
    api.set_gameserver_state(NS, "s4", "Ready").unwrap();
    wait_for("s3's players on the new s4", Duration::from_secs(30), || all_on(&players, "s4"));
    let evs = events(&sc);
    let failover = event(&evs, "failover", "s3").unwrap();
    assert!(failover["detail"].as_str().unwrap().contains("fresh GameServer s4"), "{failover}");
    println!("a GameServer Ready -> parked players on it: {:.2} s", ready_at.elapsed().as_secs_f64());
    let outcomes: Vec<String> = api.allocations().iter().map(|a| format!("{:?}", a.outcome)).collect();
    println!("allocations: {outcomes:?}");
    players.stop();
}

#[test]
fn two_replicas_make_one_allocation_for_one_failure_and_the_other_takes_over_when_the_decider_dies() {
    let (a, api) = agones::scenario(&["Allocated", "Ready", "Ready", "Ready"], "replica-a", "").unwrap();
    wait_for("replica-a holds the Lease", Duration::from_secs(10), || leading(&a));
    // A second ingress node: its own players, XDP and copies of the shards
    // (same addresses, another namespace), the same API server.
    let b = agones::replica(&api, 4, "replica-b", "").unwrap();
    wait_up(&a, "s1");
    wait_up(&b, "s1");
    wait_for("replica-b sees replica-a decide", Duration::from_secs(10), || {
        status(&b)["agent"]["kubernetes"]["holder"] == "replica-a"
    });
    assert!(!leading(&b));
    let (pa, pb) = (a.players(6, &a.player_config()).unwrap(), b.players(6, &b.player_config()).unwrap());
    Scenario::wait_playing(&pa, 3);
    Scenario::wait_playing(&pb, 3);

    // One failure: one allocation, and both replicas move s1's players to it.
    api.delete_gameserver(NS, "s1").unwrap();
    wait(&a, "replica-a's players on s2", Duration::from_secs(30), || all_on(&pa, "s2"));
    wait(&b, "replica-b's players on s2", Duration::from_secs(30), || all_on(&pb, "s2"));
    assert_eq!(api.allocations().len(), 1, "{:?}", api.allocations());
    let evs = events(&b);
    let applied = event(&evs, "failover", "s1").expect("replica-b's failover");
    assert_eq!(applied["target"], "s2");
    assert!(applied["detail"].as_str().unwrap().contains("the decider's record"), "{applied}");

    // The decider dies: replica-b takes the Lease within its duration (2 s).
    let mut a = a;
    let killed = Instant::now();
    a.agent.kill().unwrap();
    wait(&b, "replica-b to take the Lease", Duration::from_secs(10), || leading(&b));
    let took = killed.elapsed();
    println!("decider killed -> the other replica decides: {:.2} s (lease 2 s)", took.as_secs_f64());
    assert!(took < Duration::from_millis(2600), "took {took:?}");
    assert_eq!(api.lease(LEASE_NS, LEASE).unwrap()["spec"]["holderIdentity"], "replica-b");

    // The next failure is the new decider's: one more allocation. This
    // time Agones marks the GameServer Unhealthy rather than deleting it.
    api.set_gameserver_state(NS, "s2", "Unhealthy").unwrap();
    wait(&b, "replica-b's players on s3", Duration::from_secs(30), || all_on(&pb, "s3"));
    assert_eq!(api.allocations().len(), 2);
    assert_eq!(api.allocations()[1].gameserver(), Some("s3"));
    pa.stop();
    pb.stop();
}

#[test]
fn growth_allocates_one_more_shard_when_free_slots_fall_under_the_headroom() {
    let (sc, api) = agones::scenario(&["Allocated", "Ready", "Ready"], "replica-a", "").unwrap();
    wait_for("s1 up", Duration::from_secs(20), || shard(&status(&sc), "s1").is_some_and(|s| s["health"] == "up"));
    wait_for("the decider's Lease", Duration::from_secs(10), || leading(&sc));
    // s1 is capped at 4 players (an annotation, followed live), and a reload
    // asks for 3 free slots.
    api.modify_gameserver(NS, "s1", |gs| gs["metadata"]["annotations"]["samp-proxy.dev/capacity"] = "4".into())
        .unwrap();
    wait_for("s1 capped", Duration::from_secs(10), || shard(&status(&sc), "s1").is_some_and(|s| s["capacity"] == 4));
    let config = std::fs::read_to_string(&sc.agent.config_path).unwrap();
    std::fs::write(&sc.agent.config_path, config.replace("pool_labels:", "headroom: 3\n      pool_labels:")).unwrap();
    sc.agent.request(&Request::Reload).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(api.allocations().is_empty(), "4 free slots, headroom 3: no growth yet");

    let players = sc.players(2, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    wait(&sc, "one more shard for the headroom", Duration::from_secs(15), || {
        shard(&status(&sc), "s2").is_some_and(|s| s["health"] == "up")
    });
    let allocations = api.allocations();
    assert_eq!(allocations.len(), 1, "{allocations:?}");
    assert_eq!(allocations[0].request["spec"]["metadata"]["annotations"]["samp-proxy.dev/reason"], "growth");
    assert!(event(&events(&sc), "grow", "play").is_some());
    // 2 + 1000 free slots now: no more growth.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(api.allocations().len(), 1);
    players.stop();
}

#[test]
fn contention_falls_back_to_a_listed_standby_beside_discovered_shards() {
    // s1 is a GameServer, s2 a standby listed in the file, s3 in the pool.
    let listed = "shards:\n  - {name: s2, address: 198.18.12.2, capacity: 1000, role: standby}\n";
    let (mut sc, api) = agones::scenario(&["Allocated", "-", "Ready"], "replica-a", listed).unwrap();
    wait_up(&sc, "s1");
    wait_for("the decider's Lease", Duration::from_secs(10), || leading(&sc));
    let st = status(&sc);
    assert_eq!(shard(&st, "s2").unwrap()["source"], "file");
    assert_eq!(shard(&st, "s1").unwrap()["source"], "gameserver");
    let players = sc.players(8, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    assert!(all_on(&players, "s1"), "the standby takes no newcomer");

    // s1's process crashes; Agones answers Contention: the listed standby.
    api.queue_allocation_answer(AllocationAnswer::Contention);
    sc.shards[0].stop();
    wait(&sc, "s1's players on the listed standby s2", Duration::from_secs(30), || all_on(&players, "s2"));
    let evs = events(&sc);
    let detail = event(&evs, "failover", "s1").unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("Contention") && detail.contains("a listed standby, s2"), "{detail}");
    assert!(event(&evs, "health_down", "s1").unwrap()["detail"].as_str().unwrap().contains("refused"));
    // s2 is no GameServer: the record goes on the dead shard's GameServer.
    wait_for("the fallback recorded on s1's GameServer", Duration::from_secs(10), || {
        api.gameserver(NS, "s1").is_some_and(|g| g["metadata"]["annotations"]["samp-proxy.dev/moved-to"] == "s2")
    });
    assert_eq!(api.allocations().len(), 1);
    players.stop();
}

#[test]
fn a_restarted_agent_keeps_every_discovered_shards_players_where_they_are() {
    let (mut sc, api) = agones::scenario(&["Allocated", "Allocated"], "replica-a", "").unwrap();
    wait_up(&sc, "s1");
    wait_up(&sc, "s2");
    let mut cfg = sc.player_config();
    cfg.rate_hz = 20.0;
    let players = sc.players(12, &cfg).unwrap();
    Scenario::wait_playing(&players, 3);
    // The agent stops (SIGTERM) and comes back: until its first GameServer
    // list, the shards it discovered before exist only in the pinned maps,
    // which must route and rewrite them as before.
    sc.agent.stop().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sc.agent.restart(&sc.topo.proxy).unwrap();
    wait_up(&sc, "s1");
    wait_up(&sc, "s2");
    let before: Vec<u64> = players.snapshot().iter().map(|p| p.received).collect();
    wait_for("every player echoed again after the restart", Duration::from_secs(10), || {
        players.snapshot().iter().zip(&before).all(|(p, b)| p.received > b + 5)
    });
    for p in players.snapshot() {
        assert_eq!(p.connects, 1, "player {} reconnected: {:?}", p.local, p.shards);
        assert_eq!(p.shards.len(), 1, "player {} moved: {:?}", p.local, p.shards);
        assert_eq!(p.wrong_source, 0, "player {} got a datagram from another address", p.local);
    }
    assert!(api.allocations().is_empty());
    players.stop();
}

/// `peers:` toward a peer that never answers: the replicas are cut off
/// from each other (each topology is its own network), as in a partition.
fn cut_off_peers(me: &str) -> String {
    format!(
        "node_secret: replicas-secret-0123456789\npeers:\n  node_name: {me}\n  listen: 127.0.0.1:7101\n  nodes: [198.18.99.1:7101]\n  join_timeout_ms: 500\n"
    )
}

#[test]
fn partitioned_replicas_with_peers_follow_the_lease_and_never_their_own_rule() {
    let (mut a, api) =
        agones::scenario(&["Allocated", "Ready", "Ready", "Ready"], "replica-a", &cut_off_peers("replica-a")).unwrap();
    wait_for("replica-a holds the Lease", Duration::from_secs(10), || leading(&a));
    let mut b = agones::replica(&api, 4, "replica-b", &cut_off_peers("replica-b")).unwrap();
    wait_up(&a, "s1");
    wait_up(&b, "s1");
    let (pa, pb) = (a.players(6, &a.player_config()).unwrap(), b.players(6, &b.player_config()).unwrap());
    Scenario::wait_playing(&pa, 3);
    Scenario::wait_playing(&pb, 3);

    // Only the follower sees s1 die (its copy's process is gone): it waits
    // for the decider, past the patience after which a replica without
    // peers would use its own rule (lease 2 s + 2 x allocation timeout).
    b.shards[0].stop();
    wait_for("replica-b sees s1 down", Duration::from_secs(10), || {
        shard(&status(&b), "s1").unwrap()["health"] == "down"
    });
    std::thread::sleep(Duration::from_secs(7));
    assert!(event(&events(&b), "failover", "s1").is_none(), "the follower moved players by its own rule");
    assert_eq!(shard(&status(&b), "s1").unwrap()["parked"], true);
    assert!(api.allocations().is_empty(), "{:?}", api.allocations());

    // The decider sees it too: one allocation, one target for both.
    a.shards[0].stop();
    wait(&a, "replica-a's players on s2", Duration::from_secs(30), || all_on(&pa, "s2"));
    wait(&b, "replica-b's players on s2", Duration::from_secs(30), || all_on(&pb, "s2"));
    assert_eq!(api.allocations().len(), 1, "{:?}", api.allocations());
    let applied = event(&events(&b), "failover", "s1").cloned().expect("replica-b's failover");
    assert_eq!(applied["target"], "s2");
    assert!(applied["detail"].as_str().unwrap().contains("the decider's record"), "{applied}");
    pa.stop();
    pb.stop();
    let _ = (&mut a, &mut b);
}
