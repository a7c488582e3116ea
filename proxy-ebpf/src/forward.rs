//! Sending a rewritten packet on: `bpf_fib_lookup` gives the egress interface
//! and MAC addresses; we fill them in, decrement the TTL like any router, and
//! redirect. When the kernel must first resolve the neighbour we pass the
//! (already rewritten) packet up and the kernel forwards it.

use core::mem;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use proxy_common::{csum, NextHop, NEXTHOP_TTL_NS};

use crate::{
    maps::{BACKEND_NEXTHOP, CLIENT_NEXTHOP},
    parse::Packet,
};

const AF_INET: u8 = 2;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;

/// What the FIB said about the packet's destination.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Forward out of `ifindex` with these MACs.
    Interface,
    /// Routable, but the neighbour is not resolved yet: let the kernel do it.
    NoNeighbour,
    /// The destination is this host (or forwarding is off): not ours to rewrite.
    Local,
    /// Blackhole, unreachable, prohibited or unsupported.
    Unroutable,
}

/// A route: a plain struct, every byte set whatever the kind, because the
/// verifier refuses to copy the undefined payload of an enum variant.
#[derive(Clone, Copy)]
pub struct Route {
    pub via: Via,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

impl Route {
    #[inline(always)]
    fn interface(ifindex: u32, smac: [u8; 6], dmac: [u8; 6]) -> Self {
        Route { via: Via::Interface, ifindex, smac, dmac }
    }

    #[inline(always)]
    fn only(via: Via) -> Self {
        Route { via, ifindex: 0, smac: [0; 6], dmac: [0; 6] }
    }

    /// Not ours to forward: the destination is local or unreachable.
    #[inline(always)]
    pub fn is_dead_end(&self) -> bool {
        matches!(self.via, Via::Local | Via::Unroutable)
    }
}

/// Looks up the route for the packet as it will be after the rewrite:
/// `src`/`dst` are the new addresses.
#[inline(always)]
pub fn route(ctx: &XdpContext, pkt: &Packet, src: u32, dst: u32) -> Route {
    // SAFETY: FibParams is plain old data; all-zero is a valid request.
    let mut p: FibParams = unsafe { mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = IPPROTO_UDP;
    p.sport = pkt.src_port();
    p.dport = pkt.dst_port();
    p.__bindgen_anon_1.tot_len = pkt.ip_len();
    // SAFETY: `ip` was bounds-checked when parsed.
    p.__bindgen_anon_2.tos = unsafe { (*pkt.ip).tos };
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: the context pointer is valid for the program's run.
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: `p` is a valid, initialised parameter block of the right size.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, &mut p as *mut _, mem::size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Route::interface(p.ifindex, p.smac, p.dmac),
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::only(Via::NoNeighbour),
        BPF_FIB_LKUP_RET_NOT_FWDED => Route::only(Via::Local),
        _ => Route::only(Via::Unroutable),
    }
}

/// True when the FIB hands an ICMP packet from `src` to `dst` to this host
/// (a local destination, or forwarding off): a socket here gets it.
#[inline(always)]
pub fn icmp_is_local(ctx: &XdpContext, src: u32, dst: u32, tos: u8, tot_len: u16) -> bool {
    // SAFETY: FibParams is plain old data; all-zero is a valid request.
    let mut p: FibParams = unsafe { mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = IPPROTO_ICMP;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.__bindgen_anon_2.tos = tos;
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: the context pointer is valid for the program's run.
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: `p` is a valid, initialised parameter block of the right size.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, &mut p as *mut _, mem::size_of::<FibParams>() as i32, 0) };
    rc as u32 == BPF_FIB_LKUP_RET_NOT_FWDED
}

/// A fresh cached answer, else the FIB's (cached again when it is a route).
/// The cache is keyed by destination only: policy routing by source is not
/// supported, and a route or neighbour change takes up to NEXTHOP_TTL_NS.
#[inline(always)]
fn cached(ctx: &XdpContext, pkt: &Packet, src: u32, dst: u32, now: u64, slot: Option<*mut NextHop>) -> (Route, bool) {
    if let Some(nh) = slot {
        // SAFETY: a per-CPU map value; XDP is not preempted on this CPU.
        let nh = unsafe { &*nh };
        if nh.ifindex != 0 && nh.expires_ns > now {
            return (Route::interface(nh.ifindex, nh.smac, nh.dmac), false);
        }
    }
    (route(ctx, pkt, src, dst), true)
}

fn to_cache(route: &Route, now: u64) -> Option<NextHop> {
    match route.via {
        Via::Interface => Some(NextHop {
            ifindex: route.ifindex,
            smac: route.smac,
            dmac: route.dmac,
            expires_ns: now + NEXTHOP_TTL_NS,
        }),
        _ => None,
    }
}

/// The route to a backend's shard, through the per-CPU per-backend cache.
#[inline(always)]
pub fn route_to_backend(ctx: &XdpContext, pkt: &Packet, backend_id: u32, dst: u32, now: u64) -> Route {
    let slot = BACKEND_NEXTHOP.get_ptr_mut(backend_id);
    let (route, fresh) = cached(ctx, pkt, pkt.src_addr(), dst, now, slot);
    if fresh {
        if let (Some(slot), Some(nh)) = (slot, to_cache(&route, now)) {
            // SAFETY: as in `cached`.
            unsafe { *slot = nh };
        }
    }
    route
}

/// The route back to a client, through the per-CPU LRU cache.
#[inline(always)]
pub fn route_to_client(ctx: &XdpContext, pkt: &Packet, src: u32, now: u64) -> Route {
    let dst = pkt.dst_addr();
    let slot = CLIENT_NEXTHOP.get_ptr_mut(dst);
    let (route, fresh) = cached(ctx, pkt, src, dst, now, slot);
    if fresh {
        if let Some(nh) = to_cache(&route, now) {
            let _ = CLIENT_NEXTHOP.insert(dst, nh, 0);
        }
    }
    route
}

/// Sets the MACs, decrements the TTL and redirects. The caller has checked
/// the TTL is above 1.
#[inline(always)]
pub fn redirect(pkt: &Packet, ifindex: u32, smac: [u8; 6], dmac: [u8; 6]) -> u32 {
    // SAFETY: `eth` and `ip` were bounds-checked when parsed.
    unsafe {
        (*pkt.eth).src_addr = smac;
        (*pkt.eth).dst_addr = dmac;
        let ip = &mut *pkt.ip;
        let old = u16::from_ne_bytes([ip.ttl, ip.proto]);
        ip.ttl -= 1;
        let new = u16::from_ne_bytes([ip.ttl, ip.proto]);
        let check = csum::replace2(u16::from_ne_bytes(ip.check), old, new);
        ip.check = check.to_ne_bytes();
    }
    // SAFETY: a plain helper call; an invalid ifindex makes it return XDP_ABORTED.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// TTL <= 1 must not be forwarded by us: the kernel answers with ICMP.
#[inline(always)]
pub fn ttl_expiring(pkt: &Packet) -> bool {
    // SAFETY: `ip` was bounds-checked when parsed.
    unsafe { (*pkt.ip).ttl <= 1 }
}

/// Rewrites one IPv4 address of the packet (`dst` or `src`), fixing the IP
/// and UDP checksums incrementally. The port is never touched (SA:MP rule 1).
#[inline(always)]
pub fn rewrite_addr(pkt: &Packet, which: Addr, new: u32) {
    // SAFETY: `ip` and `udp` were bounds-checked when parsed.
    unsafe {
        let ip = &mut *pkt.ip;
        let field = match which {
            Addr::Src => &mut ip.src_addr,
            Addr::Dst => &mut ip.dst_addr,
        };
        let old = u32::from_ne_bytes(*field);
        *field = new.to_ne_bytes();
        ip.check = csum::replace4(u16::from_ne_bytes(ip.check), old, new).to_ne_bytes();
        let udp = &mut *pkt.udp;
        udp.check = csum::udp_replace4(u16::from_ne_bytes(udp.check), old, new).to_ne_bytes();
    }
}

pub enum Addr {
    Src,
    Dst,
}

/// What became of a rewritten packet.
pub enum Sent {
    Redirected(u32),
    Passed,
}

#[inline(always)]
pub fn send(pkt: &Packet, route: Route) -> Sent {
    match route.via {
        Via::Interface => Sent::Redirected(redirect(pkt, route.ifindex, route.smac, route.dmac)),
        // Local and Unroutable were handled by the caller before rewriting;
        // passing them up is the safe default should that ever change.
        Via::NoNeighbour | Via::Local | Via::Unroutable => Sent::Passed,
    }
}
