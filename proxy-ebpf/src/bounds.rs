//! Bounds the verifier can see. The compiler drops a check it can prove
//! redundant, and may check one copy of a value while the helper call gets
//! another, spilled earlier, whose bounds an older verifier (6.1) no longer
//! knows. `within` hides the value from the compiler first (an empty
//! assembly block), so both comparisons are emitted, on the register that
//! is then passed on.

/// `v` clamped to `min..=max`, compared where it is used. Callers have
/// checked the range already; this is for the verifier.
#[inline(always)]
pub fn within(v: usize, min: usize, max: usize) -> usize {
    let mut v = v as u64;
    // SAFETY: an empty block that only claims to change the register.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) v, options(pure, nomem, nostack)) };
    // One unsigned range check on `v - min` (a `v < 1` would become
    // `v == 0`, from which 6.1's verifier learns no lower bound); below
    // `min` it wraps to a huge number and takes the `max` branch.
    // `above` is hidden too, or the compiler compares a copy of `v`
    // with the offset folded in and passes `v` itself.
    let mut above = v.wrapping_sub(min as u64);
    // SAFETY: as above.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) above, options(pure, nomem, nostack)) };
    if above > (max - min) as u64 {
        max
    } else {
        (above + min as u64) as usize
    }
}
