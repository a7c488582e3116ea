//! Frames on a peer connection, after the handshake: `len u32 | seq u64 |
//! kind u8 | payload | tag [32]`, where `len` counts everything after
//! itself and `tag` is HMAC-SHA256 over `seq | kind | payload` with the
//! connection's key for that direction. A frame whose tag is wrong, whose
//! sequence number does not rise, or whose kind is unknown is refused and
//! skipped (the length still frames the stream, so one bad frame does not
//! end the link); a length over [`MAX_FRAME`] or a stream cut mid-frame
//! ends the connection, as nothing after it can be framed.

use ring::hmac;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest frame accepted: a snapshot is sent in many frames.
pub const MAX_FRAME: usize = 1 << 20;
const TAG: usize = 32;
const HEAD: usize = 8 + 1;
/// Bytes a frame adds to its payload: the length, the head and the tag.
pub const OVERHEAD: usize = 4 + HEAD + TAG;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records (see `record`).
    Records = 1,
    /// The receiver applied every frame up to `seq` (payload: u64).
    Ack = 2,
    /// Nothing to send; the link is alive.
    Keepalive = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        [Kind::Records, Kind::Ack, Kind::Keepalive].into_iter().find(|k| *k as u8 == b)
    }
}

/// Why a frame was refused (counted by reason, logged once per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The tag does not match: not from a holder of the node secret, or altered.
    BadTag,
    /// The sequence number did not rise: a replayed or reordered frame.
    Replayed {
        seq: u64,
        last: u64,
    },
    UnknownKind(u8),
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::BadTag => "bad_tag",
            Refused::Replayed { .. } => "replayed",
            Refused::UnknownKind(_) => "unknown_kind",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::BadTag => write!(f, "a frame whose tag is wrong (not signed with the node secret, or altered)"),
            Refused::Replayed { seq, last } => write!(f, "frame {seq} after frame {last} (replayed or reordered)"),
            Refused::UnknownKind(k) => write!(f, "a frame of unknown kind {k}"),
        }
    }
}

/// What ends a connection: nothing more on it can be framed or trusted.
#[derive(Debug)]
pub enum Broken {
    Io(std::io::Error),
    Oversize(usize),
    Closed,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => write!(f, "the stream ended mid-frame"),
            Broken::Io(e) => write!(f, "{e}"),
            Broken::Oversize(n) => write!(f, "a frame of {n} bytes (at most {MAX_FRAME})"),
            Broken::Closed => write!(f, "the peer closed the connection"),
        }
    }
}

impl Broken {
    pub fn reason(&self) -> &'static str {
        match self {
            Broken::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "truncated",
            Broken::Io(_) => "io",
            Broken::Oversize(_) => "oversize",
            Broken::Closed => "closed",
        }
    }
}

pub struct Writer<W> {
    w: W,
    key: hmac::Key,
    seq: u64,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(w: W, key: hmac::Key) -> Self {
        Writer { w, key, seq: 0, buf: Vec::new() }
    }

    /// Sends one frame; returns its sequence number.
    pub async fn send(&mut self, kind: Kind, payload: &[u8]) -> std::io::Result<u64> {
        self.seq += 1;
        let len = HEAD + payload.len() + TAG;
        self.buf.clear();
        self.buf.extend_from_slice(&(len as u32).to_be_bytes());
        self.buf.extend_from_slice(&self.seq.to_be_bytes());
        self.buf.push(kind as u8);
        self.buf.extend_from_slice(payload);
        let tag = hmac::sign(&self.key, &self.buf[4..]);
        self.buf.extend_from_slice(tag.as_ref());
        self.w.write_all(&self.buf).await?;
        Ok(self.seq)
    }

    /// The stream (the bytes written, for a `Vec`).
    pub fn into_inner(self) -> W {
        self.w
    }

    /// Sends bytes that are not a valid frame (tests of a hostile peer).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes).await
    }
}

pub struct Reader<R> {
    r: R,
    key: hmac::Key,
    last: u64,
    buf: Vec<u8>,
}

/// One frame read: accepted (its seq, kind and payload) or refused.
pub type Read<'a> = Result<(u64, Kind, &'a [u8]), Refused>;

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R, key: hmac::Key) -> Self {
        Reader { r, key, last: 0, buf: Vec::new() }
    }

    /// The next frame, or what ended the connection.
    pub async fn next(&mut self) -> Result<Read<'_>, Broken> {
        let mut len = [0u8; 4];
        match self.r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Broken::Closed),
            Err(e) => return Err(Broken::Io(e)),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(Broken::Oversize(len));
        }
        self.buf.resize(len, 0);
        self.r.read_exact(&mut self.buf).await.map_err(Broken::Io)?;
        Ok(self.check())
    }

    fn check(&mut self) -> Read<'_> {
        if self.buf.len() < HEAD + TAG {
            return Err(Refused::BadTag);
        }
        let (body, tag) = self.buf.split_at(self.buf.len() - TAG);
        hmac::verify(&self.key, body, tag).map_err(|_| Refused::BadTag)?;
        let seq = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        if seq <= self.last {
            return Err(Refused::Replayed { seq, last: self.last });
        }
        self.last = seq;
        let kind = Kind::from_byte(body[8]).ok_or(Refused::UnknownKind(body[8]))?;
        Ok((seq, kind, &body[HEAD..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &[u8]) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, k)
    }

    #[tokio::test]
    async fn frames_arrive_and_forgeries_are_skipped() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = Writer::new(a, key(b"k"));
        let mut forger = Writer::new(Vec::new(), key(b"wrong"));
        forger.send(Kind::Records, b"evil").await.unwrap();
        w.send(Kind::Records, b"one").await.unwrap();
        w.send_raw(&forger.into_inner()).await.unwrap();
        w.send(Kind::Ack, b"two").await.unwrap();
        let mut r = Reader::new(b, key(b"k"));
        assert_eq!(r.next().await.unwrap(), Ok((1, Kind::Records, &b"one"[..])));
        assert_eq!(r.next().await.unwrap(), Err(Refused::BadTag));
        assert_eq!(r.next().await.unwrap(), Ok((2, Kind::Ack, &b"two"[..])));
    }

    #[tokio::test]
    async fn replays_oversize_and_cuts_are_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = Writer::new(a, key(b"k"));
        let mut copy = Writer::new(Vec::new(), key(b"k"));
        copy.send(Kind::Records, b"x").await.unwrap();
        w.send(Kind::Records, b"x").await.unwrap();
        w.send_raw(&copy.w).await.unwrap(); // seq 1 again
        w.send_raw(&((MAX_FRAME + 1) as u32).to_be_bytes()).await.unwrap();
        let mut r = Reader::new(b, key(b"k"));
        assert!(r.next().await.unwrap().is_ok());
        assert_eq!(r.next().await.unwrap(), Err(Refused::Replayed { seq: 1, last: 1 }));
        assert!(matches!(r.next().await, Err(Broken::Oversize(_))));

        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = Writer::new(a, key(b"k"));
        w.send_raw(&100u32.to_be_bytes()).await.unwrap();
        w.send_raw(b"short").await.unwrap();
        drop(w);
        let mut r = Reader::new(b, key(b"k"));
        let e = r.next().await.unwrap_err();
        assert_eq!(e.reason(), "truncated", "{e}");
    }
}
