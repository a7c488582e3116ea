//! Watches: a chunked HTTP body of newline-delimited `{"type", "object"}`
//! events, as the API server streams them.
//!
//! - From a resourceVersion, every change after it is replayed from the
//!   history, then live changes follow. Below the compaction point the
//!   stream is one `ERROR` event (Status `Expired`, 410, "too old resource
//!   version: X (Y)") and its end, with HTTP 200 as the real server does;
//!   kube-rs's watcher then lists again. An open watch whose position gets
//!   compacted away (`KubeApi::expire_watches`) gets the same and ends.
//! - Without a resourceVersion (or with "0") the current objects come
//!   first as `ADDED` ("start at most recent" / "any").
//! - `sendInitialEvents=true` (kube-rs's streaming lists): the current
//!   objects as `ADDED`, then a `BOOKMARK` annotated
//!   `k8s.io/initial-events-end: "true"`.
//! - Selectors apply to each change's old and new object: an object that
//!   stops matching is sent as `DELETED` (its last matching content, at the
//!   change's resourceVersion), one that starts matching as `ADDED`.
//! - `allowWatchBookmarks=true`: a `BOOKMARK` every bookmark interval.
//! - `timeoutSeconds` ends the stream cleanly (the final empty chunk).

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::BodyExt;
use hyper::{
    body::{Bytes, Frame},
    header::{HeaderValue, CONTENT_TYPE},
    Response, StatusCode,
};
use serde_json::{json, Value};
use tokio::{sync::mpsc, time::Instant};

use super::{
    kinds::Kind,
    routes::View,
    selector::Filter,
    server::{Body, Shared},
    store::{Change, Store, TooOld},
};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No resourceVersion: the current objects, then changes.
    Now,
    /// resourceVersion "0": the same, from "any" state (the stand-in's is
    /// always the latest).
    Any,
    /// Every change after this resourceVersion.
    After(u64),
}

#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub kind: Kind,
    /// None: every namespace.
    pub namespace: Option<String>,
    pub filter: Filter,
    pub start: Start,
    pub send_initial_events: Option<bool>,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub view: View,
}

impl WatchRequest {
    fn selects(&self, namespace: &str, obj: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace) && self.filter.matches(obj)
    }

    /// The event a change makes on this watch, if any.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        if change.key.kind != self.kind {
            return None;
        }
        let ns = &change.key.namespace;
        let was = change.before.as_ref().filter(|o| self.selects(ns, o));
        let is = change.after.as_ref().filter(|o| self.selects(ns, o));
        match (was, is) {
            (None, Some(now)) => Some(self.line("ADDED", now)),
            (Some(_), Some(now)) => Some(self.line("MODIFIED", now)),
            (Some(last), None) => {
                let mut last = last.clone();
                last["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                Some(self.line("DELETED", &last))
            }
            (None, None) => None,
        }
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        event_line(&json!({"type": kind, "object": self.view.object(obj)}))
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let (api_version, kind) = self.view.object_type(self.kind);
        let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            &json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata}}),
        )
    }

    /// The current objects as ADDED events.
    fn initial_events(&self, store: &Store) -> Vec<Bytes> {
        store
            .list(self.kind, self.namespace.as_deref())
            .filter(|(_, obj)| self.filter.matches(obj))
            .map(|(_, obj)| self.line("ADDED", obj))
            .collect()
    }
}

/// The `ERROR` event that ends a watch whose position was compacted away.
fn error_line(too_old: TooOld) -> Bytes {
    event_line(&json!({"type": "ERROR", "object": too_old.error().status()}))
}

fn event_line(event: &Value) -> Bytes {
    let mut line = serde_json::to_vec(event).expect("a JSON value serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// Answers a watch request: 200 now, events as they come.
pub fn respond(shared: Arc<Shared>, watch: WatchRequest) -> Response<Body> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(stream_events(shared, watch, tx));
    let mut r = Response::new(EventBody(rx).boxed());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The response body: whatever the watch task sends, until it stops.
struct EventBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// One watch, until its timeout, its client leaves, or it is expired.
async fn stream_events(shared: Arc<Shared>, watch: WatchRequest, tx: mpsc::Sender<Bytes>) {
    let _open = shared.watch_opened();
    let deadline = Instant::now() + watch.timeout;
    let bookmark_every = shared.bookmark_interval();
    let mut next_bookmark = Instant::now() + bookmark_every;
    // Without a resourceVersion the current objects come first, unless the
    // client says otherwise; with one, only what changed after it.
    let initial = watch.send_initial_events.unwrap_or(!matches!(watch.start, Start::After(_)));
    // Everything up to `cursor` is in `batch` (or was not for this watch);
    // `pulse` wakes the loop for anything written after.
    let (mut pulse, mut cursor, mut batch, mut ended) = {
        let store = shared.store();
        let pulse = store.subscribe();
        let last = store.last_rv();
        match watch.start {
            _ if initial => (pulse, last, watch.initial_events(&store), false),
            Start::After(rv) => match store.changes_after(rv) {
                Ok(changes) => (pulse, last, changes.filter_map(|c| watch.event_for(c)).collect(), false),
                Err(too_old) => (pulse, rv, vec![error_line(too_old)], true),
            },
            Start::Now | Start::Any => (pulse, last, Vec::new(), false),
        }
    };
    if watch.send_initial_events == Some(true) && watch.bookmarks && !ended {
        batch.push(watch.bookmark(cursor, true));
    }

    loop {
        shared.until_answering().await;
        for line in batch.drain(..) {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
        tokio::select! {
            changed = pulse.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tokio::time::sleep_until(next_bookmark), if watch.bookmarks => {
                next_bookmark += bookmark_every;
                batch.push(watch.bookmark(cursor, false));
                continue;
            }
            _ = tx.closed() => return,
        }
        let store = shared.store();
        match store.changes_after(cursor) {
            Ok(changes) => {
                batch.extend(changes.filter_map(|c| watch.event_for(c)));
                cursor = store.last_rv();
            }
            Err(too_old) => {
                batch.push(error_line(too_old));
                ended = true;
            }
        };
    }
}
