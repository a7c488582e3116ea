//! A plain HTTP/1.1 client for tests: one request from inside a namespace,
//! as Pawn's `HTTP()` or a probe sends it (a form body, no custom headers).

use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpStream},
    time::Duration,
};

use crate::netns::NetNs;

/// `method target` to `agent` from namespace `ns`: (status, body).
pub fn request(ns: &NetNs, agent: SocketAddrV4, method: &str, target: &str, body: &str) -> (u16, String) {
    let raw = ns
        .run(|| {
            let mut s = TcpStream::connect(agent).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = format!(
                "{method} {target} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(body.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head in `{raw}`"));
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}
