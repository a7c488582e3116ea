//! The demo a newcomer runs: a short run completes cleanly (skipping what does
//! not fit), a longer one tells the whole story (query, migration, failover),
//! and Ctrl-C tears it down.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tests::{agent::agent_bin, netns::PREFIX};

fn demo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_demo"));
    cmd.env("PROXY_AGENT_BIN", agent_bin());
    cmd
}

fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mine = format!("{PREFIX}-{pid}-");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with(&mine)).map(str::to_string).collect()
}

const METRICS_AT: &str = "Prometheus text was served at http://127.0.0.1:9478/metrics inside namespace";

#[test]
fn a_short_demo_runs_clean() {
    let out = demo().args(["--players", "60", "--seconds", "4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("players connected:            60 / 60"), "{stdout}");
    assert!(stdout.contains("moved only when told or when their shard died: 60 / 60"), "{stdout}");
    assert!(stdout.contains("session_promoted       60"), "{stdout}");
    // Four seconds hold the query, not the migration or the failover: those
    // are skipped, and say so.
    assert!(stdout.contains("query: the cluster answers the server browser as ONE server"), "{stdout}");
    assert!(stdout.contains("migrate: three chosen players move, silently: skipped"), "{stdout}");
    assert!(stdout.contains("failover: shard s1 dies: skipped"), "{stdout}");
    assert!(stdout.contains(METRICS_AT), "{stdout}");
}

/// The number before `what` in the line that contains it.
fn number_before(line: &str, what: &str) -> usize {
    let head = &line[..line.find(what).unwrap()];
    head.split_whitespace().last().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn the_whole_story_runs_with_few_players() {
    let out = demo().args(["--players", "40", "--seconds", "20"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("players connected:            40 / 40"), "{stdout}");
    assert!(stdout.contains("moved only when told or when their shard died: 40 / 40"), "{stdout}");
    // The query is answered for the whole cluster: the three active shards'
    // 500 + 300 + 200 slots (the standby's are for failovers, not newcomers).
    assert!(stdout.contains("    query: \"SA:MP cluster\": ") && stdout.contains(" / 1000 players"), "{stdout}");
    // Three chosen players, moved by the CLI, each arrive on s2.
    assert!(stdout.contains("$ proxy-agent migrate --client "), "{stdout}");
    assert!(stdout.contains("moving 3 players to s2"), "the CLI's own output: {stdout}");
    let arrivals = stdout.lines().filter(|l| l.contains(" arrived on s2 ") && l.ends_with(" after the command"));
    assert_eq!(arrivals.count(), 3, "{stdout}");
    assert!(stdout.contains("migrate: all 3 chosen players arrived on s2"), "{stdout}");
    // s1 dies: its group goes to the standby and every one of its players follows.
    let line = stdout
        .lines()
        .find(|l| l.contains("failover: s1 died; "))
        .unwrap_or_else(|| panic!("no failover line: {stdout}"));
    assert!(line.contains("its group moved to s4"), "{line}");
    let back = number_before(line, "of its players were back on s4");
    assert!((5..=37).contains(&back), "s1 should have held about half of 40 players, less the 3 moved: {line}");
    let s4 = stdout.lines().find(|l| l.starts_with("  s4: placed    0 ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(s4.contains(&format!("at the end {back:>4};")), "the standby should end with s1's players: {s4}");
    assert!(stdout.contains(METRICS_AT), "{stdout}");
    assert!(stdout.contains("curl -s http://127.0.0.1:9478/metrics"), "{stdout}");
    assert!(stdout.contains("deploy/grafana/samp-proxy-dashboard.json"), "{stdout}");
}

#[test]
fn ctrl_c_tears_everything_down() {
    let mut child = demo()
        .args(["--players", "30", "--seconds", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait for the live table: the topology, agent and players are all up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines.next().expect("demo ended before its table").unwrap();
        if line.starts_with("   1  s1") {
            break;
        }
        assert!(Instant::now() < deadline, "no live table within 60 s");
    }
    assert!(!namespaces_of(pid).is_empty(), "the demo should have namespaces while running");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "demo after Ctrl-C: {status}\n{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    assert!(namespaces_of(pid).is_empty(), "namespaces left after Ctrl-C: {:?}", namespaces_of(pid));
}
