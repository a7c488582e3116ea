//! Carrying out the schedule: each fault's start and end against the real
//! cluster. Every action is bounded in time; a fault whose target is not
//! there (an agent on a node that is down) is skipped and says so.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use proxy_agent::protocol::Request;

use super::{
    agones::is_gameserver,
    cluster::{shard_name, status, Cluster, ROLES},
    history::{History, Told},
    schedule::{Fault, Kind},
};
use crate::{
    agent::{rebuilt_object, Agent},
    ha::{cluster::PEER_PORT, topology::ingress_ip},
    sim::clock_ms,
};

/// Floods are bounded: this many spoofed datagrams each.
pub const FLOOD_FRAMES: usize = 20_000;
/// A node's next hop is withdrawn this long after it dies (BGP/BFD's time).
const WITHDRAW_MS: u64 = 300;

/// What the runner has going on, to end faults and pick targets.
#[derive(Default)]
pub struct Faults {
    /// Shard index -> the kind of death it is in.
    pub dead: Vec<Option<Kind>>,
    pub drained: Option<usize>,
    pub upgraded: [bool; 4],
    /// Faults survived, by kind (started and, if lasting, ended).
    pub done: std::collections::BTreeMap<String, u64>,
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// Problems the runner itself saw (the agents never saw a death, ...).
    pub broken: Vec<String>,
    /// A withdrawal under way: its own thread, so nothing the main loop
    /// does (a blocked database call, an agent's start) delays it.
    pub withdrawing: Option<std::thread::JoinHandle<Result<()>>>,
}

fn count(map: &mut std::collections::BTreeMap<String, u64>, kind: Kind) {
    *map.entry(kind.to_string()).or_default() += 1;
}

impl Faults {
    pub fn new(shards: usize) -> Self {
        Faults { dead: vec![None; shards], ..Default::default() }
    }

    /// Starts `f`; false if skipped.
    pub fn start(&mut self, c: &mut Cluster, h: &History, f: &Fault, players: &[(String, String)]) -> bool {
        let r = match f.kind {
            k if k.kills_a_shard() => self.kill_shard(c, h, f),
            Kind::IngressDeath => self.ingress_death(c, h, f),
            Kind::AgentRestart | Kind::AgentUpgrade => self.restart_agent(c, h, f),
            Kind::ConfigReload => reload(c, h, f),
            Kind::Migrate | Kind::MigrateShard => migrate(c, h, f, players, &self.dead),
            Kind::Drain => self.drain(c, h, f),
            Kind::DbFreeze => {
                c.db.freeze(true);
                Ok(true)
            }
            Kind::DbRestart => c.db.restart().map(|_| true),
            Kind::Partition => partition(c, true).map(|_| true),
            Kind::HandshakeFlood | Kind::QueryFlood => super::hostile::flood(c, h, f.kind).map(|_| true),
            Kind::HostileControl => super::hostile::control(c, h, f),
            Kind::HostilePeer => super::hostile::peer(c, h, f),
            Kind::KubeOutage => {
                let cut = f.pick.is_multiple_of(2);
                h.note(format!("Kubernetes API {}", if cut { "cuts every connection" } else { "goes silent" }));
                c.agones.outage(true, cut);
                Ok(true)
            }
            _ => Ok(false),
        };
        let started = match r {
            Ok(s) => s,
            Err(e) => {
                self.broken.push(format!("{} failed: {e:#}", f.kind));
                false
            }
        };
        h.note(format!("fault {} {}", if started { "start" } else { "skipped" }, f));
        if started {
            if f.dur_ms == 0 {
                count(&mut self.done, f.kind);
            }
        } else {
            count(&mut self.skipped, f.kind);
        }
        started
    }

    /// Ends a lasting fault `f` that started.
    pub fn end(&mut self, c: &mut Cluster, h: &History, f: &Fault) {
        let r = match f.kind {
            k if k.kills_a_shard() => self.revive_shard(c, h, f),
            Kind::IngressDeath => self.ingress_return(c, h, f),
            Kind::Drain => self.undrain(c, h),
            Kind::DbFreeze => {
                c.db.freeze(false);
                Ok(())
            }
            Kind::Partition => partition(c, false),
            Kind::KubeOutage => {
                c.agones.outage(false, false);
                Ok(())
            }
            _ => Ok(()),
        };
        match r {
            Ok(()) => count(&mut self.done, f.kind),
            Err(e) => self.broken.push(format!("ending {} failed: {e:#}", f.kind)),
        }
        h.note(format!("fault end   {f}"));
    }

    fn kill_shard(&mut self, c: &mut Cluster, h: &History, f: &Fault) -> Result<bool> {
        let unhealthy = f.kind == Kind::GameServerUnhealthy;
        // A GameServer's health check fails only on a GameServer that has one.
        let candidate = |p: usize| {
            self.dead[p].is_none()
                && (!unhealthy
                    || is_gameserver(p) && matches!(c.agones.state(p).as_deref(), Some("Allocated" | "Ready")))
        };
        let mut alive: Vec<usize> = (0..self.dead.len()).filter(|&p| candidate(p)).collect();
        // Agones' health check hits a GameServer with players first, when
        // one has them: the fresh-shard failover is what it is there for.
        if unhealthy && alive.iter().any(|&p| c.agones.state(p).as_deref() == Some("Allocated")) {
            alive.retain(|&p| c.agones.state(p).as_deref() == Some("Allocated"));
        }
        if alive.is_empty() {
            return Ok(false);
        }
        let p = alive[(f.pick % alive.len() as u64) as usize];
        let name = shard_name(p);
        match f.kind {
            Kind::ShardKill => {
                h.died(&name, "SIGKILL");
                c.shards[p].kill();
            }
            Kind::ShardHang => {
                h.died(&name, "SIGSTOP, hung");
                c.shards[p].hang();
            }
            Kind::GameServerUnhealthy => {
                // Agones marks it and takes the pod away.
                h.died(&name, "GameServer Unhealthy, pod gone");
                c.agones.unhealthy(p)?;
                c.shards[p].kill();
            }
            _ => {
                h.died(&name, "host silent");
                silence(&c.net.net.pods[p], true)?;
            }
        }
        // A dead pool GameServer fails Agones' health check before anyone
        // allocates it; an allocated one is left to the agents' probes.
        if is_gameserver(p) && c.agones.state(p).as_deref() == Some("Ready") {
            c.agones.unhealthy(p)?;
        }
        self.dead[p] = Some(f.kind);
        Ok(true)
    }

    fn revive_shard(&mut self, c: &mut Cluster, h: &History, _f: &Fault) -> Result<()> {
        let Some(p) = self.dead.iter().position(Option::is_some) else { return Ok(()) };
        let name = shard_name(p);
        // Bring it back only once its players are somewhere else: a shard
        // back before the agents moved its group would meet them again.
        if let Err(e) = wait_moved_off(c, &name, Duration::from_secs(40)) {
            self.broken.push(e);
        }
        match self.dead[p].take() {
            Some(Kind::ShardSilent) => silence(&c.net.net.pods[p], false)?,
            _ => {
                c.shards[p].kill();
                c.shards[p].start(&c.net.net.pods[p])?;
            }
        }
        // The Fleet's replacement: a fresh GameServer in the pool.
        if is_gameserver(p) {
            c.agones.replace(p)?;
        }
        h.revived(&name);
        Ok(())
    }

    fn ingress_death(&mut self, c: &mut Cluster, h: &History, f: &Fault) -> Result<bool> {
        let n = (f.pick % c.ingress.len() as u64) as usize;
        if !c.ingress_up[n] || c.live().count() < 2 {
            return Ok(false);
        }
        h.note(format!("in{} dies: agent SIGKILLed, NIC down", n + 1));
        c.ingress_up[n] = false;
        let _ = c.ingress[n].kill();
        c.net.kill_node(n)?;
        self.withdrawing = Some(withdraw_later(c, n, h));
        Ok(true)
    }

    fn ingress_return(&mut self, c: &mut Cluster, h: &History, f: &Fault) -> Result<()> {
        let n = (f.pick % c.ingress.len() as u64) as usize;
        // The withdrawal is done first.
        if let Some(w) = self.withdrawing.take() {
            w.join().map_err(|_| anyhow::anyhow!("the withdrawal thread panicked"))??;
        }
        c.net.net.revive_node(n)?;
        c.ingress[n].restart(&c.net.net.ingress[n])?;
        c.ingress_up[n] = true;
        c.wait_ready(Duration::from_secs(60))?;
        c.net.announce(n)?;
        h.note(format!("in{} is back, synced and announced", n + 1));
        Ok(())
    }

    fn restart_agent(&mut self, c: &mut Cluster, h: &History, f: &Fault) -> Result<bool> {
        let a = (f.pick % 4) as usize;
        if a < 2 && !c.ingress_up[a] {
            return Ok(false);
        }
        let upgrade = f.kind == Kind::AgentUpgrade;
        let (agent, ns): (&mut Agent, _) = if a < 2 {
            (&mut c.ingress[a], &c.net.net.ingress[a])
        } else {
            (&mut c.games[a - 2], &c.net.net.games[a - 2])
        };
        if upgrade {
            agent.stop()?;
            self.upgraded[a] = !self.upgraded[a];
            agent.run_args = if self.upgraded[a] { object_args() } else { Vec::new() };
        } else {
            agent.kill()?;
        }
        agent.restart(ns)?;
        let what = if upgrade { "upgraded (SIGTERM, --xdp-object)" } else { "SIGKILLed and restarted" };
        h.note(format!("agent {} {what}", agent_name(a)));
        if a < 2 {
            c.wait_ready(Duration::from_secs(60))?;
        }
        Ok(true)
    }

    fn drain(&mut self, c: &mut Cluster, h: &History, f: &Fault) -> Result<bool> {
        let actives: Vec<usize> =
            (0..ROLES.len()).filter(|&p| ROLES[p] == "active" && self.dead[p].is_none()).collect();
        if self.drained.is_some() || actives.len() < 2 {
            return Ok(false);
        }
        let p = actives[(f.pick % actives.len() as u64) as usize];
        let r = ask_any(c, &Request::Drain { shard: shard_name(p) });
        h.note(format!("drain {}: {}", shard_name(p), short(&r)));
        self.drained = Some(p);
        Ok(true)
    }

    fn undrain(&mut self, c: &mut Cluster, h: &History) -> Result<()> {
        if let Some(p) = self.drained.take() {
            let r = ask_any(c, &Request::Undrain { shard: shard_name(p) });
            h.note(format!("undrain {}: {}", shard_name(p), short(&r)));
        }
        Ok(())
    }
}

/// The router withdraws node `n`'s next hop `WITHDRAW_MS` after its death,
/// as BGP or BFD would: the group is the survivors (one node is down at a
/// time). `announce` later puts every member back.
fn withdraw_later(c: &Cluster, n: usize, h: &History) -> std::thread::JoinHandle<Result<()>> {
    let router = c.net.net.router.name.clone();
    let survivors: Vec<String> = (0..c.ingress.len()).filter(|&i| i != n).map(|i| (i + 1).to_string()).collect();
    let h = h.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(WITHDRAW_MS));
        // `ha::ecmp`'s group 100; next hop i + 1 is ingress node i.
        let group = survivors.join("/");
        crate::netns::sh(std::process::Command::new("ip").args([
            "-n",
            &router,
            "nexthop",
            "replace",
            "id",
            "100",
            "group",
            &group,
            "type",
            "resilient",
        ]))?;
        h.note(format!("router withdraws in{}'s next hop", n + 1));
        Ok(())
    })
}

fn object_args() -> Vec<String> {
    vec!["--xdp-object".into(), rebuilt_object().to_string_lossy().into_owned()]
}

pub fn agent_name(a: usize) -> String {
    if a < 2 {
        format!("in{}", a + 1)
    } else {
        format!("game{}", a - 1)
    }
}

fn short(r: &Result<serde_json::Value>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("refused: {e:#}"),
    }
}

/// The request to the first live ingress agent that answers.
pub fn ask_any(c: &Cluster, req: &Request) -> Result<serde_json::Value> {
    let mut last = None;
    for (_, a) in c.live() {
        match a.request(req) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no ingress agent is up")))
}

fn reload(c: &Cluster, h: &History, f: &Fault) -> Result<bool> {
    let a = (f.pick % 4) as usize;
    if a < 2 && !c.ingress_up[a] {
        return Ok(false);
    }
    let agent = if a < 2 { &c.ingress[a] } else { &c.games[a - 2] };
    let r = agent.request(&Request::Reload);
    h.note(format!("reload {}: {}", agent_name(a), short(&r)));
    r.map(|_| true)
}

/// Chosen players (up to 3 of one shard) or a whole shard, to another live shard.
fn migrate(c: &Cluster, h: &History, f: &Fault, players: &[(String, String)], dead: &[Option<Kind>]) -> Result<bool> {
    let alive: Vec<String> = (0..dead.len()).filter(|&p| dead[p].is_none()).map(shard_name).collect();
    let busy: Vec<&String> = alive.iter().filter(|s| players.iter().any(|(_, on)| on == *s)).collect();
    if busy.is_empty() || alive.len() < 2 {
        return Ok(false);
    }
    let from = busy[(f.pick % busy.len() as u64) as usize].clone();
    let others: Vec<&String> = alive.iter().filter(|s| **s != from).collect();
    let to = others[((f.pick >> 8) % others.len() as u64) as usize].clone();
    let whole = f.kind == Kind::MigrateShard;
    let chosen: Vec<String> = players.iter().filter(|(_, on)| *on == from).map(|(p, _)| p.clone()).take(3).collect();
    let req = if whole {
        Request::Migrate { clients: Vec::new(), from: Some(from.clone()), to: to.clone() }
    } else {
        Request::Migrate { clients: chosen.clone(), from: None, to: to.clone() }
    };
    let at_ms = clock_ms();
    let r = ask_any(c, &req);
    h.note(format!("migrate {}{from} -> {to}: {}", if whole { "all of " } else { "" }, short(&r)));
    if r.is_ok() {
        let (clients, from_shard) = if whole { (Vec::new(), Some(from)) } else { (chosen, None) };
        h.told(Told { at_ms, clients, from_shard, to, why: format!("{}", f.kind) });
    }
    Ok(true)
}

/// Every packet into and out of a pod dropped: its host went silent.
fn silence(pod: &crate::netns::NetNs, on: bool) -> Result<()> {
    if !on {
        return pod.exec("nft", &["delete", "table", "inet", "soak_silent"]).map(|_| ());
    }
    let script = "table inet soak_silent {\n chain in { type filter hook input priority 0; policy drop; }\n \
                  chain out { type filter hook output priority 0; policy drop; }\n}\n";
    nft_script(pod, script)
}

pub fn nft_script(ns: &crate::netns::NetNs, script: &str) -> Result<()> {
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, script)?;
    let r = ns.exec("nft", &["-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}

/// Every packet between the ingress nodes dropped (or no longer).
fn partition(c: &Cluster, on: bool) -> Result<()> {
    let nodes = c.net.net.ingress.len();
    for i in 0..nodes {
        let ns = &c.net.net.ingress[i];
        if !on {
            let _ = ns.exec("nft", &["delete", "table", "inet", "partition"]);
            continue;
        }
        let others: Vec<String> = (0..nodes).filter(|&n| n != i).map(|n| ingress_ip(n).to_string()).collect();
        let set = others.join(", ");
        nft_script(
            ns,
            &format!(
                "table inet partition {{\n chain in {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n \
                 chain out {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n}}\n"
            ),
        )?;
    }
    Ok(())
}

/// Waits until every live ingress agent has `shard` down and routes no
/// player to it; an error names what it saw instead.
fn wait_moved_off(c: &Cluster, shard: &str, timeout: Duration) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let views: Vec<String> = c
            .live()
            .map(|(i, a)| {
                let st = status(a);
                let s = st["shards"].as_array().and_then(|v| v.iter().find(|s| s["name"] == shard).cloned());
                s.map(|s| format!("in{}: {} players {}", i + 1, s["health"], s["players"]))
                    .unwrap_or_else(|| format!("in{}: not a shard", i + 1))
            })
            .collect();
        // After a failover the dead shard keeps only a fresh, empty home
        // group; a GameServer that left (or a pool one) is no shard at all.
        let off = |v: &String| {
            v.ends_with("\"down\" players 0") || v.ends_with("\"departed\" players 0") || v.ends_with("not a shard")
        };
        if views.iter().all(off) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{shard}'s groups not moved off it {timeout:?} after its death: {views:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rebuilt object the upgrade uses, checked before the run starts.
pub fn check_object() -> Result<PathBuf> {
    let p = rebuilt_object();
    std::fs::metadata(&p).with_context(|| format!("{} (cargo xtask build-ebpf makes it)", p.display()))?;
    Ok(p)
}

pub const PEER: u16 = PEER_PORT;
