//! Sites: shards in other data centres, reached through a tunnel to a
//! remote node beside them (see docs/deploying/other-sites.md).

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{ConfigError, NodeRole, Validated};

/// A data centre other than the ingress nodes': its shards are reached
/// through a tunnel to its remote node.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// What shards name in `site:` (and Agones GameServers in the label
    /// `samp-proxy.dev/site`).
    pub name: String,
    /// The remote node's tunnel address: where the ingress nodes send the
    /// site's players' packets (and their probes).
    pub remote_node: Ipv4Addr,
    /// The tunnel's UDP port, on both ends.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The path MTU between the sites: an outer packet (the player's plus
    /// 28 bytes) longer than this is dropped and counted, never fragmented.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// How packets are wrapped: `fou` (UDP, which is GUE variant 1).
    #[serde(default)]
    pub encapsulation: Encapsulation,
    /// The ingress nodes' tunnel addresses: the remote node accepts tunnel
    /// packets from these alone.
    pub ingress_nodes: Vec<Ipv4Addr>,
    /// This ingress node's outer source address towards the site; absent,
    /// the address the kernel picks towards `remote_node`.
    #[serde(default)]
    pub source: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    /// Foo-over-UDP: outer IPv4 and UDP, then the player's packet. Crosses
    /// every provider's network, and routers spread flows by its ports.
    #[default]
    Fou,
}

fn default_port() -> u16 {
    proxy_common::DEFAULT_TUNNEL_PORT
}

fn default_mtu() -> u16 {
    1500
}

/// The Agones label (or annotation) that puts a GameServer in a site.
pub const SITE_LABEL: &str = "samp-proxy.dev/site";

/// The address the kernel sends from towards `to`: no packet is sent
/// (a UDP socket's connect only asks the routing table).
pub fn source_towards(to: Ipv4Addr, port: u16) -> std::io::Result<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket.connect((to, port))?;
    match socket.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(*a.ip()),
        std::net::SocketAddr::V6(_) => Err(std::io::Error::other("an IPv6 source for an IPv4 peer")),
    }
}

/// Fills each site's outer source address from the routing table where the
/// file leaves it out (an ingress node; a remote node sends from its own
/// `remote_node` address).
pub(super) fn resolve_sources(file: &str, cfg: &mut Validated) -> Result<(), ConfigError> {
    if cfg.raw.role == NodeRole::Remote {
        return Ok(());
    }
    for (i, site) in cfg.sites.iter_mut().enumerate() {
        if site.source.is_none() {
            let found = source_towards(site.remote_node, site.port).map_err(|e| ConfigError {
                file: file.into(),
                line: None,
                field: format!("sites[{i}].source"),
                problem: format!("no route towards the remote node {} ({e})", site.remote_node),
                fix: "add a route to the remote site, or set `source:` to this node's tunnel address".into(),
            })?;
            site.source = Some(found);
        }
    }
    // One tunnel endpoint per port: the data plane knows one address for it.
    for (i, site) in cfg.sites.iter().enumerate() {
        if let Some(other) = cfg.sites[..i].iter().find(|o| o.port == site.port && o.source != site.source) {
            return Err(ConfigError {
                file: file.into(),
                line: None,
                field: format!("sites[{i}].source"),
                problem: format!(
                    "sites `{}` and `{}` share port {} but this node reaches them from {:?} and {:?}",
                    other.name, site.name, site.port, other.source, site.source
                ),
                fix: "give the sites the same `source:`, or each its own `port:`".into(),
            });
        }
    }
    Ok(())
}
