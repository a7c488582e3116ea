//! Several ingress nodes, one cluster (issue 20): the ingress agents share
//! every session, so when the network sends a dead node's players to the
//! others, those already know them: nobody handshakes again, nobody changes
//! shard, and the longest silence is the router's detection time plus at
//! most 100 ms.

use std::time::{Duration, Instant};

use tests::{
    ha::{
        cluster::HaCluster,
        ecmp::Ecmp,
        vrrp::{Stop, Vrrp},
    },
    scenario::wait_for,
    sim::player::{PlayerStats, Players},
};

/// Players send this often: the gap a player measures is granular to it.
const RATE_HZ: f64 = 30.0;
const INTERVAL_MS: u64 = 34;

/// Every player: one handshake ever, on the shard it had, only the VIP seen.
fn assert_nobody_noticed(before: &[PlayerStats], players: &Players, bound_ms: u64) -> u64 {
    let after = players.snapshot();
    let mut worst = 0;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.connects, 1, "{} handshook again ({} connects)", a.local, a.connects);
        assert_eq!(a.current_shard(), b.current_shard(), "{} changed shard", a.local);
        assert_eq!((a.wrong_source, a.wrong_seen), (0, 0), "{}: only the VIP, its own address at the shard", a.local);
        worst = worst.max(a.max_gap_ms);
    }
    assert!(worst <= bound_ms, "the longest gap was {worst} ms (bound {bound_ms} ms)");
    worst
}

/// No shard saw a player that is not its own.
fn assert_no_strays(c: &HaCluster, players: &Players) {
    let stats = players.snapshot();
    for (i, shard) in c.shards.iter().enumerate() {
        let name = format!("s{}", i + 1);
        for (client, seen) in &shard.stats().clients {
            let p = stats.iter().find(|p| &p.local == client).expect("a player of ours");
            assert!(
                p.shards.iter().any(|(s, _)| *s == name),
                "{name} saw {client} ({} packets) which plays on {:?}",
                seen.packets,
                p.current_shard()
            );
        }
    }
}

#[test]
fn an_ingress_node_dies_behind_ecmp_and_its_players_play_on() {
    let mut net = Ecmp::build(3, &[0, 0, 1], 200).unwrap();
    let mut c = HaCluster::start(&net.net, &["active", "active", "active"], 200, "").unwrap();
    let players = c.players(&net.net, 300, RATE_HZ).unwrap();
    wait_for("300 players playing", Duration::from_secs(90), || {
        players.snapshot().iter().all(|p| p.connected && p.received >= 5)
    });
    c.wait_established_everywhere(300, Duration::from_secs(30));
    let before = players.snapshot();
    let carried = {
        let t = c.ingress[0].as_ref().unwrap().tables().unwrap();
        t.counter(proxy_common::Counter::IngressRedirect).unwrap()
            + t.counter(proxy_common::Counter::IngressPassNeigh).unwrap()
    };
    assert!(carried > 0, "node 1 carried players before it died");

    players.reset_gaps();
    let dead = Instant::now();
    c.kill_agent(0).unwrap();
    net.net.kill_node(0).unwrap();
    // The router hears of it when the node's route is withdrawn (BGP hold
    // timer or BFD); until then it keeps sending into the dead link.
    std::thread::sleep(Duration::from_millis(300));
    net.withdraw(0).unwrap();
    let detected = dead.elapsed().as_millis() as u64;
    wait_for("every player echoed after the withdrawal", Duration::from_secs(10), || {
        players.snapshot().iter().all(|p| p.last_echo_ms.is_some_and(|t| t + 200 > tests::sim::clock_ms()))
    });
    std::thread::sleep(Duration::from_secs(2));
    let worst = assert_nobody_noticed(&before, &players, detected + 100 + INTERVAL_MS);
    let moved = players.snapshot().iter().filter(|p| p.max_gap_ms + 100 >= detected).count();
    assert!(moved > 0, "some players were on the dead node");
    println!("ECMP: node 1 died; {moved} of its players reached node 2 or 3; worst gap {worst} ms, {detected} ms of it until the withdrawal");
    assert_no_strays(&c, &players);
    players.stop();
}

#[test]
fn the_vrrp_master_stops_and_its_players_play_on() {
    let mut net = Vrrp::build(&[0, 1], 100).unwrap();
    let mut c = HaCluster::start(&net.net, &["active", "active"], 200, "").unwrap();
    let players = c.players(&net.net, 200, RATE_HZ).unwrap();
    wait_for("200 players playing", Duration::from_secs(90), || {
        players.snapshot().iter().all(|p| p.connected && p.received >= 5)
    });
    c.wait_established_everywhere(200, Duration::from_secs(30));
    let before = players.snapshot();
    players.reset_gaps();
    let stopped = Instant::now();
    let master = net.stop_master(Stop::Crash).unwrap();
    c.kill_agent(master).unwrap();
    let backup = 1 - master;
    net.wait_master(Duration::from_secs(10)).unwrap();
    let took = stopped.elapsed().as_millis() as u64;
    assert_eq!(net.master().unwrap(), Some(backup));
    std::thread::sleep(Duration::from_secs(2));
    let bound = tests::ha::vrrp::failover_time().as_millis() as u64 + 100 + INTERVAL_MS;
    let worst = assert_nobody_noticed(&before, &players, bound);
    println!(
        "VRRP: master in{} crashed; in{} took the address after {took} ms; worst player gap {worst} ms",
        master + 1,
        backup + 1
    );
    assert_no_strays(&c, &players);
    players.stop();
}
