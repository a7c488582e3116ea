//! Datagram formats of the simulation: real SA:MP framing (scrambling,
//! handshake, queries) around a simulation-only game payload.

use std::net::{Ipv4Addr, SocketAddrV4};

use proxy_common::samp;

/// RakNet id the simulated players use for game packets (ID_PLAYER_SYNC).
pub const ID_PLAYER_SYNC: u8 = 207;
/// First byte of a shard's echo (simulation only; real servers send RakNet).
pub const ECHO_TAG: u8 = 0xE3;

/// A scrambled ID_OPEN_CONNECTION_REQUEST carrying `cookie`.
pub fn handshake_request(cookie: u16, server_port: u16) -> [u8; 4] {
    let mut wire = [0u8; 4];
    let [lo, hi] = cookie.to_le_bytes();
    samp::scramble(&[samp::ID_OPEN_CONNECTION_REQUEST, lo, hi], server_port, &mut wire);
    wire
}

/// A scrambled game packet: id, sequence number, then `size` bytes of filler
/// (a player's sync packets are 40-120 bytes).
pub fn game_packet(seq: u32, size: usize, server_port: u16) -> Vec<u8> {
    let mut plain = Vec::with_capacity(5 + size);
    plain.push(ID_PLAYER_SYNC);
    plain.extend_from_slice(&seq.to_le_bytes());
    plain.extend((0..size).map(|i| (i as u8).wrapping_mul(31) ^ seq as u8));
    let mut wire = vec![0u8; plain.len() + 1];
    samp::scramble(&plain, server_port, &mut wire);
    wire
}

/// The shard's echo of a game packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    pub shard: String,
    /// The client address as the shard saw it.
    pub seen: SocketAddrV4,
    pub seq: u32,
}

impl Echo {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ECHO_TAG, self.shard.len() as u8];
        out.extend_from_slice(self.shard.as_bytes());
        out.extend_from_slice(&self.seen.ip().octets());
        out.extend_from_slice(&self.seen.port().to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Option<Echo> {
        if b.len() < 2 || b[0] != ECHO_TAG {
            return None;
        }
        let n = b[1] as usize;
        let rest = b.get(2 + n..2 + n + 10)?;
        let shard = String::from_utf8(b[2..2 + n].to_vec()).ok()?;
        let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
        let port = u16::from_le_bytes([rest[4], rest[5]]);
        let seq = u32::from_le_bytes([rest[6], rest[7], rest[8], rest[9]]);
        Some(Echo { shard, seen: SocketAddrV4::new(ip, port), seq })
    }
}

/// A query request as a client sends it: magic, the address it thinks the
/// server has, the port (little-endian), the opcode, extra bytes.
pub use proxy_agent::health::query as query_request;

/// The body of an `i` (info) reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    pub password: bool,
    pub players: u16,
    pub max_players: u16,
    pub hostname: String,
    pub gamemode: String,
    pub language: String,
}

impl Info {
    /// The reply to `request`: its 11-byte header echoed, then the body.
    pub fn reply(&self, request: &[u8]) -> Vec<u8> {
        let mut out = request[..samp::QUERY_HEADER_LEN].to_vec();
        out.push(self.password as u8);
        out.extend_from_slice(&self.players.to_le_bytes());
        out.extend_from_slice(&self.max_players.to_le_bytes());
        for s in [&self.hostname, &self.gamemode, &self.language] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    /// Parses a reply to an `i` query; `None` when malformed.
    pub fn parse(reply: &[u8]) -> Option<Info> {
        let b = reply.get(samp::QUERY_HEADER_LEN..)?;
        if reply.get(10) != Some(&b'i') {
            return None;
        }
        let mut at = 5;
        let mut string = || -> Option<String> {
            let len = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
            let s = String::from_utf8(b.get(at + 4..at + 4 + len)?.to_vec()).ok()?;
            at += 4 + len;
            Some(s)
        };
        let hostname = string()?;
        let gamemode = string()?;
        let language = string()?;
        Some(Info {
            password: *b.first()? != 0,
            players: u16::from_le_bytes([*b.get(1)?, *b.get(2)?]),
            max_players: u16::from_le_bytes([*b.get(3)?, *b.get(4)?]),
            hostname,
            gamemode,
            language,
        })
    }
}
