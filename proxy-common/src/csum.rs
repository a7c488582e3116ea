//! Incremental Internet checksum updates (RFC 1624), shared by the data plane
//! and the tests that check it against a from-scratch computation.
//!
//! Every value here is a 16- or 32-bit word read from the packet in NATIVE
//! order (`from_ne_bytes`): the one's-complement sum commutes with a byte swap,
//! so no conversion is needed as long as old, new and the checksum agree.

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after one 16-bit word of the covered data changed from `old` to `new`:
/// `HC' = ~(~HC + ~m + m')`.
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// The checksum after a 32-bit field (an IPv4 address) changed from `old` to `new`.
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    apply(check, delta4(old, new))
}

/// The change `~m + m'` of a 32-bit field going from `old` to `new`, over
/// its two 16-bit halves and not yet folded: several changes add up, and
/// [`apply`] makes one checksum update of them all.
#[inline(always)]
pub fn delta4(old: u32, new: u32) -> u32 {
    (!old & 0xffff) + (!old >> 16) + (new & 0xffff) + (new >> 16)
}

/// The change of an IPv4 header when its TTL drops by one: the word
/// `[ttl, proto]` goes from `w` to `w - 1` (TTL > 1, so no borrow) and
/// `~w + (w - 1)` is 0xfffe whatever `w`.
pub const TTL_DECREMENT: u32 = 0xfffe;

/// The checksum after the changes summed in `delta` (from [`delta4`] and
/// [`TTL_DECREMENT`]): `HC' = ~(~HC + delta)`.
#[inline(always)]
pub fn apply(check: u16, delta: u32) -> u16 {
    !fold(!check as u32 + delta)
}

/// The UDP checksum after an address of the pseudo-header changed. A zero UDP
/// checksum means "none" and stays zero; a computed zero is sent as 0xffff.
#[inline(always)]
pub fn udp_replace4(check: u16, old: u32, new: u32) -> u16 {
    udp_apply(check, delta4(old, new))
}

/// As [`udp_replace4`], with the change already summed ([`delta4`]).
#[inline(always)]
pub fn udp_apply(check: u16, delta: u32) -> u16 {
    if check == 0 {
        return 0;
    }
    match apply(check, delta) {
        0 => 0xffff,
        c => c,
    }
}

/// The one's-complement sum of `data` (big-endian words), for from-scratch checks.
pub fn sum_be(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

/// A checksum from scratch: the complement of the folded sum (big-endian value).
pub fn finish_be(sum: u32) -> u16 {
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_header(src: [u8; 4], dst: [u8; 4], ttl: u8) -> [u8; 20] {
        let mut h = [0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = finish_be(sum_be(&h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn address_rewrite_matches_a_fresh_checksum() {
        for (old, new) in [
            ([198, 18, 0, 1], [198, 18, 10, 2]),
            ([255, 255, 255, 255], [0, 0, 0, 1]),
            ([1, 2, 3, 4], [254, 253, 252, 251]),
        ] {
            let h = ipv4_header([198, 18, 1, 1], old, 64);
            let check = u16::from_ne_bytes([h[10], h[11]]);
            let got = replace4(check, u32::from_ne_bytes(old), u32::from_ne_bytes(new));
            let want = ipv4_header([198, 18, 1, 1], new, 64);
            assert_eq!(got.to_ne_bytes(), [want[10], want[11]]);
        }
    }

    #[test]
    fn ttl_decrement_matches_a_fresh_checksum() {
        let h = ipv4_header([198, 18, 1, 1], [198, 18, 2, 2], 64);
        let check = u16::from_ne_bytes([h[10], h[11]]);
        let got = replace2(check, u16::from_ne_bytes([64, 17]), u16::from_ne_bytes([63, 17]));
        let want = ipv4_header([198, 18, 1, 1], [198, 18, 2, 2], 63);
        assert_eq!(got.to_ne_bytes(), [want[10], want[11]]);
    }

    #[test]
    fn one_update_for_an_address_and_the_ttl_matches_a_fresh_checksum() {
        for (old, new, ttl) in [
            ([198, 18, 0, 1], [198, 18, 10, 2], 64),
            ([255, 255, 255, 255], [0, 0, 0, 1], 2),
            ([1, 2, 3, 4], [254, 253, 252, 251], 255),
            ([198, 18, 100, 1], [198, 18, 100, 1], 128),
        ] {
            let h = ipv4_header([198, 18, 1, 1], old, ttl);
            let check = u16::from_ne_bytes([h[10], h[11]]);
            let delta = delta4(u32::from_ne_bytes(old), u32::from_ne_bytes(new)) + TTL_DECREMENT;
            let want = ipv4_header([198, 18, 1, 1], new, ttl - 1);
            assert_eq!(apply(check, delta).to_ne_bytes(), [want[10], want[11]]);
        }
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        assert_eq!(udp_replace4(0, 0x0102_0304, 0x0506_0708), 0);
    }
}
