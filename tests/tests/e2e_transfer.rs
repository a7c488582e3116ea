//! Area transfers: a shard asks the agent over plain HTTP (what Pawn's
//! `HTTP()` native sends: a form body, no custom headers) to move one of its
//! players to another shard; the player reconnects to the same address and
//! lands there. Only the shard that holds the player may ask, with the
//! cluster's secret; every refusal changes nothing.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use proxy_agent::protocol::Request;
use tests::{
    netns::NetNs,
    scenario::{on_shard, wait_for, Scenario},
};

const SECRET: &str = "test-secret-0123456789";
const HTTP_PORT: u16 = 9180;
const PLAYERS: usize = 12;

/// One HTTP/1.1 request from namespace `ns` to the agent at `agent`.
fn http(ns: &NetNs, agent: Ipv4Addr, method: &str, target: &str, body: &str) -> (u16, String) {
    tests::http::request(ns, SocketAddrV4::new(agent, HTTP_PORT), method, target, body)
}

/// The proxy's address on shard `i`'s link (the shard's gateway).
fn gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 1)
}

fn form(secret: &str, client: &str, to: &str) -> String {
    format!("secret={secret}&client={}&to={to}", client.replace(':', "%3A"))
}

#[test]
fn a_shard_moves_its_player_to_another_shard_and_nobody_else_can() {
    let extra = format!("metrics_listen: 0.0.0.0:{HTTP_PORT}\nshard_secret: {SECRET}\n");
    let sc = Scenario::start(2, |t| t.config(&[100, 100], &extra)).unwrap();
    let players = sc.players(PLAYERS, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    let stats = players.snapshot();
    let on_s1: Vec<String> = on_shard(&stats, "s1").iter().map(|p| p.local.clone()).collect();
    let on_s2: Vec<String> = on_shard(&stats, "s2").iter().map(|p| p.local.clone()).collect();
    assert!(!on_s1.is_empty() && !on_s2.is_empty(), "placement spreads players: s1 {on_s1:?}, s2 {on_s2:?}");
    let (s1, s2, client_ns) = (&sc.topo.shards[0], &sc.topo.shards[1], &sc.topo.client);
    let traveller = on_s1[0].clone();

    // Refusals first: each answers `error: ...` and moves nobody.
    let refusals = [
        (s2, gateway(1), "POST", form(SECRET, &traveller, "s2"), 403, "is not playing on shard `s2`"),
        (s1, gateway(0), "POST", form("wrong-secret-0123456789", &traveller, "s2"), 403, "error: wrong secret"),
        (
            client_ns,
            Ipv4Addr::new(198, 18, 0, 1),
            "POST",
            form(SECRET, &traveller, "s2"),
            403,
            "is not the address of any shard",
        ),
        (s1, gateway(0), "POST", form(SECRET, &traveller, "s9"), 404, "no shard named `s9`"),
        (s1, gateway(0), "POST", form(SECRET, &traveller, "s1"), 409, "is both source and target"),
        (
            s1,
            gateway(0),
            "POST",
            form(SECRET, "198.18.0.250:5000", "s2"),
            404,
            "no session for client 198.18.0.250:5000",
        ),
        (s1, gateway(0), "POST", form(SECRET, "not-an-address", "s2"), 400, "is not a client IPv4:port"),
        (s1, gateway(0), "POST", format!("secret={SECRET}&to=s2"), 400, "error: missing field `client`"),
        (s1, gateway(0), "POST", format!("{}&extra=1", form(SECRET, &traveller, "s2")), 400, "unknown field `extra`"),
        (s1, gateway(0), "POST", "secret=%G0".to_string(), 400, "error: a bad %-escape in the form"),
        (s1, gateway(0), "PUT", form(SECRET, &traveller, "s2"), 405, "error: use POST (or GET)"),
    ];
    for (ns, agent, method, body, status, says) in &refusals {
        let (got, text) = http(ns, *agent, method, "/shard/transfer", body);
        assert_eq!(got, *status, "{method} {body}: {text}");
        assert!(text.starts_with("error: ") && text.contains(says), "{method} {body}: `{text}` should say `{says}`");
    }
    // A GET with the form in the query string is checked the same way.
    let (got, text) = http(s2, gateway(1), "GET", &format!("/shard/transfer?{}", form(SECRET, &traveller, "s1")), "");
    assert_eq!((got, text.contains("is not playing on shard `s2`")), (403, true), "{text}");
    let events = sc.agent.request(&Request::Events).unwrap();
    let transfers = |kind: &str| events.as_array().unwrap().iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(transfers("transfer"), 0, "no refusal moved anyone");
    // Those past the secret and the form reached the cluster: 5 above, and the GET.
    assert_eq!(transfers("transfer_refused"), 5 + 1, "refusals that reached the cluster are events");
    std::thread::sleep(Duration::from_millis(300));
    for p in players.snapshot() {
        assert_eq!(p.connects, 1, "{} was disturbed by a refused transfer", p.local);
    }

    // s1 moves its player to s2: `ok`, then the player reconnects and lands on s2.
    let asked = Instant::now();
    let (got, text) = http(s1, gateway(0), "POST", "/shard/transfer", &form(SECRET, &traveller, "s2"));
    let answered = asked.elapsed();
    assert_eq!((got, text.as_str()), (200, "ok"), "the reply is exactly `ok`");
    let find = |local: &str| players.snapshot().into_iter().find(|p| p.local == local).unwrap();
    wait_for("the traveller to play on s2", Duration::from_secs(20), || {
        let p = find(&traveller);
        p.current_shard() == Some("s2") && p.connects == 2
    });
    let arrived = asked.elapsed();
    println!(
        "transfer: request to `ok` (map write done) {:.1} ms; request to arrival on s2 {:.0} ms (test clients reconnect after {} ms of silence)",
        answered.as_secs_f64() * 1000.0,
        arrived.as_secs_f64() * 1000.0,
        sc.player_config().reconnect_after.as_millis()
    );
    let p = find(&traveller);
    assert_eq!(p.wrong_source, 0, "every packet came from the public address");
    for p in players.snapshot().iter().filter(|p| p.local != traveller) {
        assert_eq!(p.connects, 1, "{} was not asked to move", p.local);
    }
    let events = sc.agent.request(&Request::Events).unwrap();
    let last = events.as_array().unwrap().iter().rev().find(|e| e["kind"] == "transfer").expect("a transfer event");
    assert_eq!((last["shard"].as_str(), last["target"].as_str()), (Some("s1"), Some("s2")), "{last}");
    let (_, metrics) = http(&sc.topo.proxy, Ipv4Addr::new(198, 18, 0, 1), "GET", "/metrics", "");
    assert!(metrics.contains("samp_proxy_events_total{kind=\"transfer\"} 1"), "{metrics}");
    players.stop();
}

#[test]
fn transfers_are_off_without_a_secret() {
    let extra = format!("metrics_listen: 0.0.0.0:{HTTP_PORT}\n");
    let sc = Scenario::start(2, |t| t.config(&[100, 100], &extra)).unwrap();
    let (got, text) =
        http(&sc.topo.shards[0], gateway(0), "POST", "/shard/transfer", &form(SECRET, "198.18.0.2:5000", "s2"));
    assert_eq!((got, text.as_str()), (403, "error: transfers are off: the agent has no shard_secret"));
}
