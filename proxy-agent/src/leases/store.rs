//! The agent's connection to the lease database: applying the schema,
//! moving leases with players, counting them. Also the gamemode's calls
//! (acquire, renew, release, holds), the same procedures a shard calls
//! through its MySQL plugin, for tools and tests.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use mysql_async::{prelude::Queryable, Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};

use super::{check_url, migrate, LeaseConfig, UrlSource};

/// What `samp_lease_acquire` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is the caller's, with this fencing token.
    Ok { token: u64, expires_in_ms: u64 },
    /// Another shard holds a live lease of the account.
    Held { holder: String, expires_in_ms: u64 },
}

/// What `samp_lease_release` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    Released,
    /// The token is not the lease's (it moved, was taken again, or there is
    /// no lease); `holder` holds a live lease of the account now, if any.
    Stale {
        holder: Option<String>,
    },
}

/// A pool of connections to the lease database; clones share the pool.
#[derive(Clone)]
pub struct LeaseStore {
    pool: Pool,
    lease_seconds: u32,
    /// `user@host:port/database`, for messages (never the password).
    target: String,
}

/// Tries a deadlock or lock-wait timeout again: a move locks every lease of
/// a shard and may meet a gamemode's transaction that fenced two of them.
const ATTEMPTS: usize = 3;

impl LeaseStore {
    /// Connects (the URL from `SAMP_PROXY_DATABASE_URL` or
    /// `leases.database`) and checks the server answers within
    /// `connect_timeout_ms`. Errors name the host and database, never the
    /// password.
    pub async fn connect(cfg: &LeaseConfig) -> Result<LeaseStore> {
        let (url, source) = cfg.database_url()?;
        let opts = check_url(&url).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        let target = describe(&opts);
        let opts = OptsBuilder::from_opts(opts).pool_opts(
            PoolOpts::default()
                .with_constraints(PoolConstraints::new(0, 16).expect("0 <= 16"))
                .with_inactive_connection_ttl(Duration::from_secs(60)),
        );
        let pool = Pool::new(Opts::from(opts));
        let timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let fix = match source {
            UrlSource::Env => format!("check {source} and that MariaDB runs there"),
            UrlSource::Config => {
                format!("check `{source}` (or set {}) and that MariaDB runs there", super::DATABASE_ENV)
            }
        };
        let check = async {
            let mut conn = pool.get_conn().await?;
            conn.ping().await?;
            Ok::<_, mysql_async::Error>(())
        };
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(())) => Ok(LeaseStore { pool, lease_seconds: cfg.lease_seconds, target }),
            Ok(Err(e)) => {
                let _ = pool.disconnect().await;
                bail!("cannot connect to the lease database {target}: {e}; fix: {fix}")
            }
            Err(_) => {
                let _ = pool.disconnect().await;
                bail!("the lease database {target} did not answer within {} ms; fix: {fix}", timeout.as_millis())
            }
        }
    }

    /// `user@host:port/database`: what this store talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The connection pool, for callers that need a transaction of their
    /// own (a gamemode-style `samp_lease_fence`).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn conn(&self) -> Result<Conn> {
        self.pool.get_conn().await.with_context(|| format!("connecting to the lease database {}", self.target))
    }

    /// Applies the missing schema versions and writes the configured lease
    /// time. Returns the versions applied now; safe to run again.
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        let mut conn = self.conn().await?;
        migrate::run(&mut conn, self.lease_seconds).await.with_context(|| format!("migrating {}", self.target))
    }

    /// The newest schema version recorded in the database (0: none).
    pub async fn schema_version(&self) -> Result<u32> {
        let mut conn = self.conn().await?;
        Ok(migrate::applied_versions(&mut conn).await?.last().copied().unwrap_or(0))
    }

    /// Hands every live lease of shard `from` to shard `to` with new
    /// fencing tokens, in one transaction; the old tokens are stale from
    /// then on. Returns how many moved.
    pub async fn move_shard(&self, from: &str, to: &str) -> Result<u64> {
        self.retrying(|| self.call_count("CALL samp_lease_move_shard(?, ?)", vec![from.into(), to.into()], "moved"))
            .await
            .with_context(|| format!("moving the leases of shard `{from}` to `{to}`"))
    }

    /// Hands the live leases of these clients (exact `ip:port`) from shard
    /// `from` to shard `to` with new tokens, in one transaction.
    pub async fn move_clients(&self, from: &str, clients: &[SocketAddrV4], to: &str) -> Result<u64> {
        let list: Vec<String> = clients.iter().map(ToString::to_string).collect();
        self.move_list(from, &list, to).await
    }

    /// Hands the live leases of every port of these client addresses from
    /// shard `from` to shard `to` with new tokens, in one transaction.
    pub async fn move_client_ips(&self, from: &str, ips: &[Ipv4Addr], to: &str) -> Result<u64> {
        let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
        self.move_list(from, &list, to).await
    }

    async fn move_list(&self, from: &str, list: &[String], to: &str) -> Result<u64> {
        if list.is_empty() {
            return Ok(0);
        }
        let joined = list.join(",");
        self.retrying(|| {
            self.call_count(
                "CALL samp_lease_move_clients(?, ?, ?)",
                vec![from.into(), joined.as_str().into(), to.into()],
                "moved",
            )
        })
        .await
        .with_context(|| format!("moving the leases of {} client(s) of shard `{from}` to `{to}`", list.len()))
    }

    /// How many live leases shard `shard` holds (moved ones included).
    pub async fn live_leases(&self, shard: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let n: Option<u64> = conn
            .exec_first("SELECT COUNT(*) FROM samp_leases WHERE shard = ? AND expires_at > NOW(3)", (shard,))
            .await
            .with_context(|| format!("counting the leases of shard `{shard}`"))?;
        Ok(n.unwrap_or(0))
    }

    /// `CALL samp_lease_acquire(account, shard, client)`, as a shard's
    /// gamemode calls it at login.
    pub async fn acquire(&self, account: &str, shard: &str, client: SocketAddrV4) -> Result<Acquire> {
        let mut conn = self.conn().await?;
        let row: Row = conn
            .exec_first("CALL samp_lease_acquire(?, ?, ?)", (account, shard, client.to_string()))
            .await
            .with_context(|| format!("acquiring the lease of `{account}` for shard `{shard}`"))?
            .context("samp_lease_acquire returned no row")?;
        let status: String = column(&row, "status")?;
        let expires_in_ms: u64 = column(&row, "expires_in_ms")?;
        match status.as_str() {
            "ok" => Ok(Acquire::Ok { token: column(&row, "token")?, expires_in_ms }),
            "held" => Ok(Acquire::Held { holder: column(&row, "holder")?, expires_in_ms }),
            other => bail!("samp_lease_acquire answered status `{other}`"),
        }
    }

    /// `CALL samp_lease_renew(shard)`: how many leases it renewed.
    pub async fn renew(&self, shard: &str) -> Result<u64> {
        self.call_count("CALL samp_lease_renew(?)", vec![shard.into()], "renewed")
            .await
            .with_context(|| format!("renewing the leases of shard `{shard}`"))
    }

    /// `CALL samp_lease_release(account, token)`.
    pub async fn release(&self, account: &str, token: u64) -> Result<Release> {
        let mut conn = self.conn().await?;
        let row: Row = conn
            .exec_first("CALL samp_lease_release(?, ?)", (account, token))
            .await
            .with_context(|| format!("releasing the lease of `{account}`"))?
            .context("samp_lease_release returned no row")?;
        let status: String = column(&row, "status")?;
        match status.as_str() {
            "released" => Ok(Release::Released),
            "stale" => Ok(Release::Stale { holder: column(&row, "holder")? }),
            other => bail!("samp_lease_release answered status `{other}`"),
        }
    }

    /// `SELECT samp_lease_holds(account, token)`.
    pub async fn holds(&self, account: &str, token: u64) -> Result<bool> {
        let mut conn = self.conn().await?;
        let v: Option<u8> = conn
            .exec_first("SELECT samp_lease_holds(?, ?)", (account, token))
            .await
            .with_context(|| format!("checking the lease of `{account}`"))?;
        Ok(v == Some(1))
    }

    /// Closes every connection.
    pub async fn close(self) -> Result<()> {
        self.pool.disconnect().await.context("closing the lease database connections")
    }

    /// Runs a procedure that answers one row with one count column.
    async fn call_count(&self, sql: &str, params: Vec<mysql_async::Value>, name: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let row: Row = conn.exec_first(sql, params).await?.with_context(|| format!("{sql} returned no row"))?;
        column(&row, name)
    }

    async fn retrying<F, Fut>(&self, mut op: F) -> Result<u64>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<u64>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if attempt < ATTEMPTS && is_lock_conflict(&e) => attempt += 1,
                other => return other,
            }
        }
    }
}

/// A deadlock (1213) or lock wait timeout (1205): the statement was rolled
/// back and may simply run again.
fn is_lock_conflict(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<mysql_async::Error>(),
            Some(mysql_async::Error::Server(s)) if s.code == 1213 || s.code == 1205
        )
    })
}

fn column<T: mysql_async::prelude::FromValue>(row: &Row, name: &str) -> Result<T> {
    match row.get_opt::<T, _>(name) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => bail!("column `{name}`: {e}"),
        None => bail!("no column `{name}` in the answer"),
    }
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
