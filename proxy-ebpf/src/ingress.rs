//! Player -> shard: find (or make) the player's session, follow its group to a
//! shard, rewrite the destination IP only and send the packet on.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext};
use aya_log_ebpf::{debug, warn};
use proxy_common::{
    net::client_hash, samp, Counter, Frontend, Group, Session, SessionKey, LAST_SEEN_GRANULARITY_NS, PLACEMENT_SLOTS,
    SESSION_PLACED, SESSION_RESYNCED,
};

use crate::{
    cache, events,
    forward::{self, Addr, Route, Sent},
    maps::{self, PENDING, SESSIONS},
    meter,
    parse::{ptr_at, Packet, PAYLOAD_OFF},
    query,
    stats::{self, verdict, Direction},
};

/// What the first bytes of the payload say about the datagram.
#[derive(Clone, Copy)]
enum Kind {
    Query,
    Handshake,
    Other,
}

#[inline(always)]
fn classify(ctx: &XdpContext, pkt: &Packet) -> Kind {
    let Some(head) = ptr_at::<[u8; 4]>(ctx, PAYLOAD_OFF) else {
        return Kind::Other;
    };
    // SAFETY: bounds-checked by `ptr_at`.
    let head = unsafe { *head };
    if pkt.payload_len >= samp::QUERY_HEADER_LEN && head == samp::QUERY_MAGIC {
        return Kind::Query;
    }
    if pkt.payload_len == samp::HANDSHAKE_WIRE_LEN && samp::is_handshake_request(head, u16::from_be(pkt.dst_port())) {
        return Kind::Handshake;
    }
    Kind::Other
}

#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet, frontend: Frontend) -> u32 {
    let kind = classify(ctx, pkt);
    if let Kind::Query = kind {
        // Answered for the whole cluster, never by one shard.
        return query::handle(ctx, pkt, frontend);
    }
    let key = SessionKey { client_addr: pkt.src_addr(), client_port: pkt.src_port(), frontend: frontend.id as u16 };
    // SAFETY: coarse clock helper, no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Before any table: a fill racing the agent's rewrite is then void.
    let cache_now = cache::now(now);
    let cache_set = cache::set_for(&key);
    // The hit path: an established player's game packet, from the cache.
    if let (Kind::Other, Some(set)) = (kind, &cache_set) {
        if let Some(hit) = set.hit(&key, cache_now) {
            let group = maps::group(hit.group);
            if group.epoch as u16 == hit.epoch {
                return match towards(ctx, pkt, group.backend, now) {
                    Ok(next) => send(pkt, next),
                    Err(verdict) => verdict,
                };
            }
        }
    }
    let (session, established) = match SESSIONS.get_ptr_mut(key) {
        Some(s) => (Some(s), true),
        None => (PENDING.get_ptr_mut(key), false),
    };
    // Decide where the packet goes first (route included); change session
    // state only once the handshake pacer has let it through.
    let (group, admitted) = match session {
        Some(s) => {
            // SAFETY: a live map value; the agent replaces whole values and
            // the fields written here are single words.
            let s = unsafe { &mut *s };
            let group = maps::group(s.group);
            // Moving: the old shard must see nothing more, the new one nothing
            // before the client's fresh handshake.
            let moving = s.epoch != group.epoch;
            if moving && !matches!(kind, Kind::Handshake) {
                return verdict(Counter::DropMoving, xdp_action::XDP_DROP);
            }
            if now.wrapping_sub(s.last_seen_ns) > LAST_SEEN_GRANULARITY_NS {
                s.last_seen_ns = now;
            }
            (group, Admitted::Session { session: s, resync: moving })
        }
        None => match place(&key, kind) {
            Ok((id, group)) => (group, Admitted::New { group_id: id }),
            Err(counter) => return verdict(counter, xdp_action::XDP_DROP),
        },
    };
    let next = match towards(ctx, pkt, group.backend, now) {
        Ok(next) => next,
        Err(verdict) => return verdict,
    };
    // Only a handshake that will really be sent on takes a pacer slot.
    let token = match kind {
        Kind::Handshake => match meter::admit(next.backend_id) {
            Some(token) => Some(token),
            None => return verdict(Counter::DropMetered, xdp_action::XDP_DROP),
        },
        _ => None,
    };
    match admitted {
        Admitted::Session { session, resync } => {
            // The fresh handshake re-syncs a moved session: it belongs to its new shard now.
            if resync {
                session.epoch = group.epoch;
                events::session(key, SESSION_RESYNCED, session.group, group.epoch);
            }
            if let (true, Some(set)) = (established, &cache_set) {
                set.fill(&key, session.group, session.epoch, session.last_seen_ns, cache_now);
            }
        }
        Admitted::New { group_id } => {
            let session = Session { group: group_id, epoch: group.epoch, last_seen_ns: now };
            if PENDING.insert(key, session, 0).is_err() {
                warn!(
                    ctx,
                    "pending table refused {:i}:{}",
                    u32::from_be(key.client_addr),
                    u16::from_be(key.client_port)
                );
                if let Some(token) = token {
                    token.refund();
                }
                return verdict(Counter::DropMapFull, xdp_action::XDP_DROP);
            }
            stats::count(Counter::SessionPlaced);
            events::session(key, SESSION_PLACED, group_id, group.epoch);
            debug!(
                ctx,
                "placed {:i}:{} in group {}",
                u32::from_be(key.client_addr),
                u16::from_be(key.client_port),
                group_id
            );
        }
    }
    send(pkt, next)
}

/// Where a packet for a backend goes next, once it is known to be sendable.
struct Next {
    backend_id: u32,
    addr: u32,
    route: Route,
}

/// The shard behind `backend_id` and the route to it; the verdict instead
/// when the packet must not be rewritten (no backend, TTL, no route).
#[inline(always)]
fn towards(ctx: &XdpContext, pkt: &Packet, backend_id: u32, now: u64) -> Result<Next, u32> {
    let Some(backend) = maps::backend(backend_id) else {
        return Err(verdict(Counter::DropNoBackend, xdp_action::XDP_DROP));
    };
    if forward::ttl_expiring(pkt) {
        return Err(verdict(Counter::PassTtl, xdp_action::XDP_PASS));
    }
    let route = forward::route_to_backend(ctx, pkt, backend_id, backend.addr, now);
    if route.is_dead_end() {
        // No route to the shard (or it is an address of this node): drop
        // before touching the packet.
        return Err(verdict(Counter::DropUnroutable, xdp_action::XDP_DROP));
    }
    Ok(Next { backend_id, addr: backend.addr, route })
}

/// Rewrites the destination to the shard and sends the packet on.
#[inline(always)]
fn send(pkt: &Packet, next: Next) -> u32 {
    forward::rewrite_addr(pkt, Addr::Dst, next.addr);
    stats::backend_packet(next.backend_id, pkt.ip_len() as u64, Direction::ToShard);
    match forward::send(pkt, next.route) {
        Sent::Redirected(action) => verdict(Counter::IngressRedirect, action),
        Sent::Passed => verdict(Counter::IngressPassNeigh, xdp_action::XDP_PASS),
    }
}

/// What admitting the packet will change once it is let through.
enum Admitted<'a> {
    Session { session: &'a mut Session, resync: bool },
    New { group_id: u32 },
}

/// Where a new player goes: only a valid handshake is considered. The client
/// is hashed into the frontend's placement table (weighted by free slots);
/// the caller records it as pending once the packet is admitted.
#[inline(always)]
fn place(key: &SessionKey, kind: Kind) -> Result<(u32, Group), Counter> {
    if !matches!(kind, Kind::Handshake) {
        return Err(Counter::DropNotHandshake);
    }
    let slot = client_hash(key.client_addr, key.client_port) % PLACEMENT_SLOTS;
    let group_id = maps::placement(key.frontend as u32, slot);
    if group_id == 0 {
        return Err(Counter::DropNoShard);
    }
    Ok((group_id, maps::group(group_id)))
}
