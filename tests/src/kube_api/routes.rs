//! Requests to answers: which path is which resource, and the REST verbs on
//! it (list, watch, get, create, replace, patch, delete), as the API server
//! answers them. Anything else gets a 404 Status and a line on stderr, so a
//! test author sees what the client asked for.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ACCEPT, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use serde_json::{json, Value};

use super::{
    allocation,
    kinds::Kind,
    patch,
    selector::{FieldSelector, Filter, LabelSelector},
    server::{Body, Shared},
    status::ApiError,
    store::Key,
    watch::{self, Start, WatchRequest},
};

/// The API server refuses request bodies over 3 MiB.
const MAX_BODY: usize = 3 * 1024 * 1024;
/// A watch without `timeoutSeconds` lasts the API server's
/// `--min-request-timeout` (1800 s).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// How objects are shown: whole, or as `PartialObjectMetadata` when the
/// client asks for metadata only (`Accept: ...;as=PartialObjectMetadata`,
/// what kube-rs's `*_metadata` calls send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Full,
    Metadata,
}

impl View {
    fn of(req: &Request<Incoming>) -> View {
        let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        if accept.contains("as=PartialObjectMetadata") {
            View::Metadata
        } else {
            View::Full
        }
    }

    pub fn object(self, obj: &Value) -> Value {
        match self {
            View::Full => obj.clone(),
            View::Metadata => json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": obj["metadata"],
            }),
        }
    }

    /// `(apiVersion, kind)` of a list of `kind`.
    fn list_type(self, kind: Kind) -> (&'static str, &'static str) {
        match self {
            View::Full => (kind.api_version(), kind.list_kind()),
            View::Metadata => ("meta.k8s.io/v1", "PartialObjectMetadataList"),
        }
    }

    /// `(apiVersion, kind)` of a BOOKMARK's object.
    pub fn object_type(self, kind: Kind) -> (&'static str, &'static str) {
        match self {
            View::Full => (kind.api_version(), kind.kind()),
            View::Metadata => ("meta.k8s.io/v1", "PartialObjectMetadata"),
        }
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Version,
    Allocations {
        namespace: String,
    },
    /// `namespace` None: the same resource in every namespace (list/watch only).
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        namespace: String,
        name: String,
    },
}

fn route_of(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_start_matches('/').trim_end_matches('/').split('/').collect();
    let kind = |g: &str, v: &str, p: &str| Kind::from_path(g, v, p);
    Some(match segments.as_slice() {
        ["version"] => Route::Version,
        ["apis", "allocation.agones.dev", "v1", "namespaces", ns, "gameserverallocations"] => {
            Route::Allocations { namespace: ns.to_string() }
        }
        ["apis", g, v, "namespaces", ns, p] => {
            Route::Collection { kind: kind(g, v, p)?, namespace: Some(ns.to_string()) }
        }
        ["apis", g, v, "namespaces", ns, p, name] => {
            Route::Object { kind: kind(g, v, p)?, namespace: ns.to_string(), name: name.to_string() }
        }
        ["apis", g, v, p] => Route::Collection { kind: kind(g, v, p)?, namespace: None },
        _ => return None,
    })
}

type Query = BTreeMap<String, String>;

/// Answers one request; never fails (a failure is a Status answer).
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let query_text = req.uri().query().unwrap_or("").to_string();
    shared.requests().push(super::RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query_text.clone(),
        at: std::time::Instant::now(),
    });
    shared.until_answering().await;
    let query: Query = form_urlencoded::parse(query_text.as_bytes()).into_owned().collect();
    let Some(route) = route_of(&path) else {
        eprintln!("kube stand-in: nothing served at {method} {path}?{query_text}: answering 404");
        return error(&ApiError::no_route());
    };
    match answer(&shared, route, req, &query).await {
        Ok(response) => response,
        Err(e) => {
            if e.code >= 500 || e.code == 415 || e.code == 405 {
                eprintln!("kube stand-in: {method} {path}?{query_text}: {} {}: {}", e.code, e.reason, e.message);
            }
            error(&e)
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    route: Route,
    req: Request<Incoming>,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let view = View::of(&req);
    let method = req.method().clone();
    match (route, method) {
        (Route::Version, Method::GET) => Ok(json_answer(StatusCode::OK, &version())),
        (Route::Allocations { namespace }, Method::POST) => {
            let body = body_of(req).await?;
            Ok(allocation::handle(shared.clone(), namespace, body).await)
        }
        (Route::Collection { kind, namespace }, Method::GET) => {
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
                let watch = watch_request(kind, namespace, q, view)?;
                Ok(watch::respond(shared.clone(), watch))
            } else {
                list(shared, kind, namespace.as_deref(), q, view)
            }
        }
        (Route::Collection { kind, namespace: Some(ns) }, Method::POST) => {
            refuse_dry_run(q)?;
            let obj = json_body(req).await?;
            let created = shared.store().create(kind, &ns, obj)?;
            Ok(json_answer(StatusCode::CREATED, &view.object(&created)))
        }
        (Route::Object { kind, namespace, name }, Method::GET) => {
            let store = shared.store();
            let obj = store.get(&Key::new(kind, &namespace, &name)).ok_or_else(|| ApiError::not_found(kind, &name))?;
            Ok(json_answer(StatusCode::OK, &view.object(obj)))
        }
        (Route::Object { kind, namespace, name }, Method::PUT) => {
            refuse_dry_run(q)?;
            let obj = json_body(req).await?;
            if !kind.allows_unconditional_update()
                && obj["metadata"]["resourceVersion"].as_str().is_none_or(str::is_empty)
            {
                return Err(ApiError::invalid(
                    kind,
                    &name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            let replaced = shared.store().update(kind, &namespace, &name, |current| {
                *current = obj;
                Ok(())
            })?;
            Ok(json_answer(StatusCode::OK, &view.object(&replaced)))
        }
        (Route::Object { kind, namespace, name }, Method::PATCH) => {
            refuse_dry_run(q)?;
            let content_type = content_type(&req);
            let body = body_of(req).await?;
            let patched = patch_object(shared, kind, &namespace, &name, &content_type, &body)?;
            Ok(json_answer(StatusCode::OK, &view.object(&patched)))
        }
        (Route::Object { kind, namespace, name }, Method::DELETE) => {
            refuse_dry_run(q)?;
            let body = body_of(req).await?;
            let options: Value = if body.is_empty() { Value::Null } else { parse_json(&body)? };
            let gone = shared.store().delete(kind, &namespace, &name, &options["preconditions"])?;
            if kind.delete_returns_object() {
                Ok(json_answer(StatusCode::OK, &view.object(&gone)))
            } else {
                let uid = gone["metadata"]["uid"].clone();
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": kind.group(), "kind": kind.plural(), "uid": uid},
                });
                Ok(json_answer(StatusCode::OK, &status))
            }
        }
        (_, method) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// GET on a collection: the objects that match, in name order, with the
/// cluster's resourceVersion to start a watch from; `limit` and `continue`
/// page through them. (Later pages show the objects as they are now, not
/// as they were at the first page's resourceVersion; a watch from that
/// resourceVersion then replays the difference, so a client converges.)
fn list(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    q: &Query,
    view: View,
) -> Result<Response<Body>, ApiError> {
    let filter = filter_of(q)?;
    let limit = match q.get("limit") {
        Some(l) => l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let store = shared.store();
    let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, ns, name) =
                parse_continue(token).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            (rv, Some((ns, name)))
        }
        None => {
            if let Some(rv) = q.get("resourceVersion").filter(|rv| !rv.is_empty() && *rv != "0") {
                let rv: u64 =
                    rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
                if rv > store.last_rv() {
                    return Err(ApiError::new(
                        504,
                        "Timeout",
                        format!("Too large resource version: {rv}, current: {}", store.last_rv()),
                    ));
                }
            }
            (store.last_rv(), None)
        }
    };
    let (mut items, mut remaining, mut last) = (Vec::new(), 0u64, None);
    for (key, obj) in store.list(kind, namespace) {
        if after.as_ref().is_some_and(|(ns, name)| (&key.namespace, &key.name) <= (ns, name)) || !filter.matches(obj) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            remaining += 1;
            continue;
        }
        items.push(view.object(obj));
        last = Some(key.clone());
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let (true, Some(last)) = (remaining > 0, last) {
        metadata["continue"] = json!(format!("{list_rv}:{}:{}", last.namespace, last.name));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let (api_version, list_kind) = view.list_type(kind);
    let list = json!({"apiVersion": api_version, "kind": list_kind, "metadata": metadata, "items": items});
    Ok(json_answer(StatusCode::OK, &list))
}

fn parse_continue(token: &str) -> Option<(u64, String, String)> {
    let mut parts = token.splitn(3, ':');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, parts.next()?.to_string(), parts.next()?.to_string()))
}

fn watch_request(kind: Kind, namespace: Option<String>, q: &Query, view: View) -> Result<WatchRequest, ApiError> {
    let flag = |name: &str| -> Result<Option<bool>, ApiError> {
        match q.get(name).map(String::as_str) {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0" | "") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!("{name}: invalid boolean {other:?}"))),
        }
    };
    let start = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Start::Now,
        Some("0") => Start::Any,
        Some(rv) => {
            Start::After(rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?)
        }
    };
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => {
            Duration::from_secs(t.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?)
        }
        None => DEFAULT_WATCH_TIMEOUT,
    };
    Ok(WatchRequest {
        kind,
        namespace,
        filter: filter_of(q)?,
        start,
        send_initial_events: flag("sendInitialEvents")?,
        bookmarks: flag("allowWatchBookmarks")?.unwrap_or(false),
        timeout,
        view,
    })
}

fn filter_of(q: &Query) -> Result<Filter, ApiError> {
    let labels =
        LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields =
        FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    Ok(Filter { labels, fields })
}

/// PATCH in the formats the resource takes.
fn patch_object(
    shared: &Shared,
    kind: Kind,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    const MERGE: &str = "application/merge-patch+json";
    const JSON_PATCH: &str = "application/json-patch+json";
    const STRATEGIC: &str = "application/strategic-merge-patch+json";
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media == MERGE || (media == STRATEGIC && kind.takes_strategic_merge()) {
        let patch = parse_json(body)?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        return shared.store().update(kind, ns, name, |obj| {
            patch::merge_patch(obj, &patch);
            Ok(())
        });
    }
    if media == JSON_PATCH {
        let patch = parse_json(body)?;
        return shared.store().update(kind, ns, name, |obj| {
            patch::json_patch(obj, &patch)
                .map_err(|e| ApiError::invalid(kind, name, &format!("the JSON patch failed: {e}")))
        });
    }
    let accepted = if kind.takes_strategic_merge() {
        format!("{JSON_PATCH}, {MERGE}, {STRATEGIC}")
    } else {
        format!("{JSON_PATCH}, {MERGE}")
    };
    if media == "application/apply-patch+yaml" {
        return Err(ApiError::unsupported_media_type(
            &format!("{media}: the stand-in does not do server-side apply"),
            &accepted,
        ));
    }
    Err(ApiError::unsupported_media_type(media, &accepted))
}

/// The stand-in writes for real or not at all: a dry run would change
/// the store, so it is refused loudly rather than faked.
fn refuse_dry_run(q: &Query) -> Result<(), ApiError> {
    match q.get("dryRun") {
        Some(_) => Err(ApiError::bad_request("the stand-in does not do dryRun")),
        None => Ok(()),
    }
}

fn content_type(req: &Request<Incoming>) -> String {
    req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

async fn body_of(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(ApiError::from_code(413, format!("reading the request body: {e}"))),
    }
}

/// A POST or PUT body: JSON (what kube-rs sends); YAML and protobuf are 415.
async fn json_body(req: Request<Incoming>) -> Result<Value, ApiError> {
    let media = content_type(&req);
    if !(media.is_empty() || media.starts_with("application/json")) {
        return Err(ApiError::unsupported_media_type(&media, "application/json"));
    }
    parse_json(&body_of(req).await?)
}

pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33",
        "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0", "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64",
    })
}

pub fn json_answer(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    let mut r = Response::new(Full::new(Bytes::from(bytes)).map_err(|never: Infallible| match never {}).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error(e: &ApiError) -> Response<Body> {
    json_answer(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        assert_eq!(route_of("/version"), Some(Route::Version));
        assert_eq!(
            route_of("/apis/agones.dev/v1/namespaces/games/gameservers/gs-1"),
            Some(Route::Object { kind: Kind::GameServer, namespace: "games".into(), name: "gs-1".into() })
        );
        assert_eq!(
            route_of("/apis/coordination.k8s.io/v1/leases"),
            Some(Route::Collection { kind: Kind::Lease, namespace: None })
        );
        assert_eq!(
            route_of("/apis/allocation.agones.dev/v1/namespaces/games/gameserverallocations"),
            Some(Route::Allocations { namespace: "games".into() })
        );
        assert_eq!(route_of("/api/v1/namespaces/games/pods"), None);
        assert_eq!(route_of("/apis/agones.dev/v1/namespaces/games/gameservers/gs-1/status"), None);
    }
}
