//! `cargo xtask soak [--minutes N | --seconds N] [--seed S] [--players N]
//! [--break return-path|split-group]`: the soak binary (tests/src/bin/soak.rs) in its
//! own process group, stopped past its time plus a margin; whatever it
//! leaves (namespaces, pins, shard statistics) is removed afterwards.

use std::{process::Command, time::Duration};

use super::{
    bin,
    bounded::{remove_leftovers, run_bounded, Ended},
};

/// Past its own length plus this, a soak is stopped.
const MARGIN: Duration = Duration::from_secs(600);

pub fn soak(args: &[String]) -> Result<(), String> {
    let mut minutes = 3u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--minutes" => minutes = value.parse().map_err(|_| format!("--minutes {value}: a number"))?,
            "--seconds" => minutes = value.parse::<u64>().map_err(|_| format!("--seconds {value}: a number"))? / 60,
            "--seed" | "--players" | "--break" => {}
            other => {
                return Err(format!(
                "unknown soak option {other}; use --minutes N, --seconds N, --seed S, --players N, --break return-path|split-group"
            ))
            }
        }
    }
    let limit = Duration::from_secs(minutes.max(1) * 60) + MARGIN;
    let mut cmd = Command::new(bin("soak"));
    cmd.args(args).env("PROXY_AGENT_BIN", bin("proxy-agent"));
    let (pid, ended) = run_bounded(cmd, limit, Duration::from_secs(10))?;
    let result = match ended {
        Ended::Exited(status) if status.success() => Ok(()),
        Ended::Exited(status) => Err(format!("soak: {status} (the report above says what broke)")),
        Ended::TimedOut => Err(format!("soak still running after {} s: stopped", limit.as_secs())),
    };
    let mut left = remove_leftovers(pid);
    let stats = std::env::temp_dir().join(format!("samp-soak-{pid}"));
    if std::fs::remove_dir_all(&stats).is_ok() {
        left.push(format!("{}", stats.display()));
    }
    if !left.is_empty() {
        eprintln!("xtask: soak left behind (now removed): {}", left.join(", "));
    }
    result
}
