//! Hostile traffic: spoofed handshake and query floods from addresses no
//! player owns (198.19/16, sent as raw frames into the router), garbage on
//! an agent's control socket, and strangers on the peer port. Each is
//! bounded in count; afterwards the agent must still answer.

use std::{io::Write, net::Ipv4Addr, time::Duration};

use anyhow::{ensure, Result};
use proxy_agent::peers::handshake;

use super::{
    cluster::{status, Cluster},
    faults::{agent_name, FLOOD_FRAMES, PEER},
    history::History,
    schedule::{Fault, Kind},
};
use crate::{
    ha::topology::ingress_ip,
    packet::Udp,
    raw::{mac_of, send_frames},
    sim::wire,
    topology::{PORT, VIP},
};

/// Source `n` of a flood: 198.19/16, 16 ports per address.
fn spoofed(n: usize) -> (Ipv4Addr, u16) {
    let a = (n / 16) as u32;
    (Ipv4Addr::new(198, 19, (a >> 8) as u8, a as u8), 30_000 + (n % 16) as u16)
}

fn query_i() -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&VIP.octets());
    q.extend_from_slice(&PORT.to_le_bytes());
    q.push(b'i');
    q
}

pub fn flood(c: &Cluster, h: &History, kind: Kind) -> Result<()> {
    let client = &c.net.net.client;
    let (src_mac, dst_mac) = (mac_of(client, "eth0")?, mac_of(&c.net.net.router, "r-client")?);
    let payload = if kind == Kind::HandshakeFlood { wire::handshake_request(0, PORT).to_vec() } else { query_i() };
    let frames: Vec<Vec<u8>> = (0..FLOOD_FRAMES)
        .map(|n| {
            let (src, sport) = spoofed(n);
            let mut u = Udp::new(src, sport, VIP, PORT, &payload);
            u.src_mac = src_mac;
            u.dst_mac = dst_mac;
            u.frame()
        })
        .collect();
    let sent = send_frames(client, "eth0", &frames, 64)?;
    h.note(format!("{kind}: {sent} spoofed datagrams from 198.19/16"));
    Ok(())
}

/// Garbage on a live ingress agent's control socket: every line answered
/// (or the connection closed), and the agent answers `status` after.
pub fn control(c: &Cluster, h: &History, f: &Fault) -> Result<bool> {
    let live: Vec<usize> = c.live().map(|(i, _)| i).collect();
    let n = live[(f.pick % live.len() as u64) as usize];
    let a = &c.ingress[n];
    let huge = format!("{}\n", "x".repeat(200_000));
    let lines: [&[u8]; 6] = [
        b"garbage\n",
        b"{}\n",
        b"{\"cmd\":\"migrate\",\"to\":\"nosuch\",\"clients\":[\"1.2.3.4:5\"]}\n",
        b"{\"cmd\":\"status\",\"extra\":1}\n",
        b"\xff\xfe\x00\n",
        huge.as_bytes(),
    ];
    let mut answered = 0;
    for l in lines {
        if a.raw(l).is_ok_and(|r| !r.is_empty()) {
            answered += 1;
        }
    }
    // A client that connects and says nothing, then goes.
    let _ = std::os::unix::net::UnixStream::connect(&a.socket);
    ensure!(status(a)["agent"]["ready"] == true, "in{} does not answer status after hostile control traffic", n + 1);
    h.note(format!("hostile control traffic to {}: {answered} of 6 lines answered, status fine", agent_name(n)));
    Ok(true)
}

/// Strangers on a live ingress agent's peer port, from the other node
/// (a compromised neighbour): a wrong secret, another version, HTTP,
/// noise, a silent connection. The agent must still answer.
pub fn peer(c: &Cluster, h: &History, f: &Fault) -> Result<bool> {
    let live: Vec<usize> = c.live().map(|(i, _)| i).collect();
    let n = live[(f.pick % live.len() as u64) as usize];
    let from = &c.net.net.ingress[(n + 1) % c.ingress.len()];
    let to = std::net::SocketAddrV4::new(ingress_ip(n), PEER);
    let mut wrong_version = handshake::MAGIC.to_vec();
    wrong_version.extend_from_slice(&7u16.to_be_bytes());
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let payloads: [&[u8]; 4] = [&wrong_version, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &noise, b""];
    let mut sent = 0;
    from.run(|| {
        for p in payloads {
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) {
                let _ = s.write_all(p);
                sent += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })?;
    let secret = from.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        rt.block_on(async {
            let s =
                tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(to)).await.ok()?.ok()?;
            let mut s = s;
            let r = tokio::time::timeout(Duration::from_secs(3), handshake::dial(&mut s, b"not-the-secret", "mallory"));
            Some(format!("{:?}", r.await.ok()?.err()))
        })
    })?;
    ensure!(status(&c.ingress[n])["agent"]["ready"] == true, "in{} does not answer after hostile peers", n + 1);
    h.note(format!("hostile peer traffic to in{}: {sent} connections, wrong secret: {secret:?}", n + 1));
    Ok(true)
}
