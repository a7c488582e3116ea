//! Each shard's gamemode, as far as accounts go: a player that arrives on a
//! shard logs in there (the gamemode takes the account's lease through the
//! shipped procedures, as its MySQL plugin would), a shard renews its
//! leases while it lives, and a player gone from a shard for a player
//! timeout is logged out there (its lease released, a stale token is fine).
//! What it saw is the lease checker's evidence.

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    sync::{Arc, Mutex},
    time::Duration,
};

use proxy_agent::leases::Acquire;

use super::{
    cluster::{Cluster, LEASE_SECONDS},
    history::History,
    population::PlayerRec,
};
use crate::sim::clock_ms;

/// A gamemode logs out a player missing this long (SA:MP's player timeout
/// is 10 s; shorter here so the soak sees many).
const PLAYER_TIMEOUT_MS: u64 = 5_000;
/// Every database call gives up after this.
const CALL_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Clone)]
pub struct Login {
    /// The shard the player is on now, as its echoes say, and since when.
    pub shard: String,
    pub since_ms: u64,
    /// The token of a login on `shard`, once one succeeded.
    pub token: Option<u64>,
    /// The shard that held the account when the last login was refused.
    pub refused_by: Option<String>,
    /// Earlier logins not yet logged out: (shard, token, gone since).
    pub old: Vec<(String, u64, u64)>,
    pub busy: bool,
    /// The highest token the account was given.
    pub top_token: u64,
}

#[derive(Debug, Default, Clone)]
pub struct GmCounts {
    pub logins: u64,
    pub refused: u64,
    pub db_errors: u64,
    pub logouts: u64,
    pub renewals: u64,
}

#[derive(Default)]
pub struct Gm {
    pub logins: BTreeMap<String, Login>,
    pub counts: GmCounts,
    /// Broken fencing seen by a call (a token that did not grow).
    pub broken: Vec<String>,
}

pub type Gamemode = Arc<Mutex<Gm>>;

/// One step: logins for arrivals, logouts for the long gone.
pub fn tick(c: &Cluster, gm: &Gamemode, roster: &[Arc<PlayerRec>], h: &History) {
    let now = clock_ms();
    for p in roster {
        let s = p.snapshot();
        let Some(shard) = s.current_shard().map(str::to_string) else { continue };
        let gone = !p.active(now);
        let mut g = gm.lock().unwrap();
        let l = g.logins.entry(p.account.clone()).or_default();
        if l.busy {
            continue;
        }
        if l.shard != shard && !gone {
            if let Some(t) = l.token.take() {
                l.old.push((l.shard.clone(), t, now));
            }
            l.shard = shard.clone();
            l.since_ms = now;
            l.refused_by = None;
        }
        if let Some(i) = l.old.iter().position(|(_, _, at)| now > at + PLAYER_TIMEOUT_MS) {
            let (_, token, _) = l.old.remove(i);
            l.busy = true;
            drop(g);
            logout(c, gm, &p.account, token);
            continue;
        }
        if gone && l.token.is_some() {
            let token = l.token.take().unwrap();
            l.busy = true;
            drop(g);
            logout(c, gm, &p.account, token);
            continue;
        }
        if l.token.is_none() && !gone && !h.is_dead(&shard) {
            l.busy = true;
            drop(g);
            login(c, gm, p, &shard);
        }
    }
}

fn login(c: &Cluster, gm: &Gamemode, p: &PlayerRec, shard: &str) {
    let (gm, leases, account, shard) = (gm.clone(), c.leases.clone(), p.account.clone(), shard.to_string());
    let client: SocketAddrV4 = p.local.parse().expect("a player address");
    c.rt.spawn(async move {
        let r = tokio::time::timeout(CALL_DEADLINE, leases.acquire(&account, &shard, client)).await;
        let mut g = gm.lock().unwrap();
        let Gm { logins, counts, broken } = &mut *g;
        let l = logins.entry(account.clone()).or_default();
        l.busy = false;
        match r {
            Ok(Ok(Acquire::Ok { token, .. })) => {
                counts.logins += 1;
                if token <= l.top_token {
                    broken.push(format!("{account}: login on {shard} got token {token}, not above {}", l.top_token));
                }
                l.top_token = l.top_token.max(token);
                if l.shard == shard {
                    l.token = Some(token);
                } else {
                    l.old.push((shard, token, clock_ms()));
                }
            }
            Ok(Ok(Acquire::Held { holder, .. })) => {
                counts.refused += 1;
                l.refused_by = Some(holder);
            }
            _ => counts.db_errors += 1,
        }
    });
}

fn logout(c: &Cluster, gm: &Gamemode, account: &str, token: u64) {
    let (gm, leases, account) = (gm.clone(), c.leases.clone(), account.to_string());
    c.rt.spawn(async move {
        let r = tokio::time::timeout(CALL_DEADLINE, leases.release(&account, token)).await;
        let mut g = gm.lock().unwrap();
        let ok = matches!(r, Ok(Ok(_)));
        if ok {
            g.counts.logouts += 1;
        } else {
            g.counts.db_errors += 1;
        }
        let l = g.logins.entry(account).or_default();
        l.busy = false;
        if !ok {
            // Try again at the next tick.
            l.old.push((String::new(), token, 0));
        }
    });
}

/// Every live shard renews its leases (a dead or cut-off one cannot).
pub fn renew(c: &Cluster, gm: &Gamemode, h: &History) {
    for p in 0..c.shards.len() {
        let shard = super::cluster::shard_name(p);
        if h.is_dead(&shard) {
            continue;
        }
        let (gm, leases) = (gm.clone(), c.leases.clone());
        c.rt.spawn(async move {
            let r = tokio::time::timeout(CALL_DEADLINE, leases.renew(&shard)).await;
            let mut g = gm.lock().unwrap();
            match r {
                Ok(Ok(_)) => g.counts.renewals += 1,
                _ => g.counts.db_errors += 1,
            }
        });
    }
}

/// The lease facts, read from the database off the main loop (nothing
/// while it does not answer): no shard dead longer than a lease holds a
/// live lease, and no account is leased on two shards. What breaks goes to
/// the gamemode's `broken`.
pub fn check_leases(c: &Cluster, gm: &Gamemode, long_dead: Vec<String>) {
    use mysql_async::prelude::Queryable;
    let (leases, gm) = (c.leases.clone(), gm.clone());
    c.rt.spawn(async move {
        let work = async {
            let mut per = Vec::new();
            for d in long_dead {
                per.push((d.clone(), leases.live_leases(&d).await.ok()?));
            }
            let mut conn = leases.pool().get_conn().await.ok()?;
            let twice: Vec<String> = conn
                .query(
                    "SELECT account FROM samp_leases WHERE expires_at > NOW(3) GROUP BY account \
                     HAVING COUNT(DISTINCT shard) > 1",
                )
                .await
                .ok()?;
            Some((per, twice))
        };
        let Ok(Some((per, twice))) = tokio::time::timeout(CALL_DEADLINE, work).await else { return };
        let mut g = gm.lock().unwrap();
        for (shard, n) in per.into_iter().filter(|(_, n)| *n > 0) {
            g.broken.push(format!("{shard} has been dead over {LEASE_SECONDS} s and still holds {n} live leases"));
        }
        if !twice.is_empty() {
            g.broken.push(format!("accounts leased on two shards at once: {twice:?}"));
        }
    });
}
