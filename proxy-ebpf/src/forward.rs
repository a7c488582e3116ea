//! Sending a rewritten packet on: `bpf_fib_lookup` gives the egress interface
//! and MAC addresses; we fill them in, decrement the TTL like any router, and
//! redirect. When the kernel must first resolve the neighbour, or the egress
//! interface takes no redirected frames (its driver needs an XDP program of
//! its own), we pass the (already rewritten) packet up and the kernel
//! forwards it. Only a FIB lookup asks, so the hit path pays nothing.

use core::mem::{self, MaybeUninit};

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::{bpf_fib_lookup, bpf_get_smp_processor_id, bpf_redirect},
    programs::XdpContext,
};
use proxy_common::{csum, NextHop, Tunnel, CLIENT_ROUTE_SETS, CLIENT_ROUTE_WAYS, NEXTHOP_TTL_NS};

use crate::{
    cache, frames,
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
    pub ifindex: u32,
    /// Destination then source MAC, as in the Ethernet header.
    pub macs: [u8; 12],
    /// The tunnel the packet goes through (`peer_addr` 0: none): the route
    /// is then the one towards the tunnel's other end.
    pub tunnel: Tunnel,
}

impl Route {
    #[inline(always)]
    fn interface(ifindex: u32, macs: [u8; 12]) -> Self {
        Route { via: Via::Interface, ifindex, macs, tunnel: Tunnel::default() }
    }

    /// True when the packet must be encapsulated for a tunnel.
    #[inline(always)]
    pub fn is_tunnel(&self) -> bool {
        self.tunnel.peer_addr != 0
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
    // SAFETY: `ip` was bounds-checked when parsed.
    let tos = unsafe { (*pkt.ip).tos };
    lookup(ctx, Flow { sport: pkt.src_port(), dport: pkt.dst_port(), tot_len: pkt.ip_len(), tos }, src, dst)
}

/// What the FIB is told of a UDP packet besides its addresses.
#[derive(Clone, Copy)]
pub struct Flow {
    pub sport: u16,
    pub dport: u16,
    pub tot_len: u16,
    pub tos: u8,
}

/// The FIB's route for a UDP packet `src` -> `dst`. A BPF-to-BPF call
/// (only on a next-hop cache miss): inlined at each of its call sites, its
/// 64-byte parameter block took stack in every copy. Its frame is that
/// block and little more, and it zeroes nothing by `memset` (see `frames`).
#[inline(never)]
pub fn lookup(ctx: &XdpContext, flow: Flow, src: u32, dst: u32) -> Route {
    let mut block = MaybeUninit::<FibParams>::uninit();
    let p = frames::zeroed_in_place(&mut block);
    p.family = AF_INET;
    p.l4_protocol = IPPROTO_UDP;
    p.sport = flow.sport;
    p.dport = flow.dport;
    p.__bindgen_anon_1.tot_len = flow.tot_len;
    p.__bindgen_anon_2.tos = flow.tos;
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: the context pointer is valid for the program's run.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    p.ifindex = ingress;
    // SAFETY: `p` is a valid, initialised parameter block of the right size.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, p as *mut _, mem::size_of::<FibParams>() as i32, 0) };
    let via = match rc as u32 {
        // The map key is read where it is, in the parameter block.
        BPF_FIB_LKUP_RET_SUCCESS if p.ifindex != ingress && maps::refuses_redirects_at(&p.ifindex) => Via::Kernel,
        BPF_FIB_LKUP_RET_SUCCESS => Via::Interface,
        BPF_FIB_LKUP_RET_NO_NEIGH => Via::Kernel,
        BPF_FIB_LKUP_RET_NOT_FWDED => Via::Local,
        _ => Via::Unroutable,
    };
    // `ifindex` and the MACs mean something only for `Via::Interface`;
    // otherwise they are what the FIB left in the (zeroed) block.
    let mut macs = [0; 12];
    macs[..6].copy_from_slice(&p.dmac);
    macs[6..].copy_from_slice(&p.smac);
    let zero = frames::hidden_zero();
    let tunnel = Tunnel { peer_addr: zero, local_addr: zero, port: zero as u16, mtu: zero as u16, site: zero };
    Route { via, ifindex: p.ifindex, macs, tunnel }
}

/// True when the FIB hands an ICMP packet from `src` to `dst` to this host
/// (a local destination, or forwarding off): a socket here gets it. A call
/// of its own, built as `lookup` is.
#[inline(never)]
pub fn icmp_is_local(ctx: &XdpContext, src: u32, dst: u32, tos: u8, tot_len: u16) -> bool {
    let mut block = MaybeUninit::<FibParams>::uninit();
    let p = frames::zeroed_in_place(&mut block);
    p.family = AF_INET;
    p.l4_protocol = IPPROTO_ICMP;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.__bindgen_anon_2.tos = tos;
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: the context pointer is valid for the program's run.
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: `p` is a valid, initialised parameter block of the right size.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, p as *mut _, mem::size_of::<FibParams>() as i32, 0) };
    rc as u32 == BPF_FIB_LKUP_RET_NOT_FWDED
}

/// A fresh cached answer, else the FIB's (cached again when it is a route).
/// The cache is keyed by destination only: policy routing by source is not
/// supported, and a route or neighbour change takes up to NEXTHOP_TTL_NS.
/// `now` is the cache clock (`cache::clock_ns`), as are the expiries.
#[inline(always)]
fn cached(ctx: &XdpContext, pkt: &Packet, src: u32, dst: u32, now: u64, slot: Option<*mut NextHop>) -> (Route, bool) {
    if let Some(hit) = fresh_hop(slot, now) {
        return (hit, false);
    }
    (route(ctx, pkt, src, dst), true)
}

/// The cached hop in `slot` while it is fresh.
#[inline(always)]
fn fresh_hop(slot: Option<*mut NextHop>, now: u64) -> Option<Route> {
    let nh = slot?;
    // SAFETY: a per-CPU map value; XDP is not preempted on this CPU.
    let nh = unsafe { &*nh };
    (nh.ifindex != 0 && nh.expires_ns > now).then(|| Route::interface(nh.ifindex, nh.macs))
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

/// The route to a backend's shard `dst`, through the per-CPU per-backend
/// cache: for a shard in another site, the route to its site's remote node,
/// with the tunnel.
#[inline(always)]
pub fn route_to_backend(ctx: &XdpContext, pkt: &Packet, backend_id: u32, dst: u32, now: u64) -> Route {
    let slot = BACKEND_NEXTHOP.get_ptr_mut(backend_id);
    if let Some(slot) = slot {
        // SAFETY: a per-CPU map value; XDP is not preempted on this CPU.
        let cached = unsafe { &*slot };
        if cached.shard_addr == dst {
            if let Some(mut hit) = fresh_hop(Some(&cached.hop as *const NextHop as *mut NextHop), now) {
                hit.tunnel = cached.tunnel;
                return hit;
            }
        }
    }
    let route = match maps::backend(backend_id).and_then(|b| maps::site(b.site)) {
        Some(tunnel) => {
            let flow = Flow { sport: flow_port(pkt), dport: tunnel.port, tot_len: pkt.ip_len() + 28, tos: 0 };
            let mut r = lookup(ctx, flow, tunnel.local_addr, tunnel.peer_addr);
            r.tunnel = tunnel;
            r
        }
        None => route(ctx, pkt, pkt.src_addr(), dst),
    };
    if let (Some(slot), Some(hop)) = (slot, to_cache(&route, now)) {
        // Field by field: a whole value built first would cost stack.
        // SAFETY: as above.
        let cached = unsafe { &mut *slot };
        cached.hop = hop;
        cached.shard_addr = dst;
        cached.tunnel = route.tunnel;
    }
    route
}

/// The outer UDP source port of a player's tunnelled packets (and its
/// shard's replies): a hash of the player's address and port in
/// 49152..=65535, so routers between the sites spread the flows over their
/// paths as they would the players' own, and one player's stay on one path.
#[inline(always)]
pub fn flow_port(pkt: &Packet) -> u16 {
    flow_port_of(pkt.src_addr(), pkt.src_port())
}

#[inline(always)]
pub fn flow_port_of(addr: u32, port: u16) -> u16 {
    let h = (addr ^ ((port as u32) << 16)).wrapping_mul(0x9e37_79b1);
    (0xc000 | (h >> 18)) as u16
}

/// The route back to a client, through this CPU's partition of
/// `CLIENT_ROUTES`: sets of two clients direct-mapped by address, so a
/// probe is one cache line however many players there are. A client takes
/// its own way, else an empty or expired one, else the one its hash picks.
#[inline(always)]
pub fn route_to_client(ctx: &XdpContext, pkt: &Packet, src: u32, now: u64) -> Route {
    route_to_addr(ctx, pkt, src, pkt.dst_addr(), now)
}

/// As `route_to_client`, to `dst` instead of the packet's destination (a
/// remote node's route to an ingress node, for a reply it encapsulates).
#[inline(always)]
pub fn route_to_addr(ctx: &XdpContext, pkt: &Packet, src: u32, dst: u32, now: u64) -> Route {
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
    let ours = route.via == Via::Interface;
    rewrite(pkt, which, new, ours);
    if !ours {
        // Local and Unroutable were handled by the caller before
        // rewriting; passing them up is the safe default should that
        // ever change.
        return Sent::Passed;
    }
    // SAFETY: `eth` was bounds-checked when parsed.
    unsafe { *(pkt.eth as *mut [u8; 12]) = route.macs };
    Sent::Redirected(send_out(ctx, route.ifindex))
}

/// XDP_TX when `ifindex` is the interface the frame came in on, else a
/// redirect (an invalid ifindex makes the helper return XDP_ABORTED).
#[inline(always)]
pub fn send_out(ctx: &XdpContext, ifindex: u32) -> u32 {
    // SAFETY: the context pointer is valid for the program's run.
    if ifindex == unsafe { (*ctx.ctx).ingress_ifindex } {
        return xdp_action::XDP_TX;
    }
    // SAFETY: a plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// Rewrites one IPv4 address of the packet and its TTL as `rewrite_and_send`
/// describes: `ours` when this program sends the packet on (the TTL loses
/// one), else the kernel forwards it (and takes the one off).
#[inline(always)]
pub fn rewrite(pkt: &Packet, which: Addr, new: u32, ours: bool) {
    // SAFETY: `ip` and `udp` were bounds-checked when parsed.
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
        let ttl_change = if !ours {
            // The kernel's forwarding takes one off.
            ip.ttl = old_ttl.max(floor.saturating_add(1));
            ttl_delta(old_ttl, ip.ttl)
        } else if old_ttl > floor {
            // The caller checked TTL > 1; most packets just lose one.
            ip.ttl = old_ttl - 1;
            csum::TTL_DECREMENT
        } else {
            ip.ttl = floor;
            ttl_delta(old_ttl, floor)
        };
        ip.check = csum::apply(check, delta + ttl_change).to_ne_bytes();
    }
}
