//! The XDP data plane of the SA:MP cluster proxy.
//!
//! One program, attached to every interface the agent names, handles both
//! directions: UDP to a frontend (VIP:port) is steered to the player's shard by
//! rewriting the destination IP only; UDP from a shard's IP and the frontend
//! port is rewritten to come from the VIP; ICMP errors about a player's
//! packet to a shard are dropped (they carry the shard's address) and a
//! refusal tells the agent. Everything else passes untouched. A second
//! program, the egress guard (TC, `egress`), drops the ICMP errors this
//! node's own kernel would send a player about a packet to a shard.
//! Module map: `parse` (headers), `ingress` (player -> shard), `icmp`
//! (shard ICMP errors), `query`
//! (the cluster's answers to the server browser), `reply`
//! (shard -> player), `forward` (FIB + redirect), `stats` (counters), `events`
//! (session changes for the agent), `egress` (the TC egress guard), `maps`,
//! `tunnel` (shards in other sites: encapsulation both ways).
#![no_std]
#![no_main]
// Compare-and-swap for the pacer and the query budget (see `atomic`).
#![feature(core_intrinsics)]
// `bounds::at_most` hides a value from the compiler with an empty asm block.
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod atomic;
mod bounds;
mod cache;
mod egress;
mod events;
mod forward;
mod frames;
mod icmp;
mod ingress;
mod maps;
mod meter;
mod parse;
mod query;
mod reply;
mod stats;
mod tunnel;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use proxy_common::Counter;

use crate::parse::Parsed;

#[xdp]
pub fn samp_proxy(ctx: XdpContext) -> u32 {
    #[cfg(feature = "rebuilt-variant")]
    aya_log_ebpf::trace!(&ctx, "rebuilt variant");
    // The reply path has this one call site, plain or out of a tunnel.
    match steer(&ctx) {
        Steered::Done(action) => action,
        Steered::Reply(pkt, rev, arrived) => reply::handle(&ctx, &pkt, rev, arrived),
    }
}

/// Where a frame goes: dealt with, or a shard's reply for the reply path.
enum Steered {
    Done(u32),
    Reply(parse::Packet, proxy_common::Reverse, reply::Arrived),
}

#[inline(always)]
fn steer(ctx: &XdpContext) -> Steered {
    let pkt = match parse::parse(ctx) {
        Parsed::Udp(pkt) => pkt,
        Parsed::Icmp(ip) => return Steered::Done(icmp::handle(ctx, ip)),
        Parsed::Pass(counter) => return Steered::Done(stats::verdict(counter, xdp_action::XDP_PASS)),
        Parsed::Drop(counter) => return Steered::Done(stats::verdict(counter, xdp_action::XDP_DROP)),
    };
    if let Some(entry) = maps::port_entry(pkt.dst_port()) {
        if maps::is_tunnel_endpoint(entry, pkt.dst_addr()) {
            return match tunnel::receive(ctx, &pkt) {
                tunnel::Received::Done(action) => Steered::Done(action),
                tunnel::Received::Reply(inner, rev) => Steered::Reply(inner, rev, reply::Arrived::Tunnelled),
            };
        }
        if let Some(frontend) = maps::frontend_at(entry, pkt.dst_addr(), pkt.dst_port()) {
            return Steered::Done(ingress::handle(ctx, &pkt, frontend));
        }
    }
    if maps::is_frontend_port(pkt.src_port()) {
        if let Some(rev) = cache::reverse(pkt.src_addr()) {
            // No VIP: a shard of this remote node, whose replies go back
            // through the tunnel they came by.
            if rev.vip == 0 {
                return Steered::Done(tunnel::reply_out(ctx, &pkt, rev));
            }
            return Steered::Reply(pkt, rev, reply::Arrived::Plain);
        }
    }
    Steered::Done(stats::verdict(Counter::PassNotOurs, xdp_action::XDP_PASS))
}

/// TC on the egress of every interface `samp_proxy` runs on: no ICMP
/// error from this node's own kernel names a shard to a player (see `egress`).
#[classifier]
pub fn egress_guard(ctx: TcContext) -> i32 {
    egress::guard(&ctx)
}

/// For the tests of the guard's place in a chain: counts every packet in
/// `TC_SEEN` and passes it on (TC_ACT_UNSPEC). Attached behind the egress
/// guard, its count proves the guard let the next program run. Never
/// attached by the agent.
#[classifier]
pub fn tc_seen(_ctx: TcContext) -> i32 {
    if let Some(n) = maps::TC_SEEN.get_ptr_mut(0) {
        // SAFETY: a live map value; the atomic add is safe across CPUs.
        unsafe { atomic::add(n, 1) };
    }
    aya_ebpf::bindings::TC_ACT_UNSPEC
}

/// The baseline for benchmarks: the cheapest possible XDP program.
#[xdp]
pub fn xdp_pass_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
