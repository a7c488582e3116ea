//! The decider without Kubernetes (`proxy_agent::decide`) against a real
//! MariaDB: a private server per test, the agent's own statements. Races
//! for the row, renewal, takeover after a silent leader (its time printed),
//! fencing of a stale leader, the log's order under concurrent appends, a
//! frozen and a stopped database (bounded errors, the 2/3 rule), garbled
//! rows, and the append → follower pickup latency (printed).
//! Needs Debian's mariadb-server (scripts/setup.sh).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use proxy_agent::decide::{Coordinator, CoordinatorConfig, Decision, Error, Round, Status};
use tests::mariadb::MariaDb;

fn config(db: &MariaDb, lease_ms: u64, poll_ms: u64, timeout_ms: u64) -> CoordinatorConfig {
    assert!(
        std::env::var_os(proxy_agent::leases::DATABASE_ENV).is_none(),
        "unset SAMP_PROXY_DATABASE_URL for these tests: it would win over each test's own server"
    );
    CoordinatorConfig { database: Some(db.url()), database_file: None, lease_ms, poll_ms, timeout_ms }
}

/// A private server with the coordinator's tables, created by the agent.
async fn setup(lease_ms: u64) -> (MariaDb, Coordinator) {
    let db = MariaDb::start().expect("start a private MariaDB");
    let c = Coordinator::new(&config(&db, lease_ms, 100, 1000)).expect("coordinator");
    c.migrate().await.expect("migrate");
    c.migrate().await.expect("migrate is idempotent");
    (db, c)
}

fn drain(shard: &str, n: u32) -> Decision {
    Decision::Drain { shard: format!("{shard}-{n}"), drained: n.is_multiple_of(2) }
}

fn rows(db: &MariaDb) -> u64 {
    db.root_sql_db("SELECT COUNT(*) FROM samp_proxy_decisions").unwrap().trim().parse().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_exactly_one_leads_and_keeps_it() {
    let (_db, c) = setup(1500).await;
    let names: Vec<String> = (0..8).map(|i| format!("node-{i}")).collect();
    let rounds = futures::future::join_all(names.iter().map(|n| c.round(n))).await;
    let leaders: Vec<(&String, u64)> = names
        .iter()
        .zip(&rounds)
        .filter_map(|(n, r)| match r.as_ref().unwrap() {
            Round::Leading { term } => Some((n, *term)),
            Round::Following { .. } => None,
        })
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one of 8 racing nodes leads: {rounds:?}");
    let (leader, term) = (leaders[0].0.clone(), leaders[0].1);
    assert_eq!(term, 1, "the first holder gets term 1");
    for r in &rounds {
        if let Ok(Round::Following { holder, term }) = r {
            assert_eq!((holder, *term), (&leader, 1), "followers name the leader");
        }
    }
    // The leader renews every third of the lease for three leases; a
    // follower that looks all the while never leads; the term stays.
    let other = names.iter().find(|n| **n != leader).unwrap();
    let until = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < until {
        assert_eq!(c.round(&leader).await.unwrap(), Round::Leading { term: 1 });
        for _ in 0..3 {
            assert_eq!(c.round(other).await.unwrap(), Round::Following { holder: leader.clone(), term: 1 });
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

/// The leader renews every third of the lease and then falls silent (as
/// if killed); the other node runs the real loop (`decide::spawn`). The
/// time from the silent leader's last renewal to the new leader's first
/// Leading round is printed. The old leader's appends are fenced after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_replaced_after_the_lease_and_fenced() {
    let lease_ms = 2000;
    let (db, c) = setup(lease_ms).await;
    assert_eq!(c.round("a").await.unwrap(), Round::Leading { term: 1 });
    let seq = c.append(1, "a", &drain("s", 1)).await.unwrap();

    let took: Arc<Mutex<Option<(Instant, Status)>>> = Arc::default();
    let seen = took.clone();
    let b = proxy_agent::decide::spawn(
        c.clone(),
        "b".into(),
        0,
        move |s: Status| {
            if s.deciding.is_some() {
                seen.lock().unwrap().get_or_insert((Instant::now(), s));
            }
        },
        |_| {},
    );
    let mut last_renewal = Instant::now();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(lease_ms / 3)).await;
        let sent = Instant::now();
        assert_eq!(c.round("a").await.unwrap(), Round::Leading { term: 1 }, "a keeps it while it renews");
        last_renewal = sent;
        assert!(took.lock().unwrap().is_none(), "b must not lead while a renews");
    }
    // Silent from here. b takes over after about a lease.
    let deadline = last_renewal + Duration::from_millis(lease_ms * 2);
    let (at, status) = loop {
        if let Some(t) = took.lock().unwrap().clone() {
            break t;
        }
        assert!(Instant::now() < deadline, "b did not take over within two leases");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let takeover = at - last_renewal;
    println!(
        "takeover: {} ms from the silent leader's last renewal to the new leader's first Leading round \
         (lease_ms {lease_ms}, followers look every lease/10)",
        takeover.as_millis()
    );
    assert_eq!(status.round, Some(Round::Leading { term: 2 }), "a new holder gets a new term");
    assert!(takeover >= Duration::from_millis(lease_ms - 50), "taken before the lease ran out: {takeover:?}");
    assert_eq!(b.deciding(), Some(2));

    // The stale leader is refused, and nothing is written.
    let before = rows(&db);
    match c.append(1, "a", &drain("s", 2)).await {
        Err(Error::Fenced { holder, term: 2, live: true }) if holder == "b" => {}
        other => panic!("a stale leader's append: {other:?}"),
    }
    // Nor may anyone borrow b's term without being b.
    assert!(matches!(c.append(2, "a", &drain("s", 3)).await, Err(Error::Fenced { .. })));
    assert_eq!(rows(&db), before, "a refused append writes nothing");
    assert_eq!(c.round("a").await.unwrap(), Round::Following { holder: "b".into(), term: 2 });
    let by_b = b.decide(&drain("s", 4)).await.unwrap();
    assert!(by_b > seq);
    let log: Vec<u64> = c.since(0, 100).await.unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(log, vec![seq, by_b]);
    b.stop();
}

/// A leader whose lease ran out with nobody taking over is fenced too
/// (live: false), and taking it back gives it a new term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_leader_is_fenced_and_takes_back_a_new_term() {
    let (db, c) = setup(400).await;
    assert_eq!(c.round("a").await.unwrap(), Round::Leading { term: 1 });
    tokio::time::sleep(Duration::from_millis(500)).await;
    match c.append(1, "a", &drain("s", 1)).await {
        Err(Error::Fenced { holder, term: 1, live: false }) if holder == "a" => {}
        other => panic!("an expired leader's append: {other:?}"),
    }
    assert_eq!(rows(&db), 0);
    assert_eq!(c.round("a").await.unwrap(), Round::Leading { term: 2 });
    assert!(c.append(2, "a", &drain("s", 1)).await.is_ok());
}

/// Appends by the real leader at once: every one lands, each with its own
/// seq, and the log reads back in seq order, in pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_all_land_in_seq_order() {
    let (_db, c) = setup(5000).await;
    let Round::Leading { term } = c.round("a").await.unwrap() else { panic!("a leads") };
    let (dx, dy) = (drain("x", 0), drain("y", 0));
    let (x, y) = tokio::join!(c.append(term, "a", &dx), c.append(term, "a", &dy));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_ne!(x, y);
    // Forty at once, each on a task (and a connection) of its own.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.append(term, "a", &drain("m", i)).await })
        })
        .collect();
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.extend([x, y]);
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 42, "every append has its own seq");
    assert_eq!(c.head().await.unwrap(), *seqs.last().unwrap());

    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = c.since(after, 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().unwrap().0;
        read.extend(page);
    }
    let read_seqs: Vec<u64> = read.iter().map(|(s, _)| *s).collect();
    assert_eq!(read_seqs, seqs, "since() pages through the log in seq order");
    let got: HashMap<u64, Decision> = read.into_iter().collect();
    assert_eq!(got[&x], drain("x", 0));
    assert_eq!(got[&y], drain("y", 0));
    assert!(c.since(*seqs.last().unwrap(), 10).await.unwrap().is_empty());
}

/// Rows written by hand (or by a newer agent): the log stops there with
/// an error naming the seq, after returning the good rows before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_rows_are_errors_naming_their_seq() {
    let (db, c) = setup(5000).await;
    let Round::Leading { term } = c.round("a").await.unwrap() else { panic!("a leads") };
    let good = c.append(term, "a", &drain("g", 1)).await.unwrap();
    let hostile = ["{\"Nuke\":{\"all\":true}}", "not json at all", "{\"MoveShard\":{\"from\":7}}", ""];
    let mut bad = Vec::new();
    for body in hostile {
        db.root_sql_db(&format!(
            "INSERT INTO samp_proxy_decisions (term, made_by, made_at, body) VALUES (9, 'mallory', UTC_TIMESTAMP(6), '{body}')"
        ))
        .unwrap();
        bad.push(c.head().await.unwrap());
    }
    db.root_sql_db(
        "INSERT INTO samp_proxy_decisions (term, made_by, made_at, body) \
         VALUES (9, 'mallory', UTC_TIMESTAMP(6), REPEAT('x', 1000000))",
    )
    .unwrap();
    bad.push(c.head().await.unwrap());

    let page = c.since(0, 100).await.unwrap();
    assert_eq!(page, vec![(good, drain("g", 1))], "the good row before the first bad one is returned");
    for seq in bad {
        match c.since(seq - 1, 100).await {
            Err(e @ Error::Garbled { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&format!("decision seq {seq} ")), "{text}");
            }
            other => panic!("seq {seq}: {other:?}"),
        }
    }
}

/// The database frozen (SIGSTOP) and then stopped: every call fails with a
/// clear error within its bound, never hangs, and the running loop says
/// "not deciding" two thirds of a lease after its last renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_or_stopped_database_fails_within_bounds() {
    let lease_ms = 1500;
    let (mut db, _) = setup(lease_ms).await;
    let c = Coordinator::new(&config(&db, lease_ms, 100, 400)).unwrap();
    let lost: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = lost.clone();
    let h = proxy_agent::decide::spawn(
        c.clone(),
        "a".into(),
        0,
        move |s: Status| {
            if s.deciding.is_none() && s.error.is_some() {
                seen.lock().unwrap().get_or_insert(Instant::now());
            }
        },
        |_| {},
    );
    let until = Instant::now() + Duration::from_secs(5);
    while h.deciding().is_none() {
        assert!(Instant::now() < until, "a never led");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let term = h.deciding().unwrap();
    db.freeze(true);
    let frozen = Instant::now();
    // Watch the loop's own clock while the calls below run.
    let watch = {
        let h = h.clone();
        tokio::spawn(async move {
            while h.deciding().is_some() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            frozen.elapsed()
        })
    };

    let t = Instant::now();
    let r = c.round("a").await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    println!("frozen database: round failed after {} ms: {}", t.elapsed().as_millis(), r.unwrap_err());
    assert!(t.elapsed() < Duration::from_millis(lease_ms / 3 + 300), "a round is bounded by a third of the lease");
    let t = Instant::now();
    let r = c.append(term, "a", &drain("f", 1)).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(t.elapsed() < Duration::from_millis(700), "an append is bounded by timeout_ms: {:?}", t.elapsed());
    let t = Instant::now();
    assert!(matches!(c.since(0, 10).await, Err(Error::Timeout { .. })));
    assert!(matches!(c.head().await, Err(Error::Timeout { .. })));
    assert!(t.elapsed() < Duration::from_millis(1400));

    // The loop's own clock: not deciding within 2/3 of the lease of the
    // freeze (its last renewal was sent before it), and reported then.
    let stopped_deciding = watch.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reported = lost.lock().unwrap().expect("the loop reported losing the right") - frozen;
    println!(
        "frozen database: not deciding {} ms after the freeze, reported after {} ms (lease_ms {lease_ms}: \
         at most {} ms after the last renewal, which was sent before the freeze)",
        stopped_deciding.as_millis(),
        reported.as_millis(),
        lease_ms * 2 / 3
    );
    assert!(stopped_deciding <= Duration::from_millis(lease_ms * 2 / 3 + 20), "{stopped_deciding:?}");
    assert!(reported <= Duration::from_millis(lease_ms * 2 / 3 + 50), "{reported:?}");
    assert!(matches!(h.decide(&drain("f", 2)).await, Err(Error::Fenced { .. })), "refused without asking");

    // Thawed: the loop leads again (a new term: the row expired meanwhile).
    db.freeze(false);
    let until = Instant::now() + Duration::from_secs(10);
    while h.deciding().is_none() {
        assert!(Instant::now() < until, "a did not lead again after the thaw");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.deciding().unwrap() > term);
    assert_eq!(rows(&db), 0, "the timed-out append was refused when it finally ran (its lease had expired)");

    // Stopped: the connection is refused at once; a clear error, fast.
    db.stop();
    let t = Instant::now();
    let r = c.round("a").await;
    let text = format!("{}", r.as_ref().unwrap_err());
    assert!(matches!(r, Err(Error::Db { .. }) | Err(Error::Timeout { .. })), "{r:?}");
    assert!(text.contains(&format!("127.0.0.1:{}", db.port)), "the error names the database: {text}");
    assert!(!text.contains(db.password()), "{text}");
    println!("stopped database: round failed after {} ms: {text}", t.elapsed().as_millis());
    assert!(t.elapsed() < Duration::from_millis(lease_ms / 3 + 300));
    assert!(c.append(term, "a", &drain("f", 3)).await.is_err());
    h.stop();
}

/// 200 appends by the leader, one at a time, started at points spread over
/// the poll period, each picked up by a
/// follower running the real loop (`poll_ms` 100, the default): the append
/// alone and append → pickup, p50 and p99, printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_to_pickup_latency() {
    let (db, c) = setup(2000).await;
    let follower = Coordinator::new(&config(&db, 2000, 100, 1000)).unwrap();
    let Round::Leading { term } = c.round("a").await.unwrap() else { panic!("a leads") };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let h = proxy_agent::decide::spawn(
        follower,
        "b".into(),
        c.head().await.unwrap(),
        |_| {},
        move |batch| {
            let now = Instant::now();
            for (seq, _) in batch.expect("the log reads") {
                let _ = tx.send((seq, now));
            }
        },
    );
    let (mut appends, mut pickups) = (Vec::new(), Vec::new());
    let mut renewed = Instant::now();
    for i in 0..200 {
        // Renew as the loop would: every third of the lease.
        if renewed.elapsed() > Duration::from_millis(600) {
            assert_eq!(c.round("a").await.unwrap(), Round::Leading { term });
            renewed = Instant::now();
        }
        // Start each append at a different point of the follower's poll
        // period (spread evenly over 0..100 ms): in lockstep every append
        // would land just after a poll and wait a whole period.
        tokio::time::sleep(Duration::from_millis(u64::from(i * 37 % 100))).await;
        let t = Instant::now();
        let seq = c.append(term, "a", &drain("p", i)).await.unwrap();
        appends.push(t.elapsed());
        let (got, at) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(got, seq, "the follower picks up the decisions in order");
        pickups.push(at - t);
    }
    h.stop();
    println!(
        "append: p50 {:.2} ms, p99 {:.2} ms; append -> follower pickup (poll_ms 100): p50 {:.1} ms, p99 {:.1} ms, over {} appends",
        median(appends.clone()).as_secs_f64() * 1e3,
        pct(appends, 0.99).as_secs_f64() * 1e3,
        median(pickups.clone()).as_secs_f64() * 1e3,
        pct(pickups.clone(), 0.99).as_secs_f64() * 1e3,
        pickups.len()
    );
    assert!(median(pickups) < Duration::from_millis(150), "a follower looks every poll_ms");
}

/// The agent's own `migrate` and `proxy-agent db migrate` (version 2) are
/// the same statements: either order works, and the row survives both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_tables_and_db_migrate_agree() {
    let (db, c) = setup(2000).await;
    assert_eq!(c.round("a").await.unwrap(), Round::Leading { term: 1 });
    let leases = proxy_agent::leases::LeaseConfig { database: Some(db.url()), ..Default::default() };
    let store = proxy_agent::leases::LeaseStore::connect(&leases).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), vec![1, 2]);
    assert_eq!(c.round("a").await.unwrap(), Round::Leading { term: 1 }, "db migrate keeps the decider row");
    c.migrate().await.unwrap();
    assert_eq!(c.round("a").await.unwrap(), Round::Leading { term: 1 });
    // The row deleted by hand: the next round puts it back and takes it.
    db.root_sql_db("DELETE FROM samp_proxy_decider").unwrap();
    assert_eq!(c.round("b").await.unwrap(), Round::Leading { term: 1 });
    store.close().await.unwrap();
}
