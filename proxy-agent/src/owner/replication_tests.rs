//! Two owners over in-memory maps, their peer links played by hand: what
//! one node's changes become in the other's maps, whatever ids each gives
//! its shards and groups.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use proxy_common::{
    net::{addr_to_map, port_to_map},
    SessionKey,
};
use tokio::sync::broadcast;

use super::{
    tests::{bed_with, Bed},
    Msg, PeerLinks,
};
use crate::{
    control::protocol::Request,
    peers::{Batch, Board, Outbox, Record},
};

const A: &str = "
interfaces: [lo]
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - {name: s1, address: 198.18.50.1, capacity: 10}
  - {name: s2, address: 198.18.50.2, capacity: 20}
  - {name: s3, address: 198.18.50.3, capacity: 30, role: standby}
";

/// The same shards in another order: other backend and group ids.
const B: &str = "
interfaces: [lo]
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - {name: s3, address: 198.18.50.3, capacity: 30, role: standby}
  - {name: s2, address: 198.18.50.2, capacity: 20}
  - {name: s1, address: 198.18.50.1, capacity: 10}
";

struct Node {
    bed: Bed,
    sent: broadcast::Receiver<Arc<Batch>>,
}

fn node(name: &str, yaml: &str) -> Node {
    let outbox = Outbox::new();
    let sent = outbox.subscribe();
    let board = Arc::new(Board::new(Duration::from_secs(5), &[]));
    let links = PeerLinks { node: name.into(), outbox, board, join_timeout: Duration::from_secs(5) };
    Node { bed: bed_with(yaml, Some(links)), sent }
}

impl Node {
    /// Everything this node queued for its peers so far.
    fn sent(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        while let Ok(b) = self.sent.try_recv() {
            out.extend(b.records.iter().cloned());
        }
        out
    }

    fn hear(&mut self, from: &str, records: Vec<Record>) {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        self.bed.owner.handle(Msg::PeerRecords(from.into(), records, tx));
    }

    /// The shard the player's session points at here, and whether it is moving.
    fn route(&self, client: Ipv4Addr) -> Option<(String, bool)> {
        let c = &self.bed.owner.cluster;
        let key = SessionKey { client_addr: addr_to_map(client.octets()), client_port: port_to_map(5000), frontend: 0 };
        let s = self.bed.maps.session(false, &key)?;
        let g = c.group(s.group);
        let shard = c.ids.iter().position(|id| id.backend == g.backend)?;
        Some((c.cfg.shards[shard].name.clone(), g.epoch != s.epoch))
    }
}

fn player(i: usize, k: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, i as u8, k)
}

#[test]
fn a_snapshot_gives_the_joiner_every_player_on_the_same_shard() {
    let (mut a, mut b) = (node("a", A), node("b", B));
    a.bed.seat("s1", 4);
    a.bed.seat("s2", 3);
    let snapshot = a.bed.owner.peer_snapshot();
    assert_eq!(snapshot.len(), 7);
    b.hear("a", snapshot);
    for k in 1..=4 {
        assert_eq!(b.route(player(0, k)), Some(("s1".into(), false)), "player {k} of s1");
    }
    for k in 1..=3 {
        assert_eq!(b.route(player(1, k)), Some(("s2".into(), false)));
    }
    assert_eq!(b.bed.players_on("s1"), 4, "the joiner's index counts them too");
    let view = b.bed.owner.peers_view().unwrap();
    assert_eq!(view.records_applied, 7);
}

#[test]
fn a_chosen_player_moved_on_one_node_is_moving_on_the_other() {
    let (mut a, mut b) = (node("a", A), node("b", B));
    a.bed.seat("s1", 2);
    b.hear("a", a.bed.owner.peer_snapshot());
    a.sent();
    let moved = Request::Migrate { clients: vec![format!("{}:5000", player(0, 1))], from: None, to: "s2".into() };
    a.bed.owner.control(moved).unwrap();
    a.bed.owner.share_model_changes();
    let records = a.sent();
    assert_eq!(records.len(), 1, "{records:?}");
    b.hear("a", records);
    assert_eq!(b.route(player(0, 1)), Some(("s2".into(), true)), "moving to s2 until it handshakes again");
    assert_eq!(b.route(player(0, 2)), Some(("s1".into(), false)), "its neighbour stays");
}

#[test]
fn the_newer_record_wins_in_any_order_of_arrival() {
    let (mut a, mut b) = (node("a", A), node("b", B));
    a.bed.seat("s1", 1);
    let old = a.bed.owner.peer_snapshot(); // unstamped: the oldest there is
    a.bed
        .owner
        .control(Request::Migrate { clients: vec![format!("{}:5000", player(0, 1))], from: None, to: "s2".into() })
        .unwrap();
    a.bed.owner.share_model_changes();
    let new = a.sent();
    b.hear("a", new);
    b.hear("a", old);
    assert_eq!(b.route(player(0, 1)), Some(("s2".into(), true)), "the late, older record changed nothing");
    assert_eq!(b.bed.owner.peers_view().unwrap().records_stale, 1);
}

#[test]
fn a_failover_applied_on_both_keeps_the_group_together_and_a_rehandshake_settles_it() {
    let (mut a, mut b) = (node("a", A), node("b", B));
    a.bed.seat("s1", 3);
    b.hear("a", a.bed.owner.peer_snapshot());
    a.bed.crash("s1");
    b.bed.crash("s1");
    for k in 1..=3 {
        assert_eq!(a.route(player(0, k)), Some(("s3".into(), true)));
        assert_eq!(b.route(player(0, k)), Some(("s3".into(), true)), "b moved the same group to the same standby");
    }
    // Player 1 handshakes again through a: a says it plays on s3 now.
    let (key, resynced) = {
        let c = &a.bed.owner.cluster;
        let key =
            c.key_of("198.18.100.1:7777".parse().unwrap(), format!("{}:5000", player(0, 1)).parse().unwrap()).unwrap();
        let mut s = c.index.get(&key).unwrap().session();
        s.epoch = c.group(s.group).epoch;
        (key, s)
    };
    a.bed.maps.insert_session(false, key, resynced).unwrap();
    a.bed.owner.cluster.index.set(key, resynced, false);
    a.bed.owner.share_sessions([key]);
    b.hear("a", a.sent());
    assert_eq!(b.route(player(0, 1)), Some(("s3".into(), false)), "settled on b too");
    assert_eq!(b.route(player(0, 2)), Some(("s3".into(), true)));
}

#[test]
fn records_naming_what_this_node_lacks_are_counted_not_written() {
    let (mut a, mut b) = (
        node("a", A),
        node(
            "b",
            "
interfaces: [lo]
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - {name: s2, address: 198.18.50.2, capacity: 20}
",
        ),
    );
    a.bed.seat("s1", 2);
    b.hear("a", a.bed.owner.peer_snapshot());
    let view = b.bed.owner.peers_view().unwrap();
    assert_eq!((view.records_applied, view.records_unroutable), (0, 2));
    assert_eq!(b.route(player(0, 1)), None);
}

/// Node `n`'s placement table with each slot named by its shard.
fn placement_by_name(n: &Node) -> Vec<String> {
    let c = &n.bed.owner.cluster;
    n.bed
        .maps
        .placement_row(c.frontend_ids[0])
        .iter()
        .map(|&g| {
            let backend = c.group(g).backend;
            c.ids.iter().position(|id| id.backend == backend).map_or("-".into(), |i| c.cfg.shards[i].name.clone())
        })
        .collect()
}

#[test]
fn nodes_that_list_shards_in_another_order_place_newcomers_alike() {
    let with_peers = |y: &str| format!("node_secret: 0123456789abcdef\npeers:\n  listen: 198.18.1.2:7101\n{y}");
    let (mut a, mut b) = (node("a", &with_peers(A)), node("b", &with_peers(B)));
    a.bed.seat("s1", 3);
    b.hear("a", a.bed.owner.peer_snapshot());
    for n in [&mut a, &mut b] {
        for s in ["s1", "s2", "s3"] {
            n.bed.answered(s, 40);
        }
    }
    let (ta, tb) = (placement_by_name(&a), placement_by_name(&b));
    assert!(ta.iter().any(|s| s == "s1") && ta.iter().any(|s| s == "s2"), "both actives take newcomers");
    assert_eq!(ta, tb, "the same slot sends a newcomer to the same shard on both nodes");
}

#[test]
fn a_peer_record_of_a_player_held_here_counts_as_a_sign_of_life() {
    // A node back from a restart holds its players from its pins, with the
    // last-packet times of before; its peer's snapshot (unchanged or older
    // for it) must keep them from its first idle scan (found by the soak,
    // issue 23).
    let (mut a, mut b) = (node("a", A), node("b", B));
    a.bed.seat("s1", 2);
    b.hear("a", a.bed.owner.peer_snapshot());
    b.bed.owner.cluster.peer_seen.clear();
    b.hear("a", a.bed.owner.peer_snapshot());
    assert_eq!(b.bed.owner.peers_view().unwrap().records_stale, 2);
    assert_eq!(b.bed.owner.cluster.peer_seen.len(), 2, "both players count as seen by a peer");
}
