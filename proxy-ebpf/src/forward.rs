//! Sending a rewritten packet on: `bpf_fib_lookup` gives the egress interface
//! and MAC addresses; we fill them in, decrement the TTL like any router, and
//! redirect. When the kernel must first resolve the neighbour, or the egress
//! interface takes no redirected frames (its driver needs an XDP program of
//! its own), we pass the (already rewritten) packet up and the kernel
//! forwards it. Only a FIB lookup asks, so the hit path pays nothing.

use core::mem;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::{bpf_fib_lookup, bpf_get_smp_processor_id, bpf_redirect},
    programs::XdpContext,
};
use proxy_common::{csum, NextHop, CLIENT_ROUTE_SETS, CLIENT_ROUTE_WAYS, NEXTHOP_TTL_NS};

use crate::{
    cache,
    maps::{self, BACKEND_NEXTHOP, CLIENT_ROUTES},
    parse::Packet,
};

const _: () = assert!(CLIENT_ROUTE_SETS.is_power_of_two());

const AF_INET: u8 = 2;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;

/// What the FIB said about the packet's destination.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Forward out of `ifindex` with these MACs.
    Interface,
    /// Routable, but the kernel must forward it: the neighbour is not
    /// resolved yet, or the egress interface takes no redirected frames
    /// (`REDIRECT_REFUSED`).
    Kernel,
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
    /// Destination then source MAC, as in the Ethernet header.
    macs: [u8; 12],
}

impl Route {
    #[inline(always)]
    fn interface(ifindex: u32, macs: [u8; 12]) -> Self {
        Route { via: Via::Interface, ifindex, macs }
    }

    #[inline(always)]
    fn only(via: Via) -> Self {
        Route { via, ifindex: 0, macs: [0; 12] }
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
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    p.ifindex = ingress;
    // SAFETY: `p` is a valid, initialised parameter block of the right size.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, &mut p as *mut _, mem::size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if p.ifindex != ingress && maps::refuses_redirects(p.ifindex) {
                return Route::only(Via::Kernel);
            }
            let mut macs = [0; 12];
            macs[..6].copy_from_slice(&p.dmac);
            macs[6..].copy_from_slice(&p.smac);
            Route::interface(p.ifindex, macs)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::only(Via::Kernel),
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
/// `now` is the cache clock (`cache::clock_ns`), as are the expiries.
#[inline(always)]
fn cached(ctx: &XdpContext, pkt: &Packet, src: u32, dst: u32, now: u64, slot: Option<*mut NextHop>) -> (Route, bool) {
    if let Some(nh) = slot {
        // SAFETY: a per-CPU map value; XDP is not preempted on this CPU.
        let nh = unsafe { &*nh };
        if nh.ifindex != 0 && nh.expires_ns > now {
            return (Route::interface(nh.ifindex, nh.macs), false);
        }
    }
    (route(ctx, pkt, src, dst), true)
}

fn to_cache(route: &Route, now: u64) -> Option<NextHop> {
    match route.via {
        Via::Interface => Some(NextHop {
            ifindex: route.ifindex,
            macs: route.macs,
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

/// The route back to a client, through this CPU's partition of
/// `CLIENT_ROUTES`: sets of two clients direct-mapped by address, so a
/// probe is one cache line however many players there are. A client takes
/// its own way, else an empty or expired one, else the one its hash picks.
#[inline(always)]
pub fn route_to_client(ctx: &XdpContext, pkt: &Packet, src: u32, now: u64) -> Route {
    let dst = pkt.dst_addr();
    // Shifted up, so sequential addresses spread over the sets.
    let hash = cache::spread((dst as u64) << 24);
    // SAFETY: a plain helper call (inlined by the verifier).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let index = cpu.wrapping_mul(CLIENT_ROUTE_SETS).wrapping_add(hash >> (32 - CLIENT_ROUTE_SETS.trailing_zeros()));
    let Some(set) = CLIENT_ROUTES.get_ptr_mut(index) else {
        return route(ctx, pkt, src, dst);
    };
    // SAFETY: a live map value; only this CPU writes its partition (XDP
    // runs without preemption).
    let set = unsafe { &mut *set };
    let mut way = hash as usize % CLIENT_ROUTE_WAYS;
    let mut found = false;
    for (i, w) in set.ways.iter().enumerate() {
        if w.client_addr == dst {
            way = i;
            found = true;
            break;
        }
    }
    if !found {
        for (i, w) in set.ways.iter().enumerate() {
            if w.hop.expires_ns <= now {
                way = i;
                break;
            }
        }
    }
    let Some(w) = set.ways.get_mut(way) else {
        return route(ctx, pkt, src, dst);
    };
    let (route, fresh) = cached(ctx, pkt, src, dst, now, found.then_some(&mut w.hop as *mut NextHop));
    if fresh {
        if let Some(nh) = to_cache(&route, now) {
            w.client_addr = dst;
            w.hop = nh;
        }
    }
    route
}

/// TTL <= 1 must not be forwarded by us: the kernel answers with ICMP.
#[inline(always)]
pub fn ttl_expiring(pkt: &Packet) -> bool {
    // SAFETY: `ip` was bounds-checked when parsed.
    unsafe { (*pkt.ip).ttl <= 1 }
}

/// The lowest TTL a player's packet leaves for its shard with. A player who
/// sends with a low TTL (a traceroute through the public address) would
/// otherwise have it expire at a router or node between here and the shard,
/// and that hop answers the player directly with ICMP time exceeded quoting
/// the packet: the shard's own address. No cluster path is 32 hops long.
pub const TTL_FLOOR_TO_SHARD: u8 = 32;

/// The change of a UDP packet's IPv4 header when its TTL goes from `old` to
/// `new`: the word `[ttl, protocol]` (native order, as `csum` reads words).
#[inline(always)]
fn ttl_delta(old: u8, new: u8) -> u32 {
    (!u16::from_ne_bytes([old, IPPROTO_UDP]) as u32) + u16::from_ne_bytes([new, IPPROTO_UDP]) as u32
}

/// Which address of the packet a rewrite changes.
pub enum Addr {
    Src,
    Dst,
}

/// What became of a rewritten packet.
pub enum Sent {
    Redirected(u32),
    Passed,
}

/// Rewrites one IPv4 address of the packet (`dst` or `src`) and sends it on
/// by `route`: with a next hop, the MACs are set, the TTL is decremented
/// (the caller has checked it is above 1; toward a shard it is then raised
/// to `TTL_FLOOR_TO_SHARD`) and the packet is sent; while the
/// kernel resolves the neighbour it is passed up, rewritten. The IPv4
/// checksum is fixed once for both changes, the UDP checksum for the
/// address (RFC 1624). The port is never touched (SA:MP rule 1).
///
/// A packet that leaves by the interface it came in on (a node with one
/// NIC, which reaches both its players and the shards through it) is sent
/// back with XDP_TX, as a one-armed balancer does: no redirect helper call
/// and none of the redirect path's per-packet work in the driver.
#[inline(always)]
pub fn rewrite_and_send(ctx: &XdpContext, pkt: &Packet, which: Addr, new: u32, route: &Route) -> Sent {
    // SAFETY: `eth`, `ip` and `udp` were bounds-checked when parsed.
    unsafe {
        let ip = &mut *pkt.ip;
        let field = match which {
            Addr::Src => &mut ip.src_addr,
            Addr::Dst => &mut ip.dst_addr,
        };
        let delta = csum::delta4(u32::from_ne_bytes(*field), new);
        *field = new.to_ne_bytes();
        let udp = &mut *pkt.udp;
        udp.check = csum::udp_apply(u16::from_ne_bytes(udp.check), delta).to_ne_bytes();
        let check = u16::from_ne_bytes(ip.check);
        let floor = match which {
            Addr::Dst => TTL_FLOOR_TO_SHARD,
            Addr::Src => 0,
        };
        let old_ttl = ip.ttl;
        match route.via {
            Via::Interface => {
                *(pkt.eth as *mut [u8; 12]) = route.macs;
                // The caller checked TTL > 1; most packets just lose one.
                let ttl_change = if old_ttl > floor {
                    ip.ttl = old_ttl - 1;
                    csum::TTL_DECREMENT
                } else {
                    ip.ttl = floor;
                    ttl_delta(old_ttl, floor)
                };
                ip.check = csum::apply(check, delta + ttl_change).to_ne_bytes();
                // SAFETY: the context pointer is valid for the program's run.
                if route.ifindex == (*ctx.ctx).ingress_ifindex {
                    return Sent::Redirected(xdp_action::XDP_TX);
                }
                // An invalid ifindex makes the helper return XDP_ABORTED.
                Sent::Redirected(bpf_redirect(route.ifindex, 0) as u32)
            }
            // Local and Unroutable were handled by the caller before
            // rewriting; passing them up is the safe default should that
            // ever change.
            Via::Kernel | Via::Local | Via::Unroutable => {
                // The kernel's forwarding takes one off.
                ip.ttl = old_ttl.max(floor.saturating_add(1));
                ip.check = csum::apply(check, delta + ttl_delta(old_ttl, ip.ttl)).to_ne_bytes();
                Sent::Passed
            }
        }
    }
}
