//! SA:MP wire facts shared by the data plane, the agent and the simulators.
//!
//! Client -> server game datagrams are scrambled (open.mp `SAMPRakNet::Decrypt`):
//! byte 0 is a checksum, byte `i >= 1` decodes as `DECODE[wire[i] ^ k(i)]` with
//! `k(i) = (server_port ^ 0xCC) & 0xFF` for even `i` and 0 for odd `i`. The
//! checksum is the XOR of `decoded & 0xAA` over all decoded bytes. Server ->
//! client datagrams are plain. See `shared/SAMP.md`.

/// RakNet ID_OPEN_CONNECTION_REQUEST: the first datagram of every connection.
pub const ID_OPEN_CONNECTION_REQUEST: u8 = 24;
/// RakNet ID_OPEN_CONNECTION_REPLY: the server accepted the cookie.
pub const ID_OPEN_CONNECTION_REPLY: u8 = 25;
/// RakNet ID_OPEN_CONNECTION_COOKIE: the server's cookie challenge.
pub const ID_OPEN_CONNECTION_COOKIE: u8 = 26;
/// What the SA:MP client XORs into the cookie it echoes back.
pub const COOKIE_XOR: u16 = 0x6969;
/// Wire length of a scrambled ID_OPEN_CONNECTION_REQUEST: checksum, id, cookie lo, cookie hi.
pub const HANDSHAKE_WIRE_LEN: usize = 4;
/// Query datagrams start with this magic and are longer than `QUERY_MIN_LEN`.
pub const QUERY_MAGIC: [u8; 4] = *b"SAMP";
/// A query header is magic + IPv4 + port + opcode = 11 bytes.
pub const QUERY_HEADER_LEN: usize = 11;

/// The substitution table of `SAMPRakNet::Decrypt` (a permutation of 0..=255).
pub static DECODE: [u8; 256] = [
    0xB4, 0x62, 0x07, 0xE5, 0x9D, 0xAF, 0x63, 0xDD, 0xE3, 0xD0, 0xCC, 0xFE, 0xDC, 0xDB, 0x6B, 0x2E, 0x6A, 0x40, 0xAB,
    0x47, 0xC9, 0xD1, 0x53, 0xD5, 0x20, 0x91, 0xA5, 0x0E, 0x4A, 0xDF, 0x18, 0x89, 0xFD, 0x6F, 0x25, 0x12, 0xB7, 0x13,
    0x77, 0x00, 0x65, 0x36, 0x6D, 0x49, 0xEC, 0x57, 0x2A, 0xA9, 0x11, 0x5F, 0xFA, 0x78, 0x95, 0xA4, 0xBD, 0x1E, 0xD9,
    0x79, 0x44, 0xCD, 0xDE, 0x81, 0xEB, 0x09, 0x3E, 0xF6, 0xEE, 0xDA, 0x7F, 0xA3, 0x1A, 0xA7, 0x2D, 0xA6, 0xAD, 0xC1,
    0x46, 0x93, 0xD2, 0x1B, 0x9C, 0xAA, 0xD7, 0x4E, 0x4B, 0x4D, 0x4C, 0xF3, 0xB8, 0x34, 0xC0, 0xCA, 0x88, 0xF4, 0x94,
    0xCB, 0x04, 0x39, 0x30, 0x82, 0xD6, 0x73, 0xB0, 0xBF, 0x22, 0x01, 0x41, 0x6E, 0x48, 0x2C, 0xA8, 0x75, 0xB1, 0x0A,
    0xAE, 0x9F, 0x27, 0x80, 0x10, 0xCE, 0xF0, 0x29, 0x28, 0x85, 0x0D, 0x05, 0xF7, 0x35, 0xBB, 0xBC, 0x15, 0x06, 0xF5,
    0x60, 0x71, 0x03, 0x1F, 0xEA, 0x5A, 0x33, 0x92, 0x8D, 0xE7, 0x90, 0x5B, 0xE9, 0xCF, 0x9E, 0xD3, 0x5D, 0xED, 0x31,
    0x1C, 0x0B, 0x52, 0x16, 0x51, 0x0F, 0x86, 0xC5, 0x68, 0x9B, 0x21, 0x0C, 0x8B, 0x42, 0x87, 0xFF, 0x4F, 0xBE, 0xC8,
    0xE8, 0xC7, 0xD4, 0x7A, 0xE0, 0x55, 0x2F, 0x8A, 0x8E, 0xBA, 0x98, 0x37, 0xE4, 0xB2, 0x38, 0xA1, 0xB6, 0x32, 0x83,
    0x3A, 0x7B, 0x84, 0x3C, 0x61, 0xFB, 0x8C, 0x14, 0x3D, 0x43, 0x3B, 0x1D, 0xC3, 0xA2, 0x96, 0xB3, 0xF8, 0xC4, 0xF2,
    0x26, 0x2B, 0xD8, 0x7C, 0xFC, 0x23, 0x24, 0x66, 0xEF, 0x69, 0x64, 0x50, 0x54, 0x59, 0xF1, 0xA0, 0x74, 0xAC, 0xC6,
    0x7D, 0xB5, 0xE6, 0xE2, 0xC2, 0x7E, 0x67, 0x17, 0x5E, 0xE1, 0xB9, 0x3F, 0x6C, 0x70, 0x08, 0x99, 0x45, 0x56, 0x76,
    0xF9, 0x9A, 0x97, 0x19, 0x72, 0x5C, 0x02, 0x8F, 0x58,
];

/// The inverse of [`DECODE`]: what the client applies when it scrambles.
pub static ENCODE: [u8; 256] = invert(&DECODE);

const fn invert(table: &[u8; 256]) -> [u8; 256] {
    let mut out = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        out[table[i] as usize] = i as u8;
        i += 1;
    }
    out
}

/// The XOR key applied to even wire positions for a server listening on `server_port`.
#[inline(always)]
pub const fn port_key(server_port: u16) -> u8 {
    ((server_port ^ 0xCC) & 0xFF) as u8
}

/// Decodes the wire byte at position `i >= 1`.
#[inline(always)]
pub fn decode_byte(wire: u8, i: usize, key: u8) -> u8 {
    let k = if i & 1 == 0 { key } else { 0 };
    // SAFETY: `table_index` is below 256, the table's length. (Indexing
    // would bring back a bounds check the compiler cannot drop past the
    // assembly, and a panic call the verifier refuses.)
    unsafe { *DECODE.get_unchecked(table_index(wire ^ k)) }
}

/// `byte` as an index (always below 256) into a 256-entry table, in a form every verifier
/// accepts. The compiler knows a `u8` is below 256 and drops any mask, but
/// the 6.1 verifier loses the bound of two loaded bytes across an XOR (its
/// "math between map_value pointer and register with unbounded min value").
/// On the BPF target the mask is written in assembly, where the compiler
/// cannot remove it: one `&= 255` the verifier reads as "0..=255".
#[inline(always)]
pub fn table_index(byte: u8) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        let mut i = byte as u64;
        // SAFETY: a register-only AND; no memory, no side effects.
        unsafe { core::arch::asm!("{0} &= 255", inout(reg) i, options(pure, nomem, nostack)) };
        i as usize
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        byte as usize
    }
}

/// True when a 4-byte client datagram is a well-formed, correctly checksummed
/// ID_OPEN_CONNECTION_REQUEST for a server on `server_port`. This is all the data
/// plane needs to tell a real client's first datagram from junk.
#[inline(always)]
pub fn is_handshake_request(wire: [u8; 4], server_port: u16) -> bool {
    let key = port_key(server_port);
    let id = decode_byte(wire[1], 1, 0);
    if id != ID_OPEN_CONNECTION_REQUEST {
        return false;
    }
    let lo = decode_byte(wire[2], 2, key);
    let hi = decode_byte(wire[3], 3, key);
    wire[0] == (id & 0xAA) ^ (lo & 0xAA) ^ (hi & 0xAA)
}

/// Scrambles `plain` (a RakNet datagram) as the SA:MP client does, into `out`,
/// which must hold `plain.len() + 1` bytes. Returns the wire length.
pub fn scramble(plain: &[u8], server_port: u16, out: &mut [u8]) -> usize {
    let key = port_key(server_port);
    let mut checksum = 0u8;
    for (n, &b) in plain.iter().enumerate() {
        let i = n + 1;
        checksum ^= b & 0xAA;
        let k = if i & 1 == 0 { key } else { 0 };
        out[i] = ENCODE[b as usize] ^ k;
    }
    out[0] = checksum;
    plain.len() + 1
}

/// Un-scrambles a client datagram as open.mp does, into `out` (at least
/// `wire.len() - 1` bytes). Returns the plain length, or `None` when the
/// datagram is empty or its checksum fails (the server drops it).
pub fn unscramble(wire: &[u8], server_port: u16, out: &mut [u8]) -> Option<usize> {
    if wire.len() < 2 {
        return None;
    }
    let key = port_key(server_port);
    let mut checksum = 0u8;
    for i in 1..wire.len() {
        let b = decode_byte(wire[i], i, key);
        checksum ^= b & 0xAA;
        out[i - 1] = b;
    }
    (checksum == wire[0]).then_some(wire.len() - 1)
}

/// True when a datagram is a query (the server answers it, it is never scrambled).
#[inline(always)]
pub fn is_query(payload: &[u8]) -> bool {
    payload.len() >= QUERY_HEADER_LEN && payload[..4] == QUERY_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_inverse_permutations() {
        for b in 0..=255u8 {
            assert_eq!(DECODE[ENCODE[b as usize] as usize], b);
        }
    }

    #[test]
    fn scramble_round_trips_for_any_port() {
        let plain = [ID_OPEN_CONNECTION_REQUEST, 0x34, 0x12, 200, 7];
        for port in [7777u16, 7778, 1, 65535] {
            let mut wire = [0u8; 6];
            let n = scramble(&plain, port, &mut wire);
            let mut back = [0u8; 5];
            assert_eq!(unscramble(&wire[..n], port, &mut back), Some(5));
            assert_eq!(back, plain);
            // The id byte sits at an odd position: port independent.
            assert_eq!(DECODE[wire[1] as usize], ID_OPEN_CONNECTION_REQUEST);
        }
    }

    #[test]
    fn handshake_is_recognised_and_a_bad_checksum_is_not() {
        let mut wire = [0u8; 4];
        scramble(&[ID_OPEN_CONNECTION_REQUEST, 0xAD, 0xDE], 7777, &mut wire);
        assert!(is_handshake_request(wire, 7777));
        let mut bad = wire;
        bad[0] ^= 0x02;
        assert!(!is_handshake_request(bad, 7777));
        let mut other = [0u8; 4];
        scramble(&[207, 0xAD, 0xDE], 7777, &mut other);
        assert!(!is_handshake_request(other, 7777));
    }

    #[test]
    fn a_wrong_server_port_fails_the_checksum_for_most_cookies() {
        let mut fails = 0;
        for cookie in 0..=255u8 {
            let mut wire = [0u8; 4];
            scramble(&[ID_OPEN_CONNECTION_REQUEST, cookie, cookie ^ 0x5A], 7777, &mut wire);
            let mut out = [0u8; 3];
            if unscramble(&wire, 7778, &mut out) != Some(3) || out[1] != cookie {
                fails += 1;
            }
        }
        assert!(fails > 200, "only {fails} of 256 cookies decoded wrongly under the wrong port");
    }
}
