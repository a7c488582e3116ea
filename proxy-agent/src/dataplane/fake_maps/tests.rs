//! The fake maps keep the kernel's rules that the model relies on.

use proxy_common::net::{addr_to_map, port_to_map};

use super::*;

fn key(n: u8) -> SessionKey {
    SessionKey { client_addr: addr_to_map([10, 0, 0, n]), client_port: port_to_map(5000), frontend: 0 }
}

fn seen(t: u64) -> Session {
    Session { group: 1, epoch: 1, last_seen_ns: t }
}

#[test]
fn an_array_write_past_the_end_fails_naming_the_map() {
    let mut maps = FakeMaps::new();
    let err = maps.write_group(MAX_GROUPS, Group::default()).unwrap_err();
    assert_eq!(format!("{err:#}"), "writing GROUPS[4096]: GROUPS has 4096 entries, index 4096 is past the end (E2BIG)");
    assert!(maps.write_meter(MAX_BACKENDS - 1, Meter::default()).is_ok());
    assert_eq!(maps.read_groups().unwrap().len(), MAX_GROUPS as usize, "an array dump returns every slot");
}

#[test]
fn a_full_sessions_table_refuses_a_new_key_and_a_full_pending_evicts() {
    let mut maps = FakeMaps::sized(TableSizes { sessions: 2, pending: 2 });
    maps.insert_session(false, key(1), seen(1)).unwrap();
    maps.insert_session(false, key(2), seen(1)).unwrap();
    let err = maps.insert_session(false, key(3), seen(1)).unwrap_err();
    assert!(err.to_string().contains("SESSIONS is full"), "{err}");
    maps.insert_session(false, key(2), seen(9)).unwrap(); // an existing key is an update
    maps.insert_session(true, key(4), seen(5)).unwrap();
    maps.insert_session(true, key(5), seen(3)).unwrap();
    maps.insert_session(true, key(6), seen(7)).unwrap();
    let pending: Vec<_> = maps.scan_sessions().unwrap().pending.into_iter().map(|(k, _)| k).collect();
    assert_eq!(pending, [key(4), key(6)], "the least recently seen was evicted");
    assert!(maps.remove_session(true, &key(4)).unwrap());
    assert!(!maps.remove_session(true, &key(4)).unwrap(), "a second removal finds nothing");
    assert!(maps.remove_frontend(FrontendKey::default()).is_err());
}

#[test]
fn a_fault_counts_each_entry_of_a_batch_and_the_rewrite_rolls_back() {
    let mut faulty = FaultyMaps::default();
    for n in 1..=3 {
        faulty.maps().insert_session(false, key(n), seen(1)).unwrap();
    }
    let old: Vec<_> = (1..=3).map(|n| (key(n), seen(1))).collect();
    let new: Vec<_> = (1..=3).map(|n| (key(n), seen(2))).collect();
    faulty.arm(Fault::Nth(3));
    let err = faulty.rewrite_sessions(false, &new, &old).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "writing 3 sessions of SESSIONS: entry 3 of 3 refused (injected fault: write 3 (3 to SESSIONS) refused); \
         the 2 written before it were restored"
    );
    assert_eq!(faulty.scan_sessions().unwrap().established, old);
    // Writes 4 and 5 restored; 6 voided the cache.
    assert_eq!(faulty.maps().session_cache_generation(), 1);
    faulty.arm(Fault::Map(names::SESSIONS));
    let err = faulty.rewrite_sessions(false, &new, &old).unwrap_err();
    assert!(format!("{err:#}").contains("entry 1 of 3 refused"), "{err:#}");
    faulty.arm(Fault::NthTo(names::PLACEMENT, 2));
    let err = faulty.write_placement(0, None, &[1, 1, 1]).unwrap_err();
    assert_eq!(format!("{err:#}"), "writing PLACEMENT: injected fault: write 2 (2 to PLACEMENT) refused");
    assert_eq!(faulty.maps().placement_row(0)[..3], [1, 0, 0], "a placement write stops part way");
    assert_eq!(faulty.refused().len(), 1);
}

#[test]
fn a_dump_is_stable_text_of_the_non_empty_maps() {
    let mut maps = FakeMaps::new();
    let vip = addr_to_map([198, 18, 100, 1]);
    maps.write_frontend(FrontendKey { vip, port: port_to_map(7777), _pad: 0 }, Frontend { id: 0, _pad: 0 }).unwrap();
    maps.write_group(1, Group { backend: 1, epoch: 3 }).unwrap();
    maps.write_backend(1, Backend { addr: addr_to_map([198, 18, 50, 1]), site: 0 }).unwrap();
    maps.write_placement(0, None, &[1, 1, 0, 1]).unwrap();
    maps.insert_session(false, key(2), seen(5)).unwrap();
    maps.insert_session(false, key(1), seen(5)).unwrap();
    maps.add_counter(Counter::DropMoving, 2);
    let expected = "\
BACKENDS
  [1] 198.18.50.1
COUNTERS
  drop_moving 2
FRONTENDS
  198.18.100.1:7777 id 0
GROUPS
  [1] backend 1 epoch 3
PLACEMENT
  row 0: group 0 x 4090, group 1 x 3
SESSIONS
  10.0.0.1:5000 frontend 0 group 1 epoch 1
  10.0.0.2:5000 frontend 0 group 1 epoch 1
SESSION_CACHE_GENERATION
  0
";
    assert_eq!(maps.dump().to_string(), expected);
}
