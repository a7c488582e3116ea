//! GameServers -> shards: which Allocated GameServers are a frontend's
//! shards, which cannot serve (and why, with the fix), how many Ready ones
//! wait in each pool, and what the decider recorded. Then the desired
//! cluster: the file's shards plus the discovered ones, which the owner
//! reconciles into the maps by the same path as a file reload.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::gameserver::{annotation, GameServer};
use crate::config::{Frontend, Role, Shard, ShardSource, Validated, MAX_SHARD_CAPACITY, SITE_LABEL};

/// A GameServer that should be a shard but cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unusable {
    pub frontend: String,
    pub namespace: String,
    pub name: String,
    pub problem: String,
    pub fix: String,
}

/// A failover the decider recorded: `target` now serves `dead`'s players.
/// `on` is the uid of the GameServer the record is on: the same two names
/// can meet again in a later failover when a name comes back on a new
/// object, and that is a decision of its own, not one already applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decision {
    pub dead: String,
    pub target: String,
    pub on: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    /// Usable shards, in a stable order (frontend, then name).
    pub shards: Vec<Shard>,
    pub unusable: Vec<Unusable>,
    /// Ready GameServers in each frontend's pool (index = frontend).
    pub pool_ready: Vec<usize>,
    pub decisions: Vec<Decision>,
}

/// The GameServers of every watched namespace (name order within one).
pub type GameServers = BTreeMap<String, Vec<GameServer>>;

/// Sorts the GameServers of every Agones frontend of `cfg` (its file
/// config: the frontends and the listed shards).
pub fn discover(cfg: &Validated, all: &GameServers) -> Discovery {
    let mut d = Discovery { pool_ready: vec![0; cfg.frontends.len()], ..Default::default() };
    let mut taken_names: HashSet<&str> = cfg.shards.iter().map(|s| s.name.as_str()).collect();
    let mut taken_addrs: HashSet<std::net::Ipv4Addr> = cfg.shards.iter().map(|s| s.address).collect();
    taken_addrs.extend(cfg.frontends.iter().map(|f| *f.address.ip()));
    for (fi, fe) in cfg.frontends.iter().enumerate() {
        let Some(agones) = &fe.agones else { continue };
        let Some(list) = all.get(&agones.namespace) else { continue };
        for gs in list {
            if gs.state == "Ready" && gs.has_labels(&agones.pool_labels) {
                d.pool_ready[fi] += 1;
            }
            // The decider's records, on the frontend's GameServers.
            if gs.has_labels(&agones.labels) {
                for dead in gs.serves() {
                    d.decisions.push(Decision { dead, target: gs.name.clone(), on: gs.uid.clone() });
                }
                if let Some(to) = gs.annotations.get(annotation::MOVED_TO) {
                    d.decisions.push(Decision { dead: gs.name.clone(), target: to.clone(), on: gs.uid.clone() });
                }
            }
            if gs.state != "Allocated" || !gs.has_labels(&agones.labels) {
                continue;
            }
            match as_shard(fi, fe, gs, &mut taken_names, &mut taken_addrs).and_then(|s| in_site(cfg, fe, gs, s)) {
                Ok(shard) => d.shards.push(shard),
                Err(unusable) => d.unusable.push(unusable),
            }
        }
    }
    d.decisions.sort();
    d.decisions.dedup();
    d
}

/// GameServer `gs`, Allocated with frontend `fi`'s labels, as a shard of it,
/// or why it cannot be one. Takes its name and address.
fn as_shard<'a>(
    fi: usize,
    fe: &Frontend,
    gs: &'a GameServer,
    taken_names: &mut HashSet<&'a str>,
    taken_addrs: &mut HashSet<std::net::Ipv4Addr>,
) -> Result<Shard, Unusable> {
    let unusable = |problem: String, fix: &str| Unusable {
        frontend: fe.name.clone(),
        namespace: gs.namespace.clone(),
        name: gs.name.clone(),
        problem,
        fix: fix.into(),
    };
    let port = fe.address.port();
    let Some(ip) = gs.pod_ip else {
        return Err(unusable(
            "no pod IP in its status yet".into(),
            "wait for Agones to fill `status.addresses` (type PodIP); the shard is used as soon as it has one",
        ));
    };
    if !gs.ports.contains(&port) {
        return Err(unusable(
            format!("it listens on port(s) {:?}, the frontend on {port}", gs.ports),
            "run the game server on the frontend's port with `portPolicy: None` (SA:MP clients scramble packets with the port, so the proxy never changes it)",
        ));
    }
    let cap = gs
        .capacity_cap()
        .map_err(|problem| unusable(problem, "set it to a number of players, 1..=1000, or remove it"))?;
    if !taken_names.insert(gs.name.as_str()) {
        return Err(unusable(
            "its name is also a shard's in the config file (or another frontend's GameServer)".into(),
            "rename the listed shard; GameServer names are the shard names",
        ));
    }
    if !taken_addrs.insert(ip) {
        return Err(unusable(
            format!("its pod IP {ip} is another shard's (or a frontend's) address"),
            "each shard needs its own IP: replies are mapped back by shard IP",
        ));
    }
    Ok(Shard {
        name: gs.name.clone(),
        address: ip,
        frontend: fi,
        capacity: cap.unwrap_or(MAX_SHARD_CAPACITY),
        role: Role::Active,
        source: ShardSource::GameServer { namespace: gs.namespace.clone(), capped: cap.is_some() },
        site: None,
    })
}

/// `shard` in the site its GameServer's label `samp-proxy.dev/site` names
/// (none without the label), or why it cannot be used.
fn in_site(cfg: &Validated, fe: &Frontend, gs: &GameServer, mut shard: Shard) -> Result<Shard, Unusable> {
    let Some(name) = gs.labels.get(SITE_LABEL).or_else(|| gs.annotations.get(SITE_LABEL)) else {
        return Ok(shard);
    };
    match cfg.sites.iter().position(|s| &s.name == name) {
        Some(i) => {
            shard.site = Some(i);
            Ok(shard)
        }
        None => Err(Unusable {
            frontend: fe.name.clone(),
            namespace: gs.namespace.clone(),
            name: gs.name.clone(),
            problem: format!("its label `{SITE_LABEL}: {name}` names no site of the config"),
            fix: "add the site under `sites:` (its remote node and ingress nodes), or correct the label".into(),
        }),
    }
}

/// The desired cluster: the file's config with `discovered` shards added
/// (each already checked against the file's names and addresses).
pub fn compose(file: &Validated, discovered: &[Shard]) -> Validated {
    let mut cfg = file.clone();
    let room = (proxy_common::MAX_BACKENDS as usize - 1).saturating_sub(cfg.shards.len());
    cfg.shards.extend(discovered.iter().take(room).cloned());
    cfg
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cfg() -> Validated {
        crate::config::parse(
            "t.yaml",
            "interfaces: [eth0]\nfrontends:\n  - name: main\n    address: 198.18.0.1:7777\n    agones:\n      namespace: game\n      labels: {samp-proxy.dev/frontend: main}\n      pool_labels: {agones.dev/fleet: shards}\nshards:\n  - {name: static-1, address: 198.18.1.1, capacity: 50}\n",
        )
        .unwrap()
    }

    fn gs(
        name: &str,
        state: &str,
        ip: Option<&str>,
        port: u16,
        labels: &[(&str, &str)],
        ann: &[(&str, &str)],
    ) -> GameServer {
        let mut addresses = vec![json!({"type": "InternalIP", "address": "198.19.0.1"})];
        if let Some(ip) = ip {
            addresses.push(json!({"type": "PodIP", "address": ip}));
        }
        let obj = json!({
            "metadata": {"name": name, "namespace": "game", "uid": format!("uid-{name}"),
                "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "annotations": ann.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
            "spec": {"ports": [{"name": "default", "containerPort": port}]},
            "status": {"state": state, "address": "198.19.0.1", "addresses": addresses, "ports": [{"name": "default", "port": port}]},
        });
        GameServer::from_object(&obj).unwrap()
    }

    const FE: (&str, &str) = ("samp-proxy.dev/frontend", "main");
    const POOL: (&str, &str) = ("agones.dev/fleet", "shards");

    #[test]
    fn allocated_gameservers_with_the_labels_are_shards() {
        let all = GameServers::from([(
            "game".to_string(),
            vec![
                gs("a", "Allocated", Some("198.18.2.1"), 7777, &[FE, POOL], &[]),
                gs("b", "Ready", Some("198.18.2.2"), 7777, &[POOL], &[]),
                gs("c", "Ready", Some("198.18.2.3"), 7777, &[FE, POOL], &[]),
                gs("d", "Allocated", Some("198.18.2.4"), 7777, &[POOL], &[]),
                gs("e", "Shutdown", Some("198.18.2.5"), 7777, &[FE, POOL], &[]),
                gs("f", "Allocated", Some("198.18.2.6"), 7777, &[FE], &[(annotation::CAPACITY, "40")]),
            ],
        )]);
        let d = discover(&cfg(), &all);
        let names: Vec<_> = d.shards.iter().map(|s| (s.name.as_str(), s.capacity, s.capacity_from_probe())).collect();
        assert_eq!(names, [("a", 1000, true), ("f", 40, false)]);
        assert_eq!(d.shards[0].address.to_string(), "198.18.2.1");
        assert_eq!(d.pool_ready, [2], "b and c are Ready in the pool");
        assert!(d.unusable.is_empty());
    }

    #[test]
    fn gameservers_that_cannot_serve_are_reported_with_the_fix() {
        let all = GameServers::from([(
            "game".to_string(),
            vec![
                gs("noip", "Allocated", None, 7777, &[FE], &[]),
                gs("port", "Allocated", Some("198.18.2.2"), 7000, &[FE], &[]),
                gs("static-1", "Allocated", Some("198.18.2.3"), 7777, &[FE], &[]),
                gs("sameip", "Allocated", Some("198.18.1.1"), 7777, &[FE], &[]),
                gs("cap", "Allocated", Some("198.18.2.5"), 7777, &[FE], &[(annotation::CAPACITY, "lots")]),
            ],
        )]);
        let d = discover(&cfg(), &all);
        assert!(d.shards.is_empty());
        let problems: Vec<_> = d.unusable.iter().map(|u| (u.name.as_str(), u.problem.as_str())).collect();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].1.contains("no pod IP"));
        assert!(problems[1].1.contains("7000") && d.unusable[1].fix.contains("portPolicy: None"));
        assert!(problems[2].1.contains("name"));
        assert!(problems[3].1.contains("198.18.1.1"));
        assert!(problems[4].1.contains("lots"));
    }

    #[test]
    fn recorded_decisions_are_read_back() {
        let all = GameServers::from([(
            "game".to_string(),
            vec![
                gs("new", "Allocated", Some("198.18.2.1"), 7777, &[FE], &[(annotation::SERVES, "old-1, old-2")]),
                gs("gone", "Shutdown", Some("198.18.2.2"), 7777, &[FE], &[(annotation::MOVED_TO, "static-1")]),
            ],
        )]);
        let d = discover(&cfg(), &all);
        let pairs: Vec<_> = d.decisions.iter().map(|x| (x.dead.as_str(), x.target.as_str())).collect();
        assert_eq!(pairs, [("gone", "static-1"), ("old-1", "new"), ("old-2", "new")]);
        let composed = compose(&cfg(), &d.shards);
        assert_eq!(composed.shards.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["static-1", "new"]);
    }

    /// The soak's seed 10: s6 -> s7 was applied, both were replaced by
    /// new objects of the same names, and s6 -> s7 happened again. The
    /// second record is on another GameServer: a decision not yet applied.
    #[test]
    fn the_same_names_on_a_new_gameserver_are_a_new_decision() {
        let record = |uid: &str| {
            let mut s7 = gs("s7", "Allocated", Some("198.18.2.7"), 7777, &[FE], &[(annotation::SERVES, "s6")]);
            s7.uid = uid.into();
            discover(&cfg(), &GameServers::from([("game".to_string(), vec![s7])])).decisions
        };
        let (first, again) = (record("first-object"), record("second-object"));
        assert_eq!((first[0].dead.as_str(), first[0].target.as_str()), ("s6", "s7"));
        assert_eq!((again[0].dead.as_str(), again[0].target.as_str()), ("s6", "s7"));
        assert_ne!(first[0], again[0], "a new object's record is a decision of its own");
    }
}
