//! The standard test topology: a client namespace, a proxy namespace and N
//! shard namespaces, joined by veth pairs, with addresses from 198.18.0.0/15.
//!
//! ```text
//!  client (198.18.0.2 .. .0.(1+clients))        VIP 198.18.100.1 via 198.18.0.1
//!     eth0 ──── to-client (198.18.0.1)  proxy
//!                         to-s1 (198.18.11.1) ──── eth0 (198.18.11.2)  shard 1
//!                         to-s2 (198.18.12.1) ──── eth0 (198.18.12.2)  shard 2 ...
//! ```
//! The three veth/XDP traps of PLATFORM.md are handled here: GRO on every
//! peer that receives redirected frames, tx checksum offload off on senders,
//! forwarding on in the proxy for packets XDP passes up.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::Result;

use proxy_agent::dataplane::Dataplane;

use crate::{
    netns::{veth, NetNs},
    pins::PinDir,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
pub const PORT: u16 = 7777;
pub const PROXY_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

pub struct Topology {
    pub client: NetNs,
    pub proxy: NetNs,
    pub shards: Vec<NetNs>,
    pub client_ips: Vec<Ipv4Addr>,
    pub shard_ips: Vec<Ipv4Addr>,
    /// The proxy-side interfaces the agent attaches to.
    pub proxy_ifs: Vec<String>,
    /// XDP_PASS on the client's eth0, so the answers the proxy sends back
    /// with XDP_TX reach it (veth's fourth trap; see `Dataplane::attach_pass`).
    _client_xdp: Option<(Dataplane, PinDir)>,
}

pub fn shard_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 2)
}

impl Topology {
    pub fn build(shards: usize, client_ips: usize) -> Result<Self> {
        let client = NetNs::new("client")?;
        let proxy = NetNs::new("proxy")?;
        let shard_ns = (0..shards).map(|i| NetNs::new(&format!("s{}", i + 1))).collect::<Result<Vec<_>>>()?;
        let mut topo = Topology {
            client,
            proxy,
            shards: shard_ns,
            client_ips: (0..client_ips).map(|i| Ipv4Addr::new(198, 18, 0, 2 + i as u8)).collect(),
            shard_ips: (0..shards).map(shard_ip).collect(),
            proxy_ifs: vec!["to-client".into()],
            _client_xdp: None,
        };
        let p = &topo.proxy;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            p.sysctl(k, v)?;
        }
        veth(&topo.client, "eth0", p, "to-client")?;
        let c = &topo.client;
        for ip in &topo.client_ips {
            c.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        }
        c.ip(&["link", "set", "eth0", "up"])?;
        c.ip(&["route", "add", "198.18.100.0/24", "via", &PROXY_CLIENT_SIDE.to_string()])?;
        sender_receiver_offloads(c, "eth0")?;
        // Below the kernel floor nothing loads: there only the agent's
        // refusal is tested, which needs no answers to reach the client.
        if proxy_agent::dataplane::kernel_probe::below_floor().is_none() {
            let pins = PinDir::new("client-xdp")?;
            let (mut dp, _) = Dataplane::load(pins.path())?;
            c.run(|| dp.attach_pass("eth0"))??;
            topo._client_xdp = Some((dp, pins));
        }
        p.ip(&["addr", "add", &format!("{PROXY_CLIENT_SIDE}/24"), "dev", "to-client"])?;
        p.ip(&["link", "set", "to-client", "up"])?;
        for i in 0..shards {
            topo.link_shard(i)?;
            topo.proxy_ifs.push(format!("to-s{}", i + 1));
        }
        Ok(topo)
    }

    /// The veth pair from the proxy (`to-s{i+1}`) to shard `i`, addressed
    /// and routed.
    fn link_shard(&self, i: usize) -> Result<()> {
        let (p, s) = (&self.proxy, &self.shards[i]);
        let ifname = format!("to-s{}", i + 1);
        veth(p, &ifname, s, "eth0")?;
        let gw = Ipv4Addr::new(198, 18, 11 + i as u8, 1);
        p.ip(&["addr", "add", &format!("{gw}/24"), "dev", &ifname])?;
        p.ip(&["link", "set", &ifname, "up"])?;
        s.ip(&["addr", "add", &format!("{}/24", self.shard_ips[i]), "dev", "eth0"])?;
        s.ip(&["link", "set", "eth0", "up"])?;
        s.ip(&["route", "add", "default", "via", &gw.to_string()])?;
        sender_receiver_offloads(s, "eth0")
    }

    /// Deletes shard `i`'s veth pair and makes it again under the same
    /// names (as a re-created pod's veth): a new interface, same name.
    pub fn recreate_shard_link(&self, i: usize) -> Result<()> {
        self.proxy.ip(&["link", "del", &format!("to-s{}", i + 1)])?;
        self.link_shard(i)
    }

    pub fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, PORT)
    }

    /// Names of every namespace of this topology.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![self.client.name.clone(), self.proxy.name.clone()];
        names.extend(self.shards.iter().map(|s| s.name.clone()));
        names
    }

    /// `count` player sockets in the client namespace, spread over the client
    /// IPs, each on its own ephemeral port.
    pub fn player_sockets(&self, count: usize) -> Result<Vec<UdpSocket>> {
        player_sockets(&self.client, &self.client_ips, count)
    }

    /// A socket on the shard's port in shard `i`'s namespace.
    pub fn shard_socket(&self, i: usize) -> Result<UdpSocket> {
        self.shards[i]
            .run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).map_err(anyhow::Error::from))?
    }

    /// A YAML config for this topology: one frontend on the VIP, one shard per
    /// namespace with the given capacities. `extra` is appended verbatim.
    pub fn config(&self, capacities: &[u32], extra: &str) -> String {
        let shards: Vec<(usize, u32, &str)> = capacities.iter().enumerate().map(|(i, &c)| (i, c, "active")).collect();
        self.config_of(&shards, extra)
    }

    /// A config naming the shards `(namespace index, capacity, role)` only;
    /// shard `i` is called `s{i+1}`.
    pub fn config_of(&self, shards: &[(usize, u32, &str)], extra: &str) -> String {
        let mut y = format!(
            "interfaces: [{}]\nfrontends:\n  - name: play\n    address: {}\nshards:\n",
            self.proxy_ifs.join(", "),
            self.vip()
        );
        for &(i, cap, role) in shards {
            let ip = self.shard_ips[i];
            y.push_str(&format!("  - name: s{}\n    address: {ip}\n    capacity: {cap}\n    role: {role}\n", i + 1));
        }
        y.push_str(extra);
        y
    }
}

/// `count` UDP sockets in `ns`, spread over `ips`, each on its own
/// ephemeral port: players.
pub fn player_sockets(ns: &NetNs, ips: &[Ipv4Addr], count: usize) -> Result<Vec<UdpSocket>> {
    let ips = ips.to_vec();
    ns.run(move || {
        (0..count)
            .map(|i| UdpSocket::bind(SocketAddrV4::new(ips[i % ips.len()], 0)).map_err(anyhow::Error::from))
            .collect::<Result<Vec<_>>>()
    })?
}

/// Trap 2: senders must not leave partial checksums for XDP to see; trap 1:
/// receivers of redirected frames need NAPI (GRO on).
fn sender_receiver_offloads(ns: &NetNs, dev: &str) -> Result<()> {
    ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
    ns.exec("ethtool", &["-K", dev, "gro", "on"])?;
    Ok(())
}
