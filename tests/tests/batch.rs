//! Batched map reads and writes against a real kernel map.

use proxy_agent::{batch, dataplane::Dataplane};
use proxy_common::{Session, SessionKey};
use tests::{pins::PinDir, tables::fill_up};

fn entries(n: u32, group: u32) -> Vec<(SessionKey, Session)> {
    (0..n)
        .map(|i| {
            let key = SessionKey { client_addr: i.to_be(), client_port: (i % 65_000) as u16, frontend: 1 };
            (key, Session { group: group + i % 7, epoch: i, last_seen_ns: i as u64 * 3 })
        })
        .collect()
}

#[test]
fn batch_writes_and_reads_agree_with_single_lookups() {
    let pins = PinDir::new("batch").unwrap();
    let (_dp, tables) = Dataplane::load(pins.path()).unwrap();
    let entries = entries(10_000, 1);
    batch::update(&tables.sessions, &entries).unwrap();
    for (k, v) in entries.iter().step_by(997) {
        assert_eq!(tables.sessions.get(k, 0).unwrap(), *v, "single lookup after a batch write");
    }
    let mut dumped = batch::dump(&tables.sessions).unwrap();
    dumped.sort_by_key(|(_, v)| v.epoch);
    assert_eq!(dumped, entries, "a batch read returns exactly what was written");
    let groups = batch::dump(&tables.groups).unwrap();
    assert_eq!(groups.len(), proxy_common::MAX_GROUPS as usize, "an array dumps every index");
}

/// A batch that stops part way puts back what it had written. Here the
/// table is full and one chosen session vanished meanwhile: writing it anew
/// needs a slot there is none of.
#[test]
fn a_batch_that_fails_part_way_is_rolled_back() {
    let pins = PinDir::new("batch-rollback").unwrap();
    let (_dp, mut tables) = Dataplane::load(pins.path()).unwrap();
    let old = entries(6000, 1);
    batch::update(&tables.sessions, &old).unwrap();
    let victim = old[5000].0;
    tables.sessions.remove(&victim).unwrap();
    fill_up(&tables);
    let new: Vec<(SessionKey, Session)> =
        old.iter().map(|(k, s)| (*k, Session { group: 99, epoch: !s.epoch, ..*s })).collect();
    let err = tables.rewrite_sessions(false, &new, &old).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("entry 5001 of 6000 refused") && text.contains("were restored"), "{text}");
    for (k, v) in &old {
        if *k == victim {
            assert!(tables.sessions.get(k, 0).is_err(), "the vanished session is not revived");
        } else {
            assert_eq!(tables.sessions.get(k, 0).unwrap(), *v, "every written session is back as it was");
        }
    }
}
