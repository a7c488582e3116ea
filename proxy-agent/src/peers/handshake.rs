//! The start of a peer connection: each side proves it holds the node
//! secret without sending it, both agree on the protocol version, and they
//! derive one key per direction for the frames that follow.
//!
//! ```text
//! dialer   -> Hello     MAGIC | version u16 | nonce_d [16] | name
//! acceptor -> Challenge MAGIC | version u16 | 0 | nonce_a [16] | name | HMAC(secret, "acceptor" nonce_d nonce_a name_a)
//!          or Refusal   MAGIC | version u16 | 1 | reason
//! dialer   -> Proof     HMAC(secret, "dialer" nonce_a nonce_d name_d)
//! acceptor -> Verdict   0, or 1 | reason
//! ```
//! Fresh nonces on both sides make every connection's keys new, so frames
//! recorded from one connection mean nothing on another.

use std::time::Duration;

use ring::{hmac, rand::SecureRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAGIC: &[u8; 8] = b"SAMPPEER";
/// The protocol version this agent speaks. A peer speaking another is
/// refused with a reason that names both.
pub const VERSION: u16 = 1;
/// The whole handshake must finish within this (a silent dialer holds no slot).
pub const DEADLINE: Duration = Duration::from_secs(3);
const NONCE: usize = 16;
const MAX_NAME: usize = 64;

/// A connection's keys, once both sides proved the secret.
pub struct Keys {
    pub send: hmac::Key,
    pub recv: hmac::Key,
    /// The other side's node name.
    pub peer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// The other side does not hold our node secret.
    WrongSecret,
    /// It speaks another protocol version.
    Version(u16),
    /// Not our protocol at all, or cut short.
    Garbled(String),
    /// The other side refused us (its reason).
    RefusedBy(String),
    Timeout,
}

impl Failed {
    pub fn reason(&self) -> &'static str {
        match self {
            Failed::WrongSecret => "wrong_secret",
            Failed::Version(_) => "version",
            Failed::Garbled(_) => "garbled",
            Failed::RefusedBy(_) => "refused_by_peer",
            Failed::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::WrongSecret => write!(f, "it did not prove the node secret (a different or no node_secret)"),
            Failed::Version(v) => write!(f, "it speaks peer protocol version {v}; this agent speaks {VERSION}"),
            Failed::Garbled(why) => write!(f, "not a peer handshake: {why}"),
            Failed::RefusedBy(why) => write!(f, "it refused this agent: {why}"),
            Failed::Timeout => write!(f, "the handshake took over {} s", DEADLINE.as_secs()),
        }
    }
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    ring::rand::SystemRandom::new().fill(&mut n).expect("the system's random source");
    n
}

fn proof(secret: &[u8], label: &[u8], first: &[u8], second: &[u8], name: &str) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [label, first, second, name.as_bytes()] {
        ctx.update(part);
    }
    ctx.sign()
}

fn direction_key(secret: &[u8], label: &[u8], nonce_d: &[u8], nonce_a: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, proof(secret, label, nonce_d, nonce_a, "").as_ref())
}

fn keys(secret: &[u8], nonce_d: &[u8], nonce_a: &[u8], dialer: bool, peer: String) -> Keys {
    let to_acceptor = direction_key(secret, b"to-acceptor", nonce_d, nonce_a);
    let to_dialer = direction_key(secret, b"to-dialer", nonce_d, nonce_a);
    let (send, recv) = if dialer { (to_acceptor, to_dialer) } else { (to_dialer, to_acceptor) };
    Keys { send, recv, peer }
}

fn garbled(e: std::io::Error) -> Failed {
    Failed::Garbled(format!("the stream ended or failed ({e})"))
}

async fn read_name<R: AsyncRead + Unpin>(r: &mut R) -> Result<String, Failed> {
    let len = r.read_u8().await.map_err(garbled)? as usize;
    if len == 0 || len > MAX_NAME {
        return Err(Failed::Garbled(format!("a node name of {len} bytes (1..={MAX_NAME})")));
    }
    let mut name = vec![0u8; len];
    r.read_exact(&mut name).await.map_err(garbled)?;
    let name = String::from_utf8(name).map_err(|_| Failed::Garbled("a node name that is not UTF-8".into()))?;
    if !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Failed::Garbled("a node name with spaces or control characters".into()));
    }
    Ok(name)
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<u16, Failed> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).await.map_err(garbled)?;
    if &magic != MAGIC {
        return Err(Failed::Garbled("it does not start with SAMPPEER".into()));
    }
    r.read_u16().await.map_err(garbled)
}

async fn read_reason<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let Ok(len) = r.read_u16().await else { return "no reason given".into() };
    let mut why = vec![0u8; usize::from(len).min(512)];
    match r.read_exact(&mut why).await {
        Ok(_) => String::from_utf8_lossy(&why).into_owned(),
        Err(_) => "no reason given".into(),
    }
}

fn reason_bytes(why: &str) -> Vec<u8> {
    let why = &why.as_bytes()[..why.len().min(512)];
    let mut out = (why.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(why);
    out
}

/// The dialer's side: `me` is this node's name. Checks names must be
/// 1..=64 printable ASCII bytes (the config enforces it).
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, secret: &[u8], me: &str) -> Result<Keys, Failed> {
    tokio::time::timeout(DEADLINE, dial_inner(s, secret, me)).await.map_err(|_| Failed::Timeout)?
}

async fn dial_inner<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, secret: &[u8], me: &str) -> Result<Keys, Failed> {
    let nonce_d = nonce();
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&VERSION.to_be_bytes());
    hello.extend_from_slice(&nonce_d);
    put_name(&mut hello, me);
    s.write_all(&hello).await.map_err(garbled)?;
    let version = read_head(s).await?;
    if s.read_u8().await.map_err(garbled)? != 0 {
        return Err(Failed::RefusedBy(read_reason(s).await));
    }
    if version != VERSION {
        return Err(Failed::Version(version));
    }
    let mut nonce_a = [0u8; NONCE];
    s.read_exact(&mut nonce_a).await.map_err(garbled)?;
    let peer = read_name(s).await?;
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs).await.map_err(garbled)?;
    if proof(secret, b"acceptor", &nonce_d, &nonce_a, &peer).as_ref() != theirs {
        return Err(Failed::WrongSecret);
    }
    s.write_all(proof(secret, b"dialer", &nonce_a, &nonce_d, me).as_ref()).await.map_err(garbled)?;
    if s.read_u8().await.map_err(garbled)? != 0 {
        return Err(Failed::RefusedBy(read_reason(s).await));
    }
    Ok(keys(secret, &nonce_d, &nonce_a, true, peer))
}

/// The acceptor's side. A failure is told to the dialer (its reason) and
/// returned; the caller closes the connection.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, secret: &[u8], me: &str) -> Result<Keys, Failed> {
    tokio::time::timeout(DEADLINE, accept_inner(s, secret, me)).await.map_err(|_| Failed::Timeout)?
}

async fn accept_inner<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, secret: &[u8], me: &str) -> Result<Keys, Failed> {
    let version = read_head(s).await?;
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&VERSION.to_be_bytes());
    if version != VERSION {
        head.push(1);
        head.extend(reason_bytes(&format!("this agent speaks peer protocol version {VERSION}, not {version}")));
        let _ = s.write_all(&head).await;
        return Err(Failed::Version(version));
    }
    let mut nonce_d = [0u8; NONCE];
    s.read_exact(&mut nonce_d).await.map_err(garbled)?;
    let peer = read_name(s).await?;
    let nonce_a = nonce();
    head.push(0);
    head.extend_from_slice(&nonce_a);
    put_name(&mut head, me);
    head.extend_from_slice(proof(secret, b"acceptor", &nonce_d, &nonce_a, me).as_ref());
    s.write_all(&head).await.map_err(garbled)?;
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs).await.map_err(garbled)?;
    if proof(secret, b"dialer", &nonce_a, &nonce_d, &peer).as_ref() != theirs {
        let mut no = vec![1u8];
        no.extend(reason_bytes("the proof of the node secret is wrong"));
        let _ = s.write_all(&no).await;
        return Err(Failed::WrongSecret);
    }
    s.write_all(&[0]).await.map_err(garbled)?;
    Ok(keys(secret, &nonce_d, &nonce_a, false, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(d_secret: &'static [u8], a_secret: &'static [u8]) -> (Result<Keys, Failed>, Result<Keys, Failed>) {
        let (mut d, mut a) = tokio::io::duplex(4096);
        let acceptor = tokio::spawn(async move { accept(&mut a, a_secret, "node-a").await });
        let dialed = dial(&mut d, d_secret, "node-d").await;
        (dialed, acceptor.await.unwrap())
    }

    #[tokio::test]
    async fn the_same_secret_gives_matching_keys() {
        let (d, a) = pair(b"s3cret", b"s3cret").await;
        let (d, a) = (d.unwrap(), a.unwrap());
        assert_eq!((d.peer.as_str(), a.peer.as_str()), ("node-a", "node-d"));
        let tag = hmac::sign(&d.send, b"x");
        assert!(hmac::verify(&a.recv, b"x", tag.as_ref()).is_ok());
        assert!(hmac::verify(&a.send, b"x", tag.as_ref()).is_err(), "directions have their own keys");
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_sides() {
        let (d, a) = pair(b"guess", b"s3cret").await;
        assert_eq!(d.err(), Some(Failed::WrongSecret), "the dialer sees the acceptor cannot prove it");
        // The acceptor never gets a proof: the dialer hangs up first.
        assert!(a.is_err());
    }

    #[tokio::test]
    async fn another_version_and_garbage_are_named() {
        let (mut d, mut a) = tokio::io::duplex(4096);
        let acceptor = tokio::spawn(async move { accept(&mut a, b"s", "node-a").await });
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&9u16.to_be_bytes());
        d.write_all(&hello).await.unwrap();
        assert_eq!(acceptor.await.unwrap().err(), Some(Failed::Version(9)));
        let mut answer = vec![0u8; 11];
        d.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[10], 1, "refused, with a reason");
        assert!(read_reason(&mut d).await.contains("version 1, not 9"));

        let (mut d, mut a) = tokio::io::duplex(4096);
        let acceptor = tokio::spawn(async move { accept(&mut a, b"s", "node-a").await });
        d.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(acceptor.await.unwrap(), Err(Failed::Garbled(_))));
    }
}
