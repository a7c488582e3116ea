//! The namespaces and links every multi-ingress test shares.
//!
//! ```text
//!  client 198.18.0.2.. ── r-client 198.18.0.1  router
//!                          br-edge 198.18.1.1 (a bridge: the edge switch)
//!                            ├ r-in1 ── eth0 198.18.1.2  ingress 1 (VIP 198.18.100.1)
//!                            ├ r-in2 ── eth0 198.18.1.3  ingress 2 (VIP)
//!                            └ r-in3 ── eth0 198.18.1.4  ingress 3 (VIP)
//!                          r-g1 198.18.2.1 ── eth0 198.18.2.2  game1 ── p-s1 ── pod s1 198.18.21.2
//!                          r-g2 198.18.3.1 ── eth0 198.18.3.2  game2 ── p-s2 ── pod s2 198.18.22.2 ...
//! ```
//!
//! The ingress nodes share one L2 segment toward the router (a bridge, as a
//! top-of-rack switch), not a veth each: VRRP needs a segment the address
//! can float on, and one shape serves both spreading methods. A dead node's
//! port goes dark while `br-edge` stays up, so the router learns nothing
//! from the link: its next hop stays until it is withdrawn, as after a real
//! node death before BGP or BFD notice. (A veth of its own would not tell
//! the router either: on carrier loss the kernel keeps the next hop and
//! keeps sending into the dead link.)
//! Ingress nodes reach the pods through the router (default route via
//! 198.18.1.1), the way a node reaches pod IPs of other nodes in a routed
//! cluster network; the game nodes answer players through the router too
//! (direct server return), never through an ingress node.
//!
//! Unknown-unicast flooding is off on the ingress ports: a veth has no MAC
//! filter in front of XDP, so a frame flooded to every port (the dead
//! node's MAC forgotten by the bridge) would reach the other agents' XDP
//! programs, which would forward players a real NIC would never hand them.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::Result;
use proxy_agent::dataplane::Dataplane;

use crate::{
    dsr::{game_ip, pod_ip},
    netns::{veth, NetNs},
    pins::PinDir,
    topology::{PORT, VIP},
};

pub const ROUTER_EDGE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

/// Ingress node `i`'s address on the edge segment.
pub fn ingress_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 2 + i as u8)
}

pub struct MultiIngress {
    pub client: NetNs,
    pub router: NetNs,
    /// The ingress nodes; each has `eth0` on the edge segment.
    pub ingress: Vec<NetNs>,
    pub games: Vec<NetNs>,
    pub pods: Vec<NetNs>,
    pub client_ips: Vec<Ipv4Addr>,
    /// Which game node each pod runs on.
    pub pod_game: Vec<usize>,
    /// XDP_PASS where redirected frames arrive on a veth (PLATFORM.md's
    /// first and fourth traps): the router's ports toward the ingress and
    /// game nodes, and the client's eth0.
    _xdp_pass: Vec<(Dataplane, PinDir)>,
}

/// Forwarding on, reverse-path filter off: the ingress and game nodes
/// forward what their agents pass up, and replies leave by another path
/// than requests came in.
fn forwarding(ns: &NetNs) -> Result<()> {
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.all.send_redirects", "0"),
    ] {
        ns.sysctl(k, v)?;
    }
    Ok(())
}

/// Trap 2: senders must not leave partial checksums for XDP to see; trap 1:
/// receivers of redirected frames need NAPI (GRO on).
pub(crate) fn offloads(ns: &NetNs, dev: &str) -> Result<()> {
    ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
    ns.exec("ethtool", &["-K", dev, "gro", "on"])?;
    Ok(())
}

impl MultiIngress {
    /// `nodes` ingress nodes on the edge segment (the VIP is not placed:
    /// that is the spreading method's job), game nodes with, per pod, the
    /// game node it runs on, and `clients` player addresses (at most 250).
    pub fn build(nodes: usize, pod_game: &[usize], clients: usize) -> Result<Self> {
        assert!((1..=8).contains(&nodes) && clients <= 250, "{nodes} ingress nodes, {clients} client addresses");
        let games_n = pod_game.iter().max().map_or(0, |m| m + 1);
        let mut t = MultiIngress {
            client: NetNs::new("client")?,
            router: NetNs::new("router")?,
            ingress: (0..nodes).map(|i| NetNs::new(&format!("in{}", i + 1))).collect::<Result<_>>()?,
            games: (0..games_n).map(|g| NetNs::new(&format!("game{}", g + 1))).collect::<Result<_>>()?,
            pods: (0..pod_game.len()).map(|p| NetNs::new(&format!("pod-s{}", p + 1))).collect::<Result<_>>()?,
            client_ips: (0..clients).map(|i| Ipv4Addr::new(198, 18, 0, 2 + i as u8)).collect(),
            pod_game: pod_game.to_vec(),
            _xdp_pass: Vec::new(),
        };
        for ns in [&t.router].into_iter().chain(&t.ingress).chain(&t.games) {
            forwarding(ns)?;
        }
        t.link_client()?;
        t.router.ip(&["link", "add", "br-edge", "type", "bridge"])?;
        t.router.ip(&["addr", "add", &format!("{ROUTER_EDGE}/24"), "dev", "br-edge"])?;
        t.router.ip(&["link", "set", "br-edge", "up"])?;
        for i in 0..nodes {
            t.link_ingress(i)?;
        }
        for g in 0..games_n {
            t.link_game(g)?;
        }
        for p in 0..pod_game.len() {
            t.link_pod(p)?;
        }
        let router_ports: Vec<String> =
            (0..nodes).map(|i| format!("r-in{}", i + 1)).chain((0..games_n).map(|g| format!("r-g{}", g + 1))).collect();
        t.xdp_pass(true, &router_ports)?;
        t.xdp_pass(false, &["eth0".to_string()])?;
        Ok(t)
    }

    fn link_client(&self) -> Result<()> {
        let (c, r) = (&self.client, &self.router);
        veth(c, "eth0", r, "r-client")?;
        for ip in &self.client_ips {
            c.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        }
        c.ip(&["link", "set", "eth0", "up"])?;
        c.ip(&["route", "add", "198.18.100.0/24", "via", "198.18.0.1"])?;
        offloads(c, "eth0")?;
        r.ip(&["addr", "add", "198.18.0.1/24", "dev", "r-client"])?;
        r.ip(&["link", "set", "r-client", "up"])?;
        offloads(r, "r-client")
    }

    /// Ingress node `i`'s eth0, a port `r-in{i+1}` of the router's bridge.
    fn link_ingress(&self, i: usize) -> Result<()> {
        let (r, n) = (&self.router, &self.ingress[i]);
        let port = format!("r-in{}", i + 1);
        veth(r, &port, n, "eth0")?;
        r.ip(&["link", "set", &port, "master", "br-edge"])?;
        r.exec("bridge", &["link", "set", "dev", &port, "flood", "off"])?;
        r.ip(&["link", "set", &port, "up"])?;
        offloads(r, &port)?;
        n.ip(&["addr", "add", &format!("{}/24", ingress_ip(i)), "dev", "eth0"])?;
        n.ip(&["link", "set", "eth0", "up"])?;
        n.ip(&["route", "add", "default", "via", &ROUTER_EDGE.to_string()])?;
        offloads(n, "eth0")
    }

    /// Game node `g` behind the router, masquerading its pods' traffic that
    /// is not a reply to a player (the agents' return path rewrites those).
    fn link_game(&self, g: usize) -> Result<()> {
        let (r, game) = (&self.router, &self.games[g]);
        let rif = format!("r-g{}", g + 1);
        veth(r, &rif, game, "eth0")?;
        r.ip(&["addr", "add", &format!("198.18.{}.1/24", 2 + g), "dev", &rif])?;
        r.ip(&["link", "set", &rif, "up"])?;
        offloads(r, &rif)?;
        game.ip(&["addr", "add", &format!("{}/24", game_ip(g)), "dev", "eth0"])?;
        game.ip(&["link", "set", "eth0", "up"])?;
        game.ip(&["route", "add", "default", "via", &format!("198.18.{}.1", 2 + g)])?;
        offloads(game, "eth0")?;
        let nft = "add table ip nat\n\
            add chain ip nat post { type nat hook postrouting priority 100 ; }\n\
            add rule ip nat post oifname \"eth0\" ip saddr 198.18.16.0/20 masquerade\n";
        let path = std::env::temp_dir().join(format!("{}.nft", game.name));
        std::fs::write(&path, nft)?;
        let loaded = game.exec("nft", &["-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        loaded.map(|_| ())
    }

    /// Pod `p` behind a routed veth `p-s{p+1}` on its game node.
    fn link_pod(&self, p: usize) -> Result<()> {
        let g = self.pod_game[p];
        let (game, pod) = (&self.games[g], &self.pods[p]);
        let (gif, subnet) = (format!("p-s{}", p + 1), 21 + p);
        veth(game, &gif, pod, "eth0")?;
        game.ip(&["addr", "add", &format!("198.18.{subnet}.1/24"), "dev", &gif])?;
        game.ip(&["link", "set", &gif, "up"])?;
        offloads(game, &gif)?;
        pod.ip(&["addr", "add", &format!("{}/24", pod_ip(p)), "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pod.ip(&["route", "add", "default", "via", &format!("198.18.{subnet}.1")])?;
        offloads(pod, "eth0")?;
        self.router.ip(&["route", "replace", &format!("198.18.{subnet}.0/24"), "via", &game_ip(g).to_string()])?;
        Ok(())
    }

    /// One loaded XDP_PASS program, attached to `devs` in the router (or
    /// the client): one load per namespace, not per device.
    fn xdp_pass(&mut self, router: bool, devs: &[String]) -> Result<()> {
        let pins = PinDir::new("ha-pass")?;
        let (mut dp, _) = Dataplane::load(pins.path())?;
        let ns = if router { &self.router } else { &self.client };
        ns.run(|| devs.iter().try_for_each(|d| dp.attach_pass(d)))??;
        self._xdp_pass.push((dp, pins));
        Ok(())
    }

    pub fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, PORT)
    }

    /// Takes ingress node `i`'s NIC down: the node is gone from the segment.
    /// The router's bridge port goes dark but the bridge stays up, so the
    /// router keeps sending to it until told otherwise.
    pub fn kill_node(&self, i: usize) -> Result<()> {
        self.ingress[i].ip(&["link", "set", "eth0", "down"]).map(|_| ())
    }

    /// Brings ingress node `i`'s NIC back, with its default route.
    pub fn revive_node(&self, i: usize) -> Result<()> {
        let n = &self.ingress[i];
        n.ip(&["link", "set", "eth0", "up"])?;
        n.ip(&["route", "replace", "default", "via", &ROUTER_EDGE.to_string()])?;
        Ok(())
    }

    /// A socket on the frontend's port in pod `p`.
    pub fn pod_socket(&self, p: usize) -> Result<UdpSocket> {
        self.pods[p]
            .run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).map_err(anyhow::Error::from))?
    }

    /// `count` player sockets in the client namespace, spread over the
    /// client addresses, each on its own ephemeral port: distinct flows.
    pub fn player_sockets(&self, count: usize) -> Result<Vec<UdpSocket>> {
        crate::topology::player_sockets(&self.client, &self.client_ips, count)
    }

    /// The shards of an agent config: pod `p` is shard `s{p+1}`.
    pub fn shards_yaml(&self, roles: &[&str], capacity: u32) -> String {
        crate::dsr::pods_shards_yaml(roles, capacity)
    }

    /// Names of every namespace of this topology.
    pub fn namespaces(&self) -> Vec<String> {
        [&self.client, &self.router]
            .into_iter()
            .chain(&self.ingress)
            .chain(&self.games)
            .chain(&self.pods)
            .map(|n| n.name.clone())
            .collect()
    }
}
