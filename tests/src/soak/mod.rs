//! The soak (issue 23): the whole cluster in namespaces, a population of
//! players living their lives, and a fault schedule drawn from a seed
//! running against it, several faults at once, while an independent
//! checker judges what the players and shards saw.
//!
//! - [`cluster`]: the namespaces, agents, shard processes and MariaDB;
//! - [`agones`]: the GameServers among the shards, the stand-in API server;
//! - [`schedule`]: the seed's PRNG and the faults it draws;
//! - [`faults`], [`hostile`]: carrying the faults out;
//! - [`population`], [`gamemode`]: players joining, playing, crossing city
//!   limits and leaving; their logins and leases;
//! - [`history`]: the ledger of what was done, printed around a failure;
//! - [`checker`]: the invariants, from the simulators' own records;
//! - [`run`]: the main loop; [`report`]: the figures and the verdict.

pub mod agones;
pub mod checker;
pub mod cluster;
pub mod faults;
pub mod gamemode;
pub mod history;
pub mod hostile;
pub mod population;
pub mod report;
pub mod run;
pub mod schedule;
pub mod shards;

/// A deliberately broken behaviour, so the checker is known to bite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// One game node's return path taken away (its agent stopped and its
    /// programs detached): its pods' replies reach players from the node's
    /// own address, not the public one.
    ReturnPath,
    /// A failover that splits a group: the harness kills the busiest
    /// listed active shard and, behind the checker's back (nothing in the
    /// ledger), migrates half of its players to another active shard while
    /// the agents fail the rest over to a standby.
    SplitGroup,
}

impl std::str::FromStr for Break {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "return-path" => Ok(Break::ReturnPath),
            "split-group" => Ok(Break::SplitGroup),
            other => Err(format!("unknown breakage `{other}`; use return-path or split-group")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: u64,
    pub seed: u64,
    /// Players that stay the whole run (waves of others come and go).
    pub players: usize,
    pub breakage: Option<Break>,
}

pub use report::Outcome;
pub use run::run;
