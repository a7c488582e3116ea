//! Header parsing: every read goes through `ptr_at`, which proves bounds to the
//! verifier. Decides early what is not ours (pass) or malformed (drop).

use core::mem;

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use proxy_common::Counter;

const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
/// More-fragments flag and fragment offset bits of the IPv4 `frags` field.
pub const IP_MF_OR_OFFSET: u16 = 0x3fff;
/// Fragment offset bits of the IPv4 `frags` field.
pub const IP_OFFSET: u16 = 0x1fff;

pub const L3_OFF: usize = EthHdr::LEN;
pub const L4_OFF: usize = EthHdr::LEN + Ipv4Hdr::LEN;
pub const PAYLOAD_OFF: usize = L4_OFF + UdpHdr::LEN;

/// A pointer to a `T` at `offset` into the frame, or `None` past its end.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// A UDP/IPv4 frame without options or fragments, lengths checked.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    pub udp: *mut UdpHdr,
    /// UDP payload length from the UDP header (the frame may carry padding).
    pub payload_len: usize,
}

pub enum Parsed {
    Udp(Packet),
    /// ICMP (any IPv4 header length, not a later fragment): `icmp` decides.
    Icmp(*mut Ipv4Hdr),
    Pass(Counter),
    Drop(Counter),
}

impl Packet {
    #[inline(always)]
    pub fn src_addr(&self) -> u32 {
        // SAFETY: `ip` was bounds-checked in `parse`; the field is a byte array.
        u32::from_ne_bytes(unsafe { (*self.ip).src_addr })
    }
    #[inline(always)]
    pub fn dst_addr(&self) -> u32 {
        // SAFETY: as above.
        u32::from_ne_bytes(unsafe { (*self.ip).dst_addr })
    }
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        // SAFETY: `udp` was bounds-checked in `parse`.
        u16::from_ne_bytes(unsafe { (*self.udp).src })
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        // SAFETY: as above.
        u16::from_ne_bytes(unsafe { (*self.udp).dst })
    }
    /// IPv4 total length (host order): what forwarding and counters use.
    #[inline(always)]
    pub fn ip_len(&self) -> u16 {
        // SAFETY: as above.
        u16::from_be_bytes(unsafe { (*self.ip).tot_len })
    }
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Parsed::Drop(Counter::DropMalformed);
    };
    // SAFETY: bounds-checked by `ptr_at`.
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IPV4 {
        return Parsed::Pass(Counter::PassNotIpv4);
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, L3_OFF) else {
        return Parsed::Drop(Counter::DropMalformed);
    };
    // SAFETY: bounds-checked by `ptr_at`.
    let iph = unsafe { &*ip };
    let ihl = iph.vihl & 0x0f;
    if iph.vihl >> 4 != 4 || ihl < 5 {
        return Parsed::Drop(Counter::DropMalformed);
    }
    let frags = u16::from_be_bytes(iph.frags);
    // Before the options check: an ICMP error about a player's packet to a
    // shard must not pass whatever its header carries.
    if iph.proto == IPPROTO_ICMP && frags & IP_OFFSET == 0 {
        return Parsed::Icmp(ip);
    }
    if ihl != 5 {
        return Parsed::Pass(Counter::PassIpOptions);
    }
    if frags & IP_MF_OR_OFFSET != 0 {
        return Parsed::Pass(Counter::PassFragment);
    }
    if iph.proto != IPPROTO_UDP {
        return Parsed::Pass(Counter::PassNotUdp);
    }
    let Some(udp) = ptr_at::<UdpHdr>(ctx, L4_OFF) else {
        return Parsed::Drop(Counter::DropMalformed);
    };
    let frame_len = ctx.data_end() - ctx.data();
    let ip_len = u16::from_be_bytes(iph.tot_len) as usize;
    // SAFETY: bounds-checked by `ptr_at`.
    let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
    if ip_len > frame_len - L3_OFF
        || ip_len < Ipv4Hdr::LEN + UdpHdr::LEN
        || udp_len < UdpHdr::LEN
        || udp_len > ip_len - Ipv4Hdr::LEN
    {
        return Parsed::Drop(Counter::DropMalformed);
    }
    Parsed::Udp(Packet { eth, ip, udp, payload_len: udp_len - UdpHdr::LEN })
}
