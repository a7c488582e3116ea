//! ECMP: every ingress node holds the VIP on its loopback; the router sends
//! the VIP to a resilient next-hop group over them, hashing on ports
//! (`fib_multipath_hash_policy=1`), as a router fed by BGP (MetalLB, FRR)
//! does with one path per node announcing the address.
//!
//! A resilient group maps a flow's hash to one of 64 buckets and a bucket
//! to a next hop. Removing a next hop hands only its own buckets to the
//! others (the survivors are under their share, so none of theirs move):
//! flows of other nodes never change node. That is what the agents'
//! replication relies on: only the dead node's players arrive somewhere new.

use std::collections::BTreeMap;

use anyhow::{ensure, Result};

use super::topology::{ingress_ip, MultiIngress};
use crate::topology::VIP;

/// The next-hop group's id; next hop `i + 1` is ingress node `i`.
const GROUP: u32 = 100;
pub const BUCKETS: usize = 64;

pub struct Ecmp {
    pub net: MultiIngress,
    /// Which ingress nodes' next hops are in the group.
    members: Vec<bool>,
}

impl Ecmp {
    /// `nodes` ingress nodes, each with the VIP on `lo`, all in the group.
    pub fn build(nodes: usize, pod_game: &[usize], clients: usize) -> Result<Self> {
        let net = MultiIngress::build(nodes, pod_game, clients)?;
        let r = &net.router;
        r.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        for (i, n) in net.ingress.iter().enumerate() {
            n.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            let via = ingress_ip(i).to_string();
            r.ip(&["nexthop", "add", "id", &(i + 1).to_string(), "via", &via, "dev", "br-edge"])?;
        }
        let ecmp = Ecmp { net, members: vec![true; nodes] };
        // The default idle timer (120 s) keeps a busy bucket where it is;
        // only buckets of a removed next hop are moved at once.
        let buckets = BUCKETS.to_string();
        let (id, group) = (GROUP.to_string(), ecmp.group_arg()?);
        let r = &ecmp.net.router;
        r.ip(&["nexthop", "add", "id", &id, "group", &group, "type", "resilient", "buckets", &buckets])?;
        r.ip(&["route", "add", &format!("{VIP}/32"), "nhid", &id])?;
        Ok(ecmp)
    }

    /// `1/2/3`: the member next hops.
    fn group_arg(&self) -> Result<String> {
        let ids: Vec<String> =
            self.members.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| (i + 1).to_string()).collect();
        ensure!(!ids.is_empty(), "a next-hop group needs a member");
        Ok(ids.join("/"))
    }

    fn set_group(&self) -> Result<()> {
        let (id, group) = (GROUP.to_string(), self.group_arg()?);
        self.net.router.ip(&["nexthop", "replace", "id", &id, "group", &group, "type", "resilient"]).map(|_| ())
    }

    /// Removes node `i`'s next hop from the group, as the router does when
    /// the node's BGP session withdraws the route (or its hold timer or BFD
    /// fires). Its buckets go to the others at once; no other bucket moves.
    pub fn withdraw(&mut self, i: usize) -> Result<()> {
        ensure!(self.members[i], "ingress node {} is not in the group", i + 1);
        self.members[i] = false;
        self.set_group()
    }

    /// Puts node `i`'s next hop back (a node announcing again). Resilient
    /// groups then move idle buckets to it only as they go idle.
    pub fn announce(&mut self, i: usize) -> Result<()> {
        self.members[i] = true;
        self.set_group()
    }

    /// Node `i` dies: its NIC goes down. The router does not notice (its
    /// bridge stays up): the next hop stays, and the node's flows are
    /// black-holed until `withdraw(i)`.
    pub fn kill_node(&self, i: usize) -> Result<()> {
        self.net.kill_node(i)
    }

    /// Which ingress nodes are in the group.
    pub fn members(&self) -> Vec<usize> {
        self.members.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i).collect()
    }

    /// The group's buckets per ingress node, read from the kernel.
    pub fn buckets(&self) -> Result<BTreeMap<usize, usize>> {
        let mut per = BTreeMap::new();
        for node in self.bucket_table()? {
            *per.entry(node).or_default() += 1;
        }
        Ok(per)
    }

    /// The bucket -> ingress node table, for comparing before and after.
    pub fn bucket_table(&self) -> Result<Vec<usize>> {
        let out = self.net.router.ip(&["nexthop", "bucket", "show", "id", &GROUP.to_string()])?;
        let mut table = vec![usize::MAX; BUCKETS];
        for line in out.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let at = |key: &str| w.iter().position(|x| *x == key).and_then(|p| w.get(p + 1)?.parse::<usize>().ok());
            if let (Some(index), Some(nh)) = (at("index"), at("nhid")) {
                table[index] = nh - 1;
            }
        }
        ensure!(!table.contains(&usize::MAX), "a bucket without a next hop:\n{out}");
        Ok(table)
    }
}
