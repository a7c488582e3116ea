//! Shards in other data centres (issue 22), end to end on `tests::sites`: a
//! WAN router that drops every packet whose source is not the sending site's
//! own prefix (BCP 38), an ingress node, and a remote node (the agent in
//! `role: remote`) in front of the remote site's shards, joined by a FOU
//! tunnel. Real XDP, the real agent binary on both nodes, real UDP.

use std::{
    net::{SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use proxy_agent::protocol::Request;
use tests::{
    packet::Udp,
    scenario::wait_for,
    sim::{
        player::{self, PlayerConfig, Players},
        wire,
    },
    sites::{self, counter, Bed, Shard, SitesTopology, SyncPlayer, INTERNET_HOST, REMOTE_WAN, STRANGER, TUNNEL_PORT},
    topology::PORT,
};

fn start(locals: usize, fars: usize, shards: &[Shard], mtu: Option<u32>, remote: bool) -> Bed {
    Bed::start(locals, fars, shards, mtu, remote).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn all_on(players: &Players, shard: &str) -> bool {
    players.snapshot().iter().all(|p| p.connected && p.current_shard() == Some(shard))
}

#[test]
fn plain_rewriting_to_a_remote_shard_dies_at_the_wan() {
    // far1 listed without a site: the ingress rewrites only the destination,
    // so the player's own address leaves the ingress site as the source.
    let b = start(0, 1, &[Shard::far_plain(0, "active")], None, false);
    // The agent's probes carry the node's own address: they pass, far1 is up.
    b.wait_up(&["far1"]);
    let before = b.t.wan_counter("ing_spoofed");
    let vip = b.t.vip();
    let socks = b.t.player_sockets(4).unwrap();
    std::thread::scope(|s| {
        for sock in socks {
            s.spawn(move || assert!(SyncPlayer::connect(sock, vip, Duration::from_secs(2)).is_err()));
        }
    });
    let dropped = b.t.wan_counter("ing_spoofed") - before;
    let rewritten = counter(&b.ingress, "ingress_redirect") + counter(&b.ingress, "ingress_pass_neigh");
    assert!(rewritten >= 4, "the ingress did not send the players' packets on: {rewritten}");
    assert!(
        dropped >= 4,
        "BCP 38 at the WAN dropped only {dropped} of the rewritten packets; WAN {}",
        b.t.wan_counters()
    );
    let st = b.sim("far1").stats();
    assert!(st.clients.is_empty() && st.handshake_ms.is_empty(), "a rewritten packet reached far1: {:?}", st.clients);
    println!("plain rewriting: {rewritten} player packets rewritten to far1, {dropped} dropped by BCP 38 at the WAN");
    // The control: with BCP 38 lifted for the players the same path plays,
    // so the filter (not the topology) was what stopped them.
    b.t.allow_from_ingress(sites::PLAYERS_PREFIX).unwrap();
    let mut p = b.sync_players(1).unwrap().remove(0);
    let (_, echo) = p.ping(60, Duration::from_secs(1)).unwrap().expect("an echo over the lifted path");
    assert_eq!((echo.shard.as_str(), echo.seen), ("far1", p.local));
}

#[test]
fn tunnelled_players_play_on_the_remote_shards_and_nothing_crosses_the_wan_in_the_clear() {
    let b = start(0, 2, &[Shard::far(0, "active"), Shard::far(1, "active")], None, true);
    b.wait_up(&["far1", "far2"]);
    const PINGS: usize = 20;
    let mut players = b.sync_players(8).unwrap();
    for p in &mut players {
        for i in 0..PINGS {
            let (_, echo) = p
                .ping(60, Duration::from_secs(1))
                .unwrap()
                .unwrap_or_else(|| panic!("{}: no echo for game packet {i}; WAN {}", p.local, b.t.wan_counters()));
            assert_eq!(echo.seen, p.local, "the shard saw another address than the player's");
            assert!(echo.shard.starts_with("far"), "{} played on {}", p.local, echo.shard);
        }
    }
    // Each remote shard saw each of its players' real address and port.
    let mut on = [0usize; 2];
    for p in &players {
        let at: Vec<_> =
            ["far1", "far2"].iter().map(|s| b.sim(s).stats().clients.get(&p.local.to_string()).cloned()).collect();
        let (i, c) =
            at.iter().enumerate().find_map(|(i, c)| c.clone().map(|c| (i, c))).expect("a shard knows the player");
        assert_eq!(c.packets, PINGS as u64, "{} at far{}", p.local, i + 1);
        on[i] += 1;
    }
    let sent = (players.len() * PINGS) as u64;
    let ing = ["tunnel_encap", "tunnel_decap_reply"];
    let rem = ["tunnel_decap_shard", "tunnel_encap_reply"];
    println!(
        "players per remote shard {on:?}; ingress {}; remote {}",
        b.counters(&b.ingress, &ing),
        b.counters(b.remote(), &rem)
    );
    for name in ing {
        assert!(counter(&b.ingress, name) >= sent, "ingress {name} < {sent}");
    }
    for name in rem {
        assert!(counter(b.remote(), name) >= sent, "remote {name} < {sent}");
    }
    // Nothing crossed the WAN unencapsulated, nothing left a site with a
    // player's address or the VIP as its source.
    let wan = b.t.wan_counters();
    for name in ["plain_udp", "plain_to_far", "far_leak", "ing_spoofed", "far_spoofed", "fragments"] {
        assert_eq!(b.t.wan_counter(name), 0, "WAN counter {name}: {wan}");
    }
    assert!(b.t.wan_counter("tunnel_udp") >= 2 * sent, "{wan}");
    // The probes' round trip through the tunnel, per site.
    let metrics = SitesTopology::scrape(&b.t.ingress);
    let rtt = metrics
        .lines()
        .find(|l| l.starts_with("samp_proxy_site_probe_rtt_seconds{site=\"far\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(rtt.is_some_and(|r| r > 0.0 && r < 1.0), "no per-site probe RTT in /metrics: {rtt:?}");
    println!("site far: probe RTT {:.0} µs (samp_proxy_site_probe_rtt_seconds)", rtt.unwrap() * 1e6);
}

#[test]
fn forged_tunnel_packets_are_dropped_at_the_remote_node() {
    let b = start(0, 1, &[Shard::far(0, "active")], None, true);
    b.wait_up(&["far1"]);
    // A tunnel packet claiming a player 198.18.0.2:40000 handshakes with far1.
    let claimed = SocketAddrV4::new(b.t.player_ips[0], 40000);
    let inner = Udp::new(*claimed.ip(), claimed.port(), sites::far_ip(0), PORT, &wire::handshake_request(0, PORT));
    let inner = inner.frame()[14..].to_vec();
    let tunnel = SocketAddrV4::new(REMOTE_WAN, TUNNEL_PORT);
    let send = |sock: &UdpSocket| {
        for _ in 0..20 {
            sock.send_to(&inner, tunnel).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let foreign0 = counter(b.remote(), "drop_tunnel_foreign");
    let spoofed0 = b.t.wan_counter("ing_spoofed");
    // A player on the internet, straight at the remote node.
    send(&sites::bind(&b.t.internet, SocketAddrV4::new(INTERNET_HOST, 0)).unwrap());
    // Another host of the ingress site (BCP 38 lets it out), not an ingress node.
    send(&sites::bind(&b.t.ingress, SocketAddrV4::new(STRANGER, 0)).unwrap());
    // A player behind the ingress: its own address never leaves the site.
    send(&sites::bind(&b.t.players, SocketAddrV4::new(b.t.player_ips[1], 0)).unwrap());
    wait_for("40 forged tunnel packets counted as foreign", Duration::from_secs(5), || {
        counter(b.remote(), "drop_tunnel_foreign") - foreign0 >= 40
    });
    assert!(b.t.wan_counter("ing_spoofed") - spoofed0 >= 20, "{}", b.t.wan_counters());
    std::thread::sleep(Duration::from_millis(200));
    let st = b.sim("far1").stats();
    assert!(st.clients.is_empty() && st.handshake_ms.is_empty(), "a forged packet reached far1: {:?}", st.clients);
    println!(
        "forged: {} dropped as foreign at the remote node; remote {}",
        counter(b.remote(), "drop_tunnel_foreign") - foreign0,
        b.counters(b.remote(), &["drop_tunnel_malformed", "drop_tunnel_not_shard", "tunnel_decap_shard"])
    );
}

/// 10 players on `from`, whose shard process dies: they must all reconnect
/// to `to` in the other site, together. Prints and returns the time.
fn fail_over_across_sites(b: &mut Bed, from: &str, to: &str) -> Duration {
    let rt = runtime();
    let mut cfg = PlayerConfig::new(b.t.vip(), Duration::from_secs(120));
    cfg.reconnect_after = Duration::from_millis(1500);
    let players = rt.block_on(async { player::start(b.t.player_sockets(10).unwrap(), &cfg) }).unwrap();
    wait_for("10 players on the first shard", Duration::from_secs(30), || all_on(&players, from));
    wait_for("echoes", Duration::from_secs(30), || players.snapshot().iter().all(|p| p.received >= 5));
    let died = Instant::now();
    let i = b.sims.iter().position(|s| s.name == from).unwrap();
    b.sims[i].stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_on(&players, to) {
        assert!(Instant::now() < deadline, "not all on {to} after 30 s: {:?}", players.snapshot());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = died.elapsed();
    for p in players.snapshot() {
        let list: Vec<_> = p.shards.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(list, [from, to], "{} went elsewhere", p.local);
        assert_eq!((p.wrong_seen, p.wrong_source), (0, 0), "{}", p.local);
    }
    let ev = b.ingress.request(&Request::Events).unwrap();
    let fo = ev.as_array().unwrap().iter().find(|e| e["kind"] == "failover" && e["shard"] == from).cloned();
    let fo = fo.expect("a failover event");
    assert_eq!((fo["target"].as_str(), fo["players"].as_u64()), (Some(to), Some(10)), "{fo}");
    println!(
        "cross-site failover {from} -> {to}: shard death to all 10 players playing on {to}: {} ms",
        took.as_millis()
    );
    players.stop();
    took
}

#[test]
fn a_dead_remote_shard_fails_over_to_a_local_standby() {
    let mut b = start(1, 1, &[Shard::far(0, "active"), Shard::local(0, "standby")], None, true);
    b.wait_up(&["far1", "l1"]);
    fail_over_across_sites(&mut b, "far1", "l1");
}

#[test]
fn a_dead_local_shard_fails_over_to_a_remote_standby() {
    let mut b = start(1, 1, &[Shard::local(0, "active"), Shard::far(0, "standby")], None, true);
    b.wait_up(&["far1", "l1"]);
    fail_over_across_sites(&mut b, "l1", "far1");
}

#[test]
fn restarting_the_remote_agent_goes_unnoticed() {
    let mut b = start(0, 1, &[Shard::far(0, "active")], None, true);
    b.wait_up(&["far1"]);
    let socks = b.t.player_sockets(10).unwrap();
    let vip = b.t.vip();
    let mut remote = b.remote.take().unwrap();
    let stats = player::play_until(socks, vip, 5, |players| {
        players.reset_gaps();
        let flowing = |what: &str| {
            let (shard0, echoes0) = (b.sim("far1").stats().game_packets(), received(players));
            wait_for(what, Duration::from_secs(5), || {
                b.sim("far1").stats().game_packets() >= shard0 + 50 && received(players) >= echoes0 + 50
            });
        };
        remote.stop().unwrap();
        let attached = b.t.remote.ip(&["link", "show", "wan0"]).unwrap();
        assert!(attached.contains("xdp"), "the remote node's XDP left with its agent: {attached}");
        flowing("game packets both ways with the remote agent stopped");
        remote.restart(&b.t.remote).unwrap();
        flowing("game packets both ways after the restart");
        std::thread::sleep(Duration::from_secs(1));
    });
    for p in &stats {
        assert_eq!((p.connects, p.shards.len()), (1, 1), "{} noticed: {p:?}", p.local);
        assert!(p.max_gap_ms < 500, "{} heard nothing for {} ms", p.local, p.max_gap_ms);
    }
    let worst = stats.iter().map(|p| p.max_gap_ms).max().unwrap_or(0);
    println!("remote agent restart: no reconnect, longest silence a player heard {worst} ms");
    b.remote = Some(remote);
}

fn received(players: &Players) -> u64 {
    players.snapshot().iter().map(|p| p.received).sum()
}

#[test]
fn an_oversized_packet_is_dropped_not_fragmented() {
    let b = start(0, 1, &[Shard::far(0, "active")], Some(600), true);
    b.wait_up(&["far1"]);
    let mut p = b.sync_players(1).unwrap().remove(0);
    let small = |p: &mut SyncPlayer| {
        for _ in 0..5 {
            assert!(p.ping(60, Duration::from_secs(1)).unwrap().is_some(), "a small packet was lost");
        }
    };
    small(&mut p);
    let too_big0 = counter(&b.ingress, "drop_tunnel_too_big");
    // 700 bytes of filler: the inner packet is 734 bytes, the outer 762 > 600.
    for _ in 0..5 {
        assert!(p.ping(700, Duration::from_millis(300)).unwrap().is_none(), "an oversized packet got an echo");
    }
    wait_for("5 oversized packets counted", Duration::from_secs(3), || {
        counter(&b.ingress, "drop_tunnel_too_big") - too_big0 >= 5
    });
    small(&mut p);
    let seen = b.sim("far1").stats().clients.get(&p.local.to_string()).map(|c| c.packets);
    assert_eq!(seen, Some(10), "far1 got other than the 10 small packets");
    assert_eq!(b.t.wan_counter("fragments"), 0, "fragments crossed the WAN: {}", b.t.wan_counters());
    println!("oversized: {} dropped as too big", counter(&b.ingress, "drop_tunnel_too_big") - too_big0);
}

#[test]
fn round_trip_through_the_tunnel_beside_the_direct_path() {
    // far1 tunnelled, far2 (same site, same hops) by plain rewriting with
    // BCP 38 lifted for the players, l1 on the ingress LAN.
    let shards = [Shard::far(0, "active"), Shard::far_plain(1, "active"), Shard::local(0, "active")];
    let b = start(1, 2, &shards, None, true);
    b.wait_up(&["far1", "far2", "l1"]);
    b.t.allow_from_ingress(sites::PLAYERS_PREFIX).unwrap();
    let names = ["far1", "far2", "l1"];
    let mut players: Vec<_> = names.iter().enumerate().map(|(i, n)| b.player_on(n, &names, i).unwrap()).collect();
    const N: usize = 300;
    let mut rtts = vec![Vec::with_capacity(N); names.len()];
    for _ in 0..N {
        for (i, p) in players.iter_mut().enumerate() {
            if let Some((rtt, echo)) = p.ping(60, Duration::from_secs(1)).unwrap() {
                assert_eq!(echo.shard, names[i]);
                rtts[i].push(rtt);
            }
        }
    }
    let labels = ["through the tunnel (far1)", "direct, plain rewriting, BCP 38 lifted (far2)", "local LAN (l1)"];
    for (i, label) in labels.iter().enumerate() {
        assert!(rtts[i].len() >= N * 95 / 100, "{label}: {} of {N} pings answered", rtts[i].len());
        println!("round trip {label}: median {:.0} µs over {} pings", sites::median_us(rtts[i].clone()), rtts[i].len());
    }
}
