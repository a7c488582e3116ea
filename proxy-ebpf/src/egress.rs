//! The egress guard: a TC classifier on the egress of every interface the
//! data plane runs on. XDP never sees what this node's own kernel sends,
//! and that kernel answers in its own name for the players' packets the
//! data plane passed up: when a shard's host is lost, the packets passed
//! while its neighbour resolves (then fails) come back to their players as
//! ICMP host unreachable, from this node's address but quoting the packet,
//! that is the shard's address and game port. Any ICMP error leaving the
//! node that quotes a UDP packet to a shard's address and frontend port is
//! dropped (`drop_egress_shard_icmp`), read by the parser XDP uses for the
//! shards' own ICMP (`icmp::quoting_a_shard`), unless it is addressed to a
//! shard (ICMP to the shards names nothing they do not know) or to another
//! proxy node (`PEERS`: ICMP about their probes, crossing this node).
//! Everything else leaves untouched and uncounted: XDP's redirects never
//! pass here, only what the kernel itself sends or forwards.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use proxy_common::Counter;

use crate::{
    icmp::{self, at},
    maps,
    parse::{IP_OFFSET, L3_OFF},
    stats,
};

/// What the guard says of every packet it lets go: "not mine, ask the next
/// program" (`TC_ACT_UNSPEC`, which TCX reads as `TCX_NEXT` and cls_bpf as
/// "continue"). `TC_ACT_OK` would be `TCX_PASS`, which ends the chain and
/// skips a CNI's own tc programs behind ours on the same interface.
const NEXT: i32 = TC_ACT_UNSPEC;
const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;
/// Enough of an ICMP error to read its quote's ports: Ethernet, an outer
/// and a quoted IPv4 header of up to 60 bytes each, the ICMP header, the
/// quoted UDP ports.
const QUOTE_SPAN: u32 = (EthHdr::LEN + 60 + 8 + 60 + 4) as u32;

#[inline(always)]
pub fn guard(ctx: &TcContext) -> i32 {
    if !is_icmp(ctx) {
        return NEXT;
    }
    // The kernel builds its ICMP errors in one piece; should a quote lie
    // past the linear part (a forwarded ICMP), pull it in first.
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < QUOTE_SPAN && ctx.len() > linear {
        let _ = ctx.pull_data(ctx.len().min(QUOTE_SPAN));
    }
    // Pointers are void after a pull: read the header again.
    let Some(ip) = at::<Ipv4Hdr>(ctx, L3_OFF) else {
        return NEXT;
    };
    // SAFETY: bounds-checked by `at`; `is_icmp` checked version and IHL.
    let outer = unsafe { &*ip };
    if outer.vihl & 0x0f < 5 || icmp::quoting_a_shard(ctx, outer).is_none() {
        return NEXT;
    }
    let dst = u32::from_ne_bytes(outer.dst_addr);
    if maps::reverse(dst).is_some() || maps::is_peer(dst) {
        return NEXT;
    }
    stats::count(Counter::DropEgressShardIcmp);
    TC_ACT_SHOT
}

/// IPv4 ICMP, not a later fragment (which quotes nothing).
#[inline(always)]
fn is_icmp(ctx: &TcContext) -> bool {
    let Some(eth) = at::<EthHdr>(ctx, 0) else {
        return false;
    };
    // SAFETY: bounds-checked by `at`.
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IPV4 {
        return false;
    }
    let Some(ip) = at::<Ipv4Hdr>(ctx, L3_OFF) else {
        return false;
    };
    // SAFETY: bounds-checked by `at`.
    let ip = unsafe { &*ip };
    ip.vihl >> 4 == 4
        && ip.vihl & 0x0f >= 5
        && ip.proto == IPPROTO_ICMP
        && u16::from_be_bytes(ip.frags) & IP_OFFSET == 0
}
