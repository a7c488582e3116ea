//! Read-modify-write on one word of a map value, for state two CPUs change
//! at once (the handshake pacer, the query budget). Rust's `core` offers no
//! RMW atomics on the BPF target (`atomic-cas: false`), so the compiler
//! intrinsics are used directly: they compile to BPF `cmpxchg` and atomic
//! `add` (ISA v3, kernel 5.12+), which the verifier allows on map values.

use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

/// Attempts before giving up: each failure means another CPU changed the
/// word meanwhile, i.e. took what this CPU wanted, so callers treat running
/// out as "no" (the client retries).
pub const ATTEMPTS: u32 = 4;

/// The word now. An aligned 64-bit load is single-copy atomic on BPF; LLVM
/// cannot select an atomic load before ISA v4, so this is a volatile one.
///
/// # Safety
/// `word` points into a live map value.
#[inline(always)]
pub unsafe fn load(word: *const u64) -> u64 {
    core::ptr::read_volatile(word)
}

/// Writes `new` if the word still holds `seen`; true when it did.
///
/// # Safety
/// `word` points into a live map value.
#[inline(always)]
pub unsafe fn replace(word: *mut u64, seen: u64, new: u64) -> bool {
    atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(word, seen, new).1
}

/// Adds `delta` (wrapping: the two's complement subtracts).
///
/// # Safety
/// `word` points into a live map value.
#[inline(always)]
pub unsafe fn add(word: *mut u64, delta: u64) {
    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(word, delta);
}
