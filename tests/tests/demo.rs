//! The demo a newcomer runs: it completes cleanly, and Ctrl-C tears it down.

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

#[test]
fn a_short_demo_runs_clean() {
    let out = demo().args(["--players", "60", "--seconds", "4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("players connected:            60 / 60"), "{stdout}");
    assert!(stdout.contains("stayed on one shard:          60 / 60"), "{stdout}");
    assert!(stdout.contains("session_promoted       60"), "{stdout}");
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
