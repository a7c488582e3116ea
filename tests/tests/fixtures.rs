//! Packet fixtures through BPF_PROG_TEST_RUN: input frame, expected verdict,
//! expected output bytes (built from scratch, so every checksum the program
//! updates incrementally is checked against a fresh computation), and the
//! counter that must count the outcome.
//!
//! The runs happen in `tests::bed`, whose routes and neighbours make
//! `bpf_fib_lookup` answer deterministically:
//!   fwd0 02:00:00:00:50:01 198.18.50.1/24 — shard A 198.18.50.2 (neighbour
//!        known, 02:00:00:00:50:02), shard B 198.18.50.3 (no neighbour)
//!   cli0 02:00:00:00:60:01 198.18.60.1/24 — client 198.18.60.2 (neighbour
//!        known, 02:00:00:00:60:02), client 198.18.60.9 (no neighbour)
//!   198.18.70.0/24 is a blackhole — shard C 198.18.70.2

use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions};
use proxy_common::{Counter, Session};
use tests::{
    bed::*,
    packet::{ipv4_checksum_ok, udp_checksum_ok, IcmpError, Udp, ETH_LEN, HEADERS, IP_LEN},
};

fn bed() -> Bed {
    Bed::new().expect("test bed")
}

/// Runs a fixture and checks verdict, output bytes and the counter.
fn check(bed: &Bed, name: &str, input: &[u8], verdict: u32, expected: &[u8], counter: Counter) {
    let before = bed.counter(counter);
    let (got_verdict, out) = bed.run(input);
    assert_eq!(got_verdict, verdict, "{name}: verdict");
    assert_eq!(hex(&out), hex(expected), "{name}: output bytes");
    assert_eq!(bed.counter(counter), before + 1, "{name}: counter {}", counter.name());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn to_vip(client: Ipv4Addr, sport: u16, payload: &[u8]) -> Udp {
    Udp::new(client, sport, VIP, PORT, payload)
}

/// What a redirected packet must look like: new addresses, the FIB's MACs,
/// TTL one lower, all checksums fresh.
fn forwarded(mut p: Udp, src: Ipv4Addr, dst: Ipv4Addr, smac: [u8; 6], dmac: [u8; 6]) -> Vec<u8> {
    p.src = src;
    p.dst = dst;
    p.src_mac = smac;
    p.dst_mac = dmac;
    p.ttl -= 1;
    p.frame()
}

/// What a passed-up rewritten packet must look like: new address, nothing else.
fn rewritten(mut p: Udp, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    p.src = src;
    p.dst = dst;
    p.frame()
}

#[test]
fn ingress_paths() {
    let mut bed = bed();
    bed.session(CLIENT, 50000, GROUP_A, false);
    bed.session(CLIENT, 50001, GROUP_B, false);
    bed.session(CLIENT, 50002, GROUP_NONE, false);
    bed.session(CLIENT, 50003, GROUP_C, false);

    let p = to_vip(CLIENT, 50000, &game_packet());
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "established hit, neighbour known", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
    assert!(ipv4_checksum_ok(&want) && udp_checksum_ok(&want));

    let mut p = to_vip(CLIENT, 50000, &game_packet());
    p.zero_udp_checksum = true;
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    assert_eq!(&want[ETH_LEN + IP_LEN + 6..ETH_LEN + IP_LEN + 8], &[0, 0]);
    check(&bed, "zero UDP checksum stays zero", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);

    let p = to_vip(CLIENT, 50001, &game_packet());
    check(
        &bed,
        "established, neighbour unresolved: rewritten and passed",
        &p.frame(),
        XDP_PASS,
        &rewritten(p.clone(), CLIENT, SHARD_B),
        Counter::IngressPassNeigh,
    );

    let p = to_vip(CLIENT, 50002, &game_packet());
    check(&bed, "group without a backend", &p.frame(), XDP_DROP, &p.frame(), Counter::DropNoBackend);

    let p = to_vip(CLIENT, 50003, &game_packet());
    check(&bed, "shard behind a blackhole route", &p.frame(), XDP_DROP, &p.frame(), Counter::DropUnroutable);

    let mut p = to_vip(CLIENT, 50000, &game_packet());
    p.ttl = 1;
    check(&bed, "TTL 1 left to the kernel", &p.frame(), XDP_PASS, &p.frame(), Counter::PassTtl);

    let p = to_vip(CLIENT, 50000, &query());
    let answered = bed.run(&p.frame());
    assert_eq!(answered.0, XDP_TX, "a known player's query is answered, not routed to its shard");
}

#[test]
fn new_players_are_admitted_only_by_a_valid_handshake() {
    let mut bed = bed();
    bed.place_all_on(GROUP_A);

    let p = to_vip(CLIENT, 40000, &game_packet());
    check(&bed, "unknown source, game packet", &p.frame(), XDP_DROP, &p.frame(), Counter::DropNotHandshake);

    let mut bad = handshake(0);
    bad[0] ^= 0x02;
    let p = to_vip(CLIENT, 40000, &bad);
    check(&bed, "handshake with a bad checksum", &p.frame(), XDP_DROP, &p.frame(), Counter::DropNotHandshake);

    let p = to_vip(CLIENT, 40000, &handshake(0)[..3]);
    check(&bed, "3-byte datagram", &p.frame(), XDP_DROP, &p.frame(), Counter::DropNotHandshake);

    let p = to_vip(CLIENT, 40000, &query());
    assert_eq!(bed.run(&p.frame()).0, XDP_TX, "an unknown source's query is answered");
    assert!(bed.tables.scan_sessions().unwrap().pending.is_empty(), "nothing admitted yet");

    let placed = bed.counter(Counter::SessionPlaced);
    let p = to_vip(CLIENT, 40000, &handshake(0));
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "valid handshake is placed", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
    assert_eq!(bed.counter(Counter::SessionPlaced), placed + 1);
    let pending = bed.tables.scan_sessions().unwrap().pending;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].0, key(CLIENT, 40000));
    assert_eq!(pending[0].1.group, GROUP_A);
    assert!(bed.tables.scan_sessions().unwrap().established.is_empty(), "not established before the shard answers");

    // The handshake on the wire is padded to Ethernet's 60-byte minimum; the
    // program must go by the UDP length, not the frame length.
    let p = to_vip(CLIENT, 40001, &handshake(0x1234));
    let mut padded = p.frame();
    padded.resize(60, 0);
    let mut want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    want.resize(60, 0);
    check(&bed, "padded handshake is placed", &padded, XDP_REDIRECT, &want, Counter::IngressRedirect);

    bed.place_all_on(0);
    let p = to_vip(CLIENT, 40002, &handshake(0));
    check(&bed, "no shard to place on", &p.frame(), XDP_DROP, &p.frame(), Counter::DropNoShard);
}

#[test]
fn moving_sessions_wait_for_a_fresh_handshake() {
    let mut bed = bed();
    bed.session(CLIENT, 50010, GROUP_A, true);
    let p = to_vip(CLIENT, 50010, &game_packet());
    check(&bed, "game packet while moving", &p.frame(), XDP_DROP, &p.frame(), Counter::DropMoving);
    let p = to_vip(CLIENT, 50010, &handshake(7));
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "fresh handshake goes to the new shard", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
    let s = bed.tables.sessions.get(&key(CLIENT, 50010), 0).unwrap();
    assert_eq!(s.epoch, bed.group_epoch(GROUP_A), "the handshake re-syncs the session with its group's epoch");
    let p = to_vip(CLIENT, 50010, &game_packet());
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "then game packets flow", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
}

#[test]
fn cached_sessions_follow_the_agent_at_once() {
    let mut bed = bed();
    bed.session(CLIENT, 50020, GROUP_A, false);
    let p = to_vip(CLIENT, 50020, &game_packet());
    let to_a = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "first packet: table path, fills the cache", &p.frame(), XDP_REDIRECT, &to_a, Counter::IngressRedirect);
    // Rewrite the session behind the cache's back (moving to group B): the
    // cache still serves it, which shows the hit path never read the table.
    let k = key(CLIENT, 50020);
    let old = bed.tables.sessions.get(&k, 0).unwrap();
    let moved = Session { group: GROUP_B, epoch: bed.group_epoch(GROUP_B).wrapping_add(1), ..old };
    bed.tables.sessions.insert(k, moved, 0).unwrap();
    check(&bed, "served from the cache", &p.frame(), XDP_REDIRECT, &to_a, Counter::IngressRedirect);
    // The agent's way: the rewrite voids the cache in the same call.
    bed.tables.rewrite_sessions(false, &[(k, moved)], &[(k, old)]).unwrap();
    check(
        &bed,
        "after the agent's rewrite the move holds at once",
        &p.frame(),
        XDP_DROP,
        &p.frame(),
        Counter::DropMoving,
    );
    // A cached session carries its shard, so a whole-group move voids the
    // cache too: behind the cache's back it still goes to the old shard.
    bed.session(CLIENT, 50021, GROUP_A, false);
    let p = to_vip(CLIENT, 50021, &game_packet());
    let to_a = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "cached", &p.frame(), XDP_REDIRECT, &to_a, Counter::IngressRedirect);
    let mut group = bed.tables.groups.get(&GROUP_A, 0).unwrap();
    group.epoch = group.epoch.wrapping_add(1);
    bed.tables.groups.set(GROUP_A, group, 0).unwrap();
    check(&bed, "its group moved behind the cache's back", &p.frame(), XDP_REDIRECT, &to_a, Counter::IngressRedirect);
    bed.tables.void_session_cache().unwrap();
    check(&bed, "its group moved: held", &p.frame(), XDP_DROP, &p.frame(), Counter::DropMoving);
    // The agent's way: moving a shard's players writes GROUPS and voids.
    bed.session(CLIENT, 50022, GROUP_B, false);
    let p = to_vip(CLIENT, 50022, &game_packet());
    let to_b = rewritten(p.clone(), CLIENT, SHARD_B);
    check(&bed, "on b (its neighbour unresolved)", &p.frame(), XDP_PASS, &to_b, Counter::IngressPassNeigh);
    check(&bed, "cached on b", &p.frame(), XDP_PASS, &to_b, Counter::IngressPassNeigh);
    bed.cluster().migrate_shard("b", "a").expect("moving b's players to a");
    check(&bed, "b's group moved to a: held", &p.frame(), XDP_DROP, &p.frame(), Counter::DropMoving);
}

/// The return role on a game node: the player was placed on an ingress
/// node, so nothing is pending here; the shard's acceptance is rewritten
/// and sent on, and reported for the ingress nodes. Answers to another
/// proxy node's probe keep the shard's address.
#[test]
fn a_game_node_reports_accepted_players_and_leaves_probe_answers_alone() {
    let mut bed = bed();
    let _ = bed.session_events();
    let accepted = Udp::new(SHARD_A, PORT, CLIENT, 40100, &[25, 0]);
    let want = forwarded(accepted.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    check(&bed, "acceptance, nothing pending here", &accepted.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);
    let events = bed.session_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(
        (e.kind, e.key, e.group),
        (proxy_common::SESSION_ANSWERED, key(CLIENT, 40100), 1),
        "backend 1 is shard A"
    );
    // A cookie (26) proves nothing: no report.
    let cookie = Udp::new(SHARD_A, PORT, CLIENT, 40101, &[26, 1, 2]);
    let want = forwarded(cookie.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    check(&bed, "cookie", &cookie.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);
    assert!(bed.session_events().is_empty());

    // A probe answer to a proxy node (a PEER) keeps the shard's address.
    let peer = Ipv4Addr::new(198, 18, 60, 5);
    bed.tables.peers.insert(proxy_common::net::addr_to_map(peer.octets()), 1, 0).unwrap();
    bed.peers_in_use();
    let probe_answer = Udp::new(SHARD_A, PORT, peer, 50000, b"SAMP....i");
    check(
        &bed,
        "probe answer to a peer",
        &probe_answer.frame(),
        XDP_PASS,
        &probe_answer.frame(),
        Counter::PassReplyLocal,
    );
    // The shard's other traffic (another source port) is not ours.
    let other = Udp::new(SHARD_A, 3306, CLIENT, 40100, &[1, 2, 3]);
    check(&bed, "shard's other traffic", &other.frame(), XDP_PASS, &other.frame(), Counter::PassNotOurs);
}

#[test]
fn return_paths() {
    let mut bed = bed();
    let reply = |dst: Ipv4Addr, dport: u16, sport: u16| Udp::new(SHARD_A, sport, dst, dport, &[26, 0x34, 0x12]);
    let accepted = |dst: Ipv4Addr, dport: u16| Udp::new(SHARD_A, PORT, dst, dport, &[25, 0]);

    // The shard's cookie (26) proves nothing about the client's address: the
    // player stays pending. Its acceptance (25) promotes it.
    let pending = Session { group: GROUP_A, epoch: bed.group_epoch(GROUP_A), last_seen_ns: 0 };
    bed.tables.pending.insert(key(CLIENT, 40000), pending, 0).unwrap();
    let p = reply(CLIENT, 40000, PORT);
    let want = forwarded(p.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    check(
        &bed,
        "cookie reply rewritten, player still pending",
        &p.frame(),
        XDP_REDIRECT,
        &want,
        Counter::ReturnRedirect,
    );
    assert_eq!(bed.tables.scan_sessions().unwrap().pending.len(), 1, "a cookie reply promotes nobody");
    let p = accepted(CLIENT, 40000);
    let want = forwarded(p.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    let promoted = bed.counter(Counter::SessionPromoted);
    check(&bed, "reply rewritten to come from the VIP", &p.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);
    assert!(ipv4_checksum_ok(&want) && udp_checksum_ok(&want));
    assert_eq!(bed.counter(Counter::SessionPromoted), promoted + 1);
    assert_eq!(bed.tables.sessions.get(&key(CLIENT, 40000), 0).unwrap().group, GROUP_A);
    assert!(bed.tables.scan_sessions().unwrap().pending.is_empty());

    let mut p = reply(CLIENT, 40000, PORT);
    p.zero_udp_checksum = true;
    let want = forwarded(p.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    check(&bed, "reply with zero UDP checksum", &p.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);

    let p = reply(CLIENT_NO_NEIGH, 40000, PORT);
    check(
        &bed,
        "reply, client neighbour unresolved",
        &p.frame(),
        XDP_PASS,
        &rewritten(p.clone(), VIP, CLIENT_NO_NEIGH),
        Counter::ReturnPassNeigh,
    );

    let p = reply(LOCAL, 40000, PORT);
    check(&bed, "reply to a local socket (health probe)", &p.frame(), XDP_PASS, &p.frame(), Counter::PassReplyLocal);

    let p = reply(Ipv4Addr::new(198, 18, 70, 5), 40000, PORT);
    check(&bed, "reply to a blackholed client", &p.frame(), XDP_DROP, &p.frame(), Counter::DropUnroutable);

    let p = reply(CLIENT, 40000, 7778);
    check(&bed, "shard traffic from another port", &p.frame(), XDP_PASS, &p.frame(), Counter::PassNotOurs);

    let p = Udp::new(Ipv4Addr::new(198, 18, 60, 7), 7777, CLIENT, 40000, &[1, 2, 3]);
    check(&bed, "UDP from a stranger", &p.frame(), XDP_PASS, &p.frame(), Counter::PassNotOurs);
    let _ = &mut bed;
}

/// A node with one NIC reaches its players and its shards through the same
/// interface: a packet that leaves by the interface it came in on is sent
/// back with XDP_TX (no redirect), rewritten exactly as a redirected one,
/// both ways; another interface still means a redirect.
#[test]
fn one_armed_nodes_send_back_out_the_same_interface() {
    let mut bed = bed();
    bed.session(CLIENT, 50000, GROUP_A, false);
    let p = to_vip(CLIENT, 50000, &game_packet());
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    sent_back_out(&bed, "to the shard", &p.frame(), &want, ("fwd0", "cli0"), Counter::IngressRedirect);
    let r = Udp::new(SHARD_A, PORT, CLIENT, 50000, &[0xE3; 20]);
    let want = forwarded(r.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    sent_back_out(&bed, "to the player", &r.frame(), &want, ("cli0", "fwd0"), Counter::ReturnRedirect);
}

/// `frame` arriving on `ifaces.0`, which its route leaves by, goes back out
/// with XDP_TX as `want`, counted in `counter`; arriving on `ifaces.1`, it is
/// redirected, the same bytes. Twice: the FIB's answer, then the caches'.
fn sent_back_out(bed: &Bed, what: &str, frame: &[u8], want: &[u8], ifaces: (&str, &str), counter: Counter) {
    for _ in 0..2 {
        let before = bed.counter(counter);
        let (verdict, out) = bed.run_arriving_on(ifaces.0, frame);
        assert_eq!(verdict, XDP_TX, "{what}: through the arrival interface");
        assert_eq!(hex(&out), hex(want), "{what}: the same rewrite as a redirect");
        assert_eq!(bed.counter(counter), before + 1, "{what}: counted as sent on");
        let (verdict, out) = bed.run_arriving_on(ifaces.1, frame);
        assert_eq!((verdict, hex(&out)), (XDP_REDIRECT, hex(want)), "{what}: through another interface");
    }
}

/// A player's packet with a low TTL (a traceroute through the public
/// address) leaves for its shard with TTL 32, so no hop inside the cluster
/// answers the player with a time exceeded that quotes the shard's
/// address; the kernel's forwarding (neighbour unresolved) gets 33, as it
/// takes one off. Checksums stay right. A shard's reply keeps its own TTL
/// less one.
#[test]
fn a_players_low_ttl_never_expires_inside_the_cluster() {
    let mut bed = bed();
    bed.session(CLIENT, 50000, GROUP_A, false);
    bed.session(CLIENT, 50001, GROUP_B, false);
    for ttl in [2u8, 3, 32, 33] {
        let mut p = to_vip(CLIENT, 50000, &game_packet());
        p.ttl = ttl;
        let mut want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
        want[ETH_LEN + 8] = (ttl - 1).max(32);
        let (verdict, out) = bed.run(&p.frame());
        assert_eq!((verdict, out[ETH_LEN + 8]), (XDP_REDIRECT, want[ETH_LEN + 8]), "TTL {ttl} to a shard");
        assert!(ipv4_checksum_ok(&out) && udp_checksum_ok(&out), "TTL {ttl}: checksums");
        assert_eq!(hex(&out[..ETH_LEN + 8]), hex(&want[..ETH_LEN + 8]), "TTL {ttl}: the rest as ever");
        assert_eq!(hex(&out[ETH_LEN + 12..]), hex(&want[ETH_LEN + 12..]), "TTL {ttl}: the rest as ever");

        let mut p = to_vip(CLIENT, 50001, &game_packet());
        p.ttl = ttl;
        let (verdict, out) = bed.run(&p.frame());
        assert_eq!((verdict, out[ETH_LEN + 8]), (XDP_PASS, ttl.max(33)), "TTL {ttl} to a shard through the kernel");
        assert!(ipv4_checksum_ok(&out) && udp_checksum_ok(&out), "TTL {ttl} through the kernel: checksums");

        let mut r = Udp::new(SHARD_A, PORT, CLIENT, 50000, &[0xE3; 20]);
        r.ttl = ttl;
        let (verdict, out) = bed.run(&r.frame());
        assert_eq!((verdict, out[ETH_LEN + 8]), (XDP_REDIRECT, ttl - 1), "TTL {ttl} of a shard's reply");
        assert!(ipv4_checksum_ok(&out) && udp_checksum_ok(&out), "TTL {ttl} reply: checksums");
    }
}

/// An interface that takes no redirected frames (the bed's veths: their
/// peers have neither GRO nor XDP) is marked by the agent from the kernel's
/// word: packets routed out of it are rewritten and passed up, TTL and MACs
/// left to the kernel's forwarding, both ways. Once it takes them (GRO on
/// at the peer), they are redirected again.
#[test]
fn interfaces_that_take_no_redirects_get_packets_through_the_kernel() {
    let mut bed = bed();
    bed.session(CLIENT, 50000, GROUP_A, false);
    bed.sync_redirect_targets();
    let p = to_vip(CLIENT, 50000, &game_packet());
    let r = Udp::new(SHARD_A, PORT, CLIENT, 50000, &[0xE3; 20]);
    for _ in 0..2 {
        check(
            &bed,
            "to the shard",
            &p.frame(),
            XDP_PASS,
            &rewritten(p.clone(), CLIENT, SHARD_A),
            Counter::IngressPassNeigh,
        );
        check(
            &bed,
            "to the player",
            &r.frame(),
            XDP_PASS,
            &rewritten(r.clone(), VIP, CLIENT),
            Counter::ReturnPassNeigh,
        );
    }
    for peer in ["fwd0p", "cli0p"] {
        bed.ns.exec("ethtool", &["-K", peer, "gro", "on"]).unwrap();
    }
    bed.sync_redirect_targets();
    if !proxy_agent::dataplane::xdp_features::reported() {
        // Below 6.3 no kernel word on XDP features: the conservative rule
        // keeps every interface without this agent's XDP (all of the
        // bed's) going through the kernel, GRO or not.
        check(
            &bed,
            "to the shard, no xdp_features",
            &p.frame(),
            XDP_PASS,
            &rewritten(p.clone(), CLIENT, SHARD_A),
            Counter::IngressPassNeigh,
        );
        return;
    }
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "to the shard, taken", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
    let want = forwarded(r.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    check(&bed, "to the player, taken", &r.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);
}

/// The return path keeps a copy of REVERSE per CPU: a change behind its
/// back shows only once the copies are voided, which the agent does after
/// every change of REVERSE (here: a reload that drops shard c).
#[test]
fn cached_shard_replies_follow_the_agent_at_once() {
    let mut bed = bed();
    let shard_c = Ipv4Addr::new(198, 18, 70, 2);
    let p = Udp::new(shard_c, PORT, CLIENT, 40001, &[26, 0x34, 0x12]);
    let want = forwarded(p.clone(), VIP, CLIENT, CLI0_MAC, CLIENT_MAC);
    check(&bed, "shard c's reply", &p.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);
    let c = proxy_common::net::addr_to_map(shard_c.octets());
    let rev = bed.tables.reverse.get(&c, 0).unwrap();
    bed.tables.reverse.remove(&c).unwrap();
    check(&bed, "removed behind the cache's back", &p.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);
    bed.tables.void_session_cache().unwrap();
    check(&bed, "voided: no shard's reply", &p.frame(), XDP_PASS, &p.frame(), Counter::PassNotOurs);
    bed.tables.reverse.insert(c, rev, 0).unwrap();
    bed.tables.void_session_cache().unwrap();
    check(&bed, "back", &p.frame(), XDP_REDIRECT, &want, Counter::ReturnRedirect);
    // The agent's way: the reload removes c's entry and voids the copies.
    let without_c = "interfaces: [lo]\nhandshake_rate: 0\nfrontends: [{name: play, address: \"198.18.100.1:7777\"}]\nshards:\n  - {name: a, address: 198.18.50.2, capacity: 100}\n  - {name: b, address: 198.18.50.3, capacity: 100}\n";
    bed.cluster().reconcile(proxy_agent::config::parse("bed", without_c).unwrap()).expect("dropping shard c");
    check(&bed, "after the reload that drops c", &p.frame(), XDP_PASS, &p.frame(), Counter::PassNotOurs);
}

#[test]
fn everything_else_is_untouched() {
    let mut bed = bed();
    bed.session(CLIENT, 50000, GROUP_A, false);
    let base = to_vip(CLIENT, 50000, &game_packet()).frame();

    let mut arp = base.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    check(&bed, "ARP", &arp, XDP_PASS, &arp, Counter::PassNotIpv4);
    let mut v6 = base.clone();
    v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    check(&bed, "IPv6", &v6, XDP_PASS, &v6, Counter::PassNotIpv4);

    // IPv4 with 4 bytes of options (IHL 6): the header grows, the rest shifts.
    let mut opts = base[..ETH_LEN + IP_LEN].to_vec();
    opts[ETH_LEN] = 0x46;
    opts.extend_from_slice(&[1, 1, 1, 0]);
    opts.extend_from_slice(&base[ETH_LEN + IP_LEN..]);
    check(&bed, "IPv4 options", &opts, XDP_PASS, &opts, Counter::PassIpOptions);

    let mut mf = base.clone();
    mf[ETH_LEN + 6] = 0x20; // more fragments
    check(&bed, "first fragment", &mf, XDP_PASS, &mf, Counter::PassFragment);
    let mut later = base.clone();
    later[ETH_LEN + 6..ETH_LEN + 8].copy_from_slice(&[0x00, 0x10]); // offset 128
    check(&bed, "later fragment", &later, XDP_PASS, &later, Counter::PassFragment);

    for (proto, name) in [(6u8, "TCP"), (1, "ICMP")] {
        let mut f = base.clone();
        f[ETH_LEN + 9] = proto;
        check(&bed, name, &f, XDP_PASS, &f, Counter::PassNotUdp);
    }

    let other_port = Udp::new(CLIENT, 50000, VIP, 7778, &game_packet()).frame();
    check(&bed, "other port on the VIP", &other_port, XDP_PASS, &other_port, Counter::PassNotOurs);
    let elsewhere = Udp::new(CLIENT, 50000, Ipv4Addr::new(198, 18, 100, 2), PORT, &game_packet()).frame();
    check(&bed, "same port, other address", &elsewhere, XDP_PASS, &elsewhere, Counter::PassNotOurs);
    let _ = &mut bed;
}

#[test]
fn malformed_frames_are_dropped() {
    let mut bed = bed();
    bed.session(CLIENT, 50000, GROUP_A, false);
    let base = to_vip(CLIENT, 50000, &game_packet()).frame();

    // Every truncation inside the headers. The kernel itself refuses test
    // frames shorter than an Ethernet header (no NIC delivers them either).
    for len in ETH_LEN..HEADERS {
        check(&bed, &format!("truncated at {len} bytes"), &base[..len], XDP_DROP, &base[..len], Counter::DropMalformed);
    }
    assert!(
        bed.ns
            .run(|| {
                let opts = TestRunOptions { data_in: Some(&base[..ETH_LEN - 1]), ..Default::default() };
                bed.dp.program().test_run(opts).is_err()
            })
            .unwrap(),
        "the kernel refuses frames shorter than 14 bytes"
    );

    let set16 = |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    let mut long_ip = base.clone();
    set16(&mut long_ip, ETH_LEN + 2, (base.len() - ETH_LEN + 1) as u16);
    check(&bed, "IPv4 length past the frame", &long_ip, XDP_DROP, &long_ip, Counter::DropMalformed);
    let mut short_ip = base.clone();
    set16(&mut short_ip, ETH_LEN + 2, 20);
    check(&bed, "IPv4 length shorter than the UDP header", &short_ip, XDP_DROP, &short_ip, Counter::DropMalformed);
    let mut long_udp = base.clone();
    set16(&mut long_udp, ETH_LEN + IP_LEN + 4, (base.len() - ETH_LEN - IP_LEN + 1) as u16);
    check(&bed, "UDP length past the IPv4 packet", &long_udp, XDP_DROP, &long_udp, Counter::DropMalformed);
    let mut tiny_udp = base.clone();
    set16(&mut tiny_udp, ETH_LEN + IP_LEN + 4, 7);
    check(&bed, "UDP length below its header", &tiny_udp, XDP_DROP, &tiny_udp, Counter::DropMalformed);
    let mut ihl4 = base.clone();
    ihl4[ETH_LEN] = 0x44;
    check(&bed, "IHL below 5", &ihl4, XDP_DROP, &ihl4, Counter::DropMalformed);
    let mut v6_in_v4 = base.clone();
    v6_in_v4[ETH_LEN] = 0x65;
    check(&bed, "IP version 6 in an IPv4 frame", &v6_in_v4, XDP_DROP, &v6_in_v4, Counter::DropMalformed);
    let _ = &mut bed;
}

#[test]
fn handshakes_are_paced_per_shard() {
    let mut bed = bed();
    bed.place_all_on(GROUP_A);
    bed.session(CLIENT, 50000, GROUP_A, false);
    // One handshake per 10 s, no burst beyond it.
    let meter = proxy_common::Meter { tat_ns: 0, interval_ns: 10_000_000_000, tolerance_ns: 0 };
    bed.tables.meter.set(1, meter, 0).unwrap();
    let p = to_vip(CLIENT, 40000, &handshake(0));
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "first handshake passes the pacer", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
    let p = to_vip(CLIENT, 40001, &handshake(0));
    check(&bed, "second handshake is held back", &p.frame(), XDP_DROP, &p.frame(), Counter::DropMetered);
    assert_eq!(bed.tables.scan_sessions().unwrap().pending.len(), 1, "a held-back player costs no table entry");
    let p = to_vip(CLIENT, 50000, &game_packet());
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "game packets are never paced", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
}

#[test]
fn a_dropped_handshake_spends_no_pacer_slot() {
    let mut bed = bed();
    // One handshake per 10 s to shard A (backend 1) and shard C (backend 3).
    let meter = proxy_common::Meter { tat_ns: 0, interval_ns: 10_000_000_000, tolerance_ns: 0 };
    bed.tables.meter.set(1, meter, 0).unwrap();
    bed.tables.meter.set(3, meter, 0).unwrap();

    bed.place_all_on(GROUP_C);
    let p = to_vip(CLIENT, 40000, &handshake(0));
    check(&bed, "handshake to an unroutable shard", &p.frame(), XDP_DROP, &p.frame(), Counter::DropUnroutable);
    assert_eq!(bed.tables.meter.get(&3, 0).unwrap().tat_ns, 0, "an unroutable handshake takes no slot");

    bed.place_all_on(GROUP_A);
    let mut p = to_vip(CLIENT, 40001, &handshake(0));
    p.ttl = 1;
    check(&bed, "expiring handshake left to the kernel", &p.frame(), XDP_PASS, &p.frame(), Counter::PassTtl);
    assert!(bed.tables.scan_sessions().unwrap().pending.is_empty(), "nor a table entry");

    let p = to_vip(CLIENT, 40002, &handshake(0));
    let want = forwarded(p.clone(), CLIENT, SHARD_A, FWD0_MAC, SHARD_A_MAC);
    check(&bed, "the slot is still there for a real one", &p.frame(), XDP_REDIRECT, &want, Counter::IngressRedirect);
    let p = to_vip(CLIENT, 40003, &handshake(0));
    check(&bed, "and it was the only one", &p.frame(), XDP_DROP, &p.frame(), Counter::DropMetered);
}

/// A query request written from the protocol description: "SAMP", the
/// server's IPv4, its port (little-endian), the opcode, extra bytes.
fn samp_query(op: u8, extra: &[u8]) -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&VIP.octets());
    q.extend_from_slice(&PORT.to_le_bytes());
    q.push(op);
    q.extend_from_slice(extra);
    q
}

/// The reply frame the data plane must send for `request` with `body`:
/// MACs, addresses and ports swapped, TTL 64, the request's 11-byte header
/// echoed, every checksum fresh.
fn reply_to(request: &Udp, payload: Vec<u8>) -> Vec<u8> {
    let mut r = Udp::new(request.dst, request.dport, request.src, request.sport, &payload);
    r.src_mac = request.dst_mac;
    r.dst_mac = request.src_mac;
    r.id = request.id;
    r.ttl = 64;
    r.frame()
}

fn with_header(request: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = request[..11].to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn queries_are_answered_for_the_whole_cluster_in_the_kernel() {
    let mut bed = bed();
    // i: no password, 0 players, 3 x 100 slots, hostname, empty gamemode and language.
    let mut info = vec![0, 0, 0];
    info.extend_from_slice(&300u16.to_le_bytes());
    for s in ["SA:MP cluster", "", ""] {
        info.extend_from_slice(&(s.len() as u32).to_le_bytes());
        info.extend_from_slice(s.as_bytes());
    }
    let version = format!("samp-cluster-proxy {}", env!("CARGO_PKG_VERSION"));
    let mut rules = vec![1, 0, 5];
    rules.extend_from_slice(b"proxy");
    rules.push(version.len() as u8);
    rules.extend_from_slice(version.as_bytes());
    for (op, body, counter) in [
        (b'i', info, Counter::QueryInfo),
        (b'r', rules, Counter::QueryRules),
        (b'c', vec![0, 0], Counter::QueryClients),
    ] {
        let q = samp_query(op, &[]);
        let p = to_vip(CLIENT, 41000 + op as u16, &q);
        let want = reply_to(&p, with_header(&q, &body));
        check(&bed, &format!("`{}` answered", op as char), &p.frame(), XDP_TX, &want, counter);
        let (_, out) = bed.run(&p.frame());
        assert!(ipv4_checksum_ok(&out) && udp_checksum_ok(&out), "`{}`: checksums", op as char);
    }
    let q = samp_query(b'p', &[9, 8, 7, 6]);
    let p = to_vip(CLIENT, 41100, &q);
    check(&bed, "`p` echoed", &p.frame(), XDP_TX, &reply_to(&p, q.clone()), Counter::QueryPing);

    // Each requester gets its own header back: another address, another port.
    let mut q = samp_query(b'c', &[]);
    q[4..8].copy_from_slice(&[203, 0, 113, 9]);
    let p = to_vip(CLIENT, 41101, &q);
    check(
        &bed,
        "the requester's header echoed",
        &p.frame(),
        XDP_TX,
        &reply_to(&p, with_header(&q, &[0, 0])),
        Counter::QueryClients,
    );

    for (op, counter) in
        [(b'd', Counter::DropQueryUnanswered), (b'o', Counter::DropQueryUnanswered), (b'x', Counter::DropQueryRcon)]
    {
        let p = to_vip(CLIENT, 41200 + op as u16, &samp_query(op, &[0, 0]));
        let p = if op == b'x' { p } else { to_vip(CLIENT, 41200 + op as u16, &samp_query(op, &[])) };
        check(&bed, &format!("`{}` gets nothing", op as char), &p.frame(), XDP_DROP, &p.frame(), counter);
    }
    for (name, q) in [
        ("`i` with a trailing byte", samp_query(b'i', &[0])),
        ("`p` without its 4 bytes", samp_query(b'p', &[])),
        ("unknown opcode", samp_query(b'z', &[])),
    ] {
        let p = to_vip(CLIENT, 41300, &q);
        check(&bed, name, &p.frame(), XDP_DROP, &p.frame(), Counter::DropQueryMalformed);
    }
    // Shorter than a query header: not a query at all (and not a handshake).
    let p = to_vip(CLIENT, 41301, &samp_query(b'i', &[])[..10]);
    check(&bed, "truncated query", &p.frame(), XDP_DROP, &p.frame(), Counter::DropNotHandshake);

    // The per-source budget: 3 a second here; the 4th is dropped, another source is not.
    bed.tables.query_settings.set(0, proxy_common::QuerySettings { per_second: 3, agent_addr: 0 }, 0).unwrap();
    let budgeted = Ipv4Addr::new(198, 18, 60, 3);
    let q = samp_query(b'p', &[1, 2, 3, 4]);
    for n in 0..3 {
        let p = to_vip(budgeted, 42000 + n, &q);
        check(&bed, "within the budget", &p.frame(), XDP_TX, &reply_to(&p, q.clone()), Counter::QueryPing);
    }
    let p = to_vip(budgeted, 42003, &q);
    check(&bed, "past the budget", &p.frame(), XDP_DROP, &p.frame(), Counter::DropQueryBudget);
    let p = to_vip(Ipv4Addr::new(198, 18, 60, 4), 42004, &q);
    check(&bed, "another source has its own budget", &p.frame(), XDP_TX, &reply_to(&p, q.clone()), Counter::QueryPing);

    // An answer too long for any frame goes to the agent's responder: the
    // destination becomes the agent's address on this node, port kept.
    let long = proxy_common::QueryAnswer { len: 3000, flags: proxy_common::QUERY_BY_AGENT, ..Default::default() };
    let slot = proxy_common::QuerySlot::Clients as u32;
    bed.tables.query_answers.set(slot, long, 0).unwrap();
    let q = samp_query(b'c', &[]);
    let p = to_vip(Ipv4Addr::new(198, 18, 60, 5), 42100, &q);
    check(&bed, "no responder: nothing to send", &p.frame(), XDP_DROP, &p.frame(), Counter::DropQueryUnanswered);
    let local = proxy_common::net::addr_to_map(LOCAL.octets());
    bed.tables.query_settings.set(0, proxy_common::QuerySettings { per_second: 3, agent_addr: local }, 0).unwrap();
    let mut to_agent = p.clone();
    to_agent.dst = LOCAL;
    check(&bed, "a long answer is the agent's", &p.frame(), XDP_PASS, &to_agent.frame(), Counter::PassQueryAgent);
}

/// A shard whose process died answers its players' packets with ICMP port
/// unreachable from its own address: dropped before any player sees it, and
/// the agent is told (once per shard per few ms). The agent's own probe,
/// or another proxy node's, gets its refusal; other ICMP is not ours.
#[test]
fn a_shards_icmp_never_reaches_a_player() {
    let mut bed = bed();
    let _ = bed.session_events();
    let refused_at = |client: Ipv4Addr, sport: u16| {
        IcmpError::port_unreachable(SHARD_A, client, &Udp::new(client, sport, SHARD_A, PORT, &game_packet()))
    };
    let dropped = |bed: &Bed, name: &str, f: &[u8]| check(bed, name, f, XDP_DROP, f, Counter::DropShardIcmp);
    let passed = |bed: &Bed, name: &str, f: &[u8], c: Counter| check(bed, name, f, XDP_PASS, f, c);

    dropped(&bed, "port unreachable from a shard to its player", &refused_at(CLIENT, 40000).frame());
    let events = bed.session_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(
        (e.kind, e.key, e.group),
        (proxy_common::SESSION_SHARD_REFUSED, key(CLIENT, 40000), 1),
        "backend 1 is shard A; the key names the player"
    );
    // A dying shard refuses every packet: the ring hears of it once per
    // SHARD_REFUSED_GAP_NS, however many arrive (50 runs take microseconds).
    let before = bed.counter(Counter::DropShardIcmp);
    let (verdict, _, _) = bed.run_prog(bed.dp.program(), &refused_at(CLIENT, 40001).frame(), 50);
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(bed.counter(Counter::DropShardIcmp), before + 50);
    assert!(bed.session_events().len() <= 1, "one event per shard per gap");
    std::thread::sleep(std::time::Duration::from_nanos(2 * proxy_common::SHARD_REFUSED_GAP_NS));
    dropped(&bed, "a refusal after the gap", &refused_at(CLIENT_NO_NEIGH, 40002).frame());
    assert_eq!(bed.session_events().len(), 1, "a new gap, a new event");

    // Not a refusal, or not from the shard itself: dropped all the same
    // (each names the shard's address), no event (past the gap, so the
    // gap is not what holds it back).
    std::thread::sleep(std::time::Duration::from_nanos(2 * proxy_common::SHARD_REFUSED_GAP_NS));
    let about_a = Udp::new(CLIENT, 40003, SHARD_A, PORT, &game_packet());
    let unreachable = IcmpError::about(Ipv4Addr::new(198, 18, 50, 77), CLIENT, 3, 1, &about_a);
    dropped(&bed, "a router's host unreachable about a packet to a shard", &unreachable.frame());
    let frag_needed = IcmpError::about(SHARD_A, CLIENT, 3, 4, &about_a);
    dropped(&bed, "fragmentation needed from a shard", &frag_needed.frame());
    assert!(bed.session_events().is_empty(), "only the shard's own port unreachable is news");
    // The shard's refusals, whatever their headers carry.
    let mut short_quote = refused_at(CLIENT, 40004);
    short_quote.quoted.truncate(IP_LEN + 8);
    dropped(&bed, "a quote cut after the UDP header, as RFC 792 allows", &short_quote.frame());
    let mut options = refused_at(CLIENT, 40005);
    options.options = vec![1, 1, 1, 0];
    dropped(&bed, "outer IPv4 options", &options.frame());
    let mut inner_options = refused_at(CLIENT, 40006);
    inner_options.quoted[0] = 0x46;
    inner_options.quoted.splice(IP_LEN..IP_LEN, [1, 1, 1, 0]);
    dropped(&bed, "quoted IPv4 options", &inner_options.frame());
    let refusals = bed.session_events();
    assert!(refusals.iter().all(|e| (e.kind, e.group) == (proxy_common::SESSION_SHARD_REFUSED, 1)), "{refusals:?}");
    // Past the gap again: no event below is held back by it.
    std::thread::sleep(std::time::Duration::from_nanos(2 * proxy_common::SHARD_REFUSED_GAP_NS));

    // The agent's probe on this node (the FIB says local), or another
    // proxy node's (PEERS), must see the refusal: passed untouched.
    let probe = Udp::new(Ipv4Addr::new(198, 18, 50, 1), 50100, SHARD_A, PORT, b"SAMPxxxxxxp1234");
    let to_prober = IcmpError::port_unreachable(SHARD_A, probe.src, &probe);
    passed(&bed, "the agent's own probe refused", &to_prober.frame(), Counter::PassReplyLocal);
    passed(&bed, "refused, to this node's other address", &refused_at(LOCAL, 50101).frame(), Counter::PassReplyLocal);
    let peer = Ipv4Addr::new(198, 18, 60, 5);
    bed.tables.peers.insert(proxy_common::net::addr_to_map(peer.octets()), 1, 0).unwrap();
    bed.peers_in_use();
    passed(&bed, "an ingress node's probe refused", &refused_at(peer, 50102).frame(), Counter::PassReplyLocal);
    assert!(bed.session_events().is_empty(), "the prober sees its own refusal");

    // Not ours: ICMP about anything but a packet to a shard's game port.
    let stranger = Ipv4Addr::new(198, 18, 60, 7);
    let elsewhere = Udp::new(CLIENT, 40007, Ipv4Addr::new(198, 18, 99, 9), 9999, &[1, 2, 3]);
    let f = IcmpError::port_unreachable(stranger, CLIENT, &elsewhere).frame();
    passed(&bed, "ICMP from a stranger about a stranger", &f, Counter::PassNotUdp);
    let other_port = Udp::new(CLIENT, 40008, SHARD_A, 3306, &[1, 2, 3]);
    let f = IcmpError::port_unreachable(SHARD_A, CLIENT, &other_port).frame();
    passed(&bed, "a shard's refusal of another port", &f, Counter::PassNotUdp);
    let mut echo_reply = refused_at(CLIENT, 40009);
    echo_reply.kind = 0;
    echo_reply.code = 0;
    passed(&bed, "an echo reply from a shard", &echo_reply.frame(), Counter::PassNotUdp);
    let mut cut = refused_at(CLIENT, 40010);
    cut.quoted.truncate(IP_LEN + 2);
    passed(&bed, "a quote too short to name a port", &cut.frame(), Counter::PassNotUdp);
    let mut tcp = refused_at(CLIENT, 40011);
    tcp.quoted[9] = 6;
    passed(&bed, "about TCP", &tcp.frame(), Counter::PassNotUdp);
    let mut foreign_options = IcmpError::port_unreachable(stranger, CLIENT, &elsewhere);
    foreign_options.options = vec![1, 1, 1, 0];
    passed(&bed, "not ours, with options", &foreign_options.frame(), Counter::PassIpOptions);
    assert!(bed.session_events().is_empty());
    let _ = &mut bed;
}

/// The egress guard (TC): when a shard's host is lost, this node's own
/// kernel answers the players' packets the data plane passed up with ICMP
/// host unreachable, from the node's address but quoting the packet to the
/// shard. Dropped on the way out and counted, whatever its headers carry;
/// ICMP to a shard or to another proxy node, ICMP about anything else and
/// every other packet leave untouched and uncounted.
#[test]
fn the_nodes_own_icmp_never_names_a_shard_to_a_player() {
    let mut bed = bed();
    let guard = |bed: &Bed, name: &str, f: &[u8], want: u32| {
        let (shot, passed) = (
            bed.counter(Counter::DropEgressShardIcmp),
            [Counter::PassNotUdp, Counter::PassReplyLocal, Counter::DropShardIcmp].map(|c| bed.counter(c)),
        );
        let (verdict, out, _) = bed.run_guard(f, 1);
        assert_eq!(verdict, want, "{name}: verdict");
        assert_eq!(hex(&out), hex(f), "{name}: the guard never changes a packet");
        let counted = u64::from(want == TC_ACT_SHOT);
        assert_eq!(bed.counter(Counter::DropEgressShardIcmp), shot + counted, "{name}: drop_egress_shard_icmp");
        let others = [Counter::PassNotUdp, Counter::PassReplyLocal, Counter::DropShardIcmp].map(|c| bed.counter(c));
        assert_eq!(others, passed, "{name}: the guard counts nothing else");
    };
    let about = |client: Ipv4Addr, sport: u16| Udp::new(client, sport, SHARD_A, PORT, &game_packet());
    let host_unreachable = |dst: Ipv4Addr, sport: u16| {
        IcmpError::about(LOCAL, dst, 3, 1, &about(CLIENT, sport)) // from this node's own address
    };

    guard(
        &bed,
        "host unreachable to a player about its packet to a shard",
        &host_unreachable(CLIENT, 41000).frame(),
        TC_ACT_SHOT,
    );
    let mut short = host_unreachable(CLIENT, 41001);
    short.quoted.truncate(IP_LEN + 8);
    guard(&bed, "a quote cut after the UDP header", &short.frame(), TC_ACT_SHOT);
    let mut options = host_unreachable(CLIENT, 41002);
    options.options = vec![1, 1, 1, 0];
    guard(&bed, "outer IPv4 options", &options.frame(), TC_ACT_SHOT);
    let mut inner_options = host_unreachable(CLIENT, 41003);
    inner_options.quoted[0] = 0x46;
    inner_options.quoted.splice(IP_LEN..IP_LEN, [1, 1, 1, 0]);
    guard(&bed, "quoted IPv4 options", &inner_options.frame(), TC_ACT_SHOT);
    let frag_needed = IcmpError::about(LOCAL, CLIENT, 3, 4, &about(CLIENT, 41004));
    guard(&bed, "fragmentation needed", &frag_needed.frame(), TC_ACT_SHOT);
    let time_exceeded = IcmpError::about(LOCAL, CLIENT_NO_NEIGH, 11, 0, &about(CLIENT_NO_NEIGH, 41005));
    guard(&bed, "time exceeded", &time_exceeded.frame(), TC_ACT_SHOT);
    let shard_own = IcmpError::port_unreachable(SHARD_A, CLIENT, &about(CLIENT, 41006));
    guard(&bed, "a shard's own refusal the kernel forwards", &shard_own.frame(), TC_ACT_SHOT);
    // The kernel's ICMP is rate limited per destination; a burst of them
    // is dropped one by one.
    let before = bed.counter(Counter::DropEgressShardIcmp);
    let (verdict, _, _) = bed.run_guard(&host_unreachable(CLIENT, 41007).frame(), 50);
    assert_eq!((verdict, bed.counter(Counter::DropEgressShardIcmp)), (TC_ACT_SHOT, before + 50));

    // ICMP to a shard (about its own traffic, or another's) names nothing
    // it does not know; another proxy node's probe must see its answer.
    guard(&bed, "to a shard", &host_unreachable(SHARD_B, 41008).frame(), TC_ACT_UNSPEC);
    let peer = Ipv4Addr::new(198, 18, 60, 5);
    guard(&bed, "to a proxy node not yet in PEERS", &host_unreachable(peer, 41009).frame(), TC_ACT_SHOT);
    bed.tables.peers.insert(proxy_common::net::addr_to_map(peer.octets()), 1, 0).unwrap();
    bed.peers_in_use();
    guard(&bed, "to another proxy node (PEERS)", &host_unreachable(peer, 41010).frame(), TC_ACT_UNSPEC);

    // ICMP about anything but a packet to a shard's game port.
    let own_refusal = Udp::new(CLIENT, 41011, LOCAL, 9, b"anyone?");
    let f = IcmpError::port_unreachable(LOCAL, CLIENT, &own_refusal).frame();
    guard(&bed, "this node's refusal of its own closed port", &f, TC_ACT_UNSPEC);
    let other_port = Udp::new(CLIENT, 41012, SHARD_A, 3306, &[1, 2, 3]);
    guard(
        &bed,
        "about a shard's other port",
        &IcmpError::about(LOCAL, CLIENT, 3, 1, &other_port).frame(),
        TC_ACT_UNSPEC,
    );
    let from_shard = Udp::new(SHARD_A, PORT, CLIENT, 41013, &game_packet());
    guard(&bed, "about a shard's reply", &IcmpError::about(LOCAL, SHARD_A, 3, 1, &from_shard).frame(), TC_ACT_UNSPEC);
    let mut cut = host_unreachable(CLIENT, 41014);
    cut.quoted.truncate(IP_LEN + 2);
    guard(&bed, "a quote too short to name a port", &cut.frame(), TC_ACT_UNSPEC);
    let mut echo_reply = host_unreachable(CLIENT, 41015);
    (echo_reply.kind, echo_reply.code) = (0, 0);
    guard(&bed, "an echo reply", &echo_reply.frame(), TC_ACT_UNSPEC);
    let mut tcp = host_unreachable(CLIENT, 41016);
    tcp.quoted[9] = 6;
    guard(&bed, "about TCP", &tcp.frame(), TC_ACT_UNSPEC);
    let mut later = host_unreachable(CLIENT, 41017).frame();
    later[ETH_LEN + 6..ETH_LEN + 8].copy_from_slice(&[0x00, 0x10]);
    guard(&bed, "a later fragment of an ICMP error", &later, TC_ACT_UNSPEC);

    // Not ICMP: what the kernel forwards for the data plane, and the rest.
    let reply = Udp::new(VIP, PORT, CLIENT, 41018, &game_packet()).frame();
    guard(&bed, "a shard's rewritten reply the kernel forwards", &reply, TC_ACT_UNSPEC);
    let to_shard = about(CLIENT, 41019).frame();
    guard(&bed, "a player's packet the kernel forwards to its shard", &to_shard, TC_ACT_UNSPEC);
    let mut arp = to_shard.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    guard(&bed, "ARP", &arp, TC_ACT_UNSPEC);
    // (The kernel's test run refuses an IPv4 frame shorter than its header.)
    let runt = host_unreachable(CLIENT, 41020).frame();
    guard(&bed, "ICMP cut inside its header", &runt[..ETH_LEN + IP_LEN + 4], TC_ACT_UNSPEC);

    // What the guard costs a packet that is not ICMP, and one it drops.
    let (_, _, udp_ns) = bed.run_guard(&reply, 100_000);
    let (_, _, icmp_ns) = bed.run_guard(&host_unreachable(CLIENT, 41021).frame(), 100_000);
    println!("egress guard (BPF_PROG_TEST_RUN, skb): UDP passed {udp_ns} ns, ICMP naming a shard dropped {icmp_ns} ns");
    let _ = &mut bed;
}
