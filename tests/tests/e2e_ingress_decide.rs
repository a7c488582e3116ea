//! One set of decisions among several ingress nodes (issue 20): with the
//! cluster's MariaDB as the coordinator, a listed shard that dies while the
//! ingress nodes cannot reach each other is failed over ONCE, by the
//! decider, and every node carries out that one decision; after the
//! partition heals every node holds the same sessions on the same shards.

use std::{collections::BTreeMap, time::Duration};

use proxy_agent::protocol::Request;
use tests::{
    agent::Agent,
    ha::{cluster::HaCluster, ecmp::Ecmp, topology::ingress_ip},
    mariadb::MariaDb,
    scenario::wait_for,
};

/// Drops every packet between ingress node `i` and the other ingress nodes.
fn partition(net: &Ecmp, nodes: usize, on: bool) {
    for i in 0..nodes {
        let ns = &net.net.ingress[i];
        if !on {
            let _ = ns.exec("nft", &["delete", "table", "inet", "partition"]);
            continue;
        }
        let others: Vec<String> = (0..nodes).filter(|&n| n != i).map(|n| ingress_ip(n).to_string()).collect();
        let set = others.join(", ");
        let script = format!(
            "table inet partition {{\n chain in {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n chain out {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("partition-{}-{i}.nft", std::process::id()));
        std::fs::write(&path, script).unwrap();
        ns.exec("nft", &["-f", path.to_str().unwrap()]).unwrap();
        let _ = std::fs::remove_file(path);
    }
}

fn coordinator(agent: &Agent) -> serde_json::Value {
    HaCluster::status(agent)["agent"]["coordinator"].clone()
}

/// Each player's shard as node `agent` routes it.
fn routes(agent: &Agent) -> BTreeMap<String, String> {
    let v = agent.request(&Request::Sessions { shard: None, client: None }).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] != "pending")
        .map(|s| (s["client"].as_str().unwrap().to_string(), s["shard"].as_str().unwrap().to_string()))
        .collect()
}

fn failovers_of(agent: &Agent, shard: &str) -> Vec<String> {
    let v = agent.request(&Request::Events).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "failover" && e["shard"] == shard)
        .map(|e| e["target"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[test]
fn a_shard_dying_during_a_partition_is_failed_over_once_by_every_node() {
    let db = MariaDb::start().unwrap();
    let net = Ecmp::build(3, &[0, 0, 1, 1], 100).unwrap();
    let extra = format!("coordinator:\n  database: \"{}\"\n  lease_ms: 1500\n", db.socket_url());
    let mut c = HaCluster::start(&net.net, &["active", "active", "standby", "standby"], 200, &extra).unwrap();
    wait_for("one decider", Duration::from_secs(30), || {
        c.live().filter(|a| coordinator(a)["deciding"] == true).count() == 1
    });
    let decider = c.live().position(|a| coordinator(a)["deciding"] == true).unwrap();
    let players = c.players(&net.net, 60, 30.0).unwrap();
    wait_for("60 players", Duration::from_secs(60), || {
        players.snapshot().iter().all(|p| p.connected && p.received >= 5)
    });
    c.wait_established_everywhere(60, Duration::from_secs(20));
    let on_s1: Vec<String> =
        players.snapshot().iter().filter(|p| p.current_shard() == Some("s1")).map(|p| p.local.clone()).collect();
    assert!(!on_s1.is_empty());

    partition(&net, 3, true);
    c.shards[0].stop();
    wait_for("s1's players playing again", Duration::from_secs(60), || {
        players
            .snapshot()
            .iter()
            .filter(|p| on_s1.contains(&p.local))
            .all(|p| p.current_shard().is_some_and(|s| s != "s1"))
    });
    let snapshot = players.snapshot();
    let targets: Vec<&str> =
        snapshot.iter().filter(|p| on_s1.contains(&p.local)).map(|p| p.current_shard().unwrap()).collect();
    assert!(targets.windows(2).all(|w| w[0] == w[1]), "s1's group arrived together: {targets:?}");
    let target = targets[0].to_string();
    wait_for("every node carried out the decision", Duration::from_secs(20), || {
        c.live().all(|a| failovers_of(a, "s1").len() == 1)
    });
    for (i, a) in c.live().enumerate() {
        assert_eq!(failovers_of(a, "s1"), vec![target.clone()], "node {} failed s1 over once, to {target}", i + 1);
        let events = a.request(&Request::Events).unwrap();
        let detail = events.as_array().unwrap().iter().find(|e| e["kind"] == "failover").unwrap()["detail"].clone();
        assert!(detail.as_str().unwrap().contains("decision #"), "node {}: {detail}", i + 1);
    }
    // Heal: every node ends with the same players on the same shards.
    partition(&net, 3, false);
    wait_for("the same sessions on every node", Duration::from_secs(30), || {
        let all: Vec<_> = c.live().map(routes).collect();
        all.windows(2).all(|w| w[0] == w[1]) && all[0].len() == 60
    });
    println!("partition: decider in{}; s1's {} players went to {target} on all three nodes", decider + 1, on_s1.len());
    let follower = (decider + 1) % 3;
    // A drain given to a follower is forwarded to the decider, decided once
    // and carried out by every node.
    let (ok, out, err) = c.ingress[follower].as_ref().unwrap().cli(&["drain", "s2"]).unwrap();
    assert!(ok, "a follower forwards the drain: {out} {err}");
    wait_for("s2 drained on every node", Duration::from_secs(10), || {
        c.live().all(|a| {
            let st = HaCluster::status(a);
            st["shards"].as_array().unwrap().iter().any(|s| s["name"] == "s2" && s["drained"] == true)
        })
    });
    let (ok, _, err) = c.ingress[follower].as_ref().unwrap().cli(&["failover", "nosuch"]).unwrap();
    assert!(!ok && err.contains("nosuch"), "bad requests are refused by the follower itself: {err}");
    c.kill_agent(decider).unwrap();
    let took = std::time::Instant::now();
    wait_for("a new decider", Duration::from_secs(10), || c.live().any(|a| coordinator(a)["deciding"] == true));
    println!("decider takeover after its agent was killed: {} ms", took.elapsed().as_millis());
    players.stop();
    drop(db);
}
