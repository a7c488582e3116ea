//! The agent can die, stop and restart while players play: the XDP links
//! and maps are pinned, so the kernel keeps forwarding (and keeps rewriting
//! every shard reply to the public address) while no agent runs, and a new
//! agent adopts them, swapping its program in atomically: the same program
//! after a crash or a stop, a rebuilt one on an upgrade (`--xdp-object`).

use std::{collections::HashMap, time::Duration};

use proxy_agent::protocol::Request;
use proxy_common::Counter;
use serde_json::Value;
use tests::{
    agent::rebuilt_object,
    scenario::{wait_for, Scenario},
};

const PLAYERS: usize = 100;
/// Game packets a second per player: one every 50 ms.
const RATE_HZ: f64 = 20.0;

fn shard_players(st: &Value) -> HashMap<String, (u64, u64)> {
    st["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (s["players"].as_u64().unwrap(), s["home_group"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// Each pinned XDP link of the agent: (link, program id, program tag), by
/// link name. bpftool reads links and programs (not aya's objects).
fn linked_programs(sc: &Scenario) -> Vec<(String, u64, String)> {
    let bpftool = |args: &[&str]| -> Value {
        let out = std::process::Command::new("bpftool").arg("-j").args(args).output().unwrap();
        assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut links: Vec<_> =
        std::fs::read_dir(sc.agent.pins.path.join("links")).unwrap().map(|e| e.unwrap().path()).collect();
    links.sort();
    links
        .iter()
        .map(|link| {
            let id = bpftool(&["link", "show", "pinned", link.to_str().unwrap()])["prog_id"].as_u64().unwrap();
            let tag = bpftool(&["prog", "show", "id", &id.to_string()])["tag"].as_str().unwrap().to_string();
            (link.file_name().unwrap().to_string_lossy().into_owned(), id, tag)
        })
        .collect()
}

#[test]
fn players_keep_flowing_through_agent_deaths_and_restarts() {
    let mut sc = Scenario::start(2, |t| t.config(&[500, 500], "")).unwrap();
    let mut cfg = sc.player_config();
    cfg.rate_hz = RATE_HZ;
    cfg.reconnect_after = Duration::from_secs(2);
    let players = sc.players(PLAYERS, &cfg).unwrap();
    Scenario::wait_playing(&players, 5);
    let shard_of: HashMap<String, String> =
        players.snapshot().iter().map(|p| (p.local.clone(), p.current_shard().unwrap().to_string())).collect();
    let before = shard_players(&sc.agent.request(&Request::Status).unwrap());

    for (round, how) in ["SIGKILL", "SIGTERM", "upgrade"].into_iter().enumerate() {
        let programs_before = linked_programs(&sc);
        let redirected = sc.agent.tables().unwrap().counter(Counter::IngressRedirect).unwrap();
        players.reset_gaps();
        let received: HashMap<String, u64> = players.snapshot().iter().map(|p| (p.local.clone(), p.received)).collect();
        match how {
            "SIGKILL" => sc.agent.kill().unwrap(),
            _ => assert!(sc.agent.stop().unwrap().success(), "{how}: clean exit"),
        }
        if how == "upgrade" {
            // The new agent runs a rebuilt data plane (another program).
            sc.agent.run_args = vec!["--xdp-object".into(), rebuilt_object().display().to_string()];
        }
        // No agent runs: every player keeps getting its echoes (a second's worth).
        wait_for(&format!("echoes with no agent ({how})"), Duration::from_secs(10), || {
            players.snapshot().iter().all(|p| p.received >= received[&p.local] + RATE_HZ as u64)
        });
        let while_down: HashMap<String, u64> =
            players.snapshot().iter().map(|p| (p.local.clone(), p.received)).collect();
        sc.agent.restart(&sc.topo.proxy).unwrap();
        wait_for("the new agent to say it adopted the pinned links", Duration::from_secs(5), || {
            sc.agent.log_text().matches("adopted").count() >= 3 * (round + 1)
        });
        let programs_after = linked_programs(&sc);
        assert_eq!(programs_after.len(), programs_before.len(), "{how}: every link is still there");
        for ((link, id_before, tag_before), (_, id_after, tag_after)) in programs_before.iter().zip(&programs_after) {
            assert_ne!(id_before, id_after, "{how}: the new agent's program replaced the old one in {link}");
            if how == "upgrade" {
                assert_ne!(tag_before, tag_after, "{how}: {link} runs the rebuilt program");
            } else {
                assert_eq!(tag_before, tag_after, "{how}: {link} runs the same program again");
            }
        }
        wait_for(&format!("echoes after the restart ({how})"), Duration::from_secs(10), || {
            players.snapshot().iter().all(|p| p.received >= while_down[&p.local] + RATE_HZ as u64)
        });

        for p in players.snapshot() {
            assert_eq!(p.connects, 1, "{how}: {} reconnected", p.local);
            assert_eq!(p.wrong_source, 0, "{how}: {} got a packet from a shard's own address", p.local);
            assert_eq!(p.current_shard(), Some(shard_of[&p.local].as_str()), "{how}: {} changed shard", p.local);
            // A game-rate silence of 50 ms; allow the scheduling of a loaded
            // 2-core machine, far below the client's time-out of seconds.
            assert!(p.max_gap_ms < 500, "{how}: {} went {} ms without an echo", p.local, p.max_gap_ms);
        }
        let st = sc.agent.request(&Request::Status).unwrap();
        assert_eq!(st["totals"]["established"], PLAYERS as u64, "{how}: every session is still there");
        assert_eq!(shard_players(&st), before, "{how}: same players, same groups, per shard");
        let now = sc.agent.tables().unwrap().counter(Counter::IngressRedirect).unwrap();
        assert!(now > redirected, "{how}: the counters kept counting");
    }
    players.stop();
}

/// Pins from an agent of another layout are refused, with the way out.
#[test]
fn pins_of_another_layout_are_refused_with_the_way_out() {
    let mut sc = Scenario::start(1, |t| t.config(&[100], "")).unwrap();
    let status = sc.agent.stop().unwrap();
    assert!(status.success(), "{status}: {}", sc.agent.log_text());
    let pins = sc.agent.pins.path.clone();
    let ours = std::fs::read_dir(&pins)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("layout-v"))
        .expect("the layout is recorded beside the maps");
    std::fs::remove_dir(&ours).unwrap();
    std::fs::create_dir(pins.join("layout-v1")).unwrap();
    let err = sc.agent.restart(&sc.topo.proxy).unwrap_err().to_string();
    assert!(err.contains("have layout 1") && err.contains("proxy-agent detach") && err.contains("rm -r"), "{err}");
}

/// A running data plane cannot be resized: pins of another size are refused.
#[test]
fn session_tables_of_another_size_are_refused_with_the_way_out() {
    let mut sc = Scenario::start(1, |t| t.config(&[100], "")).unwrap();
    let status = sc.agent.stop().unwrap();
    assert!(status.success(), "{status}: {}", sc.agent.log_text());
    let yaml = std::fs::read_to_string(&sc.agent.config_path).unwrap();
    std::fs::write(&sc.agent.config_path, format!("{yaml}max_sessions: 2048\n")).unwrap();
    let err = sc.agent.restart(&sc.topo.proxy).unwrap_err().to_string();
    assert!(
        err.contains("holds 262144 entries but `max_sessions` asks for 2048") && err.contains("cannot be resized"),
        "{err}"
    );
}

/// A pod's veth re-created while no agent runs (same name, new interface):
/// its pinned links are severed; the next agent attaches new ones instead
/// of failing to start, and the shard behind it is served again.
#[test]
fn an_interface_recreated_while_the_agent_is_down_gets_new_links() {
    let mut sc = Scenario::start(2, |t| t.config(&[500, 500], "")).unwrap();
    assert!(sc.agent.stop().unwrap().success());
    sc.topo.recreate_shard_link(1).unwrap();
    sc.agent.restart(&sc.topo.proxy).expect("the agent starts over a severed pinned link");
    let log = sc.agent.log_text();
    assert!(log.contains("cannot be adopted"), "{log}");
    // Every player placed on s2 plays through the new interface.
    let players = sc.players(20, &sc.player_config()).unwrap();
    Scenario::wait_playing(&players, 5);
    assert!(players.snapshot().iter().any(|p| p.current_shard() == Some("s2")), "placement reaches s2");
    let redirected_to_s2 = sc.shard_stats(1).game_packets();
    assert!(redirected_to_s2 > 0);
    players.stop();
}
