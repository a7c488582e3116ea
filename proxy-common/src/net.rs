//! Conversions between host values and the network-order integers the maps hold.

/// An IPv4 address as stored in maps: the four octets as they stand in the header.
#[inline(always)]
pub const fn addr_to_map(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The octets of a map-stored IPv4 address.
#[inline(always)]
pub const fn addr_from_map(addr: u32) -> [u8; 4] {
    addr.to_ne_bytes()
}

/// A UDP port as stored in maps: the two bytes as they stand in the header.
#[inline(always)]
pub const fn port_to_map(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

/// The host value of a map-stored port.
#[inline(always)]
pub const fn port_from_map(port: u16) -> u16 {
    u16::from_be_bytes(port.to_ne_bytes())
}

/// The placement hash of a client: a cheap, well-mixed function of the client's
/// address and port (murmur3's 64-bit finaliser). The data plane and the agent
/// (for tests and `explain`) must agree, so it lives here.
#[inline(always)]
pub const fn client_hash(client_addr: u32, client_port: u16) -> u32 {
    let mut h = ((client_addr as u64) << 16) | client_port as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}
