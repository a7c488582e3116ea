//! Shards that are SA:MP 0.3.7 servers: they answer the `d` query (the
//! detailed player list, which open.mp lacks and query tools such as npm's
//! samp-query ask for after `i` and `r`), so the cluster answers it too,
//! merged like `c`, with player ids made unique across shards. They answer
//! no `o`, and neither does the cluster. (Open.mp shards, and no `d`:
//! e2e_query.)

use std::{
    collections::HashSet,
    net::{SocketAddrV4, UdpSocket},
    time::Duration,
};

use tests::{
    scenario::{wait_for, Scenario},
    sim::shard::Server,
    topology::{PORT, VIP},
};

fn request(op: u8) -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&VIP.octets());
    q.extend_from_slice(&PORT.to_le_bytes());
    q.push(op);
    q
}

fn ask(sock: &UdpSocket, q: &[u8]) -> Option<Vec<u8>> {
    sock.send(q).unwrap();
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let n = sock.recv(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// A `d` body: u16 count, then (u8 id, u8 len + name, i32 score, u32 ping).
fn detail(body: &[u8]) -> Vec<(u8, String)> {
    let count = u16::from_le_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..count {
        let id = body[at];
        let len = body[at + 1] as usize;
        out.push((id, String::from_utf8(body[at + 2..at + 2 + len].to_vec()).unwrap()));
        at += 2 + len + 8;
    }
    assert_eq!(at, body.len(), "nothing after the last player");
    out
}

#[test]
fn samp_037_shards_make_the_cluster_answer_d() {
    let sc = Scenario::start_as(2, Server::Samp037, |t| t.config(&[100, 100], "")).unwrap();
    let players = sc.players(6, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 3);
    let client = sc.topo.client_ips[0];
    let sock = sc.topo.client.run(|| UdpSocket::bind(SocketAddrV4::new(client, 0)).unwrap()).unwrap();
    sock.connect(SocketAddrV4::new(VIP, PORT)).unwrap();

    // Both shards' players, once each, ids unique (each shard numbers its own from 0).
    let q = request(b'd');
    wait_for("`d` to list the 6 players", Duration::from_secs(15), || {
        ask(&sock, &q).is_some_and(|r| r.len() > 11 && detail(&r[11..]).len() == 6)
    });
    let r = ask(&sock, &q).expect("a `d` answer");
    assert_eq!(r[..11], q[..11], "the header is echoed");
    let rows = detail(&r[11..]);
    let ids: HashSet<u8> = rows.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), rows.len(), "player ids are unique: {rows:?}");
    let mut names: Vec<String> = rows.into_iter().map(|(_, n)| n).collect();
    names.sort();
    let mut want: Vec<String> =
        players.snapshot().iter().map(|p| format!("p{}", p.local.rsplit(':').next().unwrap())).collect();
    want.sort();
    assert_eq!(names, want);
    let on: HashSet<_> = players.snapshot().iter().filter_map(|p| p.current_shard().map(str::to_string)).collect();
    assert_eq!(on.len(), 2, "players on both shards, so the merge is tested: {on:?}");

    // No `o` from SA:MP 0.3.7 shards, so none from the cluster.
    assert_eq!(ask(&sock, &request(b'o')), None);
}
