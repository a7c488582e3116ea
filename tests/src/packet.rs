//! Building Ethernet/IPv4/UDP frames from scratch, with checksums computed
//! from first principles: the fixtures' inputs and expected outputs.

use std::net::Ipv4Addr;

use proxy_common::csum::{finish_be, sum_be};

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const HEADERS: usize = ETH_LEN + IP_LEN + UDP_LEN;

#[derive(Clone, Debug)]
pub struct Udp {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub id: u16,
    /// Send a zero UDP checksum ("none").
    pub zero_udp_checksum: bool,
    pub payload: Vec<u8>,
}

impl Udp {
    pub fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 0xaa],
            dst_mac: [0x02, 0, 0, 0, 0, 0xbb],
            src,
            dst,
            sport,
            dport,
            ttl: 64,
            id: 0x1c46,
            zero_udp_checksum: false,
            payload: payload.to_vec(),
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        let udp_len = (UDP_LEN + self.payload.len()) as u16;
        let ip_len = IP_LEN as u16 + udp_len;
        let mut f = Vec::with_capacity(HEADERS + self.payload.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; IP_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&self.id.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = self.ttl;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let c = finish_be(sum_be(&ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut udp = Vec::with_capacity(udp_len as usize);
        udp.extend_from_slice(&self.sport.to_be_bytes());
        udp.extend_from_slice(&self.dport.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);
        if !self.zero_udp_checksum {
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&self.src.octets());
            pseudo.extend_from_slice(&self.dst.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
            let c = match finish_be(sum_be(&udp, sum_be(&pseudo, 0))) {
                0 => 0xffff,
                c => c,
            };
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(&udp);
        f
    }
}

/// True when the IPv4 header checksum of a frame verifies.
pub fn ipv4_checksum_ok(frame: &[u8]) -> bool {
    finish_be(sum_be(&frame[ETH_LEN..ETH_LEN + IP_LEN], 0)) == 0
}

/// True when the UDP checksum verifies (or is zero, meaning none).
pub fn udp_checksum_ok(frame: &[u8]) -> bool {
    let ip = &frame[ETH_LEN..ETH_LEN + IP_LEN];
    let udp = &frame[ETH_LEN + IP_LEN..];
    if udp[6..8] == [0, 0] {
        return true;
    }
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    finish_be(sum_be(udp, sum_be(&pseudo, 0))) == 0
}

/// An ICMP error as a kernel sends it: from `src` to `dst`, quoting the
/// IPv4 packet it is about (`about` is a frame from `Udp::frame`; its
/// Ethernet header is left out).
#[derive(Clone, Debug)]
pub struct IcmpError {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub kind: u8,
    pub code: u8,
    pub ttl: u8,
    /// Options of the outer IPv4 header (a multiple of 4 bytes).
    pub options: Vec<u8>,
    /// The quoted IPv4 packet (header and as much of the rest as is kept).
    pub quoted: Vec<u8>,
}

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_HOST_UNREACH: u8 = 1;

impl IcmpError {
    /// A port unreachable from `src` to `dst` about `about`, quoted whole.
    pub fn port_unreachable(src: Ipv4Addr, dst: Ipv4Addr, about: &Udp) -> Self {
        Self::about(src, dst, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, about)
    }

    pub fn about(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, about: &Udp) -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 0xaa],
            dst_mac: [0x02, 0, 0, 0, 0, 0xbb],
            src,
            dst,
            kind,
            code,
            ttl: 64,
            options: Vec::new(),
            quoted: about.frame()[ETH_LEN..].to_vec(),
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0, "IPv4 options come in 4-byte words");
        let ip_hdr = IP_LEN + self.options.len();
        let mut icmp = vec![self.kind, self.code, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&self.quoted);
        let c = finish_be(sum_be(&icmp, 0));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = vec![0u8; IP_LEN];
        ip[0] = 0x40 | (ip_hdr / 4) as u8;
        ip[0x1] = 0xc0; // the precedence a kernel gives its ICMP errors
        ip[2..4].copy_from_slice(&((ip_hdr + icmp.len()) as u16).to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = 1;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.options);
        let c = finish_be(sum_be(&ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = Vec::with_capacity(ETH_LEN + ip.len() + icmp.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&icmp);
        f
    }
}
