//! The server browser sees one server: a query client written from the
//! protocol description (SAMP.md, not the proxy's code) asks the VIP in a
//! namespace topology with real XDP, real shards' probes and real players.
//! And a flood of spoofed queries is answered up to each source's budget
//! while established players keep every packet.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use proxy_agent::protocol::Request;
use proxy_common::Counter;
use tests::{
    packet::Udp,
    raw::{mac_of, send_frames},
    scenario::{wait_for, Scenario},
    topology::{PORT, VIP},
};

/// "SAMP", the server's IPv4 as the client knows it, the port (LE), opcode.
fn request(server: Ipv4Addr, op: u8, extra: &[u8]) -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&server.octets());
    q.extend_from_slice(&PORT.to_le_bytes());
    q.push(op);
    q.extend_from_slice(extra);
    q
}

/// Sends `q` from `sock` and returns the reply, or None within 300 ms.
fn ask(sock: &UdpSocket, q: &[u8]) -> Option<Vec<u8>> {
    sock.send(q).unwrap();
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let n = sock.recv(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// An `i` body: password, players, max players, hostname, gamemode, language.
fn info(body: &[u8]) -> (bool, u16, u16, Vec<String>) {
    let mut at = 5;
    let mut strings = Vec::new();
    for _ in 0..3 {
        let len = u32::from_le_bytes(body[at..at + 4].try_into().unwrap()) as usize;
        strings.push(String::from_utf8(body[at + 4..at + 4 + len].to_vec()).unwrap());
        at += 4 + len;
    }
    assert_eq!(at, body.len(), "nothing after the language");
    (body[0] != 0, u16::from_le_bytes([body[1], body[2]]), u16::from_le_bytes([body[3], body[4]]), strings)
}

/// A list of (u8 len + string, then `tail` bytes) entries after a u16 count.
fn entries(body: &[u8], tail: usize) -> Vec<(String, Vec<u8>)> {
    let count = u16::from_le_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = body[at] as usize;
        let name = String::from_utf8(body[at + 1..at + 1 + len].to_vec()).unwrap();
        at += 1 + len;
        let rest = if tail == 0 {
            let vlen = body[at] as usize;
            at += 1;
            body[at..at + vlen].to_vec()
        } else {
            body[at..at + tail].to_vec()
        };
        at += rest.len();
        out.push((name, rest));
    }
    assert_eq!(at, body.len(), "nothing after the last entry");
    out
}

fn counter(sc: &Scenario, c: Counter) -> u64 {
    sc.agent.tables().unwrap().counter(c).unwrap()
}

const QUERY_CONFIG: &str = "    query:\n      hostname: Test City\n      gamemode: Freeroam\n      language: English\n      rules:\n        weburl: example.net\n";

fn with_query_section(yaml: String) -> String {
    // The frontend's `address:` line is followed by its query section.
    let (head, tail) = yaml.split_once("shards:\n").unwrap();
    format!("{head}{QUERY_CONFIG}shards:\n{tail}")
}

#[test]
fn the_cluster_answers_queries_as_one_server() {
    let sc = Scenario::start(3, |t| with_query_section(t.config(&[100, 200, 300], ""))).unwrap();
    let players = sc.players(10, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    let client = sc.topo.client_ips[0];
    let sock = sc.topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(client, 0)).unwrap()).unwrap();
    sock.connect(SocketAddrV4::new(VIP, PORT)).unwrap();
    let before = counter(&sc, Counter::QueryInfo);
    let passed_before = counter(&sc, Counter::PassQueryAgent);

    // `i`: the configured face, the healthy shards' players and slots summed.
    let q = request(VIP, b'i', &[]);
    wait_for("`i` to count the 10 players", Duration::from_secs(10), || {
        ask(&sock, &q).is_some_and(|r| info(&r[11..]).1 == 10)
    });
    let r = ask(&sock, &q).expect("an `i` answer");
    assert_eq!(r[..11], q[..11], "the header is echoed");
    let (password, players_now, max, strings) = info(&r[11..]);
    assert_eq!((password, players_now, max), (false, 10, 600));
    assert_eq!(strings, ["Test City", "Freeroam", "English"]);

    // Each requester gets its own header back (another address asked).
    let q2 = request(Ipv4Addr::new(203, 0, 113, 5), b'i', &[]);
    assert_eq!(ask(&sock, &q2).unwrap()[..11], q2[..11]);

    // `r`: the configured rules and the proxy's version.
    let q = request(VIP, b'r', &[]);
    let rules = entries(&ask(&sock, &q).unwrap()[11..], 0);
    let rule = |k: &str| rules.iter().find(|(n, _)| n == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    assert_eq!(rule("weburl").as_deref(), Some("example.net"));
    assert!(rule("proxy").unwrap().starts_with("samp-cluster-proxy "), "{rules:?}");

    // `c`: the players of every shard, merged (the simulator names them by port).
    let q = request(VIP, b'c', &[]);
    let clients = entries(&ask(&sock, &q).unwrap()[11..], 4);
    let mut names: Vec<String> = clients.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let mut want: Vec<String> =
        players.snapshot().iter().map(|p| format!("p{}", p.local.rsplit(':').next().unwrap())).collect();
    want.sort();
    assert_eq!(names, want);

    // `p` echoed whole; `o` is the shards' own answer (they agree); `d` and
    // `x` get nothing.
    let q = request(VIP, b'p', &[1, 2, 3, 4]);
    assert_eq!(ask(&sock, &q).unwrap(), q);
    let q = request(VIP, b'o', &[]);
    assert_eq!(&ask(&sock, &q).unwrap()[11..], b"\x01sim-open.mp");
    assert_eq!(ask(&sock, &request(VIP, b'd', &[])), None, "open.mp does not answer `d`");
    let rcon_before = counter(&sc, Counter::DropQueryRcon);
    let mut x = request(VIP, b'x', &[]);
    x.extend_from_slice(&[6, 0, b's', b'e', b'c', b'r', b'e', b't', 3, 0, b'c', b'm', b'd']);
    assert_eq!(ask(&sock, &x), None, "RCON from a public address gets nothing");
    assert_eq!(counter(&sc, Counter::DropQueryRcon), rcon_before + 1);

    // The kernel answered: its counter rose, and no query was passed up to
    // the host (every answer here fits one frame).
    assert!(counter(&sc, Counter::QueryInfo) > before);
    assert_eq!(counter(&sc, Counter::PassQueryAgent), passed_before, "a query went to the host");

    // The face is the YAML's, reloadable.
    let yaml = std::fs::read_to_string(&sc.agent.config_path).unwrap();
    std::fs::write(&sc.agent.config_path, yaml.replace("Test City", "New City")).unwrap();
    sc.agent.request(&Request::Reload).unwrap();
    let (_, _, _, strings) = info(&ask(&sock, &request(VIP, b'i', &[])).unwrap()[11..]);
    assert_eq!(strings[0], "New City", "a reload changes the hostname at once");

    // A shard dies: within a health round of noticing, its players leave
    // the count and its slots the total.
    let on_s3 = players.snapshot().iter().filter(|p| p.current_shard() == Some("s3")).count() as u16;
    let mut shards = sc.shards;
    let sc = Scenario { shards: Vec::new(), ..sc };
    shards[2].stop();
    let q = request(VIP, b'i', &[]);
    wait_for("`i` to drop the dead shard", Duration::from_secs(10), || {
        ask(&sock, &q).is_some_and(|r| info(&r[11..]).2 == 300)
    });
    let (_, now_players, _, _) = info(&ask(&sock, &q).unwrap()[11..]);
    assert!(now_players <= 10 - on_s3, "{now_players} players shown, {on_s3} were on the dead shard");
    players.stop();
    drop(sc);
}

#[test]
fn a_spoofed_query_flood_is_answered_up_to_each_budget_and_players_keep_every_packet() {
    const SOURCES: u32 = 1000;
    const PER_SOURCE: u32 = 8;
    const BUDGET: u32 = 3;
    let sc = Scenario::start(2, |t| t.config(&[500, 500], &format!("query_budget_per_second: {BUDGET}\n"))).unwrap();
    let players = sc.players(20, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    let proxy_mac = mac_of(&sc.topo.proxy, "to-client").unwrap();
    let client_mac = mac_of(&sc.topo.client, "eth0").unwrap();
    // Every source's queries back to back (one budget window each), from
    // addresses nobody owns.
    let mut frames = Vec::new();
    for s in 0..SOURCES {
        let src = Ipv4Addr::new(198, 19, (s / 250) as u8, (s % 250) as u8 + 1);
        for n in 0..PER_SOURCE {
            let mut u = Udp::new(src, 40_000 + n as u16, VIP, PORT, &request(VIP, b'i', &[]));
            u.src_mac = client_mac;
            u.dst_mac = proxy_mac;
            frames.push(u.frame());
        }
    }
    let (answered, dropped) = (counter(&sc, Counter::QueryInfo), counter(&sc, Counter::DropQueryBudget));
    let sent = send_frames(&sc.topo.client, "eth0", &frames, 64).unwrap();
    assert_eq!(sent, frames.len());
    wait_for("the flood to be counted", Duration::from_secs(10), || {
        counter(&sc, Counter::QueryInfo) + counter(&sc, Counter::DropQueryBudget) - answered - dropped
            == (SOURCES * PER_SOURCE) as u64
    });
    assert_eq!(counter(&sc, Counter::QueryInfo) - answered, (SOURCES * BUDGET) as u64, "answered up to each budget");
    assert_eq!(counter(&sc, Counter::DropQueryBudget) - dropped, (SOURCES * (PER_SOURCE - BUDGET)) as u64);

    // Every game packet the players sent reached their shard.
    sc.assert_every_packet_arrived(&players);
    let st = sc.agent.request(&Request::Status).unwrap();
    assert_eq!(st["totals"]["established"], 20, "the flood left the established table alone");
}

/// A `c` list too long for the frame the data plane can grow (30 players:
/// over 300 bytes; veth leaves only the 256 bytes of XDP headroom) is sent to
/// the agent's responder, which answers from the public address.
#[test]
fn answers_too_long_for_the_frame_come_from_the_agent() {
    let sc = Scenario::start(2, |t| t.config(&[500, 500], "")).unwrap();
    let players = sc.players(30, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    let client = sc.topo.client_ips[0];
    let sock = sc.topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(client, 0)).unwrap()).unwrap();
    // Connected: only datagrams from VIP:7777 are received.
    sock.connect(SocketAddrV4::new(VIP, PORT)).unwrap();
    let passed = counter(&sc, Counter::PassQueryAgent);
    let q = request(VIP, b'c', &[]);
    wait_for("the 30 players listed", Duration::from_secs(10), || {
        ask(&sock, &q).is_some_and(|r| r[..11] == q[..11] && entries(&r[11..], 4).len() == 30)
    });
    // Whether it fits depends on the driver's room around the frame: veth
    // on 6.1 hands XDP a whole page, where the kernel path grows the frame
    // and answers itself; on 6.18 it has no room and the agent answers.
    if counter(&sc, Counter::PassQueryAgent) > passed {
        let st = sc.agent.request(&Request::Status).unwrap();
        assert!(st["agent"]["queries_answered"]["clients"].as_u64().unwrap() >= 1, "{}", st["agent"]);
    } else {
        assert!(counter(&sc, Counter::QueryClients) > 0, "neither the data plane nor the agent answered");
        eprintln!("this kernel's veth had room for the long `c`: answered in the kernel");
    }
    // Short answers still come from the kernel.
    let info_before = counter(&sc, Counter::QueryInfo);
    assert!(ask(&sock, &request(VIP, b'i', &[])).is_some());
    assert_eq!(counter(&sc, Counter::QueryInfo), info_before + 1);
    players.stop();
}
