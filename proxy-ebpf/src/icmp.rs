//! ICMP errors about a player's packet to a shard. When a shard's process
//! dies while its host lives, its kernel answers every player packet with
//! ICMP port unreachable, addressed to the player, from the shard's own
//! address, quoting the packet (to the shard's address and game port): what
//! an attacker needs to go around the proxy. So any ICMP error that quotes a
//! UDP packet to a shard's address and frontend port is dropped
//! (`drop_shard_icmp`), whatever its headers carry (IPv4 options included),
//! unless it is for this node itself (the agent's own probe: the FIB says
//! local) or for another proxy node (`PEERS`: an ingress node's probe,
//! crossing a game node).
//!
//! A port unreachable from the shard itself also tells the agent at once
//! (`SESSION_SHARD_REFUSED` in the session-event ring, at most one per shard
//! every `SHARD_REFUSED_GAP_NS`), which probes that shard outside its round.
//! Other ICMP passes untouched, counted as before (`pass_not_udp`,
//! `pass_ip_options`, `pass_fragment`).
//!
//! The quote parser (`quoting_a_shard`) reads any `Frame`, so the egress
//! guard (`egress`, TC) judges the ICMP errors this node's own kernel sends
//! with the very same code.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_ktime_get_coarse_ns,
    programs::{TcContext, XdpContext},
};
use network_types::ip::Ipv4Hdr;
use proxy_common::{Counter, Reverse, SessionKey, SESSION_SHARD_REFUSED, SHARD_REFUSED_GAP_NS};

use crate::{
    events, forward,
    maps::{self, SHARD_REFUSED_AT},
    parse::{IP_MF_OR_OFFSET, IP_OFFSET, L3_OFF},
    stats::verdict,
};

const IPPROTO_UDP: u8 = 17;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;

/// The ICMP header of an error message; the quoted datagram follows it.
#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    _check: [u8; 2],
    _unused: [u8; 4],
}

/// The first four bytes of the quoted UDP header.
#[repr(C)]
struct Ports {
    src: [u8; 2],
    dst: [u8; 2],
}

/// The ICMP types that quote the datagram they are about (RFC 792):
/// destination unreachable, source quench, redirect, time exceeded,
/// parameter problem.
#[inline(always)]
fn quotes_a_datagram(kind: u8) -> bool {
    matches!(kind, 3 | 4 | 5 | 11 | 12)
}

/// The bytes of a packet as either hook sees them, from the Ethernet
/// header on: XDP's frame, or the linear part of TC's skb.
pub trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
}

/// Both contexts name the frame's bounds `data` and `data_end`.
macro_rules! frame_from_data {
    ($($ctx:ty),*) => {$(
        impl Frame for $ctx {
            #[inline(always)]
            fn start(&self) -> usize {
                self.data()
            }
            #[inline(always)]
            fn end(&self) -> usize {
                self.data_end()
            }
        }
    )*};
}
frame_from_data!(XdpContext, TcContext);

/// A pointer to a `T` at `offset` into the frame, or `None` past its end
/// (`parse::ptr_at` for any `Frame`).
#[inline(always)]
pub fn at<T>(frame: &impl Frame, offset: usize) -> Option<*const T> {
    let (start, end) = (frame.start(), frame.end());
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// An ICMP error that quotes a UDP packet to a shard's address and game
/// port: it names the shard.
pub struct ShardQuote {
    pub kind: u8,
    pub code: u8,
    /// The quoted packet's source address and port (the player's), map byte order.
    pub player: u32,
    pub player_port: u16,
    /// The quoted packet's destination: the shard.
    pub shard: u32,
    pub rev: Reverse,
}

/// `ip` was bounds-checked by `parse` (IPv4, IHL >= 5, ICMP, not a later fragment).
#[inline(always)]
pub fn handle(ctx: &XdpContext, ip: *mut Ipv4Hdr) -> u32 {
    // SAFETY: bounds-checked by `parse`.
    let outer = unsafe { &*ip };
    let Some(q) = quoting_a_shard(ctx, outer) else {
        return untouched(outer);
    };
    // It names a shard's address and game port: only proxy nodes may see it.
    let (src, dst) = (u32::from_ne_bytes(outer.src_addr), u32::from_ne_bytes(outer.dst_addr));
    if maps::is_peer(dst) || forward::icmp_is_local(ctx, src, dst, outer.tos, u16::from_be_bytes(outer.tot_len)) {
        return verdict(Counter::PassReplyLocal, xdp_action::XDP_PASS);
    }
    if q.kind == ICMP_DEST_UNREACH && q.code == ICMP_PORT_UNREACH && src == q.shard {
        let key = SessionKey { client_addr: q.player, client_port: q.player_port, frontend: q.rev.frontend };
        tell_agent(key, q.rev.backend);
    }
    verdict(Counter::DropShardIcmp, xdp_action::XDP_DROP)
}

/// What the ICMP error in `frame` quotes, when it is a UDP packet to a
/// shard's address and frontend port; `None` for anything else. `outer`
/// (IPv4, IHL >= 5, ICMP, not a later fragment) was bounds-checked by the
/// caller.
#[inline(always)]
pub fn quoting_a_shard(frame: &impl Frame, outer: &Ipv4Hdr) -> Option<ShardQuote> {
    let (icmp, inner, ports) = quoted_udp(frame, outer)?;
    // SAFETY: bounds-checked by `quoted_udp`.
    let (icmp, inner, ports) = unsafe { (&*icmp, &*inner, &*ports) };
    let shard = u32::from_ne_bytes(inner.dst_addr);
    let rev = maps::reverse(shard)?;
    if u16::from_ne_bytes(ports.dst) != rev.port {
        return None;
    }
    Some(ShardQuote {
        kind: icmp.kind,
        code: icmp.code,
        player: u32::from_ne_bytes(inner.src_addr),
        player_port: u16::from_ne_bytes(ports.src),
        shard,
        rev,
    })
}

/// The ICMP header, the quoted IPv4 header and the quoted UDP ports of an
/// ICMP error about a UDP datagram; `None` for anything else. Both IPv4
/// headers may carry options.
#[inline(always)]
fn quoted_udp(frame: &impl Frame, outer: &Ipv4Hdr) -> Option<(*const IcmpHdr, *const Ipv4Hdr, *const Ports)> {
    let icmp_off = L3_OFF + (outer.vihl & 0x0f) as usize * 4;
    let icmp = at::<IcmpHdr>(frame, icmp_off)?;
    // SAFETY: bounds-checked by `at`.
    if !quotes_a_datagram(unsafe { (*icmp).kind }) {
        return None;
    }
    let inner_off = icmp_off + core::mem::size_of::<IcmpHdr>();
    let inner = at::<Ipv4Hdr>(frame, inner_off)?;
    // SAFETY: bounds-checked by `at`.
    let q = unsafe { &*inner };
    let ihl = q.vihl & 0x0f;
    // A later fragment quotes no UDP header.
    if q.vihl >> 4 != 4 || ihl < 5 || q.proto != IPPROTO_UDP || u16::from_be_bytes(q.frags) & IP_OFFSET != 0 {
        return None;
    }
    let ports = at::<Ports>(frame, inner_off + ihl as usize * 4)?;
    Some((icmp, inner, ports))
}

/// At most one event per shard every `SHARD_REFUSED_GAP_NS`: the agent
/// needs one to probe the shard, and a dying shard refuses every player's
/// every packet (bounded only by its kernel's ICMP rate limit).
#[inline(always)]
fn tell_agent(key: SessionKey, backend: u32) {
    let Some(at) = SHARD_REFUSED_AT.get_ptr_mut(backend) else {
        return;
    };
    // SAFETY: coarse clock helper, no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a plain u64 slot of an array map; two CPUs racing on it cost
    // at most one more event.
    unsafe {
        if now.wrapping_sub(*at) < SHARD_REFUSED_GAP_NS {
            return;
        }
        *at = now;
    }
    events::session(key, SESSION_SHARD_REFUSED, backend, 0);
}

/// Not ours: passed untouched, counted as the parser counted such frames
/// before ICMP was looked into.
#[inline(always)]
fn untouched(outer: &Ipv4Hdr) -> u32 {
    let counter = if outer.vihl & 0x0f != 5 {
        Counter::PassIpOptions
    } else if u16::from_be_bytes(outer.frags) & IP_MF_OR_OFFSET != 0 {
        Counter::PassFragment
    } else {
        Counter::PassNotUdp
    };
    verdict(counter, xdp_action::XDP_PASS)
}
