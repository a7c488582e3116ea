//! Tunnels between sites (FOU, which is GUE variant 1: outer IPv4 and UDP,
//! then the inner IPv4 packet unchanged). Providers drop packets whose
//! source is not their own (BCP 38), so a player's packet for a shard in
//! another data centre leaves inside one from this node's own address, and
//! the shard's replies come back the same way.
//!
//! One receive path serves both ends, told apart by the inner packet:
//! * to a shard of this node whose replies go back through the tunnel
//!   (`REVERSE` with no VIP): a remote node delivers it, and remembers which
//!   ingress node the player came through (`RETURN_VIA`);
//! * from a shard of the peer's site (`REVERSE` with a VIP): an ingress node
//!   sends it to the player from the VIP, as any reply, and never passes it
//!   on unrewritten;
//! * to the outer destination itself: the agent's own traffic (probes
//!   through the tunnel, heartbeats), passed up to its socket.
//!
//! Only configured peers (`TUNNEL_PEERS`) may send tunnel packets: a forged
//! one would claim any player's address.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use network_types::{ip::Ipv4Hdr, udp::UdpHdr};
use proxy_common::{Counter, PlayerAddr, Reverse, Tunnel, TUNNEL_OVERHEAD};

use crate::{
    cache,
    forward::{self, Addr, Route, Sent, Via},
    maps::{self, RETURN_VIA},
    parse::{self, ptr_at, Packet, Parsed, IP_MF_OR_OFFSET, PAYLOAD_OFF},
    stats::{self, verdict},
};

const IPPROTO_UDP: u8 = 17;
/// Ethernet, outer IPv4, outer UDP: what `push` writes in front.
const OUTER_LEN: usize = 14 + 20 + 8;
const _: () = assert!(OUTER_LEN - 14 == TUNNEL_OVERHEAD as usize);

/// The inner packet of a tunnel packet, checked whole.
struct Inner {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
}

/// What became of a tunnel packet.
pub enum Received {
    /// Dealt with here: the verdict.
    Done(u32),
    /// A shard's reply, decapsulated (the frame is now the inner packet):
    /// the caller sends it on by the reply path, `Arrived::Tunnelled`. One
    /// call site of the reply path keeps it inlined once (the 6.1 verifier
    /// counts every inlined copy's stack).
    Reply(Packet, Reverse),
}

/// A UDP packet to this node's tunnel endpoint.
#[inline(always)]
pub fn receive(ctx: &XdpContext, pkt: &Packet) -> Received {
    let done = |counter, action| Received::Done(verdict(counter, action));
    let Some(peer) = maps::tunnel_peer(pkt.src_addr()) else {
        return done(Counter::DropTunnelForeign, xdp_action::XDP_DROP);
    };
    let Some(inner) = inner(ctx, pkt) else {
        return done(Counter::DropTunnelMalformed, xdp_action::XDP_DROP);
    };
    if inner.dst == pkt.dst_addr() {
        return done(Counter::PassTunnelAgent, xdp_action::XDP_PASS);
    }
    if let Some(rev) = cache::reverse(inner.dst) {
        if rev.vip == 0 && rev.port == inner.dport {
            return Received::Done(to_shard(ctx, pkt, &inner));
        }
    }
    if let Some(rev) = cache::reverse(inner.src) {
        let site = maps::backend(rev.backend).map(|b| b.site).unwrap_or(0);
        if rev.vip != 0 && rev.port == inner.sport && site != 0 && site == peer.site {
            return from_shard(ctx, rev);
        }
    }
    done(Counter::DropTunnelNotShard, xdp_action::XDP_DROP)
}

/// The inner packet, when it is one whole UDP/IPv4 datagram without
/// options or fragments that fills the outer payload exactly.
#[inline(always)]
fn inner(ctx: &XdpContext, pkt: &Packet) -> Option<Inner> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, PAYLOAD_OFF)?;
    let udp = ptr_at::<UdpHdr>(ctx, PAYLOAD_OFF + Ipv4Hdr::LEN)?;
    // SAFETY: bounds-checked by `ptr_at`.
    let (ip, udp) = unsafe { (&*ip, &*udp) };
    let total = u16::from_be_bytes(ip.tot_len) as usize;
    let udp_len = u16::from_be_bytes(udp.len) as usize;
    let whole = ip.vihl == 0x45
        && ip.proto == IPPROTO_UDP
        && u16::from_be_bytes(ip.frags) & IP_MF_OR_OFFSET == 0
        && total == pkt.payload_len
        && udp_len >= UdpHdr::LEN
        && udp_len <= total - Ipv4Hdr::LEN;
    whole.then(|| Inner {
        src: u32::from_ne_bytes(ip.src_addr),
        dst: u32::from_ne_bytes(ip.dst_addr),
        sport: u16::from_ne_bytes(udp.src),
        dport: u16::from_ne_bytes(udp.dst),
    })
}

/// Strips the outer headers, keeping the Ethernet header in front (its
/// destination is this interface: the kernel takes a passed frame); the
/// inner packet, parsed, is then the frame's.
#[inline(always)]
fn decapsulate(ctx: &XdpContext) -> Option<Packet> {
    // SAFETY: bounds-checked by the parser before.
    let eth = unsafe { *ptr_at::<[u8; 14]>(ctx, 0)? };
    // SAFETY: the helper checks the new start against the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, TUNNEL_OVERHEAD as i32) } != 0 {
        return None;
    }
    let head = ptr_at::<[u8; 14]>(ctx, 0)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *head = eth };
    match parse::parse(ctx) {
        Parsed::Udp(p) => Some(p),
        _ => None,
    }
}

/// A remote node: a player's packet for one of its shards.
#[inline(always)]
fn to_shard(ctx: &XdpContext, outer: &Packet, inner: &Inner) -> u32 {
    remember_ingress(inner, outer.src_addr());
    let Some(pkt) = decapsulate(ctx) else {
        return verdict(Counter::DropTunnelMalformed, xdp_action::XDP_DROP);
    };
    if forward::ttl_expiring(&pkt) {
        // Passed up, the kernel's time exceeded would leave the site bare.
        return verdict(Counter::DropUnroutable, xdp_action::XDP_DROP);
    }
    let route = forward::route_to_addr(ctx, &pkt, inner.src, inner.dst, cache::clock_ns());
    if route.is_dead_end() {
        return verdict(Counter::DropUnroutable, xdp_action::XDP_DROP);
    }
    stats::count(Counter::TunnelDecapShard);
    match forward::rewrite_and_send(ctx, &pkt, Addr::Dst, inner.dst, &route) {
        Sent::Redirected(action) => action,
        Sent::Passed => xdp_action::XDP_PASS,
    }
}

/// A remote node writes down the ingress node a player's packets came
/// through, once: its shard's replies go back there.
#[inline(always)]
fn remember_ingress(inner: &Inner, ingress: u32) {
    let key = PlayerAddr { addr: inner.src, port: inner.sport, _pad: 0 };
    // SAFETY: the value is copied out at once.
    if unsafe { RETURN_VIA.get(&key) }.copied() != Some(ingress) {
        let _ = RETURN_VIA.insert(&key, &ingress, 0);
    }
}

/// An ingress node: a shard's reply from another site, decapsulated for
/// the reply path, which sends it to the player from the VIP (or drops it:
/// never passed on with the shard's address).
#[inline(always)]
fn from_shard(ctx: &XdpContext, rev: Reverse) -> Received {
    let Some(pkt) = decapsulate(ctx) else {
        return Received::Done(verdict(Counter::DropTunnelMalformed, xdp_action::XDP_DROP));
    };
    stats::count(Counter::TunnelDecapReply);
    Received::Reply(pkt, rev)
}

/// A remote node: a reply of one of its shards (`REVERSE` with no VIP),
/// encapsulated back to the ingress node its player came through.
#[inline(always)]
pub fn reply_out(ctx: &XdpContext, pkt: &Packet, rev: Reverse) -> u32 {
    if pkt.src_port() != rev.port {
        return verdict(Counter::PassNotOurs, xdp_action::XDP_PASS);
    }
    let key = PlayerAddr { addr: pkt.dst_addr(), port: pkt.dst_port(), _pad: 0 };
    // SAFETY: the value is copied out at once.
    let via = unsafe { RETURN_VIA.get(&key) }.copied().unwrap_or(pkt.dst_addr());
    // An answer to an ingress agent's probe goes to that agent's node.
    let Some(peer) = maps::tunnel_peer(via) else {
        return verdict(Counter::DropTunnelNoReturn, xdp_action::XDP_DROP);
    };
    if forward::ttl_expiring(pkt) {
        return verdict(Counter::DropUnroutable, xdp_action::XDP_DROP);
    }
    let route = forward::route_to_addr(ctx, pkt, peer.local_addr, peer.peer_addr, cache::clock_ns());
    if let Err(action) = fits(pkt, &peer, &route) {
        return action;
    }
    let mut route = route;
    route.tunnel = peer;
    // The inner packet loses one TTL here, as at any router.
    forward::rewrite(pkt, Addr::Src, pkt.src_addr(), true);
    let flow = forward::flow_port_of(pkt.dst_addr(), pkt.dst_port());
    stats::count(Counter::TunnelEncapReply);
    push(ctx, pkt, &route, flow)
}

/// Ok when a packet of `pkt`'s size fits `tunnel` and `route` can be sent
/// on by this program; else the verdict.
#[inline(always)]
pub fn fits(pkt: &Packet, tunnel: &Tunnel, route: &Route) -> Result<(), u32> {
    if pkt.ip_len() as u32 + TUNNEL_OVERHEAD as u32 > tunnel.mtu as u32 {
        return Err(verdict(Counter::DropTunnelTooBig, xdp_action::XDP_DROP));
    }
    match route.via {
        Via::Interface => Ok(()),
        // Passed up, a packet from this node's own address is a martian to
        // its kernel: the next hop must be resolved (the agents' probes and
        // heartbeats keep it so).
        Via::Kernel => Err(verdict(Counter::DropTunnelNoNeigh, xdp_action::XDP_DROP)),
        Via::Local | Via::Unroutable => Err(verdict(Counter::DropUnroutable, xdp_action::XDP_DROP)),
    }
}

/// Encapsulates the frame, whose inner IPv4 packet is final, for
/// `route.tunnel` and sends it by `route` (an interface route). `flow` is
/// the outer UDP source port.
#[inline(always)]
pub fn push(ctx: &XdpContext, pkt: &Packet, route: &Route, flow: u16) -> u32 {
    // SAFETY: `ip` was bounds-checked when parsed.
    let tos = unsafe { (*pkt.ip).tos };
    // The packet's pointers die with the head's move: only numbers go on.
    wrap(ctx, route, pkt.ip_len(), tos, flow)
}

/// `push`'s work, a BPF-to-BPF call of its own: inlined, it held the
/// ingress path's values in spill slots through the deepest stretch of the
/// program's frame (see `frames`).
#[inline(never)]
fn wrap(ctx: &XdpContext, route: &Route, inner_len: u16, tos: u8, flow: u16) -> u32 {
    // SAFETY: the helper checks the new start against the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(TUNNEL_OVERHEAD as i32)) } != 0 {
        return verdict(Counter::DropTunnelNoRoom, xdp_action::XDP_DROP);
    }
    let Some(head) = ptr_at::<[u8; OUTER_LEN]>(ctx, 0) else {
        return verdict(Counter::DropTunnelNoRoom, xdp_action::XDP_DROP);
    };
    let t = &route.tunnel;
    // Written in place, field by field: a copy built on the stack first
    // would cost the 6.1 verifier's stack limit (512 bytes for all frames).
    // SAFETY: bounds-checked by `ptr_at`.
    let h = unsafe { &mut *head };
    h[..12].copy_from_slice(&route.macs);
    h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    write_ipv4_header(&mut h[14..34], tos, inner_len + TUNNEL_OVERHEAD, t.local_addr, t.peer_addr);
    h[34..36].copy_from_slice(&flow.to_be_bytes());
    h[36..38].copy_from_slice(&t.port.to_ne_bytes());
    h[38..40].copy_from_slice(&(inner_len + 8).to_be_bytes());
    // UDP checksum 0, as FOU sends: the inner packet has its own.
    h[40..42].copy_from_slice(&[0, 0]);
    forward::send_out(ctx, route.ifindex)
}

/// An outer IPv4 header into `h` (20 bytes): don't fragment, TTL 64, UDP,
/// its checksum.
#[inline(always)]
fn write_ipv4_header(h: &mut [u8], tos: u8, total: u16, src: u32, dst: u32) {
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]);
    h[6] = 0x40;
    h[7] = 0;
    h[8] = 64;
    h[9] = IPPROTO_UDP;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.to_ne_bytes());
    h[16..20].copy_from_slice(&dst.to_ne_bytes());
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        sum += u16::from_ne_bytes([h[i], h[i + 1]]) as u32;
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    h[10..12].copy_from_slice(&(!(sum as u16)).to_ne_bytes());
}
