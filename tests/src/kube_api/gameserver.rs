//! GameServers the way Agones writes them: one UDP port with `portPolicy:
//! None` (the container port is the port players reach), and a status with
//! the state, the node's address, the node's and the pod's addresses and
//! the port, as the Agones controller fills it once the pod runs.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// What a test says about a GameServer; [`GameServerSpec::to_object`] makes
/// the rest up the way Agones would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameServerSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `status.state`: Scheduled, RequestReady, Ready, Reserved, Allocated,
    /// Shutdown, Error, Unhealthy.
    pub state: String,
    /// The pod's IP (`status.addresses[type=PodIP]`).
    pub pod_ip: String,
    /// The node's name (`status.nodeName`, the `Hostname` address).
    pub node_name: String,
    /// The node's IP (`status.address` and the `InternalIP` address).
    pub node_ip: String,
    /// The game port: container port and `status.ports[].port` alike.
    pub port: u16,
}

impl GameServerSpec {
    /// A Ready GameServer on node `node-1` (192.168.0.1), pod 10.0.0.10, port 7777.
    pub fn new(namespace: &str, name: &str) -> Self {
        GameServerSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            state: "Ready".to_string(),
            pod_ip: "10.0.0.10".to_string(),
            node_name: "node-1".to_string(),
            node_ip: "192.168.0.1".to_string(),
            port: 7777,
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    pub fn state(mut self, state: &str) -> Self {
        self.state = state.to_string();
        self
    }

    pub fn pod_ip(mut self, ip: &str) -> Self {
        self.pod_ip = ip.to_string();
        self
    }

    pub fn node(mut self, name: &str, ip: &str) -> Self {
        self.node_name = name.to_string();
        self.node_ip = ip.to_string();
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The object as a client would POST it plus the status Agones fills;
    /// the store adds uid, resourceVersion, creationTimestamp, generation.
    pub fn to_object(&self) -> Value {
        json!({
            "apiVersion": "agones.dev/v1",
            "kind": "GameServer",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
                "annotations": self.annotations,
            },
            "spec": {
                "container": "samp",
                "ports": [{
                    "name": "default",
                    "portPolicy": "None",
                    "containerPort": self.port,
                    "protocol": "UDP",
                }],
                "health": {"disabled": false, "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 3},
                "scheduling": "Packed",
                "sdkServer": {"logLevel": "Info", "grpcPort": 9357, "httpPort": 9358},
                "template": {
                    "metadata": {},
                    "spec": {"containers": [{"name": "samp", "image": "samp-shard:test", "resources": {}}]},
                },
            },
            "status": {
                "state": self.state,
                "ports": [{"name": "default", "port": self.port}],
                "address": self.node_ip,
                "addresses": [
                    {"type": "InternalIP", "address": self.node_ip},
                    {"type": "Hostname", "address": self.node_name},
                    {"type": "PodIP", "address": self.pod_ip},
                ],
                "nodeName": self.node_name,
                "reservedUntil": null,
                "players": null,
                "counters": {},
                "lists": {},
                "eviction": {"safe": "Never"},
            },
        })
    }
}
