//! A decision's encoding in the log's `body` column: JSON, serde's default
//! shape (`{"MoveShard":{"from":"a","to":"b","why":"…"}}`), readable with
//! the `mariadb` client. Reading never panics: a row that is not a decision
//! is an error naming its seq.

use super::{Decision, Error};

/// The longest body accepted either way (a decision is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

pub fn encode(d: &Decision) -> String {
    // Serializing plain strings and bools into JSON cannot fail.
    serde_json::to_string(d).expect("a Decision serializes")
}

pub fn decode(seq: u64, body: &[u8]) -> Result<Decision, Error> {
    if body.len() > MAX_BODY {
        return Err(Error::Garbled { seq, problem: format!("the body is {} bytes (at most {MAX_BODY})", body.len()) });
    }
    serde_json::from_slice(body).map_err(|e| Error::Garbled { seq, problem: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_the_documented_shape() {
        let d = Decision::MoveShard { from: "ls-1".into(), to: "ls-2".into(), why: "ls-1 down".into() };
        assert_eq!(encode(&d), r#"{"MoveShard":{"from":"ls-1","to":"ls-2","why":"ls-1 down"}}"#);
        assert_eq!(decode(1, encode(&d).as_bytes()).unwrap(), d);
        let d = Decision::Drain { shard: "ls-1".into(), drained: true };
        assert_eq!(encode(&d), r#"{"Drain":{"shard":"ls-1","drained":true}}"#);
        assert_eq!(decode(2, encode(&d).as_bytes()).unwrap(), d);
    }

    #[test]
    fn garbage_names_its_seq() {
        for body in [&b"{\"Nuke\":{}}"[..], b"", b"\xff\xfe", b"{\"Drain\":{\"shard\":1}}", b"[1,2"] {
            match decode(42, body) {
                Err(Error::Garbled { seq: 42, .. }) => {}
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let huge = vec![b' '; MAX_BODY + 1];
        assert!(matches!(decode(3, &huge), Err(Error::Garbled { seq: 3, problem }) if problem.contains("bytes")));
    }
}
