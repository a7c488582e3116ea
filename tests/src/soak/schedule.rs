//! The fault schedule, drawn from the seed: a small deterministic PRNG
//! (splitmix64), so `--seed S` draws the same faults at the same offsets.
//!
//! Faults overlap freely, with three rules that keep the checker's
//! judgement sharp rather than vague: one shard is dead at a time (and its
//! group's recovery window is over before the next dies), one ingress node
//! is down at a time (and never while the ingress nodes are partitioned: a
//! node that comes back must reach a peer for its snapshot), and the
//! database and the Kubernetes API have one fault at a time each.

use std::fmt;

/// splitmix64: tiny, fast, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5EED_50AC_0000_0023)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ShardKill,
    ShardHang,
    ShardSilent,
    IngressDeath,
    AgentRestart,
    AgentUpgrade,
    ConfigReload,
    Migrate,
    MigrateShard,
    Drain,
    DbFreeze,
    DbRestart,
    Partition,
    HandshakeFlood,
    QueryFlood,
    HostileControl,
    HostilePeer,
    /// The Kubernetes API cut (every connection closed) or silent.
    KubeOutage,
    /// Agones' health check gives up on a GameServer: `Unhealthy`.
    GameServerUnhealthy,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::ShardKill,
        Kind::ShardHang,
        Kind::ShardSilent,
        Kind::IngressDeath,
        Kind::AgentRestart,
        Kind::AgentUpgrade,
        Kind::ConfigReload,
        Kind::Migrate,
        Kind::MigrateShard,
        Kind::Drain,
        Kind::DbFreeze,
        Kind::DbRestart,
        Kind::Partition,
        Kind::HandshakeFlood,
        Kind::QueryFlood,
        Kind::HostileControl,
        Kind::HostilePeer,
        Kind::KubeOutage,
        Kind::GameServerUnhealthy,
    ];

    /// Relative weight in the draw.
    fn weight(self) -> u64 {
        match self {
            Kind::ShardKill | Kind::ShardHang | Kind::ShardSilent => 4,
            Kind::IngressDeath | Kind::Partition | Kind::DbFreeze => 3,
            Kind::Migrate | Kind::AgentRestart => 3,
            _ => 2,
        }
    }

    pub fn kills_a_shard(self) -> bool {
        matches!(self, Kind::ShardKill | Kind::ShardHang | Kind::ShardSilent | Kind::GameServerUnhealthy)
    }

    /// How long it lasts, drawn (ms); 0 for a one-shot fault.
    fn duration(self, rng: &mut Rng) -> u64 {
        match self {
            k if k.kills_a_shard() => rng.range(6_000, 14_000),
            Kind::IngressDeath => rng.range(4_000, 12_000),
            Kind::Drain => rng.range(4_000, 12_000),
            Kind::DbFreeze => rng.range(2_000, 8_000),
            Kind::Partition | Kind::KubeOutage => rng.range(3_000, 9_000),
            _ => 0,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        f.write_str(&out)
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    /// Offset from the start of the soak.
    pub at_ms: u64,
    pub kind: Kind,
    pub dur_ms: u64,
    /// Which one (a shard, a node, an agent): an index the runner reduces
    /// modulo what exists, or a draw for the runner's own choice.
    pub pick: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7.1}s {:<16} pick {:>4}", self.at_ms as f64 / 1000.0, self.kind.to_string(), self.pick % 1000)?;
        if self.dur_ms > 0 {
            write!(f, " for {:.1}s", self.dur_ms as f64 / 1000.0)?;
        }
        Ok(())
    }
}

/// How long after a shard's death its group gets to arrive somewhere
/// before another shard may die.
pub const RECOVERY_MS: u64 = 15_000;

/// Busy windows of the faults that must not overlap their own kind.
#[derive(Default)]
struct Busy {
    shard: u64,
    ingress: u64,
    partition: u64,
    db: u64,
    kube: u64,
}

impl Busy {
    /// Whether `kind` may start at `t` lasting `dur`; marks it if so.
    fn take(&mut self, kind: Kind, t: u64, dur: u64) -> bool {
        let end = t + dur;
        let slot = match kind {
            k if k.kills_a_shard() => &mut self.shard,
            Kind::IngressDeath if t < self.partition => return false,
            Kind::IngressDeath => &mut self.ingress,
            Kind::Partition if t < self.ingress => return false,
            Kind::Partition => &mut self.partition,
            Kind::DbFreeze | Kind::DbRestart => &mut self.db,
            Kind::KubeOutage => &mut self.kube,
            _ => return true,
        };
        if t < *slot {
            return false;
        }
        // A returning ingress node needs a while to sync and be ready.
        let tail = match kind {
            k if k.kills_a_shard() => RECOVERY_MS,
            Kind::IngressDeath => 8_000,
            _ => 2_000,
        };
        *slot = end + tail;
        true
    }
}

/// Faults from `warmup_ms` until `until_ms`, one every 1.5–6 s on average.
pub fn draw(seed: u64, warmup_ms: u64, until_ms: u64) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let total: u64 = Kind::ALL.iter().map(|k| k.weight()).sum();
    let mut busy = Busy::default();
    let mut out = Vec::new();
    let mut t = warmup_ms;
    while t < until_ms {
        let mut w = rng.range(0, total - 1);
        let kind = *Kind::ALL
            .iter()
            .find(|k| {
                if w < k.weight() {
                    return true;
                }
                w -= k.weight();
                false
            })
            .expect("a weight");
        let dur = kind.duration(&mut rng);
        let pick = rng.next_u64();
        // A fault that lasts must end before the run's quiet end.
        if t + dur < until_ms && busy.take(kind, t, dur) {
            out.push(Fault { at_ms: t, kind, dur_ms: dur, pick });
        }
        t += rng.range(1_500, 6_000);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_schedule() {
        let a: Vec<String> = draw(7, 10_000, 200_000).iter().map(|f| f.to_string()).collect();
        let b: Vec<String> = draw(7, 10_000, 200_000).iter().map(|f| f.to_string()).collect();
        assert_eq!(a, b);
        assert_ne!(a, draw(8, 10_000, 200_000).iter().map(|f| f.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn shard_deaths_never_overlap_their_recovery() {
        let f = draw(1, 0, 2_000_000);
        let deaths: Vec<&Fault> = f.iter().filter(|f| f.kind.kills_a_shard()).collect();
        for w in deaths.windows(2) {
            assert!(w[1].at_ms >= w[0].at_ms + w[0].dur_ms + RECOVERY_MS, "{} then {}", w[0], w[1]);
        }
    }
}
