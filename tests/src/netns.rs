//! Network namespaces that clean up after themselves.
//!
//! Names are unique per process and call (`PREFIX-PID-N`), so tests can run in
//! parallel; `Drop` deletes the namespace even when a test panics.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Every namespace this harness makes starts with this.
pub const PREFIX: &str = "sampx";

pub struct NetNs {
    pub name: String,
}

/// Runs a command, failing with its output when it fails.
pub fn sh(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(out)
}

impl NetNs {
    /// A fresh namespace with loopback up. `role` is part of the name.
    pub fn new(role: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}-{}-{n}-{role}", std::process::id());
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = sh(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command prepared to run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// A command that enters the namespace (network only) just before exec.
    /// Unlike `ip netns exec`, it keeps the mount namespace, so what the
    /// program pins in bpffs is visible to the tests.
    pub fn spawn_command(&self, program: &std::path::Path) -> Result<Command> {
        use std::os::unix::process::CommandExt;
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls setns (async-signal-safe) on an fd
        // that the moved File keeps open until exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs a program inside the namespace and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = sh(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]).map(|_| ())
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it opens
    /// live there (and stay there when handed back), and BPF test runs see its
    /// routes.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on this thread only, with a valid namespace fd.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        bail!("setns into {}: {}", self.name, std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("a thread in namespace {} panicked", self.name))?
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Names of namespaces this process made that still exist.
pub fn leftovers() -> Vec<String> {
    let mine = format!("{PREFIX}-{}-", std::process::id());
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&mine))
        .map(str::to_string)
        .collect()
}

/// A veth pair from `a` (named `a_if`) to `b` (named `b_if`).
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    sh(Command::new("ip")
        .args(["link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name]))?;
    Ok(())
}
