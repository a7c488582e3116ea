//! What ingress agents tell each other, as records with a fixed binary
//! form. Nothing in a record is a node-local id: a frontend is its public
//! address, a shard its address, so every node maps a record to its own
//! group and backend ids (which differ between nodes).
//!
//! A session record is the whole truth about one player's route (where it
//! is and whether it is moving); of two records for one player the one with
//! the greater [`Stamp`] wins on every node (last writer wins, ties broken
//! by the origin's id), so nodes that heard them in any order agree.

use std::net::{Ipv4Addr, SocketAddrV4};

/// When and where a record was made: a hybrid clock (nanoseconds since the
/// epoch, never below the last stamp this node made or merged) and the
/// origin node's id. Compared as (time, origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    pub time: u64,
    pub origin: u32,
}

/// One player's route as its origin saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// The frontend's public address (VIP:port).
    pub frontend: SocketAddrV4,
    pub client: SocketAddrV4,
    /// The shard the player's packets go to.
    pub shard: Ipv4Addr,
    /// Told to move: its game packets are dropped until its next handshake.
    pub moving: bool,
    pub stamp: Stamp,
}

/// A player still plays through the sending node: no node may expire it
/// as idle. Sent for every session a node forwarded since its last scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub frontend: SocketAddrV4,
    pub client: SocketAddrV4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Session(SessionRecord),
    Touch(Touch),
    /// The sender's snapshot is complete: `sessions` records came before it
    /// on this connection.
    SnapshotEnd {
        sessions: u32,
    },
    /// An operator's request given to a follower, for the decider (the
    /// control protocol's JSON); `origin` is the asking node's id.
    Ask {
        token: u64,
        origin: u32,
        body: String,
    },
    /// The decider's reply to an `Ask` of node `origin`: the reply's data
    /// (`ok`) or the error's text.
    Answer {
        token: u64,
        origin: u32,
        ok: bool,
        body: String,
    },
}

/// The longest request or reply a record carries.
pub const MAX_BODY: usize = 16 * 1024;

const SESSION: u8 = 1;
const TOUCH: u8 = 2;
const SNAPSHOT_END: u8 = 3;
const ASK: u8 = 4;
const ANSWER: u8 = 5;

/// Bytes of one session record on the wire (with its kind byte).
pub const SESSION_BYTES: usize = 1 + 6 + 6 + 4 + 1 + 8 + 4;
const TOUCH_BYTES: usize = 1 + 6 + 6;
const SNAPSHOT_END_BYTES: usize = 1 + 4;

fn put_addr(out: &mut Vec<u8>, a: &SocketAddrV4) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

impl Record {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Session(s) => {
                out.push(SESSION);
                put_addr(out, &s.frontend);
                put_addr(out, &s.client);
                out.extend_from_slice(&s.shard.octets());
                out.push(u8::from(s.moving));
                out.extend_from_slice(&s.stamp.time.to_be_bytes());
                out.extend_from_slice(&s.stamp.origin.to_be_bytes());
            }
            Record::Touch(t) => {
                out.push(TOUCH);
                put_addr(out, &t.frontend);
                put_addr(out, &t.client);
            }
            Record::SnapshotEnd { sessions } => {
                out.push(SNAPSHOT_END);
                out.extend_from_slice(&sessions.to_be_bytes());
            }
            Record::Ask { token, origin, body } => {
                out.push(ASK);
                put_message(out, *token, *origin, body);
            }
            Record::Answer { token, origin, ok, body } => {
                out.push(ANSWER);
                out.push(u8::from(*ok));
                put_message(out, *token, *origin, body);
            }
        }
    }
}

fn put_message(out: &mut Vec<u8>, token: u64, origin: u32, body: &str) {
    let body = &body.as_bytes()[..body.len().min(MAX_BODY)];
    out.extend_from_slice(&token.to_be_bytes());
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Why a payload was refused; nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecord {
    Truncated { at: usize },
    UnknownKind { at: usize, kind: u8 },
    BadFlag { at: usize, value: u8 },
    BadBody { at: usize },
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecord::Truncated { at } => write!(f, "a record cut short at byte {at}"),
            BadRecord::UnknownKind { at, kind } => write!(f, "unknown record kind {kind} at byte {at}"),
            BadRecord::BadFlag { at, value } => write!(f, "a flag {value} (not 0 or 1) at byte {at}"),
            BadRecord::BadBody { at } => write!(f, "a message body that is too long or not UTF-8 at byte {at}"),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BadRecord> {
        let end = self.at + N;
        let b = self.bytes.get(self.at..end).ok_or(BadRecord::Truncated { at: self.at })?;
        self.at = end;
        Ok(b.try_into().expect("N bytes"))
    }

    fn flag(&mut self) -> Result<bool, BadRecord> {
        match self.take::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [value] => Err(BadRecord::BadFlag { at: self.at - 1, value }),
        }
    }

    /// token, origin, body.
    fn message(&mut self) -> Result<(u64, u32, String), BadRecord> {
        let token = u64::from_be_bytes(self.take::<8>()?);
        let origin = u32::from_be_bytes(self.take::<4>()?);
        let at = self.at;
        let len = u16::from_be_bytes(self.take::<2>()?) as usize;
        let bytes = self.bytes.get(self.at..self.at + len).ok_or(BadRecord::Truncated { at: self.at })?;
        self.at += len;
        if len > MAX_BODY {
            return Err(BadRecord::BadBody { at });
        }
        let body = String::from_utf8(bytes.to_vec()).map_err(|_| BadRecord::BadBody { at })?;
        Ok((token, origin, body))
    }

    fn addr(&mut self) -> Result<SocketAddrV4, BadRecord> {
        let ip = Ipv4Addr::from(self.take::<4>()?);
        Ok(SocketAddrV4::new(ip, u16::from_be_bytes(self.take::<2>()?)))
    }
}

/// Every record of a payload, or the first fault (then none is used).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, BadRecord> {
    let mut r = Reader { bytes, at: 0 };
    let mut out = Vec::with_capacity(bytes.len() / SESSION_BYTES + 1);
    while r.at < bytes.len() {
        let at = r.at;
        let [kind] = r.take::<1>()?;
        out.push(match kind {
            SESSION => {
                let (frontend, client) = (r.addr()?, r.addr()?);
                let shard = Ipv4Addr::from(r.take::<4>()?);
                let moving = r.flag()?;
                let time = u64::from_be_bytes(r.take::<8>()?);
                let origin = u32::from_be_bytes(r.take::<4>()?);
                Record::Session(SessionRecord { frontend, client, shard, moving, stamp: Stamp { time, origin } })
            }
            TOUCH => Record::Touch(Touch { frontend: r.addr()?, client: r.addr()? }),
            SNAPSHOT_END => Record::SnapshotEnd { sessions: u32::from_be_bytes(r.take::<4>()?) },
            ASK => {
                let (token, origin, body) = r.message()?;
                Record::Ask { token, origin, body }
            }
            ANSWER => {
                let ok = r.flag()?;
                let (token, origin, body) = r.message()?;
                Record::Answer { token, origin, ok, body }
            }
            kind => return Err(BadRecord::UnknownKind { at, kind }),
        });
    }
    Ok(out)
}

/// The wire size of a record.
pub fn size_of(r: &Record) -> usize {
    match r {
        Record::Session(_) => SESSION_BYTES,
        Record::Touch(_) => TOUCH_BYTES,
        Record::SnapshotEnd { .. } => SNAPSHOT_END_BYTES,
        Record::Ask { body, .. } => 1 + 14 + body.len().min(MAX_BODY),
        Record::Answer { body, .. } => 2 + 14 + body.len().min(MAX_BODY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u8) -> Record {
        Record::Session(SessionRecord {
            frontend: "198.18.100.1:7777".parse().unwrap(),
            client: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, n), 50_000 + u16::from(n)),
            shard: Ipv4Addr::new(198, 18, 21, 2),
            moving: n.is_multiple_of(2),
            stamp: Stamp { time: 1_700_000_000_000_000_000 + u64::from(n), origin: 7 },
        })
    }

    #[test]
    fn records_survive_the_wire() {
        let records = vec![
            session(1),
            session(2),
            Record::Touch(Touch {
                frontend: "198.18.100.1:7777".parse().unwrap(),
                client: "198.18.0.9:4000".parse().unwrap(),
            }),
            Record::SnapshotEnd { sessions: 2 },
            Record::Ask { token: 7, origin: 9, body: r#"{"v":1,"cmd":"drain","shard":"s1"}"#.into() },
            Record::Answer { token: 7, origin: 9, ok: false, body: "no such shard".into() },
        ];
        let mut bytes = Vec::new();
        records.iter().for_each(|r| r.encode(&mut bytes));
        assert_eq!(bytes.len(), records.iter().map(size_of).sum::<usize>());
        assert_eq!(decode_all(&bytes).unwrap(), records);
    }

    #[test]
    fn hostile_payloads_are_refused_whole() {
        let mut bytes = Vec::new();
        session(1).encode(&mut bytes);
        for cut in 1..bytes.len() {
            assert!(matches!(decode_all(&bytes[..cut]), Err(BadRecord::Truncated { .. })), "cut at {cut}");
        }
        let mut unknown = bytes.clone();
        unknown.push(99);
        assert_eq!(decode_all(&unknown), Err(BadRecord::UnknownKind { at: SESSION_BYTES, kind: 99 }));
        let mut flag = bytes.clone();
        flag[17] = 5;
        assert_eq!(decode_all(&flag), Err(BadRecord::BadFlag { at: 17, value: 5 }));
        assert_eq!(decode_all(&[]), Ok(vec![]));
    }
}
