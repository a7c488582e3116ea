//! Shard -> player: stateless. A reply from a shard's IP and its frontend port
//! is rewritten to come from the VIP (source IP only) and sent on; on the way
//! it promotes the player's pending session to established.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use proxy_common::{Counter, Reverse, SessionKey};

use crate::{
    forward::{self, Addr, Route, Sent},
    maps::{PENDING, SESSIONS},
    parse::Packet,
    stats::{self, verdict, Direction},
};

#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet, rev: Reverse) -> u32 {
    if pkt.src_port() != rev.port {
        return verdict(Counter::PassNotOurs, xdp_action::XDP_PASS);
    }
    if forward::ttl_expiring(pkt) {
        return verdict(Counter::PassTtl, xdp_action::XDP_PASS);
    }
    let route = forward::route(ctx, pkt, rev.vip, pkt.dst_addr());
    match route {
        // A reply to a socket on this host (the agent's health probe): leave it be.
        Route::Local => return verdict(Counter::PassReplyLocal, xdp_action::XDP_PASS),
        Route::Unroutable => return verdict(Counter::DropUnroutable, xdp_action::XDP_DROP),
        _ => {}
    }
    promote(pkt, rev.frontend);
    forward::rewrite_addr(pkt, Addr::Src, rev.vip);
    stats::backend_packet(rev.backend, pkt.ip_len() as u64, Direction::FromShard);
    match forward::send(pkt, route) {
        Sent::Redirected(action) => verdict(Counter::ReturnRedirect, action),
        Sent::Passed => verdict(Counter::ReturnPassNeigh, xdp_action::XDP_PASS),
    }
}

/// The shard answered: the player is real, move it out of the LRU.
#[inline(always)]
fn promote(pkt: &Packet, frontend: u16) {
    let key = SessionKey { client_addr: pkt.dst_addr(), client_port: pkt.dst_port(), frontend };
    // SAFETY: the value is copied out at once.
    if let Some(session) = unsafe { PENDING.get(&key) }.copied() {
        if SESSIONS.insert(&key, &session, 0).is_ok() {
            let _ = PENDING.remove(&key);
            stats::count(Counter::SessionPromoted);
        }
    }
}
