//! Account leases against a real MariaDB: a private server per test (own
//! data folder, loopback port, a user with a password), the schema applied
//! by the agent's own runner, the procedures called as a gamemode calls
//! them. Needs Debian's mariadb-server (scripts/setup.sh).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant},
};

use mysql_async::{prelude::Queryable, Conn, Row, TxOpts};
use proxy_agent::leases::{Acquire, LeaseConfig, LeaseStore, Release};
use tests::mariadb::MariaDb;

fn config(db: &MariaDb, lease_seconds: u32) -> LeaseConfig {
    assert!(
        std::env::var_os(proxy_agent::leases::DATABASE_ENV).is_none(),
        "unset SAMP_PROXY_DATABASE_URL for these tests: it would win over each test's own server"
    );
    LeaseConfig { database: Some(db.url()), lease_seconds, connect_timeout_ms: 5000 }
}

/// A private server with the schema applied.
async fn setup(lease_seconds: u32) -> (MariaDb, LeaseStore) {
    let db = MariaDb::start().expect("start a private MariaDB");
    let store = LeaseStore::connect(&config(&db, lease_seconds)).await.expect("connect");
    assert_eq!(store.migrate().await.expect("migrate"), vec![1, 2], "a new database gets versions 1 and 2");
    (db, store)
}

fn client(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8), 7000 + (i % 1000) as u16)
}

/// `CALL samp_lease_acquire` on a connection of the caller's, reading the
/// row by column names as the MySQL plugin's cache functions do.
async fn call_acquire(conn: &mut Conn, account: &str, shard: &str, client: &str) -> (String, u64, String, i64) {
    let row: Row = conn
        .exec_first("CALL samp_lease_acquire(?, ?, ?)", (account, shard, client))
        .await
        .expect("CALL samp_lease_acquire")
        .expect("one row");
    (
        row.get("status").unwrap(),
        row.get("token").unwrap(),
        row.get("holder").unwrap(),
        row.get("expires_in_ms").unwrap(),
    )
}

async fn ok_token(store: &LeaseStore, account: &str, shard: &str, c: SocketAddrV4) -> u64 {
    match store.acquire(account, shard, c).await.unwrap() {
        Acquire::Ok { token, .. } => token,
        other => panic!("{shard} acquiring {account}: {other:?}"),
    }
}

/// `CALL samp_lease_fence` inside a transaction: Ok, or the server's error.
async fn fence_in_tx(store: &LeaseStore, account: &str, token: u64) -> Result<(), mysql_async::ServerError> {
    let mut conn = store.pool().get_conn().await.unwrap();
    let mut tx = conn.start_transaction(TxOpts::default()).await.unwrap();
    let r = tx.exec_drop("CALL samp_lease_fence(?, ?)", (account, token)).await;
    tx.rollback().await.unwrap();
    match r {
        Ok(()) => Ok(()),
        Err(mysql_async::Error::Server(e)) => Err(e),
        Err(e) => panic!("fence: {e}"),
    }
}

fn assert_stale_fence(r: Result<(), mysql_async::ServerError>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!((e.state.as_str(), e.message.as_str()), ("45000", "stale fencing token"), "{what}: {e:?}");
}

async fn global_status(store: &LeaseStore, name: &str) -> u64 {
    let mut conn = store.pool().get_conn().await.unwrap();
    let row: Option<(String, u64)> =
        conn.exec_first("SHOW GLOBAL STATUS WHERE Variable_name = ?", (name,)).await.unwrap();
    row.map_or(0, |(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_writes_the_lease_time() {
    let (db, store) = setup(7).await;
    assert_eq!(store.migrate().await.unwrap(), Vec::<u32>::new(), "a second run applies nothing");
    assert_eq!(store.schema_version().await.unwrap(), 2);
    let routines = db
        .root_sql_db(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME LIKE 'samp\\_lease\\_%'",
        )
        .unwrap();
    assert_eq!(routines.trim(), "9", "acquire, renew, release, holds, fence, list, move_shard, move_clients, seconds");
    assert_eq!(db.root_sql_db("SELECT lease_seconds FROM samp_lease_settings").unwrap().trim(), "7");

    // The same file through the `mariadb` client (DELIMITER and all) is
    // idempotent too and leaves one version row and the lease time.
    let sql =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy-agent/sql/0001_leases.sql")).unwrap();
    db.root_sql_db(&sql).unwrap();
    assert_eq!(db.root_sql_db("SELECT COUNT(*), MAX(version) FROM samp_schema_version").unwrap().trim(), "2\t2");
    assert_eq!(db.root_sql_db("SELECT lease_seconds FROM samp_lease_settings").unwrap().trim(), "7");

    // A new lease time is written by the next run, which applies nothing.
    let again = LeaseStore::connect(&config(&db, 12)).await.unwrap();
    assert!(again.migrate().await.unwrap().is_empty());
    assert_eq!(db.root_sql_db("SELECT lease_seconds FROM samp_lease_settings").unwrap().trim(), "12");
    let lease = store.acquire("alice", "s1", client(1)).await.unwrap();
    assert!(matches!(lease, Acquire::Ok { expires_in_ms: 11_000..=12_000, .. }), "{lease:?}");

    // Two runners at once: both succeed, the schema is applied once.
    let fresh = MariaDb::start().unwrap();
    let (a, b) = (
        LeaseStore::connect(&config(&fresh, 30)).await.unwrap(),
        LeaseStore::connect(&config(&fresh, 30)).await.unwrap(),
    );
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let mut both = [ra.unwrap(), rb.unwrap()];
    both.sort();
    assert_eq!(both, [vec![], vec![1, 2]], "one runner applies, the other finds it applied");
    for s in [store, again, a, b] {
        s.close().await.unwrap();
    }
}

/// The CLI: `proxy-agent db migrate --config FILE`, the URL from the
/// environment winning over the file's, and a clear failure when the
/// database is unreachable (no password in the message).
#[test]
fn db_migrate_command() {
    let db = MariaDb::start().unwrap();
    let bin = tests::agent::agent_bin();
    assert!(bin.is_file(), "{} missing: cargo build --release -p proxy-agent", bin.display());
    let dir = db.dir.join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = |database: &str| {
        format!(
            "interfaces: [eth0]\nfrontends: [{{name: play, address: \"198.18.100.1:7777\"}}]\n\
             shards: [{{name: s1, address: 198.18.11.2, capacity: 100}}]\n\
             leases:\n  database: \"{database}\"\n  lease_seconds: 9\n  connect_timeout_ms: 2000\n"
        )
    };
    let good = dir.join("good.yaml");
    std::fs::write(&good, yaml(&db.url())).unwrap();
    let run = |cfg: &std::path::Path, env: Option<String>| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["db", "migrate", "--config"]).arg(cfg).env_remove("SAMP_PROXY_DATABASE_URL");
        if let Some(url) = env {
            cmd.env("SAMP_PROXY_DATABASE_URL", url);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&good, None);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "schema at version 2; applied: 1, 2; lease_seconds 9");
    let (ok, out, err) = run(&good, None);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "already at version 2; lease_seconds 9");

    // Unreachable: a port nobody listens on. Non-zero exit, names the host
    // and database and the fix, never the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bad_url = format!("mysql://samp:{}@127.0.0.1:{closed}/samp", db.password());
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, yaml(&bad_url)).unwrap();
    let (ok, out, err) = run(&bad, None);
    assert!(!ok, "unreachable database must fail: {out}");
    assert!(err.contains(&format!("samp@127.0.0.1:{closed}/samp")), "{err}");
    assert!(err.contains("leases.database") && err.contains("SAMP_PROXY_DATABASE_URL"), "{err}");
    assert!(!err.contains(db.password()), "the password leaked: {err}");

    // The environment wins over the file: the same bad file works with it.
    let (ok, out, err) = run(&bad, Some(db.url()));
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "already at version 2; lease_seconds 9");
    // A wrong password: refused by the server, and not echoed.
    let (ok, _, err) = run(&good, Some(db.url_for("samp", "wrong-password")));
    assert!(!ok && err.contains("Access denied") && !err.contains("wrong-password"), "{err}");

    // `check` shows the block without the password.
    let out = std::process::Command::new(&bin).args(["check", "--config"]).arg(&good).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("leases mysql://samp:***@127.0.0.1"), "{text}");
    assert!(!text.contains(db.password()));
}

/// A server that takes the connection but never greets (a hung host):
/// `connect` gives up after `connect_timeout_ms` and says where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gives_up_after_the_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let cfg = LeaseConfig {
        database: Some(format!("mysql://samp:hunter2@127.0.0.1:{port}/samp?prefer_socket=false")),
        lease_seconds: 30,
        connect_timeout_ms: 300,
    };
    let started = Instant::now();
    let e = LeaseStore::connect(&cfg).await.err().expect("no greeting, no store").to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout");
    assert!(e.contains(&format!("samp@127.0.0.1:{port}/samp did not answer within 300 ms")), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    drop(silent);
}

/// Racers with connections of their own, released together by a barrier;
/// every round exactly one wins and the others are told who holds it.
async fn race(store: &LeaseStore, racers: usize, rounds: usize) {
    let mut conns = Vec::new();
    for _ in 0..racers {
        conns.push(Some(store.pool().get_conn().await.unwrap()));
    }
    let mut control = store.pool().get_conn().await.unwrap();
    for round in 0..rounds {
        let account = format!("race{racers}-{round}");
        // Three starting points: no row, an expired lease of another shard,
        // a row just released (deleted).
        match round % 3 {
            0 => {}
            1 => control
                .exec_drop(
                    "INSERT INTO samp_leases (account, shard, client, token, expires_at) \
                     VALUES (?, 'gone', '192.0.2.1:1', 0, NOW(3) - INTERVAL 1 SECOND)",
                    (&account,),
                )
                .await
                .unwrap(),
            _ => {
                let (status, token, ..) = call_acquire(&mut control, &account, "gone", "192.0.2.1:1").await;
                assert_eq!(status, "ok");
                let r: Row =
                    control.exec_first("CALL samp_lease_release(?, ?)", (&account, token)).await.unwrap().unwrap();
                assert_eq!(r.get::<String, _>("status").unwrap(), "released");
            }
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(racers));
        let mut tasks = Vec::new();
        for (i, slot) in conns.iter_mut().enumerate() {
            let mut conn = slot.take().unwrap();
            let (barrier, account) = (barrier.clone(), account.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let got = call_acquire(&mut conn, &account, &format!("s{i}"), &client(i as u32).to_string()).await;
                (conn, got)
            }));
        }
        let mut winners = Vec::new();
        let mut answers = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let (conn, got) = t.await.unwrap();
            conns[i] = Some(conn);
            if got.0 == "ok" {
                winners.push(format!("s{i}"));
            }
            answers.push(got);
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner: {answers:?}");
        for (status, token, holder, ms) in &answers {
            assert_eq!(holder, &winners[0], "round {round}: everyone is told the winner: {answers:?}");
            assert!(*ms > 0);
            if status == "held" {
                assert_eq!(*token, 0, "a refused racer learns no token");
            }
        }
        let holder: Option<String> =
            control.exec_first("SELECT shard FROM samp_leases WHERE account = ?", (&account,)).await.unwrap();
        assert_eq!(holder.as_deref(), Some(winners[0].as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_race_for_one_account() {
    let (_db, store) = setup(30).await;
    race(&store, 2, 150).await;
    let (deadlocks, waits) =
        (global_status(&store, "Innodb_deadlocks").await, global_status(&store, "Innodb_row_lock_waits").await);
    eprintln!("2 racers x 150 rounds: {waits} row lock waits, {deadlocks} deadlocks");
    assert_eq!(deadlocks, 0, "racing acquires never deadlock");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_shards_race_for_one_account() {
    let (_db, store) = setup(30).await;
    race(&store, 8, 90).await;
    let (deadlocks, waits) =
        (global_status(&store, "Innodb_deadlocks").await, global_status(&store, "Innodb_row_lock_waits").await);
    eprintln!("8 racers x 90 rounds: {waits} row lock waits, {deadlocks} deadlocks");
    assert!(waits > 0, "the racers really met on the row");
    assert_eq!(deadlocks, 0, "racing acquires never deadlock");
    store.close().await.unwrap();
}

/// Eight shards log one account in and out as fast as they can: whoever
/// gets 'ok' holds it alone until it releases (mutual exclusion), and no
/// call fails (no deadlock reaches a caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_shards_churn_one_account() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_db, store) = setup(30).await;
    let inside = Arc::new(AtomicUsize::new(0));
    let wins = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let mut conn = store.pool().get_conn().await.unwrap();
        let (inside, wins) = (inside.clone(), wins.clone());
        tasks.push(tokio::spawn(async move {
            let shard = format!("s{i}");
            for _ in 0..150 {
                let (status, token, holder, _) = call_acquire(&mut conn, "churn", &shard, &client(i).to_string()).await;
                if status == "ok" {
                    // Held from 'ok' to the release: nobody else may win
                    // meanwhile, across a round trip that lets them try.
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                    wins.fetch_add(1, Ordering::SeqCst);
                    let holds: Option<u8> =
                        conn.exec_first("SELECT samp_lease_holds(?, ?)", ("churn", token)).await.unwrap();
                    assert_eq!(holds, Some(1));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    let r: Row =
                        conn.exec_first("CALL samp_lease_release(?, ?)", ("churn", token)).await.unwrap().unwrap();
                    assert_eq!(r.get::<String, _>("status").unwrap(), "released");
                } else {
                    assert_ne!(holder, shard);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (deadlocks, waits) =
        (global_status(&store, "Innodb_deadlocks").await, global_status(&store, "Innodb_row_lock_waits").await);
    eprintln!(
        "8 shards x 150 acquire/release: {} logins, {waits} row lock waits, {deadlocks} deadlocks",
        wins.load(Ordering::SeqCst)
    );
    assert!(wins.load(Ordering::SeqCst) > 0);
    store.close().await.unwrap();
}

/// Outside a transaction acquire runs in one of its own and tries again
/// after a lock conflict (deadlock or lock wait timeout) instead of failing
/// the login; inside the caller's transaction the error is the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_retries_a_lock_conflict_in_its_own_transaction() {
    let (_db, store) = setup(30).await;
    ok_token(&store, "fay", "s1", client(1)).await;
    let mut blocker = store.pool().get_conn().await.unwrap();
    let mut tx = blocker.start_transaction(TxOpts::default()).await.unwrap();
    tx.exec_drop("SELECT * FROM samp_leases WHERE account = 'fay' FOR UPDATE", ()).await.unwrap();

    let mut waiter = store.pool().get_conn().await.unwrap();
    waiter.query_drop("SET SESSION innodb_lock_wait_timeout = 1").await.unwrap();
    let started = Instant::now();
    let call = tokio::spawn(async move {
        let got = call_acquire(&mut waiter, "fay", "s1", "198.51.100.1:7001").await;
        (waiter, got)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tx.commit().await.unwrap();
    let (mut waiter, (status, ..)) = call.await.unwrap();
    assert_eq!(status, "ok", "taken after a lock wait timeout and a retry");
    assert!(started.elapsed() >= Duration::from_secs(1), "it did wait out one timeout");

    // In the caller's transaction the timeout is the caller's to handle.
    let mut tx = blocker.start_transaction(TxOpts::default()).await.unwrap();
    tx.exec_drop("SELECT * FROM samp_leases WHERE account = 'fay' FOR UPDATE", ()).await.unwrap();
    let mut wtx = waiter.start_transaction(TxOpts::default()).await.unwrap();
    let r = wtx.exec_drop("CALL samp_lease_acquire('fay', 's1', '198.51.100.1:7001')", ()).await;
    assert!(matches!(r, Err(mysql_async::Error::Server(ref e)) if e.code == 1205), "{r:?}");
    wtx.rollback().await.unwrap();
    tx.rollback().await.unwrap();
    drop((blocker, waiter));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_a_lease_and_their_absence_lets_it_expire() {
    let (_db, store) = setup(1).await;
    let accounts = ["ann", "ben", "cid"];
    let mut tokens = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        tokens.push(ok_token(&store, a, "s1", client(i as u32)).await);
    }
    // Renewed every 250 ms for three lease times: alive throughout, and
    // another shard is refused.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(store.renew("s1").await.unwrap(), 3);
        for (a, t) in accounts.iter().zip(&tokens) {
            assert!(store.holds(a, *t).await.unwrap(), "{a} alive at {:?}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match store.acquire("ann", "s2", client(9)).await.unwrap() {
        Acquire::Held { holder, expires_in_ms } => {
            assert_eq!(holder, "s1");
            assert!(expires_in_ms <= 1000);
        }
        other => panic!("{other:?}"),
    }
    // No renewals: the leases expire after about a lease time.
    let last_renewal = Instant::now();
    assert_eq!(store.renew("s1").await.unwrap(), 3);
    let deadline = last_renewal + Duration::from_secs(5);
    while store.holds("ann", tokens[0]).await.unwrap() {
        assert!(Instant::now() < deadline, "the lease outlived 5 lease times without renewal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lived = last_renewal.elapsed();
    assert!(lived >= Duration::from_millis(900), "expired after {lived:?}, before its lease time");
    eprintln!("an unrenewed 1 s lease expired after {lived:?}");
    assert_eq!(store.live_leases("s1").await.unwrap(), 0);
    // An expired lease is not revived by a late renewal, and another shard
    // takes the account.
    assert_eq!(store.renew("s1").await.unwrap(), 0);
    let t2 = ok_token(&store, "ann", "s2", client(9)).await;
    assert!(t2 > tokens[0]);
    assert_stale_fence(fence_in_tx(&store, "ben", tokens[1]).await, "an expired lease fences nothing");
    assert_eq!(store.release("ann", tokens[0]).await.unwrap(), Release::Stale { holder: Some("s2".into()) });
    // The shard that lost them acquires again (its players logged in again).
    let t3 = ok_token(&store, "ben", "s1", client(1)).await;
    assert!(t3 > t2);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fencing_token_is_refused() {
    let (_db, store) = setup(30).await;
    let t1 = ok_token(&store, "dora", "s1", client(1)).await;
    // The same shard taking its live lease again gets a new token; the old
    // one is stale from then on.
    let t2 = ok_token(&store, "dora", "s1", client(2)).await;
    assert!(t2 > t1);
    assert!(!store.holds("dora", t1).await.unwrap());
    assert!(store.holds("dora", t2).await.unwrap());
    assert!(!store.holds("nobody", t2).await.unwrap());
    assert_stale_fence(fence_in_tx(&store, "dora", t1).await, "stale token");
    assert_stale_fence(fence_in_tx(&store, "nobody", t2).await, "no lease");
    fence_in_tx(&store, "dora", t2).await.expect("the live token fences");
    assert_eq!(store.release("dora", t1).await.unwrap(), Release::Stale { holder: Some("s1".into()) });
    assert!(store.holds("dora", t2).await.unwrap(), "a stale release leaves the lease");
    assert_eq!(store.release("dora", t2).await.unwrap(), Release::Released);
    assert_eq!(store.release("dora", t2).await.unwrap(), Release::Stale { holder: None });
    assert!(!store.holds("dora", t2).await.unwrap());
    // Names compare as SA:MP compares them: case-insensitively.
    let t3 = ok_token(&store, "Dora", "s1", client(1)).await;
    assert!(matches!(store.acquire("DORA", "s2", client(3)).await.unwrap(), Acquire::Held { .. }));
    assert!(store.holds("dora", t3).await.unwrap());
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_shard_hands_every_live_lease_over_with_new_tokens() {
    let (_db, store) = setup(30).await;
    let mut old = Vec::new();
    for i in 0..50 {
        old.push((format!("p{i}"), ok_token(&store, &format!("p{i}"), "s1", client(i)).await));
    }
    for i in 0..5 {
        ok_token(&store, &format!("q{i}"), "s3", client(100 + i)).await;
    }
    let newest_old = old.iter().map(|(_, t)| *t).max().unwrap();
    assert_eq!(store.move_shard("s1", "s2").await.unwrap(), 50);
    assert_eq!(store.live_leases("s1").await.unwrap(), 0);
    assert_eq!(store.live_leases("s2").await.unwrap(), 50);
    assert_eq!(store.live_leases("s3").await.unwrap(), 5, "other shards' leases stay");
    // New tokens: every one fresh.
    let mut conn = store.pool().get_conn().await.unwrap();
    let tokens: Vec<u64> = conn.query("SELECT token FROM samp_leases WHERE shard = 's2'").await.unwrap();
    assert_eq!(tokens.len(), 50);
    assert!(tokens.iter().all(|t| *t > newest_old), "moved leases carry new tokens");
    // The zombie s1: its tokens are stale everywhere, it renews nothing,
    // and it cannot take the accounts back while s2's leases live.
    for (account, token) in old.iter().take(10) {
        assert!(!store.holds(account, *token).await.unwrap());
        assert_stale_fence(fence_in_tx(&store, account, *token).await, "zombie fence");
        assert_eq!(store.release(account, *token).await.unwrap(), Release::Stale { holder: Some("s2".into()) });
        match store.acquire(account, "s1", client(0)).await.unwrap() {
            Acquire::Held { holder, .. } => assert_eq!(holder, "s2"),
            other => panic!("zombie took {account} back: {other:?}"),
        }
    }
    assert_eq!(store.renew("s1").await.unwrap(), 0);
    // Moved leases hold the accounts for one lease time; they become s2's to
    // renew when its gamemode acquires them at the players' login there.
    assert_eq!(store.renew("s2").await.unwrap(), 0);
    let t = ok_token(&store, "p0", "s2", client(0)).await;
    assert!(store.holds("p0", t).await.unwrap());
    assert_eq!(store.renew("s2").await.unwrap(), 1);
    let listed: Vec<(String, u8)> =
        conn.query("SELECT account, confirmed FROM samp_leases WHERE shard = 's2' AND account IN ('p0', 'p1') ORDER BY account").await.unwrap();
    assert_eq!(listed, [("p0".to_string(), 1), ("p1".to_string(), 0)]);
    // Moving a shard with no leases moves none; a move to itself is refused.
    assert_eq!(store.move_shard("s1", "s2").await.unwrap(), 0);
    assert!(store.move_shard("s2", "s2").await.is_err());
    drop(conn);
    store.close().await.unwrap();
}

/// A gamemode transaction that fenced its lease keeps a move out until it
/// commits: its writes land before the lease moves, never after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_holds_a_move_until_the_writer_commits() {
    let (db, store) = setup(30).await;
    db.root_sql_db("CREATE TABLE players (name VARCHAR(24) PRIMARY KEY, score INT)").unwrap();
    db.root_sql_db("INSERT INTO players VALUES ('eve', 0)").unwrap();
    let token = ok_token(&store, "eve", "s1", client(1)).await;
    let mut conn = store.pool().get_conn().await.unwrap();
    let mut tx = conn.start_transaction(TxOpts::default()).await.unwrap();
    tx.exec_drop("CALL samp_lease_fence(?, ?)", ("eve", token)).await.unwrap();
    let store = Arc::new(store);
    let mover = {
        let store = store.clone();
        tokio::spawn(async move { store.move_shard("s1", "s2").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!mover.is_finished(), "the move waits for the fenced transaction");
    tx.exec_drop("UPDATE players SET score = 10 WHERE name = 'eve'", ()).await.unwrap();
    tx.commit().await.unwrap();
    let moved = tokio::time::timeout(Duration::from_secs(10), mover).await.expect("the move finishes").unwrap();
    assert_eq!(moved.unwrap(), 1);
    // After the move the zombie's write is refused by the guard.
    let mut tx = conn.start_transaction(TxOpts::default()).await.unwrap();
    let r = tx.exec_drop("CALL samp_lease_fence(?, ?)", ("eve", token)).await;
    assert!(matches!(r, Err(mysql_async::Error::Server(ref e)) if e.message == "stale fencing token"), "{r:?}");
    tx.rollback().await.unwrap();
    drop(conn);
    Arc::into_inner(store).unwrap().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_clients_moves_only_the_chosen_clients() {
    let (_db, store) = setup(30).await;
    let a = |port: u16| SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), port);
    let b = |port: u16| SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), port);
    let mut tokens = std::collections::HashMap::new();
    for i in 0..5u16 {
        tokens.insert(format!("a{i}"), ok_token(&store, &format!("a{i}"), "s1", a(1000 + i)).await);
        tokens.insert(format!("b{i}"), ok_token(&store, &format!("b{i}"), "s1", b(2000 + i)).await);
    }
    // The same address on another shard is not s1's to move.
    ok_token(&store, "other", "s3", a(1003)).await;
    assert_eq!(store.move_clients("s1", &[a(1000), a(1002), b(2003), a(4444)], "s2").await.unwrap(), 3);
    let mut conn = store.pool().get_conn().await.unwrap();
    let on_s2: Vec<String> =
        conn.query("SELECT account FROM samp_leases WHERE shard = 's2' ORDER BY account").await.unwrap();
    assert_eq!(on_s2, ["a0", "a2", "b3"]);
    for acct in ["a0", "a2", "b3"] {
        assert!(!store.holds(acct, tokens[acct]).await.unwrap(), "{acct}'s old token is stale");
    }
    for acct in ["a1", "a3", "a4", "b0"] {
        assert!(store.holds(acct, tokens[acct]).await.unwrap(), "{acct} stays");
    }
    assert_eq!(store.move_clients("s1", &[a(1003)], "s2").await.unwrap(), 1, "a3 only, not s3's client on that port");
    assert_eq!(store.live_leases("s3").await.unwrap(), 1);
    // Every port of an address.
    assert_eq!(store.move_client_ips("s1", &[Ipv4Addr::new(203, 0, 113, 2)], "s2").await.unwrap(), 4);
    let left: Vec<String> =
        conn.query("SELECT account FROM samp_leases WHERE shard = 's1' ORDER BY account").await.unwrap();
    assert_eq!(left, ["a1", "a4"]);
    assert_eq!(store.move_clients("s1", &[], "s2").await.unwrap(), 0);
    drop(conn);
    store.close().await.unwrap();
}

/// What a gamemode does through its MySQL plugin, as plain text SQL over a
/// user that may only EXECUTE the procedures and use its own table: the
/// token kept as a string (Pawn cells are 32-bit), the lease guarding the
/// gamemode's own UPDATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gamemode_uses_plain_sql() {
    let (db, store) = setup(30).await;
    db.root_sql_db(
        "CREATE TABLE players (name VARCHAR(24) PRIMARY KEY, score INT NOT NULL DEFAULT 0);\n\
         INSERT INTO players (name) VALUES ('Player_1');\n\
         CREATE USER 'gamemode'@'127.0.0.1' IDENTIFIED BY 'gm-secret';\n\
         GRANT EXECUTE ON samp.* TO 'gamemode'@'127.0.0.1';\n\
         GRANT SELECT, UPDATE ON samp.players TO 'gamemode'@'127.0.0.1';\n",
    )
    .unwrap();
    let mut gm = Conn::new(mysql_async::Opts::from_url(&db.url_for("gamemode", "gm-secret")).unwrap()).await.unwrap();

    // mysql_tquery(g_SQL, "CALL samp_lease_acquire('Player_1', 's1', '203.0.113.7:50000')", ...)
    let row: Row = gm
        .query_first("CALL samp_lease_acquire('Player_1', 's1', '203.0.113.7:50000')")
        .await
        .unwrap()
        .expect("one row");
    let columns: Vec<String> = row.columns_ref().iter().map(|c| c.name_str().into_owned()).collect();
    assert_eq!(columns, ["status", "token", "holder", "expires_in_ms"]);
    // cache_get_value_name(0, "status", status); cache_get_value_name(0, "token", token)
    let status: String = row.get("status").unwrap();
    let token: String = row.get("token").unwrap();
    assert_eq!(status, "ok");
    assert_eq!(row.get::<String, _>("holder").unwrap(), "s1");

    // Another shard's login is refused, naming the holder.
    let held: Row =
        gm.query_first("CALL samp_lease_acquire('Player_1', 's2', '203.0.113.8:50001')").await.unwrap().unwrap();
    assert_eq!(
        (held.get::<String, _>("status").unwrap(), held.get::<String, _>("holder").unwrap()),
        ("held".into(), "s1".into())
    );

    // The lease guards the gamemode's own writes.
    gm.query_drop(format!(
        "UPDATE players SET score = 5 WHERE name = 'Player_1' AND samp_lease_holds('Player_1', {token})"
    ))
    .await
    .unwrap();
    assert_eq!(gm.affected_rows(), 1);
    gm.query_drop("UPDATE players SET score = 6 WHERE name = 'Player_1' AND samp_lease_holds('Player_1', 0)")
        .await
        .unwrap();
    assert_eq!(gm.affected_rows(), 0, "a stale token writes nothing");
    gm.query_drop(format!(
        "START TRANSACTION; CALL samp_lease_fence('Player_1', {token}); UPDATE players SET score = 7 WHERE name = 'Player_1'; COMMIT"
    ))
    .await
    .unwrap();
    let renewed: Row = gm.query_first("CALL samp_lease_renew('s1')").await.unwrap().unwrap();
    assert_eq!(renewed.get::<u64, _>("renewed").unwrap(), 1);
    let listed: Vec<Row> = gm.query("CALL samp_lease_list('s1')").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].get::<String, _>("client").unwrap(), "203.0.113.7:50000");

    // The procedures are the only door: no direct writes to the leases.
    let denied = gm.query_drop("UPDATE samp_leases SET shard = 's9'").await;
    assert!(matches!(denied, Err(mysql_async::Error::Server(ref e)) if e.code == 1142), "{denied:?}");

    // OnPlayerDisconnect: give the lease back.
    let released: Row = gm.query_first(format!("CALL samp_lease_release('Player_1', {token})")).await.unwrap().unwrap();
    assert_eq!(released.get::<String, _>("status").unwrap(), "released");
    let score: Option<i32> = gm.query_first("SELECT score FROM players WHERE name = 'Player_1'").await.unwrap();
    assert_eq!(score, Some(7));
    gm.disconnect().await.unwrap();
    store.close().await.unwrap();
}

/// What a lease costs against the local server: one acquire (a login), a
/// renewal of a shard's leases, and moving 500 leases (a failover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_of_acquire_renew_and_move() {
    let (_db, store) = setup(30).await;
    let mut conn = store.pool().get_conn().await.unwrap();
    let mut acquire = Vec::new();
    for i in 0..500u32 {
        let t = Instant::now();
        let (status, ..) = call_acquire(&mut conn, &format!("bench{i}"), "s1", &client(i).to_string()).await;
        acquire.push(t.elapsed());
        assert_eq!(status, "ok");
    }
    let mut renew = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(store.renew("s1").await.unwrap(), 500);
        renew.push(t.elapsed());
    }
    let mut moves = Vec::new();
    for k in 0..6 {
        let (from, to) = if k % 2 == 0 { ("s1", "s2") } else { ("s2", "s1") };
        let t = Instant::now();
        assert_eq!(store.move_shard(from, to).await.unwrap(), 500);
        moves.push(t.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() - 1) * p / 100]
    };
    eprintln!(
        "lease latency (local MariaDB, TCP loopback, one connection): acquire p50 {:?} p99 {:?} max {:?}; \
         renew of 500 leases p50 {:?}; move_shard of 500 leases p50 {:?} max {:?}",
        pct(&mut acquire, 50),
        pct(&mut acquire, 99),
        pct(&mut acquire, 100),
        pct(&mut renew, 50),
        pct(&mut moves, 50),
        pct(&mut moves, 100),
    );
    assert!(pct(&mut moves, 50) < Duration::from_secs(5), "moving 500 leases is one statement");
    drop(conn);
    store.close().await.unwrap();
}
