//! Handshake metering: a per-shard pacer, so a mass failover reconnects
//! players at a rate the shard's login code and per-IP flood limits accept.
//! A held-back handshake is dropped and counted; the client sends it again.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;

use crate::maps::METER;

/// True when backend `id` may receive one more handshake now (GCRA).
///
/// The one word of state is read and written without atomics: the BPF target
/// offers no read-modify-write atomics to Rust's `core` here. Two CPUs racing
/// on the same shard can each admit one handshake in the same slot, so the
/// rate may be exceeded by at most one handshake per concurrent CPU per race,
/// never by a burst.
#[inline(always)]
pub fn admit(id: u32) -> bool {
    let Some(m) = METER.get_ptr_mut(id) else {
        return true;
    };
    // SAFETY: a live map value; the agent replaces it only with whole-value writes.
    let m = unsafe { &mut *m };
    if m.interval_ns == 0 {
        return true;
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let start = if m.tat_ns > now { m.tat_ns } else { now };
    if start - now > m.tolerance_ns {
        return false;
    }
    m.tat_ns = start + m.interval_ns;
    true
}
