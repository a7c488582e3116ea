//! A topology shaped like a Kubernetes cluster, for direct server return: a
//! client, a router, an ingress node, and two game nodes whose shard "pods"
//! are namespaces behind routed veths (as Calico or Cilium in routing mode
//! set them up), each game node masquerading its pods' traffic to the
//! outside. A game node reaches the client through the router, never
//! through the ingress node.
//!
//! ```text
//!  client 198.18.0.2.. ── r-client 198.18.0.1   router
//!                          r-ingress 198.18.1.1 ── eth0 198.18.1.2   ingress (VIP 198.18.100.1)
//!                          r-g1 198.18.2.1 ── eth0 198.18.2.2   game1 ── p-s1 198.18.21.1 ── pod s1 198.18.21.2
//!                          r-g2 198.18.3.1 ── eth0 198.18.3.2   game2 ── p-s2 198.18.22.1 ── pod s2 198.18.22.2
//!                                                                      ── p-s3 198.18.23.1 ── pod s3 198.18.23.2
//! ```

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::Result;
use proxy_agent::dataplane::Dataplane;

use crate::{
    netns::{veth, NetNs},
    pins::PinDir,
    topology::{PORT, VIP},
};

pub const INGRESS_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

pub struct DsrTopology {
    pub client: NetNs,
    pub router: NetNs,
    pub ingress: NetNs,
    pub games: Vec<NetNs>,
    pub pods: Vec<NetNs>,
    pub client_ips: Vec<Ipv4Addr>,
    /// Which game node each pod runs on.
    pub pod_game: Vec<usize>,
    /// XDP_PASS where redirected frames arrive on a veth (PLATFORM.md's traps).
    _xdp_pass: Vec<(Dataplane, PinDir)>,
}

pub fn pod_ip(pod: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 21 + pod as u8, 2)
}

/// The frontend and shards of an agent config where pod `p` is shard
/// `s{p+1}` with `roles[p]`, each with `capacity` slots.
pub fn pods_shards_yaml(roles: &[&str], capacity: u32) -> String {
    let mut y = format!("frontends:\n  - name: play\n    address: {VIP}:{PORT}\nshards:\n");
    for (p, role) in roles.iter().enumerate() {
        y.push_str(&format!(
            "  - name: s{}\n    address: {}\n    capacity: {capacity}\n    role: {role}\n",
            p + 1,
            pod_ip(p)
        ));
    }
    y
}

pub fn game_ip(game: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2 + game as u8, 2)
}

fn offloads(ns: &NetNs, dev: &str) -> Result<()> {
    ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
    ns.exec("ethtool", &["-K", dev, "gro", "on"])?;
    Ok(())
}

impl DsrTopology {
    /// Game nodes and, per pod, the game node it runs on.
    pub fn build(pod_game: &[usize], clients: usize) -> Result<Self> {
        let games_n = pod_game.iter().max().map_or(0, |m| m + 1);
        let mut t = DsrTopology {
            client: NetNs::new("client")?,
            router: NetNs::new("router")?,
            ingress: NetNs::new("ingress")?,
            games: (0..games_n).map(|g| NetNs::new(&format!("game{}", g + 1))).collect::<Result<_>>()?,
            pods: (0..pod_game.len()).map(|p| NetNs::new(&format!("pod-s{}", p + 1))).collect::<Result<_>>()?,
            client_ips: (0..clients).map(|i| Ipv4Addr::new(198, 18, 0, 2 + i as u8)).collect(),
            pod_game: pod_game.to_vec(),
            _xdp_pass: Vec::new(),
        };
        for ns in [&t.router, &t.ingress].into_iter().chain(t.games.iter()) {
            for (k, v) in [
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
        }
        let r = &t.router;
        // client <-> router
        veth(&t.client, "eth0", r, "r-client")?;
        for ip in &t.client_ips {
            t.client.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        }
        t.client.ip(&["link", "set", "eth0", "up"])?;
        t.client.ip(&["route", "add", "198.18.100.0/24", "via", "198.18.0.1"])?;
        offloads(&t.client, "eth0")?;
        r.ip(&["addr", "add", "198.18.0.1/24", "dev", "r-client"])?;
        r.ip(&["link", "set", "r-client", "up"])?;
        offloads(r, "r-client")?;
        // router <-> ingress: the VIP lives behind the ingress node.
        veth(r, "r-ingress", &t.ingress, "eth0")?;
        r.ip(&["addr", "add", "198.18.1.1/24", "dev", "r-ingress"])?;
        r.ip(&["link", "set", "r-ingress", "up"])?;
        r.ip(&["route", "add", &format!("{VIP}/32"), "via", &INGRESS_IP.to_string()])?;
        offloads(r, "r-ingress")?;
        t.ingress.ip(&["addr", "add", &format!("{INGRESS_IP}/24"), "dev", "eth0"])?;
        t.ingress.ip(&["link", "set", "eth0", "up"])?;
        t.ingress.ip(&["route", "add", "default", "via", "198.18.1.1"])?;
        offloads(&t.ingress, "eth0")?;
        // router <-> game nodes, each masquerading its pods' other traffic.
        for (g, game) in t.games.iter().enumerate() {
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
            game.exec("nft", &["-f", path.to_str().unwrap()])?;
            let _ = std::fs::remove_file(&path);
        }
        for p in 0..t.pods.len() {
            t.add_pod(p)?;
        }
        // Redirected frames arrive on these veths: give them XDP_PASS.
        for (ns, dev) in [(&t.router, "r-ingress".to_string()), (&t.client, "eth0".to_string())]
            .into_iter()
            .chain((0..t.games.len()).map(|g| (&t.router, format!("r-g{}", g + 1))))
        {
            let pins = PinDir::new("dsr-pass")?;
            let (mut dp, _) = Dataplane::load(pins.path())?;
            ns.run(|| dp.attach_pass(&dev))??;
            t._xdp_pass.push((dp, pins));
        }
        Ok(t)
    }

    /// Creates pod `p`'s veth and namespace side, and the router's route to it.
    pub fn add_pod(&self, p: usize) -> Result<()> {
        self.add_pod_as(p, &format!("p-s{}", p + 1), 21 + p as u8)
    }

    /// Pod `p`'s namespace as a new pod: host-side veth `gif`, the pod at
    /// 198.18.`subnet`.2 (a recreated pod gets a new IP).
    pub fn add_pod_as(&self, p: usize, gif: &str, subnet: u8) -> Result<()> {
        let g = self.pod_game[p];
        let (game, pod) = (&self.games[g], &self.pods[p]);
        veth(game, gif, pod, "eth0")?;
        game.ip(&["addr", "add", &format!("198.18.{subnet}.1/24"), "dev", gif])?;
        game.ip(&["link", "set", gif, "up"])?;
        offloads(game, gif)?;
        pod.ip(&["addr", "add", &format!("198.18.{subnet}.2/24"), "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pod.ip(&["route", "add", "default", "via", &format!("198.18.{subnet}.1")])?;
        offloads(pod, "eth0")?;
        let route = format!("198.18.{subnet}.0/24");
        let _ = self.router.ip(&["route", "replace", &route, "via", &game_ip(g).to_string()]);
        Ok(())
    }

    /// Deletes pod `p`'s veth: the pod is gone (its namespace stays for a
    /// new pod).
    pub fn delete_pod(&self, p: usize) -> Result<()> {
        self.games[self.pod_game[p]].ip(&["link", "del", &format!("p-s{}", p + 1)])?;
        Ok(())
    }

    /// A socket on the frontend's port in pod `p`.
    pub fn pod_socket(&self, p: usize) -> Result<UdpSocket> {
        self.pods[p]
            .run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).map_err(anyhow::Error::from))?
    }

    /// `count` player sockets in the client namespace.
    pub fn player_sockets(&self, count: usize) -> Result<Vec<UdpSocket>> {
        crate::topology::player_sockets(&self.client, &self.client_ips, count)
    }

    /// The shards of a config: pod `p` is shard `s{p+1}`, with its role.
    pub fn shards_yaml(&self, roles: &[&str]) -> String {
        pods_shards_yaml(roles, 100)
    }
}
