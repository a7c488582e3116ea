//! A one-armed proxy node, as a cloud node with one NIC: the proxy reaches
//! its players and its shard through the same interface, `arm0`, plugged
//! into one LAN (a bridge) where the client and the shard also hang, on
//! two subnets routed through the proxy.
//!
//! ```text
//!  client 198.18.20.2/24 ─┐                 ┌─ arm0 198.18.20.1/24, 198.18.21.1/24  proxy
//!   (VIP via .20.1)       ├── br0 (lan) ────┤
//!  shard  198.18.21.2/24 ─┘                 (VIP 198.18.100.1 on the agent's frontend)
//!   (default via .21.1)
//! ```
//! Every packet the proxy forwards leaves by the interface it came in on.
//! The veth traps of PLATFORM.md are handled as in `topology`: GRO and an
//! XDP_PASS program on the LAN side of `arm0` (it receives XDP_TX frames),
//! tx checksum offload off on the senders, forwarding on in the proxy.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::Result;
use proxy_agent::dataplane::Dataplane;

use crate::{
    netns::{veth, NetNs},
    pins::PinDir,
    topology::{player_sockets, PORT, VIP},
};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
pub const SHARD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 2);
const PROXY_CLIENT_SUBNET: &str = "198.18.20.1/24";
const PROXY_SHARD_SUBNET: &str = "198.18.21.1/24";

pub struct OneArm {
    pub client: NetNs,
    pub proxy: NetNs,
    pub shard: NetNs,
    pub lan: NetNs,
    /// XDP_PASS on the LAN side of `arm0`, so the frames the proxy sends
    /// back with XDP_TX are delivered (see `Dataplane::attach_pass`).
    _lan_xdp: (Dataplane, PinDir),
}

impl OneArm {
    pub fn build() -> Result<Self> {
        let (client, proxy, shard, lan) =
            (NetNs::new("arm-client")?, NetNs::new("arm-proxy")?, NetNs::new("arm-shard")?, NetNs::new("arm-lan")?);
        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        for (ns, port) in [(&proxy, "p-arm"), (&client, "p-client"), (&shard, "p-shard")] {
            let inside = if port == "p-arm" { "arm0" } else { "eth0" };
            veth(ns, inside, &lan, port)?;
            lan.ip(&["link", "set", port, "master", "br0"])?;
            lan.ip(&["link", "set", port, "up"])?;
            lan.exec("ethtool", &["-K", port, "gro", "on"])?;
        }
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            proxy.sysctl(k, v)?;
        }
        proxy.ip(&["addr", "add", PROXY_CLIENT_SUBNET, "dev", "arm0"])?;
        proxy.ip(&["addr", "add", PROXY_SHARD_SUBNET, "dev", "arm0"])?;
        proxy.ip(&["link", "set", "arm0", "up"])?;
        client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        client.ip(&["route", "add", "198.18.100.0/24", "via", "198.18.20.1"])?;
        shard.ip(&["addr", "add", &format!("{SHARD_IP}/24"), "dev", "eth0"])?;
        shard.ip(&["link", "set", "eth0", "up"])?;
        shard.ip(&["route", "add", "default", "via", "198.18.21.1"])?;
        for ns in [&client, &shard] {
            ns.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
            ns.exec("ethtool", &["-K", "eth0", "gro", "on"])?;
        }
        let pins = PinDir::new("arm-lan-xdp")?;
        let (mut dp, _) = Dataplane::load(pins.path())?;
        lan.run(|| dp.attach_pass("p-arm"))??;
        Ok(OneArm { client, proxy, shard, lan, _lan_xdp: (dp, pins) })
    }

    pub fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, PORT)
    }

    /// `count` player sockets in the client namespace.
    pub fn player_sockets(&self, count: usize) -> Result<Vec<UdpSocket>> {
        player_sockets(&self.client, &[CLIENT_IP], count)
    }

    /// A socket on the game port in the shard's namespace.
    pub fn shard_socket(&self) -> Result<UdpSocket> {
        self.shard
            .run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).map_err(anyhow::Error::from))?
    }

    /// The agent's config: one frontend, the one shard, the one interface.
    pub fn config(&self, capacity: u32) -> String {
        format!(
            "interfaces: [arm0]\nfrontends:\n  - name: play\n    address: {}\nshards:\n  - name: s1\n    address: {SHARD_IP}\n    capacity: {capacity}\n",
            self.vip()
        )
    }

    /// veth's `rx_queue_N_xdp_tx` of the proxy's `arm0`, summed: frames the
    /// data plane sent back out with XDP_TX.
    pub fn xdp_tx_frames(&self) -> Result<u64> {
        let stats = self.proxy.exec("ethtool", &["-S", "arm0"])?;
        Ok(stats
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rx_queue_")?.split_once("_xdp_tx:"))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum())
    }
}
