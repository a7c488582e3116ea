//! GameServerAllocations, answered the way Agones's allocator does (not a
//! stored object: a POST that allocates and answers 201).
//!
//! The selectors (`spec.selectors`, or the deprecated `spec.preferred` then
//! `spec.required`) are tried in order; each takes the first GameServer of
//! the namespace, in name order, whose `status.state` is its
//! `gameServerState` (default `Ready`) and whose labels match its
//! `matchLabels` / `matchExpressions`. That GameServer becomes `Allocated`,
//! gets `spec.metadata.labels` / `annotations` and the
//! `agones.dev/last-allocated` annotation (one write, so watches see one
//! MODIFIED), and the answer echoes the spec with a status carrying the
//! GameServer's name, address, addresses, ports, node and metadata. No
//! match: `status.state: UnAllocated`, still 201, as Agones.
//!
//! Not modelled: Packed/Distributed scheduling (name order instead),
//! player/counter/list filters and actions, priorities, multi-cluster.
//!
//! A test can force the next answers (Contention, an HTTP error, a delay)
//! and slow every answer down; every request is logged with its outcome.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use hyper::{body::Bytes, Response, StatusCode};
use serde_json::{json, Value};

use super::{
    clock,
    kinds::Kind,
    routes::{error, json_answer, parse_json},
    selector::LabelSelector,
    server::{Body, Shared},
    status::{reason_for, ApiError},
};

/// An answer a test forces on the next allocation request (queued: one
/// request takes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationAnswer {
    /// 201 with `status.state: Contention`; nothing is allocated (Agones
    /// says this when its candidate was taken concurrently).
    Contention,
    /// This HTTP status with a Status body (500 InternalError, 503
    /// ServiceUnavailable, 429 TooManyRequests, ...); nothing is allocated.
    Error(u16),
    /// Wait this long, then allocate as usual, even if the client has
    /// given up by then (the API finishes what it started).
    Delay(Duration),
}

/// What an allocation request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationOutcome {
    /// Still waiting out a delay.
    Pending,
    /// 201, this GameServer.
    Allocated(String),
    /// 201, nothing matched.
    UnAllocated,
    /// 201, forced.
    Contention,
    /// This HTTP error (forced, or a malformed request).
    Error(u16),
}

/// One allocation request and what it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationRecord {
    pub namespace: String,
    /// The request body (Null if it was not JSON).
    pub request: Value,
    pub received: Instant,
    /// When the answer was decided (None while pending).
    pub answered: Option<Instant>,
    pub outcome: AllocationOutcome,
}

impl AllocationRecord {
    /// The GameServer this request allocated, if it did.
    pub fn gameserver(&self) -> Option<&str> {
        match &self.outcome {
            AllocationOutcome::Allocated(name) => Some(name),
            _ => None,
        }
    }
}

/// The test's controls and the log.
#[derive(Debug, Default)]
pub struct Allocations {
    pub forced: VecDeque<AllocationAnswer>,
    /// Added before every answer.
    pub delay: Duration,
    pub log: Vec<AllocationRecord>,
}

/// POST .../gameserverallocations
pub async fn handle(shared: Arc<Shared>, namespace: String, body: Bytes) -> Response<Body> {
    let request = parse_json(&body);
    let (index, forced, delay) = {
        let mut a = shared.allocations();
        let index = a.log.len();
        a.log.push(AllocationRecord {
            namespace: namespace.clone(),
            request: request.clone().unwrap_or(Value::Null),
            received: Instant::now(),
            answered: None,
            outcome: AllocationOutcome::Pending,
        });
        // A malformed request takes no forced answer: those are for the
        // requests a test expects.
        let forced = if request.is_ok() { a.forced.pop_front() } else { None };
        let extra = match forced {
            Some(AllocationAnswer::Delay(d)) => d,
            _ => Duration::ZERO,
        };
        (index, forced, a.delay + extra)
    };
    // Spawned, so that a client that gives up (drops the connection) does
    // not stop an allocation the server has started.
    let work = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let (code, answer, outcome) = decide(&shared, &namespace, request, forced);
        let mut a = shared.allocations();
        let record = &mut a.log[index];
        record.answered = Some(Instant::now());
        record.outcome = outcome;
        (code, answer)
    });
    match work.await {
        Ok((code, answer)) => json_answer(code, &answer),
        Err(e) => error(&ApiError::internal(format!("the allocation task failed: {e}"))),
    }
}

/// The answer: (HTTP status, body, what the log says).
fn decide(
    shared: &Shared,
    namespace: &str,
    request: Result<Value, ApiError>,
    forced: Option<AllocationAnswer>,
) -> (StatusCode, Value, AllocationOutcome) {
    let failed = |e: ApiError| {
        let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, e.status(), AllocationOutcome::Error(e.code))
    };
    let request = match request.and_then(check_request) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    match forced {
        Some(AllocationAnswer::Error(code)) => {
            let message = format!("the test forced this allocation to fail with {code} {}", reason_for(code));
            failed(ApiError::from_code(code, message))
        }
        Some(AllocationAnswer::Contention) => {
            (StatusCode::CREATED, answer(namespace, &request, "Contention", None), AllocationOutcome::Contention)
        }
        Some(AllocationAnswer::Delay(_)) | None => match allocate(shared, namespace, &request) {
            Ok(Some(gs)) => {
                let name = gs["metadata"]["name"].as_str().unwrap_or("").to_string();
                (
                    StatusCode::CREATED,
                    answer(namespace, &request, "Allocated", Some(&gs)),
                    AllocationOutcome::Allocated(name),
                )
            }
            Ok(None) => {
                (StatusCode::CREATED, answer(namespace, &request, "UnAllocated", None), AllocationOutcome::UnAllocated)
            }
            Err(e) => failed(e),
        },
    }
}

fn check_request(request: Value) -> Result<Value, ApiError> {
    let typed = |field: &str, want: &str| request[field].as_str().is_none_or(|v| v.is_empty() || v == want);
    if !request.is_object() {
        return Err(ApiError::bad_request("a GameServerAllocation must be a JSON object"));
    }
    if !typed("apiVersion", "allocation.agones.dev/v1") || !typed("kind", "GameServerAllocation") {
        return Err(ApiError::bad_request(format!(
            "expected apiVersion allocation.agones.dev/v1, kind GameServerAllocation; got {} {}",
            request["apiVersion"], request["kind"]
        )));
    }
    Ok(request)
}

/// The selectors in the order Agones tries them: `selectors`, or else
/// `preferred` then `required`; none at all selects any Ready GameServer.
fn selectors(spec: &Value) -> Result<Vec<(LabelSelector, String)>, ApiError> {
    let listed: Vec<&Value> = match spec["selectors"].as_array().filter(|s| !s.is_empty()) {
        Some(s) => s.iter().collect(),
        None => {
            let mut s: Vec<&Value> = spec["preferred"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
            s.push(&spec["required"]);
            s
        }
    };
    listed
        .into_iter()
        .map(|s| {
            let labels = LabelSelector::from_object(s).map_err(|e| invalid(&format!("spec.selectors: {e}")))?;
            let state = s["gameServerState"].as_str().filter(|st| !st.is_empty()).unwrap_or("Ready");
            if state != "Ready" && state != "Allocated" {
                return Err(invalid(&format!("spec.selectors.gameServerState: {state:?} is not Ready or Allocated")));
            }
            Ok((labels, state.to_string()))
        })
        .collect()
}

fn invalid(problem: &str) -> ApiError {
    ApiError::new(422, "Invalid", format!("GameServerAllocation.allocation.agones.dev is invalid: {problem}"))
}

/// Allocates the first match, as one write; None when nothing matches.
fn allocate(shared: &Shared, namespace: &str, request: &Value) -> Result<Option<Value>, ApiError> {
    let spec = &request["spec"];
    let selectors = selectors(spec)?;
    let meta = &spec["metadata"];
    for field in ["labels", "annotations"] {
        if !(meta[field].is_null() || meta[field].as_object().is_some_and(|m| m.values().all(Value::is_string))) {
            return Err(invalid(&format!("spec.metadata.{field} must map strings to strings")));
        }
    }
    let mut store = shared.store();
    for (labels, state) in &selectors {
        let found = store
            .list(Kind::GameServer, Some(namespace))
            .find(|(_, gs)| gs["status"]["state"].as_str() == Some(state) && labels.matches(gs))
            .map(|(key, _)| key.name.clone());
        if let Some(name) = found {
            let allocated = store.update(Kind::GameServer, namespace, &name, |gs| {
                let gs_meta = &mut gs["metadata"];
                for field in ["labels", "annotations"] {
                    if let Some(add) = meta[field].as_object() {
                        for (k, v) in add {
                            gs_meta[field][k] = v.clone();
                        }
                    }
                }
                gs_meta["annotations"]["agones.dev/last-allocated"] = json!(clock::rfc3339_nanos(SystemTime::now()));
                gs["status"]["state"] = json!("Allocated");
                Ok(())
            })?;
            return Ok(Some(allocated));
        }
    }
    Ok(None)
}

/// The GameServerAllocation Agones answers with.
fn answer(namespace: &str, request: &Value, state: &str, gs: Option<&Value>) -> Value {
    let mut spec = if request["spec"].is_object() { request["spec"].clone() } else { json!({}) };
    if spec["scheduling"].as_str().is_none_or(str::is_empty) {
        spec["scheduling"] = json!("Packed");
    }
    let status = match gs {
        Some(gs) => json!({
            "state": state,
            "gameServerName": gs["metadata"]["name"],
            "ports": gs["status"]["ports"],
            "address": gs["status"]["address"],
            "addresses": gs["status"]["addresses"],
            "nodeName": gs["status"]["nodeName"],
            "source": "local",
            "metadata": {"labels": gs["metadata"]["labels"], "annotations": gs["metadata"]["annotations"]},
        }),
        None => json!({"state": state, "gameServerName": "", "source": ""}),
    };
    let name = gs.map_or(&request["metadata"]["name"], |gs| &gs["metadata"]["name"]);
    json!({
        "apiVersion": "allocation.agones.dev/v1",
        "kind": "GameServerAllocation",
        "metadata": {
            "name": name.as_str().unwrap_or(""),
            "namespace": namespace,
            "creationTimestamp": clock::rfc3339_seconds(SystemTime::now()),
        },
        "spec": spec,
        "status": status,
    })
}
