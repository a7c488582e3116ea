//! The main loop: the schedule's faults at their times, the population's
//! life, the gamemodes' logins, the lease facts, the agents' resources;
//! the checker samples on a thread of its own. Stops at the first broken
//! invariant; otherwise runs a quiet end and the final agreement checks.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;
use proxy_agent::protocol::Request;

use super::{
    checker::Checker,
    cluster::{shard_name, Cluster, LEASE_SECONDS, ROLES},
    faults::{self, Faults},
    gamemode::{self, Gamemode},
    history::History,
    population::{Population, Roster},
    report::{self, Outcome, Resources},
    schedule::{self, Fault, Kind},
    shards::all_stats,
    Break, Options,
};
use crate::sim::clock_ms;

/// The checker's own thread: a look at everything every 250 ms.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub checker: Arc<Mutex<Checker>>,
}

impl Sampler {
    fn spawn(roster: Roster, h: History, limit: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let checker = Arc::new(Mutex::new(Checker::default()));
        let (st, ch) = (stop.clone(), checker.clone());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + limit;
            while !st.load(Ordering::Relaxed) && Instant::now() < until {
                // Shards first: a client they saw is in the roster by then.
                let shards = all_stats();
                let players = roster.lock().unwrap().clone();
                ch.lock().unwrap().sample(&players, &h, &shards);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Sampler { stop, thread: Some(thread), checker }
    }

    pub fn broken(&self) -> Vec<String> {
        self.checker.lock().unwrap().broken.clone()
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Run {
    pub o: Options,
    pub c: Cluster,
    pub h: History,
    pub pop: Population,
    pub gm: Gamemode,
    pub faults: Faults,
    pub ingress_res: Resources,
    pub game_res: Resources,
    pub schedule: Vec<Fault>,
    pub t0: u64,
    pub broken: Vec<String>,
    pub sampler: Option<Sampler>,
    pub built_s: f64,
}

/// The whole soak. An `Err` is a harness failure; a broken invariant is
/// an `Outcome` with `broken` set.
pub fn run(o: &Options) -> Result<Outcome> {
    let total = o.seconds * 1000;
    let (warmup, quiet) = (20_000.min(total / 4), 30_000.min(total / 4));
    faults::check_object()?;
    let _ = std::fs::remove_dir_all(super::shards::stats_dir());
    println!("soak: seed {}, {} s; building the cluster", o.seed, o.seconds);
    let built = Instant::now();
    let c = Cluster::build()?;
    let built_s = built.elapsed().as_secs_f64();
    let schedule = schedule::draw(o.seed, warmup, total - quiet);
    println!("soak: cluster up in {built_s:.1} s; {} faults scheduled:", schedule.len());
    for f in &schedule {
        println!("  {f}");
    }
    let t0 = clock_ms();
    let mut r = Run {
        o: o.clone(),
        pop: Population::new(o.seed, t0 + total - quiet),
        c,
        h: History::default(),
        gm: Gamemode::default(),
        faults: Faults::new(super::cluster::POD_GAME.len()),
        ingress_res: Resources::default(),
        game_res: Resources::default(),
        schedule,
        t0,
        broken: Vec::new(),
        sampler: None,
        built_s,
    };
    r.pop.join(&r.c, o.players, Some(total + 60_000))?;
    r.sampler = Some(Sampler::spawn(r.pop.roster.clone(), r.h.clone(), Duration::from_millis(total + 300_000)));
    let finished = r.drive(total)?;
    if finished {
        r.settle();
        r.broken.extend(super::report::end_checks(&r));
    }
    r.pop.stop();
    let sampler = r.sampler.take().expect("the sampler");
    let checker = Arc::clone(&sampler.checker);
    sampler.finish();
    let checker = std::mem::take(&mut *checker.lock().unwrap());
    Ok(report::outcome(&r, checker))
}

impl Run {
    fn all_broken(&self) -> Vec<String> {
        let mut b = self.broken.clone();
        b.extend(self.faults.broken.iter().cloned());
        b.extend(self.gm.lock().unwrap().broken.iter().cloned());
        b.extend(self.sampler.as_ref().map(Sampler::broken).unwrap_or_default());
        b
    }

    /// Until the schedule is done (true) or an invariant broke (false).
    fn drive(&mut self, total: u64) -> Result<bool> {
        let mut timeline: Vec<(u64, usize, bool)> = Vec::new();
        for (i, f) in self.schedule.iter().enumerate() {
            timeline.push((self.t0 + f.at_ms, i, false));
            if f.dur_ms > 0 {
                timeline.push((self.t0 + f.at_ms + f.dur_ms, i, true));
            }
        }
        timeline.sort();
        let mut started = vec![false; self.schedule.len()];
        let mut next = 0;
        let mut broke_at = self.o.breakage.map(|_| self.t0 + 15_000.min(total / 6));
        let (mut gm_at, mut renew_at, mut facts_at, mut res_at) = (0, 0, 0, 0);
        let quiet_from = self.t0 + total - 30_000.min(total / 4);
        loop {
            let now = clock_ms();
            // The quiet end: no new faults or joins; the players play on.
            if now >= self.t0 + total && (next >= timeline.len() || now >= quiet_from + 120_000) {
                return Ok(true);
            }
            while next < timeline.len() && timeline[next].0 <= clock_ms() {
                let (_, i, end) = timeline[next];
                let f = self.schedule[i].clone();
                let players = self.playing();
                if !end {
                    started[i] = self.faults.start(&mut self.c, &self.h, &f, &players);
                } else if started[i] {
                    self.faults.end(&mut self.c, &self.h, &f);
                }
                next += 1;
            }
            if broke_at.is_some_and(|t| now >= t) {
                broke_at = None;
                self.break_it()?;
            }
            self.pop.tick(&self.c, &self.h, now)?;
            if now >= gm_at {
                gm_at = now + 500;
                let roster = self.pop.roster.lock().unwrap().clone();
                gamemode::tick(&self.c, &self.gm, &roster, &self.h);
            }
            if now >= renew_at {
                renew_at = now + 2_000;
                gamemode::renew(&self.c, &self.gm, &self.h);
            }
            if now >= facts_at {
                facts_at = now + 3_000;
                self.lease_facts();
            }
            if now >= res_at {
                res_at = now + 1_000;
                self.resources();
            }
            let broken = self.all_broken();
            if !broken.is_empty() {
                self.h.note(format!("STOP: {}", broken[0]));
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (player, shard) for every connected player still playing.
    fn playing(&self) -> Vec<(String, String)> {
        let now = clock_ms();
        self.pop
            .roster
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.active(now + 5_000))
            .filter_map(|p| {
                let s = p.snapshot();
                let on = s.current_shard()?.to_string();
                s.connected.then(|| (p.local.clone(), on))
            })
            .collect()
    }

    /// No lease of a shard dead longer than a lease outlives it, and no
    /// account is leased on two shards.
    fn lease_facts(&self) {
        let now = clock_ms();
        let long_dead: Vec<String> = self
            .h
            .deaths()
            .iter()
            .filter(|d| d.to_ms.is_none() && now > d.from_ms + (LEASE_SECONDS as u64 + 4) * 1000)
            .map(|d| d.shard.clone())
            .collect();
        gamemode::check_leases(&self.c, &self.gm, long_dead);
    }

    fn resources(&mut self) {
        let ingress: Vec<u32> = self.c.live().filter_map(|(_, a)| a.pid()).collect();
        let games: Vec<u32> = self.c.games.iter().filter_map(|a| a.pid()).collect();
        self.ingress_res.sample(&ingress);
        self.game_res.sample(&games);
    }

    /// The self-test's breakage.
    fn break_it(&mut self) -> Result<()> {
        match self.o.breakage {
            Some(Break::ReturnPath) => {
                let a = &mut self.c.games[0];
                a.stop()?;
                let out = self.c.net.net.games[0]
                    .spawn_command(&crate::agent::agent_bin())?
                    .args(["detach", "--bpffs"])
                    .arg(&a.pins.path)
                    .output()?;
                anyhow::ensure!(out.status.success(), "detach: {}", String::from_utf8_lossy(&out.stderr));
                self.h.note("BREAK: game1's return path taken away (agent stopped, programs detached)");
            }
            Some(Break::SplitGroup) => self.split_a_group()?,
            None => {}
        }
        Ok(())
    }

    /// The busiest listed active shard dies and half its players are
    /// migrated to another active shard, unrecorded: its group arrives on
    /// two shards (the standby the agents pick and the migration's).
    fn split_a_group(&mut self) -> Result<()> {
        let playing = self.playing();
        let on = |p: usize| playing.iter().filter(|(_, s)| *s == shard_name(p)).count();
        let actives: Vec<usize> = (0..ROLES.len()).filter(|&p| ROLES[p] == "active").collect();
        let dead = *actives.iter().max_by_key(|&&p| on(p)).expect("listed actives");
        anyhow::ensure!(on(dead) >= 2, "no active shard has two players to split");
        let to = *actives.iter().find(|&&p| p != dead).expect("two listed actives");
        let half: Vec<String> =
            playing.iter().filter(|(_, s)| *s == shard_name(dead)).map(|(c, _)| c.clone()).step_by(2).collect();
        self.h.died(&shard_name(dead), "SIGKILL");
        self.c.shards[dead].kill();
        self.faults.dead[dead] = Some(Kind::ShardKill);
        let req = Request::Migrate { clients: half.clone(), from: None, to: shard_name(to) };
        faults::ask_any(&self.c, &req)?;
        self.h.note(format!(
            "BREAK: {} killed and {} of its players migrated to {} behind the checker's back",
            shard_name(dead),
            half.len(),
            shard_name(to)
        ));
        Ok(())
    }

    /// The quiet end: every playing player settled (connected, no move
    /// under way), with a deadline.
    fn settle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            let now = clock_ms();
            let roster = self.pop.roster.lock().unwrap().clone();
            let unsettled = roster.iter().filter(|p| p.active(now + 2_000) && !p.snapshot().connected).count();
            let pending = self.sampler.as_ref().map(|s| s.checker.lock().unwrap().pending()).unwrap_or(0);
            if unsettled == 0 && pending == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // One more look at the gamemodes, then time for their logins.
        let roster = self.pop.roster.lock().unwrap().clone();
        gamemode::tick(&self.c, &self.gm, &roster, &self.h);
        std::thread::sleep(Duration::from_secs(2));
    }
}
