//! One account, one shard, end to end: real XDP, simulated players and
//! shards, a real MariaDB, and the test playing each shard's gamemode (it
//! calls the shipped procedures for every login, as a gamemode does through
//! its MySQL plugin). Leases follow the players: a failover hands the dead
//! shard's leases to the standby and an area transfer hands the traveller's
//! to its new shard, so every player can log in again at once; the dead
//! shard, back as a zombie, takes nothing back; and with the database frozen
//! during a failover the players still move, the event says the leases will
//! expire, and the agent's retry hands them over once the database answers.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use proxy_agent::{
    leases::{Acquire, LeaseConfig, LeaseStore, Release},
    protocol::Request,
};
use serde_json::Value;
use tests::{
    agent::agent_bin,
    mariadb::MariaDb,
    scenario::{on_shard, wait_for, Scenario},
    sim::{
        player::Players,
        shard::{self, ShardConfig},
    },
};

const PLAYERS: usize = 12;
const SECRET: &str = "lease-test-secret-0123";
const HTTP_PORT: u16 = 9181;
const LEASE_SECONDS: u32 = 20;

fn start(db: &MariaDb) -> Scenario {
    let extra = format!(
        "metrics_listen: 0.0.0.0:{HTTP_PORT}\nshard_secret: {SECRET}\nleases:\n  database: \"{}\"\n  lease_seconds: {LEASE_SECONDS}\n  connect_timeout_ms: 2000\n",
        // The agent runs in the proxy's namespace: the socket reaches it.
        db.socket_url()
    );
    let sc =
        Scenario::start(3, |t| t.config_of(&[(0, 100, "active"), (1, 100, "standby"), (2, 100, "active")], &extra))
            .unwrap();
    // As an operator does once: the schema, by the agent's own command.
    let out = std::process::Command::new(agent_bin())
        .args(["db", "migrate", "--config"])
        .arg(&sc.agent.config_path)
        .env_remove(proxy_agent::leases::DATABASE_ENV)
        .output()
        .unwrap();
    assert!(out.status.success(), "db migrate: {}", String::from_utf8_lossy(&out.stderr));
    sc
}

fn store(sc: &Scenario, db: &MariaDb) -> LeaseStore {
    let cfg = LeaseConfig { database: Some(db.url()), lease_seconds: LEASE_SECONDS, connect_timeout_ms: 5000 };
    sc.rt.block_on(LeaseStore::connect(&cfg)).unwrap()
}

fn account(local: &str) -> String {
    format!("player_{}", local.replace(['.', ':'], "_"))
}

/// Every player logs in on the shard it plays on: the gamemode acquires the
/// account's lease. Returns the tokens.
fn log_in_all(sc: &Scenario, leases: &LeaseStore, players: &Players) -> BTreeMap<String, u64> {
    players
        .snapshot()
        .iter()
        .map(|p| {
            let shard = p.current_shard().unwrap();
            let client: SocketAddrV4 = p.local.parse().unwrap();
            match sc.rt.block_on(leases.acquire(&account(&p.local), shard, client)).unwrap() {
                Acquire::Ok { token, .. } => (p.local.clone(), token),
                Acquire::Held { holder, .. } => panic!("{} could not log in on {shard}: held by {holder}", p.local),
            }
        })
        .collect()
}

fn events(sc: &Scenario) -> Vec<Value> {
    sc.agent.request(&Request::Events).unwrap().as_array().unwrap().clone()
}

fn event_count(sc: &Scenario, kind: &str) -> usize {
    events(sc).iter().filter(|e| e["kind"] == kind).count()
}

fn transfer(sc: &Scenario, shard: usize, client: &str, to: &str) -> (u16, String) {
    let gateway = SocketAddrV4::new(Ipv4Addr::new(198, 18, 11 + shard as u8, 1), HTTP_PORT);
    let body = format!("secret={SECRET}&client={client}&to={to}");
    tests::http::request(&sc.topo.shards[shard], gateway, "POST", "/shard/transfer", &body)
}

/// The shard that holds a live lease of `account`, if any (read as an
/// operator would, with SQL).
fn holder(sc: &Scenario, leases: &LeaseStore, account: &str) -> Option<String> {
    use mysql_async::prelude::Queryable;
    sc.rt.block_on(async {
        let mut conn = leases.pool().get_conn().await.unwrap();
        conn.exec_first("SELECT shard FROM samp_leases WHERE account = ? AND expires_at > NOW(3)", (account,))
            .await
            .unwrap()
    })
}

/// The agent's `/metrics`, read from the proxy's own namespace.
fn metrics(sc: &Scenario) -> String {
    tests::http::request(&sc.topo.proxy, SocketAddrV4::new(Ipv4Addr::LOCALHOST, HTTP_PORT), "GET", "/metrics", "").1
}

#[test]
fn leases_follow_failovers_and_transfers_and_a_zombie_takes_nothing_back() {
    let db = MariaDb::start().unwrap();
    let mut sc = start(&db);
    let leases = store(&sc, &db);
    let players = sc.players(PLAYERS, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    let tokens = log_in_all(&sc, &leases, &players);
    let stats = players.snapshot();
    let on_s3: Vec<String> = on_shard(&stats, "s3").iter().map(|p| p.local.clone()).collect();
    assert!(!on_s3.is_empty() && !on_shard(&stats, "s1").is_empty(), "players on both active shards");

    // s3 sends one of its players to s1 (an area transfer): its lease goes too.
    let traveller = on_s3[0].clone();
    let (status, text) = transfer(&sc, 2, &traveller, "s1");
    assert_eq!((status, text.as_str()), (200, "ok"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder(&sc, &leases, &account(&traveller)).as_deref() != Some("s1") {
        assert!(Instant::now() < deadline, "the traveller's lease is not on s1; events: {:#?}", events(&sc));
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("the traveller on s1", Duration::from_secs(20), || {
        players.snapshot().iter().any(|p| p.local == traveller && p.current_shard() == Some("s1"))
    });
    let client: SocketAddrV4 = traveller.parse().unwrap();
    let again = sc.rt.block_on(leases.acquire(&account(&traveller), "s1", client)).unwrap();
    assert!(matches!(again, Acquire::Ok { .. }), "the traveller logs in on s1 at once: {again:?}");

    // s1 dies: every one of its players lands on the standby s2 together,
    // and each can log in there at once.
    let on_s1: Vec<String> = on_shard(&players.snapshot(), "s1").iter().map(|p| p.local.clone()).collect();
    let mut shards = std::mem::take(&mut sc.shards);
    let died = Instant::now();
    shards[0].stop();
    wait_for("s1's players on the standby", Duration::from_secs(30), || {
        let now = players.snapshot();
        on_s1.iter().all(|l| now.iter().any(|p| &p.local == l && p.current_shard() == Some("s2")))
    });
    let arrived = died.elapsed();
    wait_for("the failover's lease move", Duration::from_secs(10), || {
        events(&sc).iter().any(|e| e["kind"] == "lease_move" && e["shard"] == "s1" && e["target"] == "s2")
    });
    let moved = events(&sc).into_iter().rfind(|e| e["kind"] == "lease_move" && e["shard"] == "s1").unwrap();
    println!("failover: s1's {} players on s2 after {arrived:?}; lease move: {}", on_s1.len(), moved["detail"]);
    for local in &on_s1 {
        let client: SocketAddrV4 = local.parse().unwrap();
        let login = sc.rt.block_on(leases.acquire(&account(local), "s2", client)).unwrap();
        assert!(matches!(login, Acquire::Ok { .. }), "{local} must log in on s2 at once: {login:?}");
    }

    // s1 comes back (a zombie with its old state): it takes no account back.
    shards[0] = shard::spawn(
        sc.topo.shard_socket(0).unwrap(),
        ShardConfig { name: "s1".into(), max_players: 1000, seed: 1000 },
    );
    wait_for("s1 healthy again", Duration::from_secs(10), || event_count(&sc, "health_up") >= 1);
    assert_eq!(sc.rt.block_on(leases.renew("s1")).unwrap(), 0, "the zombie renews nothing");
    for local in &on_s1 {
        let client: SocketAddrV4 = local.parse().unwrap();
        let name = account(local);
        match sc.rt.block_on(leases.acquire(&name, "s1", client)).unwrap() {
            Acquire::Held { holder, .. } => assert_eq!(holder, "s2", "{local}"),
            other => panic!("the zombie took {name} back: {other:?}"),
        }
        let old = tokens[local];
        assert!(!sc.rt.block_on(leases.holds(&name, old)).unwrap(), "{local}: the old token is stale");
        assert!(matches!(sc.rt.block_on(leases.release(&name, old)).unwrap(), Release::Stale { .. }));
    }
    players.stop();
    drop(shards);
}

#[test]
fn players_move_while_the_database_is_down_and_their_leases_follow_when_it_is_back() {
    let db = MariaDb::start().unwrap();
    let mut sc = start(&db);
    let leases = store(&sc, &db);
    let players = sc.players(PLAYERS, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    log_in_all(&sc, &leases, &players);
    let on_s1: Vec<String> = on_shard(&players.snapshot(), "s1").iter().map(|p| p.local.clone()).collect();
    assert!(!on_s1.is_empty());

    // The database stops answering; then s1 dies.
    db.freeze(true);
    let mut shards = std::mem::take(&mut sc.shards);
    shards[0].stop();
    wait_for("s1's players on the standby with the database down", Duration::from_secs(30), || {
        let now = players.snapshot();
        on_s1.iter().all(|l| now.iter().any(|p| &p.local == l && p.current_shard() == Some("s2")))
    });
    wait_for("the event that the leases will expire", Duration::from_secs(20), || {
        event_count(&sc, "lease_move_failed") >= 1
    });
    let failed = events(&sc).into_iter().find(|e| e["kind"] == "lease_move_failed").unwrap();
    assert!(failed["detail"].as_str().unwrap().contains("expire within"), "{failed}");
    assert_eq!(event_count(&sc, "lease_move"), 0);

    // The database answers again: the retry hands the leases over.
    db.freeze(false);
    wait_for("the retried lease move", Duration::from_secs(60), || event_count(&sc, "lease_move") >= 1);
    for local in &on_s1 {
        let client: SocketAddrV4 = local.parse().unwrap();
        let login = sc.rt.block_on(leases.acquire(&account(local), "s2", client)).unwrap();
        assert!(matches!(login, Acquire::Ok { .. }), "{local} must log in on s2: {login:?}");
    }
    let text = metrics(&sc);
    for line in
        ["samp_proxy_events_total{kind=\"lease_move_failed\"}", "samp_proxy_events_total{kind=\"lease_move\"} 1"]
    {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    players.stop();
    drop(shards);
}
