//! The tunnel rows of `bench fastpath` (issue 22): encapsulation on the
//! ingress node (the hit path of a player whose shard is in another site),
//! decapsulation on the remote node (a tunnel packet from a configured
//! ingress node, delivered to its shard), and the reply's decapsulation on
//! the ingress, each beside XDP_PASS and today's plain hit path measured in
//! the same bed.
//!
//! All cold (`repeat` = 1, one packet per call): the kernel does not restore
//! the packet between repeats, and neither encapsulation (it grows the
//! packet by 28 bytes, pushed at the front) nor decapsulation can be made a
//! fixed point, so a second repeat would measure another path. The cold
//! figure carries the kernel's per-call overhead, as the XDP_PASS and plain
//! hit rows beside it do: compare the tunnel rows with those, not with the
//! warm rows.
//!
//! ```text
//!  ingress bed: cli0 198.18.60.1 (client 198.18.60.2)   fwd0 198.18.50.1 (remote node 198.18.50.2,
//!               plain shard 198.18.50.3); far1 198.18.70.2 sits in site `far` behind 198.18.50.2
//!  remote bed:  rw0 198.18.80.1 (ingress node 198.18.80.2)   rs0 198.18.90.1 (far1 198.18.90.2)
//! ```

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use proxy_agent::{cluster::Cluster, config, dataplane::Dataplane, tables::Tables};
use proxy_common::{
    net::{addr_to_map, port_to_map},
    Session, SessionKey,
};
use tests::{
    bed::{game_packet, pin_to_cpu, xdp_ctx_arriving_on, XDP_REDIRECT},
    netns::NetNs,
    packet::Udp,
    pins::PinDir,
};

use super::{median, Row};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 2);
const PORT: u16 = 7777;
const TUNNEL_PORT: u16 = 5555;

/// A namespace with one data plane whose maps a config wrote, both
/// programs held in the XDP dispatcher (attached to a down veth pair).
struct TunnelBed {
    ns: NetNs,
    dp: Dataplane,
    tables: Tables,
    homes: Vec<u32>,
    _pins: PinDir,
}

impl TunnelBed {
    fn new(role: &str, ip_cmds: &[&str], yaml: &str) -> Result<TunnelBed> {
        let ns = NetNs::new(&format!("bench-{role}"))?;
        for cmd in ip_cmds.iter().chain(&["link add hold0 type veth peer name hold1"]) {
            ns.ip(&cmd.split(' ').collect::<Vec<_>>())?;
        }
        ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        let pins = PinDir::new("bench-tunnel")?;
        let (mut dp, cluster_tables) = Dataplane::load(pins.path())?;
        let cfg = config::parse("bench", yaml)?;
        // The cluster writes the maps from the config (sites, tunnel peers,
        // the tunnel port), as the agent does; the bench adds sessions.
        let cluster = Cluster::start(cfg, cluster_tables)?;
        let homes = cluster.ids.iter().map(|i| i.home_group).collect();
        drop(cluster);
        ns.run(|| -> Result<()> {
            dp.attach(&["hold0".to_string()], config::XdpModeName::Driver)?;
            dp.attach_pass("hold1")
        })??;
        let tables = Tables::open_pinned(pins.path())?;
        Ok(TunnelBed { ns, dp, tables, homes, _pins: pins })
    }

    fn session(&self, client: Ipv4Addr, port: u16, group: u32) -> Result<()> {
        let epoch = self.tables.groups.get(&group, 0)?.epoch;
        let key = SessionKey { client_addr: addr_to_map(client.octets()), client_port: port_to_map(port), frontend: 0 };
        proxy_agent::batch::update(
            &self.tables.sessions,
            &[(key, Session { group, epoch, last_seen_ns: u64::MAX / 2 })],
        )?;
        Ok(())
    }

    fn ifindex(&self, dev: &str) -> Result<u32> {
        let name = std::ffi::CString::new(dev)?;
        // SAFETY: a valid C string; the call only reads it.
        let i = self.ns.run(|| unsafe { libc::if_nametoindex(name.as_ptr()) })?;
        if i == 0 {
            bail!("no interface {dev}");
        }
        Ok(i)
    }

    /// `calls` cold runs of `frame` arriving on `dev`, alternated with XDP_PASS.
    fn measure(&self, name: &'static str, calls: u32, dev: &str, frame: &[u8]) -> Result<Row> {
        let ctx = xdp_ctx_arriving_on(self.ifindex(dev)?, frame.len());
        let (mut ours, mut base) = self.ns.run(|| -> Result<(Vec<u64>, Vec<u64>)> {
            pin_to_cpu(0);
            let mut out = vec![0u8; 4096];
            let mut run = |prog: &Xdp| -> Result<(u32, u64)> {
                let opts = TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    repeat: 1,
                    ..Default::default()
                };
                let r = prog.test_run(opts)?;
                Ok((r.return_value, r.duration.as_nanos() as u64))
            };
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            for i in 0..calls {
                let (verdict, ns) = run(self.dp.program())?;
                if verdict != XDP_REDIRECT {
                    bail!("{name}: call {i} ended with verdict {verdict}, not XDP_REDIRECT: not the path it names");
                }
                ours.push(ns);
                base.push(run(self.dp.baseline())?.1);
            }
            Ok((ours, base))
        })??;
        Ok(Row { name, method: "cold", ns: median(&mut ours), baseline: median(&mut base) })
    }
}

/// A FOU packet from `outer_src` to `outer_dst`:5555 around `inner`.
fn fou(outer_src: Ipv4Addr, outer_dst: Ipv4Addr, inner: &Udp) -> Vec<u8> {
    let inner = inner.frame()[14..].to_vec();
    let mut outer = Udp::new(outer_src, 50000, outer_dst, TUNNEL_PORT, &inner);
    outer.zero_udp_checksum = true;
    outer.frame()
}

/// The rows: plain hit, encapsulation, reply decapsulation (ingress), and
/// decapsulation to the shard (remote node), all cold.
pub fn rows(calls: u32) -> Result<Vec<Row>> {
    let front = format!("frontends:\n  - name: play\n    address: {VIP}:{PORT}\n");
    let ingress_yaml = format!(
        "interfaces: [lo]\nhandshake_rate: 0\n{front}sites:\n  - {{name: far, remote_node: 198.18.50.2, source: 198.18.50.1, ingress_nodes: [198.18.50.1]}}\nshards:\n  - {{name: plain, address: 198.18.50.3, capacity: 100}}\n  - {{name: far1, address: 198.18.70.2, capacity: 100, site: far}}\n"
    );
    let ingress = TunnelBed::new(
        "ingress",
        &[
            "link add fwd0 address 02:00:00:00:50:01 type veth peer name fwd0p",
            "link set fwd0 up",
            "link set fwd0p up",
            "addr add 198.18.50.1/24 dev fwd0",
            "neigh add 198.18.50.2 lladdr 02:00:00:00:50:02 dev fwd0 nud permanent",
            "neigh add 198.18.50.3 lladdr 02:00:00:00:50:03 dev fwd0 nud permanent",
            "link add cli0 address 02:00:00:00:60:01 type veth peer name cli0p",
            "link set cli0 up",
            "link set cli0p up",
            "addr add 198.18.60.1/24 dev cli0",
            "neigh add 198.18.60.2 lladdr 02:00:00:00:60:02 dev cli0 nud permanent",
        ],
        &ingress_yaml,
    )?;
    ingress.session(CLIENT, 50000, ingress.homes[0])?;
    ingress.session(CLIENT, 50001, ingress.homes[1])?;
    let player = |port| Udp::new(CLIENT, port, VIP, PORT, &game_packet());
    let plain = ingress.measure("plain hit (same bed)", calls, "cli0", &player(50000).frame())?;
    let encap = ingress.measure("tunnel encap (ingress)", calls, "cli0", &player(50001).frame())?;
    let reply = Udp::new(Ipv4Addr::new(198, 18, 70, 2), PORT, CLIENT, 50001, &[0xE3; 40]);
    let reply = fou(Ipv4Addr::new(198, 18, 50, 2), Ipv4Addr::new(198, 18, 50, 1), &reply);
    let decap_reply = ingress.measure("tunnel decap reply (ingress)", calls, "fwd0", &reply)?;

    let remote_yaml = format!(
        "role: remote\nsite: far\ninterfaces: [lo]\n{front}sites:\n  - {{name: far, remote_node: 198.18.80.1, ingress_nodes: [198.18.80.2]}}\nshards:\n  - {{name: far1, address: 198.18.90.2, capacity: 100, site: far}}\n"
    );
    let remote = TunnelBed::new(
        "remote",
        &[
            "link add rw0 address 02:00:00:00:80:01 type veth peer name rw0p",
            "link set rw0 up",
            "link set rw0p up",
            "addr add 198.18.80.1/24 dev rw0",
            "neigh add 198.18.80.2 lladdr 02:00:00:00:80:02 dev rw0 nud permanent",
            "link add rs0 address 02:00:00:00:90:01 type veth peer name rs0p",
            "link set rs0 up",
            "link set rs0p up",
            "addr add 198.18.90.1/24 dev rs0",
            "neigh add 198.18.90.2 lladdr 02:00:00:00:90:02 dev rs0 nud permanent",
        ],
        &remote_yaml,
    )?;
    let inner = Udp::new(CLIENT, 50001, Ipv4Addr::new(198, 18, 90, 2), PORT, &game_packet());
    let tunnelled = fou(Ipv4Addr::new(198, 18, 80, 2), Ipv4Addr::new(198, 18, 80, 1), &inner);
    let decap = remote.measure("tunnel decap (remote node)", calls, "rw0", &tunnelled)?;
    Ok(vec![plain, encap, decap_reply, decap])
}
