//! Direct server return on a cluster-shaped topology (see `tests::dsr`): the
//! ingress node steers players' packets to shard pods on two game nodes;
//! each game node's agent (`role: return`) rewrites its pods' replies to come
//! from the public address where they enter the node, so replies never cross
//! the ingress node, and reports the players its shards accepted so the
//! ingress promotes them. The game nodes masquerade everything else.

use std::{
    net::{SocketAddrV4, UdpSocket},
    time::Duration,
};

use proxy_agent::protocol::Request;
use proxy_common::Counter;
use tests::{
    agent::Agent,
    dsr::{game_ip, DsrTopology, INGRESS_IP},
    icmp_capture::IcmpCapture,
    scenario::{on_shard, wait_for},
    sim::{
        player::{self, PlayerConfig},
        shard::{self, ShardConfig},
    },
    topology::{PORT, VIP},
};

const SECRET: &str = "node-secret-0123456789";
const PLAYERS: usize = 10;

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn count(agent: &Agent, counters: &[Counter]) -> u64 {
    let t = agent.tables().unwrap();
    counters.iter().map(|&c| t.counter(c).unwrap()).sum()
}

#[test]
fn replies_go_straight_from_the_game_nodes_to_the_players() {
    // s1 on game1; s2 and the standby s3 on game2.
    let topo = DsrTopology::build(&[0, 1, 1], 4).unwrap();
    let shards_yaml = topo.shards_yaml(&["active", "active", "standby"]);
    // The shards run before the agents probe them (a shard that fails its
    // first probes comes back as a standby).
    let mut sims: Vec<_> = (0..3)
        .map(|p| {
            let cfg = ShardConfig { name: format!("s{}", p + 1), max_players: 1000, seed: 2000 + p as u32 };
            Some(shard::spawn(topo.pod_socket(p).unwrap(), cfg))
        })
        .collect();

    let ingress = Agent::start(
        &topo.ingress,
        &format!(
            "role: ingress\ninterfaces: [eth0]\nmetrics_listen: 0.0.0.0:9477\nnode_secret: {SECRET}\n{shards_yaml}"
        ),
    )
    .unwrap();
    // game1 attaches natively (its uplink is a veth that takes redirected
    // frames), game2 as a return node does by default, as generic XDP: both
    // serve the same players.
    let game_yaml = |mode: &str| {
        format!("role: return\ningress_agents: [{INGRESS_IP}:9477]\nnode_secret: {SECRET}\n{mode}{shards_yaml}")
    };
    let games: Vec<Agent> = topo
        .games
        .iter()
        .zip(["xdp_mode: driver\n", ""])
        .map(|(g, mode)| Agent::start(g, &game_yaml(mode)).unwrap())
        .collect();
    // Each game agent finds its pods' veths from the routes by itself.
    for (g, pods) in [(0, vec!["p-s1"]), (1, vec!["p-s2", "p-s3"])] {
        wait_for("the game agents on their pods' veths", Duration::from_secs(10), || {
            pods.iter().all(|p| games[g].pins.path.join("links").join(p).exists())
        });
    }
    let generic = topo.games[1].ip(&["link", "show", "p-s2"]).unwrap();
    assert!(generic.contains("xdpgeneric"), "game2 attaches as generic XDP by default: {generic}");
    let native = topo.games[0].ip(&["link", "show", "p-s1"]).unwrap();
    assert!(native.contains("xdp ") && !native.contains("xdpgeneric"), "game1 attaches natively: {native}");
    // Both active shards answer their probes before players join: placement
    // weighs shards by the room their answers report, and on a loaded CI
    // machine s1's first answer came late and every player landed on s2.
    wait_for("s1 and s2 up on the ingress", Duration::from_secs(30), || {
        let st = ingress.request(&Request::Status).unwrap();
        ["s1", "s2"]
            .iter()
            .all(|name| st["shards"].as_array().unwrap().iter().any(|s| s["name"] == *name && s["health"] == "up"))
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut cfg = PlayerConfig::new(SocketAddrV4::new(VIP, PORT), Duration::from_secs(300));
    cfg.reconnect_after = Duration::from_millis(1500);
    cfg.rate_hz = 20.0;
    let sockets = topo.player_sockets(PLAYERS).unwrap();
    let players = rt.block_on(async { player::start(sockets, &cfg) }).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !players.snapshot().iter().all(|p| p.connected) {
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = std::iter::once(&ingress).chain(&games).map(|a| a.log_text()).collect();
            let st = ingress.request(&Request::Status).unwrap();
            panic!("players did not connect; ingress status {st}\nlogs:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("echoes", Duration::from_secs(60), || players.snapshot().iter().all(|p| p.received >= 5));
    let stats = players.snapshot();
    assert!(!on_shard(&stats, "s1").is_empty() && !on_shard(&stats, "s2").is_empty(), "players on both game nodes");

    // Admission still rests on the shards' acceptance, reported by the game nodes.
    wait_for("every player established on the ingress", Duration::from_secs(10), || {
        ingress.request(&Request::Status).unwrap()["totals"]["established"] == PLAYERS
    });

    // Replies never cross the ingress node; players see only the VIP.
    let returns = [Counter::ReturnRedirect, Counter::ReturnPassNeigh];
    let ins = [Counter::IngressRedirect, Counter::IngressPassNeigh];
    let (in0, ret0) = (count(&ingress, &ins), games.iter().map(|g| count(g, &returns)).sum::<u64>());
    std::thread::sleep(Duration::from_secs(2));
    let (in1, ret1) = (count(&ingress, &ins), games.iter().map(|g| count(g, &returns)).sum::<u64>());
    let player_seconds = PLAYERS as f64 * 2.0;
    println!(
        "ingress node: {:.1} packets per player-second with direct return; the game nodes sent {:.1} replies per player-second past it (without DSR the ingress node handled {:.1})",
        (in1 - in0) as f64 / player_seconds,
        (ret1 - ret0) as f64 / player_seconds,
        (in1 - in0 + ret1 - ret0) as f64 / player_seconds
    );
    assert_eq!(count(&ingress, &returns), 0, "the ingress node saw a shard reply");
    assert!(ret1 > ret0 && in1 > in0);
    for p in players.snapshot() {
        assert_eq!(
            (p.wrong_source, p.wrong_seen),
            (0, 0),
            "{}: replies from the VIP, its own address at the shard",
            p.local
        );
    }

    // The shards' other traffic is masqueraded by the game node as before.
    let client = topo.client_ips[0];
    let rx = topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(client, 6000)).unwrap()).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tx = topo.pods[1].run(|| UdpSocket::bind("0.0.0.0:5000").unwrap()).unwrap();
    tx.send_to(b"db or dns", SocketAddrV4::new(client, 6000)).unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(from.ip(), std::net::IpAddr::V4(game_ip(1)), "masqueraded to game2's address");

    // A traceroute through the public address: new players' first
    // handshakes with TTLs that would run out between the ingress node
    // and the pods (at the router, at the game node). Each still reaches
    // its shard and is answered, and no hop answers with a time exceeded
    // that quotes a pod's address.
    let pods: Vec<_> = (0..3).map(tests::dsr::pod_ip).collect();
    let mut capture = IcmpCapture::start(&topo.client);
    let tracers: Vec<UdpSocket> = (3..=6u32)
        .map(|ttl| {
            let s = topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(client, 0)).unwrap()).unwrap();
            s.set_ttl(ttl).unwrap();
            s.set_nonblocking(true).unwrap();
            s.send_to(&tests::sim::wire::handshake_request(0, PORT), SocketAddrV4::new(VIP, PORT)).unwrap();
            s
        })
        .collect();
    let mut answered = vec![false; tracers.len()];
    let leaked = |c: &IcmpCapture| !IcmpCapture::naming(&c.seen(), &pods).is_empty();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !answered.iter().all(|a| *a) && !leaked(&capture) && std::time::Instant::now() < deadline {
        for (t, a) in tracers.iter().zip(answered.iter_mut()) {
            *a |= t.recv_from(&mut [0u8; 64]).is_ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = capture.stop();
    assert!(IcmpCapture::naming(&seen, &pods).is_empty(), "a traceroute through the VIP named a pod: {seen:?}");
    assert!(answered.iter().all(|a| *a), "handshakes with TTL 3..=6 answered: {answered:?}");

    // A game node's own ICMP leaves by its uplink, where the egress guard
    // runs too: a packet to a pod that dies at game2 (its TTL runs out
    // there, as a packet to a just-deleted pod does in a routing loop) is
    // answered with a time exceeded quoting the pod; none reaches a player.
    wait_for("the egress guard on game2's uplink", Duration::from_secs(10), || {
        proxy_agent::dataplane::links::guarded(&games[1].pins.path, "eth0")
    });
    let pod2 = tests::dsr::pod_ip(1);
    topo.client.ip(&["route", "add", &format!("{pod2}/32"), "via", "198.18.0.1"]).unwrap();
    let mut capture = IcmpCapture::start(&topo.client);
    let dying = topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(client, 0)).unwrap()).unwrap();
    dying.set_ttl(2).unwrap(); // the router takes one, game2 the last
    let guarded = count(&games[1], &[Counter::DropEgressShardIcmp]);
    let dropped = || count(&games[1], &[Counter::DropEgressShardIcmp]) > guarded;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dropped() && !leaked(&capture) && std::time::Instant::now() < deadline {
        dying.send_to(b"last hop", SocketAddrV4::new(pod2, PORT)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = capture.stop();
    assert!(IcmpCapture::naming(&seen, &pods).is_empty(), "game2's own ICMP named a pod to a player: {seen:?}");
    assert!(dropped(), "game2's time exceeded naming its pod was dropped on its uplink");
    topo.client.ip(&["route", "del", &format!("{pod2}/32")]).unwrap();

    // A migration still works: one s2 player to s1 (across game nodes).
    let mover = on_shard(&players.snapshot(), "s2")[0].local.clone();
    ingress.request(&Request::Migrate { clients: vec![mover.clone()], from: None, to: "s1".into() }).unwrap();
    wait_for("the migrated player on s1", Duration::from_secs(20), || {
        players.snapshot().iter().any(|p| p.local == mover && p.current_shard() == Some("s1"))
    });

    // A pod is deleted and recreated (a new veth): the game agent follows.
    let wrong_before: u64 = players.snapshot().iter().map(|p| p.wrong_source).sum();
    topo.delete_pod(1).unwrap();
    wait_for("the deleted pod's link forgotten", Duration::from_secs(10), || {
        !games[1].pins.path.join("links").join("p-s2").exists()
    });
    topo.add_pod(1).unwrap();
    wait_for("the new pod's veth attached", Duration::from_secs(10), || {
        games[1].pins.path.join("links").join("p-s2").exists()
    });
    let on_s2: Vec<String> = on_shard(&players.snapshot(), "s2").iter().map(|p| p.local.clone()).collect();
    players.reset_gaps();
    let received: Vec<u64> = players.snapshot().iter().map(|p| p.received).collect();
    wait_for("s2's players echoed again through the new pod veth", Duration::from_secs(20), || {
        players
            .snapshot()
            .iter()
            .zip(&received)
            .filter(|(p, _)| on_s2.contains(&p.local))
            .all(|(p, r)| p.received > r + 5)
    });
    let wrong_after: u64 = players.snapshot().iter().map(|p| p.wrong_source).sum();
    println!("replies masqueraded while the new pod's veth had no program yet: {}", wrong_after - wrong_before);

    // s1 dies: its players move, together, to one shard on game2 (the
    // standby s3, or s2 if the pod recreation above made s2 the empty
    // standby: its recovery makes it one).
    let on_s1: Vec<String> = on_shard(&players.snapshot(), "s1").iter().map(|p| p.local.clone()).collect();
    let mut capture = IcmpCapture::start(&topo.client);
    sims[0].take().unwrap().stop();
    let killed_ms = unix_ms();
    let failover_target = || -> Option<String> {
        let events = ingress.request(&Request::Events).unwrap();
        events.as_array()?.iter().rev().find(|e| e["kind"] == "failover" && e["shard"] == "s1")?["target"]
            .as_str()
            .map(str::to_string)
    };
    wait_for("s1's failover", Duration::from_secs(20), || failover_target().is_some());
    let target = failover_target().unwrap();
    assert!(target == "s2" || target == "s3", "{target}");
    // The pod lives, its server does not: its port unreachable to the
    // players is dropped on game1 (the same program on the pod's veth); the
    // ingress node's own probes (a peer's, passed) see the refusals.
    let events = ingress.request(&Request::Events).unwrap();
    let down = events.as_array().unwrap().iter().rfind(|e| e["kind"] == "health_down" && e["shard"] == "s1").unwrap();
    assert_eq!(down["detail"], "its game port refused two probes in a row (the server process is gone)", "{down}");
    println!(
        "s1's pod refused: marked down by the ingress node's probes {} ms after the kill",
        down["at_ms"].as_u64().unwrap().saturating_sub(killed_ms)
    );
    // The players' own packets to the dead pod in the moments before the
    // failover may be none on a busy machine: a player who learned the
    // pod's address sends to it directly, and its refusal must stop at game1.
    let pod1 = tests::dsr::pod_ip(0);
    topo.client.ip(&["route", "add", &format!("{pod1}/32"), "via", "198.18.0.1"]).unwrap();
    let prober = topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(client, 6001)).unwrap()).unwrap();
    wait_for("game1 to drop the dead pod's refusal of a player", Duration::from_secs(10), || {
        if count(&games[0], &[Counter::DropShardIcmp]) > 0 {
            return true;
        }
        prober.send_to(b"\x08\x1e\x77\xda", SocketAddrV4::new(pod1, PORT)).unwrap();
        false
    });
    assert_eq!(count(&ingress, &[Counter::DropShardIcmp]), 0, "a shard's ICMP crossed the ingress node");
    let seen = capture.stop();
    assert!(IcmpCapture::naming(&seen, &pods).is_empty(), "ICMP naming a pod reached the players: {seen:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = players.snapshot();
        let stuck: Vec<String> = now
            .iter()
            .filter(|p| on_s1.contains(&p.local) && p.current_shard() != Some(target.as_str()))
            .map(|p| {
                let at: Vec<String> = sims
                    .iter()
                    .flatten()
                    .map(|sim| format!("{}: {:?}", sim.name, sim.stats().clients.get(&p.local).map(|c| (c.connected, c.packets, c.handshakes))))
                    .collect();
                format!(
                    "{} on {:?} ({} connects, {} handshakes, shards {:?}, wrong source {}, received {}, sent {}) at shards {at:?}",
                    p.local,
                    p.current_shard(),
                    p.connects,
                    p.handshakes_sent,
                    p.shards,
                    p.wrong_source,
                    p.received,
                    p.sent
                )
            })
            .collect();
        if stuck.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let st = ingress.request(&Request::Status).unwrap();
            let sessions = ingress.request(&Request::Sessions { shard: None, client: None }).unwrap();
            panic!("s1's players not all on {target}: {stuck:?}\ncounters {}\nsessions {sessions}", st["counters"]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wrong_final: u64 = players.snapshot().iter().map(|p| p.wrong_source).sum();
    assert_eq!(wrong_final, wrong_after, "after the failover every reply still came from the VIP");
    assert_eq!(count(&ingress, &returns), 0, "still no reply crossed the ingress node");

    // s2's pod is deleted for good and a new pod comes up on game2 at a new
    // IP, shard s4: the operator's config says so on every node (reload);
    // game2's agent finds the new pod's veth from its route.
    sims[1].take().unwrap().stop();
    topo.delete_pod(1).unwrap();
    let players_on = |name: &str| -> u64 {
        let st = ingress.request(&Request::Status).unwrap();
        st["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map_or(0, |s| s["players"].as_u64().unwrap())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while players_on("s2") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "s2's players did not move off the deleted pod; events {}",
            ingress.request(&Request::Events).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    topo.add_pod_as(1, "p-s4", 25).unwrap();
    sims[1] = Some(shard::spawn(
        topo.pod_socket(1).unwrap(),
        ShardConfig { name: "s4".into(), max_players: 1000, seed: 2100 },
    ));
    for agent in std::iter::once(&ingress).chain(&games) {
        let text = std::fs::read_to_string(&agent.config_path).unwrap();
        let s2 = "  - name: s2\n    address: 198.18.22.2\n    capacity: 100\n    role: active\n";
        assert!(text.contains(s2), "{text}");
        let text = text.replace(s2, "  - name: s4\n    address: 198.18.25.2\n    capacity: 100\n    role: active\n");
        std::fs::write(&agent.config_path, text).unwrap();
        agent.request(&Request::Reload).unwrap();
    }
    wait_for("game2's agent on the new pod's veth", Duration::from_secs(10), || {
        games[1].pins.path.join("links").join("p-s4").exists()
    });
    let returned = count(&games[1], &returns);
    // Enough newcomers that placement, spread by hash over three shards,
    // puts some on s4 whatever their ports ((2/3)^24 it does not).
    let newcomers = rt.block_on(async { player::start(topo.player_sockets(24).unwrap(), &cfg) }).unwrap();
    wait_for("newcomers playing", Duration::from_secs(60), || newcomers.snapshot().iter().all(|p| p.received >= 5));
    let on_s4 = on_shard(&newcomers.snapshot(), "s4").len();
    assert!(
        on_s4 > 0,
        "placement uses the new shard: {:?}",
        newcomers.snapshot().iter().map(|p| p.current_shard()).collect::<Vec<_>>()
    );
    for p in newcomers.snapshot() {
        assert_eq!(p.wrong_source, 0, "{}: replies from the VIP", p.local);
    }
    assert!(count(&games[1], &returns) > returned, "game2 rewrote the new pod's replies");
    assert_eq!(count(&ingress, &returns), 0);
    newcomers.stop();
    players.stop();
}

/// A pod whose server process died refuses its players' packets; its game
/// node's data plane drops the refusals and the game node names the shard
/// to the ingress node, which probes it at once: the failover comes well
/// inside the ingress node's probe interval (10 s here), as on a single
/// node, instead of at its next round.
#[test]
fn a_game_node_names_a_crashed_pod_and_the_ingress_fails_it_over_at_once() {
    let topo = DsrTopology::build(&[0, 0], 2).unwrap();
    let shards_yaml = topo.shards_yaml(&["active", "standby"]);
    let mut sims: Vec<_> = (0..2)
        .map(|p| {
            let cfg = ShardConfig { name: format!("s{}", p + 1), max_players: 100, seed: 3000 + p as u32 };
            Some(shard::spawn(topo.pod_socket(p).unwrap(), cfg))
        })
        .collect();
    let ingress = Agent::start(
        &topo.ingress,
        &format!(
            "role: ingress\ninterfaces: [eth0]\nmetrics_listen: 0.0.0.0:9477\nnode_secret: {SECRET}\n\
             health:\n  interval_ms: 10000\n{shards_yaml}"
        ),
    )
    .unwrap();
    let game = Agent::start(
        &topo.games[0],
        &format!("role: return\ningress_agents: [{INGRESS_IP}:9477]\nnode_secret: {SECRET}\n{shards_yaml}"),
    )
    .unwrap();
    wait_for("the game agent on both pods' veths", Duration::from_secs(10), || {
        ["p-s1", "p-s2"].iter().all(|p| game.pins.path.join("links").join(p).exists())
    });
    // What the ingress node makes of bad reports: an error each, and no
    // shard probed for a name it does not know.
    let ingress_http = SocketAddrV4::new(INGRESS_IP, 9477);
    for (method, body, status, answer) in [
        ("POST", "secret=wrong-secret-0123456789&refused=s1".to_string(), 403, "error: wrong secret"),
        ("GET", format!("secret={SECRET}&refused=s1"), 405, "error: use POST with secret and refused"),
        ("POST", format!("secret={SECRET}&refused=s1&extra=1"), 400, "error: unknown field `extra`"),
        ("POST", format!("secret={SECRET}"), 400, "error: missing field `refused`"),
        ("POST", format!("secret={SECRET}&refused=nobody,,"), 200, "ok 0"),
    ] {
        let (got, text) = tests::http::request(&topo.games[0], ingress_http, method, "/node/refused", &body);
        assert!(got == status && text.starts_with(answer), "{method} {body}: {got} {text}");
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut cfg = PlayerConfig::new(SocketAddrV4::new(VIP, PORT), Duration::from_secs(120));
    cfg.reconnect_after = Duration::from_millis(1000);
    cfg.rate_hz = 20.0;
    let players = rt.block_on(async { player::start(topo.player_sockets(5).unwrap(), &cfg) }).unwrap();
    wait_for("players echoed by s1", Duration::from_secs(60), || {
        players.snapshot().iter().all(|p| p.received >= 5 && p.current_shard() == Some("s1"))
    });

    sims[0].take().unwrap().stop();
    let killed = std::time::Instant::now();
    let failed_over = || {
        let events = ingress.request(&Request::Events).unwrap();
        events.as_array().unwrap().iter().any(|e| e["kind"] == "failover" && e["shard"] == "s1")
    };
    wait_for("s1's failover", Duration::from_secs(15), failed_over);
    let took = killed.elapsed();
    println!(
        "s1's pod crashed: failed over by the ingress node {} ms later (its probe interval: 10 s)",
        took.as_millis()
    );
    assert!(ingress.log_text().contains("a game node saw s1 refuse a player"), "{}", ingress.log_text());
    assert!(
        game.log_text().contains(&format!("told {INGRESS_IP}:9477 that s1 refused a player")),
        "{}",
        game.log_text()
    );
    assert!(took < Duration::from_secs(3), "failover {took:?} after the crash: the ingress waited for its round");
    wait_for("s1's players on s2", Duration::from_secs(30), || {
        players.snapshot().iter().all(|p| p.current_shard() == Some("s2"))
    });
    players.stop();
    for sim in sims.iter_mut().flatten() {
        sim.stop();
    }
}
