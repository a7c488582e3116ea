//! The stand-in Kubernetes API server (`tests::kube_api`) against the real
//! client: kube-rs 5 built exactly as the agent builds it, over plain HTTP
//! on 127.0.0.1. If kube-rs works against the stand-in here, the agent's
//! tests against it test the agent, not the stand-in. No root needed.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{channel::mpsc, Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
    core::{ApiResource, DynamicObject, GroupVersionKind, WatchEvent},
    runtime::{watcher, WatchStreamExt},
    Client, Config,
};
use serde_json::{json, Value};
use tests::kube_api::{AllocationAnswer, AllocationOutcome, GameServerSpec, KubeApi, Reachability};

const NS: &str = "games";
/// Every wait in this file gives up after this long.
const DEADLINE: Duration = Duration::from_secs(10);

/// A kube client for the stand-in, as the agent makes one for an
/// `http://` cluster URL.
fn client(api: &KubeApi) -> Client {
    Client::try_from(Config::new(api.url().parse().expect("the stand-in's URL parses"))).expect("a kube client")
}

fn gameserver_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("agones.dev", "v1", "GameServer"), "gameservers")
}

fn gameservers(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &gameserver_resource())
}

fn allocations(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("allocation.agones.dev", "v1", "GameServerAllocation");
    Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk_with_plural(&gvk, "gameserverallocations"))
}

/// A GameServerAllocation for the `pool` fleet that labels and annotates
/// what it gets.
fn allocation_request() -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "allocation.agones.dev/v1",
        "kind": "GameServerAllocation",
        "metadata": {"generateName": "shard-"},
        "spec": {
            "selectors": [{"matchLabels": {"agones.dev/fleet": "pool"}}],
            "metadata": {
                "labels": {"samp-proxy.dev/role": "shard"},
                "annotations": {"samp-proxy.dev/reason": "failover"},
            },
        },
    }))
    .expect("a GameServerAllocation")
}

fn pool_gs(name: &str) -> GameServerSpec {
    GameServerSpec::new(NS, name).label("agones.dev/fleet", "pool")
}

/// Runs kube's watcher on a task of its own, as the agent does (a watcher
/// only lists or watches while polled), handing its events over.
fn follow(api: Api<DynamicObject>, config: watcher::Config) -> mpsc::UnboundedReceiver<WatcherItem> {
    let (tx, rx) = mpsc::unbounded();
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(item) = events.next().await {
            if tx.unbounded_send(item).is_err() {
                return;
            }
        }
    });
    rx
}

type WatcherItem = Result<watcher::Event<DynamicObject>, watcher::Error>;

/// The next item of `stream`, failing the test after [`DEADLINE`].
async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("nothing arrived within the deadline")
        .expect("the stream ended")
}

/// Waits until `holds()`, failing the test after [`DEADLINE`].
async fn eventually(what: &str, mut holds: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !holds() {
        assert!(Instant::now() < end, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn api_error(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected a Status from the API, got {other:?}"),
    }
}

fn state(o: &DynamicObject) -> String {
    o.data["status"]["state"].as_str().unwrap_or("").to_string()
}

fn name(o: &DynamicObject) -> String {
    o.metadata.name.clone().unwrap_or_default()
}

/// What a watcher's events say exists, kept as kube's reflector keeps it
/// (a re-list replaces everything at `InitDone`), and each event in a few
/// words for assertions.
#[derive(Default)]
struct Seen {
    now: BTreeMap<String, String>,
    relisting: BTreeMap<String, String>,
}

impl Seen {
    fn apply(&mut self, item: WatcherItem) -> String {
        match item {
            Ok(watcher::Event::Init) => {
                self.relisting.clear();
                "init".into()
            }
            Ok(watcher::Event::InitApply(o)) => {
                self.relisting.insert(name(&o), state(&o));
                format!("listed {} {}", name(&o), state(&o))
            }
            Ok(watcher::Event::InitDone) => {
                self.now = std::mem::take(&mut self.relisting);
                "synced".into()
            }
            Ok(watcher::Event::Apply(o)) => {
                self.now.insert(name(&o), state(&o));
                format!("applied {} {}", name(&o), state(&o))
            }
            Ok(watcher::Event::Delete(o)) => {
                self.now.remove(&name(&o));
                format!("deleted {}", name(&o))
            }
            Err(watcher::Error::WatchError(s)) => format!("error {} {}", s.code, s.reason),
            Err(e) => format!("failed: {e}"),
        }
    }

    /// Applies the next `n` events of `stream`.
    async fn take<S>(&mut self, stream: &mut S, n: usize) -> Vec<String>
    where
        S: Stream<Item = WatcherItem> + Unpin,
    {
        let mut said = Vec::new();
        for _ in 0..n {
            said.push(self.apply(next(stream).await));
        }
        said
    }
}

#[tokio::test]
async fn lists_by_label_get_pages_and_metadata() {
    let api = KubeApi::start_local().unwrap();
    for spec in [
        GameServerSpec::new(NS, "gs-1").label("pool", "a").pod_ip("10.0.0.11"),
        GameServerSpec::new(NS, "gs-2").label("pool", "b"),
        GameServerSpec::new(NS, "gs-3").label("pool", "a").label("tier", "x"),
        GameServerSpec::new("elsewhere", "gs-4").label("pool", "a"),
    ] {
        api.add_gameserver(&spec).unwrap();
    }
    let client = client(&api);
    let gs = gameservers(&client);

    let names = |list: kube::core::ObjectList<DynamicObject>| list.items.iter().map(name).collect::<Vec<_>>();
    let list = gs.list(&ListParams::default().labels("pool=a")).await.unwrap();
    assert_eq!(list.metadata.resource_version.as_deref(), Some(api.resource_version().as_str()));
    assert_eq!(list.items[0].types.as_ref().unwrap().kind, "GameServer");
    assert_eq!(names(list), ["gs-1", "gs-3"]);
    assert_eq!(names(gs.list(&ListParams::default().labels("pool=a,tier!=x")).await.unwrap()), ["gs-1"]);
    assert_eq!(names(gs.list(&ListParams::default().labels("pool in (a,b)")).await.unwrap()), ["gs-1", "gs-2", "gs-3"]);
    assert_eq!(names(gs.list(&ListParams::default().fields("metadata.name=gs-2")).await.unwrap()), ["gs-2"]);
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &gameserver_resource());
    assert_eq!(names(all.list(&ListParams::default().labels("pool=a")).await.unwrap()), ["gs-4", "gs-1", "gs-3"]);

    // Pages.
    let first = gs.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(names(first), ["gs-1", "gs-2"]);
    let rest = gs.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(rest.metadata.continue_.as_deref().unwrap_or(""), "");
    assert_eq!(names(rest), ["gs-3"]);

    // One object, as Agones writes it.
    let one = gs.get("gs-1").await.unwrap();
    assert_eq!(state(&one), "Ready");
    let pod_ip = one.data["status"]["addresses"].as_array().unwrap().iter().find(|a| a["type"] == "PodIP").unwrap();
    assert_eq!(pod_ip["address"], "10.0.0.11");
    assert_eq!(one.data["status"]["ports"], json!([{"name": "default", "port": 7777}]));
    assert!(one.metadata.uid.is_some() && one.metadata.creation_timestamp.is_some());
    assert_eq!(api_error(&gs.get("nope").await.unwrap_err()), (404, "NotFound".into()));

    // Metadata only (PartialObjectMetadata).
    let meta = gs.get_metadata("gs-3").await.unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["tier"], "x");
    assert_eq!(gs.list_metadata(&ListParams::default().labels("pool=a")).await.unwrap().items.len(), 2);
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_in_order() {
    let api = KubeApi::start_local().unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-a").label("app", "samp")).unwrap();
    let client = client(&api);
    let mut stream = follow(gameservers(&client), watcher::Config::default().labels("app=samp"));
    let mut seen = Seen::default();
    assert_eq!(seen.take(&mut stream, 3).await, ["init", "listed gs-a Ready", "synced"]);
    eventually("the watcher's watch is open", || api.open_watches() == 1).await;

    api.add_gameserver(&GameServerSpec::new(NS, "gs-b").label("app", "samp")).unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-other").label("app", "other")).unwrap();
    api.set_gameserver_state(NS, "gs-b", "Allocated").unwrap();
    api.delete_gameserver(NS, "gs-b").unwrap();
    assert_eq!(seen.take(&mut stream, 3).await, ["applied gs-b Ready", "applied gs-b Allocated", "deleted gs-b"]);
    assert_eq!(seen.now, BTreeMap::from([("gs-a".to_string(), "Ready".to_string())]));

    // The watcher asked for what the docs say it asks for.
    let requests = api.requests();
    let list = requests.iter().find(|r| r.method == "GET" && !r.query.contains("watch=")).unwrap();
    assert!(list.query.contains("limit=500") && list.query.contains("labelSelector=app%3Dsamp"), "{list:?}");
    let watch = requests.iter().find(|r| r.query.contains("watch=true")).unwrap();
    for param in ["timeoutSeconds=290", "allowWatchBookmarks=true", "resourceVersion="] {
        assert!(watch.query.contains(param), "{param} missing from {watch:?}");
    }
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    let api = KubeApi::start_local().unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-a")).unwrap();
    let client = client(&api);
    let mut stream = follow(gameservers(&client), watcher::Config::default().streaming_lists());
    let mut seen = Seen::default();
    assert_eq!(seen.take(&mut stream, 3).await, ["init", "listed gs-a Ready", "synced"]);
    api.add_gameserver(&GameServerSpec::new(NS, "gs-b")).unwrap();
    assert_eq!(seen.take(&mut stream, 1).await, ["applied gs-b Ready"]);
    assert!(api.requests().iter().any(|r| r.query.contains("sendInitialEvents=true")));
}

#[tokio::test]
async fn raw_watch_follows_the_selector_and_expires() {
    let api = KubeApi::start_local().unwrap();
    let client = client(&api);
    let gs = gameservers(&client);
    let rv = gs.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut events = gs.watch(&WatchParams::default().labels("app=samp"), &rv).await.unwrap().boxed();
    let relabel = |value: &'static str| move |o: &mut Value| o["metadata"]["labels"]["app"] = json!(value);

    api.add_gameserver(&GameServerSpec::new(NS, "gs-x").label("app", "samp")).unwrap();
    api.modify_gameserver(NS, "gs-x", relabel("other")).unwrap();
    api.modify_gameserver(NS, "gs-x", relabel("samp")).unwrap();
    api.set_gameserver_state(NS, "gs-x", "Allocated").unwrap();
    api.delete_gameserver(NS, "gs-x").unwrap();
    let mut said = Vec::new();
    for _ in 0..5 {
        said.push(match next(&mut events).await.unwrap() {
            WatchEvent::Added(o) => format!("ADDED {} {}", name(&o), state(&o)),
            WatchEvent::Modified(o) => format!("MODIFIED {} {}", name(&o), state(&o)),
            WatchEvent::Deleted(o) => format!("DELETED {} {}", name(&o), o.metadata.labels.unwrap()["app"]),
            other => format!("{other:?}"),
        });
    }
    // Leaving the selector reads as a deletion (with the last matching
    // content), coming back as an addition.
    assert_eq!(
        said,
        ["ADDED gs-x Ready", "DELETED gs-x samp", "ADDED gs-x Ready", "MODIFIED gs-x Allocated", "DELETED gs-x samp"]
    );

    // Compaction: the open watch gets a 410 and ends; a new one from the
    // old resourceVersion gets the same at once.
    api.expire_watches();
    match next(&mut events).await.unwrap() {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with("too old resource version: "), "{}", s.message);
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let end = tokio::time::timeout(DEADLINE, events.next()).await.expect("the expired watch ends");
    assert!(end.is_none(), "the expired watch ends after its ERROR event");
    let mut again = gs.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    assert!(matches!(next(&mut again).await.unwrap(), WatchEvent::Error(s) if s.code == 410));
    eventually("both watches closed", || api.open_watches() == 0).await;
}

#[tokio::test]
async fn raw_watch_gets_bookmarks_and_ends_at_its_timeout() {
    let api = KubeApi::start_local().unwrap();
    api.set_bookmark_interval(Duration::from_millis(50));
    let client = client(&api);
    let gs = gameservers(&client);
    let rv = gs.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let started = Instant::now();
    let mut events = gs.watch(&WatchParams::default().timeout(1), &rv).await.unwrap().boxed();
    match next(&mut events).await.unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
    api.add_gameserver(&GameServerSpec::new(NS, "gs-1")).unwrap();
    let mut added = false;
    while let Some(event) = tokio::time::timeout(DEADLINE, events.next()).await.expect("the watch ends by its timeout")
    {
        match event.unwrap() {
            WatchEvent::Added(o) => added = name(&o) == "gs-1",
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(added, "the addition came between the bookmarks");
    assert!(started.elapsed() >= Duration::from_secs(1), "ended by timeoutSeconds=1, not before");
}

#[tokio::test]
async fn watcher_relists_after_expiry_and_keeps_following() {
    let api = KubeApi::start_local().unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-1")).unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-2")).unwrap();
    let client = client(&api);
    let mut stream = follow(gameservers(&client), watcher::Config::default());
    let mut seen = Seen::default();
    assert_eq!(seen.take(&mut stream, 4).await, ["init", "listed gs-1 Ready", "listed gs-2 Ready", "synced"]);
    eventually("the watcher's watch is open", || api.open_watches() == 1).await;

    // While the watcher is cut off, gs-1 goes and gs-3 comes.
    api.expire_watches();
    api.delete_gameserver(NS, "gs-1").unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-3")).unwrap();
    assert_eq!(
        seen.take(&mut stream, 5).await,
        ["error 410 Expired", "init", "listed gs-2 Ready", "listed gs-3 Ready", "synced"]
    );
    assert_eq!(seen.now.keys().collect::<Vec<_>>(), ["gs-2", "gs-3"], "gs-1, deleted while expired, is gone");

    // And the watch it opened after the re-list follows changes.
    api.set_gameserver_state(NS, "gs-3", "Allocated").unwrap();
    assert_eq!(seen.take(&mut stream, 1).await, ["applied gs-3 Allocated"]);
    let lists = api.requests().iter().filter(|r| r.method == "GET" && !r.query.contains("watch=")).count();
    assert_eq!(lists, 2, "one list at the start, one after the 410");
}

#[tokio::test]
async fn allocation_allocates_a_ready_gameserver_and_watchers_see_it() {
    let api = KubeApi::start_local().unwrap();
    api.add_gameserver(&pool_gs("gs-busy").state("Allocated")).unwrap();
    api.add_gameserver(&pool_gs("gs-ready").pod_ip("10.0.0.42").node("node-7", "192.168.0.7").port(7001)).unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-other-fleet").label("agones.dev/fleet", "other")).unwrap();
    let client = client(&api);
    let mut stream = follow(gameservers(&client), watcher::Config::default());
    let mut seen = Seen::default();
    seen.take(&mut stream, 5).await;
    eventually("the watcher's watch is open", || api.open_watches() == 1).await;

    let answer = allocations(&client).create(&PostParams::default(), &allocation_request()).await.unwrap();
    let status = &answer.data["status"];
    assert_eq!(status["state"], "Allocated");
    assert_eq!(status["gameServerName"], "gs-ready");
    assert_eq!(status["address"], "192.168.0.7");
    assert_eq!(status["nodeName"], "node-7");
    assert_eq!(status["source"], "local");
    assert_eq!(status["ports"], json!([{"name": "default", "port": 7001}]));
    assert!(status["addresses"].as_array().unwrap().contains(&json!({"type": "PodIP", "address": "10.0.0.42"})));
    assert_eq!(status["metadata"]["labels"]["samp-proxy.dev/role"], "shard");
    assert_eq!(answer.data["spec"]["selectors"][0]["matchLabels"]["agones.dev/fleet"], "pool");
    assert_eq!(name(&answer), "gs-ready");

    let gs = api.gameserver(NS, "gs-ready").unwrap();
    assert_eq!(gs["status"]["state"], "Allocated");
    assert_eq!(gs["metadata"]["labels"]["samp-proxy.dev/role"], "shard");
    assert_eq!(gs["metadata"]["labels"]["agones.dev/fleet"], "pool");
    assert_eq!(gs["metadata"]["annotations"]["samp-proxy.dev/reason"], "failover");
    assert!(gs["metadata"]["annotations"]["agones.dev/last-allocated"].is_string());
    assert_eq!(seen.take(&mut stream, 1).await, ["applied gs-ready Allocated"]);

    let log = api.allocations();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, AllocationOutcome::Allocated("gs-ready".into()));
    assert_eq!(log[0].gameserver(), Some("gs-ready"));
    assert_eq!(log[0].request["spec"]["metadata"]["annotations"]["samp-proxy.dev/reason"], "failover");
}

#[tokio::test]
async fn allocation_forced_answers_errors_and_delays() {
    let api = KubeApi::start_local().unwrap();
    let client = client(&api);
    let alloc = allocations(&client);
    let post = || async { alloc.create(&PostParams::default(), &allocation_request()).await };
    let outcomes = || api.allocations().into_iter().map(|r| r.outcome).collect::<Vec<_>>();

    // Nothing Ready in the pool: UnAllocated, still a 201.
    api.add_gameserver(&pool_gs("gs-1").state("Shutdown")).unwrap();
    assert_eq!(post().await.unwrap().data["status"]["state"], "UnAllocated");

    // Forced Contention: nothing moves.
    api.add_gameserver(&pool_gs("gs-2")).unwrap();
    api.queue_allocation_answer(AllocationAnswer::Contention);
    assert_eq!(post().await.unwrap().data["status"]["state"], "Contention");
    assert_eq!(api.gameserver(NS, "gs-2").unwrap()["status"]["state"], "Ready");

    // A forced 500 is an Err from Api::create, asked once (kube does not
    // retry a 500).
    api.queue_allocation_answer(AllocationAnswer::Error(500));
    assert_eq!(api_error(&post().await.unwrap_err()), (500, "InternalError".into()));
    assert_eq!(api.gameserver(NS, "gs-2").unwrap()["status"]["state"], "Ready");
    assert_eq!(
        outcomes(),
        [AllocationOutcome::UnAllocated, AllocationOutcome::Contention, AllocationOutcome::Error(500)]
    );

    // A forced 503 is retried by kube's default retry policy: two requests,
    // and the caller sees only the second one's answer.
    api.queue_allocation_answer(AllocationAnswer::Error(503));
    assert_eq!(post().await.unwrap().data["status"]["gameServerName"], "gs-2");
    assert_eq!(outcomes()[3..], [AllocationOutcome::Error(503), AllocationOutcome::Allocated("gs-2".into())]);

    // A forced delay: the call takes at least that long, then allocates.
    api.add_gameserver(&pool_gs("gs-3")).unwrap();
    api.queue_allocation_answer(AllocationAnswer::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(post().await.unwrap().data["status"]["gameServerName"], "gs-3");
    assert!(started.elapsed() >= Duration::from_millis(300), "took only {:?}", started.elapsed());

    // A client that gives up first: its timeout fires, and the slow API
    // still allocates.
    api.add_gameserver(&pool_gs("gs-4")).unwrap();
    api.queue_allocation_answer(AllocationAnswer::Delay(Duration::from_millis(500)));
    assert!(tokio::time::timeout(Duration::from_millis(100), post()).await.is_err(), "the client timed out");
    assert_eq!(api.allocations().last().unwrap().outcome, AllocationOutcome::Pending);
    eventually("the abandoned allocation completes", || {
        api.allocations().last().unwrap().outcome == AllocationOutcome::Allocated("gs-4".into())
    })
    .await;
    assert_eq!(api.gameserver(NS, "gs-4").unwrap()["status"]["state"], "Allocated");

    // A fixed delay on every answer.
    api.set_allocation_delay(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(post().await.unwrap().data["status"]["state"], "UnAllocated");
    assert!(started.elapsed() >= Duration::from_millis(200));
    api.set_allocation_delay(Duration::ZERO);
    assert_eq!(api.allocations().len(), 8);
}

#[tokio::test]
async fn leases_create_get_replace_and_race() {
    let api = KubeApi::start_local().unwrap();
    let leases: Api<Lease> = Api::namespaced(client(&api), NS);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "samp-proxy-leader"},
        "spec": {
            "holderIdentity": "replica-a",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-12-02T03:00:00.123456Z",
            "renewTime": "2026-12-02T03:00:00.123456Z",
        },
    }))
    .unwrap();

    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let first_rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        api_error(&leases.create(&PostParams::default(), &lease).await.unwrap_err()),
        (409, "AlreadyExists".into())
    );
    let stored = api.lease(NS, "samp-proxy-leader").unwrap();
    assert_eq!(stored["spec"]["renewTime"], "2026-12-02T03:00:00.123456Z", "MicroTime kept as the client sent it");

    // Renew with the current resourceVersion: accepted.
    let mut got = leases.get("samp-proxy-leader").await.unwrap();
    assert_eq!(got.spec.as_ref().unwrap().holder_identity.as_deref(), Some("replica-a"));
    assert_eq!(got.spec.as_ref().unwrap().renew_time, lease.spec.as_ref().unwrap().renew_time);
    got.spec.as_mut().unwrap().renew_time = serde_json::from_value(json!("2026-12-02T03:00:05.000001Z")).unwrap();
    let renewed = leases.replace("samp-proxy-leader", &PostParams::default(), &got).await.unwrap();
    let renewed_rv = renewed.metadata.resource_version.clone().unwrap();
    assert!(renewed_rv.parse::<u64>().unwrap() > first_rv.parse::<u64>().unwrap());

    // A second replica that read before the renewal loses the race.
    let mut stale = created.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    assert_eq!(
        api_error(&leases.replace("samp-proxy-leader", &PostParams::default(), &stale).await.unwrap_err()),
        (409, "Conflict".into())
    );
    assert_eq!(api.lease(NS, "samp-proxy-leader").unwrap()["spec"]["holderIdentity"], "replica-a");

    // A merge patch, then deletion (a built-in type answers with a Status).
    let patch = Patch::Merge(json!({"spec": {"holderIdentity": "replica-b"}}));
    let patched = leases.patch("samp-proxy-leader", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(patched.spec.unwrap().holder_identity.as_deref(), Some("replica-b"));
    assert!(leases.delete("samp-proxy-leader", &DeleteParams::default()).await.unwrap().is_right());
    assert_eq!(api_error(&leases.get("samp-proxy-leader").await.unwrap_err()), (404, "NotFound".into()));
    assert!(api.lease(NS, "samp-proxy-leader").is_none());
}

#[tokio::test]
async fn patches_replace_version_and_unknown_paths() {
    let api = KubeApi::start_local().unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-1").label("drop-me", "x").label("keep", "y")).unwrap();
    let client = client(&api);
    let gs = gameservers(&client);

    // Merge patch: add an annotation, delete a label with null.
    let patch = Patch::Merge(
        json!({"metadata": {"labels": {"drop-me": null}, "annotations": {"samp-proxy.dev/serves": "s1"}}}),
    );
    let patched = gs.patch("gs-1", &PatchParams::default(), &patch).await.unwrap();
    let labels = patched.metadata.labels.unwrap();
    assert!(!labels.contains_key("drop-me") && labels["keep"] == "y");
    assert_eq!(patched.metadata.annotations.unwrap()["samp-proxy.dev/serves"], "s1");

    // JSON patch (kube's `jsonpatch` feature is off in the agent: sent raw).
    let ops = json!([{"op": "replace", "path": "/status/state", "value": "Reserved"}]);
    let req = hyper::Request::patch(format!("/apis/agones.dev/v1/namespaces/{NS}/gameservers/gs-1"))
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["status"]["state"], "Reserved");

    // Strategic merge on a custom resource: 415, as a real server answers.
    let strategic = Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}}));
    assert_eq!(api_error(&gs.patch("gs-1", &PatchParams::default(), &strategic).await.unwrap_err()).0, 415);

    // PUT: stale resourceVersion 409; none at all 422 (custom resource).
    let mut current = gs.get("gs-1").await.unwrap();
    current.data["status"]["state"] = json!("Ready");
    let replaced = gs.replace("gs-1", &PostParams::default(), &current).await.unwrap();
    assert_eq!(state(&replaced), "Ready");
    assert_eq!(
        api_error(&gs.replace("gs-1", &PostParams::default(), &current).await.unwrap_err()),
        (409, "Conflict".into())
    );
    current.metadata.resource_version = None;
    assert_eq!(
        api_error(&gs.replace("gs-1", &PostParams::default(), &current).await.unwrap_err()),
        (422, "Invalid".into())
    );

    // Version, and a path nothing is served at.
    assert_eq!(client.apiserver_version().await.unwrap().git_version, "v1.33.0");
    let pods = hyper::Request::get("/api/v1/namespaces/games/pods").body(Vec::new()).unwrap();
    assert_eq!(api_error(&client.request_text(pods).await.unwrap_err()), (404, "NotFound".into()));
    let bad = hyper::Request::get(format!("/apis/agones.dev/v1/namespaces/{NS}/gameservers?labelSelector=a%20b%3Dc"))
        .body(Vec::new())
        .unwrap();
    assert_eq!(api_error(&client.request_text(bad).await.unwrap_err()), (400, "BadRequest".into()));
}

#[tokio::test]
async fn outage_ends_watches_and_fails_requests_until_it_ends() {
    let api = KubeApi::start_local().unwrap();
    api.add_gameserver(&GameServerSpec::new(NS, "gs-1")).unwrap();
    let client = client(&api);
    let gs = gameservers(&client);
    let mut stream = follow(gs.clone(), watcher::Config::default());
    let mut seen = Seen::default();
    seen.take(&mut stream, 3).await;
    eventually("the watcher's watch is open", || api.open_watches() == 1).await;

    // Closing: the open watch is cut, requests fail fast.
    api.set_unreachable(true);
    eventually("the watch is cut", || api.open_watches() == 0).await;
    let said = seen.apply(next(&mut stream).await);
    assert!(said.starts_with("failed"), "the watcher reports the lost API: {said}");
    let err = tokio::time::timeout(DEADLINE, gs.get("gs-1")).await.expect("fails fast").unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "a connection error, not an answer: {err:?}");

    // Back: the watcher resumes from where it was and sees what changed.
    api.set_unreachable(false);
    api.add_gameserver(&GameServerSpec::new(NS, "gs-2")).unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let said = seen.apply(next(&mut stream).await);
        if said == "applied gs-2 Ready" {
            break;
        }
        assert!(said.starts_with("failed"), "only failures before recovery: {said}");
        assert!(Instant::now() < end, "the watcher did not recover within {DEADLINE:?}");
    }

    // Silent: a request waits until the caller's own timeout.
    api.set_reachability(Reachability::Silent);
    assert!(tokio::time::timeout(Duration::from_millis(300), gs.get("gs-1")).await.is_err(), "no answer while silent");
    api.set_reachability(Reachability::Up);
    assert_eq!(state(&tokio::time::timeout(DEADLINE, gs.get("gs-1")).await.unwrap().unwrap()), "Ready");
}

#[test]
fn serves_a_listener_the_caller_made_and_stops_when_dropped() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<KubeApi>();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let api = KubeApi::start(listener).unwrap();
    assert_eq!(api.url(), format!("http://{addr}"));
    let copy = api.clone();
    drop(api);
    assert!(std::net::TcpStream::connect(addr).is_ok(), "a clone keeps it serving");
    drop(copy);
    assert!(std::net::TcpStream::connect(addr).is_err(), "dropping the last handle stops the server");
}
