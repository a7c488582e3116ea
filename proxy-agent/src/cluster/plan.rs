//! The routing plan: the exact map contents a validated config asks for,
//! given each shard's ids and placement weight. Pure data, so it is tested
//! without a kernel; the cluster writes it.

use proxy_common::{
    net::{addr_to_map, port_to_map},
    Backend, Frontend, FrontendKey, PortEntry, Reverse, Tunnel, PLACEMENT_SLOTS, PORT_FRONTEND, PORT_SHARED,
    PORT_TUNNEL,
};

use super::placement::{self, Candidate};
use crate::config::{NodeRole, Validated};

/// The ids a shard holds in the maps. Stable across reloads and restarts:
/// sessions refer to groups, groups to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardIds {
    pub backend: u32,
    /// The group new players of this shard join.
    pub home_group: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutingPlan {
    pub frontends: Vec<(FrontendKey, Frontend)>,
    /// (UDP port in header byte order, hint)
    pub ports: Vec<(u16, PortEntry)>,
    /// (backend id, shard)
    pub backends: Vec<(u32, Backend)>,
    /// (home group id, backend id): each must point at its shard.
    pub home_groups: Vec<(u32, u32)>,
    /// (shard address, reply rewrite)
    pub reverse: Vec<(u32, Reverse)>,
    /// (site id, its tunnel): an ingress node's `SITES`.
    pub sites: Vec<(u32, Tunnel)>,
    /// (peer address, the tunnel to it): `TUNNEL_PEERS`, whom tunnel
    /// packets are accepted from.
    pub tunnel_peers: Vec<(u32, Tunnel)>,
}

pub type FrontendEntries = Vec<(FrontendKey, Frontend)>;
pub type PortEntries = Vec<(u16, PortEntry)>;

/// The frontend and port entries of a config; frontend `i` has id `fe_ids[i]`.
pub fn frontends(cfg: &Validated, fe_ids: &[u32]) -> (FrontendEntries, PortEntries) {
    let frontends: Vec<(FrontendKey, Frontend)> = cfg
        .frontends
        .iter()
        .zip(fe_ids)
        .map(|(f, &id)| {
            let key =
                FrontendKey { vip: addr_to_map(f.address.ip().octets()), port: port_to_map(f.address.port()), _pad: 0 };
            (key, Frontend { id, _pad: 0 })
        })
        .collect();
    let mut ports: Vec<(u16, PortEntry)> = Vec::new();
    for (key, fe) in &frontends {
        match ports.iter_mut().find(|(p, _)| *p == key.port) {
            // Several VIPs on one port: the data plane must use the hash.
            Some((_, entry)) => *entry = PortEntry { vip: 0, frontend: 0, flags: PORT_FRONTEND | PORT_SHARED },
            None => ports.push((key.port, PortEntry { vip: key.vip, frontend: fe.id as u16, flags: PORT_FRONTEND })),
        }
    }
    (frontends, ports)
}

/// Placement rows: for each frontend, its shards' home groups weighted by
/// `weight(i)` (free slots; 0 for standby, drained, full or down shards).
pub fn placement(
    cfg: &Validated,
    fe_ids: &[u32],
    ids: &[ShardIds],
    weight: impl Fn(usize) -> u32,
) -> Vec<(u32, Vec<u32>)> {
    (0..cfg.frontends.len())
        .map(|fe| {
            // By name: nodes whose shard lists came in another order (the
            // file, Agones' discovery) still build the same table.
            let mut candidates: Vec<Candidate<'_>> = cfg
                .shards
                .iter()
                .enumerate()
                .filter(|(_, s)| s.frontend == fe)
                .map(|(i, s)| Candidate { name: &s.name, group: ids[i].home_group, weight: weight(i) })
                .collect();
            candidates.sort_by(|a, b| a.name.cmp(b.name));
            prefer_site(cfg, fe, &mut candidates);
            (fe_ids[fe], placement::fill(&candidates, PLACEMENT_SLOTS as usize))
        })
        .collect()
}

/// With `prefer_site` on frontend `fe`, the other sites' shards get no new
/// players while a preferred shard has room.
fn prefer_site(cfg: &Validated, fe: usize, candidates: &mut [Candidate<'_>]) {
    let Some(preferred) = cfg.frontends[fe].prefer_site else { return };
    let site_of = |name: &str| cfg.shards.iter().find(|s| s.name == name).and_then(|s| s.site);
    if candidates.iter().any(|c| c.weight > 0 && site_of(c.name) == preferred) {
        for c in candidates.iter_mut().filter(|c| site_of(c.name) != preferred) {
            c.weight = 0;
        }
    }
}

/// Builds the plan for `cfg` with frontend `i` at `fe_ids[i]` and shard `i`
/// at `ids[i]`. Placement, which follows the load, is [`placement`]'s.
pub fn build(cfg: &Validated, fe_ids: &[u32], ids: &[ShardIds]) -> RoutingPlan {
    if cfg.raw.role == NodeRole::Remote {
        return build_remote(cfg, fe_ids, ids);
    }
    let (frontends, mut ports) = frontends(cfg, fe_ids);
    let backends = cfg
        .shards
        .iter()
        .zip(ids)
        .map(|(s, id)| (id.backend, Backend { addr: addr_to_map(s.address.octets()), site: cfg.site_id(s.site) }))
        .collect();
    let home_groups = ids.iter().map(|id| (id.home_group, id.backend)).collect();
    let reverse = cfg.shards.iter().zip(ids).map(|(s, id)| reverse_entry(cfg, fe_ids, s, id, true)).collect();
    let sites: Vec<(u32, Tunnel)> = cfg
        .sites
        .iter()
        .enumerate()
        .map(|(i, site)| {
            let tunnel = Tunnel {
                peer_addr: addr_to_map(site.remote_node.octets()),
                local_addr: site.source.map_or(0, |a| addr_to_map(a.octets())),
                port: port_to_map(site.port),
                mtu: site.mtu,
                site: cfg.site_id(Some(i)),
            };
            (tunnel.site, tunnel)
        })
        .collect();
    let tunnel_peers = sites.iter().map(|(_, t)| (t.peer_addr, *t)).collect();
    for (_, t) in &sites {
        ports.push((t.port, PortEntry { vip: t.local_addr, frontend: 0, flags: PORT_TUNNEL }));
    }
    RoutingPlan { frontends, ports, backends, home_groups, reverse, sites, tunnel_peers }
}

/// Shard `s`'s reply rewrite: from the frontend's VIP, or (`rewrite`
/// false, a remote node) none: back into the tunnel as it left the shard.
fn reverse_entry(
    cfg: &Validated,
    fe_ids: &[u32],
    s: &crate::config::Shard,
    id: &ShardIds,
    rewrite: bool,
) -> (u32, Reverse) {
    let fe = &cfg.frontends[s.frontend];
    let rev = Reverse {
        vip: if rewrite { addr_to_map(fe.address.ip().octets()) } else { 0 },
        port: port_to_map(fe.address.port()),
        frontend: fe_ids[s.frontend] as u16,
        backend: id.backend,
    };
    (addr_to_map(s.address.octets()), rev)
}

/// A remote node's plan: no frontend takes players here (the ports say
/// only which source ports a shard's replies come from), the site's own
/// shards reply back into the tunnel, and the tunnel accepts the site's
/// ingress nodes alone.
fn build_remote(cfg: &Validated, fe_ids: &[u32], ids: &[ShardIds]) -> RoutingPlan {
    let (_, frontend_ports) = frontends(cfg, fe_ids);
    let mut ports: Vec<(u16, PortEntry)> =
        frontend_ports.into_iter().map(|(port, e)| (port, PortEntry { vip: 0, frontend: 0, flags: e.flags })).collect();
    let own = cfg.own_site();
    let here = |s: &&crate::config::Shard| s.site.is_some() && s.site == own;
    let reverse = cfg
        .shards
        .iter()
        .zip(ids)
        .filter(|(s, _)| here(s))
        .map(|(s, id)| reverse_entry(cfg, fe_ids, s, id, false))
        .collect();
    let backends = cfg
        .shards
        .iter()
        .zip(ids)
        .filter(|(s, _)| here(s))
        .map(|(s, id)| (id.backend, Backend { addr: addr_to_map(s.address.octets()), site: 0 }))
        .collect();
    let mut tunnel_peers = Vec::new();
    if let Some(site) = own.map(|i| &cfg.sites[i]) {
        let local = addr_to_map(site.remote_node.octets());
        let port = port_to_map(site.port);
        for node in &site.ingress_nodes {
            let peer = addr_to_map(node.octets());
            tunnel_peers.push((peer, Tunnel { peer_addr: peer, local_addr: local, port, mtu: site.mtu, site: 0 }));
        }
        ports.push((port, PortEntry { vip: local, frontend: 0, flags: PORT_TUNNEL }));
    }
    RoutingPlan {
        frontends: Vec::new(),
        ports,
        backends,
        home_groups: Vec::new(),
        reverse,
        sites: Vec::new(),
        tunnel_peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITES: &str = "
interfaces: [eth0]
frontends: [{name: play, address: 198.18.100.1:7777}]
sites:
  - {name: far, remote_node: 198.18.70.2, ingress_nodes: [198.18.60.1, 198.18.60.2], source: 198.18.60.1, mtu: 1400}
shards:
  - {name: near, address: 198.18.61.2, capacity: 10}
  - {name: away, address: 198.18.71.2, capacity: 10, site: far}
";

    fn ids() -> Vec<ShardIds> {
        vec![ShardIds { backend: 1, home_group: 1 }, ShardIds { backend: 2, home_group: 2 }]
    }

    fn a(o: [u8; 4]) -> u32 {
        addr_to_map(o)
    }

    #[test]
    fn an_ingress_tunnels_to_the_site_of_a_shard_and_accepts_its_remote_node() {
        let cfg = crate::config::parse("t", SITES).unwrap();
        let plan = build(&cfg, &[0], &ids());
        assert_eq!(plan.backends[0].1.site, 0, "a shard without a site is routed");
        assert_eq!(plan.backends[1].1.site, 1);
        let far = Tunnel {
            peer_addr: a([198, 18, 70, 2]),
            local_addr: a([198, 18, 60, 1]),
            port: port_to_map(5555),
            mtu: 1400,
            site: 1,
        };
        assert_eq!(plan.sites, vec![(1, far)]);
        assert_eq!(plan.tunnel_peers, vec![(far.peer_addr, far)]);
        let tunnel_port = PortEntry { vip: far.local_addr, frontend: 0, flags: PORT_TUNNEL };
        assert!(plan.ports.contains(&(port_to_map(5555), tunnel_port)));
        assert!(plan.reverse.iter().all(|(_, r)| r.vip == a([198, 18, 100, 1])), "both reply from the VIP");
    }

    #[test]
    fn a_remote_node_takes_no_players_and_sends_its_own_shards_replies_back_into_the_tunnel() {
        let text = format!("role: remote\nsite: far\n{SITES}");
        let cfg = crate::config::parse("t", &text).unwrap();
        let plan = build(&cfg, &[0], &ids());
        assert!(plan.frontends.is_empty() && plan.home_groups.is_empty() && plan.sites.is_empty());
        let game_port = plan.ports.iter().find(|(p, _)| *p == port_to_map(7777)).unwrap().1;
        assert_eq!((game_port.vip, game_port.flags), (0, PORT_FRONTEND), "a VIP here would take players in");
        assert_eq!(plan.reverse.len(), 1, "only the site's own shards: {:?}", plan.reverse);
        assert_eq!((plan.reverse[0].0, plan.reverse[0].1.vip), (a([198, 18, 71, 2]), 0));
        let peers: Vec<u32> = plan.tunnel_peers.iter().map(|(p, _)| *p).collect();
        assert_eq!(peers, vec![a([198, 18, 60, 1]), a([198, 18, 60, 2])]);
        assert!(plan.tunnel_peers.iter().all(|(_, t)| t.local_addr == a([198, 18, 70, 2]) && t.site == 0));
    }

    #[test]
    fn a_preferred_site_takes_every_new_player_while_it_has_room() {
        let text = SITES.replace("7777}]", "7777, prefer_site: far}]");
        let cfg = crate::config::parse("t", &text).unwrap();
        let groups = |weights: [u32; 2]| {
            let rows = placement(&cfg, &[0], &ids(), |i| weights[i]);
            let mut g = rows[0].1.clone();
            g.sort_unstable();
            g.dedup();
            g
        };
        assert_eq!(groups([10, 10]), vec![2], "only `away` (site far) while it has room");
        assert_eq!(groups([10, 0]), vec![1], "full: the others take them");
        let local = crate::config::parse("t", &SITES.replace("7777}]", "7777, prefer_site: local}]")).unwrap();
        let rows = placement(&local, &[0], &ids(), |_| 10);
        assert!(rows[0].1.iter().all(|&g| g == 1));
        let wrong = crate::config::parse("t", &SITES.replace("7777}]", "7777, prefer_site: mars}]"));
        assert!(wrong.unwrap_err().to_string().contains("no site named `mars`; fix: use one of: far, or `local`"));
    }

    #[test]
    fn site_mistakes_are_named() {
        let bad = |from: &str, to: &str| crate::config::parse("t", &SITES.replace(from, to)).expect_err(to).to_string();
        assert!(bad("site: far}", "site: farr}").contains("no site named `farr`; fix: use one of: far"));
        assert!(bad("mtu: 1400", "mtu: 400").contains("a path MTU of 400 bytes"));
        assert!(bad("ingress_nodes: [198.18.60.1, 198.18.60.2]", "ingress_nodes: []").contains("no ingress node"));
        assert!(bad("mtu: 1400", "mtu: 1400, port: 7777").contains("port 7777 is also frontend `play`'s"));
        let remote = crate::config::parse("t", &format!("role: remote\n{SITES}"));
        assert!(remote.unwrap_err().to_string().contains("a remote node that names no site"));
        let stray = crate::config::parse("t", &format!("site: far\n{SITES}"));
        assert!(stray.unwrap_err().to_string().contains("`site:` on a node that is not a remote node"));
    }
}
