//! The shard-facing API: `/shard/transfer`, an area transfer a gamemode asks
//! for with Pawn's `HTTP()` native (plain HTTP, GET or POST, a form body, no
//! custom headers). The reply is short plain text a script can compare:
//! exactly `ok`, or `error: <reason>`, with a fitting status code.
//!
//! Who may ask: the request must carry the cluster's shard secret and come
//! from the address of the shard that holds the player (checked by the
//! cluster owner against the session tables).

use std::net::{IpAddr, SocketAddrV4};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::{Bytes, Incoming},
    Method, Request, Response, StatusCode,
};

use super::{form, text, PLAIN};
use crate::{cluster::TransferAsk, control::error::ControlError};

pub const PATH: &str = "/shard/transfer";
/// A form of three short fields fits many times over.
const MAX_BODY: usize = 4096;

/// What the node-facing routes need beyond the owner: the shard secret (if
/// transfers are on) and the node secret (if game nodes may report).
#[derive(Clone, Default)]
pub struct ShardApi {
    pub secret: Option<String>,
    pub node_secret: Option<String>,
}

/// Answers one `/shard/transfer` request from `peer`.
pub async fn handle(
    req: Request<Incoming>,
    peer: IpAddr,
    api: &ShardApi,
    owner: &impl super::HttpOwner,
) -> Response<Full<Bytes>> {
    match transfer(req, peer, api, owner).await {
        Ok(()) => text(StatusCode::OK, PLAIN, "ok"),
        Err((status, why)) => text(status, PLAIN, format!("error: {why}")),
    }
}

pub(super) type Refusal = (StatusCode, String);

async fn transfer(
    req: Request<Incoming>,
    peer: IpAddr,
    api: &ShardApi,
    owner: &impl super::HttpOwner,
) -> Result<(), Refusal> {
    let form = match *req.method() {
        Method::GET => req.uri().query().unwrap_or("").to_string(),
        Method::POST => body_text(req.into_body()).await?,
        _ => return Err((StatusCode::METHOD_NOT_ALLOWED, "use POST (or GET) with secret, client and to".into())),
    };
    let form = Form::parse(&form).map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    let Some(secret) = &api.secret else {
        return Err((StatusCode::FORBIDDEN, "transfers are off: the agent has no shard_secret".into()));
    };
    if !same_secret(form.secret.as_bytes(), secret.as_bytes()) {
        return Err((StatusCode::FORBIDDEN, "wrong secret".into()));
    }
    let requester = match peer {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().ok_or_else(|| (StatusCode::FORBIDDEN, format!("{ip} is not a shard")))?,
    };
    let client: SocketAddrV4 = form
        .client
        .parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, format!("`{}` is not a client IPv4:port", form.client)))?;
    let ask = TransferAsk { requester, client, to: form.to };
    owner.transfer(ask).await.map(|_| ()).map_err(|e| (status_of(&e), e.to_string()))
}

pub(super) async fn body_text(body: Incoming) -> Result<String, Refusal> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {MAX_BODY} bytes or broken")))?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| (StatusCode::BAD_REQUEST, "the body is not UTF-8".into()))
}

fn status_of(e: &ControlError) -> StatusCode {
    use ControlError::*;
    match e {
        NotAShard(_) | NotYourPlayer { .. } => StatusCode::FORBIDDEN,
        NoSession(_) | UnknownShard { .. } => StatusCode::NOT_FOUND,
        NoRoomForClients { .. } | Drained(_) | SameShard(_) => StatusCode::CONFLICT,
        BadRequest(_) | BadClient(_) => StatusCode::BAD_REQUEST,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Compares in time independent of where the inputs differ.
pub(super) fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len() && given.iter().zip(secret).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The three fields of a transfer request.
#[derive(Debug, PartialEq)]
struct Form {
    secret: String,
    client: String,
    to: String,
}

impl Form {
    /// `application/x-www-form-urlencoded`: every field once, nothing else.
    fn parse(text: &str) -> Result<Form, String> {
        let mut f = form::parse(text, &["secret", "client", "to"])?;
        Ok(Form { secret: f.take("secret")?, client: f.take("client")?, to: f.take("to")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let f = Form::parse("secret=abc%2Bdef&client=198.18.0.2%3A5000&to=red+county").unwrap();
        assert_eq!(f, Form { secret: "abc+def".into(), client: "198.18.0.2:5000".into(), to: "red county".into() });
        assert_eq!(Form::parse("secret=a&client=b").unwrap_err(), "missing field `to`");
        assert_eq!(
            Form::parse("secret=a&client=b&to=c&x=1").unwrap_err(),
            "unknown field `x`; send secret, client, to"
        );
        assert_eq!(Form::parse("secret=a&secret=b&client=b&to=c").unwrap_err(), "field `secret` given twice");
        assert_eq!(Form::parse("secret=%zz&client=b&to=c").unwrap_err(), "a bad %-escape in the form");
        assert_eq!(Form::parse("secret=%e2%82&client=b&to=c").unwrap_err(), "the form is not UTF-8");
        assert!(Form::parse("secret=a&client=b&to=c\r\n").is_ok(), "a trailing line end is tolerated");
    }

    #[test]
    fn secrets() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
    }
}
