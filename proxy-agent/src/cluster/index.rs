//! The agent's index of every session the data plane holds, so that status,
//! placement, migrations and failovers cost time in proportion to the players
//! (a walk over this index) instead of to the tables' capacity (a kernel
//! scan of 262,144 buckets).
//!
//! It follows the tables from three sources:
//! - the data plane's `SESSION_EVENTS` ring: every placement, promotion and
//!   re-sync it makes;
//! - the agent's own writes (moves, expiry), applied here as they are made;
//! - a full scan at a low rate, which repairs what no event reports: LRU
//!   evictions from PENDING, events lost to a full ring, and each session's
//!   `last_seen_ns` (which the idle expiry needs).
//!
//! A scan is a snapshot taken while events keep flowing, so merging it must
//! not undo newer news: every entry carries the generation of its last
//! change, a scan is tagged with the generation it started in, and an entry
//! changed since then is left as it is. A scan arrives in chunks (SESSIONS
//! first, then PENDING) and is merged chunk by chunk, so the agent never
//! holds a copy of the tables; `finish_scan` then drops what it did not see.
//!
//! Memory: 24 bytes a session in one open-addressing table (Robin Hood
//! linear probing, kept 75 to 90 % full), 27 to 32 MB at a million sessions
//! where a `HashMap<SessionKey, _>` took 80 (40-byte entries, a power-of-two
//! table). The key is stored as it is; the value keeps the group in 16 bits,
//! the slot's and the scan's marks in one byte, and the epoch and
//! `last_seen_ns` exact (a refused migration writes them back).

use std::{
    alloc::Layout,
    collections::{hash_map::RandomState, HashMap},
    hash::BuildHasher,
    ops::{Deref, DerefMut},
    ptr::NonNull,
};

use anyhow::Result;
use proxy_common::{Session, SessionEvent, SessionKey, SESSION_PLACED, SESSION_PROMOTED, SESSION_RESYNCED};

use crate::dataplane::map_writer::MapWriter;
pub use crate::dataplane::tables::Scan;

/// The largest group the index keeps as it is (16 times `MAX_GROUPS`); a
/// larger one, which routes nowhere, is kept as this value.
pub const GROUP_LIMIT: u32 = u16::MAX as u32;

const OCCUPIED: u8 = 1;
/// Seen by the scan being merged.
const SEEN: u8 = 1 << 1;
/// Two bits: the generation of the last change, modulo 4 (see `age`).
const STAMP_SHIFT: u32 = 2;
const STAMP: u8 = 0b11 << STAMP_SHIFT;
/// Four bits: how far the slot is from the key's home, up to `FAR` ("that
/// or more": computed from the key), so probes rarely hash a resident.
const DISTANCE_SHIFT: u32 = 4;
const DISTANCE: u8 = 0b1111 << DISTANCE_SHIFT;
const FAR: usize = 15;

/// What the index knows of one session (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Indexed {
    /// In PENDING (its shard has not answered yet), else in SESSIONS.
    pub pending: bool,
    flags: u8,
    group: u16,
    epoch: u32,
    /// `last_seen_ns` in two halves, so the entry needs no 8-byte alignment.
    seen_lo: u32,
    seen_hi: u32,
}

impl Indexed {
    const EMPTY: Indexed = Indexed { pending: false, flags: 0, group: 0, epoch: 0, seen_lo: 0, seen_hi: 0 };

    fn new(s: &Session, pending: bool, stamp: u32) -> Self {
        Indexed {
            pending,
            flags: OCCUPIED | ((stamp as u8 & 3) << STAMP_SHIFT),
            group: s.group.min(GROUP_LIMIT) as u16,
            epoch: s.epoch,
            seen_lo: s.last_seen_ns as u32,
            seen_hi: (s.last_seen_ns >> 32) as u32,
        }
    }

    pub fn group(&self) -> u32 {
        self.group as u32
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// As of the last scan or agent write (the data plane refreshes it
    /// without telling): good for expiry, not for the last second.
    pub fn last_seen_ns(&self) -> u64 {
        self.seen_lo as u64 | (self.seen_hi as u64) << 32
    }

    pub fn session(&self) -> Session {
        Session { group: self.group(), epoch: self.epoch, last_seen_ns: self.last_seen_ns() }
    }

    fn occupied(&self) -> bool {
        self.flags & OCCUPIED != 0
    }

    fn seen(&self) -> bool {
        self.flags & SEEN != 0
    }

    fn stamp(&self) -> u32 {
        ((self.flags & STAMP) >> STAMP_SHIFT) as u32
    }

    fn set_stamp(&mut self, stamp: u32) {
        self.flags = (self.flags & !STAMP) | ((stamp as u8 & 3) << STAMP_SHIFT);
    }

    fn set_distance(&mut self, d: usize) {
        self.flags = (self.flags & !DISTANCE) | ((d.min(FAR) as u8) << DISTANCE_SHIFT);
    }
}

/// One slot of the table: 24 bytes, 4-aligned.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    key: SessionKey,
    val: Indexed,
}

const EMPTY_SLOT: Slot = Slot { key: SessionKey { client_addr: 0, client_port: 0, frontend: 0 }, val: Indexed::EMPTY };
const MIN_CAPACITY: usize = 16;

/// The slots, in an anonymous mapping of their own: it comes zeroed (an
/// empty slot is all zeroes) and goes back to the kernel whole when the
/// table is resized or dropped. (Through malloc, a table grown in steps
/// stayed behind in an arena: 15 MiB at a million sessions.)
struct Slots {
    ptr: NonNull<Slot>,
    len: usize,
}

// SAFETY: `Slots` owns its memory as a `Box<[Slot]>` would, and `Slot` is
// plain data.
unsafe impl Send for Slots {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Slots {}

impl Slots {
    fn new(len: usize) -> Self {
        if len == 0 {
            return Slots { ptr: NonNull::dangling(), len: 0 };
        }
        let layout = Layout::array::<Slot>(len).expect("a table that fits in memory");
        // SAFETY: a fresh private anonymous mapping: no memory of ours is
        // passed in, and the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                // Populated at once: a resize writes nearly every page.
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        match NonNull::new(p.cast::<Slot>()) {
            Some(ptr) if p != libc::MAP_FAILED => Slots { ptr, len },
            _ => std::alloc::handle_alloc_error(layout),
        }
    }
}

impl Deref for Slots {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        // SAFETY: `ptr` is dangling only for `len` 0, else it maps `len`
        // slots, page-aligned (Slot needs 4), zero-filled by the kernel (all
        // zeroes is a valid, empty Slot) or written since; `&self` keeps it
        // mapped and unaliased by any `&mut`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `deref`, with `&mut self` making the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `new`, of this size, unmapped once;
            // no reference into it outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len * std::mem::size_of::<Slot>()) };
        }
    }
}

/// An open-addressing table of sessions: Robin Hood linear probing with
/// backward-shift deletion (no tombstones), any capacity (a slot is picked
/// by multiplying the hash into the capacity, not by masking), grown to 75 %
/// full when it reaches 90 % and shrunk to 75 % when it falls under 30 %.
/// The hash is keyed at random: clients choose their address and port.
struct Table {
    slots: Slots,
    len: usize,
    seeds: [u64; 2],
    /// Tests: every key hashes to this.
    #[cfg(test)]
    collide: Option<u64>,
}

impl Default for Table {
    fn default() -> Self {
        let random = RandomState::new();
        Table {
            slots: Slots::new(0),
            len: 0,
            seeds: [random.hash_one(0x5eed_u64), random.hash_one(0x5eed_u64 + 1) | 1],
            #[cfg(test)]
            collide: None,
        }
    }
}

/// The high and low halves of a 128-bit product, folded.
fn fold(a: u64, b: u64) -> u64 {
    let p = a as u128 * b as u128;
    (p as u64) ^ ((p >> 64) as u64)
}

impl Table {
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn hash(&self, key: &SessionKey) -> u64 {
        #[cfg(test)]
        if let Some(h) = self.collide {
            return h;
        }
        let packed = key.client_addr as u64 | (key.client_port as u64) << 32 | (key.frontend as u64) << 48;
        fold(fold(packed ^ self.seeds[0], 0x9e37_79b9_7f4a_7c15) ^ self.seeds[1], 0xa076_1d64_78bd_642f)
    }

    /// The slot a key would sit in with no collision.
    fn home(&self, key: &SessionKey) -> usize {
        self.slot_of(self.hash(key))
    }

    /// The hash multiplied into the capacity: the order of hashes is the
    /// order of homes.
    fn slot_of(&self, hash: u64) -> usize {
        ((hash as u128 * self.capacity() as u128) >> 64) as usize
    }

    /// How far occupied slot `i` is from the home of the key it holds.
    fn distance(&self, i: usize) -> usize {
        let s = &self.slots[i];
        let d = ((s.val.flags & DISTANCE) >> DISTANCE_SHIFT) as usize;
        if d < FAR {
            return d;
        }
        let home = self.home(&s.key);
        if i >= home {
            i - home
        } else {
            i + self.capacity() - home
        }
    }

    /// Writes `slot` into slot `i`, `d` from its home.
    fn put(&mut self, i: usize, mut slot: Slot, d: usize) {
        slot.val.set_distance(d);
        self.slots[i] = slot;
    }

    /// Replaces the value of occupied slot `i`, keeping its place.
    fn replace(&mut self, i: usize, mut val: Indexed) -> Indexed {
        let old = self.slots[i].val;
        val.flags = (val.flags & !DISTANCE) | (old.flags & DISTANCE);
        self.slots[i].val = val;
        old
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.capacity() {
            0
        } else {
            i + 1
        }
    }

    fn find(&self, key: &SessionKey) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(key);
        let mut d = 0;
        loop {
            let s = &self.slots[i];
            if !s.val.occupied() {
                return None;
            }
            if s.key == *key {
                return Some(i);
            }
            // A key this far from home would have taken this slot.
            if self.distance(i) < d {
                return None;
            }
            d += 1;
            i = self.next(i);
        }
    }

    fn get(&self, key: &SessionKey) -> Option<&Indexed> {
        self.find(key).map(|i| &self.slots[i].val)
    }

    /// Adds a key the table does not hold.
    fn insert_new(&mut self, key: SessionKey, val: Indexed) {
        if (self.len + 1) * 10 > self.capacity() * 9 {
            self.resize(((self.len + 1) * 4 / 3).max(MIN_CAPACITY));
        }
        self.place(Slot { key, val });
        self.len += 1;
    }

    /// Robin Hood: a newcomer further from its home takes the slot of a
    /// resident nearer to its own, which moves on.
    fn place(&mut self, mut carried: Slot) {
        let mut i = self.home(&carried.key);
        let mut d = 0;
        loop {
            let s = self.slots[i];
            if !s.val.occupied() {
                self.put(i, carried, d);
                return;
            }
            let resident = self.distance(i);
            if resident < d {
                self.put(i, carried, d);
                carried = s;
                d = resident;
            }
            d += 1;
            i = self.next(i);
        }
    }

    /// Empties slot `i`, moving the run behind it one slot back.
    fn remove_at(&mut self, mut i: usize) -> Indexed {
        let old = self.slots[i].val;
        loop {
            let j = self.next(i);
            let s = self.slots[j];
            let d = if s.val.occupied() { self.distance(j) } else { 0 };
            if d == 0 {
                self.slots[i] = EMPTY_SLOT;
                break;
            }
            self.put(i, s, d - 1);
            i = j;
        }
        self.len -= 1;
        if self.capacity() > MIN_CAPACITY && self.len * 10 < self.capacity() * 3 {
            self.resize((self.len * 4 / 3).max(MIN_CAPACITY));
        }
        old
    }

    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, Slots::new(capacity));
        // From an empty slot on, the old table runs in hash order (but for
        // keys sharing a home): most keys come with a hash at least every
        // one placed before, and take the first free slot from their home.
        let start = old.iter().position(|s| !s.val.occupied()).unwrap_or(0);
        let mut top = 0;
        for s in old[start..].iter().chain(&old[..start]).filter(|s| s.val.occupied()) {
            let hash = self.hash(&s.key);
            if hash < top || !self.place_in_order(*s, hash) {
                self.place(*s);
            }
            top = top.max(hash);
        }
    }

    /// Places a key whose hash is at least that of every key in the table:
    /// none of those is further from its home than it would be, so its place
    /// is the first free slot from its home on. Refused (false) when that
    /// walk would wrap past the end.
    fn place_in_order(&mut self, slot: Slot, hash: u64) -> bool {
        let from = self.slot_of(hash);
        match self.slots[from..].iter().position(|s| !s.val.occupied()) {
            Some(n) => {
                self.put(from + n, slot, n);
                true
            }
            None => false,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.val.occupied())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.slots.iter_mut().filter(|s| s.val.occupied())
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("len", &self.len).field("capacity", &self.capacity()).finish()
    }
}

/// What merging a scan found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeReport {
    /// Sessions the index did not know (events lost to a full ring).
    pub added: usize,
    /// Sessions the tables no longer hold (LRU evictions of pending players).
    pub removed: usize,
    /// Sessions whose group, epoch or table differed.
    pub corrected: usize,
}

impl MergeReport {
    pub fn add(&mut self, other: &MergeReport) {
        self.added += other.added;
        self.removed += other.removed;
        self.corrected += other.corrected;
    }
}

/// Sessions of one group by (epoch, pending): what loads are made of.
pub type GroupCounts = HashMap<(u32, bool), usize>;

#[derive(Debug, Default)]
pub struct SessionIndex {
    table: Table,
    /// Bumped by every scan. An entry keeps it modulo 4; `normalized` keeps
    /// the stamps readable (see `age`).
    generation: u32,
    /// The generation in which every stamp was last brought to "changed now"
    /// or "changed before"; from then on stamps differ from `generation` by
    /// at most `generation - normalized + 1`, which must stay under 4.
    normalized: u32,
    /// A scan's chunks were merged and it was not finished: some entries
    /// may carry its `SEEN` mark.
    merging: bool,
    pending: usize,
    /// Kept with every change, so loads cost a walk over the groups, not
    /// over the sessions.
    counts: HashMap<u32, GroupCounts>,
}

impl SessionIndex {
    /// An index holding exactly what a scan found.
    pub fn from_scan(scan: Scan) -> Self {
        let mut index = Self::default();
        index.merge(0, scan);
        index
    }

    /// An index holding what both tables hold, read a batch at a time (as
    /// `Tables::scan_sessions`, PENDING first) and merged as it is read: a
    /// start that finds a million sessions pinned never holds a copy.
    pub fn from_tables(tables: &dyn MapWriter) -> Result<Self> {
        let mut index = Self::default();
        let mut report = MergeReport::default();
        let mut pending = Vec::new();
        tables.each_session(true, &mut |k, v| pending.extend(k.iter().copied().zip(v.iter().copied())))?;
        tables.each_session(false, &mut |k, v| {
            index.merge_chunk(0, false, k.iter().copied().zip(v.iter().copied()), &mut report);
        })?;
        index.merge_chunk(0, true, pending, &mut report);
        index.finish_scan(0);
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.table.len
    }

    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// Slots the table has room for (memory = 24 bytes each).
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Sessions in PENDING.
    pub fn pending_len(&self) -> usize {
        self.pending
    }

    /// Per group: how many sessions it holds at each (epoch, pending).
    pub fn group_counts(&self) -> impl Iterator<Item = (u32, &GroupCounts)> {
        self.counts.iter().map(|(g, c)| (*g, c))
    }

    fn count(&mut self, e: &Indexed, add: bool) {
        let group = self.counts.entry(e.group()).or_default();
        let n = group.entry((e.epoch, e.pending)).or_default();
        if add {
            *n += 1;
            self.pending += e.pending as usize;
            return;
        }
        *n -= 1;
        self.pending -= e.pending as usize;
        if *n == 0 {
            group.remove(&(e.epoch, e.pending));
            if group.is_empty() {
                self.counts.remove(&e.group());
            }
        }
    }

    pub fn get(&self, key: &SessionKey) -> Option<&Indexed> {
        self.table.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SessionKey, &Indexed)> {
        self.table.iter().map(|s| (&s.key, &s.val))
    }

    /// How many generations before the current one `e` last changed: 0, 1,
    /// 2, or 3 for "3 or more".
    fn age(&self, e: &Indexed) -> u32 {
        self.generation.wrapping_sub(e.stamp()) & 3
    }

    fn changed_in(&self, e: &Indexed, started: u32) -> bool {
        self.age(e) <= self.generation.wrapping_sub(started).min(3)
    }

    /// True when the index changed this session in generation `started` or
    /// later (so a scan begun then may be older than what the index knows).
    /// `started` is the last generation `begin_scan` gave.
    pub fn changed_since(&self, key: &SessionKey, started: u64) -> bool {
        self.table.get(key).is_some_and(|e| self.changed_in(e, started as u32))
    }

    /// True when the scan being merged found this session in SESSIONS (a
    /// PENDING copy of it is then a leftover of its promotion).
    pub fn scanned_established(&self, key: &SessionKey) -> bool {
        self.table.get(key).is_some_and(|e| e.seen() && !e.pending)
    }

    /// Records a session as the agent (or the data plane) wrote it.
    pub fn set(&mut self, key: SessionKey, session: Session, pending: bool) {
        let entry = Indexed::new(&session, pending, self.generation);
        match self.table.find(&key) {
            Some(i) => {
                let old = self.table.replace(i, entry);
                self.count(&old, false);
            }
            None => self.table.insert_new(key, entry),
        }
        self.count(&entry, true);
    }

    pub fn remove(&mut self, key: &SessionKey) -> Option<Indexed> {
        let i = self.table.find(key)?;
        let old = self.table.remove_at(i);
        self.count(&old, false);
        Some(old)
    }

    /// Folds one data-plane event in. Unknown kinds are ignored.
    pub fn apply(&mut self, ev: &SessionEvent, now_ns: u64) {
        let known = self.get(&ev.key).copied();
        match ev.kind {
            SESSION_PLACED => {
                self.set(ev.key, Session { group: ev.group, epoch: ev.epoch, last_seen_ns: now_ns }, true);
            }
            SESSION_PROMOTED => {
                let last_seen_ns = known.map_or(now_ns, |k| k.last_seen_ns());
                self.set(ev.key, Session { group: ev.group, epoch: ev.epoch, last_seen_ns }, false);
            }
            SESSION_RESYNCED => {
                let pending = known.is_some_and(|k| k.pending);
                self.set(ev.key, Session { group: ev.group, epoch: ev.epoch, last_seen_ns: now_ns }, pending);
            }
            _ => {}
        }
    }

    /// Starts a scan: changes from now on are newer than what it will read.
    /// (A scan begun before and never finished is given up.)
    pub fn begin_scan(&mut self) -> u64 {
        let next = self.generation.wrapping_add(1).max(1);
        if self.merging || next.wrapping_sub(self.normalized) > 2 || next < self.generation {
            self.normalize();
        }
        self.generation = next;
        next as u64
    }

    /// Clears the scan marks and brings every stamp to "changed in this
    /// generation" or "in the one before".
    fn normalize(&mut self) {
        let g = self.generation;
        for s in self.table.iter_mut() {
            s.val.flags &= !SEEN;
            if s.val.stamp() != g & 3 {
                s.val.set_stamp(g.wrapping_sub(1));
            }
        }
        self.normalized = g;
        self.merging = false;
    }

    /// Merges one chunk of a scan that began in generation `started`, from
    /// PENDING (`pending`) or SESSIONS; SESSIONS must come first (a
    /// promotion racing the scan shows in both tables, and the established
    /// copy is the truth). Sessions unchanged since the scan began take its
    /// word (added, corrected or refreshed); newer ones stay as they are.
    pub fn merge_chunk(
        &mut self,
        started: u64,
        pending: bool,
        entries: impl IntoIterator<Item = (SessionKey, Session)>,
        report: &mut MergeReport,
    ) {
        self.merging = true;
        let started = started as u32;
        for (key, s) in entries {
            let Some(i) = self.table.find(&key) else {
                let mut fresh = Indexed::new(&s, pending, self.generation);
                fresh.flags |= SEEN;
                self.table.insert_new(key, fresh);
                self.count(&fresh, true);
                if started > 0 {
                    report.added += 1;
                }
                continue;
            };
            let e = self.table.slots[i].val;
            if e.seen() {
                continue; // already taken from the established table
            }
            if self.changed_in(&e, started) {
                self.table.slots[i].val.flags |= SEEN;
                continue; // newer than the scan
            }
            let mut fresh = Indexed::new(&s, pending, e.stamp());
            fresh.flags |= SEEN;
            self.table.replace(i, fresh);
            if (e.group(), e.epoch, e.pending) != (fresh.group(), fresh.epoch, pending) {
                report.corrected += 1;
                self.count(&e, false);
                self.count(&fresh, true);
            }
        }
    }

    /// Ends the merge of the scan begun in generation `started`: sessions it
    /// did not see and nothing changed since it began are gone from the
    /// tables. Returns how many were removed.
    pub fn finish_scan(&mut self, started: u64) -> usize {
        let started = started as u32;
        let mut stale: Vec<SessionKey> = Vec::new();
        for s in self.table.iter() {
            if !s.val.seen() && !self.changed_in(&s.val, started) {
                stale.push(s.key);
            }
        }
        self.normalize();
        for key in &stale {
            self.remove(key);
        }
        stale.len()
    }

    /// Merges a whole scan that began in generation `started` (see
    /// `merge_chunk` and `finish_scan`).
    pub fn merge(&mut self, started: u64, scan: Scan) -> MergeReport {
        let mut report = MergeReport::default();
        self.merge_chunk(started, false, scan.established, &mut report);
        self.merge_chunk(started, true, scan.pending, &mut report);
        report.removed = self.finish_scan(started);
        report
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(n: u32) -> SessionKey {
        SessionKey { client_addr: n, client_port: 7, frontend: 0 }
    }

    fn s(group: u32, epoch: u32) -> Session {
        Session { group, epoch, last_seen_ns: 5 }
    }

    fn ev(n: u32, kind: u32, group: u32, epoch: u32) -> SessionEvent {
        SessionEvent { key: key(n), kind, group, epoch, _pad: 0 }
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

    #[test]
    fn events_follow_a_player_from_placement_to_resync() {
        let mut idx = SessionIndex::default();
        idx.apply(&ev(1, SESSION_PLACED, 3, 0), 10);
        assert_eq!((idx.len(), idx.pending_len()), (1, 1));
        idx.apply(&ev(1, SESSION_PROMOTED, 3, 0), 20);
        let e = *idx.get(&key(1)).unwrap();
        assert_eq!((e.group(), e.epoch(), e.pending, e.last_seen_ns()), (3, 0, false, 10));
        assert_eq!(idx.pending_len(), 0);
        idx.apply(&ev(1, SESSION_RESYNCED, 3, 1), 30);
        assert_eq!(idx.get(&key(1)).unwrap().epoch(), 1);
        idx.apply(&ev(1, 99, 0, 0), 40);
        assert_eq!(idx.get(&key(1)).unwrap().group(), 3, "unknown kinds change nothing");
        // A shard's refusal names a player but changes no session.
        idx.apply(&ev(1, proxy_common::SESSION_SHARD_REFUSED, 7, 0), 50);
        idx.apply(&ev(2, proxy_common::SESSION_SHARD_REFUSED, 7, 0), 50);
        assert_eq!((idx.len(), idx.get(&key(1)).unwrap().group()), (1, 3), "a refusal is no session event");
    }

    #[test]
    fn a_scan_repairs_lost_events_and_evictions_but_not_newer_news() {
        let mut idx =
            SessionIndex::from_scan(Scan { established: vec![(key(1), s(1, 0))], pending: vec![(key(2), s(1, 0))] });
        assert_eq!((idx.len(), idx.pending_len()), (2, 1));
        let started = idx.begin_scan();
        // After the scan began: player 3 placed, player 1 moved by the agent.
        idx.apply(&ev(3, SESSION_PLACED, 1, 0), 50);
        idx.set(key(1), s(2, 9), false);
        // The scan saw: 1 as it was, 2 evicted, 4 (an event that was lost).
        let report =
            idx.merge(started, Scan { established: vec![(key(1), s(1, 0)), (key(4), s(1, 0))], pending: vec![] });
        assert_eq!(report, MergeReport { added: 1, removed: 1, corrected: 0 });
        assert_eq!(idx.get(&key(1)).unwrap().group(), 2, "the agent's newer write stands");
        assert!(idx.get(&key(2)).is_none(), "the eviction is seen");
        assert!(idx.get(&key(3)).unwrap().pending, "a newer placement stands though the scan missed it");
        assert!(idx.get(&key(4)).is_some());
        assert_eq!((idx.len(), idx.pending_len()), (3, 1));
        assert_eq!(counts(&idx), [(1, 2), (2, 1)].into_iter().collect(), "the per-group counts follow every change");
    }

    #[test]
    fn a_promotion_caught_in_both_tables_counts_once_as_established() {
        let idx =
            SessionIndex::from_scan(Scan { established: vec![(key(1), s(1, 0))], pending: vec![(key(1), s(1, 0))] });
        assert_eq!((idx.len(), idx.pending_len()), (1, 0));
    }

    #[test]
    fn a_scan_merged_in_chunks_matches_one_merged_whole() {
        let established: Vec<(SessionKey, Session)> = (0..5000).map(|n| (key(n), s(n % 7 + 1, n % 3))).collect();
        let pending: Vec<(SessionKey, Session)> = (4990..6000).map(|n| (key(n), s(2, 0))).collect();
        let start = || {
            let mut idx = SessionIndex::default();
            for n in (0..8000).step_by(2) {
                idx.set(key(n), s(1, 0), false);
            }
            idx
        };
        let mut whole = start();
        let started = whole.begin_scan();
        let want = whole.merge(started, Scan { established: established.clone(), pending: pending.clone() });
        let mut chunked = start();
        let started = chunked.begin_scan();
        let mut got = MergeReport::default();
        for c in established.chunks(333) {
            chunked.merge_chunk(started, false, c.iter().copied(), &mut got);
        }
        for c in pending.chunks(100) {
            chunked.merge_chunk(started, true, c.iter().copied(), &mut got);
        }
        got.removed = chunked.finish_scan(started);
        assert_eq!(got, want);
        assert_eq!(got.removed, 1000, "the even keys from 6000 on");
        let all = |i: &SessionIndex| -> BTreeMap<u32, (Session, bool)> {
            i.iter().map(|(k, e)| (k.client_addr, (e.session(), e.pending))).collect()
        };
        assert_eq!(all(&chunked), all(&whole));
        assert_eq!(counts(&chunked), counts(&whole));
        assert_eq!(chunked.pending_len(), 1000, "4990..5000 are established");
    }

    #[test]
    fn changes_between_chunks_stand_and_a_given_up_scan_leaves_no_mark() {
        let mut idx = SessionIndex::default();
        for n in 0..10 {
            idx.set(key(n), s(1, 0), false);
        }
        let started = idx.begin_scan();
        let mut report = MergeReport::default();
        idx.merge_chunk(started, false, (0..5).map(|n| (key(n), s(1, 1))), &mut report);
        assert_eq!(report.corrected, 5);
        // Between two chunks: an event moves player 7, the agent removes 8.
        idx.set(key(7), s(3, 0), false);
        idx.remove(&key(8));
        idx.merge_chunk(started, false, (5..10).map(|n| (key(n), s(1, 1))), &mut report);
        assert_eq!(idx.get(&key(7)).unwrap().group(), 3, "newer than the scan");
        assert_eq!(idx.get(&key(8)).unwrap().epoch(), 1, "the scan read it before the removal: it comes back");
        assert_eq!(report.added, 1);
        // The scan fails before its end: the next one starts clean, and a
        // session its chunks do not hold is removed.
        let started = idx.begin_scan();
        idx.merge_chunk(started, false, (1..10).map(|n| (key(n), s(1, 1))), &mut report);
        assert_eq!(idx.finish_scan(started), 1);
        assert!(idx.get(&key(0)).is_none());
        assert_eq!(idx.get(&key(7)).unwrap().group(), 1, "an old change no longer stands");
    }

    #[test]
    fn stamps_stay_right_across_many_scans_finished_or_not() {
        let mut idx = SessionIndex::default();
        idx.set(key(1), s(1, 0), false);
        for round in 0..40u32 {
            let started = idx.begin_scan();
            assert!(!idx.changed_since(&key(1), started), "round {round}: an old change");
            if round % 5 == 0 {
                idx.set(key(2), s(2, round), false);
                assert!(idx.changed_since(&key(2), started));
            }
            // Finished every third round only.
            if round % 3 == 0 {
                let mut report = MergeReport::default();
                idx.merge_chunk(started, false, [(key(1), s(1, 0)), (key(2), s(2, 0))], &mut report);
                idx.finish_scan(started);
                assert!(idx.iter().all(|(_, e)| !e.seen()), "no mark is left");
            }
            assert!(!idx.changed_since(&key(1), started));
        }
    }
}
