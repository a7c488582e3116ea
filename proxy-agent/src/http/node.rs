//! `/node/answered`: a game node (`return` role) reports the players its
//! shards accepted, so this ingress node promotes them from pending to
//! established (direct server return keeps the shards' answers off this
//! node). Form body: `secret=NODE_SECRET&answered=ip:port@shard,...`;
//! the reply is `ok N` (N promoted) or `error: <reason>`.

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    Method, Request, Response, StatusCode,
};

use super::{
    form, text,
    transfer::{body_text, same_secret, Refusal, ShardApi},
    PLAIN,
};
use crate::cluster::{answered::Answered, owner::OwnerHandle};

pub const PATH: &str = "/node/answered";

pub async fn handle(req: Request<Incoming>, api: &ShardApi, owner: &OwnerHandle) -> Response<Full<Bytes>> {
    match answered(req, api, owner).await {
        Ok(n) => text(StatusCode::OK, PLAIN, format!("ok {n}")),
        Err((status, why)) => text(status, PLAIN, format!("error: {why}")),
    }
}

async fn answered(req: Request<Incoming>, api: &ShardApi, owner: &OwnerHandle) -> Result<usize, Refusal> {
    if req.method() != Method::POST {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "use POST with secret and answered".into()));
    }
    let body = body_text(req.into_body()).await?;
    let mut f = form::parse(&body, &["secret", "answered"]).map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    let (secret, list) = (f.take("secret"), f.take("answered"));
    let Some(expected) = &api.node_secret else {
        return Err((StatusCode::FORBIDDEN, "this agent has no node_secret".into()));
    };
    if !same_secret(secret.map_err(|why| (StatusCode::BAD_REQUEST, why))?.as_bytes(), expected.as_bytes()) {
        return Err((StatusCode::FORBIDDEN, "wrong secret".into()));
    }
    let list = Answered::decode(&list.map_err(|why| (StatusCode::BAD_REQUEST, why))?)
        .map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    Ok(owner.answered(list).await)
}

/// A game node's side: sends each batch of accepted players to every
/// ingress agent (plain HTTP/1.1, one connection a batch; a failed send is
/// logged and dropped: the player is still pending there, and its next
/// handshake answer is reported again).
pub async fn report(
    mut batches: tokio::sync::mpsc::UnboundedReceiver<Vec<Answered>>,
    agents: Vec<std::net::SocketAddrV4>,
    secret: String,
) {
    while let Some(mut batch) = batches.recv().await {
        while let Ok(more) = batches.try_recv() {
            batch.extend(more);
        }
        let body =
            format!("secret={secret}&answered={}", Answered::encode(&batch).replace(':', "%3A").replace('@', "%40"));
        for agent in &agents {
            if let Err(e) = post(*agent, &body).await {
                log::warn!("telling {agent} of {} accepted players: {e}", batch.len());
            }
        }
    }
}

async fn post(agent: std::net::SocketAddrV4, body: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(agent).await?;
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nHost: {agent}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
