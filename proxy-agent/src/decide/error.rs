//! What can go wrong talking to the coordinator, typed so the caller can
//! tell a refused decision (fenced: someone else decides now) from a
//! database that is down or slow.

use std::fmt;

/// An error of the coordinator. `target` is `user@host:port/database`,
/// never the password.
#[derive(Debug)]
pub enum Error {
    /// The config names no usable database.
    Config(String),
    /// The append was refused: `by` does not hold the decider row with the
    /// term it gave, or the row expired on the database's clock. Nothing
    /// was written. `holder`/`term` are the row's now (`holder` is empty
    /// when nobody ever took it); `live` is false when it has expired.
    Fenced { holder: String, term: u64, live: bool },
    /// The database did not answer within the deadline; the call's outcome
    /// is unknown (an append may still land, and is then in the log).
    Timeout { what: String, target: String, after_ms: u64 },
    /// The database answered with an error, or the connection broke.
    Db { what: String, target: String, source: mysql_async::Error },
    /// A row of the log could not be read as a decision (edited by hand,
    /// or written by a newer agent). Decisions before it were returned.
    Garbled { seq: u64, problem: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(problem) => write!(f, "coordinator config: {problem}"),
            Error::Fenced { holder, term, live } => {
                let state = if *live { "" } else { ", expired" };
                let holder = if holder.is_empty() { "nobody" } else { holder.as_str() };
                write!(f, "decision refused (fenced): the decider row is held by `{holder}` at term {term}{state}")
            }
            Error::Timeout { what, target, after_ms } => write!(
                f,
                "{what}: the coordinator database {target} did not answer within {after_ms} ms; \
                 check that MariaDB runs there and is reachable"
            ),
            Error::Db { what, target, source } => write!(f, "{what} on the coordinator database {target}: {source}"),
            Error::Garbled { seq, problem } => write!(
                f,
                "decision seq {seq} in samp_proxy_decisions cannot be read: {problem}; \
                 an agent older than the one that wrote it must be upgraded, or the row was edited by hand"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Db { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_thing() {
        let e = Error::Fenced { holder: "b".into(), term: 7, live: true };
        assert_eq!(e.to_string(), "decision refused (fenced): the decider row is held by `b` at term 7");
        let e = Error::Fenced { holder: String::new(), term: 0, live: false };
        assert!(e.to_string().contains("`nobody` at term 0, expired"), "{e}");
        let e = Error::Garbled { seq: 12, problem: "unknown variant".into() };
        assert!(e.to_string().starts_with("decision seq 12 "), "{e}");
    }
}
