//! A shard whose game process crashed while its host lives, end to end: real
//! XDP, real namespaces, real UDP. Its kernel answers every player packet
//! with ICMP port unreachable from the shard's own address; the data plane
//! drops each one (no player ever sees a shard's address) and tells the
//! agent, which probes the shard at once: two refusals in a row take it down
//! and its group is repointed, well inside the miss-count path (3 probes x
//! 200 ms). With no players the agent's own probes see the refusal. A silent
//! host (a hung server) still takes the miss-count path. A shard whose
//! whole host is lost makes this node's own kernel answer the players'
//! packets (passed up while the neighbour resolves, then fails) with host
//! unreachable quoting the shard's address: the egress guard drops every
//! one, with the agent running or stopped.
//!
//! The tests take turns (a lock): the figures they print are times.

use std::{
    net::{SocketAddrV4, UdpSocket},
    sync::Mutex,
    time::{Duration, Instant},
};

use proxy_agent::protocol::Request;
use proxy_common::Counter;
use serde_json::Value;
use tests::{
    agent::tcx_egress,
    icmp_capture::IcmpCapture,
    scenario::{on_shard, wait_for, Scenario},
    sim::player::{PlayerStats, Players},
    topology::PROXY_CLIENT_SIDE,
};

/// The miss-count path at the default settings takes at least 2 intervals
/// plus a timeout after the crash (3 x 200 ms rounds, 150 ms each); the fast
/// path must beat it clearly even on a loaded machine.
const BEATS_THE_MISS_PATH: Duration = Duration::from_millis(450);
const REFUSED: &str = "its game port refused two probes in a row (the server process is gone)";

static TURNS: Mutex<()> = Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    TURNS.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn events(sc: &Scenario) -> Vec<Value> {
    sc.agent.request(&Request::Events).unwrap().as_array().unwrap().clone()
}

fn event(sc: &Scenario, kind: &str, shard: &str) -> Option<Value> {
    events(sc).into_iter().find(|e| e["kind"] == kind && e["shard"] == shard)
}

fn counter(sc: &Scenario, name: &str) -> u64 {
    sc.agent.request(&Request::Status).unwrap()["counters"][name].as_u64().unwrap_or(0)
}

fn health(sc: &Scenario, shard: &str) -> String {
    let st = sc.agent.request(&Request::Status).unwrap();
    let s = st["shards"].as_array().unwrap().iter().find(|s| s["name"] == shard).unwrap().clone();
    s["health"].as_str().unwrap().to_string()
}

fn all_on(players: &Players, shard: &str) -> bool {
    players.snapshot().iter().all(|p| p.connected && p.current_shard() == Some(shard))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// No ICMP that names a shard reached the players, and the capture works:
/// a refusal from the proxy's own address (a closed port there) is seen.
fn assert_no_shard_icmp(sc: &Scenario, capture: &mut IcmpCapture) {
    let probe = sc.topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(sc.topo.client_ips[0], 0)).unwrap()).unwrap();
    // The proxy's kernel limits ICMP errors per destination (a burst of 6,
    // then 1 a second): host unreachables just sent to the same players may
    // have used the burst, so the probe is sent again until answered.
    let mut last_sent: Option<std::time::Instant> = None;
    wait_for("the capture to see the proxy's own refusal", Duration::from_secs(10), || {
        if last_sent.is_none_or(|t| t.elapsed() >= Duration::from_millis(300)) {
            probe.send_to(b"anyone?", SocketAddrV4::new(PROXY_CLIENT_SIDE, 9)).unwrap();
            last_sent = Some(std::time::Instant::now());
        }
        capture.seen().iter().any(|s| s.src == PROXY_CLIENT_SIDE && (s.kind, s.code) == (3, 3))
    });
    let seen = capture.stop();
    let leaks = IcmpCapture::naming(&seen, &sc.topo.shard_ips);
    assert!(leaks.is_empty(), "ICMP naming a shard reached the players: {leaks:?}");
    println!("players' namespace: {} ICMP packets seen, none naming a shard", seen.len());
}

/// A player who learned dead shard `i`'s address sends to it directly: the
/// shard's port unreachable must stop at the proxy. (The players' own
/// packets prove nothing when the agent's probe saw the refusal first and
/// their group moved before any of them reached the dead shard.)
fn assert_refusal_dropped(sc: &Scenario, i: usize) {
    let shard = sc.topo.shard_ips[i];
    sc.topo.client.ip(&["route", "replace", &format!("{shard}/32"), "via", &PROXY_CLIENT_SIDE.to_string()]).unwrap();
    let player = sc.topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(sc.topo.client_ips[0], 0)).unwrap()).unwrap();
    let before = counter(sc, "drop_shard_icmp");
    wait_for(&format!("the dead s{}'s refusal of a player dropped", i + 1), Duration::from_secs(10), || {
        if counter(sc, "drop_shard_icmp") > before {
            return true;
        }
        player.send_to(&[0x08, 0x1e, 0x77, 0xda], SocketAddrV4::new(shard, tests::topology::PORT)).unwrap();
        false
    });
}

/// Players on s1; s1's process dies, then the standby it moved to, then the
/// next: each time its group is repointed within the fast path's bound, the
/// health_down event gives the refusal as the reason, and no ICMP from any
/// shard reaches the players.
#[test]
fn a_crashed_shard_is_repointed_at_once_and_no_player_sees_its_icmp() {
    let _turn = take_turn();
    let sc = Scenario::start(4, |t| {
        t.config_of(&[(0, 100, "active"), (1, 100, "standby"), (2, 100, "standby"), (3, 100, "standby")], "")
    })
    .unwrap();
    let mut capture = IcmpCapture::start(&sc.topo.client);
    let mut cfg = sc.player_config();
    // The client's own "Reconnecting..." wait, short for the test: it
    // bounds how soon players play on the new shard, not the failover.
    cfg.reconnect_after = Duration::from_millis(500);
    let players = sc.players(12, &cfg).unwrap();
    Scenario::wait_playing(&players, 5);
    assert!(all_on(&players, "s1"));
    let mut shards = sc.shards;
    let sc = Scenario { shards: Vec::new(), ..sc };
    let (mut repointed, mut playing) = (Vec::new(), Vec::new());
    for (dead, next) in [(0usize, "s2"), (1, "s3"), (2, "s4")] {
        let name = format!("s{}", dead + 1);
        let before = counter(&sc, "drop_shard_icmp");
        shards[dead].stop();
        let (closed_ms, closed) = (unix_ms(), Instant::now());
        wait_for(&format!("{name} failed over"), Duration::from_secs(10), || event(&sc, "failover", &name).is_some());
        let fo = event(&sc, "failover", &name).unwrap();
        let down = event(&sc, "health_down", &name).unwrap();
        assert_eq!(fo["target"], next, "{fo}");
        assert_eq!(fo["players"], 12, "{fo}");
        assert_eq!(down["detail"], REFUSED, "{down}");
        let took = fo["at_ms"].as_u64().unwrap().saturating_sub(closed_ms);
        wait_for("a player on the new shard", Duration::from_secs(10), || {
            players.snapshot().iter().any(|p| p.current_shard() == Some(next))
        });
        let first_echo = closed.elapsed().as_millis() as u64;
        wait_for("every player on the new shard", Duration::from_secs(30), || all_on(&players, next));
        let dropped = counter(&sc, "drop_shard_icmp") - before;
        println!(
            "{name} killed: group repointed to {next} {took} ms after its socket closed; first echo from {next} \
             after {first_echo} ms (players wait {} ms before reconnecting); {dropped} shard ICMP dropped",
            cfg.reconnect_after.as_millis()
        );
        assert!(Duration::from_millis(took) < BEATS_THE_MISS_PATH, "{name}: {took} ms is the miss path's time");
        assert_refusal_dropped(&sc, dead);
        repointed.push(took);
        playing.push(first_echo);
    }
    println!(
        "crash -> group repointed: p50 {} ms, max {} ms; crash -> first echo from the new shard: p50 {} ms, max {} ms",
        median(repointed.clone()),
        repointed.iter().max().unwrap(),
        median(playing.clone()),
        playing.iter().max().unwrap()
    );
    for p in players.snapshot() {
        assert_eq!(p.wrong_source, 0, "{} got a datagram not from the public address", p.local);
    }
    players.stop();
    assert_no_shard_icmp(&sc, &mut capture);
    drop(shards);
}

/// With rounds a minute apart, only the data plane can make the agent probe
/// a crashed shard within the bound: the refusal it saw does.
#[test]
fn the_data_plane_alone_sets_off_the_probe() {
    let _turn = take_turn();
    let extra = "health:\n  interval_ms: 60000\n  timeout_ms: 150\n";
    let sc = Scenario::start(2, |t| t.config_of(&[(0, 100, "active"), (1, 100, "standby")], extra)).unwrap();
    let players = sc.players(6, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 5);
    let mut shards = sc.shards;
    let sc = Scenario { shards: Vec::new(), ..sc };
    shards[0].stop();
    let closed_ms = unix_ms();
    wait_for("s1 failed over", Duration::from_secs(5), || event(&sc, "failover", "s1").is_some());
    let took = event(&sc, "failover", "s1").unwrap()["at_ms"].as_u64().unwrap().saturating_sub(closed_ms);
    println!("rounds 60 s apart: s1 repointed {took} ms after its socket closed, on the data plane's word");
    assert!(Duration::from_millis(took) < BEATS_THE_MISS_PATH, "{took} ms");
    assert_eq!(event(&sc, "health_down", "s1").unwrap()["detail"], REFUSED);
    players.stop();
    drop(shards);
}

/// No players, so no refusal in the data plane: the agent's own probes get
/// the shard's port unreachable (passed to this node, not dropped), and two
/// of them in a row mark it down within one round, not three.
#[test]
fn an_empty_crashed_shard_is_marked_down_by_two_refused_probes() {
    let _turn = take_turn();
    let sc = Scenario::start(2, |t| t.config_of(&[(0, 100, "active"), (1, 100, "standby")], "")).unwrap();
    wait_for("s1 up", Duration::from_secs(10), || health(&sc, "s1") == "up");
    let local_before = counter(&sc, "pass_reply_local");
    let mut shards = sc.shards;
    let sc = Scenario { shards: Vec::new(), ..sc };
    shards[0].stop();
    let closed_ms = unix_ms();
    wait_for("s1 down", Duration::from_secs(5), || event(&sc, "health_down", "s1").is_some());
    let down = event(&sc, "health_down", "s1").unwrap();
    let took = down["at_ms"].as_u64().unwrap().saturating_sub(closed_ms);
    println!("empty s1 killed: marked down {took} ms after its socket closed (the next round's probe, refused twice)");
    assert_eq!(down["detail"], REFUSED);
    assert_eq!(down["players"], 0);
    assert!(Duration::from_millis(took) < BEATS_THE_MISS_PATH, "{took} ms");
    assert_eq!(health(&sc, "s1"), "down");
    assert!(event(&sc, "failover", "s1").is_none(), "nobody to move");
    assert_eq!(counter(&sc, "drop_shard_icmp"), 0, "no player, no refusal in the data plane");
    assert!(counter(&sc, "pass_reply_local") > local_before, "the probes' refusals pass to the agent");
    drop(shards);
}

/// A hung server (its socket open, nothing answered) sends no ICMP: the
/// miss count decides, as before.
#[test]
fn a_silent_shard_still_takes_the_miss_count_path() {
    let _turn = take_turn();
    let sc = Scenario::start(2, |t| t.config_of(&[(0, 100, "active"), (1, 100, "standby")], "")).unwrap();
    let players = sc.players(6, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 5);
    sc.shards[0].set_muted(true);
    let muted_ms = unix_ms();
    wait_for("s1 failed over", Duration::from_secs(10), || event(&sc, "failover", "s1").is_some());
    let down = event(&sc, "health_down", "s1").unwrap();
    let took = down["at_ms"].as_u64().unwrap().saturating_sub(muted_ms);
    println!("s1 muted: marked down {took} ms later, by the miss count");
    assert_eq!(down["detail"], "3 probes unanswered");
    assert!(Duration::from_millis(took) >= Duration::from_millis(400), "{took} ms: 3 misses take 2 intervals at least");
    assert_eq!(counter(&sc, "drop_shard_icmp"), 0, "a hung server refuses nothing");
    wait_for("the players on s2", Duration::from_secs(30), || all_on(&players, "s2"));
    players.stop();
}

/// Players spread over two active shards (s1, s2) with a standby (s3).
fn lost_host_scenario() -> (Scenario, Players) {
    let sc = Scenario::start(3, |t| t.config_of(&[(0, 100, "active"), (1, 100, "active"), (2, 100, "standby")], ""))
        .unwrap();
    let mut cfg = sc.player_config();
    cfg.reconnect_after = Duration::from_millis(500);
    let players = sc.players(16, &cfg).unwrap();
    Scenario::wait_playing(&players, 5);
    let stats = players.snapshot();
    assert!(!on_shard(&stats, "s1").is_empty() && !on_shard(&stats, "s2").is_empty(), "players on s1 and s2");
    (sc, players)
}

fn locals_on(stats: &[PlayerStats], shard: &str) -> Vec<String> {
    on_shard(stats, shard).iter().map(|p| p.local.clone()).collect()
}

/// s2's players saw nothing: one connection, one shard, no gap.
fn undisturbed(players: &Players, on_s2: &[String], what: &str) {
    for p in players.snapshot().iter().filter(|p| on_s2.contains(&p.local)) {
        assert_eq!((p.connects, p.shards.len()), (1, 1), "{what}: {} on s2 was moved", p.local);
        assert!(p.max_gap_ms < 500, "{what}: {} on s2 went {} ms without an echo", p.local, p.max_gap_ms);
    }
}

/// s1's host is lost (its link goes down) while players play: the data
/// plane passes their packets up while the neighbour resolves, and when it
/// fails this node's kernel answers them with host unreachable quoting
/// s1's address (a link-down test without the guard saw 24 reach 6
/// players in 3 s). The egress guard drops every one, s1's players fail
/// over to the standby, and s2's players see nothing of it.
#[test]
fn a_lost_hosts_unreachables_from_this_node_never_reach_a_player() {
    let _turn = take_turn();
    let (sc, players) = lost_host_scenario();
    let mut capture = IcmpCapture::start(&sc.topo.client);
    let stats = players.snapshot();
    let (on_s1, on_s2) = (locals_on(&stats, "s1"), locals_on(&stats, "s2"));
    players.reset_gaps();
    let before = counter(&sc, "drop_egress_shard_icmp");
    sc.topo.shards[0].ip(&["link", "set", "eth0", "down"]).unwrap();
    let cut = Instant::now();
    wait_for("the node's own host unreachables dropped", Duration::from_secs(20), || {
        counter(&sc, "drop_egress_shard_icmp") > before
    });
    let first = cut.elapsed();
    wait_for("s1's players on the standby", Duration::from_secs(30), || {
        players.snapshot().iter().filter(|p| on_s1.contains(&p.local)).all(|p| p.current_shard() == Some("s3"))
    });
    // Packets still queued for s1's neighbour fail a round later: give them time.
    std::thread::sleep(Duration::from_secs(4));
    let dropped = counter(&sc, "drop_egress_shard_icmp") - before;
    println!(
        "s1's link cut: {} players moved to s3; this node's own ICMP naming s1 dropped on egress: {dropped} \
         (the first {} ms after the cut)",
        on_s1.len(),
        first.as_millis()
    );
    assert!(event(&sc, "failover", "s1").is_some());
    undisturbed(&players, &on_s2, "s1's host lost");
    for p in players.snapshot() {
        assert_eq!(p.wrong_source, 0, "{} got a datagram not from the public address", p.local);
    }
    players.stop();
    assert_no_shard_icmp(&sc, &mut capture);
}

/// The guard's TCX links are pinned like the XDP links: with the agent
/// stopped (SIGTERM) and players flowing, s1's host is lost and this node's
/// host unreachables are still dropped; the restarted agent adopts the
/// guard (its own program swapped into the pinned link), then fails s1's
/// players over.
#[test]
fn the_egress_guard_outlives_the_agent() {
    let _turn = take_turn();
    let (mut sc, players) = lost_host_scenario();
    let mut capture = IcmpCapture::start(&sc.topo.client);
    let stats = players.snapshot();
    let (on_s1, on_s2) = (locals_on(&stats, "s1"), locals_on(&stats, "s2"));
    let guards = |sc: &Scenario| -> Vec<u32> {
        sc.topo
            .proxy_ifs
            .iter()
            .map(|i| {
                let progs = tcx_egress(&sc.topo.proxy, i).unwrap();
                assert!(sc.agent.pins.path.join("egress-links").join(i).exists(), "{i}: no pinned guard link");
                match progs.as_slice() {
                    [(name, id)] if name == "egress_guard" => *id,
                    other => panic!("{i}: egress runs {other:?}, not the guard alone"),
                }
            })
            .collect()
    };
    let before_stop = guards(&sc);
    assert!(sc.agent.stop().unwrap().success(), "SIGTERM: clean exit");
    players.reset_gaps();
    let tables = sc.agent.tables().unwrap();
    let before = tables.counter(Counter::DropEgressShardIcmp).unwrap();
    let received: Vec<(String, u64)> = players.snapshot().iter().map(|p| (p.local.clone(), p.received)).collect();
    sc.topo.shards[0].ip(&["link", "set", "eth0", "down"]).unwrap();
    wait_for("host unreachables dropped with no agent running", Duration::from_secs(20), || {
        tables.counter(Counter::DropEgressShardIcmp).unwrap() > before
    });
    assert_eq!(guards(&sc), before_stop, "the guard ran on, unchanged, with no agent");
    let dropped_alone = tables.counter(Counter::DropEgressShardIcmp).unwrap() - before;
    // s2's players kept playing through all of it.
    for p in players.snapshot().iter().filter(|p| on_s2.contains(&p.local)) {
        let was = received.iter().find(|(l, _)| *l == p.local).unwrap().1;
        assert!(p.received > was + 20, "{} on s2 got no echo with the agent stopped", p.local);
    }
    sc.agent.restart(&sc.topo.proxy).unwrap();
    let after_restart = guards(&sc);
    for (i, (old, new)) in before_stop.iter().zip(&after_restart).enumerate() {
        assert_ne!(old, new, "{}: the new agent's guard replaced the old one in its pinned link", sc.topo.proxy_ifs[i]);
    }
    wait_for("s1's players on the standby", Duration::from_secs(30), || {
        players.snapshot().iter().filter(|p| on_s1.contains(&p.local)).all(|p| p.current_shard() == Some("s3"))
    });
    println!(
        "agent stopped, s1's link cut: {dropped_alone} of this node's ICMP naming s1 dropped with no agent; \
         restarted agent adopted the guard on {} interfaces, moved {} players to s3",
        after_restart.len(),
        on_s1.len()
    );
    undisturbed(&players, &on_s2, "s1's host lost while the agent was down");
    players.stop();
    assert_no_shard_icmp(&sc, &mut capture);
}
