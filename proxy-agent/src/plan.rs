//! The routing plan: the exact map contents a validated config asks for.
//! Pure data, so it is tested without a kernel; `tables` writes it.

use proxy_common::{
    net::{addr_to_map, port_to_map},
    Backend, Frontend, FrontendKey, PortEntry, Reverse, PLACEMENT_SLOTS, PORT_FRONTEND,
    PORT_SHARED,
};

use crate::{
    config::{Role, Validated},
    placement::{self, Candidate},
};

#[derive(Debug, Clone, PartialEq)]
pub struct RoutingPlan {
    pub frontends: Vec<(FrontendKey, Frontend)>,
    /// (UDP port in header byte order, hint)
    pub ports: Vec<(u16, PortEntry)>,
    /// (backend id, shard)
    pub backends: Vec<(u32, Backend)>,
    /// (group id, backend id)
    pub groups: Vec<(u32, u32)>,
    /// (shard address, reply rewrite)
    pub reverse: Vec<(u32, Reverse)>,
    /// (frontend id, PLACEMENT_SLOTS group ids)
    pub placement: Vec<(u32, Vec<u32>)>,
}

/// Backend id of the shard at `index` in the config (0 is "none").
pub fn backend_id(index: usize) -> u32 {
    index as u32 + 1
}

/// The group new players of a shard join: one home group per shard.
pub fn home_group(index: usize) -> u32 {
    index as u32 + 1
}

/// Builds the plan. `free_slots(i)` is the room shard `i` has for new players
/// (its capacity until health checks report player counts).
pub fn build(cfg: &Validated, free_slots: impl Fn(usize) -> u32) -> RoutingPlan {
    let frontends = cfg
        .frontends
        .iter()
        .enumerate()
        .map(|(id, f)| {
            let key = FrontendKey {
                vip: addr_to_map(f.address.ip().octets()),
                port: port_to_map(f.address.port()),
                _pad: 0,
            };
            (
                key,
                Frontend {
                    id: id as u32,
                    _pad: 0,
                },
            )
        })
        .collect::<Vec<(FrontendKey, Frontend)>>();
    let mut ports: Vec<(u16, PortEntry)> = Vec::new();
    for (key, fe) in &frontends {
        match ports.iter_mut().find(|(p, _)| *p == key.port) {
            // Several VIPs on one port: the data plane must use the hash.
            Some((_, entry)) => {
                *entry = PortEntry {
                    vip: 0,
                    frontend: 0,
                    flags: PORT_FRONTEND | PORT_SHARED,
                }
            }
            None => ports.push((
                key.port,
                PortEntry {
                    vip: key.vip,
                    frontend: fe.id as u16,
                    flags: PORT_FRONTEND,
                },
            )),
        }
    }
    let backends = cfg
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                backend_id(i),
                Backend {
                    addr: addr_to_map(s.address.octets()),
                    _pad: 0,
                },
            )
        })
        .collect();
    let groups = (0..cfg.shards.len())
        .map(|i| (home_group(i), backend_id(i)))
        .collect();
    let reverse = cfg
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let fe = &cfg.frontends[s.frontend];
            let rev = Reverse {
                vip: addr_to_map(fe.address.ip().octets()),
                port: port_to_map(fe.address.port()),
                frontend: s.frontend as u16,
                backend: backend_id(i),
            };
            (addr_to_map(s.address.octets()), rev)
        })
        .collect();
    let placement = (0..cfg.frontends.len())
        .map(|fe| {
            let candidates: Vec<Candidate<'_>> = cfg
                .shards
                .iter()
                .enumerate()
                .filter(|(_, s)| s.frontend == fe)
                .map(|(i, s)| Candidate {
                    name: &s.name,
                    group: home_group(i),
                    weight: if s.role == Role::Active {
                        free_slots(i)
                    } else {
                        0
                    },
                })
                .collect();
            (
                fe as u32,
                placement::fill(&candidates, PLACEMENT_SLOTS as usize),
            )
        })
        .collect();
    RoutingPlan {
        frontends,
        ports,
        backends,
        groups,
        reverse,
        placement,
    }
}
