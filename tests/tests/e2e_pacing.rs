//! A mass reconnect is paced: 500 players whose shard dies reconnect to
//! the standby at the configured handshake rate. Its own test binary, so it
//! runs alone: it measures rates, and the other failover tests running
//! beside it on two cores once starved it past its deadline.

use std::time::Duration;

use proxy_agent::protocol::Request;
use proxy_common::Counter;
use tests::{scenario::Scenario, sim::player::Players};

fn all_on(players: &Players, shard: &str) -> bool {
    players.snapshot().iter().all(|p| p.connected && p.current_shard() == Some(shard))
}

#[test]
fn a_mass_reconnect_reaches_the_new_shard_at_the_configured_rate() {
    const RATE: f64 = 200.0;
    const BURST: f64 = 20.0;
    let yaml = |t: &tests::topology::Topology, rate: u32| {
        t.config_of(
            &[(0, 1000, "active"), (1, 1000, "standby")],
            &format!("handshake_rate: {rate}\nhandshake_burst: {BURST}\n"),
        )
    };
    let sc = Scenario::start(2, |t| yaml(t, 0)).unwrap();
    let mut cfg = sc.player_config();
    cfg.rate_hz = 4.0; // mostly idle players: the test measures handshakes
    cfg.handshake_retry = Duration::from_millis(300);
    let players = sc.players(500, &cfg).unwrap();
    Scenario::wait_playing(&players, 2);
    // Turn the pacer on, then kill s1: 500 players reconnect to s2 at once.
    let extra = format!("bpffs: {}\ncontrol_socket: {}\n", sc.agent.pins.path.display(), sc.agent.socket.display());
    std::fs::write(&sc.agent.config_path, format!("{}{extra}", yaml(&sc.topo, RATE as u32))).unwrap();
    sc.agent.request(&Request::Reload).unwrap();
    let mut shards = sc.shards;
    let sc = Scenario { shards: Vec::new(), ..sc };
    shards[0].stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !all_on(&players, "s2") {
        if std::time::Instant::now() > deadline {
            let stuck: Vec<String> = players
                .snapshot()
                .iter()
                .filter(|p| !(p.connected && p.current_shard() == Some("s2")))
                .take(5)
                .map(|p| {
                    format!(
                        "{} connected={} shards={:?} connects={} handshakes={}",
                        p.local, p.connected, p.shards, p.connects, p.handshakes_sent
                    )
                })
                .collect();
            let sessions = sc.agent.request(&Request::Sessions {
                shard: None,
                client: Some(stuck[0].split(' ').next().unwrap().to_string()),
            });
            panic!(
                "not all 500 on s2 after 90 s; e.g. {stuck:#?}\nsession: {sessions:?}\nstatus: {}\nlog: {}",
                sc.agent.request(&Request::Status).map(|s| s.to_string()).unwrap_or_default(),
                sc.agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let arrivals = shards[1].stats().handshake_ms;
    // Two handshake datagrams per player (24, then 24 with the cookie).
    assert!(arrivals.len() >= 1000, "{} handshakes arrived", arrivals.len());
    // In every two-second window no more than rate x 2 + burst arrived. The
    // shard stamps arrivals in user space, so a stalled shard thread on a
    // loaded machine bunches up to a quarter second of them: that much slack.
    let limit = (RATE * 2.0 + BURST + RATE * 0.25) as usize;
    for (i, &start) in arrivals.iter().enumerate() {
        let in_window = arrivals[i..].iter().take_while(|&&t| t < start + 2000).count();
        assert!(in_window <= limit, "{in_window} handshakes within 2 s from {start} ms (limit {limit})");
    }
    let span_s = (arrivals.last().unwrap() - arrivals[0]) as f64 / 1000.0;
    let overall = (arrivals.len() as f64 - BURST) / span_s;
    assert!((RATE * 0.6..=RATE * 1.05).contains(&overall), "overall {overall:.0}/s for a {RATE}/s pacer");
    let tables = sc.agent.tables().unwrap();
    assert!(tables.counter(Counter::DropMetered).unwrap() > 0, "what waited was counted");
    println!("1000+ handshakes over {span_s:.1} s: {overall:.0}/s for a pacer of {RATE}/s");
    players.stop();
    drop(shards);
}
