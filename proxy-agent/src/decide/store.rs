//! The coordinator's statements. Each round and each append is ONE
//! statement (autocommit): the decider row is locked only while the server
//! runs it, never across a round trip, so an agent that dies or is cut off
//! mid-call cannot hold the row and stall a takeover. Every time is the
//! server's `UTC_TIMESTAMP(6)` (fixed for the length of a statement), so
//! agents' clocks and time zones do not matter.
//!
//! Every call is bounded: a round by a third of the lease (a later answer
//! is useless to the 2/3 rule), the others by `timeout_ms`. A call that runs
//! out returns [`Error::Timeout`] and its connection is dropped.

use std::{future::Future, time::Duration};

use mysql_async::{prelude::Queryable, Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use super::{
    body,
    schema::{self, DECIDER, MAX_HOLDER},
    CoordinatorConfig, Decision, Error, Result, Round,
};

/// Take the row when it has expired, renew it when it is ours. `term` and
/// `taken_at` come first: they read the row's old holder and expiry (in
/// MariaDB's left-to-right assignment and in SIMULTANEOUS_ASSIGNMENT mode
/// alike). The term rises on every change of holder and on a take-back
/// after expiry, so anything sent under the old term is fenced.
const TAKE: &str = "UPDATE samp_proxy_decider SET
    term = term + (holder <> ? OR expires_at <= UTC_TIMESTAMP(6)),
    taken_at = IF(holder <> ? OR expires_at <= UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), taken_at),
    holder = ?,
    renewed_at = UTC_TIMESTAMP(6),
    expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
  WHERE name = ? AND (holder = ? OR expires_at <= UTC_TIMESTAMP(6))";

const READ: &str = "SELECT holder, term, expires_at > UTC_TIMESTAMP(6) FROM samp_proxy_decider WHERE name = ?";

/// The fence: the insert happens only if, when the server runs it, `by`
/// holds the row with `term` and it has not expired. `FOR UPDATE` locks the
/// row for the statement (also under READ COMMITTED, where INSERT … SELECT
/// would otherwise read without a lock): a takeover waits for the append
/// and an append for a takeover, and appends run one at a time, so `seq`
/// order is commit order and a follower reading `seq > n` misses nothing.
const APPEND: &str = "INSERT INTO samp_proxy_decisions (term, made_by, made_at, body)
  SELECT term, holder, UTC_TIMESTAMP(6), ? FROM samp_proxy_decider
  WHERE name = ? AND holder = ? AND term = ? AND expires_at > UTC_TIMESTAMP(6)
  FOR UPDATE";

const SINCE: &str = "SELECT seq, body FROM samp_proxy_decisions WHERE seq > ? ORDER BY seq LIMIT ?";

const HEAD: &str = "SELECT COALESCE(MAX(seq), 0) FROM samp_proxy_decisions";

/// The most decisions one `since` returns.
pub const MAX_BATCH: usize = 10_000;

/// Tries an append again after a deadlock (1213) or lock wait timeout
/// (1205): the server rolled it back, so it did not land.
const ATTEMPTS: usize = 3;

/// A handle on the coordinator database; clones share one pool.
#[derive(Clone)]
pub struct Coordinator {
    pool: Pool,
    /// `user@host:port/database`, for messages (never the password).
    target: String,
    lease: Duration,
    poll: Duration,
    timeout: Duration,
}

impl Coordinator {
    /// Checks the config and builds the pool; connects lazily (the first
    /// call does), so it never blocks and needs no runtime.
    pub fn new(cfg: &CoordinatorConfig) -> Result<Self> {
        cfg.check().map_err(Error::Config)?;
        let (url, source) = cfg.database_url().map_err(Error::Config)?;
        let opts = crate::leases::check_url(&url).map_err(|e| Error::Config(format!("{source}: {e}")))?;
        let target = describe(&opts);
        let timeout = Duration::from_millis(cfg.timeout_ms);
        // The server gives up a lock wait after a second (its smallest
        // unit), so statements queued behind a stuck one do not pile up.
        let lock_wait = cfg.timeout_ms.div_ceil(1000).max(1);
        let opts = OptsBuilder::from_opts(opts)
            .client_found_rows(true)
            .tcp_keepalive(Some(Duration::from_secs(5)))
            .init(vec![format!("SET SESSION innodb_lock_wait_timeout = {lock_wait}")])
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(PoolConstraints::new(0, 8).expect("0 <= 8"))
                    .with_inactive_connection_ttl(Duration::from_secs(60)),
            );
        Ok(Coordinator {
            pool: Pool::new(Opts::from(opts)),
            target,
            lease: Duration::from_millis(cfg.lease_ms),
            poll: Duration::from_millis(cfg.poll_ms),
            timeout,
        })
    }

    /// `user@host:port/database`: what this coordinator talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// Creates the tables and the decider row if absent; safe to run again.
    pub async fn migrate(&self) -> Result<()> {
        self.bounded("creating the decider tables", self.timeout * 4, async {
            let mut conn = self.conn().await?;
            for s in schema::STATEMENTS {
                conn.query_drop(*s).await.map_err(self.db("creating the decider tables"))?;
            }
            Ok(())
        })
        .await
    }

    /// Takes, renews or follows the decider row, as `me` (this agent's
    /// unique name: two agents under one name would both lead).
    pub async fn round(&self, me: &str) -> Result<Round> {
        check_name(me)?;
        let limit = self.timeout.min(self.lease / 3);
        self.bounded("a decider round", limit, self.try_round(me)).await
    }

    async fn try_round(&self, me: &str) -> Result<Round> {
        let mut conn = self.conn().await?;
        let micros = self.lease.as_micros() as u64;
        for _ in 0..2 {
            conn.exec_drop(TAKE, (me, me, me, micros, DECIDER, me)).await.map_err(self.db("a decider round"))?;
            let took = conn.affected_rows() == 1;
            let row: Option<(String, u64, bool)> =
                conn.exec_first(READ, (DECIDER,)).await.map_err(self.db("reading the decider row"))?;
            match row {
                Some((holder, term, _)) if took && holder == me => return Ok(Round::Leading { term }),
                Some((holder, term, _)) => return Ok(Round::Following { holder, term }),
                // Deleted by hand: put it back and try once more.
                None => conn.query_drop(schema::FIRST_ROW).await.map_err(self.db("restoring the decider row"))?,
            }
        }
        Err(Error::Config(format!(
            "samp_proxy_decider has no row `{DECIDER}` and it cannot be created; run `proxy-agent db migrate`"
        )))
    }

    /// Appends `d` to the log if `by` holds the decider row with `term` and
    /// it has not expired, on the database's clock; returns its seq. Else
    /// [`Error::Fenced`] and nothing is written. After [`Error::Timeout`]
    /// the decision may or may not have landed: read the log.
    pub async fn append(&self, term: u64, by: &str, d: &Decision) -> Result<u64> {
        check_name(by)?;
        let text = body::encode(d);
        self.bounded("appending a decision", self.timeout, async {
            let mut conn = self.conn().await?;
            let mut attempt = 1;
            loop {
                match conn.exec_drop(APPEND, (text.as_str(), DECIDER, by, term)).await {
                    Err(mysql_async::Error::Server(e)) if attempt < ATTEMPTS && (e.code == 1213 || e.code == 1205) => {
                        attempt += 1;
                    }
                    other => break other.map_err(self.db("appending a decision"))?,
                }
            }
            if conn.affected_rows() == 1 {
                return conn.last_insert_id().ok_or_else(|| Error::Config("the insert returned no seq".into()));
            }
            let row: Option<(String, u64, bool)> =
                conn.exec_first(READ, (DECIDER,)).await.map_err(self.db("reading the decider row"))?;
            let (holder, term, live) = row.unwrap_or_default();
            Err(Error::Fenced { holder, term, live })
        })
        .await
    }

    /// Up to `limit` decisions after `seq`, in seq order. A row that is not
    /// a decision ends the batch: the ones before it are returned; when it
    /// is the first, [`Error::Garbled`] names it (the caller stops there).
    pub async fn since(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Decision)>> {
        let limit = limit.clamp(1, MAX_BATCH) as u64;
        let rows: Vec<(u64, Vec<u8>)> = self
            .bounded("reading decisions", self.timeout, async {
                let mut conn = self.conn().await?;
                conn.exec(SINCE, (seq, limit)).await.map_err(self.db("reading decisions"))
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            match body::decode(seq, &bytes) {
                Ok(d) => out.push((seq, d)),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The last seq in the log (0: empty).
    pub async fn head(&self) -> Result<u64> {
        self.bounded("reading the log's head", self.timeout, async {
            let mut conn = self.conn().await?;
            let n: Option<u64> = conn.query_first(HEAD).await.map_err(self.db("reading the log's head"))?;
            Ok(n.unwrap_or(0))
        })
        .await
    }

    /// Closes every connection.
    pub async fn close(self) -> Result<()> {
        let what = "closing the coordinator connections";
        let target = self.target.clone();
        tokio::time::timeout(self.timeout, self.pool.disconnect())
            .await
            .map_err(|_| Error::Timeout {
                what: what.into(),
                target: target.clone(),
                after_ms: self.timeout.as_millis() as u64,
            })?
            .map_err(|source| Error::Db { what: what.into(), target, source })
    }

    async fn conn(&self) -> Result<Conn> {
        self.pool.get_conn().await.map_err(self.db("connecting"))
    }

    fn db(&self, what: &str) -> impl Fn(mysql_async::Error) -> Error + '_ {
        let what = what.to_string();
        move |source| Error::Db { what: what.clone(), target: self.target.clone(), source }
    }

    async fn bounded<T>(&self, what: &str, limit: Duration, call: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(Error::Timeout { what: what.into(), target: self.target.clone(), after_ms: limit.as_millis() as u64 })
        })
    }
}

fn check_name(me: &str) -> Result<()> {
    if me.is_empty() || me.len() > MAX_HOLDER {
        return Err(Error::Config(format!(
            "the agent's decider name `{me}` must be 1..={MAX_HOLDER} bytes (it names this agent in the decider row)"
        )));
    }
    Ok(())
}

/// `user@host:port/database` (or `user@socket/database`).
fn describe(opts: &Opts) -> String {
    let user = opts.user().map(|u| format!("{u}@")).unwrap_or_default();
    let place = match opts.socket() {
        Some(s) => s.to_string(),
        None => format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()),
    };
    format!("{user}{place}/{}", opts.db_name().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_without_connecting() {
        let cfg =
            CoordinatorConfig { database: Some("mysql://u:hunter2@db.local:3306/samp".into()), ..Default::default() };
        if std::env::var_os(crate::leases::DATABASE_ENV).is_none() {
            let c = Coordinator::new(&cfg).unwrap();
            assert_eq!(c.target(), "u@db.local:3306/samp");
            let bad = CoordinatorConfig { database: Some("postgres://u:hunter2@h/d".into()), ..Default::default() };
            let e = Coordinator::new(&bad).err().unwrap().to_string();
            assert!(e.contains("coordinator.database") && !e.contains("hunter2"), "{e}");
        }
        assert!(check_name("").is_err() && check_name(&"x".repeat(256)).is_err() && check_name("node-a").is_ok());
    }
}
