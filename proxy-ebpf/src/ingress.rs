//! Player -> shard: find (or make) the player's session, follow its group to a
//! shard, rewrite the destination IP only and send the packet on.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
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
    tunnel,
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
    let key = SessionKey { client_addr: pkt.src_addr(), client_port: pkt.src_port(), frontend: frontend.id as u16 };
    let cache_set = cache::set_for(&key);
    let kind = classify(ctx, pkt);
    // With many players the set is the one cache miss of the hit path: load
    // it now, so the miss overlaps what follows.
    if let (Kind::Other, Some(set)) = (kind, &cache_set) {
        set.prefetch();
    }
    if let Kind::Query = kind {
        // Answered for the whole cluster, never by one shard.
        return query::handle(ctx, pkt, frontend);
    }
    // The caches' clock; the coarse clock (last_seen) only on the table path.
    let clock = cache::clock_ns();
    // Before any table: a fill racing the agent's rewrite is then void.
    let cache_now = cache::now(clock);
    // The hit path: an established player's game packet, from the cache,
    // which holds its shard: no other table is read.
    if let (Kind::Other, Some(set)) = (kind, &cache_set) {
        if let Some(hit) = set.hit(&key, cache_now) {
            return match towards(ctx, pkt, hit.backend, hit.shard_addr, clock) {
                Ok(next) => send(ctx, pkt, next),
                Err(verdict) => verdict,
            };
        }
    }
    let now = cache::coarse_ns();
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
    let Some(backend) = maps::backend(group.backend) else {
        return verdict(Counter::DropNoBackend, xdp_action::XDP_DROP);
    };
    let next = match towards(ctx, pkt, group.backend, backend.addr, clock) {
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
                let age = now.saturating_sub(session.last_seen_ns);
                set.fill(&key, next.backend_id, next.addr, clock, age, cache_now);
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
    send(ctx, pkt, next)
}

/// Where a packet for a backend goes next, once it is known to be sendable.
struct Next {
    backend_id: u32,
    addr: u32,
    route: Route,
}

/// The route to shard `addr` (backend `backend_id`); the verdict instead
/// when the packet must not be rewritten (TTL, no route). `clock` is the
/// cache clock.
#[inline(always)]
fn towards(ctx: &XdpContext, pkt: &Packet, backend_id: u32, addr: u32, clock: u64) -> Result<Next, u32> {
    if forward::ttl_expiring(pkt) {
        return Err(verdict(Counter::PassTtl, xdp_action::XDP_PASS));
    }
    let route = forward::route_to_backend(ctx, pkt, backend_id, addr, clock);
    if route.is_tunnel() {
        // A shard in another site: sent inside the site's tunnel or not at all.
        tunnel::fits(pkt, &route.tunnel, &route)?;
        return Ok(Next { backend_id, addr, route });
    }
    if route.is_dead_end() {
        // No route to the shard (or it is an address of this node): drop
        // before touching the packet.
        return Err(verdict(Counter::DropUnroutable, xdp_action::XDP_DROP));
    }
    Ok(Next { backend_id, addr, route })
}

/// Rewrites the destination to the shard and sends the packet on.
#[inline(always)]
fn send(ctx: &XdpContext, pkt: &Packet, next: Next) -> u32 {
    stats::backend_packet(next.backend_id, pkt.ip_len() as u64, Direction::ToShard);
    if next.route.is_tunnel() {
        forward::rewrite(pkt, Addr::Dst, next.addr, true);
        let action = tunnel::push(ctx, pkt, &next.route, forward::flow_port(pkt));
        return verdict(Counter::TunnelEncap, action);
    }
    match forward::rewrite_and_send(ctx, pkt, Addr::Dst, next.addr, &next.route) {
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
