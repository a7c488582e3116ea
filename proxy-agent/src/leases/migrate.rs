//! The schema's versions and the runner that applies the missing ones
//! (`proxy-agent db migrate`).
//!
//! Each version is one SQL file under `proxy-agent/sql/`, built into the
//! agent. MariaDB commits every DDL statement on its own, so a version is not
//! one transaction: instead every statement in it is idempotent (`IF NOT
//! EXISTS`, `CREATE OR REPLACE`, `INSERT IGNORE`) and a version half applied
//! (a lost connection) is simply applied again. A version counts as applied
//! once its row is in `samp_schema_version`; two runners at once take turns
//! (a named lock).

use anyhow::{bail, Context, Result};
use mysql_async::{prelude::Queryable, Conn};

use super::script;

/// One schema version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every version, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_leases", sql: include_str!("../../sql/0001_leases.sql") },
    // The ingress agents' decider (`decide::schema`, the same statements).
    Migration { version: 2, name: "0002_decider", sql: include_str!("../../sql/0002_decider.sql") },
];

/// The newest version this agent knows.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The table that records applied versions (also created by 0001, in the
/// same words, so a file applied with the `mariadb` client records itself).
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS samp_schema_version (
    version    INT UNSIGNED NOT NULL PRIMARY KEY,
    name       VARCHAR(128) NOT NULL,
    applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// Serialises concurrent runners (a server-wide named lock).
const LOCK_NAME: &str = "samp_proxy_db_migrate";
const LOCK_WAIT_SECONDS: u32 = 60;

/// The versions recorded in the database, ascending.
pub async fn applied_versions(conn: &mut Conn) -> Result<Vec<u32>> {
    conn.query_drop(VERSION_TABLE).await.context("creating samp_schema_version")?;
    conn.query("SELECT version FROM samp_schema_version ORDER BY version").await.context("reading samp_schema_version")
}

/// Applies every missing version, then writes `lease_seconds` into the
/// settings row. Returns the versions applied now (empty when none was
/// missing).
pub async fn run(conn: &mut Conn, lease_seconds: u32) -> Result<Vec<u32>> {
    let locked: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (LOCK_NAME, LOCK_WAIT_SECONDS))
        .await
        .context("taking the migrate lock")?;
    if locked.flatten() != Some(1) {
        bail!(
            "another `proxy-agent db migrate` held the lock `{LOCK_NAME}` for {LOCK_WAIT_SECONDS} s; wait for it to finish and run again"
        );
    }
    let result = apply_missing(conn, lease_seconds).await;
    // The lock also goes with the connection; release it for a pooled one.
    let _ = conn.exec_drop("DO RELEASE_LOCK(?)", (LOCK_NAME,)).await;
    result
}

async fn apply_missing(conn: &mut Conn, lease_seconds: u32) -> Result<Vec<u32>> {
    let before = applied_versions(conn).await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !before.contains(&m.version)) {
        let statements = script::split(m.sql).map_err(|e| anyhow::anyhow!("sql/{}.sql {e}", m.name))?;
        for s in &statements {
            conn.query_drop(s.text.as_str()).await.with_context(|| {
                format!("applying schema version {} (sql/{}.sql, the statement at line {})", m.version, m.name, s.line)
            })?;
        }
        conn.exec_drop("INSERT IGNORE INTO samp_schema_version (version, name) VALUES (?, ?)", (m.version, m.name))
            .await
            .with_context(|| format!("recording schema version {}", m.version))?;
        applied.push(m.version);
    }
    conn.exec_drop(
        "INSERT INTO samp_lease_settings (id, lease_seconds) VALUES (1, ?) \
         ON DUPLICATE KEY UPDATE lease_seconds = VALUES(lease_seconds)",
        (lease_seconds,),
    )
    .await
    .context("writing lease_seconds into samp_lease_settings")?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend_and_match_their_files() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "versions must ascend");
            last = m.version;
            assert!(m.name.starts_with(&format!("{:04}_", m.version)), "{} names its version", m.name);
            let record = format!("VALUES ({}, '{}')", m.version, m.name);
            assert!(m.sql.contains(&record), "sql/{}.sql records itself with `{record}`", m.name);
        }
        assert_eq!(latest(), last);
    }

    #[test]
    fn the_runner_creates_the_version_table_as_the_file_does() {
        let first = script::split(MIGRATIONS[0].sql).unwrap();
        assert_eq!(first[0].text, VERSION_TABLE);
    }
}
