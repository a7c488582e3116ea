//! The index's table: an open-addressing table of sessions (Robin Hood
//! linear probing) in an anonymous mapping of its own, and the 16-byte
//! value it keeps for each.
//!
//! Memory: 24 bytes a session in one open-addressing table (Robin Hood
//! linear probing, kept 75 to 90 % full), 27 to 32 MB at a million sessions
//! where a `HashMap<SessionKey, _>` took 80 (40-byte entries, a power-of-two
//! table). The key is stored as it is; the value keeps the group in 16 bits,
//! the slot's and the scan's marks in one byte, and the epoch and
//! `last_seen_ns` exact (a refused migration writes them back).

use std::{
    alloc::Layout,
    collections::hash_map::RandomState,
    hash::BuildHasher,
    ops::{Deref, DerefMut},
    ptr::NonNull,
};

use proxy_common::{Session, SessionKey};

/// The largest group the index keeps as it is (16 times `MAX_GROUPS`); a
/// larger one, which routes nowhere, is kept as this value.
pub const GROUP_LIMIT: u32 = u16::MAX as u32;

const OCCUPIED: u8 = 1;
/// Seen by the scan being merged.
pub(super) const SEEN: u8 = 1 << 1;
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
    pub(super) flags: u8,
    group: u16,
    pub(super) epoch: u32,
    /// `last_seen_ns` in two halves, so the entry needs no 8-byte alignment.
    seen_lo: u32,
    seen_hi: u32,
}

impl Indexed {
    const EMPTY: Indexed = Indexed { pending: false, flags: 0, group: 0, epoch: 0, seen_lo: 0, seen_hi: 0 };

    pub(super) fn new(s: &Session, pending: bool, stamp: u32) -> Self {
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

    pub(super) fn seen(&self) -> bool {
        self.flags & SEEN != 0
    }

    pub(super) fn stamp(&self) -> u32 {
        ((self.flags & STAMP) >> STAMP_SHIFT) as u32
    }

    pub(super) fn set_stamp(&mut self, stamp: u32) {
        self.flags = (self.flags & !STAMP) | ((stamp as u8 & 3) << STAMP_SHIFT);
    }

    fn set_distance(&mut self, d: usize) {
        self.flags = (self.flags & !DISTANCE) | ((d.min(FAR) as u8) << DISTANCE_SHIFT);
    }
}

/// One slot of the table: 24 bytes, 4-aligned.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct Slot {
    pub(super) key: SessionKey,
    pub(super) val: Indexed,
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
pub(super) struct Table {
    slots: Slots,
    pub(super) len: usize,
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
    pub(super) fn capacity(&self) -> usize {
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
    pub(super) fn replace(&mut self, i: usize, mut val: Indexed) -> Indexed {
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

    pub(super) fn find(&self, key: &SessionKey) -> Option<usize> {
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

    /// The value in occupied slot `i` (a slot `find` gave).
    pub(super) fn value(&self, i: usize) -> Indexed {
        self.slots[i].val
    }

    pub(super) fn value_mut(&mut self, i: usize) -> &mut Indexed {
        &mut self.slots[i].val
    }

    pub(super) fn get(&self, key: &SessionKey) -> Option<&Indexed> {
        self.find(key).map(|i| &self.slots[i].val)
    }

    /// Adds a key the table does not hold.
    pub(super) fn insert_new(&mut self, key: SessionKey, val: Indexed) {
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
    pub(super) fn remove_at(&mut self, mut i: usize) -> Indexed {
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

    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.val.occupied())
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.slots.iter_mut().filter(|s| s.val.occupied())
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("len", &self.len).field("capacity", &self.capacity()).finish()
    }
}

#[cfg(test)]
mod tests;
