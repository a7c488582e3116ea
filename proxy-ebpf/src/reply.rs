//! Shard -> player: stateless. A reply from a shard's IP and its frontend port
//! is rewritten to come from the VIP (source IP only) and sent on; on the way
//! it promotes the player's pending session to established.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use proxy_common::{samp, Counter, Reverse, SessionKey, SESSION_ANSWERED, SESSION_PROMOTED};

use crate::{
    cache, events,
    forward::{self, Addr, Sent, Via},
    maps::{self, PENDING, SESSIONS},
    parse::{ptr_at, Packet, PAYLOAD_OFF},
    stats::{self, verdict, Direction},
};

/// How a shard's reply reached this node.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    /// From the shard's network, as it left the shard.
    Plain,
    /// Out of a tunnel from the shard's site: whatever is not rewritten
    /// and sent is dropped, since passed on it would carry the shard's
    /// address (and the agent's own probes never come this way).
    Tunnelled,
}

#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet, rev: Reverse, arrived: Arrived) -> u32 {
    // Everything the kernel is left to deal with when the reply came plain.
    let untouched = |counter| match arrived {
        Arrived::Plain => verdict(counter, xdp_action::XDP_PASS),
        Arrived::Tunnelled => verdict(Counter::DropTunnelNotShard, xdp_action::XDP_DROP),
    };
    if pkt.src_port() != rev.port {
        return untouched(Counter::PassNotOurs);
    }
    // An answer to another proxy node's health probe (a game node forwards
    // it unchanged): the prober must see the shard's own address.
    if maps::is_peer(pkt.dst_addr()) {
        return untouched(Counter::PassReplyLocal);
    }
    if forward::ttl_expiring(pkt) {
        return untouched(Counter::PassTtl);
    }
    let route = forward::route_to_client(ctx, pkt, rev.vip, cache::clock_ns());
    match route.via {
        // A reply to a socket on this host (the agent's health probe): leave it be.
        Via::Local => return untouched(Counter::PassReplyLocal),
        Via::Unroutable => return verdict(Counter::DropUnroutable, xdp_action::XDP_DROP),
        _ => {}
    }
    if answers_handshake(ctx, pkt) {
        promote(pkt, rev);
    }
    stats::backend_packet(rev.backend, pkt.ip_len() as u64, Direction::FromShard);
    match forward::rewrite_and_send(ctx, pkt, Addr::Src, rev.vip, &route) {
        Sent::Redirected(action) => verdict(Counter::ReturnRedirect, action),
        Sent::Passed => verdict(Counter::ReturnPassNeigh, xdp_action::XDP_PASS),
    }
}

/// A shard accepts a new player with ID_OPEN_CONNECTION_REPLY `[25, x]`,
/// which it sends only after the client echoed the cookie of the shard's
/// ID_OPEN_CONNECTION_COOKIE (26): proof that the client receives at its
/// address, as a SYN cookie is. A spoofed source never gets that far, so a
/// flood of spoofed handshakes stays in the pending LRU and never reaches
/// SESSIONS. Server datagrams are not scrambled, so byte 0 is the id. Only
/// this reply looks for a pending session, which keeps a hash lookup off the
/// return path of established players.
#[inline(always)]
fn answers_handshake(ctx: &XdpContext, pkt: &Packet) -> bool {
    let Some(id) = ptr_at::<u8>(ctx, PAYLOAD_OFF) else {
        return false;
    };
    // SAFETY: bounds-checked by `ptr_at`.
    let id = unsafe { *id };
    id == samp::ID_OPEN_CONNECTION_REPLY && pkt.payload_len == 2
}

/// The shard accepted the player: it is real, move it out of the LRU. With
/// no pending session here (a game node: the player was placed on an
/// ingress node) the agent is told, and tells the ingress nodes.
#[inline(always)]
fn promote(pkt: &Packet, rev: Reverse) {
    let key = SessionKey { client_addr: pkt.dst_addr(), client_port: pkt.dst_port(), frontend: rev.frontend };
    // SAFETY: the value is copied out at once.
    match unsafe { PENDING.get(key) }.copied() {
        Some(session) => {
            if SESSIONS.insert(key, session, 0).is_ok() {
                let _ = PENDING.remove(key);
                stats::count(Counter::SessionPromoted);
                events::session(key, SESSION_PROMOTED, session.group, session.epoch);
            }
        }
        None => events::session(key, SESSION_ANSWERED, rev.backend, 0),
    }
}
