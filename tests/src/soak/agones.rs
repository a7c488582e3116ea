//! The soak's shards from Agones: beside the five listed shards, pods 6
//! and 7 are GameServers of the stand-in API server (`kube_api`, the
//! stand-in for a Kubernetes API server, which cannot run here), in the
//! same frontend, as an operator moving to Agones has them. `s6` starts
//! `Allocated` (an active shard), `s7` `Ready` (the pool a failover
//! allocates a fresh shard from). The Fleet's part is played here: a
//! GameServer whose shard died is replaced by a `Ready` one of the same
//! name (a new uid) once its players are elsewhere.
//!
//! One API server serves every agent's namespace (a listener in each, on
//! 127.0.0.1); an outage cuts or silences all of them at once.

use anyhow::Result;

use crate::{
    agones::{FLEET_LABEL, FRONTEND_LABEL, LEASE_NS, NS},
    dsr::pod_ip,
    kube_api::{GameServerSpec, KubeApi, Reachability},
    netns::NetNs,
};

/// Pods whose shards are GameServers, with their first state.
pub const PODS: [(usize, &str); 2] = [(5, "Allocated"), (6, "Ready")];

pub fn is_gameserver(pod: usize) -> bool {
    PODS.iter().any(|(p, _)| *p == pod)
}

pub struct Agones {
    pub api: KubeApi,
    /// The API's URL in each agent's namespace, by namespace name.
    urls: Vec<(String, String)>,
}

impl Agones {
    /// The API server, listening in every one of `namespaces`, holding the
    /// GameServers of `PODS`.
    pub fn start(namespaces: &[&NetNs]) -> Result<Agones> {
        let listen = |ns: &NetNs| -> Result<std::net::TcpListener> {
            ns.run(|| std::net::TcpListener::bind("127.0.0.1:0"))?.map_err(Into::into)
        };
        let (first, rest) = namespaces.split_first().ok_or_else(|| anyhow::anyhow!("no namespace"))?;
        let api = KubeApi::start(listen(first)?)?;
        let mut urls = vec![(first.name.clone(), api.url())];
        for ns in rest {
            urls.push((ns.name.clone(), api.serve_also(listen(ns)?)?));
        }
        let a = Agones { api, urls };
        for (pod, state) in PODS {
            a.add(pod, state)?;
        }
        Ok(a)
    }

    fn add(&self, pod: usize, state: &str) -> Result<()> {
        let mut gs = GameServerSpec::new(NS, &super::cluster::shard_name(pod))
            .label(FLEET_LABEL.0, FLEET_LABEL.1)
            .state(state)
            .pod_ip(&pod_ip(pod).to_string());
        if state == "Allocated" {
            gs = gs.label(FRONTEND_LABEL.0, FRONTEND_LABEL.1);
        }
        self.api.add_gameserver(&gs).map(|_| ())
    }

    /// The frontend's `agones:` block and the `kubernetes:` block of the
    /// agent in namespace `ns`, `identity` its Lease holder name.
    pub fn yaml(&self, ns: &NetNs, identity: &str) -> String {
        let url = self.urls.iter().find(|(n, _)| *n == ns.name).map(|(_, u)| u.as_str()).unwrap_or_default();
        format!(
            "kubernetes:\n  api_url: {url}\n  identity: {identity}\n  lease_duration_ms: 2000\n  \
             lease_namespace: {LEASE_NS}\n  allocation_timeout_ms: 2000\n"
        )
    }

    /// The `agones:` lines of the frontend (indented under it).
    pub fn frontend_yaml() -> String {
        format!(
            "    agones:\n      namespace: {NS}\n      labels: {{{}: {}}}\n      pool_labels: {{{}: {}}}\n",
            FRONTEND_LABEL.0, FRONTEND_LABEL.1, FLEET_LABEL.0, FLEET_LABEL.1
        )
    }

    /// The GameServer's state (`None`: there is none).
    pub fn state(&self, pod: usize) -> Option<String> {
        let gs = self.api.gameserver(NS, &super::cluster::shard_name(pod))?;
        gs["status"]["state"].as_str().map(str::to_string)
    }

    /// Agones' health check gave up on the shard: `Unhealthy` (the agents
    /// take it down at once; a pool GameServer is no longer allocated).
    pub fn unhealthy(&self, pod: usize) -> Result<()> {
        self.api.set_gameserver_state(NS, &super::cluster::shard_name(pod), "Unhealthy").map(|_| ())
    }

    /// The Fleet replaces a GameServer whose shard died: the old one is
    /// deleted, a `Ready` one of the same name joins the pool.
    pub fn replace(&self, pod: usize) -> Result<()> {
        let _ = self.api.delete_gameserver(NS, &super::cluster::shard_name(pod));
        self.add(pod, "Ready")
    }

    /// An API outage (`cut`: every connection closed at once; else silent,
    /// as a partition), or its end.
    pub fn outage(&self, on: bool, cut: bool) {
        self.api.set_reachability(match (on, cut) {
            (false, _) => Reachability::Up,
            (true, true) => Reachability::Closing,
            (true, false) => Reachability::Silent,
        });
    }

    /// Allocations Agones granted, for the report.
    pub fn allocations(&self) -> usize {
        self.api.allocations().iter().filter(|a| a.gameserver().is_some()).count()
    }
}
