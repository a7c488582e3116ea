//! What the agent reads off an Agones GameServer, and which GameServers are
//! this proxy's shards. Pure data: tested without an API server.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::Serialize;
use serde_json::Value;

/// The annotations the agent reads and writes on GameServers.
pub mod annotation {
    /// Names of the shards whose players this GameServer now serves,
    /// comma-separated: the decider's record of a failover, which every
    /// replica applies.
    pub const SERVES: &str = "samp-proxy.dev/serves";
    /// On a dead GameServer whose players went to a shard that is not a
    /// GameServer (a listed standby): where they went.
    pub const MOVED_TO: &str = "samp-proxy.dev/moved-to";
    /// Set by the allocation: the shard this one was allocated to replace.
    pub const REPLACES: &str = "samp-proxy.dev/replaces";
    /// Set by the allocation: `failover` or `growth`.
    pub const REASON: &str = "samp-proxy.dev/reason";
    /// Caps a shard's players below its own `max_players` (annotation or label).
    pub const CAPACITY: &str = "samp-proxy.dev/capacity";
}

/// A GameServer as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GameServer {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`: a name may come back on a new object (deleted and
    /// made again), a uid never (empty when the API gave none).
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `status.state`: Scheduled, RequestReady, Ready, Reserved, Allocated,
    /// Shutdown, Error, Unhealthy (empty while Agones has not set it).
    pub state: String,
    /// The pod's IP (`status.addresses[type=PodIP]`).
    pub pod_ip: Option<Ipv4Addr>,
    /// `status.ports[].port`, else `spec.ports[].containerPort`.
    pub ports: Vec<u16>,
}

impl GameServer {
    /// Reads the fields the agent uses from a GameServer object (or from a
    /// GameServerAllocation's status, which carries the same `addresses`
    /// and `ports`). Fields missing or of the wrong type read as absent.
    pub fn from_json(namespace: &str, name: &str, meta: &Value, status: &Value, spec: &Value) -> GameServer {
        let strings = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                .unwrap_or_default()
        };
        let pod_ip = status["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "PodIP")
            .and_then(|a| a["address"].as_str()?.parse().ok());
        let port_list = |list: &Value, field: &str| -> Vec<u16> {
            list.as_array().into_iter().flatten().filter_map(|p| u16::try_from(p[field].as_u64()?).ok()).collect()
        };
        let mut ports = port_list(&status["ports"], "port");
        if ports.is_empty() {
            ports = port_list(&spec["ports"], "containerPort");
        }
        GameServer {
            namespace: namespace.into(),
            name: name.into(),
            uid: meta["uid"].as_str().unwrap_or_default().to_string(),
            labels: strings(&meta["labels"]),
            annotations: strings(&meta["annotations"]),
            state: status["state"].as_str().unwrap_or_default().to_string(),
            pod_ip,
            ports,
        }
    }

    /// A whole GameServer object.
    pub fn from_object(obj: &Value) -> Option<GameServer> {
        let meta = &obj["metadata"];
        let name = meta["name"].as_str()?;
        let namespace = meta["namespace"].as_str().unwrap_or_default();
        Some(GameServer::from_json(namespace, name, meta, &obj["status"], &obj["spec"]))
    }

    pub fn has_labels(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// The cap on its players, when an annotation (or label) sets one.
    pub fn capacity_cap(&self) -> Result<Option<u32>, String> {
        let Some(text) = self.annotations.get(annotation::CAPACITY).or_else(|| self.labels.get(annotation::CAPACITY))
        else {
            return Ok(None);
        };
        match text.trim().parse::<u32>() {
            Ok(n) if (1..=crate::config::MAX_SHARD_CAPACITY).contains(&n) => Ok(Some(n)),
            _ => Err(format!("`{}: {text}` is not a player count", annotation::CAPACITY)),
        }
    }

    /// The shard names the decider recorded in `serves`.
    pub fn serves(&self) -> Vec<String> {
        names(self.annotations.get(annotation::SERVES))
    }
}

/// A comma-separated list of names.
pub fn names(list: Option<&String>) -> Vec<String> {
    list.map(|s| s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect()).unwrap_or_default()
}

/// `list` with `name` added (once).
pub fn with_name(list: Option<&String>, name: &str) -> String {
    let mut all = names(list);
    if !all.iter().any(|n| n == name) {
        all.push(name.to_string());
    }
    all.join(",")
}
