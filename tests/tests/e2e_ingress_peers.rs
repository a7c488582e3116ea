//! The ingress agents' peer links (issue 20): a joining node takes the
//! whole state before it is ready, a node that stays away is reported, a
//! chosen-player move given to one agent moves players whose packets enter
//! elsewhere, and hostile peer traffic is refused, counted, and harmless.

use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use proxy_agent::{
    peers::{frame, handshake},
    protocol::Request,
};
use tests::{
    agent::Agent,
    ha::{
        cluster::{fill_sessions, ingress_yaml, HaCluster, PEER_PORT, SECRET},
        ecmp::Ecmp,
        topology::ingress_ip,
    },
    scenario::wait_for,
};
use tokio::io::AsyncWriteExt;

fn peers(agent: &Agent) -> serde_json::Value {
    HaCluster::status(agent)["agent"]["peers"].clone()
}

#[test]
fn a_node_joining_with_empty_maps_is_ready_only_once_it_holds_every_session() {
    const FILLED: u64 = 100_000;
    let mut net = Ecmp::build(2, &[0, 1], 20).unwrap();
    let extra = "session_idle_timeout_ms: 600000\n";
    let mut c = HaCluster::start(&net.net, &["active", "active"], 1000, extra).unwrap();
    let players = c.players(&net.net, 20, 30.0).unwrap();
    wait_for("20 players playing", Duration::from_secs(60), || {
        players.snapshot().iter().all(|p| p.connected && p.received >= 5)
    });
    c.wait_established_everywhere(20, Duration::from_secs(20));
    fill_sessions(c.ingress[0].as_ref().unwrap(), "s1", FILLED as u32);
    // Node 1 finds them at its next full scan and tells node 2 nothing (they
    // made no event): node 2 learns them only from a snapshot.
    wait_for("node 1 indexing the written sessions", Duration::from_secs(30), || {
        HaCluster::status(c.ingress[0].as_ref().unwrap())["totals"]["established"].as_u64() == Some(FILLED + 20)
    });

    // Node 2 dies (its route withdrawn: its players go to node 1, which
    // knows them) and comes back with empty maps.
    c.kill_agent(1).unwrap();
    net.withdraw(1).unwrap();
    wait_for("node 1 reporting node 2 away", Duration::from_secs(20), || {
        peers(c.ingress[0].as_ref().unwrap())["away"].as_array().is_some_and(|a| a.iter().any(|n| n == "in2"))
    });
    let yaml = ingress_yaml(1, 2, &c.shards_yaml, extra);
    let rejoined = Instant::now();
    let b = Agent::start(&net.net.ingress[1], &yaml).unwrap();
    let mut reasons: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = HaCluster::status(&b);
        let established = st["totals"]["established"].as_u64().unwrap_or(0);
        if st["agent"]["ready"] == true {
            assert!(
                established >= FILLED + 20,
                "ready with {established} of {} sessions: {st}\n{}",
                FILLED + 20,
                b.log_text()
            );
            break;
        }
        if let Some(why) = st["agent"]["not_ready"].as_str() {
            if !reasons.iter().any(|r| r == why) {
                reasons.push(why.to_string());
            }
        }
        assert!(Instant::now() < deadline, "node 2 never ready: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(reasons.iter().any(|r| r.contains("syncing with its peers")), "not ready because {reasons:?}");
    let snapshot_ms = peers(c.ingress[0].as_ref().unwrap())["outbound"][0]["last_snapshot_ms"].as_f64().unwrap();
    println!(
        "join: node 2 ready {:.2} s after it restarted empty; the snapshot of {} sessions took {snapshot_ms:.0} ms to be in its maps",
        rejoined.elapsed().as_secs_f64(),
        FILLED + 20
    );
    c.ingress[1] = Some(b);
    net.announce(1).unwrap();

    // Now everyone goes through node 2: it routes them all.
    let before = players.snapshot();
    players.reset_gaps();
    net.withdraw(0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for (b, a) in before.iter().zip(players.snapshot()) {
        assert_eq!(a.connects, 1, "{} handshook again", a.local);
        assert_eq!(a.current_shard(), b.current_shard());
        assert!(a.max_gap_ms < 500, "{}: {} ms silent", a.local, a.max_gap_ms);
    }
    players.stop();
}

#[test]
fn a_move_given_to_one_agent_moves_players_entering_through_the_others() {
    let net = Ecmp::build(3, &[0, 1], 100).unwrap();
    let c = HaCluster::start(&net.net, &["active", "active"], 200, "").unwrap();
    let players = c.players(&net.net, 60, 30.0).unwrap();
    wait_for("60 players playing", Duration::from_secs(60), || {
        players.snapshot().iter().all(|p| p.connected && p.received >= 5)
    });
    c.wait_established_everywhere(60, Duration::from_secs(20));
    let chosen: Vec<String> =
        players.snapshot().iter().filter(|p| p.current_shard() == Some("s1")).map(|p| p.local.clone()).collect();
    assert!(chosen.len() >= 10, "{} players on s1", chosen.len());
    let a = c.ingress[0].as_ref().unwrap();
    a.request(&Request::Migrate { clients: chosen.clone(), from: None, to: "s2".into() }).unwrap();
    wait_for("the chosen players on s2", Duration::from_secs(30), || {
        players.snapshot().iter().filter(|p| chosen.contains(&p.local)).all(|p| p.current_shard() == Some("s2"))
    });
    std::thread::sleep(Duration::from_secs(1));
    for p in players.snapshot() {
        let moved = chosen.contains(&p.local);
        assert_eq!(p.connects, if moved { 2 } else { 1 }, "{}: one re-handshake for a move, none otherwise", p.local);
        assert_eq!(p.current_shard(), Some(if moved { "s2" } else { p.shards[0].0.as_str() }));
    }
    // Which node each moved player enters by is the router's hash: all of
    // them entering node 1 alone would make this test prove nothing.
    let entered: Vec<u64> =
        c.live().map(|a| a.tables().unwrap().counter(proxy_common::Counter::IngressRedirect).unwrap()).collect();
    assert!(entered.iter().filter(|&&n| n > 0).count() >= 2, "players entered by several nodes: {entered:?}");
    println!(
        "move through node 1: {} players moved together on every node; packets in per node {entered:?}",
        chosen.len()
    );
    players.stop();
}

/// Connects to node `i`'s peer port from inside its namespace.
fn connect(net: &Ecmp, i: usize) -> std::net::TcpStream {
    net.net.ingress[i]
        .run(|| std::net::TcpStream::connect(SocketAddrV4::new(ingress_ip(i), PEER_PORT)).unwrap())
        .unwrap()
}

/// A dialer without the secret that answers the challenge with a made-up proof.
async fn forged_proof(mut s: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut hello = handshake::MAGIC.to_vec();
    hello.extend_from_slice(&handshake::VERSION.to_be_bytes());
    hello.extend_from_slice(&[7; 16]);
    hello.extend_from_slice(&[7, b'm', b'a', b'l', b'l', b'o', b'r', b'y']);
    s.write_all(&hello).await.unwrap();
    let mut head = [0u8; 8 + 2 + 1 + 16 + 1];
    s.read_exact(&mut head).await.unwrap();
    let mut rest = vec![0u8; head[head.len() - 1] as usize + 32];
    s.read_exact(&mut rest).await.unwrap();
    s.write_all(&[0; 32]).await.unwrap();
    let mut verdict = [0u8; 1];
    s.read_exact(&mut verdict).await.unwrap();
    assert_eq!(verdict[0], 1, "a made-up proof is refused");
}

fn refused(agent: &Agent, reason: &str) -> u64 {
    peers(agent)["refused"][reason].as_u64().unwrap_or(0)
}

#[test]
fn hostile_peer_traffic_is_refused_counted_and_changes_nothing() {
    let net = Ecmp::build(2, &[0, 1], 20).unwrap();
    let c = HaCluster::start(&net.net, &["active", "active"], 200, "").unwrap();
    let players = c.players(&net.net, 10, 30.0).unwrap();
    wait_for("10 players", Duration::from_secs(60), || {
        players.snapshot().iter().all(|p| p.connected && p.received >= 3)
    });
    c.wait_established_everywhere(10, Duration::from_secs(20));
    let a = c.ingress[0].as_ref().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let stream = |s: std::net::TcpStream| {
            s.set_nonblocking(true).unwrap();
            tokio::net::TcpStream::from_std(s).unwrap()
        };
        // A wrong secret (the dialer's own check refuses the node first;
        // then a forged proof), another version, not our protocol at all.
        let mut s = stream(connect(&net, 0));
        assert_eq!(
            handshake::dial(&mut s, b"not-the-secret", "mallory").await.err(),
            Some(handshake::Failed::WrongSecret)
        );
        forged_proof(stream(connect(&net, 0))).await;
        let mut s = stream(connect(&net, 0));
        let mut hello = handshake::MAGIC.to_vec();
        hello.extend_from_slice(&7u16.to_be_bytes());
        s.write_all(&hello).await.unwrap();
        let mut s = stream(connect(&net, 0));
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        // The secret, then forged, hostile and cut frames.
        let mut s = stream(connect(&net, 0));
        let keys = handshake::dial(&mut s, SECRET.as_bytes(), "in9").await.unwrap();
        let (_r, w) = s.into_split();
        let mut w = frame::Writer::new(w, keys.send);
        w.send(frame::Kind::Records, &[99, 1, 2, 3]).await.unwrap(); // unknown record kind
        w.send(frame::Kind::Records, &[1, 198, 18]).await.unwrap(); // a session cut short
        let mut forger = frame::Writer::new(Vec::new(), ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"guess"));
        forger.send(frame::Kind::Records, &[]).await.unwrap();
        w.send_raw(&forger.into_inner()).await.unwrap();
        w.send_raw(&1000u32.to_be_bytes()).await.unwrap();
        w.send_raw(b"cut").await.unwrap();
        drop(w);
    });
    // A flood of connections that say nothing.
    let flood: Vec<std::net::TcpStream> = (0..60).map(|_| connect(&net, 0)).collect();
    let reasons = ["wrong_secret", "version", "garbled", "bad_record", "bad_tag", "truncated", "too_many_connections"];
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reasons.iter().all(|r| refused(a, r) > 0) {
        assert!(Instant::now() < deadline, "refusals counted: {}", peers(a)["refused"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(flood);
    println!("refused: {}", peers(a)["refused"]);
    let log = a.log_text();
    assert!(log.contains("refused: it did not prove the node secret") || log.contains("refused:"), "{log}");
    // Nothing was written, and the real link still works: a new player
    // joining through either node is known to both.
    assert_eq!(HaCluster::status(a)["totals"]["established"], 10);
    assert!(
        peers(a)["outbound"][0]["connected"] == true
            && peers(a)["inbound"].as_array().unwrap().iter().any(|p| p["name"] == "in2" && p["connected"] == true)
    );
    let more = c.players(&net.net, 5, 30.0).unwrap();
    wait_for("5 more players", Duration::from_secs(60), || {
        more.snapshot().iter().all(|p| p.connected && p.received >= 3)
    });
    c.wait_established_everywhere(15, Duration::from_secs(20));
    players.stop();
    more.stop();
}
