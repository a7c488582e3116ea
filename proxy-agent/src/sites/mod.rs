//! Shards in other data centres: the agent's side of the tunnels the data
//! plane encapsulates in (see the XDP program's `tunnel`).
//!
//! * [`wire`]: the inner IPv4/UDP packet the agent itself sends through a
//!   tunnel, and reads back out of one.
//! * [`tunnel_socket`]: an ingress agent's probes of a remote shard take
//!   the players' path: out of a UDP socket on the tunnel port, wrapped as
//!   the data plane wraps players' packets, decapsulated by the remote node,
//!   answered by the shard, wrapped back and handed up by this node's XDP.
//! * [`heartbeat`]: a remote node's agent greets every ingress node once a
//!   second through the tunnel, which keeps its kernel's neighbour entry
//!   towards them resolved: the data plane cannot send from this node's own
//!   address without one (a frame passed up would be a martian).

pub mod heartbeat;
pub mod tunnel_socket;
pub mod wire;

pub use tunnel_socket::{TunnelChannel, TunnelSocket};

/// How a probe reaches a shard in another site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub site: String,
    /// The site's remote node and tunnel port.
    pub remote: std::net::SocketAddrV4,
    /// This node's tunnel address (the outer and inner source).
    pub source: std::net::Ipv4Addr,
}

impl Via {
    /// The tunnel towards shard `site` of `cfg`, for a probe.
    pub fn of(cfg: &crate::config::Validated, site: Option<usize>) -> Option<Via> {
        let s = &cfg.sites[site?];
        Some(Via {
            site: s.name.clone(),
            remote: std::net::SocketAddrV4::new(s.remote_node, s.port),
            source: s.source?,
        })
    }
}
