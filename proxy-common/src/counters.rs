//! Every outcome of the data plane, one per-CPU counter each.

macro_rules! counters {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Index into the per-CPU `COUNTERS` array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $($variant,)* }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// Stable snake_case name, used in metrics and test output.
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }

            /// One line for a human: what the counter counts.
            pub const fn help(self) -> &'static str {
                match self { $(Counter::$variant => $help,)* }
            }
        }
    };
}

counters! {
    PassNotIpv4 => "pass_not_ipv4", "Non-IPv4 frames passed to the kernel untouched";
    PassIpOptions => "pass_ip_options", "IPv4 with options passed untouched";
    PassFragment => "pass_fragment", "IPv4 fragments passed untouched";
    PassNotUdp => "pass_not_udp", "Non-UDP IPv4 passed untouched";
    PassNotOurs => "pass_not_ours", "UDP that is neither to a frontend nor a shard reply";
    PassQueryAgent => "pass_query_agent", "Queries whose answer does not fit one frame, passed to the agent's responder";
    PassTtl => "pass_ttl", "Packets with TTL <= 1, left to the kernel (ICMP time exceeded)";
    PassReplyLocal => "pass_reply_local", "Shard replies to this node or another proxy node (health probes), untouched";
    IngressRedirect => "ingress_redirect", "Player packets rewritten to their shard and redirected";
    IngressPassNeigh => "ingress_pass_neigh", "Player packets rewritten and passed for the kernel to forward: it resolves the next hop, or the egress interface takes no redirected frames";
    ReturnRedirect => "return_redirect", "Shard replies rewritten to come from the VIP and redirected";
    ReturnPassNeigh => "return_pass_neigh", "Shard replies rewritten and passed for the kernel to forward: it resolves the next hop, or the egress interface takes no redirected frames";
    SessionPlaced => "session_placed", "New players placed on a shard (pending table)";
    SessionPromoted => "session_promoted", "Pending sessions promoted to established on the shard's first answer";
    DropMalformed => "drop_malformed", "Frames too short for their headers, or with inconsistent IPv4/UDP lengths";
    DropNotHandshake => "drop_not_handshake", "Unknown sources whose datagram is not a valid handshake";
    DropNoShard => "drop_no_shard", "New players with no shard to place them on";
    DropNoBackend => "drop_no_backend", "Sessions whose group points at no shard";
    DropUnroutable => "drop_unroutable", "Packets the FIB has no route for (blackhole, unreachable, prohibited)";
    DropMoving => "drop_moving", "Game packets of a session being moved, until it handshakes again";
    DropMapFull => "drop_map_full", "New players refused because the session table could not take them";
    DropMetered => "drop_metered", "Handshakes held back by the target shard's pacer (the client retries)";
    QueryInfo => "query_answered_info", "Info queries (i) answered by the data plane for the whole cluster";
    QueryRules => "query_answered_rules", "Rules queries (r) answered by the data plane";
    QueryClients => "query_answered_clients", "Client-list queries (c) answered by the data plane";
    QueryDetail => "query_answered_detail", "Detailed-list queries (d) answered by the data plane";
    QueryPing => "query_answered_ping", "Ping queries (p) echoed by the data plane";
    QueryOpenmp => "query_answered_openmp", "open.mp queries (o) answered by the data plane";
    DropQueryRcon => "drop_query_rcon", "RCON queries (x) to a public address: never answered nor forwarded";
    DropQueryBudget => "drop_query_budget", "Queries past their source's per-second budget (reflection guard)";
    DropQueryMalformed => "drop_query_malformed", "Queries with an unknown opcode or a wrong length";
    DropQueryUnanswered => "drop_query_unanswered", "Queries with no answer to give (an `o` the shards disagree on, or none built yet)";
    SessionEventLost => "session_event_lost", "Session events the agent's ring buffer had no room for (its next scan repairs the index)";
    DropShardIcmp => "drop_shard_icmp", "ICMP errors about a player's packet to a shard (port unreachable when its process is gone), on their way to the player: they carry the shard's own address";
    DropEgressShardIcmp => "drop_egress_shard_icmp", "ICMP errors this node's own kernel sent towards a player about its packet to a shard (host unreachable while a lost shard's neighbour fails), dropped on egress by the TC guard: they quote the shard's own address";
    TunnelEncap => "tunnel_encap", "Player packets encapsulated to the remote node of their shard's site";
    TunnelDecapShard => "tunnel_decap_shard", "Remote node: tunnelled player packets decapsulated and sent to their shard";
    TunnelEncapReply => "tunnel_encap_reply", "Remote node: shard replies encapsulated back to the player's ingress node";
    TunnelDecapReply => "tunnel_decap_reply", "Tunnelled shard replies decapsulated (then rewritten to come from the VIP)";
    PassTunnelAgent => "pass_tunnel_agent", "Tunnel packets for this node's agent (probes through the tunnel, heartbeats), passed up";
    DropTunnelForeign => "drop_tunnel_foreign", "Tunnel packets from an address that is no configured peer: a forged one would claim any player's address";
    DropTunnelMalformed => "drop_tunnel_malformed", "Tunnel packets whose inner packet is not a whole UDP/IPv4 datagram";
    DropTunnelNotShard => "drop_tunnel_not_shard", "Tunnel packets whose inner packet is to or from no shard of the peer's site";
    DropTunnelTooBig => "drop_tunnel_too_big", "Packets whose encapsulation would exceed the tunnel's path MTU: dropped, never fragmented";
    DropTunnelNoNeigh => "drop_tunnel_no_neigh", "Packets for a tunnel whose next hop is not resolved yet (the agents' probes and heartbeats keep it resolved)";
    DropTunnelNoRoom => "drop_tunnel_no_room", "Packets the driver left no headroom to encapsulate in";
    DropTunnelNoReturn => "drop_tunnel_no_return", "Remote node: shard replies to a player no ingress node sent here lately";
}

/// Number of counters.
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

/// Slots of the pinned `COUNTERS` map: room for counters to come, so a
/// counter appended at the end does not change the pinned layout.
pub const COUNTER_SLOTS: u32 = 64;

const _: () = assert!(COUNTER_COUNT <= COUNTER_SLOTS, "COUNTERS has no slot left: raise COUNTER_SLOTS (a new layout)");
