//! HTTP on `metrics_listen` (hyper, HTTP/1.1): `/metrics` in the Prometheus
//! text format, `/live` and `/ready` for probes, and the shard-facing
//! `/shard/transfer` (see `transfer`). Every answer but a transfer is built
//! from the cluster owner's last published snapshot: such a request never
//! waits for the owner and reads no map. Read-only routes go in [`route`].

mod form;
mod metrics;
pub mod node;
mod peer_metrics;
mod site_metrics;
pub mod transfer;

use std::{convert::Infallible, net::IpAddr, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

pub use self::{metrics::render, transfer::ShardApi};
use crate::{
    cluster::{answered::Answered, snapshot::Snapshot, TransferAsk},
    control::{error::ControlError, views::MoveReport},
};

/// What the HTTP endpoint needs of the cluster's owner.
pub trait HttpOwner: Clone + Send + Sync + 'static {
    /// The last published snapshot; never waits for the owner.
    fn snapshot(&self) -> std::sync::Arc<Snapshot>;
    /// Players game nodes' shards accepted; returns how many were promoted.
    fn answered(&self, list: Vec<Answered>) -> impl std::future::Future<Output = usize> + Send;
    /// Shards a game node saw refuse players; returns how many are probed now.
    fn refused(&self, shards: Vec<String>) -> impl std::future::Future<Output = usize> + Send;
    /// An area transfer; the reply names the shard that held the player.
    fn transfer(
        &self,
        ask: TransferAsk,
    ) -> impl std::future::Future<Output = Result<(String, MoveReport), ControlError>> + Send;
}

/// A client gets this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// And this long for the whole exchange, so a client that stops reading
/// cannot keep a task alive.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

const PLAIN: &str = "text/plain; charset=utf-8";

pub async fn serve(listener: TcpListener, owner: impl HttpOwner, shard_api: ShardApi) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer.ip(), owner.clone(), shard_api.clone()));
            }
            Err(e) => crate::control::back_off("metrics: accepting a connection", e).await,
        }
    }
}

/// One connection, one request: keep-alive is off, so the answer ends the
/// connection (a scrape every few seconds gains nothing from reuse, and
/// clients that read until the server closes keep working).
async fn connection(stream: TcpStream, peer: IpAddr, owner: impl HttpOwner, shard_api: ShardApi) {
    let service = service_fn(move |req: Request<Incoming>| {
        let (owner, shard_api) = (owner.clone(), shard_api.clone());
        async move {
            let answer = if req.uri().path() == transfer::PATH {
                transfer::handle(req, peer, &shard_api, &owner).await
            } else if req.uri().path() == node::PATH || req.uri().path() == node::REFUSED_PATH {
                node::handle(req, &shard_api, &owner).await
            } else {
                route(req.method(), req.uri().path(), &owner.snapshot())
            };
            Ok::<_, Infallible>(answer)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::debug!("metrics: connection ended with an error: {e}"),
        Err(_) => log::debug!("metrics: connection took longer than {CONNECTION_TIMEOUT:?}; closed"),
    }
}

/// Every route of the endpoint: what a request gets, from the snapshot alone.
fn route(method: &Method, path: &str, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let known = ["/metrics", "/live", "/ready"];
    if known.contains(&path) && method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, format!("{path} answers GET and HEAD only\n"));
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => match render(&snapshot.status) {
            Ok(body) => text(StatusCode::OK, metrics::CONTENT_TYPE, body),
            Err(e) => {
                log::warn!("metrics: rendering the snapshot failed: {e}");
                text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("rendering the metrics failed: {e}\n"))
            }
        },
        "/live" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/ready" => match not_ready(snapshot) {
            None => text(StatusCode::OK, PLAIN, "ok\n"),
            Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("not ready: {reason}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "try /metrics, /live, /ready or /shard/transfer\n"),
    }
}

/// Why the agent is not ready yet, in one line; `None` when it is. The
/// reason is the owner's own, by name.
fn not_ready(snapshot: &Snapshot) -> Option<String> {
    let agent = &snapshot.status.agent;
    match (snapshot.taken, agent.ready) {
        (None, _) => Some("the agent is starting and has published no status yet".to_string()),
        (Some(_), true) => None,
        (Some(_), false) => Some(agent.not_ready.clone().unwrap_or_else(|| "not ready".to_string())),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http_body_util::BodyExt;

    use super::*;
    use crate::control::views::ShardView;

    fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = futures_now(r.into_body().collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// A `Full` body is ready at once: poll it on a throwaway runtime.
    fn futures_now<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn routes() {
        let mut snap = Snapshot::default();
        snap.status.shards.push(ShardView { name: "s1".into(), health: "unchecked".into(), ..Default::default() });

        let r = route(&Method::GET, "/metrics", &snap);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; version=0.0.4");
        assert!(body(r).contains("samp_proxy_shard_capacity{shard=\"s1\"} 0"));

        let r = route(&Method::GET, "/live", &snap);
        assert_eq!((r.status(), body(r).as_str()), (StatusCode::OK, "ok\n"));

        let r = route(&Method::GET, "/ready", &snap);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(r), "not ready: the agent is starting and has published no status yet\n");
        snap.taken = Some(Instant::now());
        snap.status.agent.not_ready = Some(crate::cluster::snapshot::NotReady::NoHealthRound.to_string());
        let r = route(&Method::GET, "/ready", &snap);
        assert_eq!(body(r), "not ready: no health round has finished yet\n");
        snap.status.agent.not_ready = Some(crate::cluster::snapshot::NotReady::HalfApplied.to_string());
        let r = route(&Method::GET, "/ready", &snap);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(r), "not ready: a reload or failover is half applied\n");
        snap.status.agent.ready = true;
        let r = route(&Method::GET, "/ready", &snap);
        assert_eq!((r.status(), body(r).as_str()), (StatusCode::OK, "ok\n"));

        let r = route(&Method::GET, "/nope", &snap);
        assert_eq!(
            (r.status(), body(r).as_str()),
            (StatusCode::NOT_FOUND, "try /metrics, /live, /ready or /shard/transfer\n")
        );
        let r = route(&Method::POST, "/metrics", &snap);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }
}
