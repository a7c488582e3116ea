//! The session cache: established sessions direct-mapped by client hash
//! into 4-way sets of one cache line, so the hit path at scale costs one
//! memory access instead of a hash-table walk (PLATFORM.md: a hash lookup
//! over 100,000 sessions costs 230-280 ns, one cache-line probe about 55).
//!
//! Correctness does not rest on the cache:
//! - each CPU has its own partition and only that CPU writes it (XDP runs
//!   without preemption), so no entry is ever read half-written;
//! - the agent bumps `SESSION_CACHE_GENERATION` after it rewrites or removes
//!   SESSIONS entries, which voids every entry filled before (the generation
//!   is read before the table, so a fill racing the agent is void too);
//! - a whole-group move changes the group's epoch, which the hit compares;
//! - an entry is trusted for about a second only, then the packet takes the
//!   table path, which refreshes the session's last_seen for idle expiry.

use aya_ebpf::helpers::generated::bpf_get_smp_processor_id;
use proxy_common::{
    net::client_hash, CacheSet, CachedSession, SessionKey, SESSION_CACHE_FRESH, SESSION_CACHE_SETS,
    SESSION_CACHE_TICK_SHIFT, SESSION_CACHE_WAYS,
};

use crate::maps::{SESSION_CACHE, SESSION_CACHE_GENERATION};

/// The cache's view of now: its generation and clock tick.
#[derive(Clone, Copy)]
pub struct Now {
    generation: u16,
    tick: u16,
}

/// Read once per packet, before any session table.
#[inline(always)]
pub fn now(now_ns: u64) -> Now {
    let generation = SESSION_CACHE_GENERATION.get(0).copied().unwrap_or(0) as u16;
    Now { generation, tick: tick_of(now_ns) }
}

#[inline(always)]
fn tick_of(ns: u64) -> u16 {
    (ns >> SESSION_CACHE_TICK_SHIFT) as u16
}

/// A cached session's route: its group and the low half of its epoch.
pub struct Hit {
    pub group: u32,
    pub epoch: u16,
}

/// This CPU's set for a client.
pub struct Set(*mut CacheSet, u32);

#[inline(always)]
pub fn set_for(key: &SessionKey) -> Option<Set> {
    // SAFETY: a plain helper call.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let hash = client_hash(key.client_addr, key.client_port);
    let index = cpu.wrapping_mul(SESSION_CACHE_SETS).wrapping_add(hash & (SESSION_CACHE_SETS - 1));
    SESSION_CACHE.get_ptr_mut(index).map(|set| Set(set, hash))
}

#[inline(always)]
fn same_key(e: &CachedSession, key: &SessionKey) -> bool {
    e.client_addr == key.client_addr && e.client_port == key.client_port && e.frontend == key.frontend
}

#[inline(always)]
fn usable(e: &CachedSession, now: Now) -> bool {
    e.group != 0 && e.generation == now.generation && now.tick.wrapping_sub(e.refreshed) < SESSION_CACHE_FRESH
}

impl Set {
    /// The client's session, when cached, current and fresh.
    #[inline(always)]
    pub fn hit(&self, key: &SessionKey, now: Now) -> Option<Hit> {
        // SAFETY: a live map value; only this CPU writes it.
        let set = unsafe { &*self.0 };
        for e in set.ways.iter() {
            if same_key(e, key) {
                return usable(e, now).then_some(Hit { group: e.group as u32, epoch: e.epoch });
            }
        }
        None
    }

    /// Caches an established session whose last_seen is `last_seen_ns`: in
    /// its own way if cached, else an unusable way, else one chosen by hash.
    #[inline(always)]
    pub fn fill(&self, key: &SessionKey, group: u32, epoch: u32, last_seen_ns: u64, now: Now) {
        // SAFETY: as in `hit`.
        let set = unsafe { &mut *self.0 };
        let mut way = (self.1 >> 16) as usize % SESSION_CACHE_WAYS;
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
                frontend: key.frontend,
                group: group as u16,
                epoch: epoch as u16,
                generation: now.generation,
                refreshed: tick_of(last_seen_ns),
            };
        }
    }
}
