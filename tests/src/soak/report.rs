//! The end of a run: the agreement checks between the agents' view and
//! what the players saw, the figures, and the verdict, printed with the
//! seed, the schedule and the history when an invariant broke.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use proxy_agent::protocol::Request;

use super::{checker::Checker, cluster::status, run::Run};
use crate::sim::clock_ms;

/// A player on one shard this long has logged in there.
const LOGIN_BOUND_MS: u64 = 25_000;

/// CPU time and memory of a set of processes (restarts make new pids).
#[derive(Default, Debug, Clone)]
pub struct Resources {
    ticks: BTreeMap<u32, u64>,
    pub max_rss_kb: u64,
}

impl Resources {
    pub fn sample(&mut self, pids: &[u32]) {
        let mut rss = 0;
        for &pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> =
                stat.rsplit_once(") ").map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
            if let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) {
                let t = u.parse::<u64>().unwrap_or(0) + s.parse::<u64>().unwrap_or(0);
                self.ticks.insert(pid, t);
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            rss += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        self.max_rss_kb = self.max_rss_kb.max(rss);
    }

    pub fn cpu_seconds(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.ticks.values().sum::<u64>() as f64 / hz
    }
}

pub struct Outcome {
    pub broken: Vec<String>,
    pub report: String,
}

/// The agents' view against the players': every settled player's session
/// on every live ingress node names the shard that echoes it; every shard
/// that lives is up; every player long on a shard has logged in there.
pub fn end_checks(r: &Run) -> Vec<String> {
    let mut broken = sessions_agree(r);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let down: Vec<String> =
            r.c.live()
                .flat_map(|(i, a)| {
                    let st = status(a);
                    let shards = st["shards"].as_array().cloned().unwrap_or_default();
                    shards
                        .into_iter()
                        .filter(|s| s["health"] != "up")
                        .map(move |s| format!("in{}: {} {}", i + 1, s["name"], s["health"]))
                        .collect::<Vec<_>>()
                })
                .collect();
        if down.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            broken.push(format!("living shards not up at the end: {down:?}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = clock_ms();
    let g = r.gm.lock().unwrap();
    for p in r.pop.roster.lock().unwrap().iter().filter(|p| p.active(now) && p.snapshot().connected) {
        if let Some(l) = g.logins.get(&p.account) {
            if l.token.is_none() && !l.shard.is_empty() && now > l.since_ms + LOGIN_BOUND_MS {
                broken.push(format!(
                    "{} has played on {} since {} ms and cannot log in (held by {:?})",
                    p.account, l.shard, l.since_ms, l.refused_by
                ));
            }
        }
    }
    broken
}

/// Client -> shard on each live ingress node, against each settled player.
fn sessions_agree(r: &Run) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = clock_ms();
        let players: Vec<(String, String)> = r
            .pop
            .roster
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.active(now + 2_000))
            .filter_map(|p| {
                let s = p.snapshot();
                let fresh = s.last_echo_ms.is_some_and(|e| e + 1_500 > now);
                (s.connected && fresh).then(|| Some((p.local.clone(), s.current_shard()?.to_string()))).flatten()
            })
            .collect();
        let mut wrong = Vec::new();
        for (i, a) in r.c.live() {
            let v = a.request(&Request::Sessions { shard: None, client: None }).unwrap_or_default();
            let routes: BTreeMap<String, String> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["state"] != "pending")
                .map(|s| {
                    (s["client"].as_str().unwrap_or("").to_string(), s["shard"].as_str().unwrap_or("").to_string())
                })
                .collect();
            for (who, on) in &players {
                if routes.get(who) != Some(on) {
                    let raw: Vec<&serde_json::Value> =
                        v.as_array().into_iter().flatten().filter(|s| s["client"] == who.as_str()).collect();
                    wrong.push(format!(
                        "in{} routes {who} to {:?} ({raw:?}), its echoes come from {on} (joined at {} ms)",
                        i + 1,
                        routes.get(who),
                        joined_at(r, who)
                    ));
                }
            }
        }
        if wrong.is_empty() || Instant::now() > deadline {
            wrong.truncate(10);
            if !wrong.is_empty() {
                for (i, a) in r.c.live() {
                    let st = status(a);
                    wrong.push(format!("in{} peers: {} totals: {}", i + 1, st["agent"]["peers"], st["totals"]));
                }
            }
            return wrong;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn joined_at(r: &Run, who: &str) -> u64 {
    r.pop.roster.lock().unwrap().iter().find(|p| p.local == who).map_or(0, |p| p.joined_ms)
}

/// The verdict and the figures.
pub fn outcome(r: &Run, checker: Checker) -> Outcome {
    let mut broken = r.broken.clone();
    broken.extend(r.faults.broken.iter().cloned());
    broken.extend(r.gm.lock().unwrap().broken.iter().cloned());
    broken.extend(checker.broken.iter().cloned());
    let mut out = figures(r, &checker, broken.len());
    if !broken.is_empty() {
        out.push_str(&format!("\nBROKEN ({}):\n", broken.len()));
        for b in &broken {
            out.push_str(&format!("  {b}\n"));
        }
        out.push_str(&format!("seed {} ({} s); the fault schedule:\n", r.o.seed, r.o.seconds));
        for f in &r.schedule {
            out.push_str(&format!("  {f}\n"));
        }
        out.push_str("history before the stop:\n");
        for l in r.h.tail(80) {
            out.push_str(&format!("  {l}\n"));
        }
        out.push_str(&format!("replay: cargo xtask soak --seconds {} --seed {}\n", r.o.seconds, r.o.seed));
    }
    Outcome { broken, report: out }
}

fn figures(r: &Run, ch: &Checker, broken: usize) -> String {
    let roster = r.pop.roster.lock().unwrap().clone();
    let stats: Vec<_> = roster.iter().map(|p| p.snapshot()).collect();
    let connects: u64 = stats.iter().map(|s| s.connects as u64).sum();
    let (mut worst_gap, mut gap_who) = (0, String::new());
    for s in stats.iter().filter(|s| s.connects == 1 && s.reconnect_ms.is_empty()) {
        if s.max_gap_ms > worst_gap {
            (worst_gap, gap_who) = (s.max_gap_ms, s.local.clone());
        }
    }
    let told = r.h.told_list();
    let transfers = told.iter().filter(|t| t.why.starts_with("area transfer")).count();
    let g = r.gm.lock().unwrap().counts.clone();
    let f = &ch.figures;
    let secs = (clock_ms() - r.t0) as f64 / 1000.0;
    let kinds = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
    let mut out = format!(
        "soak: seed {}, {:.0} s of faults and players (cluster built in {:.1} s): {}\n",
        r.o.seed,
        secs,
        r.built_s,
        if broken == 0 { "every invariant held" } else { "BROKEN" }
    );
    out += &format!("  players simulated {}, joins (handshakes completed) {connects}\n", roster.len());
    out += &format!(
        "  area transfers asked {} (accepted {transfers}), operator moves {}, moves seen: told {}, shard deaths {}\n",
        r.pop.counts.transfers_asked,
        told.len() - transfers,
        f.moves_told,
        f.moves_death
    );
    out += &format!("  dead shards' groups {}: {:?}\n", f.groups, ch.groups_summary());
    // Clients each shard ever accepted, over its incarnations: both kinds
    // of shard took players.
    let mut served: std::collections::BTreeMap<String, usize> = Default::default();
    for (shard, _, stats) in super::shards::all_stats() {
        *served.entry(shard).or_default() += stats.clients.values().filter(|c| c.connected).count();
    }
    out += &format!(
        "  players each shard accepted: {}; fresh GameServers allocated by Agones (the stand-in): {}\n",
        served.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", "),
        r.c.agones.allocations()
    );
    out += &format!(
        "  leases: logins {}, refused {}, logouts {}, renewals {}, database calls failed {}\n",
        g.logins, g.refused, g.logouts, g.renewals, g.db_errors
    );
    out += &format!("  faults survived: {}\n  faults skipped: {}\n", kinds(&r.faults.done), kinds(&r.faults.skipped));
    out += &format!("  invariants checked {}, broken {broken}\n", f.checks);
    out += &format!(
        "  worst reconnect after a move {} ms ({}), bound {} ms\n  worst gap for a player whose shard lived {worst_gap} ms ({gap_who})\n",
        f.worst_move_ms,
        f.worst_move_who,
        super::checker::MOVE_BOUND_MS
    );
    out += &format!(
        "  ingress agents: max RSS {:.1} MiB (both together), CPU {:.1} s ({:.1}% of a core); game agents: {:.1} MiB, {:.1} s\n",
        r.ingress_res.max_rss_kb as f64 / 1024.0,
        r.ingress_res.cpu_seconds(),
        100.0 * r.ingress_res.cpu_seconds() / secs.max(1.0),
        r.game_res.max_rss_kb as f64 / 1024.0,
        r.game_res.cpu_seconds()
    );
    out
}
