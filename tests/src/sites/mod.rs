//! Two data centres joined by a WAN that models BCP 38 (issue 22): players
//! beside an ingress node with its own LAN of shards, and a remote site whose
//! node (the agent in `role: remote`) stands in front of more shards. The WAN
//! router drops, and counts in named nftables counters, every packet whose
//! source is not the prefix of the site it comes from, so a shard in the
//! remote site is reachable only through the tunnel (FOU, UDP port 5555).
//!
//! ```text
//!  players 198.18.0.2.. ── p0 198.18.0.1  INGRESS  l1 198.18.17.1 ── local shard l1 198.18.17.2
//!  (VIP 198.18.100.1 via 198.18.0.1)               l2 198.18.18.1 ── local shard l2 198.18.18.2
//!                                          wan0 198.18.16.2 (+ 198.18.16.9, a stranger of the site)
//!                                              │
//!                        r-ing 198.18.16.1  WAN ROUTER  r-net 198.18.48.1 ── internet host 198.18.48.2
//!                                          r-far 198.18.32.1
//!                                              │
//!                                          wan0 198.18.32.2  REMOTE  f1 198.18.33.1 ── far shard far1 198.18.33.2
//!                                                                    f2 198.18.34.1 ── far shard far2 198.18.34.2
//! ```
//! Site prefixes: players 198.18.0.0/20, ingress 198.18.16.0/20, remote
//! 198.18.32.0/20, internet 198.18.48.0/20.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result};
use proxy_agent::dataplane::Dataplane;

use crate::{
    netns::{veth, NetNs},
    pins::PinDir,
    topology::{PORT, VIP},
};

pub const TUNNEL_PORT: u16 = 5555;
/// The ingress node's tunnel address (its WAN address).
pub const INGRESS_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 2);
/// Another address of the ingress site, not an ingress node.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 9);
/// The remote node's tunnel address.
pub const REMOTE_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 32, 2);
/// A host on the internet, outside both sites.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 48, 2);
pub const PLAYERS_PREFIX: &str = "198.18.0.0/20";
pub const INGRESS_PREFIX: &str = "198.18.16.0/20";
pub const REMOTE_PREFIX: &str = "198.18.32.0/20";
pub const INTERNET_PREFIX: &str = "198.18.48.0/20";
pub const SITE: &str = "far";

pub fn local_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 17 + i as u8, 2)
}

pub fn far_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 33 + i as u8, 2)
}

/// The WAN router's rules: BCP 38 per site-facing interface, and counters
/// of what crosses between the two sites. (`plain_udp` follows `return`s:
/// written as `udp sport != 5555 udp dport != 5555`, nft merges the two
/// into one 4-byte compare, which any other source port passes.)
const WAN_NFT: &str = "table ip wan {
  counter ing_spoofed {}
  counter far_spoofed {}
  counter net_spoofed {}
  counter far_leak {}
  counter fragments {}
  counter tunnel_udp {}
  counter plain_udp {}
  counter plain_to_far {}
  set ing_ok { type ipv4_addr; flags interval; elements = { 198.18.16.0/20 } }
  set far_ok { type ipv4_addr; flags interval; elements = { 198.18.32.0/20 } }
  set net_ok { type ipv4_addr; flags interval; elements = { 198.18.48.0/20 } }
  chain pre {
    type filter hook prerouting priority -500; policy accept;
    ip frag-off & 0x3fff != 0 counter name fragments
    iifname \"r-far\" ip saddr { 198.18.0.0/20, 198.18.100.1 } counter name far_leak
    iifname \"r-ing\" ip saddr != @ing_ok counter name ing_spoofed drop
    iifname \"r-far\" ip saddr != @far_ok counter name far_spoofed drop
    iifname \"r-net\" ip saddr != @net_ok counter name net_spoofed drop
  }
  chain forward_sites {
    type filter hook forward priority 0; policy accept;
    iifname { \"r-ing\", \"r-far\" } oifname { \"r-ing\", \"r-far\" } udp dport 5555 counter name tunnel_udp
    iifname \"r-ing\" oifname \"r-far\" udp dport 7777 counter name plain_to_far
    udp dport 5555 return
    udp sport 5555 return
    iifname { \"r-ing\", \"r-far\" } oifname { \"r-ing\", \"r-far\" } meta l4proto udp counter name plain_udp
  }
}
";

pub struct SitesTopology {
    pub players: NetNs,
    pub ingress: NetNs,
    pub router: NetNs,
    pub remote: NetNs,
    pub internet: NetNs,
    pub locals: Vec<NetNs>,
    pub fars: Vec<NetNs>,
    pub player_ips: Vec<Ipv4Addr>,
    /// XDP_PASS where redirected frames arrive on a veth (PLATFORM.md's traps).
    _xdp_pass: Vec<(Dataplane, PinDir)>,
}

/// One side of a routed veth: `dev` in `ns` at `addr` (with prefix length).
fn addr_up(ns: &NetNs, dev: &str, addr: &str) -> Result<()> {
    ns.ip(&["addr", "add", addr, "dev", dev])?;
    ns.ip(&["link", "set", dev, "up"])?;
    // Trap 2 (senders leave no partial checksums) and trap 1 (NAPI).
    ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
    ns.exec("ethtool", &["-K", dev, "gro", "on"])?;
    Ok(())
}

fn forwarding(ns: &NetNs) -> Result<()> {
    for (k, v) in
        [("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")]
    {
        ns.sysctl(k, v)?;
    }
    Ok(())
}

impl SitesTopology {
    /// `locals` shards on the ingress LAN, `fars` in the remote site,
    /// `players` player addresses.
    pub fn build(locals: usize, fars: usize, players: usize) -> Result<Self> {
        let mut t = SitesTopology {
            players: NetNs::new("players")?,
            ingress: NetNs::new("ingress")?,
            router: NetNs::new("wan")?,
            remote: NetNs::new("remote")?,
            internet: NetNs::new("internet")?,
            locals: (0..locals).map(|i| NetNs::new(&format!("l{}", i + 1))).collect::<Result<_>>()?,
            fars: (0..fars).map(|i| NetNs::new(&format!("far{}", i + 1))).collect::<Result<_>>()?,
            player_ips: (0..players).map(|i| Ipv4Addr::new(198, 18, 0, 2 + i as u8)).collect(),
            _xdp_pass: Vec::new(),
        };
        for ns in [&t.ingress, &t.router, &t.remote] {
            forwarding(ns)?;
        }
        t.link_players()?;
        t.link_wan()?;
        for (i, shard) in t.locals.iter().enumerate() {
            link_shard(&t.ingress, &format!("l{}", i + 1), shard, 17 + i as u8)?;
        }
        for (i, shard) in t.fars.iter().enumerate() {
            link_shard(&t.remote, &format!("f{}", i + 1), shard, 33 + i as u8)?;
        }
        let path = std::env::temp_dir().join(format!("{}.nft", t.router.name));
        std::fs::write(&path, WAN_NFT)?;
        let loaded = t.router.exec("nft", &["-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        loaded.context("loading the WAN router's BCP 38 rules")?;
        t.attach_passes()?;
        Ok(t)
    }

    fn link_players(&self) -> Result<()> {
        let (p, i) = (&self.players, &self.ingress);
        veth(p, "eth0", i, "p0")?;
        for ip in &self.player_ips {
            p.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        }
        p.ip(&["link", "set", "eth0", "up"])?;
        p.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
        p.ip(&["route", "add", "default", "via", "198.18.0.1"])?;
        addr_up(i, "p0", "198.18.0.1/24")
    }

    fn link_wan(&self) -> Result<()> {
        let r = &self.router;
        veth(r, "r-ing", &self.ingress, "wan0")?;
        addr_up(r, "r-ing", "198.18.16.1/24")?;
        addr_up(&self.ingress, "wan0", &format!("{INGRESS_WAN}/24"))?;
        self.ingress.ip(&["addr", "add", &format!("{STRANGER}/24"), "dev", "wan0"])?;
        self.ingress.ip(&["route", "add", "default", "via", "198.18.16.1", "src", &INGRESS_WAN.to_string()])?;
        veth(r, "r-far", &self.remote, "wan0")?;
        addr_up(r, "r-far", "198.18.32.1/24")?;
        addr_up(&self.remote, "wan0", &format!("{REMOTE_WAN}/24"))?;
        self.remote.ip(&["route", "add", "default", "via", "198.18.32.1"])?;
        veth(r, "r-net", &self.internet, "eth0")?;
        addr_up(r, "r-net", "198.18.48.1/24")?;
        addr_up(&self.internet, "eth0", &format!("{INTERNET_HOST}/24"))?;
        self.internet.ip(&["route", "add", "default", "via", "198.18.48.1"])?;
        // The router knows each site's prefixes (and where players live).
        for (prefix, via) in [
            ("198.18.0.0/20", INGRESS_WAN),
            ("198.18.100.0/24", INGRESS_WAN),
            ("198.18.17.0/24", INGRESS_WAN),
            ("198.18.18.0/24", INGRESS_WAN),
            ("198.18.33.0/24", REMOTE_WAN),
            ("198.18.34.0/24", REMOTE_WAN),
        ] {
            r.ip(&["route", "add", prefix, "via", &via.to_string()])?;
        }
        Ok(())
    }

    /// XDP_PASS on every veth that receives redirected frames: the players'
    /// (replies), the router's two site-facing ones (tunnel packets) and the
    /// shards' (players' packets).
    fn attach_passes(&mut self) -> Result<()> {
        let mut at: Vec<(&NetNs, &str)> =
            vec![(&self.players, "eth0"), (&self.router, "r-ing"), (&self.router, "r-far")];
        at.extend(self.locals.iter().chain(&self.fars).map(|s| (s, "eth0")));
        let mut passes = Vec::new();
        for (ns, dev) in at {
            let pins = PinDir::new("sites-pass")?;
            let (mut dp, _) = Dataplane::load(pins.path())?;
            ns.run(|| dp.attach_pass(dev))??;
            passes.push((dp, pins));
        }
        self._xdp_pass = passes;
        Ok(())
    }

    /// A named counter of the WAN router: packets so far.
    pub fn wan_counter(&self, name: &str) -> u64 {
        let out = self.router.exec("nft", &["list", "counter", "ip", "wan", name]).expect("reading an nft counter");
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in `{out}`"))
    }

    /// Every WAN counter, for failure messages.
    pub fn wan_counters(&self) -> String {
        [
            "ing_spoofed",
            "far_spoofed",
            "net_spoofed",
            "far_leak",
            "fragments",
            "tunnel_udp",
            "plain_udp",
            "plain_to_far",
        ]
        .iter()
        .map(|c| format!("{c}={}", self.wan_counter(c)))
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// Lets `prefix` out of the ingress site (BCP 38 lifted for it): the
    /// direct path that providers do not give, for comparison.
    pub fn allow_from_ingress(&self, prefix: &str) -> Result<()> {
        self.router.exec("nft", &["add", "element", "ip", "wan", "ing_ok", &format!("{{ {prefix} }}")])?;
        Ok(())
    }

    /// A socket on the game port in local shard `i`.
    pub fn local_socket(&self, i: usize) -> Result<UdpSocket> {
        bind(&self.locals[i], SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
    }

    /// A socket on the game port in remote shard `i`.
    pub fn far_socket(&self, i: usize) -> Result<UdpSocket> {
        bind(&self.fars[i], SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
    }

    /// `count` player sockets spread over the player addresses.
    pub fn player_sockets(&self, count: usize) -> Result<Vec<UdpSocket>> {
        crate::topology::player_sockets(&self.players, &self.player_ips, count)
    }

    pub fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, PORT)
    }
}

/// A UDP socket bound to `addr` in `ns`.
pub fn bind(ns: &NetNs, addr: SocketAddrV4) -> Result<UdpSocket> {
    ns.run(|| UdpSocket::bind(addr).map_err(anyhow::Error::from))?
}

/// Shard `name` behind a veth from `node` (named `dev`), at 198.18.`net`.2,
/// its default route via the node.
fn link_shard(node: &NetNs, dev: &str, shard: &NetNs, net: u8) -> Result<()> {
    veth(node, dev, shard, "eth0")?;
    addr_up(node, dev, &format!("198.18.{net}.1/24"))?;
    addr_up(shard, "eth0", &format!("198.18.{net}.2/24"))?;
    shard.ip(&["route", "add", "default", "via", &format!("198.18.{net}.1")])?;
    Ok(())
}

/// A shard of a config: where it is, its role, its site (none: plain routing).
pub struct Shard {
    pub name: &'static str,
    pub address: Ipv4Addr,
    pub role: &'static str,
    pub site: Option<&'static str>,
}

impl Shard {
    pub fn local(i: usize, role: &'static str) -> Shard {
        Shard { name: ["l1", "l2"][i], address: local_ip(i), role, site: None }
    }
    /// Remote shard `i`, tunnelled (in the site).
    pub fn far(i: usize, role: &'static str) -> Shard {
        Shard { name: ["far1", "far2"][i], address: far_ip(i), role, site: Some(SITE) }
    }
    /// Remote shard `i` listed without a site: reached by plain rewriting.
    pub fn far_plain(i: usize, role: &'static str) -> Shard {
        Shard { site: None, ..Shard::far(i, role) }
    }
}

/// What both nodes' configs share: the frontend, the site, the shards.
/// `mtu` None leaves the site's default.
pub fn shared_yaml(shards: &[Shard], mtu: Option<u32>) -> String {
    let mut y = format!("frontends:\n  - name: play\n    address: {VIP}:{PORT}\n");
    if shards.iter().any(|s| s.site.is_some()) {
        y.push_str(&format!(
            "sites:\n  - name: {SITE}\n    remote_node: {REMOTE_WAN}\n    port: {TUNNEL_PORT}\n    ingress_nodes: [{INGRESS_WAN}]\n"
        ));
        if let Some(mtu) = mtu {
            y.push_str(&format!("    mtu: {mtu}\n"));
        }
    }
    y.push_str("shards:\n");
    for s in shards {
        y.push_str(&format!(
            "  - name: {}\n    address: {}\n    capacity: 100\n    role: {}\n",
            s.name, s.address, s.role
        ));
        if let Some(site) = s.site {
            y.push_str(&format!("    site: {site}\n"));
        }
    }
    y
}

impl SitesTopology {
    /// The ingress node's config: its interfaces and metrics, then `shared`.
    pub fn ingress_yaml(&self, shared: &str) -> String {
        let mut ifs = vec!["p0".to_string(), "wan0".into()];
        ifs.extend((0..self.locals.len()).map(|i| format!("l{}", i + 1)));
        format!("interfaces: [{}]\nmetrics_listen: 127.0.0.1:9477\n{shared}", ifs.join(", "))
    }

    /// The remote node's config: the same `shared` part, `role: remote`,
    /// `site: far` and its own interfaces.
    pub fn remote_yaml(&self, shared: &str) -> String {
        let mut ifs = vec!["wan0".to_string()];
        ifs.extend((0..self.fars.len()).map(|i| format!("f{}", i + 1)));
        format!(
            "role: remote\nsite: {SITE}\ninterfaces: [{}]\nmetrics_listen: 127.0.0.1:9477\n{shared}",
            ifs.join(", ")
        )
    }

    /// A GET on an agent's metrics port from inside `ns`.
    pub fn scrape(ns: &NetNs) -> String {
        use std::io::{Read, Write};
        ns.run(|| -> Result<String> {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9477")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .and_then(|r| r)
        .unwrap_or_default()
    }
}

mod run;
pub use run::{counter, median_us, Bed, SyncPlayer};
