//! The session cache: established sessions direct-mapped by client hash
//! into 4-way sets of one cache line, so the hit path at scale costs one
//! memory access instead of a hash-table walk (PLATFORM.md: a hash lookup
//! over 100,000 sessions costs 230-280 ns, one cache-line probe about 55).
//! An entry carries the session's route (backend id and shard address), so
//! a hit reads no other table than this one.
//!
//! Correctness does not rest on the cache:
//! - each CPU has its own partition and only that CPU writes it (XDP runs
//!   without preemption), so no entry is ever read half-written;
//! - the agent bumps `SESSION_CACHE_GENERATION` after it rewrites or removes
//!   SESSIONS entries and after it changes GROUPS or BACKENDS, which voids
//!   every entry filled before (the generation is read before any table, so
//!   a fill racing the agent is void too);
//! - an entry is trusted for about four seconds only, then the packet takes
//!   the table path, which refreshes the session's last_seen for idle expiry.
//!
//! Also here: the cache clock, which the next-hop caches share, and the
//! return path's cache of `REVERSE` (per CPU, voided the same way).

use aya_ebpf::{
    helpers::generated::{bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_coarse_ns},
    Global,
};
use proxy_common::{
    CacheSet, CachedReverse, CachedSession, Reverse, SessionKey, CACHED_BACKEND_BITS, REVERSE_CACHE_SETS,
    REVERSE_CACHE_WAYS, SESSION_CACHE_FRESH, SESSION_CACHE_SETS, SESSION_CACHE_TICK_SHIFT, SESSION_CACHE_WAYS,
};

use crate::maps::{self, REVERSE_CACHE, SESSION_CACHE, SESSION_CACHE_GENERATION};

const _: () = assert!(SESSION_CACHE_SETS.is_power_of_two() && REVERSE_CACHE_SETS.is_power_of_two());

/// Nanoseconds per jiffy, set by the loader (`proxy_common::JIFFY_NS`); 0
/// when it could not tell. Read-only data: the verifier sees the value and
/// keeps only the clock it picks.
#[unsafe(no_mangle)]
static JIFFY_NS: Global<u64> = Global::new(0);

/// The cache clock, ns: jiffies times the jiffy (the verifier inlines
/// `bpf_jiffies64` into one load), else the coarse clock helper. Its zero
/// is not CLOCK_MONOTONIC's: compare it only with itself.
#[inline(always)]
pub fn clock_ns() -> u64 {
    let jiffy = JIFFY_NS.load();
    if jiffy == 0 {
        // SAFETY: a helper call without arguments.
        return unsafe { bpf_ktime_get_coarse_ns() };
    }
    // SAFETY: as above.
    unsafe { bpf_jiffies64() }.wrapping_mul(jiffy)
}

/// CLOCK_MONOTONIC_COARSE, the clock of `Session::last_seen_ns` (the agent
/// reads it): for the table path only.
#[inline(always)]
pub fn coarse_ns() -> u64 {
    // SAFETY: a helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The cache's view of now: its generation and clock tick.
#[derive(Clone, Copy)]
pub struct Now {
    generation: u16,
    tick: u16,
}

/// Read once per packet, before any session table; `clock` from [`clock_ns`].
#[inline(always)]
pub fn now(clock: u64) -> Now {
    Now { generation: generation(), tick: tick_of(clock) }
}

/// The low half of `SESSION_CACHE_GENERATION`: read before the tables a
/// cached copy is made of.
#[inline(always)]
fn generation() -> u16 {
    SESSION_CACHE_GENERATION.get(0).copied().unwrap_or(0) as u16
}

/// Fibonacci hashing: one multiply, whose high half depends on every bit
/// of `x`. The caches take their set from its top bits; a collision costs
/// only a miss.
#[inline(always)]
pub fn spread(x: u64) -> u32 {
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

#[inline(always)]
fn tick_of(ns: u64) -> u16 {
    (ns >> SESSION_CACHE_TICK_SHIFT) as u16
}

/// A cached session's route: its shard.
pub struct Hit {
    pub backend: u32,
    pub shard_addr: u32,
}

/// This CPU's set for a client.
pub struct Set(*mut CacheSet, u32);

#[inline(always)]
pub fn set_for(key: &SessionKey) -> Option<Set> {
    // SAFETY: a plain helper call (inlined by the verifier).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let hash = set_hash(key);
    let index = cpu.wrapping_mul(SESSION_CACHE_SETS).wrapping_add(hash >> (32 - SESSION_CACHE_SETS.trailing_zeros()));
    SESSION_CACHE.get_ptr_mut(index).map(|set| Set(set, hash))
}

/// Which set a client's entry goes in ([`spread`] of its address and port:
/// one multiply where the placement's `client_hash` takes two). The set is
/// the top bits, the way to evict the low ones.
#[inline(always)]
fn set_hash(key: &SessionKey) -> u32 {
    spread((key.client_addr as u64) << 16 | key.client_port as u64)
}

/// An entry's first word (address, port, route) as one u64, the backend
/// bits masked out: what [`key_word`] gives for the entry's own key.
#[inline(always)]
fn entry_key(e: &CachedSession) -> u64 {
    // SAFETY: the entry is 16 bytes and its first 8 are these three fields
    // (repr(C)); packet and map memory may be read unaligned here.
    let word = unsafe { core::ptr::read_unaligned(e as *const CachedSession as *const u64) };
    word & !(((1u64 << CACHED_BACKEND_BITS) - 1) << 48)
}

/// A key as [`entry_key`] reads it: one compare per way.
#[inline(always)]
fn key_word(key: &SessionKey) -> u64 {
    key.client_addr as u64 | (key.client_port as u64) << 32 | (key.frontend as u64) << (48 + CACHED_BACKEND_BITS)
}

#[inline(always)]
fn same_key(e: &CachedSession, key: &SessionKey) -> bool {
    entry_key(e) == key_word(key)
}

#[inline(always)]
fn backend_of(e: &CachedSession) -> u32 {
    (e.route & ((1 << CACHED_BACKEND_BITS) - 1)) as u32
}

#[inline(always)]
fn usable(e: &CachedSession, now: Now) -> bool {
    backend_of(e) != 0 && e.generation == now.generation && now.tick.wrapping_sub(e.refreshed) < SESSION_CACHE_FRESH
}

impl Set {
    /// Loads the set's line, so the miss overlaps the work before [`Set::hit`].
    #[inline(always)]
    pub fn prefetch(&self) {
        // SAFETY: a live map value; the word read is discarded.
        let _ = unsafe { core::ptr::read_volatile(self.0 as *const u32) };
    }

    /// The client's session, when cached, current and fresh.
    #[inline(always)]
    pub fn hit(&self, key: &SessionKey, now: Now) -> Option<Hit> {
        // SAFETY: a live map value; only this CPU writes it.
        let set = unsafe { &*self.0 };
        for e in set.ways.iter() {
            if same_key(e, key) {
                return usable(e, now).then_some(Hit { backend: backend_of(e), shard_addr: e.shard_addr });
            }
        }
        None
    }

    /// Caches an established session routed to `backend` at `shard_addr`,
    /// whose last_seen was written `age_ns` ago (coarse clock): in its own
    /// way if cached, else an unusable way, else one chosen by hash.
    #[inline(always)]
    pub fn fill(&self, key: &SessionKey, backend: u32, shard_addr: u32, clock: u64, age_ns: u64, now: Now) {
        // SAFETY: as in `hit`.
        let set = unsafe { &mut *self.0 };
        let mut way = self.1 as usize % SESSION_CACHE_WAYS;
        let mut found = false;
        for (i, e) in set.ways.iter().enumerate() {
            if same_key(e, key) {
                way = i;
                found = true;
                break;
            }
        }
        if !found {
            for (i, e) in set.ways.iter().enumerate() {
                if !usable(e, now) {
                    way = i;
                    break;
                }
            }
        }
        if let Some(e) = set.ways.get_mut(way) {
            *e = CachedSession {
                client_addr: key.client_addr,
                client_port: key.client_port,
                route: key.frontend << CACHED_BACKEND_BITS | backend as u16,
                shard_addr,
                generation: now.generation,
                // When last_seen was written, on the cache clock.
                refreshed: tick_of(clock.wrapping_sub(age_ns)),
            };
        }
    }
}

/// `REVERSE[shard_addr]`, from this CPU's cache when it holds a current
/// copy (4-way sets by address, one line a probe): the return path then
/// reads no hash table. The agent voids the copies (the generation) after
/// it changes REVERSE.
#[inline(always)]
pub fn reverse(shard_addr: u32) -> Option<Reverse> {
    let generation = generation();
    let Some(cache) = REVERSE_CACHE.get_ptr_mut(0) else {
        return maps::reverse(shard_addr);
    };
    let hash = spread((shard_addr as u64) << 24);
    // SAFETY: this CPU's value of a per-CPU map; only this CPU writes it.
    let Some(set) =
        (unsafe { &mut *cache }).sets.get_mut((hash >> (32 - REVERSE_CACHE_SETS.trailing_zeros())) as usize)
    else {
        return maps::reverse(shard_addr);
    };
    let mut way = hash as usize % REVERSE_CACHE_WAYS;
    for (i, e) in set.iter().enumerate() {
        if e.shard_addr == shard_addr {
            if e.generation == generation {
                return Some(Reverse { vip: e.vip, port: e.port, frontend: e.frontend, backend: e.backend as u32 });
            }
            way = i;
            break;
        }
        if e.shard_addr == 0 || e.generation != generation {
            way = i;
        }
    }
    let rev = maps::reverse(shard_addr)?;
    if let Some(e) = set.get_mut(way) {
        *e = CachedReverse {
            shard_addr,
            vip: rev.vip,
            port: rev.port,
            frontend: rev.frontend,
            backend: rev.backend as u16,
            generation,
        };
    }
    Some(rev)
}
