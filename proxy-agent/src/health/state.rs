//! A shard's health as the agent tracks it: hysteresis over probe
//! outcomes (consecutive misses mark it down, consecutive answers up), and
//! a confirmed refusal marks it down at once.

use serde::Serialize;

use super::{answers::ShardAnswers, ProbeOutcome};
use crate::config::HealthConfig;

/// A shard's health as the agent tracks it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    pub up: bool,
    /// No probe has completed yet.
    pub unchecked: bool,
    pub misses: u32,
    pub successes: u32,
    pub rtt_ms: Option<f64>,
    pub players: Option<u16>,
    pub max_players: Option<u16>,
    /// The last `r`, `c` and `o` answers (kept while the shard answers pings).
    #[serde(skip)]
    pub answers: ShardAnswers,
}

impl Default for Health {
    fn default() -> Self {
        // Optimistic until proven down, so a starting cluster takes players.
        Self {
            up: true,
            unchecked: true,
            misses: 0,
            successes: 0,
            rtt_ms: None,
            players: None,
            max_players: None,
            answers: ShardAnswers::default(),
        }
    }
}

/// What one probe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown(DownReason),
    CameUp,
}

/// Why a shard was marked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// `down_after` probes in a row went unanswered.
    Missed,
    /// Its game port refused two probes in a row.
    Refused,
}

impl DownReason {
    /// The `health_down` event's detail.
    pub fn detail(self, cfg: &HealthConfig) -> String {
        match self {
            Self::Missed => format!("{} probes unanswered", cfg.down_after),
            Self::Refused => "its game port refused two probes in a row (the server process is gone)".into(),
        }
    }
}

impl Health {
    /// Folds one probe's outcome in, with hysteresis: `down_after` misses
    /// in a row mark a shard down, `up_after` answers up again; a confirmed
    /// refusal marks it down at once (the server process is gone: no
    /// answer is coming), and counts as a miss.
    pub fn record(&mut self, outcome: ProbeOutcome, cfg: &HealthConfig) -> Transition {
        self.unchecked = false;
        match outcome {
            ProbeOutcome::Answered(r) => {
                self.misses = 0;
                self.successes = self.successes.saturating_add(1);
                self.rtt_ms = Some(r.rtt.as_secs_f64() * 1000.0);
                if let Some((p, m)) = r.info {
                    self.players = Some(p);
                    self.max_players = Some(m);
                }
                if let Some(answers) = r.answers {
                    self.answers = answers;
                }
                if !self.up && self.successes >= cfg.up_after {
                    self.up = true;
                    return Transition::CameUp;
                }
            }
            ProbeOutcome::Refused | ProbeOutcome::Silent => {
                self.successes = 0;
                self.misses = self.misses.saturating_add(1);
                let refused = outcome == ProbeOutcome::Refused;
                if self.up && (refused || self.misses >= cfg.down_after) {
                    self.up = false;
                    return Transition::WentDown(if refused { DownReason::Refused } else { DownReason::Missed });
                }
            }
        }
        Transition::None
    }

    pub fn label(&self) -> &'static str {
        match (self.unchecked, self.up) {
            (true, _) => "unchecked",
            (false, true) => "up",
            (false, false) => "down",
        }
    }
}
