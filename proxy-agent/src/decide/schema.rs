//! The coordinator's tables. The same statements are schema version 2 of
//! `proxy-agent db migrate` (`proxy-agent/sql/0002_decider.sql`; a test
//! keeps the two in step), so an operator may apply them ahead of time, and
//! an agent with the right to create tables applies them itself
//! ([`Coordinator::migrate`](super::Coordinator::migrate)). Every statement
//! is idempotent; the agent does not record the version (that is
//! `db migrate`'s table).

/// The name of the one decider row.
pub const DECIDER: &str = "ingress";

/// The decider row's table, its first row, the log; in this order.
pub const STATEMENTS: &[&str] = &[DECIDER_TABLE, FIRST_ROW, DECISIONS_TABLE];

const DECIDER_TABLE: &str = "CREATE TABLE IF NOT EXISTS samp_proxy_decider (
    name       VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    holder     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    term       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    taken_at   DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00',
    renewed_at DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00',
    expires_at DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00'
) ENGINE=InnoDB";

/// Also run by a round that finds the row missing (deleted by hand).
pub const FIRST_ROW: &str = "INSERT IGNORE INTO samp_proxy_decider (name) VALUES ('ingress')";

const DECISIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS samp_proxy_decisions (
    seq     BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    term    BIGINT UNSIGNED NOT NULL,
    made_by VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    made_at DATETIME(6) NOT NULL,
    body    LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
) ENGINE=InnoDB";

/// The longest holder name the table keeps.
pub const MAX_HOLDER: usize = 255;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::{migrate::MIGRATIONS, script};

    #[test]
    fn the_agent_applies_what_db_migrate_applies() {
        let m = MIGRATIONS.iter().find(|m| m.version == 2).expect("version 2 is the decider");
        assert_eq!(m.name, "0002_decider");
        let file: Vec<String> = script::split(m.sql).unwrap().into_iter().map(|s| s.text).collect();
        assert_eq!(&file[..STATEMENTS.len()], STATEMENTS);
        assert_eq!(file.len(), STATEMENTS.len() + 1, "the file adds only its version row");
        assert!(FIRST_ROW.contains(&format!("'{DECIDER}'")));
    }
}
