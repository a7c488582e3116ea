//! Routers in front of several ingress nodes that share one public address,
//! for the tests of issue 20 (several ingress nodes, one cluster).
//!
//! One shape, two ways to spread the address:
//! - [`ecmp::Ecmp`]: the router holds a resilient next-hop group over the
//!   ingress nodes (what a BGP speaker such as MetalLB or FRR installs);
//! - [`vrrp::Vrrp`]: two ingress nodes run keepalived and the master holds
//!   the address on its NIC.
//!
//! Both sit on [`topology::MultiIngress`]: a client, a router whose edge
//! segment (a bridge, as a top-of-rack switch) joins the ingress nodes, and
//! game nodes with shard pods behind routed veths, exactly as `dsr.rs`.
//! [`standin`] gives plain UDP echo servers standing in for the ingress
//! agents and a flow driver that records which node answered each flow and
//! when, so the routers are proven at the kernel level, without the agent.

pub mod cluster;
pub mod ecmp;
pub mod standin;
pub mod topology;
pub mod vrrp;
