//! The routing plan: the exact map contents a validated config asks for,
//! given each shard's ids and placement weight. Pure data, so it is tested
//! without a kernel; the cluster writes it.

use proxy_common::{
    net::{addr_to_map, port_to_map},
    Backend, Frontend, FrontendKey, PortEntry, Reverse, PLACEMENT_SLOTS, PORT_FRONTEND, PORT_SHARED,
};

use super::placement::{self, Candidate};
use crate::config::Validated;

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
            (fe_ids[fe], placement::fill(&candidates, PLACEMENT_SLOTS as usize))
        })
        .collect()
}

/// Builds the plan for `cfg` with frontend `i` at `fe_ids[i]` and shard `i`
/// at `ids[i]`. Placement, which follows the load, is [`placement`]'s.
pub fn build(cfg: &Validated, fe_ids: &[u32], ids: &[ShardIds]) -> RoutingPlan {
    let (frontends, ports) = frontends(cfg, fe_ids);
    let backends = cfg
        .shards
        .iter()
        .zip(ids)
        .map(|(s, id)| (id.backend, Backend { addr: addr_to_map(s.address.octets()), _pad: 0 }))
        .collect();
    let home_groups = ids.iter().map(|id| (id.home_group, id.backend)).collect();
    let reverse = cfg
        .shards
        .iter()
        .zip(ids)
        .map(|(s, id)| {
            let fe = &cfg.frontends[s.frontend];
            let rev = Reverse {
                vip: addr_to_map(fe.address.ip().octets()),
                port: port_to_map(fe.address.port()),
                frontend: fe_ids[s.frontend] as u16,
                backend: id.backend,
            };
            (addr_to_map(s.address.octets()), rev)
        })
        .collect();
    RoutingPlan { frontends, ports, backends, home_groups, reverse }
}
