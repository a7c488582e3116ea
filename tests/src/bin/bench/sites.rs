//! `cargo xtask bench sites`: shards in another data centre (issue 22) on
//! the two-site topology of `tests::sites` (a WAN router with BCP 38 between
//! the ingress site and a remote site, the real agents on both nodes).
//!
//! * Round trip a player sees, pings interleaved over three paths: through
//!   the tunnel to a remote shard, to another shard of the same remote site
//!   by plain rewriting (the direct path, with BCP 38 lifted for the players:
//!   the same hops without encapsulation), and to a shard on the ingress LAN.
//! * Cross-site failover: a shard's process dies, its players move together
//!   to a standby in the other site; from the death to the group repointed
//!   (read from the ingress's GROUPS map) and to every player playing there.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use proxy_agent::protocol::Request;
use tests::{
    sim::player::{self, PlayerConfig},
    sites::{self, median_us, Bed, Shard},
};

#[derive(clap::Args)]
pub struct SitesArgs {
    /// Pings per path (the paths interleaved).
    #[arg(long, default_value_t = 1000)]
    pings: usize,
    /// Failovers of each direction (remote to local, local to remote).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Players that move in each failover.
    #[arg(long, default_value_t = 50)]
    players: usize,
}

pub fn run(args: &SitesArgs) -> Result<()> {
    round_trips(args.pings)?;
    println!();
    println!("cross-site failover: {} players, default health settings, reconnect after 1500 ms silence", args.players);
    println!("{:<24} {:>6} {:>22} {:>22}", "direction", "runs", "death->repoint ms", "death->all playing ms");
    for (from, to) in [("far1", "l1"), ("l1", "far1")] {
        let (mut repoint, mut all) = (Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            let (r, a) = failover(from, to, args.players)?;
            repoint.push(r);
            all.push(a);
        }
        println!(
            "{:<24} {:>6} {:>22.0} {:>22.0}",
            format!("{from} -> {to}"),
            args.runs.max(1),
            median_us(repoint) / 1000.0,
            median_us(all) / 1000.0
        );
    }
    Ok(())
}

fn round_trips(pings: usize) -> Result<()> {
    let shards = [Shard::far(0, "active"), Shard::far_plain(1, "active"), Shard::local(0, "active")];
    let b = Bed::start(1, 2, &shards, None, true)?;
    b.wait_up(&["far1", "far2", "l1"]);
    b.t.allow_from_ingress(sites::PLAYERS_PREFIX)?;
    let names = ["far1", "far2", "l1"];
    let mut players = Vec::new();
    for (i, n) in names.iter().enumerate() {
        players.push(b.player_on(n, &names, i)?);
    }
    let mut rtts = vec![Vec::with_capacity(pings); names.len()];
    let mut lost = [0usize; 3];
    for _ in 0..pings.max(1) {
        for (i, p) in players.iter_mut().enumerate() {
            match p.ping(60, Duration::from_secs(1))? {
                Some((rtt, _)) => rtts[i].push(rtt),
                None => lost[i] += 1,
            }
        }
    }
    println!("sites: round trip a player sees (60-byte game packets, {pings} per path, interleaved), µs");
    println!("{:<48} {:>8} {:>8} {:>6}", "path", "median", "p95", "lost");
    let labels = ["through the tunnel (far1)", "direct: plain rewriting, BCP 38 lifted (far2)", "ingress LAN (l1)"];
    for (i, label) in labels.iter().enumerate() {
        let mut v = rtts[i].clone();
        v.sort();
        let p95 = v.get(v.len() * 95 / 100).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6);
        println!("{label:<48} {:>8.0} {p95:>8.0} {:>6}", median_us(rtts[i].clone()), lost[i]);
    }
    Ok(())
}

/// One failover of `players` from `from` to the standby `to` in the other
/// site: (death to the group repointed, death to all playing on `to`).
fn failover(from: &str, to: &str, players: usize) -> Result<(Duration, Duration)> {
    let (far, local) = if from == "far1" { ("active", "standby") } else { ("standby", "active") };
    let mut b = Bed::start(1, 1, &[Shard::far(0, far), Shard::local(0, local)], None, true)?;
    b.wait_up(&["far1", "l1"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut cfg = PlayerConfig::new(b.t.vip(), Duration::from_secs(120));
    cfg.reconnect_after = Duration::from_millis(1500);
    cfg.rate_hz = 10.0;
    let sockets = b.t.player_sockets(players)?;
    let ps = rt.block_on(async { player::start(sockets, &cfg) })?;
    let on = |shard: &str| ps.snapshot().iter().all(|p| p.connected && p.current_shard() == Some(shard));
    tests::scenario::wait_for("players on the first shard", Duration::from_secs(60), || on(from));
    let status = b.ingress.request(&Request::Status)?;
    let s = status["shards"].as_array().and_then(|a| a.iter().find(|s| s["name"] == from).cloned());
    let Some(s) = s else { bail!("no shard {from} in the status") };
    let (group, backend) = (s["home_group"].as_u64().unwrap_or(0) as u32, s["backend"].as_u64().unwrap_or(0) as u32);
    let tables = b.ingress.tables()?;
    let i = b.sims.iter().position(|s| s.name == from).expect("the dying shard");
    let died = Instant::now();
    b.sims[i].stop();
    let repointed = loop {
        if tables.groups.get(&group, 0)?.backend != backend {
            break died.elapsed();
        }
        if died.elapsed() > Duration::from_secs(30) {
            bail!("{from}'s group not repointed within 30 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let all = loop {
        if on(to) {
            break died.elapsed();
        }
        if died.elapsed() > Duration::from_secs(60) {
            bail!("not every player on {to} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    ps.stop();
    rt.block_on(ps.join());
    Ok((repointed, all))
}
