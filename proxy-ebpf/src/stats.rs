//! Per-CPU counters: every outcome increments exactly one, plus event counters.

use proxy_common::{BackendStats, Counter};

use crate::maps::{BACKEND_STATS, COUNTERS};

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, XDP runs without preemption on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Counts the outcome and returns the verdict, so every exit is one line.
#[inline(always)]
pub fn verdict(counter: Counter, action: u32) -> u32 {
    count(counter);
    action
}

/// Which way a packet crossed a shard, for per-shard counters.
pub enum Direction {
    ToShard,
    FromShard,
}

#[inline(always)]
pub fn backend_packet(backend: u32, bytes: u64, dir: Direction) {
    if let Some(s) = BACKEND_STATS.get_ptr_mut(backend) {
        // SAFETY: per-CPU slot, as in `count`.
        let s: &mut BackendStats = unsafe { &mut *s };
        match dir {
            Direction::ToShard => {
                s.packets_in += 1;
                s.bytes_in += bytes;
            }
            Direction::FromShard => {
                s.packets_out += 1;
                s.bytes_out += bytes;
            }
        }
    }
}
