//! Agones clusters for tests and benchmarks: the agent's config for a
//! frontend whose shards are GameServers, and GameServers that stand for
//! the simulated shards (`s1`, `s2`, ... at the shards' addresses, so a
//! player's echoes name the GameServer it plays on), served by the
//! stand-in API server (`kube_api`) in the agent's namespace.

use std::net::TcpListener;

use anyhow::{Context, Result};

use crate::{
    kube_api::{GameServerSpec, KubeApi},
    scenario::Scenario,
    topology::{shard_ip, Topology},
};

pub const NS: &str = "game";
pub const FRONTEND_LABEL: (&str, &str) = ("samp-proxy.dev/frontend", "play");
pub const FLEET_LABEL: (&str, &str) = ("agones.dev/fleet", "shards");
pub const LEASE_NS: &str = "samp-proxy";
pub const LEASE: &str = "samp-proxy-leader";

/// The agent's config: no listed shard, every shard a GameServer; a 2 s
/// Lease; `extra` appended verbatim.
pub fn yaml(t: &Topology, api: &str, identity: &str, extra: &str) -> String {
    format!(
        "interfaces: [{ifs}]\n\
         frontends:\n  - name: play\n    address: {vip}\n    agones:\n      namespace: {NS}\n      \
         labels: {{{fk}: {fv}}}\n      pool_labels: {{{pk}: {pv}}}\n\
         kubernetes:\n  api_url: {api}\n  identity: {identity}\n  lease_duration_ms: 2000\n  lease_namespace: {LEASE_NS}\n\
         {extra}",
        ifs = t.proxy_ifs.join(", "),
        vip = t.vip(),
        fk = FRONTEND_LABEL.0,
        fv = FRONTEND_LABEL.1,
        pk = FLEET_LABEL.0,
        pv = FLEET_LABEL.1,
    )
}

/// GameServer `s{i+1}` for simulated shard `i`, in the fleet; `Allocated`
/// also gives it the frontend's label (as an allocation does).
pub fn gameserver(api: &KubeApi, i: usize, state: &str) -> Result<()> {
    let mut gs = GameServerSpec::new(NS, &format!("s{}", i + 1)).label(FLEET_LABEL.0, FLEET_LABEL.1).state(state);
    if state == "Allocated" {
        gs = gs.label(FRONTEND_LABEL.0, FRONTEND_LABEL.1);
    }
    gs.pod_ip = shard_ip(i).to_string();
    api.add_gameserver(&gs).map(|_| ())
}

/// A listener in the agent's namespace, for the stand-in API server.
pub fn listener_in(t: &Topology) -> Result<TcpListener> {
    t.proxy.run(|| TcpListener::bind("127.0.0.1:0"))?.map_err(Into::into)
}

/// A stand-in API server listening in the agent's namespace.
pub fn api_in(t: &Topology) -> Result<KubeApi> {
    KubeApi::start(listener_in(t)?)
}

/// A cluster whose shards are GameServers: one simulated shard per entry of
/// `states` (the state of its GameServer `s1`, `s2`, ...; `-` for none: a
/// shard the config lists), the stand-in API
/// serving them in the agent's namespace, and the agent (`identity` in the
/// Lease; `extra` appended to its config).
pub fn scenario(states: &[&str], identity: &str, extra: &str) -> Result<(Scenario, KubeApi)> {
    let mut api: Option<Result<KubeApi>> = None;
    let sc = Scenario::start(states.len(), |t| {
        let made = api_in(t).and_then(|a| {
            for (i, state) in states.iter().enumerate().filter(|(_, s)| **s != "-") {
                gameserver(&a, i, state)?;
            }
            Ok(a)
        });
        let config = made.as_ref().map(|a| yaml(t, &a.url(), identity, extra)).unwrap_or_default();
        api = Some(made);
        config
    });
    let api = api.context("the scenario made no API server")??;
    Ok((sc?, api))
}

/// Another ingress node on the same API: its own players, XDP and copies of
/// the shards (same addresses, other namespaces).
pub fn replica(api: &KubeApi, shards: usize, identity: &str, extra: &str) -> Result<Scenario> {
    let mut url: Option<Result<String>> = None;
    let sc = Scenario::start(shards, |t| {
        let u = listener_in(t).and_then(|l| api.serve_also(l));
        let config = u.as_ref().map(|u| yaml(t, u, identity, extra)).unwrap_or_default();
        url = Some(u);
        config
    });
    url.context("the replica made no listener")??;
    sc
}
