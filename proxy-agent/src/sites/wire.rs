//! The inner packet of the agent's own tunnel traffic: an IPv4 header
//! (no options, don't fragment) and a UDP header, both with their checksums,
//! as a kernel would send them; and the reverse, checked whole.

use std::net::{Ipv4Addr, SocketAddrV4};

const HEADERS: usize = 20 + 8;
const UDP: u8 = 17;

/// `payload` from `src` to `dst`, as an IPv4/UDP packet.
pub fn inner_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = (HEADERS + payload.len()) as u16;
    let udp_len = (8 + payload.len()) as u16;
    let mut p = Vec::with_capacity(total as usize);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, UDP, 0, 0]);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    let ip_check = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&ip_check.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let udp_check = match checksum(&p[20..], pseudo_header(*src.ip(), *dst.ip(), udp_len)) {
        0 => 0xffff, // 0 means "no checksum" in UDP
        c => c,
    };
    p[26..28].copy_from_slice(&udp_check.to_be_bytes());
    p
}

/// An inner packet read back: its addresses and its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Inner<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: &'a [u8],
}

/// `datagram` (a tunnel's UDP payload) as one whole IPv4/UDP packet with
/// a right header checksum; `None` for anything else.
pub fn parse(datagram: &[u8]) -> Option<Inner<'_>> {
    if datagram.len() < HEADERS || datagram[0] != 0x45 || datagram[9] != UDP {
        return None;
    }
    let total = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let udp_len = u16::from_be_bytes([datagram[24], datagram[25]]) as usize;
    if total != datagram.len() || udp_len < 8 || udp_len > total - 20 || checksum(&datagram[..20], 0) != 0 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]);
    let port = |at: usize| u16::from_be_bytes([datagram[at], datagram[at + 1]]);
    Some(Inner {
        src: SocketAddrV4::new(addr(12), port(20)),
        dst: SocketAddrV4::new(addr(16), port(22)),
        payload: &datagram[28..20 + udp_len],
    })
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let words = |a: Ipv4Addr| {
        let o = a.octets();
        u16::from_be_bytes([o[0], o[1]]) as u32 + u16::from_be_bytes([o[2], o[3]]) as u32
    };
    words(src) + words(dst) + UDP as u32 + udp_len as u32
}

/// The Internet checksum of `data` (RFC 1071) over a starting sum.
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        sum += u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_reads_back_with_right_checksums() {
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 60, 1), 40_000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 18, 71, 2), 7777);
        let p = inner_packet(src, dst, b"SAMP-ping");
        let inner = parse(&p).expect("whole");
        assert_eq!((inner.src, inner.dst, inner.payload), (src, dst, &b"SAMP-ping"[..]));
        // The UDP checksum over the pseudo-header and the datagram sums to zero.
        let udp_len = (p.len() - 20) as u16;
        assert_eq!(checksum(&p[20..], pseudo_header(*src.ip(), *dst.ip(), udp_len)), 0);
        // Odd lengths, a corrupt header, a short or padded buffer: refused.
        assert!(parse(&inner_packet(src, dst, b"odd")).is_some());
        let mut bad = p.clone();
        bad[8] ^= 1;
        assert_eq!(parse(&bad), None);
        assert_eq!(parse(&p[..p.len() - 1]), None);
        let mut padded = p.clone();
        padded.push(0);
        assert_eq!(parse(&padded), None);
        assert_eq!(parse(&[0u8; 10]), None);
    }
}
