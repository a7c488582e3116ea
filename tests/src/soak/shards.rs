//! The simulated shards as processes (`samp-shard`), one per pod, so the
//! soak can SIGKILL and SIGSTOP them as a crash or a hang does. Each
//! incarnation writes its own statistics file; the checker reads them all.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
};

use anyhow::{Context, Result};

use crate::{netns::NetNs, sim::shard::ShardStats};

/// `samp-shard` beside the agent binary (both are built into one folder).
pub fn shard_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SAMP_SHARD_BIN") {
        return PathBuf::from(p);
    }
    crate::agent::agent_bin().with_file_name("samp-shard")
}

pub struct ShardProc {
    pub name: String,
    child: Option<Child>,
    /// Every incarnation's statistics file, oldest first.
    pub files: Vec<PathBuf>,
    pub stopped: bool,
}

impl ShardProc {
    pub fn spawn(ns: &NetNs, name: &str) -> Result<ShardProc> {
        let mut s = ShardProc { name: name.to_string(), child: None, files: Vec::new(), stopped: false };
        s.start(ns)?;
        Ok(s)
    }

    /// Starts a new incarnation (a fresh process: new cookies, no players).
    pub fn start(&mut self, ns: &NetNs) -> Result<()> {
        let dir = stats_dir();
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!("{}-{}.json", self.name, self.files.len()));
        let child = ns
            .spawn_command(&shard_bin())?
            .args(["--name", &self.name, "--stats-file"])
            .arg(&file)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} for {}", shard_bin().display(), self.name))?;
        self.child = Some(child);
        self.files.push(file);
        self.stopped = false;
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// SIGKILL and reap: a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: a hung server (it keeps its socket, answers nothing).
    pub fn hang(&mut self) {
        self.signal(libc::SIGSTOP);
        self.stopped = true;
    }

    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// Every incarnation's last statistics (a missing file reads empty).
    pub fn stats(&self) -> Vec<ShardStats> {
        self.files.iter().map(|f| read_stats(f)).collect()
    }
}

impl Drop for ShardProc {
    fn drop(&mut self) {
        self.kill();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Where every shard incarnation writes its statistics: `NAME-N.json`.
pub fn stats_dir() -> PathBuf {
    std::env::temp_dir().join(format!("samp-soak-{}", std::process::id()))
}

/// Every incarnation's statistics file: (shard, incarnation, stats).
pub fn all_stats() -> Vec<(String, usize, ShardStats)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(stats_dir()).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else { continue };
        let Some((shard, n)) = stem.rsplit_once('-') else { continue };
        let Ok(n) = n.parse() else { continue };
        out.push((shard.to_string(), n, read_stats(&e.path())));
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

pub fn read_stats(path: &Path) -> ShardStats {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}
