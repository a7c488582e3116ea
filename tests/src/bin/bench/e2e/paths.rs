//! The paths of `bench e2e` on one topology, switched in and out:
//!
//! - routing: the flows are pointed at the shard's own address; the proxy
//!   namespace forwards them as a plain router (no XDP, no nftables);
//! - ours: the real agent (`PROXY_AGENT_BIN`) with one frontend VIP:7777 and
//!   the sink as its one shard, XDP on both proxy veths; stopped and its
//!   links detached when another path runs (the maps stay pinned, so the
//!   sessions survive from one turn to the next);
//! - ours, generic: the same with `xdp_mode: skb` (its own agent and pins):
//!   the program runs on the skb veth already has, so it pays no copy, and
//!   every path but the relay works on the same skb; the comparison with
//!   nftables that veth does not skew (on a NIC, native XDP runs before any
//!   skb exists and costs less than this);
//! - nftables: `ip daddr VIP udp dport 7777 dnat to SHARD` in a prerouting
//!   nat chain (conntrack rewrites the replies back to VIP:7777);
//! - userspace: `udp-relay` (this crate) listening on VIP:7777 (the VIP on
//!   the proxy's loopback), upstream sockets from the proxy's shard-side
//!   address;
//! - veth tax (optional, `--veth-tax`): routing with a bare XDP_PASS program
//!   on both proxy veths: what veth charges any native XDP program (the skb
//!   copy), separated from what our program and the redirect cost.
//!
//! Everything is undone by `leave`, and by `Drop` on any error or panic
//! (the namespaces are deleted last, which takes nft rules, addresses and
//! veths with them).

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use proxy_agent::protocol::Request;
use tests::{
    agent::Agent,
    topology::{Topology, PORT, VIP},
};

use super::{
    traffic::{Flows, Sink},
    STOP,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Routing,
    Ours,
    OursGeneric,
    Nft,
    Relay,
    VethTax,
}

/// Every path, in the report's order (`VethTax` only with `--veth-tax`).
pub const MODES: [Mode; 6] = [Mode::Routing, Mode::Ours, Mode::OursGeneric, Mode::Nft, Mode::Relay, Mode::VethTax];

impl Mode {
    /// Our data plane, natively or generically attached.
    pub fn is_ours(self) -> bool {
        matches!(self, Mode::Ours | Mode::OursGeneric)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Routing => "routing (baseline)",
            Mode::Ours => "ours (XDP)",
            Mode::OursGeneric => "ours (generic XDP)",
            Mode::Nft => "nftables DNAT",
            Mode::Relay => "userspace proxy",
            Mode::VethTax => "routing + XDP_PASS",
        }
    }
}

/// The proxy's address on the shard link (the relay's upstream source).
const PROXY_SHARD_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 1);
const NFT_TABLE: &str = "samp_e2e";

/// The relay process; killed on drop.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, reaped just below.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().expect("current exe").with_file_name(name)
}

/// Field order is drop order: processes first, the namespaces last.
pub struct Bed {
    relay: Option<Relay>,
    /// The bare XDP_PASS programs of the veth-tax path (detached on drop).
    pass: Option<(proxy_agent::dataplane::Dataplane, tests::pins::PinDir)>,
    /// The agent of each of ours' paths, once started (each its own pins).
    agents: Vec<(Mode, Agent)>,
    /// Which of them runs now.
    running: Option<Mode>,
    pub sink: Sink,
    pub flows: Flows,
    pub topo: Topology,
    /// The kernel's softirq threads (their run time counts in the cross-check).
    pub ksoftirqd: Vec<u32>,
}

impl Bed {
    pub fn build() -> Result<Bed> {
        let topo = Topology::build(1, 4)?;
        // The routing baseline sends straight to the shard's address.
        topo.client.ip(&["route", "add", "198.18.11.0/24", "via", "198.18.0.1"])?;
        let sink = Sink::spawn(topo.shard_socket(0)?, 1)?;
        let flows = Flows::open(&topo)?;
        let ksoftirqd = super::measure::ksoftirqd_pids();
        Ok(Bed { relay: None, pass: None, agents: Vec::new(), running: None, sink, flows, topo, ksoftirqd })
    }

    pub fn shard_ip(&self) -> Ipv4Addr {
        self.topo.shard_ips[0]
    }

    /// Sets up `mode` and points the flows at its address.
    pub fn enter(&mut self, mode: Mode) -> Result<()> {
        if STOP.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("interrupted");
        }
        let vip = SocketAddrV4::new(VIP, PORT);
        match mode {
            Mode::Routing => self.flows.connect(SocketAddrV4::new(self.shard_ip(), PORT))?,
            Mode::VethTax => {
                let pins = tests::pins::PinDir::new("e2e-pass")?;
                let (mut dp, _) = proxy_agent::dataplane::Dataplane::load(pins.path())?;
                self.topo.proxy.run(|| -> Result<()> {
                    dp.attach_pass("to-client")?;
                    dp.attach_pass("to-s1")
                })??;
                self.pass = Some((dp, pins));
                self.flows.connect(SocketAddrV4::new(self.shard_ip(), PORT))?;
            }
            Mode::Ours | Mode::OursGeneric => {
                match self.agents.iter_mut().find(|(m, _)| *m == mode) {
                    None => {
                        let xdp_mode = if mode == Mode::OursGeneric { "skb" } else { "driver" };
                        let yaml = self.topo.config(
                            &[1000],
                            &format!("handshake_rate: 0\nsession_idle_timeout_ms: 3600000\nxdp_mode: {xdp_mode}\n"),
                        );
                        self.agents.push((mode, Agent::start(&self.topo.proxy, &yaml)?));
                    }
                    Some((_, agent)) => agent.restart(&self.topo.proxy)?,
                }
                self.running = Some(mode);
                // Let the agent's start-up work (first scan, first health
                // round) pass before traffic is measured.
                std::thread::sleep(Duration::from_millis(500));
                self.flows.connect(vip)?;
                self.flows.drain()?;
                // Sessions survive in the pinned maps; the handshake is
                // idempotent and proves each flow reaches the sink with its
                // real address (the sink's cookie is derived from it).
                self.flows.handshake(Duration::from_secs(10))?;
            }
            Mode::Nft => {
                let script = format!(
                    "add table ip {NFT_TABLE}; \
                     add chain ip {NFT_TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}; \
                     add rule ip {NFT_TABLE} prerouting ip daddr {VIP} udp dport {PORT} dnat to {}",
                    self.shard_ip()
                );
                self.topo.proxy.exec("nft", &[&script])?;
                self.flows.connect(vip)?;
            }
            Mode::Relay => {
                self.topo.proxy.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
                self.relay = Some(self.spawn_relay()?);
                self.flows.connect(vip)?;
            }
        }
        self.flows.drain()
    }

    fn spawn_relay(&self) -> Result<Relay> {
        let bin = sibling("udp-relay");
        let mut child = self
            .topo
            .proxy
            .spawn_command(&bin)?
            .args(["--listen", &format!("{VIP}:{PORT}")])
            .args(["--upstream", &format!("{}:{PORT}", self.shard_ip())])
            .args(["--bind", &PROXY_SHARD_SIDE.to_string()])
            .args(["--rcvbuf", &(4 << 20).to_string(), "--seconds", "900"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} (built by `cargo xtask build`)", bin.display()))?;
        let stdout = child.stdout.take().unwrap();
        let relay = Relay(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "READY" {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).context("udp-relay did not report READY within 10 s")?;
        // Its threads (all started before READY) get the priority of the
        // bench's own traffic threads.
        for task in std::fs::read_dir(format!("/proc/{}/task", relay.0.id()))? {
            if let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse().ok()) {
                super::traffic::renice(tid)?;
            }
        }
        Ok(relay)
    }

    /// Undoes `enter(mode)`.
    pub fn leave(&mut self, mode: Mode) -> Result<()> {
        match mode {
            Mode::Routing => {}
            Mode::VethTax => self.pass = None,
            Mode::Ours | Mode::OursGeneric => {
                if let Some((_, agent)) = self.agents.iter_mut().find(|(m, _)| *m == mode) {
                    if self.running == Some(mode) {
                        self.running = None;
                        let status = agent.stop()?;
                        if !status.success() {
                            bail!("agent exit: {status}\n{}", agent.log_text());
                        }
                    }
                    // The data plane outlives the agent: take XDP off so the
                    // other paths run without it (the maps stay pinned).
                    proxy_agent::dataplane::links::detach_all(&agent.pins.path)?;
                }
            }
            Mode::Nft => {
                self.topo.proxy.exec("nft", &["delete", "table", "ip", NFT_TABLE])?;
            }
            Mode::Relay => {
                self.relay = None;
                self.topo.proxy.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"])?;
            }
        }
        Ok(())
    }

    /// The agent running now, if one of ours' paths is entered.
    fn agent(&self) -> Option<&Agent> {
        self.agents.iter().find(|(m, _)| Some(*m) == self.running).map(|(_, a)| a)
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent().and_then(|a| a.pid())
    }

    pub fn relay_pid(&self) -> Option<u32> {
        self.relay.as_ref().map(|r| r.0.id())
    }

    /// Data-plane counters from the agent's `status` (control socket).
    pub fn counters(&self) -> Result<serde_json::Value> {
        let agent = self.agent().context("the agent is not running")?;
        let status = agent.request(&Request::Status)?;
        Ok(status["counters"].clone())
    }

    /// (established sessions on the shard, health) from `status`.
    pub fn shard_status(&self) -> Result<(u64, String)> {
        let agent = self.agent().context("the agent is not running")?;
        let status = agent.request(&Request::Status)?;
        let s = &status["shards"][0];
        Ok((s["established"].as_u64().unwrap_or(0), s["health"].as_str().unwrap_or("?").to_string()))
    }
}

pub fn counter(c: &serde_json::Value, name: &str) -> u64 {
    c[name].as_u64().unwrap_or(0)
}
