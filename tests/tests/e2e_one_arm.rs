//! A one-armed proxy node (one NIC, as most cloud nodes): players and the
//! shard are reached through the same interface, so the data plane sends
//! every packet back out with XDP_TX instead of a redirect. End to end on
//! real namespaces (`tests::one_arm`): the real agent, real XDP on a veth,
//! real UDP through a bridge.

use std::{collections::HashSet, time::Duration};

use proxy_common::Counter;
use tests::{
    agent::Agent,
    icmp_capture::IcmpCapture,
    one_arm::{OneArm, SHARD_IP},
    scenario::wait_for,
    sim::{
        player,
        shard::{self, ShardConfig},
    },
};

const PLAYERS: usize = 20;

#[test]
fn a_one_armed_node_sends_both_ways_back_out_with_xdp_tx() {
    let arm = OneArm::build().expect("one-armed topology");
    let mut shard =
        shard::spawn(arm.shard_socket().unwrap(), ShardConfig { name: "s1".into(), max_players: 100, seed: 7 });
    let mut icmp = IcmpCapture::start(&arm.client);
    let agent = Agent::start(&arm.proxy, &arm.config(100)).expect("agent");

    let tables = agent.tables().unwrap();
    let stats = player::play_until(arm.player_sockets(PLAYERS).unwrap(), arm.vip(), 50, |players| {
        // The shard's host stops answering ARP for a while and the proxy
        // forgets its neighbours: once the next-hop caches expire (0.5 s)
        // the data plane passes the players' packets up while the kernel
        // tries to resolve the shard, and the kernel, forwarding them out of
        // the interface they came in on, sends the players ICMP redirects
        // quoting them (the shard's address), then host unreachables. The
        // egress guard must drop every one.
        let redirects_before = icmp_out_redirects(&arm);
        arm.shard.ip(&["link", "set", "eth0", "arp", "off"]).unwrap();
        arm.proxy.ip(&["neigh", "flush", "dev", "arm0"]).unwrap();
        wait_for("the kernel to send players ICMP redirects about the shard", Duration::from_secs(20), || {
            icmp_out_redirects(&arm) > redirects_before && tables.counter(Counter::DropEgressShardIcmp).unwrap() > 0
        });
        arm.shard.ip(&["link", "set", "eth0", "arp", "on"]).unwrap();
        let received: Vec<u64> = players.snapshot().iter().map(|p| p.received).collect();
        wait_for("20 more echoes per player", Duration::from_secs(60), || {
            players.snapshot().iter().zip(&received).all(|(p, before)| p.received >= before + 20)
        });
    });
    shard.stop();
    let seen_by_shard = shard.stats();

    // Play went through the proxy, both ways, as on any node.
    for p in &stats {
        assert_eq!(p.connects, 1, "player {} reconnected", p.local);
        assert_eq!(p.wrong_source, 0, "player {} got datagrams not from the VIP", p.local);
        assert_eq!(p.wrong_seen, 0, "the shard saw another address for {}", p.local);
    }
    let addrs: HashSet<&str> = stats.iter().map(|p| p.local.as_str()).collect();
    assert_eq!(seen_by_shard.clients.keys().map(String::as_str).collect::<HashSet<_>>(), addrs);

    // And it went back out of the interface it came in on, with XDP_TX:
    // veth counts every such frame, and they are all the data plane sent on.
    let sent_on = tables.counter(Counter::IngressRedirect).unwrap() + tables.counter(Counter::ReturnRedirect).unwrap();
    let xdp_tx = arm.xdp_tx_frames().unwrap();
    println!("one arm: {sent_on} packets sent on by the data plane, {xdp_tx} XDP_TX frames on arm0");
    assert!(sent_on >= (PLAYERS * 50 * 2) as u64, "{sent_on} packets sent on");
    assert_eq!(xdp_tx, sent_on, "every packet sent on left with XDP_TX");

    // None of the kernel's ICMP about the shard reached the player.
    let seen = icmp.stop();
    let leaks = IcmpCapture::naming(&seen, &[SHARD_IP]);
    println!(
        "one arm: {} ICMP messages at the client, {} dropped by the egress guard",
        seen.len(),
        tables.counter(Counter::DropEgressShardIcmp).unwrap()
    );
    assert!(leaks.is_empty(), "ICMP naming the shard reached the player: {leaks:?}");
}

/// `Icmp: OutRedirects` of the proxy's namespace (/proc/net/snmp).
fn icmp_out_redirects(arm: &OneArm) -> u64 {
    let snmp = arm.proxy.exec("cat", &["/proc/net/snmp"]).unwrap();
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp: "));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    let at = names.split_whitespace().position(|n| n == "OutRedirects").expect("an OutRedirects column");
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}
