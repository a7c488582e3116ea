//! The cluster model over in-memory maps (`FakeMaps`, `FaultyMaps`): start,
//! moves, the failover policy, rollbacks and reloads, without root.

use std::net::Ipv4Addr;

use proxy_common::{
    maps::{GROUPS, PENDING, QUERY_ANSWERS, REVERSE, SESSIONS, SESSION_CACHE_GENERATION},
    net::{addr_to_map, port_to_map},
    Counter, Group, Session, SessionKey,
};

use super::{ClientSelector, Cluster};
use crate::{
    config::{self, Validated},
    control::error::ControlError,
    dataplane::{
        fake_maps::{Dump, FakeMaps, Fault, FaultyMaps},
        map_writer::MapWriter,
    },
    health::Health,
};

/// s1 (10 slots) and s2 (20) active, s3 (30) a standby.
const CONFIG: &str = "
interfaces: [lo]
handshake_rate: 100
handshake_burst: 10
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - name: s1
    address: 198.18.50.1
    capacity: 10
  - name: s2
    address: 198.18.50.2
    capacity: 20
  - name: s3
    address: 198.18.50.3
    capacity: 30
    role: standby
";

/// Three active shards of 10, 20 and 15 slots, no standby.
const NO_STANDBY: &str = "
interfaces: [lo]
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - name: s1
    address: 198.18.50.1
    capacity: 10
  - name: s2
    address: 198.18.50.2
    capacity: 20
  - name: s4
    address: 198.18.50.4
    capacity: 15
";

fn parse(yaml: &str) -> Validated {
    config::parse("test", yaml).expect("a valid test config")
}

fn start(yaml: &str) -> (Cluster, FakeMaps) {
    let maps = FakeMaps::new();
    let cluster = Cluster::start(parse(yaml), maps.clone()).expect("start over fake maps");
    (cluster, maps)
}

fn start_faulty(yaml: &str) -> (Cluster, FaultyMaps) {
    let maps = FaultyMaps::default();
    let cluster = Cluster::start(parse(yaml), maps.clone()).expect("start over faulty maps");
    (cluster, maps)
}

fn key(client: Ipv4Addr, port: u16) -> SessionKey {
    SessionKey { client_addr: addr_to_map(client.octets()), client_port: port_to_map(port), frontend: 0 }
}

fn player(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

/// Puts players on shard `i` as the data plane would (in its home group,
/// at the group's epoch), then lets the cluster index them.
fn seat(cluster: &mut Cluster, maps: &FakeMaps, i: usize, pending: bool, players: &[(Ipv4Addr, u16)]) {
    let group = cluster.ids[i].home_group;
    let epoch = cluster.group(group).epoch;
    for &(ip, port) in players {
        let session = Session { group, epoch, last_seen_ns: super::now_ns() };
        maps.insert_session(pending, key(ip, port), session).expect("room in the fake table");
    }
    cluster.rescan().expect("a rescan of fake maps");
}

/// `n` established players on shard `i`, from 10.0.<i>.<k>.
fn fill(cluster: &mut Cluster, maps: &FakeMaps, i: usize, n: u8) {
    let players: Vec<_> = (1..=n).map(|k| (Ipv4Addr::new(10, 0, 100 + i as u8, k), 5000)).collect();
    seat(cluster, maps, i, false, &players);
}

fn down(cluster: &mut Cluster, name: &str) {
    cluster.health.insert(name.into(), Health { up: false, ..Health::default() });
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// A dump without the session cache's generation, which a write that was
/// rolled back still bumped (voiding the cache is always safe).
fn routing(dump: Dump) -> Dump {
    dump.without(&[SESSION_CACHE_GENERATION])
}

#[test]
fn start_fills_frontends_backends_groups_and_placement() {
    let (_, maps) = start(CONFIG);
    let dump = maps.dump();
    assert_eq!(dump.map("FRONTENDS"), lines("198.18.100.1:7777 id 0"));
    assert_eq!(dump.map("PORTS"), lines("7777 vip 198.18.100.1 frontend 0 flags 1"));
    assert_eq!(dump.map("BACKENDS"), lines("[1] 198.18.50.1\n[2] 198.18.50.2\n[3] 198.18.50.3"));
    assert_eq!(
        dump.map("REVERSE"),
        lines(
            "198.18.50.1 -> 198.18.100.1:7777 frontend 0 backend 1
             198.18.50.2 -> 198.18.100.1:7777 frontend 0 backend 2
             198.18.50.3 -> 198.18.100.1:7777 frontend 0 backend 3"
        )
    );
    // Each shard's home group is its backend id, pointing at it.
    assert_eq!(dump.map("GROUPS"), lines("[1] backend 1 epoch 1\n[2] backend 2 epoch 1\n[3] backend 3 epoch 1"));
    assert_eq!(
        dump.map("SHARD_STATE"),
        lines("[1] home_group 1 flags 0\n[2] home_group 2 flags 0\n[3] home_group 3 flags 0")
    );
    // 100 handshakes a second, 10 at once.
    let meter = "interval_ns 10000000 tolerance_ns 90000000 tat_ns 0";
    assert_eq!(dump.map("METER"), lines(&format!("[1] {meter}\n[2] {meter}\n[3] {meter}")));
    // Placement by free slots (10 : 20 of 4093); the standby gets none.
    assert_eq!(dump.map("PLACEMENT"), lines("row 0: group 1 x 1364, group 2 x 2729"));
    // Info and rules answered by the data plane, clients too (no players);
    // `d` and `o` never.
    let answers: Vec<&str> = dump.map("QUERY_ANSWERS").iter().map(|l| &l[..3]).collect();
    assert_eq!(answers, ["[0]", "[1]", "[2]"]);
    assert!(dump.map(SESSIONS).is_empty() && dump.map(PENDING).is_empty());
}

#[test]
fn a_restart_over_the_same_maps_keeps_every_id_and_writes_nothing_new() {
    let (mut first, maps) = start(CONFIG);
    fill(&mut first, &maps, 0, 3);
    first.migrate_shard("s1", "s2").unwrap();
    // The answers are rebuilt after each health round, not after a move:
    // the first agent's still say 0 players, the second's say 3.
    let before = maps.dump().without(&[QUERY_ANSWERS]);
    drop(first);
    let second = Cluster::start(parse(CONFIG), maps.clone()).unwrap();
    assert_eq!(maps.dump().without(&[QUERY_ANSWERS]), before, "a restart changed the maps");
    // s1 kept the fresh home group its move gave it.
    assert_eq!(second.ids[0].home_group, 4);
    assert_eq!(second.loads()[&2].established, 3);
    assert_eq!(second.loads()[&2].moving, 3);
}

#[test]
fn start_indexes_both_tables_across_chunks_and_counts_a_promotion_once() {
    let (first, maps) = start(CONFIG);
    drop(first);
    // Sessions the data plane wrote while no agent ran, in s1's home group.
    let s = Session { group: 1, epoch: 1, last_seen_ns: 0 };
    for k in 1..=7 {
        maps.insert_session(false, key(player(k), 5000), s).unwrap();
    }
    maps.insert_session(true, key(player(1), 5000), s).unwrap(); // promotion leftover
    maps.insert_session(true, key(player(8), 5000), s).unwrap();
    let cluster = Cluster::start(parse(CONFIG), maps.clone()).unwrap();
    assert_eq!(cluster.index.len(), 8);
    let load = cluster.loads()[&1];
    assert_eq!((load.established, load.pending, load.moving), (7, 1, 0));
    // Seven players on s1 leave it 3 slots: placement follows.
    assert_eq!(maps.dump().map("PLACEMENT"), lines("row 0: group 1 x 534, group 2 x 3559"));
}

#[test]
fn migrate_shard_repoints_the_group_with_one_write_and_leaves_the_sessions() {
    let (mut cluster, maps) = start(CONFIG);
    fill(&mut cluster, &maps, 0, 3);
    let sessions_before = maps.dump().map(SESSIONS).to_vec();
    let report = cluster.migrate_shard("s1", "s2").unwrap();
    assert_eq!((report.to.as_str(), report.moved, report.groups.as_slice()), ("s2", 3, &[1][..]));
    let dump = maps.dump();
    // Group 1 now points at s2 with a new epoch (its players re-handshake);
    // s1 gets a fresh home group 4.
    assert_eq!(
        dump.map("GROUPS"),
        lines("[1] backend 2 epoch 2\n[2] backend 2 epoch 1\n[3] backend 3 epoch 1\n[4] backend 1 epoch 1")
    );
    assert_eq!(dump.map("SHARD_STATE")[0], "[1] home_group 4 flags 0");
    assert_eq!(dump.map(SESSIONS), sessions_before, "a group move rewrites no session");
    let on_s2 = cluster.loads()[&2];
    assert_eq!((on_s2.established, on_s2.moving), (3, 3));
    // s1 is empty again (10 free); s2 has 17 free of 20 (moving players count).
    assert_eq!(dump.map("PLACEMENT"), lines("row 0: group 2 x 2577, group 4 x 1516"));
}

#[test]
fn migrate_shard_without_room_moves_nothing() {
    let (mut cluster, maps) = start(CONFIG);
    fill(&mut cluster, &maps, 1, 15);
    fill(&mut cluster, &maps, 0, 6);
    let before = maps.dump();
    let err = cluster.migrate_shard("s2", "s1").unwrap_err();
    assert!(matches!(err, ControlError::NoRoomForGroup { free: 4, players: 15, .. }), "{err}");
    assert_eq!(maps.dump(), before);
}

#[test]
fn migrate_clients_rewrites_only_the_chosen_sessions_in_both_tables() {
    let (mut cluster, maps) = start(CONFIG);
    seat(&mut cluster, &maps, 0, false, &[(player(1), 1000), (player(2), 1000)]);
    seat(&mut cluster, &maps, 0, true, &[(player(1), 1001)]);
    let generation = maps.session_cache_generation();
    let chosen: ClientSelector = "10.0.0.1".parse().unwrap();
    let report = cluster.migrate_clients(&[chosen], "s2").unwrap();
    assert_eq!((report.moved, report.already_there), (2, 0));
    assert_eq!(report.clients_from.len(), 1);
    assert_eq!(report.clients_from[0].0, "s1");
    // Into s2's home group with an epoch that is not the group's: moving.
    let moving = u32::MAX - 1; // !epoch, epoch 1
    let dump = maps.dump();
    assert_eq!(
        dump.map(SESSIONS),
        lines(&format!("10.0.0.1:1000 frontend 0 group 2 epoch {moving}\n10.0.0.2:1000 frontend 0 group 1 epoch 1"))
    );
    assert_eq!(dump.map(PENDING), lines(&format!("10.0.0.1:1001 frontend 0 group 2 epoch {moving}")));
    assert!(maps.session_cache_generation() > generation, "the session cache was not voided");
    let (s1, s2) = (cluster.loads()[&1], cluster.loads()[&2]);
    assert_eq!((s1.established, s2.established, s2.pending, s2.moving), (1, 1, 1, 2));
}

#[test]
fn migrate_clients_of_an_unknown_client_moves_nobody() {
    let (mut cluster, maps) = start(CONFIG);
    seat(&mut cluster, &maps, 0, false, &[(player(1), 1000)]);
    let before = maps.dump();
    let sel: Vec<ClientSelector> = vec!["10.0.0.1".parse().unwrap(), "10.9.9.9:1".parse().unwrap()];
    let err = cluster.migrate_clients(&sel, "s2").unwrap_err();
    assert!(matches!(err, ControlError::NoSession(ref c) if c == "10.9.9.9:1"), "{err}");
    assert_eq!(maps.dump(), before);
}

#[test]
fn failover_goes_to_a_listed_standby_first() {
    let (mut cluster, maps) = start(CONFIG);
    fill(&mut cluster, &maps, 0, 5);
    down(&mut cluster, "s1");
    let report = cluster.failover(0, None).unwrap();
    assert_eq!((report.to.as_str(), report.moved, report.groups.as_slice()), ("s3", 5, &[1][..]));
    assert_eq!(maps.group(1), Group { backend: 3, epoch: 2 });
    // The standby took a group: it takes newcomers now (25 free), s1 (down) none.
    let row = maps.placement_row(0);
    assert!(row.iter().all(|&g| g == 2 || g == 3), "placement still names s1");
    assert!(cluster.takes_players(2));
}

#[test]
fn failover_without_a_standby_goes_to_the_roomiest_active_shard() {
    let (mut cluster, maps) = start(NO_STANDBY);
    fill(&mut cluster, &maps, 0, 5);
    // s2: 18 free of 20; s4: 15 free of 15 (emptier, but less room).
    fill(&mut cluster, &maps, 1, 2);
    down(&mut cluster, "s1");
    let report = cluster.failover(0, None).unwrap();
    assert_eq!((report.to.as_str(), report.moved), ("s2", 5));
    assert_eq!(maps.group(1).backend, 2);
}

#[test]
fn failover_skips_a_standby_too_small_and_a_drained_shard() {
    let (mut cluster, maps) = start(CONFIG);
    fill(&mut cluster, &maps, 1, 4); // s2: 16 free
    cluster.set_drained("s3", true).unwrap();
    down(&mut cluster, "s2");
    // s3 (the standby, 30 free) is drained: s1, the only other, with 10 free.
    let report = cluster.failover(1, None).unwrap();
    assert_eq!(report.to, "s1");
}

#[test]
fn failover_with_no_room_anywhere_moves_nothing_and_says_how_much_there_is() {
    let (mut cluster, maps) = start(NO_STANDBY);
    fill(&mut cluster, &maps, 0, 9);
    fill(&mut cluster, &maps, 1, 18); // 2 free
    fill(&mut cluster, &maps, 2, 7); // 8 free
    down(&mut cluster, "s1");
    let before = maps.dump();
    let err = cluster.failover(0, None).unwrap_err();
    assert!(matches!(err, ControlError::NoFailoverTarget { players: 9, roomiest: 8, .. }), "{err}");
    assert_eq!(maps.dump(), before, "a refused failover wrote a map");
}

#[test]
fn failover_to_a_named_target_without_room_is_refused() {
    let (mut cluster, maps) = start(CONFIG);
    fill(&mut cluster, &maps, 1, 12);
    let before = maps.dump();
    let err = cluster.failover(1, Some(0)).unwrap_err();
    assert!(matches!(err, ControlError::NoRoomForFailover { free: 10, players: 12, .. }), "{err}");
    assert!(matches!(cluster.failover(1, Some(1)), Err(ControlError::FailoverToItself(_))));
    assert_eq!(maps.dump(), before);
}

#[test]
fn a_refused_groups_write_during_a_shard_move_puts_every_group_back() {
    let (mut cluster, faulty) = start_faulty(CONFIG);
    let maps = faulty.maps().clone();
    fill(&mut cluster, &maps, 0, 2);
    fill(&mut cluster, &maps, 1, 2);
    cluster.migrate_shard("s1", "s2").unwrap(); // s2 holds groups 1 and 2 now
    let before = maps.dump();
    faulty.arm(Fault::NthTo(GROUPS, 2));
    let err = cluster.migrate_shard("s2", "s3").unwrap_err().to_string();
    assert!(err.contains("GROUPS[2]") && err.contains("every group was put back"), "{err}");
    assert_eq!(faulty.refused().len(), 1);
    assert_eq!(routing(maps.dump()), routing(before));
    // The model agrees with the maps: the same move succeeds once the map does.
    faulty.disarm();
    let report = cluster.migrate_shard("s2", "s3").unwrap();
    assert_eq!((report.moved, report.groups.as_slice()), (4, &[1, 2][..]));
}

#[test]
fn a_session_write_refused_part_way_restores_the_sessions_already_written() {
    let (mut cluster, faulty) = start_faulty(CONFIG);
    let maps = faulty.maps().clone();
    seat(&mut cluster, &maps, 0, false, &[(player(1), 1000), (player(1), 1001), (player(1), 1002)]);
    let before = maps.scan_sessions().unwrap();
    let dump = maps.dump();
    faulty.arm(Fault::NthTo(SESSIONS, 2));
    let err = cluster.migrate_clients(&["10.0.0.1".parse().unwrap()], "s2").unwrap_err().to_string();
    assert!(err.contains("SESSIONS") && err.contains("entry 2 of 3") && err.contains("nobody was moved"), "{err}");
    let after = maps.scan_sessions().unwrap();
    assert_eq!(after.established, before.established, "a session kept its new value");
    assert_eq!(routing(maps.dump()), routing(dump));
    assert_eq!(cluster.loads()[&1].established, 3, "the index moved the players anyway");
}

#[test]
fn a_refused_pending_write_rolls_back_the_established_sessions_too() {
    let (mut cluster, faulty) = start_faulty(CONFIG);
    let maps = faulty.maps().clone();
    seat(&mut cluster, &maps, 0, false, &[(player(1), 1000), (player(1), 1001)]);
    seat(&mut cluster, &maps, 0, true, &[(player(1), 1002)]);
    let before = maps.dump();
    faulty.arm(Fault::Map(PENDING));
    let err = cluster.migrate_clients(&["10.0.0.1".parse().unwrap()], "s2").unwrap_err().to_string();
    assert!(err.contains("PENDING"), "{err}");
    assert_eq!(routing(maps.dump()), routing(before));
}

#[test]
fn reconcile_of_a_changed_config_adds_removes_and_keeps_ids() {
    let (mut cluster, maps) = start(CONFIG);
    fill(&mut cluster, &maps, 0, 2);
    // s2 goes (no players), s4 comes, s1 grows.
    let changed = CONFIG.replace("capacity: 10", "capacity: 15").replace(
        "  - name: s2\n    address: 198.18.50.2\n    capacity: 20\n",
        "  - name: s4\n    address: 198.18.50.4\n    capacity: 40\n",
    );
    let changes = cluster.reconcile(parse(&changed)).unwrap();
    assert_eq!(changes, ["removed shard s2", "shard s1 capacity 10 -> 15", "added shard s4"]);
    let dump = maps.dump();
    // s4 takes the next free id; s2's slot is emptied and its group points
    // nowhere (a new epoch); s1 and s3 keep theirs.
    assert_eq!(dump.map("BACKENDS"), lines("[1] 198.18.50.1\n[3] 198.18.50.3\n[4] 198.18.50.4"));
    assert_eq!(
        dump.map("GROUPS"),
        lines("[1] backend 1 epoch 1\n[2] backend 0 epoch 2\n[3] backend 3 epoch 1\n[4] backend 4 epoch 1")
    );
    assert_eq!(
        dump.map("SHARD_STATE"),
        lines("[1] home_group 1 flags 0\n[3] home_group 3 flags 0\n[4] home_group 4 flags 0")
    );
    assert_eq!(dump.map(REVERSE).len(), 3);
    assert!(!dump.map(REVERSE).iter().any(|l| l.starts_with("198.18.50.2 ")));
    assert_eq!(dump.map("METER").len(), 4, "s2's pacer is left as it was (harmless: no backend)");
    // 13 free on s1, 40 on s4.
    assert_eq!(dump.map("PLACEMENT"), lines("row 0: group 1 x 1004, group 4 x 3089"));
    assert_eq!(dump.map(SESSIONS).len(), 2, "a reload touched a session");
}

#[test]
fn reconcile_refuses_to_drop_a_shard_with_players() {
    let (mut cluster, maps) = start(CONFIG);
    fill(&mut cluster, &maps, 1, 1);
    let before = maps.dump();
    let without_s2 = CONFIG.replace("  - name: s2\n    address: 198.18.50.2\n    capacity: 20\n", "");
    let err = cluster.reconcile(parse(&without_s2)).unwrap_err();
    assert!(matches!(err, ControlError::ShardHasPlayers { ref name, players: 1, .. } if name == "s2"), "{err}");
    assert_eq!(maps.dump(), before);
    assert_eq!(cluster.cfg.shards.len(), 3);
}

#[test]
fn a_reload_that_fails_part_way_puts_the_old_config_back() {
    let (mut cluster, faulty) = start_faulty(CONFIG);
    let maps = faulty.maps().clone();
    let before = maps.dump();
    let with_s4 = format!("{CONFIG}  - name: s4\n    address: 198.18.50.4\n    capacity: 40\n");
    // The new shard's SHARD_STATE and BACKENDS are written before REVERSE refuses.
    faulty.arm(Fault::NthTo(REVERSE, 1));
    let err = cluster.reconcile(parse(&with_s4)).unwrap_err();
    assert!(matches!(err, ControlError::ReloadRolledBack(ref e) if e.contains("REVERSE")), "{err}");
    assert!(!cluster.half_applied);
    assert_eq!(cluster.cfg.shards.len(), 3);
    assert_eq!(routing(maps.dump()), routing(before));
}

#[test]
fn a_reload_whose_undo_fails_too_is_marked_half_applied() {
    let (mut cluster, faulty) = start_faulty(CONFIG);
    let with_s4 = format!("{CONFIG}  - name: s4\n    address: 198.18.50.4\n    capacity: 40\n");
    faulty.arm(Fault::Map(REVERSE));
    assert!(cluster.reconcile(parse(&with_s4)).is_err());
    assert!(cluster.half_applied);
    faulty.disarm();
    cluster.reconcile(parse(&with_s4)).unwrap();
    assert!(!cluster.half_applied);
}

#[test]
fn promote_answered_moves_a_pending_player_of_that_shard_only() {
    let (mut cluster, maps) = start(CONFIG);
    seat(&mut cluster, &maps, 0, true, &[(player(1), 1000), (player(2), 1000)]);
    let answered = [
        super::answered::Answered { client: "10.0.0.1:1000".parse().unwrap(), shard: "198.18.50.1".parse().unwrap() },
        // Accepted by another shard than the one it was placed on: ignored.
        super::answered::Answered { client: "10.0.0.2:1000".parse().unwrap(), shard: "198.18.50.2".parse().unwrap() },
    ];
    assert_eq!(cluster.promote_answered(&answered).unwrap(), 1);
    let dump = maps.dump();
    assert_eq!(dump.map(SESSIONS), lines("10.0.0.1:1000 frontend 0 group 1 epoch 1"));
    assert_eq!(dump.map(PENDING), lines("10.0.0.2:1000 frontend 0 group 1 epoch 1"));
    assert_eq!(cluster.loads()[&1].established, 1);
}

#[test]
fn moved_players_who_never_come_back_are_removed_from_both_tables() {
    let (mut cluster, maps) = start(CONFIG);
    seat(&mut cluster, &maps, 0, false, &[(player(1), 1000)]);
    seat(&mut cluster, &maps, 0, true, &[(player(2), 1000)]);
    seat(&mut cluster, &maps, 1, false, &[(player(3), 1000)]);
    cluster.migrate_shard("s1", "s2").unwrap();
    let move_ns = 30_000_000_000;
    assert_eq!(cluster.expire_moving(super::now_ns(), move_ns).unwrap(), 0, "expired before the timeout");
    assert_eq!(cluster.expire_moving(super::now_ns() + 2 * move_ns, move_ns).unwrap(), 2);
    let dump = maps.dump();
    assert_eq!(dump.map(SESSIONS), lines("10.0.0.3:1000 frontend 0 group 2 epoch 1"));
    assert!(dump.map(PENDING).is_empty());
    assert_eq!(cluster.index.len(), 1);
}

#[test]
fn the_owner_reads_counters_through_the_seam() {
    let (cluster, maps) = start(CONFIG);
    maps.add_counter(Counter::SessionEventLost, 3);
    assert_eq!(cluster.tables().counter(Counter::SessionEventLost).unwrap(), 3);
    let all = cluster.tables().all_counters().unwrap();
    assert_eq!(all.iter().find(|(c, _)| *c == Counter::SessionEventLost).map(|(_, n)| *n), Some(3));
}
