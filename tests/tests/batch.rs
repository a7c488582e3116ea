//! Batched map reads and writes against a real kernel map.

use proxy_agent::{batch, dataplane::Dataplane};
use proxy_common::{Session, SessionKey};
use tests::pins::PinDir;

#[test]
fn batch_writes_and_reads_agree_with_single_lookups() {
    let pins = PinDir::new("batch").unwrap();
    let dp = Dataplane::load(pins.path()).unwrap();
    let entries: Vec<(SessionKey, Session)> = (0..10_000u32)
        .map(|i| {
            let key = SessionKey { client_addr: i.to_be(), client_port: (i % 65_000) as u16, frontend: 1 };
            (key, Session { group: i % 7 + 1, epoch: i, last_seen_ns: i as u64 * 3 })
        })
        .collect();
    batch::update(&dp.tables.sessions, &entries).unwrap();
    for (k, v) in entries.iter().step_by(997) {
        assert_eq!(dp.tables.sessions.get(k, 0).unwrap(), *v, "single lookup after a batch write");
    }
    let mut dumped = batch::dump(&dp.tables.sessions).unwrap();
    dumped.sort_by_key(|(_, v)| v.epoch);
    assert_eq!(dumped, entries, "a batch read returns exactly what was written");
    let groups = batch::dump(&dp.tables.groups).unwrap();
    assert_eq!(groups.len(), proxy_common::MAX_GROUPS as usize, "an array dumps every index");
}
