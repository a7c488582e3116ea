//! A stand-in for the Kubernetes API server, for tests. No real API server
//! can run on this machine (no kube-apiserver, kind, k3s or envtest), so
//! the agent's Kubernetes side is tested against this: plain HTTP/1.1 on a
//! listener the test makes (in any network namespace), answering the real
//! client (kube-rs) the way the API server and Agones do wherever the
//! agent touches them. `tests/kube_standin.rs` proves it with kube-rs.
//!
//! # What it covers
//!
//! - **GameServers** (`agones.dev/v1`, `/apis/agones.dev/v1/namespaces/{ns}/gameservers[/{name}]`)
//!   and **Leases** (`coordination.k8s.io/v1`, `.../leases[/{name}]`):
//!   list (label selectors `k=v`, `k==v`, `k!=v`, `k in (..)`, `k notin (..)`,
//!   `k`, `!k`; field selectors on `metadata.name` / `metadata.namespace`;
//!   `limit` / `continue`), watch (below), get, create
//!   (409 AlreadyExists), replace (409 Conflict on a stale
//!   `metadata.resourceVersion`), merge patch (RFC 7386, `null` deletes),
//!   JSON patch (RFC 6902), delete (with preconditions). Both kinds also
//!   list and watch across namespaces (`/apis/{group}/v1/{plural}`).
//! - Objects are JSON with a cluster-wide resourceVersion counter (strings,
//!   increasing), `uid`, `creationTimestamp`, `namespace`, `name`,
//!   `generation` (bumped when `spec` changes). A write that changes
//!   nothing writes nothing.
//! - **Watches**: newline-delimited events in a chunked body, replayed from
//!   a resourceVersion out of a history; a resourceVersion older than the
//!   compaction point gets one `ERROR` event (Status `Expired`, code 410,
//!   "too old resource version: X (Y)") and the stream ends, with HTTP 200,
//!   as the real server does; label selectors turn an object that stops
//!   matching into `DELETED` and one that starts matching into `ADDED`;
//!   `BOOKMARK`s when allowed (every [`KubeApi::set_bookmark_interval`]),
//!   `sendInitialEvents` (streaming lists), `timeoutSeconds`.
//!   [`KubeApi::expire_watches`] compacts: every open watch gets the 410
//!   and ends, and old resourceVersions are too old from then on.
//! - **GameServerAllocations** (`allocation.agones.dev/v1`, POST only),
//!   as Agones answers them, with forced answers and a log (module
//!   `allocation`).
//! - Errors are `Status` objects with the API server's reasons and codes
//!   (NotFound, AlreadyExists, Conflict, Expired, Invalid, BadRequest,
//!   MethodNotAllowed, UnsupportedMediaType, InternalError...). A bad
//!   request gets a 400 Status, never a panic.
//! - `/version` answers like a v1.33.0 server. Any other path is a 404
//!   Status and a line on stderr (`kube stand-in: nothing served at ...`).
//! - `Accept: application/json;as=PartialObjectMetadata...` (kube-rs's
//!   `*_metadata` calls) gets `PartialObjectMetadata(List)` objects.
//! - Outages: [`KubeApi::set_reachability`] cuts every connection (open
//!   watches end) or goes silent.
//!
//! # What it does not cover
//!
//! Authentication and authorization (no token is checked, nothing is
//! forbidden), TLS, HTTP/2, protobuf, gzip, field selectors other than
//! `metadata.name` / `metadata.namespace`, server-side apply (415), dry
//! runs (400), strategic merge patch on GameServers (415, as for any custom
//! resource; on Leases it is applied as a merge patch), subresources
//! (`/status`, `/scale`: 404), `deletecollection`, finalizers and graceful
//! deletion (a DELETE removes at once), lists at an exact older
//! resourceVersion (the current state is served), admission, defaulting
//! and schema validation of custom resources, discovery (`/api`, `/apis`:
//! 404), any resource but the three above, Agones's controller (nothing
//! moves a GameServer between states unless the test does).
//!
//! # kube-rs against it (what the agent must do the same way)
//!
//! - `kube::Client::try_from(kube::Config::new("http://127.0.0.1:PORT".parse()?))`
//!   works with kube 5 built with `rustls-tls`: its connector is
//!   `hyper_rustls`'s `https_or_http()`, so an `http://` cluster URL is
//!   spoken to in plain HTTP/1.1. No token, no certificates are needed.
//! - `Config::new` turns on kube's default retry: a 429, 503 or 504 answer
//!   is retried (up to 15 times, backoff from 5 ms; `Retry-After` honoured),
//!   POSTs included. So one forced 503 on an allocation makes two
//!   allocation requests; 500 is not retried. `config.default_retry = false`
//!   turns it off.
//! - `Config::new` sets no read timeout: against a silent server a request
//!   waits forever unless the caller bounds it (`tokio::time::timeout`).
//! - `kube::runtime::watcher` (default `ListWatch`) lists with `limit=500`
//!   and no resourceVersion (`any_semantic()` would add
//!   `resourceVersion=0&resourceVersionMatch=NotOlderThan`, but kube leaves
//!   both out when a limit is set, so with the default page size the list
//!   is the same), pages with `continue`, then watches with
//!   `watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=<list's>`
//!   (plus `labelSelector` / `fieldSelector`); `streaming_lists()` instead
//!   watches from `resourceVersion=0` with `sendInitialEvents=true&resourceVersionMatch=NotOlderThan`.
//!   It lists and watches only while its stream is polled (drive it from
//!   a task of its own). A stream that ends is resumed from the last
//!   resourceVersion seen; an `ERROR` event with code 410 yields
//!   `Err(watcher::Error::WatchError)` once and then re-lists from scratch
//!   (`Event::Init`, `InitApply`..., `InitDone`: objects deleted meanwhile
//!   are simply absent, no `Delete` comes for them). A failed request
//!   yields an `Err` and is retried at once on the next poll: use
//!   `WatchStreamExt::default_backoff()`. With no event for 290 s + margin
//!   it reconnects by itself. A bare `Api::watch` from a too-old
//!   resourceVersion gets `Ok(WatchEvent::Error(status))` (HTTP 200), not
//!   an `Err`.
//! - Patches: `Patch::Merge` sends `application/merge-patch+json`,
//!   `Patch::Json` (feature `jsonpatch`) `application/json-patch+json`,
//!   `Patch::Strategic` `application/strategic-merge-patch+json` (415 on a
//!   custom resource, as on a real server), `Patch::Apply`
//!   `application/apply-patch+yaml` (not served here). POST and PUT send
//!   `application/json`; watches send `Accept-Encoding: identity`.
//! - Errors come back as `kube::Error::Api(status)` with `status.code` and
//!   `status.reason` as above.

mod allocation;
mod clock;
mod gameserver;
mod kinds;
mod patch;
mod routes;
mod selector;
mod server;
mod status;
mod store;
mod watch;

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::Duration,
};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

pub use self::{
    allocation::{AllocationAnswer, AllocationOutcome, AllocationRecord},
    gameserver::GameServerSpec,
    kinds::Kind,
    server::{Reachability, RequestRecord},
};
use self::{
    server::{ServerThread, Shared},
    store::Key,
};

/// A running stand-in API server. Clones share it; it stops (every
/// connection closes) when the last clone is dropped.
#[derive(Clone)]
pub struct KubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _server: Arc<ServerThread>,
    /// More listeners on the same state (`serve_also`).
    more: Arc<std::sync::Mutex<Vec<ServerThread>>>,
}

impl KubeApi {
    /// Serves on `listener`, on a thread of its own. Make the listener in a
    /// network namespace (`NetNs::run(|| TcpListener::bind("127.0.0.1:0"))`)
    /// to serve there.
    pub fn start(listener: TcpListener) -> Result<KubeApi> {
        let addr = listener.local_addr().context("the stand-in's listener has no address")?;
        let shared = Arc::new(Shared::default());
        let server = server::spawn(listener, shared.clone()).context("starting the stand-in API server")?;
        Ok(KubeApi { shared, addr, _server: Arc::new(server), more: Default::default() })
    }

    /// Serves the same API (same objects, watches and controls) on another
    /// listener too: one per network namespace, so agents in several
    /// namespaces share one API server. Returns that listener's URL.
    pub fn serve_also(&self, listener: TcpListener) -> Result<String> {
        let addr = listener.local_addr().context("the extra listener has no address")?;
        let server = server::spawn(listener, self.shared.clone()).context("serving on another listener")?;
        self.more.lock().map_err(|_| anyhow!("a thread panicked holding the listeners"))?.push(server);
        Ok(format!("http://{addr}"))
    }

    /// Serves on 127.0.0.1 (an unused port) in the current namespace.
    pub fn start_local() -> Result<KubeApi> {
        KubeApi::start(TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?)
    }

    /// `http://127.0.0.1:PORT`: the cluster URL for `kube::Config::new`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ----- objects of any kind -----

    pub fn object(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store().get(&Key::new(kind, namespace, name)).cloned()
    }

    /// The objects of `kind` in `namespace`, in name order.
    pub fn objects(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        self.shared.store().list(kind, Some(namespace)).map(|(_, o)| o.clone()).collect()
    }

    /// Creates an object as a client's POST would (the namespace is taken
    /// from `metadata.namespace`); watches see ADDED. Returns it as stored.
    pub fn create(&self, kind: Kind, obj: Value) -> Result<Value> {
        let ns =
            obj["metadata"]["namespace"].as_str().ok_or_else(|| anyhow!("the object has no metadata.namespace"))?;
        let ns = ns.to_string();
        self.shared.store().create(kind, &ns, obj).map_err(|e| anyhow!("creating the {}: {}", kind.kind(), e.message))
    }

    /// Changes an object in one write (watches see one MODIFIED, or
    /// nothing if `edit` changed nothing). The server's fields (uid,
    /// resourceVersion, ...) are kept whatever `edit` does.
    pub fn modify(&self, kind: Kind, namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Result<Value> {
        self.shared
            .store()
            .update(kind, namespace, name, |obj| {
                edit(obj);
                obj["metadata"]["resourceVersion"] = Value::Null;
                Ok(())
            })
            .map_err(|e| anyhow!("changing {} {namespace}/{name}: {}", kind.kind(), e.message))
    }

    /// Deletes an object; watches see DELETED. Returns it as it was.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value> {
        self.shared
            .store()
            .delete(kind, namespace, name, &Value::Null)
            .map_err(|e| anyhow!("deleting {} {namespace}/{name}: {}", kind.kind(), e.message))
    }

    // ----- GameServers -----

    /// Adds a GameServer the way Agones makes one (see [`GameServerSpec`]).
    pub fn add_gameserver(&self, spec: &GameServerSpec) -> Result<Value> {
        self.create(Kind::GameServer, spec.to_object())
    }

    pub fn gameserver(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::GameServer, namespace, name)
    }

    pub fn gameservers(&self, namespace: &str) -> Vec<Value> {
        self.objects(Kind::GameServer, namespace)
    }

    /// Sets `status.state` (Ready, Allocated, Shutdown, Unhealthy, ...).
    pub fn set_gameserver_state(&self, namespace: &str, name: &str, state: &str) -> Result<Value> {
        self.modify(Kind::GameServer, namespace, name, |gs| gs["status"]["state"] = Value::from(state))
    }

    pub fn modify_gameserver(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Result<Value> {
        self.modify(Kind::GameServer, namespace, name, edit)
    }

    pub fn delete_gameserver(&self, namespace: &str, name: &str) -> Result<Value> {
        self.delete(Kind::GameServer, namespace, name)
    }

    // ----- Leases -----

    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::Lease, namespace, name)
    }

    // ----- watches -----

    /// Compacts the history: every open watch gets a 410 `ERROR` event
    /// ("too old resource version") and ends, and a watch from any
    /// resourceVersion before now is too old. kube-rs's watcher then lists
    /// again.
    pub fn expire_watches(&self) {
        self.shared.store().compact_all();
    }

    /// Watches open right now (a test can wait for an agent's watch).
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches()
    }

    /// The cluster's current resourceVersion.
    pub fn resource_version(&self) -> String {
        self.shared.store().last_rv().to_string()
    }

    /// How often watches that allow bookmarks get one (default 60 s, about
    /// what the API server does); applies to watches opened afterwards.
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared.set_bookmark_interval(every);
    }

    // ----- allocations -----

    /// Queues a forced answer for the next allocation request that has
    /// none yet (first queued, first used).
    pub fn queue_allocation_answer(&self, answer: AllocationAnswer) {
        self.shared.allocations().forced.push_back(answer);
    }

    /// Forgets the forced answers not used yet.
    pub fn clear_allocation_answers(&self) {
        self.shared.allocations().forced.clear();
    }

    /// Waits this long before every allocation answer (on top of a forced
    /// delay); zero to stop.
    pub fn set_allocation_delay(&self, delay: Duration) {
        self.shared.allocations().delay = delay;
    }

    /// Every allocation request so far, oldest first, with its outcome.
    pub fn allocations(&self) -> Vec<AllocationRecord> {
        self.shared.allocations().log.clone()
    }

    // ----- the server itself -----

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests().clone()
    }

    /// Serving, cutting every connection, or silent (see [`Reachability`]).
    pub fn set_reachability(&self, reach: Reachability) {
        self.shared.reach.send_replace(reach);
    }

    /// `true`: cut every connection and refuse new ones; `false`: serve.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.set_reachability(if unreachable { Reachability::Closing } else { Reachability::Up });
    }
}
