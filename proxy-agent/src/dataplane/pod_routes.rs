//! A game node's local shards: the interface through which each shard's
//! address is reached directly (a pod's host-side veth, as routed CNIs such
//! as Calico or Cilium in routing mode set up), read from the kernel's main
//! routing table (`/proc/net/route`, longest prefix wins). Shards on other
//! nodes are reached through a gateway and are skipped.

use std::net::Ipv4Addr;

/// One line of `/proc/net/route`.
#[derive(Debug, PartialEq)]
struct Route {
    iface: String,
    dest: u32,
    mask: u32,
    gateway: u32,
    metric: u32,
}

const RTF_UP: u32 = 0x1;

fn parse(table: &str) -> Vec<Route> {
    // Addresses are hex in host byte order: little-endian here.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, gateway, flags, metric, mask) =
                (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(3)?)?, f.get(6)?, hex(f.get(7)?)?);
            (flags & RTF_UP != 0).then(|| Route {
                iface: f[0].to_string(),
                dest: u32::from_be_bytes(dest.to_le_bytes()),
                mask: u32::from_be_bytes(mask.to_le_bytes()),
                gateway,
                metric: metric.parse().unwrap_or(0),
            })
        })
        .collect()
}

/// The route the kernel picks for `addr`: longest prefix, then lowest metric.
fn best_route(routes: &[Route], addr: Ipv4Addr) -> Option<&Route> {
    let a = u32::from(addr);
    routes.iter().filter(|r| a & r.mask == r.dest).max_by_key(|r| (r.mask.count_ones(), std::cmp::Reverse(r.metric)))
}

/// The interface each address is directly reached through, where it is.
pub fn direct_interfaces(table: &str, addrs: &[Ipv4Addr]) -> Vec<String> {
    let routes = parse(table);
    let mut found: Vec<String> = Vec::new();
    for addr in addrs {
        if let Some(r) = best_route(&routes, *addr) {
            if r.gateway == 0 && r.iface != "lo" && !found.contains(&r.iface) {
                found.push(r.iface.clone());
            }
        }
    }
    found
}

/// The interface the longest-prefix route to `addr` leaves by, directly or
/// through a gateway.
pub fn route_interface(table: &str, addr: Ipv4Addr) -> Option<String> {
    best_route(&parse(table), addr).map(|r| r.iface.clone())
}

/// The interfaces default routes leave by: a node's uplinks, which its
/// answers to players take.
pub fn default_interfaces(table: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for r in parse(table) {
        if r.mask == 0 && r.iface != "lo" && !found.contains(&r.iface) {
            found.push(r.iface);
        }
    }
    found
}

/// This network namespace's main routing table (empty if unreadable).
pub fn local_table() -> String {
    std::fs::read_to_string("/proc/net/route").unwrap_or_default()
}

/// As `direct_interfaces`, from this network namespace's table.
pub fn local_interfaces(addrs: &[Ipv4Addr]) -> Vec<String> {
    direct_interfaces(&local_table(), addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_direct_prefix() {
        // default via 198.18.2.1 on eth0; 198.18.21.0/24 on p-s1 (a pod's
        // veth); 198.18.22.0/24 via a gateway (another node).
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010212C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000212C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
p-s1\t001512C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t001612C6\t010212C6\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let addrs = [Ipv4Addr::new(198, 18, 21, 2), Ipv4Addr::new(198, 18, 22, 2), Ipv4Addr::new(198, 18, 99, 9)];
        assert_eq!(direct_interfaces(table, &addrs), ["p-s1"]);
        let via = |a: [u8; 4]| route_interface(table, Ipv4Addr::from(a));
        assert_eq!(via([198, 18, 21, 2]).as_deref(), Some("p-s1"));
        assert_eq!(via([198, 18, 22, 2]).as_deref(), Some("eth0"), "through a gateway");
        assert_eq!(via([203, 0, 113, 9]).as_deref(), Some("eth0"), "the default route");
        assert_eq!(default_interfaces(table), ["eth0"]);
    }
}
