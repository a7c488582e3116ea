//! Keeping the call chain's stack inside what Debian 12's 6.1 verifier
//! allows: it adds up the frames of the deepest chain of BPF-to-BPF calls,
//! each rounded up to 32 bytes and an empty one counted as 32, against 512
//! (later kernels count the bytes used). bpf-linker expands `memcpy` in
//! line but turns every zero-fill the compiler recognises into a call to
//! `memset`, a frame more: functions called from `samp_proxy` zero with
//! these instead.

use core::mem::{self, MaybeUninit};

/// `block` zeroed word by word in place: volatile stores, which the
/// compiler cannot fold into a `memset` call.
#[inline(always)]
pub fn zeroed_in_place<T>(block: &mut MaybeUninit<T>) -> &mut T {
    // Whole words cover a `T` exactly.
    const { assert!(mem::size_of::<T>() % 4 == 0 && mem::align_of::<T>() >= 4) };
    let words = block.as_mut_ptr() as *mut u32;
    for i in 0..mem::size_of::<T>() / 4 {
        // SAFETY: in bounds (whole words of the block), 4-aligned
        // (asserted above).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: every byte was written; callers' types are plain old data,
    // for which all-zero is valid.
    unsafe { block.assume_init_mut() }
}

/// A zero the compiler cannot see through: fields set from it are plain
/// stores, never a `memset` call. A volatile load, not an empty `asm!`
/// block: that emits no instruction but a line of BTF line info, and 6.1
/// refuses two lines at one instruction (`Invalid line_info`).
#[inline(always)]
pub fn hidden_zero() -> u32 {
    let zero = 0u32;
    // SAFETY: a read of a live local.
    unsafe { core::ptr::read_volatile(&zero) }
}
