//! Account leases in MariaDB: one account is logged in on one shard only.
//!
//! The rules live in the database, as SQL a gamemode calls through the MySQL
//! plugin it already uses (`proxy-agent/sql/`, applied by `proxy-agent db
//! migrate`): `samp_lease_acquire` at login, `samp_lease_renew` on a timer,
//! `samp_lease_release` at logout, `samp_lease_holds` / `samp_lease_fence` to
//! guard writes with the fencing token. The agent's side is [`LeaseStore`]:
//! it applies the schema and moves leases with the players it moves
//! ([`LeaseStore::move_shard`], [`LeaseStore::move_clients`]).
//!
//! `script` splits the SQL files (the `mariadb` client's `DELIMITER`),
//! `migrate` applies the missing versions, `store` is the connection.

use std::fmt;

use serde::Deserialize;

pub mod migrate;
pub mod mover;
pub mod script;
pub mod store;

pub use store::{Acquire, LeaseStore, Release};

/// The environment variable that carries the database URL; it wins over
/// `leases.database` (so a password need not sit in the config file).
pub const DATABASE_ENV: &str = "SAMP_PROXY_DATABASE_URL";

/// The `leases:` block of the config.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// `mysql://USER:PASSWORD@HOST:PORT/DATABASE`; may be left out when
    /// `SAMP_PROXY_DATABASE_URL` is set, which wins.
    #[serde(default)]
    pub database: Option<String>,
    /// A lease not renewed for this long expires (written into the database
    /// by `db migrate`).
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u32,
    /// How long connecting to the database may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            database: None,
            lease_seconds: default_lease_seconds(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }
}

fn default_lease_seconds() -> u32 {
    30
}

fn default_connect_timeout_ms() -> u64 {
    5000
}

/// The longest lease (one day); the settings table refuses more.
pub const MAX_LEASE_SECONDS: u32 = 86_400;

/// Never prints the password.
impl fmt::Debug for LeaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseConfig")
            .field("database", &self.database.as_deref().map(redact))
            .field("lease_seconds", &self.lease_seconds)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

/// Where the database URL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    Env,
    Config,
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::Env => write!(f, "{DATABASE_ENV}"),
            UrlSource::Config => write!(f, "leases.database"),
        }
    }
}

impl LeaseConfig {
    /// The database URL: `SAMP_PROXY_DATABASE_URL` when set (and not
    /// empty), else `leases.database`.
    pub fn database_url(&self) -> anyhow::Result<(String, UrlSource)> {
        match std::env::var(DATABASE_ENV) {
            Ok(url) if !url.trim().is_empty() => return Ok((url.trim().to_string(), UrlSource::Env)),
            _ => {}
        }
        match &self.database {
            Some(url) => Ok((url.clone(), UrlSource::Config)),
            None => anyhow::bail!(
                "no lease database: set `leases.database` in the config or {DATABASE_ENV} in the environment, \
                 e.g. mysql://samp:PASSWORD@127.0.0.1:3306/samp"
            ),
        }
    }
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], user, &rest[at..])
}

/// Checks a database URL the way the client will read it; the problem, or
/// the host and database it names. Never repeats the password.
pub fn check_url(url: &str) -> Result<mysql_async::Opts, String> {
    if !url.starts_with("mysql://") {
        return Err(format!("`{}` is not a mysql:// URL", redact(url)));
    }
    let opts = mysql_async::Opts::from_url(url).map_err(|e| format!("`{}`: {e}", redact(url)))?;
    if opts.db_name().is_none_or(str::is_empty) {
        return Err(format!("`{}` names no database", redact(url)));
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(redact("mysql://samp:s3cr%40t@db.local:3306/samp"), "mysql://samp:***@db.local:3306/samp");
        assert_eq!(redact("mysql://a:b:c@h/d?x=1"), "mysql://a:***@h/d?x=1");
        assert_eq!(redact("mysql://samp@h/d"), "mysql://samp@h/d");
        assert_eq!(redact("mysql://h:3306/d"), "mysql://h:3306/d");
        assert_eq!(redact("not a url"), "not a url");
        let cfg = LeaseConfig { database: Some("mysql://u:hunter2@h/d".into()), ..Default::default() };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn urls_are_checked_without_echoing_the_password() {
        assert!(check_url("mysql://u:p@127.0.0.1:3306/samp").is_ok());
        let e = check_url("postgres://u:hunter2@h/d").unwrap_err();
        assert!(e.contains("not a mysql:// URL") && !e.contains("hunter2"), "{e}");
        let e = check_url("mysql://u:hunter2@h:3306").unwrap_err();
        assert!(e.contains("names no database") && !e.contains("hunter2"), "{e}");
        let e = check_url("mysql://u:hunter2@h/d?colour=blue").unwrap_err();
        assert!(e.contains("colour") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn defaults() {
        let cfg: LeaseConfig = serde_yaml::from_str("database: mysql://u:p@h/d").unwrap();
        assert_eq!((cfg.lease_seconds, cfg.connect_timeout_ms), (30, 5000));
    }
}
