//! The agent as a real process in the proxy namespace, stopped with SIGTERM.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use proxy_agent::tables::Tables;

use crate::{netns::NetNs, pins::PinDir};

pub struct Agent {
    child: Option<Child>,
    pub pins: PinDir,
    pub config_path: PathBuf,
    /// The agent's control socket.
    pub socket: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Extra arguments for `proxy-agent run` (e.g. `--xdp-object`).
    pub run_args: Vec<String>,
}

/// The rebuilt variant of the XDP object that `cargo xtask build-ebpf` keeps
/// beside the one the agent embeds (one more log line: another program).
pub fn rebuilt_object() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proxy-ebpf/target/proxy-ebpf-rebuilt")
}

/// The TCX programs on `iface`'s egress in `ns`, first to last: (name, program id).
/// Where the agent's egress guard (`egress_guard`) shows.
/// Without TCX (before 6.6) the guard is a cls_bpf filter: then the bpf
/// filters `tc` lists, in priority order.
pub fn tcx_egress(ns: &NetNs, iface: &str) -> Result<Vec<(String, u32)>> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let name = iface.to_string();
    match ns.run(move || SchedClassifier::query_tcx(&name, TcAttachType::Egress))? {
        Ok((_, progs)) => Ok(progs.iter().map(|p| (p.name_as_str().unwrap_or("?").to_string(), p.id())).collect()),
        Err(_) => Ok(cls_bpf_egress(&ns.exec("tc", &["filter", "show", "dev", iface, "egress"]).unwrap_or_default())),
    }
}

/// (name, id) of each bpf filter in `tc filter show` output.
fn cls_bpf_egress(shown: &str) -> Vec<(String, u32)> {
    shown
        .lines()
        .filter(|l| l.contains(" bpf "))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let name = words.iter().position(|w| w.starts_with("handle")).and_then(|i| words.get(i + 2))?;
            let id = words.iter().position(|w| *w == "id").and_then(|i| words.get(i + 1))?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

/// The agent binary: `PROXY_AGENT_BIN`, else `target/<profile>/proxy-agent`
/// beside the running test binary.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROXY_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("profile dir") } else { dir };
    dir.join("proxy-agent")
}

impl Agent {
    /// Writes `yaml` (plus a private bpffs folder) to a file and runs the
    /// agent with it in `ns`, waiting up to 30 s for it to report READY.
    pub fn start(ns: &NetNs, yaml: &str) -> Result<Agent> {
        let pins = PinDir::new("agent")?;
        let config_path =
            std::env::temp_dir().join(format!("{}.yaml", pins.path.file_name().unwrap().to_string_lossy()));
        let socket = config_path.with_extension("sock");
        std::fs::write(
            &config_path,
            format!("{yaml}\nbpffs: {}\ncontrol_socket: {}\n", pins.path.display(), socket.display()),
        )?;
        let mut agent = Agent {
            child: None,
            pins,
            config_path,
            socket,
            logs: Arc::new(Mutex::new(Vec::new())),
            run_args: Vec::new(),
        };
        agent.spawn(ns)?;
        Ok(agent)
    }

    /// Starts the agent process again (after `stop` or `kill`), with the same
    /// config, pins and socket: it adopts the pinned data plane.
    pub fn restart(&mut self, ns: &NetNs) -> Result<()> {
        if self.child.is_some() {
            bail!("the agent is still running");
        }
        self.spawn(ns)
    }

    /// SIGKILL: the agent dies at once, as in a crash or an OOM kill.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("agent already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Runs the agent and waits up to 30 s for it to report READY.
    fn spawn(&mut self, ns: &NetNs) -> Result<()> {
        let bin = agent_bin();
        let mut child = ns
            .spawn_command(&bin)?
            .args(["run", "--config"])
            .arg(&self.config_path)
            .args(&self.run_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let logs = self.logs.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line == "READY" {
                        let _ = ready_tx.send(());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                self.child = None;
                bail!("agent exited with {status} before READY:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("agent not READY after 30 s:\n{}", self.log_text());
            }
        }
    }

    /// Sends a control request; the reply's data or the agent's error.
    pub fn request(&self, req: &proxy_agent::protocol::Request) -> Result<serde_json::Value> {
        proxy_agent::cli::send(&self.socket, req)
    }

    /// Sends raw bytes on the control socket and returns the first reply line.
    pub fn raw(&self, bytes: &[u8]) -> Result<String> {
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(bytes)?;
        let mut line = String::new();
        std::io::BufReader::new(&s).read_line(&mut line)?;
        Ok(line)
    }

    /// Runs the CLI (`proxy-agent ARGS --socket S`): (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = std::process::Command::new(agent_bin()).args(args).arg("--socket").arg(&self.socket).output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The agent's maps, opened from their pins.
    pub fn tables(&self) -> Result<Tables> {
        Tables::open_pinned(&self.pins.path)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM, then wait up to 10 s (SIGKILL after). Returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("agent already stopped")?;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("agent ignored SIGTERM for 10 s (killed: {status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        let _ = std::fs::remove_file(&self.config_path);
        let _ = std::fs::remove_file(&self.socket);
    }
}
