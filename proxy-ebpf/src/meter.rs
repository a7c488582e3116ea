//! Handshake metering: a per-shard pacer, so a mass failover reconnects
//! players at a rate the shard's login code and per-IP flood limits accept.
//! A held-back handshake is dropped and counted; the client sends it again.
//!
//! The pacer is exact under contention: its one word of state (the GCRA
//! "theoretical arrival time") only changes by compare-and-swap, so two CPUs
//! admitting handshakes for the same shard can never both take the same slot.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;

use crate::{atomic, maps::METER};

/// A handshake slot taken from a backend's pacer. Give it back with
/// [`Token::refund`] if the handshake is dropped after all.
pub struct Token {
    tat: *mut u64,
    interval_ns: u64,
}

impl Token {
    /// Returns the slot: the pacer behaves as if this handshake never came.
    #[inline(always)]
    pub fn refund(self) {
        if self.tat.is_null() {
            return;
        }
        // SAFETY: `tat` points into a live METER value (array values are
        // never freed).
        unsafe { atomic::add(self.tat, self.interval_ns.wrapping_neg()) };
    }
}

/// A slot for one more handshake to backend `id` now, or `None` when the
/// pacer holds it back (GCRA with compare-and-swap). A BPF-to-BPF call
/// (only handshakes come here): inlined, its unrolled retries kept the
/// ingress path's values in spill slots, and 6.1 refused the program's
/// stack (see `frames`).
#[inline(never)]
pub fn admit(id: u32) -> Option<Token> {
    let unmetered = Token { tat: core::ptr::null_mut(), interval_ns: 0 };
    let Some(m) = METER.get_ptr_mut(id) else {
        return Some(unmetered);
    };
    // SAFETY: a live map value; the agent replaces it only with whole-value
    // writes, and `tat_ns` is only changed atomically here.
    let (interval, tolerance, tat) = unsafe { ((*m).interval_ns, (*m).tolerance_ns, &raw mut (*m).tat_ns) };
    if interval == 0 {
        return Some(unmetered);
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    for _ in 0..atomic::ATTEMPTS {
        // SAFETY: `tat` points into the live map value (see above).
        let seen = unsafe { atomic::load(tat) };
        let start = if seen > now { seen } else { now };
        if start - now > tolerance {
            return None;
        }
        // SAFETY: as above; the swap only succeeds if no other CPU moved
        // the arrival time since `seen` was read.
        if unsafe { atomic::replace(tat, seen, start + interval) } {
            return Some(Token { tat, interval_ns: interval });
        }
    }
    None
}
