//! The control protocol: newline-delimited JSON, one request and one reply a
//! line. Every request carries the protocol version `v`; every reply carries
//! `ok`, and either `data` or an `error` that names the fault.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ControlError;

/// The version this build speaks. Bump it when a request changes meaning.
pub const PROTOCOL_VERSION: u64 = 1;
/// The longest request line the agent reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Every request, tagged by `cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Shards,
    Sessions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Chosen players (`clients`) or every player of `from`, to `to`.
    Migrate {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clients: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        to: String,
    },
    Drain {
        shard: String,
    },
    Undrain {
        shard: String,
    },
    Reload,
    /// Health changes, failovers, migrations, most recent last.
    Events,
    /// Fail a shard's players over now, as a health failure would.
    Failover {
        shard: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

/// The fields each command takes.
fn fields(cmd: &str) -> Option<&'static [&'static str]> {
    Some(match cmd {
        "status" | "shards" | "reload" => &[],
        "sessions" => &["shard", "client"],
        "migrate" => &["clients", "from", "to"],
        "drain" | "undrain" => &["shard"],
        "events" => &[],
        "failover" => &["shard", "to"],
        _ => return None,
    })
}

pub const COMMANDS: &str = "status, shards, sessions, migrate, drain, undrain, reload, events, failover";

impl Request {
    /// The request line a client sends (without the newline).
    pub fn to_line(&self) -> String {
        let mut v = serde_json::to_value(self).expect("requests serialise");
        v.as_object_mut().expect("tagged enum is an object").insert("v".into(), PROTOCOL_VERSION.into());
        v.to_string()
    }

    /// Parses a request line, with an error a human can act on.
    pub fn parse(line: &str) -> Result<Request, ControlError> {
        Self::parse_line(line).map_err(ControlError::BadRequest)
    }

    fn parse_line(line: &str) -> Result<Request, String> {
        let mut v: Value = serde_json::from_str(line).map_err(|e| format!("malformed request: not JSON ({e})"))?;
        let obj =
            v.as_object_mut().ok_or("malformed request: expected a JSON object like {\"v\":1,\"cmd\":\"status\"}")?;
        match obj.remove("v") {
            None => {
                return Err(format!(
                    "request has no protocol version `v`; this agent speaks version {PROTOCOL_VERSION}"
                ))
            }
            Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > PROTOCOL_VERSION) => {
                return Err(format!("request is protocol version {n} but this agent speaks version {PROTOCOL_VERSION}: upgrade the agent, or use the CLI of the agent's release"));
            }
            Some(other) => {
                return Err(format!(
                    "unsupported protocol version {other}; this agent speaks version {PROTOCOL_VERSION}"
                ))
            }
        }
        let cmd = match obj.get("cmd") {
            None => return Err(format!("request has no `cmd`; commands: {COMMANDS}")),
            Some(Value::String(c)) => c.clone(),
            Some(other) => return Err(format!("`cmd` must be a string, not {other}; commands: {COMMANDS}")),
        };
        let Some(allowed) = fields(&cmd) else {
            return Err(format!("unknown command `{cmd}`; commands: {COMMANDS}"));
        };
        // serde ignores unknown fields of unit variants; a typo must not pass silently.
        if let Some(extra) = obj.keys().find(|k| *k != "cmd" && !allowed.contains(&k.as_str())) {
            let expected = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
            return Err(format!("bad arguments: unknown field `{extra}` for `{cmd}`; its fields: {expected}"));
        }
        serde_json::from_value(v).map_err(|e| format!("bad arguments: {e}"))
    }
}

/// A reply line.
pub fn ok_line(data: &impl Serialize) -> String {
    serde_json::json!({ "ok": true, "data": data }).to_string()
}

pub fn error_line(error: &str) -> String {
    serde_json::json!({ "ok": false, "error": error }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status,
            Request::Sessions { shard: Some("a".into()), client: None },
            Request::Migrate { clients: vec!["198.18.0.2:5000".into()], from: None, to: "b".into() },
            Request::Drain { shard: "a".into() },
        ] {
            assert_eq!(Request::parse(&r.to_line()), Ok(r));
        }
    }

    #[test]
    fn each_bad_request_says_why() {
        let cases = [
            ("{", "not JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"cmd":"status"}"#, "no protocol version"),
            (r#"{"v":2,"cmd":"status"}"#, "upgrade the agent"),
            (r#"{"v":"one","cmd":"status"}"#, "unsupported protocol version"),
            (r#"{"v":1}"#, "no `cmd`"),
            (r#"{"v":1,"cmd":"explode"}"#, "unknown command `explode`"),
            (r#"{"v":1,"cmd":"drain"}"#, "missing field `shard`"),
            (r#"{"v":1,"cmd":"status","x":1}"#, "unknown field `x`"),
        ];
        for (line, want) in cases {
            let err = Request::parse(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
