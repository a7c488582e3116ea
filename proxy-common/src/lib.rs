//! Plain `#[repr(C)]` types shared by the XDP program and the agent.
//!
//! Byte order: every address and port stored in a map is in NETWORK order,
//! exactly as the bytes stand in the packet (`u32::from_ne_bytes(octets)`,
//! `u16::from_ne_bytes(port.to_be_bytes())`), so the fast path never swaps
//! bytes. [`net`] has the conversions for the user side.
#![no_std]
// The table-index mask of `samp::table_index` is one BPF instruction in assembly.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod counters;
pub mod csum;
pub mod net;
pub mod samp;

pub use counters::Counter;

/// Frontends (VIP:port pairs) one data plane can serve.
pub const MAX_FRONTENDS: u32 = 16;
/// Slots in each frontend's placement table (prime, Maglev-style).
pub const PLACEMENT_SLOTS: u32 = 4093;
/// Group ids are `1..MAX_GROUPS`; 0 means "no group" so a zeroed slot never routes.
pub const MAX_GROUPS: u32 = 4096;
/// Addresses of the proxy's own nodes (`PEERS`): a shard's packets to them
/// (answers to health probes) are not player replies.
pub const MAX_PEERS: u32 = 64;
/// Interfaces the agent marks as taking no redirected frames
/// (`REDIRECT_REFUSED`); beyond this many, the rest are only logged.
pub const MAX_REFUSING_INTERFACES: u32 = 4096;
/// Backend ids are `1..MAX_BACKENDS`; 0 means "no backend".
pub const MAX_BACKENDS: u32 = 1024;
/// Established sessions (players whose shard has answered them).
pub const MAX_SESSIONS: u32 = 262_144;
/// Pending sessions (admitted handshakes not yet answered): an LRU, so a flood
/// of spoofed handshakes churns only this table.
pub const MAX_PENDING: u32 = 16_384;

/// How long the data plane trusts a cached next hop before asking the FIB
/// again: a route or neighbour change takes effect within this time.
pub const NEXTHOP_TTL_NS: u64 = 500_000_000;

/// The data plane's cache clock (the session cache's freshness, the next-hop
/// caches' expiry) is the kernel's jiffies times the length of a jiffy in ns,
/// a read-only global the loader sets under this name: the verifier inlines
/// `bpf_jiffies64` into one load, where the coarse clock helper costs a call
/// (about 15 ns a packet). Left at 0 (an unknown jiffy) the program uses
/// `bpf_ktime_get_coarse_ns` instead. Its zero is not CLOCK_MONOTONIC's: it
/// is compared only with itself. `Session::last_seen_ns`, which the agent
/// reads, stays on the coarse clock.
pub const JIFFY_NS: &str = "JIFFY_NS";

/// 1 (the default) where the kernel has `bpf_xdp_get_buff_len` and
/// `bpf_xdp_store_bytes` (5.18), 0 where the agent's probe finds them
/// missing: a read-only global the loader sets under this name. At 0 the
/// verifier drops the code that calls them and the data plane hands every
/// query but `p` to the agent's responder.
pub const XDP_BYTES_HELPERS: &str = "XDP_BYTES_HELPERS";
/// Sets of the return path's next-hop cache per CPU (`CLIENT_ROUTES`, two
/// clients a 64-byte set): 2^16 sets, 131,072 clients, 4 MiB a CPU (as the
/// session cache).
pub const CLIENT_ROUTE_SETS: u32 = 1 << 16;
pub const CLIENT_ROUTE_WAYS: usize = 2;
/// Sets of the return path's cache of `REVERSE` per CPU (four shards a set).
pub const REVERSE_CACHE_SETS: usize = 256;
pub const REVERSE_CACHE_WAYS: usize = 4;

/// Map names, shared so the agent and the tests cannot drift from the program.
pub mod maps {
    pub const FRONTENDS: &str = "FRONTENDS";
    pub const PLACEMENT: &str = "PLACEMENT";
    pub const GROUPS: &str = "GROUPS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const REVERSE: &str = "REVERSE";
    pub const SESSIONS: &str = "SESSIONS";
    pub const PENDING: &str = "PENDING";
    pub const COUNTERS: &str = "COUNTERS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const PORTS: &str = "PORTS";
    pub const SHARD_STATE: &str = "SHARD_STATE";
    pub const METER: &str = "METER";
    pub const SESSION_EVENTS: &str = "SESSION_EVENTS";
    pub const QUERY_ANSWERS: &str = "QUERY_ANSWERS";
    pub const QUERY_SOURCES: &str = "QUERY_SOURCES";
    pub const QUERY_SETTINGS: &str = "QUERY_SETTINGS";
    pub const SESSION_CACHE: &str = "SESSION_CACHE";
    pub const SESSION_CACHE_GENERATION: &str = "SESSION_CACHE_GENERATION";
    pub const CLIENT_ROUTES: &str = "CLIENT_ROUTES";
    pub const PEERS: &str = "PEERS";
    pub const PEERS_IN_USE: &str = "PEERS_IN_USE";
    pub const REDIRECT_REFUSED: &str = "REDIRECT_REFUSED";
    pub const SITES: &str = "SITES";
    pub const TUNNEL_PEERS: &str = "TUNNEL_PEERS";
    pub const RETURN_VIA: &str = "RETURN_VIA";
}

/// Program names in the object.
pub mod programs {
    /// The data plane: ingress DNAT and the stateless return rewrite.
    pub const PROXY: &str = "samp_proxy";
    /// A bare XDP_PASS, the baseline the benchmarks measure against.
    pub const PASS_BASELINE: &str = "xdp_pass_baseline";
    /// The egress guard (TC): drops this node's own ICMP errors that name a shard.
    pub const EGRESS_GUARD: &str = "egress_guard";
}

/// Bytes of the `SESSION_EVENTS` ring buffer (a power of two): 1 MiB holds
/// 32,768 events (24 bytes plus the kernel's 8-byte header each), a few
/// hundred milliseconds of a handshake flood; what overflows is counted
/// (`session_event_lost`) and the agent's next full scan repairs its index.
pub const SESSION_EVENTS_BYTES: u32 = 1 << 20;

/// `SessionEvent::kind`: a new player was placed in `PENDING`.
pub const SESSION_PLACED: u32 = 1;
/// `SessionEvent::kind`: a pending player moved to `SESSIONS` (its shard answered).
pub const SESSION_PROMOTED: u32 = 2;
/// `SessionEvent::kind`: a moved player handshook again; its epoch is the group's now.
pub const SESSION_RESYNCED: u32 = 3;
/// `SessionEvent::kind`: a shard accepted a player (ID_OPEN_CONNECTION_REPLY)
/// that has no pending session on this node: on a game node (the `return`
/// role) its agent tells the ingress nodes, which promote the player there.
/// `group` holds the shard's backend id.
pub const SESSION_ANSWERED: u32 = 4;
/// `SessionEvent::kind`: a shard's kernel refused a player's packet to its
/// game port (ICMP port unreachable): its server process is likely gone. No
/// session changed: `group` holds the shard's backend id, `key` the player.
/// The agent probes that shard at once. At most one per shard every
/// [`SHARD_REFUSED_GAP_NS`] (per CPU race aside).
pub const SESSION_SHARD_REFUSED: u32 = 5;
/// The least time between two `SESSION_SHARD_REFUSED` events of one shard.
pub const SHARD_REFUSED_GAP_NS: u64 = 10_000_000;

/// One record of `SESSION_EVENTS`: every change the data plane makes to the
/// session tables (other than `last_seen_ns` and LRU evictions), so the agent
/// keeps an index of sessions without scanning the tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SessionEvent {
    pub key: SessionKey,
    /// `SESSION_*`.
    pub kind: u32,
    pub group: u32,
    pub epoch: u32,
    pub _pad: u32,
}

/// The longest answer body (after the 11-byte echoed header) the data plane
/// sends itself: with Ethernet, IPv4, UDP and the header it fits a 1500-byte
/// MTU. A longer answer is the agent's to send (`QUERY_BY_AGENT`).
pub const MAX_QUERY_ANSWER: usize = 1400;
/// Answer slots per frontend in `QUERY_ANSWERS`, indexed by `QuerySlot`.
pub const QUERY_SLOTS: u32 = 8;
/// Sources whose query budget the data plane tracks (an LRU).
pub const MAX_QUERY_SOURCES: u32 = 65_536;

/// Which answer of a frontend: `QUERY_ANSWERS[frontend * QUERY_SLOTS + slot]`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuerySlot {
    Info = 0,
    Rules = 1,
    Clients = 2,
    Detail = 3,
    OpenMp = 4,
}

impl QuerySlot {
    pub const ALL: [QuerySlot; 5] = [Self::Info, Self::Rules, Self::Clients, Self::Detail, Self::OpenMp];

    /// The query opcode this slot answers.
    pub const fn opcode(self) -> u8 {
        match self {
            Self::Info => b'i',
            Self::Rules => b'r',
            Self::Clients => b'c',
            Self::Detail => b'd',
            Self::OpenMp => b'o',
        }
    }
}

/// `QueryAnswer::flags`: the answer does not fit one frame; the data plane
/// passes the query to the agent's responder.
pub const QUERY_BY_AGENT: u32 = 1;

/// Value of `QUERY_ANSWERS`: a ready-made answer body the data plane sends
/// after the requester's own 11-byte header. `len` 0 = no answer (the query
/// is dropped, as open.mp stays silent for `d` and for `c` above 100 players).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryAnswer {
    pub len: u32,
    pub flags: u32,
    /// One's-complement sum (big-endian words, unfolded) of the payload with
    /// the 11 header bytes as zeros and `body[..len]` after them, so the
    /// data plane finishes the UDP checksum with the header's few words.
    pub body_sum: u32,
    pub _pad: u32,
    pub body: [u8; MAX_QUERY_ANSWER],
}

impl Default for QueryAnswer {
    fn default() -> Self {
        Self { len: 0, flags: 0, body_sum: 0, _pad: 0, body: [0; MAX_QUERY_ANSWER] }
    }
}

/// Value of `QUERY_SETTINGS[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QuerySettings {
    /// Queries each source may send per second (0 = unlimited), against reflection.
    pub per_second: u32,
    /// An address of this node (network order) where the agent's responder
    /// listens on the frontend's port: a query whose answer does not fit the
    /// frame is sent there. 0 = no responder (such queries are dropped).
    pub agent_addr: u32,
}

/// Value of `QUERY_SOURCES` (keyed by source IPv4): one source's queries in
/// its current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QuerySource {
    /// When the window opened (monotonic clock >> `TICK_SHIFT`) in the high
    /// half, queries let through in it in the low half: one word, so both
    /// change in one compare-and-swap.
    pub start_and_count: u64,
}

impl QuerySource {
    /// Clock ticks of 2^20 ns (about 1 ms).
    pub const TICK_SHIFT: u32 = 20;
    /// One second in ticks (rounded up: a window never lasts less).
    pub const WINDOW_TICKS: u32 = (1_000_000_000u64 >> Self::TICK_SHIFT) as u32 + 1;

    pub const fn pack(start: u32, count: u32) -> u64 {
        ((start as u64) << 32) | count as u64
    }

    pub const fn unpack(word: u64) -> (u32, u32) {
        ((word >> 32) as u32, word as u32)
    }
}

/// Key of `FRONTENDS`: the public address players connect to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FrontendKey {
    pub vip: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Value of `FRONTENDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Frontend {
    /// `0..MAX_FRONTENDS`; selects the frontend's row of `PLACEMENT`.
    pub id: u32,
    pub _pad: u32,
}

/// Key of `SESSIONS` and `PENDING`: one player's UDP flow to one frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SessionKey {
    pub client_addr: u32,
    pub client_port: u16,
    pub frontend: u16,
}

/// `PortEntry::flags`: some frontend listens on this port.
pub const PORT_FRONTEND: u16 = 1;
/// `PortEntry::flags`: several frontends share this port: look the VIP up in
/// `FRONTENDS` instead of trusting `PortEntry::vip`.
pub const PORT_SHARED: u16 = 2;

/// `PortEntry::flags`: this node's tunnel endpoint listens on this port at
/// `PortEntry::vip` (see [`Tunnel`]).
pub const PORT_TUNNEL: u16 = 4;

/// Value of `PORTS`, indexed by the UDP port as it stands in the header: a
/// cheap array test that rejects most foreign traffic and, for the usual one
/// frontend per port, resolves the frontend without a hash lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortEntry {
    pub vip: u32,
    pub frontend: u16,
    pub flags: u16,
}

/// A cached FIB answer: where to send packets for one destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    pub ifindex: u32,
    /// The next hop's MAC, then the egress interface's: the first 12 bytes
    /// of the Ethernet header, copied in one go.
    pub macs: [u8; 12],
    /// Cache-clock time (see [`JIFFY_NS`]) after which the FIB is asked
    /// again; 0 = empty.
    pub expires_ns: u64,
}

/// Sites (`SITES` slots): ids `1..MAX_SITES`; 0 = this node's own network.
pub const MAX_SITES: u32 = 64;
/// Nodes at the other end of this node's tunnels (`TUNNEL_PEERS`).
pub const MAX_TUNNEL_PEERS: u32 = 64;
/// Players a remote node remembers the ingress node of (`RETURN_VIA`, an LRU).
pub const MAX_RETURN_VIA: u32 = 262_144;
/// The outer headers of a tunnelled packet: IPv4 (no options) and UDP.
pub const TUNNEL_OVERHEAD: u16 = 28;
/// The default UDP port of the tunnels.
pub const DEFAULT_TUNNEL_PORT: u16 = 5555;

/// One end of a tunnel as the data plane sends to it: the value of `SITES`
/// (indexed by site id; on an ingress node, the site's remote node) and of
/// `TUNNEL_PEERS` (keyed by the peer's address: every node this one accepts
/// tunnel packets from; on a remote node, the ingress nodes). The
/// encapsulation is FOU, which is GUE variant 1: outer IPv4 (don't
/// fragment) and UDP, then the inner IPv4 packet unchanged.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tunnel {
    /// The other end's address (network order); 0 = none.
    pub peer_addr: u32,
    /// This node's address towards it: the outer source.
    pub local_addr: u32,
    /// The other end's tunnel port (network order).
    pub port: u16,
    /// The path MTU between the two: an outer packet longer is dropped.
    pub mtu: u16,
    /// On an ingress node, the site the peer serves (its shards' `site`);
    /// on a remote node 0.
    pub site: u32,
}

/// Value of the per-CPU `BACKEND_NEXTHOP`: a backend's cached route. For a
/// shard in another site the hop is the tunnel's (towards its remote node)
/// and `tunnel` is that site's, copied, so a hit reads no other map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendHop {
    pub hop: NextHop,
    /// The shard address the hop was found for: a backend id given to
    /// another shard never uses the old one's route.
    pub shard_addr: u32,
    pub _pad: u32,
    /// `peer_addr` 0 = plain routing.
    pub tunnel: Tunnel,
}

/// Key of `RETURN_VIA`: a player as a remote node sees it (the inner
/// packet's source).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PlayerAddr {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// A client's next hop in the return path's cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientRoute {
    /// The client's IPv4 address (network order); 0 = empty.
    pub client_addr: u32,
    pub _pad: u32,
    pub hop: NextHop,
}

/// One set of `CLIENT_ROUTES`: a 64-byte value, so one line per probe.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientRouteSet {
    pub ways: [ClientRoute; CLIENT_ROUTE_WAYS],
}

/// A shard's `REVERSE` entry as the return path caches it, in 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CachedReverse {
    /// The shard's IPv4 address (network order); 0 = empty.
    pub shard_addr: u32,
    pub vip: u32,
    pub port: u16,
    pub frontend: u16,
    pub backend: u16,
    /// The low half of `SESSION_CACHE_GENERATION` when filled.
    pub generation: u16,
}

/// The return path's cache of `REVERSE` on one CPU: the value of the
/// per-CPU `REVERSE_CACHE` (16 KiB, within a per-CPU value's limit).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct ReverseCache {
    pub sets: [[CachedReverse; REVERSE_CACHE_WAYS]; REVERSE_CACHE_SETS],
}

const _: () = assert!(MAX_BACKENDS <= u16::MAX as u32, "backend ids no longer fit a cached reverse entry");
const _: () = assert!(core::mem::size_of::<ClientRouteSet>() == 64 && core::mem::size_of::<CachedReverse>() == 16);

/// Value of `SESSIONS` and `PENDING`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Session {
    /// Group the player belongs to (`GROUPS[group]` is its backend).
    pub group: u32,
    /// The group's epoch when the player last handshook. When it differs from
    /// `GROUPS[group].epoch` the session is MOVING: its game packets are
    /// dropped until the client sends a fresh handshake
    /// (ID_OPEN_CONNECTION_REQUEST), which re-syncs the epoch and goes to the
    /// group's (new) shard. A group move bumps the group's epoch: one write
    /// marks every player of the group as moving.
    pub epoch: u32,
    /// `bpf_ktime_get_coarse_ns` of the last client packet, refreshed at most
    /// every [`LAST_SEEN_GRANULARITY_NS`] so the hit path rarely writes.
    pub last_seen_ns: u64,
}

/// How stale `Session::last_seen_ns` may get before the data plane rewrites it.
pub const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// Sets of the session cache per CPU (each set one 64-byte cache line of
/// `SESSION_CACHE_WAYS` entries): 2^16 sets, 262,144 entries, 4 MiB a CPU.
pub const SESSION_CACHE_SETS: u32 = 1 << 16;
pub const SESSION_CACHE_WAYS: usize = 4;

/// One cached established session: what the hit path needs, in 16 bytes so
/// a set of four fills one cache line. The session's route is copied in
/// (its shard's backend id and address), so a hit reads neither GROUPS nor
/// BACKENDS: the agent voids the cache (`SESSION_CACHE_GENERATION`) after
/// it changes either, as after it rewrites sessions. Every field that could
/// wrap is only trusted for [`SESSION_CACHE_FRESH`] ticks of the cache
/// clock, after which the packet takes the table path and the entry is
/// rewritten.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CachedSession {
    pub client_addr: u32,
    pub client_port: u16,
    /// The frontend id above [`CACHED_BACKEND_BITS`], the shard's backend
    /// id below them; 0 = empty (backend ids start at 1).
    pub route: u16,
    /// The shard's IPv4 address (network order), `BACKENDS[backend].addr`.
    pub shard_addr: u32,
    /// The low half of `SESSION_CACHE_GENERATION` when filled.
    pub generation: u16,
    /// Cache clock >> `SESSION_CACHE_TICK_SHIFT` when SESSIONS' last_seen
    /// was last written for this session.
    pub refreshed: u16,
}

/// Bits of [`CachedSession::route`] that hold the backend id.
pub const CACHED_BACKEND_BITS: u32 = 12;
const _: () = assert!(MAX_BACKENDS <= 1 << CACHED_BACKEND_BITS, "backend ids no longer fit a cached route");
const _: () = assert!(MAX_FRONTENDS <= 1 << (16 - CACHED_BACKEND_BITS), "frontend ids no longer fit a cached route");

/// One set of the session cache: a 64-byte value, so one line per probe.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheSet {
    pub ways: [CachedSession; SESSION_CACHE_WAYS],
}

/// The cache's clock unit: 2^24 ns (16.8 ms) of the cache clock.
pub const SESSION_CACHE_TICK_SHIFT: u32 = 24;
/// Ticks a cached entry is used before the table path refreshes last_seen
/// (240 ticks: about four seconds). A player sending 20 packets a second
/// takes the table path for one packet in 80; idle expiry, which works in
/// tens of seconds, sees last_seen at most four seconds old.
pub const SESSION_CACHE_FRESH: u16 = 240;

/// Value of `GROUPS`: where a group of players is, and its move epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Group {
    /// Backend id; 0 = none (the group's packets are dropped).
    pub backend: u32,
    /// Bumped by every move of the whole group.
    pub epoch: u32,
}

/// Value of `METER` (indexed by backend id): a per-shard handshake pacer, the
/// generic cell rate algorithm (one word of state shared by every CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meter {
    /// Theoretical arrival time of the next handshake (bpf_ktime_get_ns).
    pub tat_ns: u64,
    /// 1e9 / rate; 0 = no metering.
    pub interval_ns: u64,
    /// How far ahead of now the TAT may run: (burst - 1) * interval.
    pub tolerance_ns: u64,
}

/// Value of `SHARD_STATE` (indexed by backend id): agent bookkeeping that
/// must survive an agent restart, so it lives in a pinned map. The data
/// plane never reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShardState {
    /// The group new players of this shard join.
    pub home_group: u32,
    /// `SHARD_*` bits.
    pub flags: u32,
}

/// `ShardState::flags`: drained: no new players.
pub const SHARD_DRAINED: u32 = 1;

/// Value of `BACKENDS`: a shard.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Shard IPv4, network order. 0 = unused slot: never routes.
    pub addr: u32,
    /// The site (`SITES` index) the shard sits in: 0 = this node's own
    /// network (reached by plain routing), else through that site's tunnel.
    pub site: u32,
}

/// Value of `REVERSE` (keyed by a shard's IPv4, network order): what the shard's
/// replies must look like to the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reverse {
    pub vip: u32,
    pub port: u16,
    pub frontend: u16,
    /// The shard's backend id, for per-shard counters.
    pub backend: u32,
}

/// Value of `BACKEND_STATS` (per CPU, indexed by backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: each type is #[repr(C)], Copy, made of integers only, with explicit
    // padding fields, so every bit pattern is valid and there are no hidden bytes.
    unsafe impl aya::Pod for FrontendKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Frontend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SessionKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Session {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Reverse {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Group {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ShardState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Meter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NextHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SessionEvent {}
    // SAFETY: as above (the body is a byte array).
    unsafe impl aya::Pod for QueryAnswer {}
    // SAFETY: as above.
    unsafe impl aya::Pod for QuerySettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for QuerySource {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CacheSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Tunnel {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PlayerAddr {}
}
