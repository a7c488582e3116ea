//! Bounds the verifier can see. The compiler drops a check it can prove
//! redundant, and may check one copy of a value while the helper call gets
//! another, spilled earlier, whose bound an older verifier (6.1) no longer
//! knows. `at_most` hides the value from the compiler first (an empty
//! assembly block), so the comparison is emitted, on the register that is
//! then passed on.

/// `v`, or `max` should it be larger, compared where it is used.
#[inline(always)]
pub fn at_most(v: usize, max: usize) -> usize {
    let mut v = v as u64;
    // SAFETY: an empty block that only claims to change the register.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) v, options(pure, nomem, nostack)) };
    if v > max as u64 {
        max
    } else {
        v as usize
    }
}
