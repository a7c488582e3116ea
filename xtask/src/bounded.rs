//! A child run in its own process group with a time limit: SIGTERM past
//! the limit (tests tear their namespaces down on it), SIGKILL after a
//! grace period, and whatever is left of the group (agents it started)
//! killed at the end. Afterwards `remove_leftovers` clears the namespaces
//! and pins it named after its pid.

use std::{
    os::unix::process::CommandExt,
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

/// How a bounded child ended.
pub enum Ended {
    Exited(ExitStatus),
    /// Stopped past its limit.
    TimedOut,
}

/// Runs `cmd` to its end or `limit`; returns its pid (for
/// `remove_leftovers`) and how it ended.
pub fn run_bounded(mut cmd: Command, limit: Duration, grace: Duration) -> Result<(u32, Ended), String> {
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let pid = child.id();
    let t0 = Instant::now();
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(Ended::Exited(status)),
            Ok(None) if t0.elapsed() > limit => {
                signal_group(pid, "TERM");
                let grace_start = Instant::now();
                while grace_start.elapsed() < grace && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                signal_group(pid, "KILL");
                let _ = child.wait();
                break Ok(Ended::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    signal_group(pid, "KILL");
    ended.map(|e| (pid, e))
}

fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Removes the namespaces and bpffs pins the child with `pid` made
/// (`sampx-PID-...`, tests/src/netns.rs and pins.rs), returning their names.
pub fn remove_leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("sampx-{pid}-");
    let mut left = Vec::new();
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    for name in String::from_utf8_lossy(&out).lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with(&prefix) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
            left.push(format!("namespace {name}"));
        }
    }
    for entry in std::fs::read_dir("/sys/fs/bpf").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path()));
            left.push(format!("pins /sys/fs/bpf/{name}"));
        }
    }
    left
}
