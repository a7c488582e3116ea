//! The maps, and typed look-ups over them. State maps are pinned by name so an
//! agent restart or upgrade keeps every session.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use proxy_common::{
    counters::COUNTER_SLOTS, Backend, BackendHop, BackendStats, CacheSet, ClientRouteSet, Frontend, FrontendKey, Group, Meter,
    PlayerAddr, PortEntry, QueryAnswer, QuerySettings, QuerySource, Reverse, ReverseCache, Session, SessionKey,
    ShardState, Tunnel, CLIENT_ROUTE_SETS, MAX_BACKENDS, MAX_FRONTENDS, MAX_GROUPS, MAX_PEERS, MAX_PENDING, MAX_QUERY_SOURCES,
    MAX_REFUSING_INTERFACES, MAX_RETURN_VIA, MAX_SESSIONS, MAX_SITES, MAX_TUNNEL_PEERS, PLACEMENT_SLOTS, PORT_FRONTEND, PORT_SHARED, PORT_TUNNEL, QUERY_SLOTS, SESSION_CACHE_SETS, SESSION_EVENTS_BYTES,
};

/// UDP port (header byte order) -> frontend hint; see `PortEntry`.
#[map]
pub static PORTS: Array<PortEntry> = Array::pinned(65_536, 0);

/// What `tc_seen` (a test helper) counted; not pinned, not the agent's.
#[map]
pub static TC_SEEN: Array<u64> = Array::with_max_entries(1, 0);

/// Next hop per backend, per CPU: the hit path skips the FIB while fresh.
/// A cache, rebuilt from the FIB on demand, so never pinned.
#[map]
pub static BACKEND_NEXTHOP: PerCpuArray<BackendHop> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// `SITES[site]`: the tunnel to a site's remote node (ingress nodes).
#[map]
pub static SITES: Array<Tunnel> = Array::pinned(MAX_SITES, 0);

/// Every node this one accepts tunnel packets from, by its address: a
/// tunnel packet from any other source is dropped.
#[map]
pub static TUNNEL_PEERS: HashMap<u32, Tunnel> = HashMap::pinned(MAX_TUNNEL_PEERS, 0);

/// Remote nodes: the ingress node each player's packets last came through,
/// where its shard's replies go back. Pinned: a restarted agent keeps it.
#[map]
pub static RETURN_VIA: LruHashMap<PlayerAddr, u32> = LruHashMap::pinned(MAX_RETURN_VIA, 0);

/// Next hop per client address for the return path (see `cache`): one
/// partition of `CLIENT_ROUTE_SETS` sets per CPU; the agent sizes it to the
/// machine's CPUs at load. A cache too.
#[map]
pub static CLIENT_ROUTES: Array<ClientRouteSet> = Array::with_max_entries(CLIENT_ROUTE_SETS, 0);

/// `REVERSE` as the return path caches it, per CPU (see `cache`). A cache.
#[map]
pub static REVERSE_CACHE: PerCpuArray<ReverseCache> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static FRONTENDS: HashMap<FrontendKey, Frontend> = HashMap::pinned(MAX_FRONTENDS, 0);

/// `PLACEMENT[frontend.id * PLACEMENT_SLOTS + hash % PLACEMENT_SLOTS]` = group id.
#[map]
pub static PLACEMENT: Array<u32> = Array::pinned(MAX_FRONTENDS * PLACEMENT_SLOTS, 0);

/// `GROUPS[group]` = backend and epoch. Repointing one entry moves a whole group.
#[map]
pub static GROUPS: Array<Group> = Array::pinned(MAX_GROUPS, 0);

/// Handshake pacer per backend (rate set by the agent, state kept here).
#[map]
pub static METER: Array<Meter> = Array::pinned(MAX_BACKENDS, 0);

/// Agent bookkeeping per backend (home group, drained), pinned so it
/// survives restarts; never read here.
#[map]
pub static SHARD_STATE: Array<ShardState> = Array::pinned(MAX_BACKENDS, 0);

#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

/// Shard IPv4 -> how its replies must look to the client.
#[map]
pub static REVERSE: HashMap<u32, Reverse> = HashMap::pinned(MAX_BACKENDS, 0);

/// The proxy's own nodes (ingress agents that probe the shards): a shard's
/// packets to them are answers to probes, never rewritten. Value unused.
#[map]
pub static PEERS: HashMap<u32, u32> = HashMap::pinned(MAX_PEERS, 0);

/// Interfaces (ifindex) that take no redirected frames now, from their
/// `xdp_features` (the agent keeps it current): a packet routed out of one
/// is passed up for the kernel to forward instead of being lost. Value unused.
/// Allocated per entry (`BPF_F_NO_PREALLOC`): usually empty, and a
/// preallocated 4,096 entries moved the memory of the other maps enough to
/// cost the 100k-spread row of `bench fastpath` 90 ns a packet.
#[map]
pub static REDIRECT_REFUSED: HashMap<u32, u32> = HashMap::pinned(MAX_REFUSING_INTERFACES, BPF_F_NO_PREALLOC);

/// `[0]` is 1 when `PEERS` holds any address: an inlined array read spares
/// the hash lookup on nodes that have no peers (ingress and single nodes).
#[map]
pub static PEERS_IN_USE: Array<u32> = Array::pinned(1, 0);

/// Established sessions: a plain hash, never evicted by traffic; the agent
/// expires idle ones.
#[map]
pub static SESSIONS: HashMap<SessionKey, Session> = HashMap::pinned(MAX_SESSIONS, 0);

/// Established sessions cached for the hit path (see `cache`): one
/// partition of `SESSION_CACHE_SETS` sets per CPU; the agent sizes it to the
/// machine's CPUs at load. A cache, so never pinned.
#[map]
pub static SESSION_CACHE: Array<CacheSet> = Array::with_max_entries(SESSION_CACHE_SETS, 0);

/// `[0]`: bumped by the agent after it rewrites SESSIONS entries or
/// changes GROUPS, BACKENDS or REVERSE, voiding every copy the caches hold
/// (`SESSION_CACHE`, `REVERSE_CACHE`). Pinned: the agent writes the
/// running program's.
#[map]
pub static SESSION_CACHE_GENERATION: Array<u32> = Array::pinned(1, 0);

/// Admitted handshakes not yet answered by their shard.
#[map]
pub static PENDING: LruHashMap<SessionKey, Session> = LruHashMap::pinned(MAX_PENDING, 0);

/// Every change this program makes to SESSIONS and PENDING, for the agent's
/// session index. Pinned, so a restarted agent reads the same ring the
/// running program writes.
#[map]
pub static SESSION_EVENTS: RingBuf = RingBuf::pinned(SESSION_EVENTS_BYTES, 0);

/// Ready-made query answers per frontend (`QUERY_SLOTS` each), built by the
/// agent from the cluster's state.
#[map]
pub static QUERY_ANSWERS: Array<QueryAnswer> = Array::pinned(MAX_FRONTENDS * QUERY_SLOTS, 0);

/// `QUERY_SETTINGS[0]`: the per-source query budget and the agent's responder.
#[map]
pub static QUERY_SETTINGS: Array<QuerySettings> = Array::pinned(1, 0);

/// Each recent query source's budget window.
#[map]
pub static QUERY_SOURCES: LruHashMap<u32, QuerySource> = LruHashMap::with_max_entries(MAX_QUERY_SOURCES, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

/// `[backend]`: coarse-clock time of the shard's last `SESSION_SHARD_REFUSED`
/// event (see `icmp`). A rate limit only, so never pinned.
#[map]
pub static SHARD_REFUSED_AT: Array<u64> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<BackendStats> = PerCpuArray::pinned(MAX_BACKENDS, 0);

/// `PORTS[port]`.
#[inline(always)]
pub fn port_entry(port: u16) -> Option<&'static PortEntry> {
    PORTS.get(port as u32)
}

/// True when `entry` (PORTS of a packet's destination port) says the packet
/// is for this node's tunnel endpoint at `dst`.
#[inline(always)]
pub fn is_tunnel_endpoint(entry: &PortEntry, dst: u32) -> bool {
    entry.flags & PORT_TUNNEL != 0 && entry.vip == dst
}

/// The frontend a packet to `vip:port` is for, if any, given `PORTS[port]`.
/// One array read for the common case; the hash only when several
/// frontends share the port.
#[inline(always)]
pub fn frontend_at(entry: &PortEntry, vip: u32, port: u16) -> Option<Frontend> {
    if entry.flags & PORT_FRONTEND == 0 {
        return None;
    }
    if entry.flags & PORT_SHARED == 0 {
        return (entry.vip == vip).then_some(Frontend { id: entry.frontend as u32, _pad: 0 });
    }
    frontend(&FrontendKey { vip, port, _pad: 0 })
}

/// True when some frontend uses `port`: only then can a packet from that
/// port be a shard reply.
#[inline(always)]
pub fn is_frontend_port(port: u16) -> bool {
    PORTS.get(port as u32).map(|e| e.flags & PORT_FRONTEND != 0).unwrap_or(false)
}

#[inline(always)]
pub fn frontend(key: &FrontendKey) -> Option<Frontend> {
    // SAFETY: the value is copied out at once; FRONTENDS is preallocated and
    // only written by the agent with whole-value updates.
    unsafe { FRONTENDS.get(key).copied() }
}

/// True when `ifindex` takes no redirected frames now. Looked up only on a
/// FIB lookup (a next-hop cache miss).
#[inline(always)]
pub fn refuses_redirects_at(ifindex: &u32) -> bool {
    // SAFETY: only the presence of the key is read.
    unsafe { REDIRECT_REFUSED.get(ifindex).is_some() }
}

/// True when `addr` is one of the proxy's own nodes.
#[inline(always)]
pub fn is_peer(addr: u32) -> bool {
    if PEERS_IN_USE.get(0).copied().unwrap_or(0) == 0 {
        return false;
    }
    // SAFETY: only the presence of the key is read.
    unsafe { PEERS.get(&addr).is_some() }
}

#[inline(always)]
pub fn reverse(shard_addr: u32) -> Option<Reverse> {
    // SAFETY: as for `frontend`.
    unsafe { REVERSE.get(shard_addr).copied() }
}

/// Where a group is (backend 0 when none).
#[inline(always)]
pub fn group(id: u32) -> Group {
    GROUPS.get(id).copied().unwrap_or_default()
}

/// The shard behind a backend id; `None` for id 0 or an unused slot.
#[inline(always)]
pub fn backend(id: u32) -> Option<Backend> {
    match BACKENDS.get(id) {
        Some(b) if id != 0 && b.addr != 0 => Some(*b),
        _ => None,
    }
}

/// The group at a frontend's placement slot, 0 when the slot is empty.
#[inline(always)]
pub fn placement(frontend_id: u32, slot: u32) -> u32 {
    PLACEMENT.get(frontend_id * PLACEMENT_SLOTS + slot).copied().unwrap_or(0)
}

/// A tunnel peer by address.
#[inline(always)]
pub fn tunnel_peer(addr: u32) -> Option<Tunnel> {
    // SAFETY: as for `frontend`.
    unsafe { TUNNEL_PEERS.get(&addr).copied() }
}

/// A site's tunnel; `None` for site 0 or an empty slot.
#[inline(always)]
pub fn site(id: u32) -> Option<Tunnel> {
    match SITES.get(id) {
        Some(t) if id != 0 && t.peer_addr != 0 => Some(*t),
        _ => None,
    }
}
