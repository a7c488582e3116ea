//! The shards' own answers to `r`, `c`, `d` and `o`, read during health probes,
//! from which the cluster's answers are merged. Parsers follow the query
//! protocol (SAMP.md); anything malformed is ignored.

use proxy_common::samp::QUERY_HEADER_LEN;

/// What one shard answered besides ping and info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardAnswers {
    pub rules: Option<Vec<(String, String)>>,
    pub clients: Option<Vec<(String, i32)>>,
    /// The raw body of its `o` answer (open.mp only).
    pub openmp: Option<Vec<u8>>,
    /// Its `d` answer (SA:MP 0.3.7 only; open.mp answers none).
    pub detail: Option<Vec<DetailRow>>,
}

/// One player of a `d` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailRow {
    pub id: u8,
    pub name: String,
    pub score: i32,
    pub ping: u32,
}

/// The body of a reply to `request` (its 11-byte header echoed), if it is one.
pub fn body<'a>(reply: &'a [u8], request: &[u8]) -> Option<&'a [u8]> {
    (reply.len() >= QUERY_HEADER_LEN && reply[..QUERY_HEADER_LEN] == request[..QUERY_HEADER_LEN])
        .then(|| &reply[QUERY_HEADER_LEN..])
}

/// An `r` body: u16 count, then count x (u8 len + name, u8 len + value).
pub fn parse_rules(b: &[u8]) -> Option<Vec<(String, String)>> {
    let count = u16::from_le_bytes([*b.first()?, *b.get(1)?]) as usize;
    let mut at = 2;
    let mut short = || -> Option<String> {
        let len = *b.get(at)? as usize;
        let s = String::from_utf8_lossy(b.get(at + 1..at + 1 + len)?).into_owned();
        at += 1 + len;
        Some(s)
    };
    let mut out = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        let name = short()?;
        let value = short()?;
        out.push((name, value));
    }
    Some(out)
}

/// A `c` body: u16 count, then count x (u8 len + name, i32 score).
pub fn parse_clients(b: &[u8]) -> Option<Vec<(String, i32)>> {
    let count = u16::from_le_bytes([*b.first()?, *b.get(1)?]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(count.min(1000));
    for _ in 0..count {
        let len = *b.get(at)? as usize;
        let name = String::from_utf8_lossy(b.get(at + 1..at + 1 + len)?).into_owned();
        at += 1 + len;
        let score = i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        out.push((name, score));
    }
    Some(out)
}

/// A `d` body: u16 count, then count x (u8 id, u8 len + name, i32 score,
/// u32 ping).
pub fn parse_detail(b: &[u8]) -> Option<Vec<DetailRow>> {
    let count = u16::from_le_bytes([*b.first()?, *b.get(1)?]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(count.min(1000));
    for _ in 0..count {
        let id = *b.get(at)?;
        let len = *b.get(at + 1)? as usize;
        let name = String::from_utf8_lossy(b.get(at + 2..at + 2 + len)?).into_owned();
        at += 2 + len;
        let score = i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        let ping = u32::from_le_bytes(b.get(at + 4..at + 8)?.try_into().ok()?);
        at += 8;
        out.push(DetailRow { id, name, score, ping });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_clients_parse_and_truncation_is_refused() {
        let rules = [2, 0, 1, b'a', 1, b'1', 3, b'm', b'a', b'p', 2, b'L', b'S'];
        assert_eq!(parse_rules(&rules), Some(vec![("a".into(), "1".into()), ("map".into(), "LS".into())]));
        assert_eq!(parse_rules(&rules[..rules.len() - 1]), None);
        let clients = [1, 0, 2, b'C', b'J', 7, 0, 0, 0];
        assert_eq!(parse_clients(&clients), Some(vec![("CJ".into(), 7)]));
        assert_eq!(parse_clients(&clients[..8]), None);
        let detail = [1, 0, 4, 2, b'C', b'J', 7, 0, 0, 0, 30, 0, 0, 0];
        let row = DetailRow { id: 4, name: "CJ".into(), score: 7, ping: 30 };
        assert_eq!(parse_detail(&detail), Some(vec![row]));
        assert_eq!(parse_detail(&detail[..13]), None);
    }
}
