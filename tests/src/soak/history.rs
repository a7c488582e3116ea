//! What happened, in order: every fault, command and observation the soak
//! makes, on one clock (`sim::clock_ms`). The checker reads the two ledgers
//! here (who was told to move, which shard was dead when) to judge what the
//! players and shards saw; a broken invariant prints the lines around it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use crate::sim::clock_ms;

/// Lines kept for the report around a broken invariant.
const KEEP: usize = 4000;

/// Players told to move (a chosen-player migration, a whole-shard
/// migration, an area transfer): from then on they may reconnect and must
/// land on `to`.
#[derive(Debug, Clone)]
pub struct Told {
    pub at_ms: u64,
    /// The players' local addresses; empty with `from_shard`: everyone on it.
    pub clients: Vec<String>,
    pub from_shard: Option<String>,
    pub to: String,
    pub why: String,
}

/// A shard that was dead, hung or cut off from `from_ms` (to `to_ms` once
/// it is back).
#[derive(Debug, Clone)]
pub struct Death {
    pub shard: String,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
    pub how: String,
}

#[derive(Default)]
struct Inner {
    lines: VecDeque<String>,
    told: Vec<Told>,
    deaths: Vec<Death>,
}

/// Shared between the fault runner, the population and the checker.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Inner>>);

impl History {
    /// One line, stamped with the soak's clock.
    pub fn note(&self, what: impl AsRef<str>) {
        let line = format!("{:>8.3}s {}", clock_ms() as f64 / 1000.0, what.as_ref());
        let mut h = self.0.lock().unwrap();
        if h.lines.len() == KEEP {
            h.lines.pop_front();
        }
        h.lines.push_back(line);
    }

    pub fn told(&self, t: Told) {
        self.note(format!(
            "told: {} {} -> {} ({})",
            t.from_shard.as_deref().map(|s| format!("everyone on {s}")).unwrap_or_default(),
            t.clients.join(" "),
            t.to,
            t.why
        ));
        self.0.lock().unwrap().told.push(t);
    }

    pub fn died(&self, shard: &str, how: &str) {
        self.note(format!("death: {shard} ({how})"));
        let d = Death { shard: shard.to_string(), from_ms: clock_ms(), to_ms: None, how: how.to_string() };
        self.0.lock().unwrap().deaths.push(d);
    }

    pub fn revived(&self, shard: &str) {
        self.note(format!("back: {shard}"));
        let mut h = self.0.lock().unwrap();
        if let Some(d) = h.deaths.iter_mut().rev().find(|d| d.shard == shard && d.to_ms.is_none()) {
            d.to_ms = Some(clock_ms());
        }
    }

    pub fn told_list(&self) -> Vec<Told> {
        self.0.lock().unwrap().told.clone()
    }

    pub fn deaths(&self) -> Vec<Death> {
        self.0.lock().unwrap().deaths.clone()
    }

    /// Whether `shard` is dead now.
    pub fn is_dead(&self, shard: &str) -> bool {
        self.0.lock().unwrap().deaths.iter().any(|d| d.shard == shard && d.to_ms.is_none())
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let h = self.0.lock().unwrap();
        h.lines.iter().skip(h.lines.len().saturating_sub(n)).cloned().collect()
    }
}
