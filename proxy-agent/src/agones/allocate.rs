//! GameServerAllocations: one Ready GameServer of a frontend's pool becomes
//! Allocated, labelled as the frontend's shard and annotated with why. The
//! call has a deadline; whatever it answers (or fails to) is an
//! `Allocation` the owner acts on. Also the decider's records on
//! GameServers (a merge patch of annotations).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use kube::{
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    Api,
};
use serde_json::{json, Value};

use super::gameserver::GameServer;

pub fn gameserver_resource() -> ApiResource {
    ApiResource {
        group: "agones.dev".into(),
        version: "v1".into(),
        api_version: "agones.dev/v1".into(),
        kind: "GameServer".into(),
        plural: "gameservers".into(),
    }
}

fn allocation_resource() -> ApiResource {
    ApiResource {
        group: "allocation.agones.dev".into(),
        version: "v1".into(),
        api_version: "allocation.agones.dev/v1".into(),
        kind: "GameServerAllocation".into(),
        plural: "gameserverallocations".into(),
    }
}

/// Why a shard is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// To take over the players of a shard that died.
    Failover { dead: String },
    /// Because the active shards' free slots fell under the headroom.
    Growth,
}

/// One allocation to make.
#[derive(Debug, Clone)]
pub struct Ask {
    pub frontend: usize,
    pub namespace: String,
    pub pool_labels: BTreeMap<String, String>,
    /// The frontend's shard labels, put on the allocated GameServer.
    pub labels: BTreeMap<String, String>,
    pub purpose: Purpose,
    pub deadline: Duration,
}

impl Ask {
    /// The GameServerAllocation object.
    pub fn body(&self) -> Value {
        let mut annotations = BTreeMap::new();
        match &self.purpose {
            Purpose::Failover { dead } => {
                annotations.insert(super::gameserver::annotation::REASON, "failover".to_string());
                annotations.insert(super::gameserver::annotation::REPLACES, dead.clone());
            }
            Purpose::Growth => {
                annotations.insert(super::gameserver::annotation::REASON, "growth".to_string());
            }
        }
        json!({
            "apiVersion": "allocation.agones.dev/v1",
            "kind": "GameServerAllocation",
            "metadata": {"generateName": "samp-proxy-", "namespace": self.namespace},
            "spec": {
                "selectors": [{"matchLabels": self.pool_labels, "gameServerState": "Ready"}],
                "scheduling": "Packed",
                "metadata": {"labels": self.labels, "annotations": annotations},
            },
        })
    }
}

/// What an allocation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A fresh shard: the GameServer as the allocation's status describes it.
    Allocated(GameServer),
    /// No Ready GameServer in the pool.
    UnAllocated,
    /// Agones' allocation cache lost a race; a retry may succeed.
    Contention,
    /// The API refused or failed.
    Failed(String),
    /// No answer within the deadline.
    TimedOut,
}

impl Answer {
    /// As counted in the metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Answer::Allocated(_) => "allocated",
            Answer::UnAllocated => "unallocated",
            Answer::Contention => "contention",
            Answer::Failed(_) => "error",
            Answer::TimedOut => "timeout",
        }
    }

    /// Why no shard came, for the event that reports the fallback.
    pub fn why_not(&self) -> String {
        match self {
            Answer::Allocated(gs) => format!("allocated {}", gs.name),
            Answer::UnAllocated => "the pool has no Ready GameServer (UnAllocated)".into(),
            Answer::Contention => "Agones answered Contention".into(),
            Answer::Failed(e) => format!("the allocation failed: {e}"),
            Answer::TimedOut => "no allocation answer within the deadline".into(),
        }
    }
}

/// Makes the allocation; never longer than `ask.deadline`.
pub async fn allocate(client: kube::Client, ask: &Ask) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = match tokio::time::timeout(ask.deadline, request(client, ask)).await {
        Ok(a) => a,
        Err(_) => Answer::TimedOut,
    };
    (answer, started.elapsed())
}

async fn request(client: kube::Client, ask: &Ask) -> Answer {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ask.namespace, &allocation_resource());
    let obj: DynamicObject = match serde_json::from_value(ask.body()) {
        Ok(o) => o,
        Err(e) => return Answer::Failed(format!("building the allocation: {e}")),
    };
    let created = match api.create(&PostParams::default(), &obj).await {
        Ok(c) => c,
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let status = &created.data["status"];
    match status["state"].as_str().unwrap_or_default() {
        "Allocated" => {
            let Some(name) = status["gameServerName"].as_str() else {
                return Answer::Failed("Allocated without a gameServerName".into());
            };
            let mut gs = GameServer::from_json(&ask.namespace, name, &json!({}), status, &json!({}));
            gs.state = "Allocated".into();
            gs.labels = ask.labels.clone();
            if gs.pod_ip.is_none() {
                // Older Agones answers without `addresses`: read the GameServer.
                let gss: Api<DynamicObject> = Api::namespaced_with(client, &ask.namespace, &gameserver_resource());
                match gss.get(name).await {
                    Ok(o) => gs.pod_ip = GameServer::from_object(&to_value(&o)).and_then(|g| g.pod_ip),
                    Err(e) => return Answer::Failed(format!("reading allocated GameServer {name}: {e}")),
                }
            }
            Answer::Allocated(gs)
        }
        "UnAllocated" => Answer::UnAllocated,
        "Contention" => Answer::Contention,
        other => Answer::Failed(format!("unknown allocation state `{other}`")),
    }
}

/// A dynamic object as plain JSON (metadata, spec, status).
pub fn to_value(o: &DynamicObject) -> Value {
    let mut v = o.data.clone();
    if let Value::Object(map) = &mut v {
        map.insert("metadata".into(), serde_json::to_value(&o.metadata).unwrap_or_default());
    }
    v
}

/// Sets annotations on a GameServer (a JSON merge patch of metadata only).
pub async fn annotate(
    client: kube::Client,
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> kube::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &gameserver_resource());
    let patch = json!({"metadata": {"annotations": annotations}});
    // kube sets no read timeout: a silent API would hold the retry loop.
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    match tokio::time::timeout(Duration::from_secs(5), api.patch(name, &params, &patch)).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(kube::Error::Service("no answer within 5 s".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_asks_for_a_ready_pool_member_and_labels_it() {
        let ask = Ask {
            frontend: 0,
            namespace: "game".into(),
            pool_labels: BTreeMap::from([("agones.dev/fleet".into(), "shards".into())]),
            labels: BTreeMap::from([("samp-proxy.dev/frontend".into(), "main".into())]),
            purpose: Purpose::Failover { dead: "shards-abc".into() },
            deadline: Duration::from_millis(300),
        };
        let b = ask.body();
        assert_eq!(b["spec"]["selectors"][0]["gameServerState"], "Ready");
        assert_eq!(b["spec"]["selectors"][0]["matchLabels"]["agones.dev/fleet"], "shards");
        assert_eq!(b["spec"]["metadata"]["labels"]["samp-proxy.dev/frontend"], "main");
        assert_eq!(b["spec"]["metadata"]["annotations"]["samp-proxy.dev/replaces"], "shards-abc");
        let answer = Answer::Allocated(GameServer::from_json(
            "game",
            "x",
            &json!({}),
            &json!({"addresses": [{"type": "PodIP", "address": "198.18.3.4"}], "ports": [{"port": 7777}]}),
            &json!({}),
        ));
        let Answer::Allocated(gs) = answer else { unreachable!() };
        assert_eq!(gs.pod_ip, Some("198.18.3.4".parse().unwrap()));
    }
}
