//! VRRP: two ingress nodes run Debian's keepalived (VRRPv3, 100 ms
//! adverts) and the master holds the VIP on its eth0; the router reaches the
//! VIP on the edge segment by ARP, and the new master's gratuitous ARP moves
//! it. Adverts are unicast between the two node addresses: no multicast on
//! the bridge to reason about.
//!
//! Each keepalived has its own config, pid files and log in a temporary
//! folder; the machine's /etc/keepalived is never read (`--use-file`).

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::topology::{ingress_ip, MultiIngress};
use crate::topology::VIP;

/// The VRRP advertisement interval, in centiseconds (VRRPv3's unit).
pub const ADVERT_CS: u32 = 10;
/// Priorities: node 0 is the preferred master.
const PRIORITY: [u32; 2] = [150, 100];
/// How long keepalived may take to start and elect a master.
const ELECTION_DEADLINE: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Keepalived's own failover time for the backup (RFC 5798 section 6.1):
/// Master_Down_Interval = 3 x Advertisement_Interval + Skew_Time, with
/// Skew_Time = (256 - Priority) x Advertisement_Interval / 256. With 100 ms
/// adverts and priority 100: 300 ms + 60.9 ms.
pub fn failover_time() -> Duration {
    let advert = Duration::from_millis(u64::from(ADVERT_CS) * 10);
    advert * 3 + advert * (256 - PRIORITY[1]) / 256
}

/// How the master is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: keepalived sends a priority-0 advert and drops the VIP; the
    /// backup takes over after its skew time (a planned stop).
    Term,
    /// SIGKILL of both keepalived processes and the node's NIC down: the
    /// node is dead, the backup takes over after Master_Down_Interval.
    Crash,
}

/// One keepalived (its parent process, run in the foreground, and the VRRP
/// child whose pid it writes).
struct Keepalived {
    child: Child,
    /// The VRRP child's pid, once known.
    vrrp: Option<i32>,
    vrrp_pid_file: PathBuf,
    /// False once signalled to stop: it no longer counts as a VRRP node.
    running: bool,
}

/// True while `pid` exists and is not a zombie (an orphan's zombie may wait
/// for a PID 1 that does not reap).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

impl Keepalived {
    /// Reads the VRRP child's pid from its pid file, only while it is a
    /// child of our keepalived (never a stale file's reused pid).
    fn learn_vrrp(&mut self) {
        if self.vrrp.is_some() || !self.running {
            return;
        }
        let Some(pid) = std::fs::read_to_string(&self.vrrp_pid_file).ok().and_then(|s| s.trim().parse().ok()) else {
            return;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 4, after the parenthesised name (which may hold spaces).
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(self.child.id()) {
            self.vrrp = Some(pid);
        }
    }

    /// Sends `sig` to both processes (the parent first: it would respawn a
    /// VRRP child that died alone) and stops counting this node. Returns at
    /// once; `reap` waits.
    fn signal(&mut self, sig: i32) {
        self.learn_vrrp();
        self.running = false;
        // Only an unreaped child: a reaped one's pid may belong to anyone.
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: a signal to our own, still unreaped, child.
            unsafe { libc::kill(self.child.id() as i32, sig) };
        }
        if let Some(pid) = self.vrrp.filter(|&p| alive(p)) {
            // SAFETY: the VRRP process our child started (checked to be its
            // child when learnt, and still there).
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Waits up to 5 s for both processes to be gone, then SIGKILLs them and
    /// waits 5 s more.
    fn reap(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut killed = false;
        loop {
            let parent_gone = self.child.try_wait()?.is_some();
            if parent_gone && !self.vrrp.is_some_and(alive) {
                let _ = std::fs::remove_file(&self.vrrp_pid_file);
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(5) && !killed {
                self.signal(libc::SIGKILL);
                killed = true;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("keepalived (pid {}, VRRP pid {:?}) still there 5 s after SIGKILL", self.child.id(), self.vrrp);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() || self.vrrp.is_some_and(alive) {
            self.signal(libc::SIGKILL);
        }
        let _ = self.reap();
    }
}

pub struct Vrrp {
    // Declared before `net`: the processes die before their namespaces go.
    keepalived: Vec<Keepalived>,
    dir: PathBuf,
    pub net: MultiIngress,
}

/// keepalived's binary: Debian puts it in /usr/sbin, which a non-login
/// shell's PATH may leave out.
pub fn keepalived_bin() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("keepalived"))
        .find(|p| p.is_file())
        .context("`keepalived` not found: install Debian's keepalived (bash scripts/setup.sh)")
}

fn config(i: usize) -> String {
    let (me, peer) = (ingress_ip(i), ingress_ip(1 - i));
    let state = if i == 0 { "MASTER" } else { "BACKUP" };
    let advert = f64::from(ADVERT_CS) / 100.0;
    format!(
        "global_defs {{\n  router_id ingress{n}\n  vrrp_version 3\n  script_user root\n  enable_script_security\n}}\n\
         vrrp_instance vip {{\n  state {state}\n  interface eth0\n  virtual_router_id 77\n  priority {prio}\n  \
         advert_int {advert}\n  unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n  \
         virtual_ipaddress {{\n    {VIP}/32 dev eth0\n  }}\n}}\n",
        n = i + 1,
        prio = PRIORITY[i],
    )
}

impl Vrrp {
    /// Two ingress nodes with keepalived; waits until exactly one holds the
    /// VIP (node 0, the higher priority).
    pub fn build(pod_game: &[usize], clients: usize) -> Result<Self> {
        let net = MultiIngress::build(2, pod_game, clients)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{}-{}-{n}-keepalived", crate::netns::PREFIX, std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The router reaches the VIP on the segment: it asks by ARP who holds
        // it, and a new master's gratuitous ARP tells it.
        net.router.ip(&["route", "add", &format!("{VIP}/32"), "dev", "br-edge"])?;
        let mut vrrp = Vrrp { keepalived: Vec::new(), dir, net };
        for (i, node) in vrrp.net.ingress.iter().enumerate() {
            // A backup's stand-in must be able to bind the VIP it does not
            // hold yet (an agent never binds it: XDP needs no socket).
            node.sysctl("net.ipv4.ip_nonlocal_bind", "1")?;
            vrrp.keepalived.push(vrrp.spawn(i)?);
        }
        vrrp.wait_master(ELECTION_DEADLINE)?;
        // Both VRRP children have written their pid files by now.
        vrrp.keepalived.iter_mut().for_each(Keepalived::learn_vrrp);
        Ok(vrrp)
    }

    fn spawn(&self, i: usize) -> Result<Keepalived> {
        let file = |ext: &str| self.dir.join(format!("ingress{}.{ext}", i + 1));
        std::fs::write(file("conf"), config(i))?;
        let log = std::fs::File::create(file("log"))?;
        let child = self.net.ingress[i]
            .command(&keepalived_bin()?.to_string_lossy())
            .args(["--dont-fork", "--vrrp", "--log-console", "--log-detail", "--no-syslog", "--use-file"])
            .arg(file("conf"))
            .arg("--pid")
            .arg(file("pid"))
            .arg("--vrrp_pid")
            .arg(file("vrrp.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keepalived")?;
        Ok(Keepalived { child, vrrp: None, vrrp_pid_file: file("vrrp.pid"), running: true })
    }

    /// The running nodes that hold the VIP on eth0. (A crashed master still
    /// holds it on its dead NIC; it is not counted.)
    pub fn holders(&self) -> Result<Vec<usize>> {
        let mut held = Vec::new();
        for (i, node) in self.net.ingress.iter().enumerate() {
            if self.keepalived[i].running
                && node.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?.contains(&format!(" {VIP}/32 "))
            {
                held.push(i);
            }
        }
        Ok(held)
    }

    /// The node holding the VIP, if exactly one does.
    pub fn master(&self) -> Result<Option<usize>> {
        let held = self.holders()?;
        Ok((held.len() == 1).then(|| held[0]))
    }

    /// Waits until exactly one running node holds the VIP.
    pub fn wait_master(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.master()? {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!("no single VRRP master after {timeout:?} (holders {:?}):\n{}", self.holders()?, self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the master as `how` says and returns which node it was, at
    /// once: the processes are reaped later (`restart`, or drop), so a
    /// caller's clock measures the failover, not keepalived's exit.
    pub fn stop_master(&mut self, how: Stop) -> Result<usize> {
        let m = self.master()?.context("no single master to stop")?;
        match how {
            Stop::Term => self.keepalived[m].signal(libc::SIGTERM),
            Stop::Crash => {
                // The NIC first: a dead node answers nothing, not even from
                // a socket that outlives keepalived by a few microseconds.
                self.net.kill_node(m)?;
                self.keepalived[m].signal(libc::SIGKILL);
            }
        }
        Ok(m)
    }

    /// Starts node `i`'s keepalived again (after `stop_master`), its NIC up.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.keepalived[i].running {
            bail!("keepalived on ingress node {} is still running", i + 1);
        }
        self.keepalived[i].reap()?;
        self.net.revive_node(i)?;
        self.keepalived[i] = self.spawn(i)?;
        Ok(())
    }

    /// Both keepalived logs, for a failure message.
    pub fn logs(&self) -> String {
        (0..2)
            .map(|i| {
                let path = self.dir.join(format!("ingress{}.log", i + 1));
                format!("--- ingress{} keepalived:\n{}", i + 1, std::fs::read_to_string(path).unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Vrrp {
    fn drop(&mut self) {
        // Each Keepalived kills and reaps itself; then the folder goes.
        self.keepalived.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
