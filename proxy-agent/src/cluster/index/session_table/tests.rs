//! The table through the index that drives it: every session kept, the Robin
//! Hood order, collisions and the load bounds.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::cluster::index::SessionIndex;

fn key(n: u32) -> SessionKey {
    SessionKey { client_addr: n, client_port: 7, frontend: 0 }
}

fn s(group: u32, epoch: u32) -> Session {
    Session { group, epoch, last_seen_ns: 5 }
}

fn counts(idx: &SessionIndex) -> BTreeMap<u32, usize> {
    idx.group_counts().map(|(g, c)| (g, c.values().sum())).collect()
}

/// Checks the table against a model: same sessions, the Robin Hood
/// order, and counts that match a recount.
fn check(idx: &SessionIndex, model: &HashMap<SessionKey, (Session, bool)>) {
    assert_eq!(idx.len(), model.len());
    for (k, (s, p)) in model {
        let e = idx.get(k).unwrap_or_else(|| panic!("{k:?} is missing"));
        assert_eq!((e.session(), e.pending), (*s, *p));
    }
    assert_eq!(idx.iter().count(), model.len());
    let t = &idx.table;
    // How far each slot is from its key's home, from the key.
    let far = |i: usize| (i + t.capacity() - t.home(&t.slots[i].key)) % t.capacity();
    for i in 0..t.capacity() {
        let (a, b) = (t.slots[i], t.slots[t.next(i)]);
        if a.val.occupied() {
            let kept = ((a.val.flags & DISTANCE) >> DISTANCE_SHIFT) as usize;
            assert_eq!(kept, far(i).min(FAR), "the distance kept at {i}");
        }
        if a.val.occupied() && b.val.occupied() {
            assert!(far(t.next(i)) <= far(i) + 1, "Robin Hood order at {i}");
        } else if b.val.occupied() {
            assert_eq!(far(t.next(i)), 0, "a gap before a displaced key at {i}");
        }
    }
    let mut want: BTreeMap<u32, usize> = BTreeMap::new();
    for (s, _) in model.values() {
        *want.entry(s.group).or_default() += 1;
    }
    assert_eq!(counts(idx), want);
    assert_eq!(idx.pending_len(), model.values().filter(|(_, p)| *p).count());
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_ops(idx: &mut SessionIndex, keys: u32, ops: usize, seed: u64) {
    let mut model: HashMap<SessionKey, (Session, bool)> = HashMap::new();
    let mut rng = Rng(seed);
    for op in 0..ops {
        let r = rng.next();
        let k = key((r % keys as u64) as u32);
        if r >> 60 < 5 {
            assert_eq!(idx.remove(&k).map(|e| e.session()), model.remove(&k).map(|(s, _)| s));
        } else {
            let session = Session { group: (r >> 20) as u32 % 9, epoch: (r >> 30) as u32, last_seen_ns: r };
            let pending = r & 1 == 1;
            idx.set(k, session, pending);
            model.insert(k, (session, pending));
        }
        if op % 97 == 0 {
            check(idx, &model);
        }
    }
    check(idx, &model);
}

#[test]
fn an_entry_keeps_every_field_exactly() {
    let mut idx = SessionIndex::default();
    let big = Session { group: 4095, epoch: u32::MAX, last_seen_ns: u64::MAX / 2 };
    idx.set(key(1), big, true);
    let wide = Session { group: GROUP_LIMIT - 1, epoch: 0, last_seen_ns: 1 << 40 };
    idx.set(key(2), wide, false);
    assert_eq!(idx.get(&key(1)).unwrap().session(), big);
    assert!(idx.get(&key(1)).unwrap().pending);
    assert_eq!(idx.get(&key(2)).unwrap().session(), wide);
    idx.set(key(3), Session { group: u32::MAX, ..wide }, false);
    assert_eq!(idx.get(&key(3)).unwrap().group(), GROUP_LIMIT, "a group beyond any is kept as the limit");
    assert_eq!(std::mem::size_of::<Slot>(), 24);
    assert!(idx.table.slots.iter().all(|s| s.val.occupied() || s.val == Indexed::EMPTY), "fresh slots are empty");
}

#[test]
fn inserts_updates_and_removes_match_a_model() {
    let mut idx = SessionIndex::default();
    random_ops(&mut idx, 3000, 40_000, 0x1234_5678);
}

#[test]
fn colliding_keys_probe_past_each_other_and_wrap_around() {
    // Every key's home is the first slot, or the last (its run wraps).
    for h in [0, u64::MAX] {
        let mut idx = SessionIndex::default();
        idx.table.collide = Some(h);
        random_ops(&mut idx, 200, 20_000, 0xdead_beef);
        // Removing from the middle of the run keeps the others reachable.
        let mut idx = SessionIndex::default();
        idx.table.collide = Some(h);
        for n in 0..12 {
            idx.set(key(n), s(1, n), false);
        }
        assert_eq!(idx.table.home(&key(0)), if h == 0 { 0 } else { idx.capacity() - 1 });
        for n in (0..12).step_by(3) {
            assert!(idx.remove(&key(n)).is_some());
        }
        for n in 0..12 {
            assert_eq!(idx.get(&key(n)).map(|e| e.epoch()), (n % 3 != 0).then_some(n), "key {n}");
        }
    }
}

#[test]
fn the_table_grows_and_shrinks_within_its_load_bounds() {
    let mut idx = SessionIndex::default();
    for n in 0..100_000 {
        idx.set(key(n), s(n % 5, 0), n % 2 == 0);
        let load = idx.len() as f64 / idx.capacity() as f64;
        assert!(load <= 0.9, "{load} at {n}");
    }
    assert!(idx.len() as f64 / idx.capacity() as f64 >= 0.74);
    let model = |from: u32| -> HashMap<SessionKey, (Session, bool)> {
        (from..100_000).map(|n| (key(n), (s(n % 5, 0), n % 2 == 0))).collect()
    };
    check(&idx, &model(0));
    for n in 0..99_000 {
        idx.remove(&key(n));
    }
    assert!(idx.capacity() < 4000, "shrunk to {}", idx.capacity());
    check(&idx, &model(99_000));
    for n in 99_000..100_000 {
        idx.remove(&key(n));
    }
    assert!(idx.is_empty() && idx.capacity() == MIN_CAPACITY && counts(&idx).is_empty());
    assert_eq!(idx.pending_len(), 0);
}
