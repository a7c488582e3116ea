//! The operator's side of the control socket: send one request, print the
//! reply as a table (or as JSON with `--json`).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::protocol::Request;

/// Sends `req` and returns the reply's `data`, or the agent's error.
pub fn send(socket: &Path, req: &Request) -> Result<Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is `proxy-agent run` up? `--socket` or `--config` picks another socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("{}\n", req.to_line()).as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).context("reading the agent's reply")?;
    if line.is_empty() {
        bail!("the agent closed the connection without a reply");
    }
    let reply: Value = serde_json::from_str(&line).context("the agent's reply is not JSON")?;
    if reply["ok"] == Value::Bool(true) {
        return Ok(reply["data"].clone());
    }
    Err(anyhow!("{}", reply["error"].as_str().unwrap_or("the agent refused the request without saying why")))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints the reply of `req` for a human.
pub fn print_human(req: &Request, data: &Value) {
    match req {
        Request::Status => {
            for fe in data["frontends"].as_array().into_iter().flatten() {
                println!("frontend {} {}", s(&fe["name"]), s(&fe["address"]));
            }
            print_shards(&data["shards"]);
            let t = &data["totals"];
            println!(
                "total: {} players / {} slots ({} pending, {} moving)",
                s(&t["players"]),
                s(&t["capacity"]),
                s(&t["pending"]),
                s(&t["moving"])
            );
            let a = &data["agent"];
            println!(
                "expired: {} idle, {} moved-but-never-reconnected",
                s(&a["expired_idle"]),
                s(&a["expired_moving"])
            );
        }
        Request::Shards => print_shards(data),
        Request::Sessions { .. } => {
            println!(
                "{:<22} {:<8} {:<10} {:<12} {:>6} {:>9}",
                "CLIENT", "FRONTEND", "SHARD", "STATE", "GROUP", "IDLE(ms)"
            );
            let list = data.as_array().cloned().unwrap_or_default();
            for x in &list {
                println!(
                    "{:<22} {:<8} {:<10} {:<12} {:>6} {:>9}",
                    s(&x["client"]),
                    s(&x["frontend"]),
                    s(&x["shard"]),
                    s(&x["state"]),
                    s(&x["group"]),
                    s(&x["idle_ms"])
                );
            }
            println!("{} sessions", list.len());
        }
        Request::Migrate { .. } => {
            let groups = data["groups"].as_array().map(|g| g.len()).unwrap_or(0);
            print!("moving {} players to {}", s(&data["moved"]), s(&data["to"]));
            if groups > 0 {
                print!(" ({groups} groups repointed)");
            }
            println!("; {} already there. They reconnect on their own: no kick.", s(&data["already_there"]));
        }
        Request::Drain { shard } | Request::Undrain { shard } => {
            let what =
                if data["drained"] == Value::Bool(true) { "drained: no new players" } else { "open for new players" };
            let note = if data["changed"] == Value::Bool(true) { "" } else { " (no change)" };
            println!("shard {shard} {what}{note}");
        }
        Request::Events => {
            println!(
                "{:<13} {:<16} {:<10} {:<10} {:>7}  {:<8} DETAIL",
                "AT(ms)", "EVENT", "SHARD", "TARGET", "PLAYERS", "GROUPS"
            );
            for e in data.as_array().into_iter().flatten() {
                let groups: Vec<String> = e["groups"].as_array().into_iter().flatten().map(s).collect();
                println!(
                    "{:<13} {:<16} {:<10} {:<10} {:>7}  {:<8} {}",
                    s(&e["at_ms"]),
                    s(&e["kind"]),
                    s(&e["shard"]),
                    s(&e["target"]),
                    s(&e["players"]),
                    groups.join(","),
                    s(&e["detail"])
                );
            }
        }
        Request::Failover { shard, .. } => {
            println!(
                "failover of {shard}: {} players moving together to {}; they reconnect on their own.",
                s(&data["moved"]),
                s(&data["to"])
            );
        }
        Request::Reload => {
            let changes = data["changes"].as_array().cloned().unwrap_or_default();
            if changes.is_empty() {
                println!("reloaded: no change");
            }
            for c in changes {
                println!("reloaded: {}", s(&c));
            }
        }
    }
}

fn print_shards(shards: &Value) {
    println!(
        "{:<10} {:<16} {:<8} {:<8} {:<10} {:>7} {:>8} {:>7} {:>6}  GROUPS",
        "SHARD", "ADDRESS", "ROLE", "STATE", "HEALTH", "PLAYERS", "CAPACITY", "PENDING", "MOVING"
    );
    for x in shards.as_array().into_iter().flatten() {
        let state = if x["drained"] == Value::Bool(true) { "drained" } else { "open" };
        let groups: Vec<String> = x["groups"].as_array().into_iter().flatten().map(s).collect();
        println!(
            "{:<10} {:<16} {:<8} {:<8} {:<10} {:>7} {:>8} {:>7} {:>6}  {}",
            s(&x["name"]),
            s(&x["address"]),
            s(&x["role"]),
            state,
            s(&x["health"]),
            s(&x["players"]),
            s(&x["capacity"]),
            s(&x["pending"]),
            s(&x["moving"]),
            groups.join(",")
        );
    }
}
