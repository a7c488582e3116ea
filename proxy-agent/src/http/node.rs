//! What game nodes (`return` role) tell the ingress nodes, whose probes and
//! sessions decide (direct server return keeps the shards' answers off the
//! ingress nodes):
//! - `/node/answered`: the players its shards accepted, so this ingress
//!   node promotes them from pending to established. Form body:
//!   `secret=NODE_SECRET&answered=ip:port@shard,...`; the reply is `ok N`
//!   (N promoted) or `error: <reason>`.
//! - `/node/refused`: the shards its data plane saw refuse a player (port
//!   unreachable: the server process is gone), so this node probes them at
//!   once instead of at its next round. Form body:
//!   `secret=NODE_SECRET&refused=s1,s2`; the reply is `ok N` (N probed now).

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    Method, Request, Response, StatusCode,
};

use super::HttpOwner;
use super::{
    form, text,
    transfer::{body_text, same_secret, Refusal, ShardApi},
    PLAIN,
};
use crate::cluster::answered::Answered;

pub const PATH: &str = "/node/answered";
pub const REFUSED_PATH: &str = "/node/refused";

/// Either path: `ok N` or `error: <reason>`.
pub async fn handle(req: Request<Incoming>, api: &ShardApi, owner: &impl HttpOwner) -> Response<Full<Bytes>> {
    let outcome =
        if req.uri().path() == REFUSED_PATH { refused(req, api, owner).await } else { answered(req, api, owner).await };
    match outcome {
        Ok(n) => text(StatusCode::OK, PLAIN, format!("ok {n}")),
        Err((status, why)) => text(status, PLAIN, format!("error: {why}")),
    }
}

async fn answered(req: Request<Incoming>, api: &ShardApi, owner: &impl HttpOwner) -> Result<usize, Refusal> {
    let list = secured_field(req, api, "answered").await?;
    let list = Answered::decode(&list).map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    Ok(owner.answered(list).await)
}

async fn refused(req: Request<Incoming>, api: &ShardApi, owner: &impl HttpOwner) -> Result<usize, Refusal> {
    let list = secured_field(req, api, "refused").await?;
    Ok(owner.refused(list.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect()).await)
}

/// The one field `name` of a POSTed form that carries the node secret.
async fn secured_field(req: Request<Incoming>, api: &ShardApi, name: &str) -> Result<String, Refusal> {
    if req.method() != Method::POST {
        return Err((StatusCode::METHOD_NOT_ALLOWED, format!("use POST with secret and {name}")));
    }
    let body = body_text(req.into_body()).await?;
    let mut f = form::parse(&body, &["secret", name]).map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    let (secret, value) = (f.take("secret"), f.take(name));
    let Some(expected) = &api.node_secret else {
        return Err((StatusCode::FORBIDDEN, "this agent has no node_secret".into()));
    };
    if !same_secret(secret.map_err(|why| (StatusCode::BAD_REQUEST, why))?.as_bytes(), expected.as_bytes()) {
        return Err((StatusCode::FORBIDDEN, "wrong secret".into()));
    }
    value.map_err(|why| (StatusCode::BAD_REQUEST, why))
}

/// A game node's side: sends each batch of accepted players to every
/// ingress agent (plain HTTP/1.1, one connection a batch; a failed send is
/// logged and dropped: the player is still pending there, and its next
/// handshake answer is reported again).
pub async fn report(
    batches: tokio::sync::mpsc::UnboundedReceiver<Vec<Answered>>,
    agents: Vec<std::net::SocketAddrV4>,
    secret: String,
) {
    post_batches(batches, &agents, PATH, |batch| {
        let form =
            format!("secret={secret}&answered={}", Answered::encode(batch).replace(':', "%3A").replace('@', "%40"));
        (form, format!("of {} accepted players", batch.len()), false)
    })
    .await
}

/// A game node's side: names each batch of shards its data plane saw
/// refuse a player to every ingress agent (the data plane sends at most one
/// such event per shard every few milliseconds). A failed send is logged:
/// the ingress agents' own probes notice within a round.
pub async fn report_refused(
    batches: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
    agents: Vec<std::net::SocketAddrV4>,
    secret: String,
) {
    post_batches(batches, &agents, REFUSED_PATH, |batch| {
        batch.sort_unstable();
        batch.dedup();
        (
            format!("secret={secret}&refused={}", batch.join(",")),
            format!("that {} refused a player", batch.join(", ")),
            true,
        )
    })
    .await
}

/// Posts each batch (with whatever queued behind it) to every agent at
/// `path`; `form` gives the body, what to call it in the log, and whether
/// a delivery is logged too.
async fn post_batches<T>(
    mut batches: tokio::sync::mpsc::UnboundedReceiver<Vec<T>>,
    agents: &[std::net::SocketAddrV4],
    path: &str,
    mut form: impl FnMut(&mut Vec<T>) -> (String, String, bool),
) {
    while let Some(mut batch) = batches.recv().await {
        while let Ok(more) = batches.try_recv() {
            batch.extend(more);
        }
        let (body, what, log_delivery) = form(&mut batch);
        for agent in agents {
            match post(*agent, path, &body).await {
                Ok(()) if log_delivery => log::info!("told {agent} {what}"),
                Ok(()) => {}
                Err(e) => log::warn!("telling {agent} {what}: {e}"),
            }
        }
    }
}

async fn post(agent: std::net::SocketAddrV4, path: &str, body: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(agent).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {agent}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).await?;
        match reply.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            _ => Err(std::io::Error::other(reply.lines().last().unwrap_or("no answer").to_string())),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 2 s"))?
}
