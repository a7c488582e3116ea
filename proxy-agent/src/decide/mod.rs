//! One decider among the ingress agents without Kubernetes: the holder of a
//! row in the cluster's MariaDB (issue 20). The decider appends decisions
//! to a log every agent reads and applies in the log's order.
//!
//! The same shape as the Kubernetes Lease (`agones::lease`): take the row
//! when it has expired, renew it every third of the lease, follow while a
//! live agent holds it, and stop deciding after two thirds of the lease
//! without a successful renewal, before anyone else may take it. Every
//! change of holder raises the row's `term`, the fencing token; an append
//! checks holder, term and expiry in the same statement that inserts, on the
//! database's clock, so a stale decider's decision is refused
//! ([`Error::Fenced`]) and never lands.
//!
//! `schema` holds the tables (also `proxy-agent db migrate`'s version 2),
//! `store` the [`Coordinator`] (the statements), `body` the decisions'
//! encoding, `tenure` the in-process "am I still the decider" clock,
//! `task` the loops that hold the row and follow the log.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

mod body;
mod error;
pub mod schema;
mod store;
mod task;
mod tenure;

pub use error::{Error, Result};
pub use store::Coordinator;
pub use task::{spawn, Handle, Status};
pub use tenure::Tenure;

/// The `coordinator:` block of the config: where the database is and how
/// long the decider's lease lasts.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// `mysql://USER:PASSWORD@HOST:PORT/DATABASE`. `SAMP_PROXY_DATABASE_URL`
    /// wins when set, as for the account leases.
    #[serde(default)]
    pub database: Option<String>,
    /// A file holding the URL (a mounted Secret), instead of `database`.
    #[serde(default)]
    pub database_file: Option<PathBuf>,
    /// A decider that does not renew for this long may be replaced.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often followers read new decisions.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The longest any one database call (connecting included) may take;
    /// a round gets at most a third of the lease.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_lease_ms() -> u64 {
    2000
}

fn default_poll_ms() -> u64 {
    100
}

fn default_timeout_ms() -> u64 {
    1000
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            database: None,
            database_file: None,
            lease_ms: default_lease_ms(),
            poll_ms: default_poll_ms(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// The shortest lease: a round trip to the database and back must fit in a
/// third of it with room to spare.
pub const MIN_LEASE_MS: u64 = 300;
/// The longest lease (a minute): a dead decider is replaced after this.
pub const MAX_LEASE_MS: u64 = 60_000;

/// Never prints the password.
impl fmt::Debug for CoordinatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorConfig")
            .field("database", &self.database.as_deref().map(crate::leases::redact))
            .field("database_file", &self.database_file)
            .field("lease_ms", &self.lease_ms)
            .field("poll_ms", &self.poll_ms)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Where the coordinator's database URL came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Env,
    Config,
    File(PathBuf),
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::Env => write!(f, "{}", crate::leases::DATABASE_ENV),
            UrlSource::Config => write!(f, "coordinator.database"),
            UrlSource::File(p) => write!(f, "coordinator.database_file ({})", p.display()),
        }
    }
}

impl CoordinatorConfig {
    /// The problem with the numbers, if any, in words an operator can act on.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&self.lease_ms) {
            return Err(format!(
                "coordinator.lease_ms is {}; it must be {MIN_LEASE_MS}..={MAX_LEASE_MS}",
                self.lease_ms
            ));
        }
        if self.poll_ms == 0 || self.poll_ms > self.lease_ms {
            return Err(format!(
                "coordinator.poll_ms is {}; it must be 1..=lease_ms ({})",
                self.poll_ms, self.lease_ms
            ));
        }
        if self.timeout_ms < 10 {
            return Err(format!("coordinator.timeout_ms is {}; it must be at least 10", self.timeout_ms));
        }
        if self.database.is_some() && self.database_file.is_some() {
            return Err("coordinator: set `database` or `database_file`, not both".into());
        }
        Ok(())
    }

    /// The database URL: `SAMP_PROXY_DATABASE_URL` when set (and not
    /// empty), else `database`, else the first line of `database_file`.
    pub fn database_url(&self) -> std::result::Result<(String, UrlSource), String> {
        match std::env::var(crate::leases::DATABASE_ENV) {
            Ok(url) if !url.trim().is_empty() => return Ok((url.trim().to_string(), UrlSource::Env)),
            _ => {}
        }
        if let Some(url) = &self.database {
            return Ok((url.clone(), UrlSource::Config));
        }
        let Some(path) = &self.database_file else {
            return Err(format!(
                "no coordinator database: set `coordinator.database` or `coordinator.database_file` in the config, \
                 or {} in the environment, e.g. mysql://samp:PASSWORD@127.0.0.1:3306/samp",
                crate::leases::DATABASE_ENV
            ));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("coordinator.database_file: cannot read {}: {e}", path.display()))?;
        match text.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(url) => Ok((url.to_string(), UrlSource::File(path.clone()))),
            None => Err(format!("coordinator.database_file: {} is empty", path.display())),
        }
    }
}

/// One decision every ingress agent applies, in the log's order. Shards are
/// named by their config or GameServer name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Every player (and group) of `from` goes to `to`: a failover, growth,
    /// `migrate --from`.
    MoveShard { from: String, to: String, why: String },
    /// A shard stops (or starts again) taking new players.
    Drain { shard: String, drained: bool },
}

/// The outcome of one round on the decider row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// This agent holds the row; its decisions carry `term`.
    Leading { term: u64 },
    /// A live agent holds it (`holder` is empty when nobody does and the
    /// row could not be taken this round).
    Following { holder: String, term: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let cfg: CoordinatorConfig = serde_yaml::from_str("database: mysql://u:p@h/d").unwrap();
        assert_eq!((cfg.lease_ms, cfg.poll_ms, cfg.timeout_ms), (2000, 100, 1000));
        assert!(cfg.check().is_ok());
        assert!(serde_yaml::from_str::<CoordinatorConfig>("lease: 3").is_err());
    }

    #[test]
    fn checks_name_the_field() {
        let bad = |cfg: CoordinatorConfig, word: &str| {
            let e = cfg.check().unwrap_err();
            assert!(e.contains(word), "{e}");
        };
        bad(CoordinatorConfig { lease_ms: 100, ..Default::default() }, "lease_ms");
        bad(CoordinatorConfig { poll_ms: 0, ..Default::default() }, "poll_ms");
        bad(CoordinatorConfig { poll_ms: 5000, ..Default::default() }, "poll_ms");
        bad(CoordinatorConfig { timeout_ms: 1, ..Default::default() }, "timeout_ms");
        let both = CoordinatorConfig {
            database: Some("mysql://u:p@h/d".into()),
            database_file: Some("/x".into()),
            ..Default::default()
        };
        bad(both, "not both");
    }

    #[test]
    fn debug_hides_the_password() {
        let cfg = CoordinatorConfig { database: Some("mysql://u:hunter2@h/d".into()), ..Default::default() };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn the_url_comes_from_a_file() {
        if std::env::var_os(crate::leases::DATABASE_ENV).is_some() {
            return; // the environment wins; nothing to see here
        }
        let path = std::env::temp_dir().join(format!("decide-url-{}", std::process::id()));
        std::fs::write(&path, "\n  mysql://u:p@h/d  \n").unwrap();
        let cfg = CoordinatorConfig { database_file: Some(path.clone()), ..Default::default() };
        let (url, source) = cfg.database_url().unwrap();
        assert_eq!((url.as_str(), source), ("mysql://u:p@h/d", UrlSource::File(path.clone())));
        std::fs::write(&path, "  \n").unwrap();
        assert!(cfg.database_url().unwrap_err().contains("is empty"));
        std::fs::remove_file(&path).unwrap();
        assert!(cfg.database_url().unwrap_err().contains("cannot read"));
        assert!(CoordinatorConfig::default().database_url().unwrap_err().contains("no coordinator database"));
    }
}
