//! A private MariaDB server for one test: its own data folder (made by
//! `mariadb-install-db`), its own socket and loopback port, a database and a
//! user with a password. Stopped, and its folder removed, when dropped, also
//! when the test fails. Needs Debian's `mariadb-server` (scripts/setup.sh).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long a fresh server may take to answer; it usually takes under 2 s.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a server may take to shut down on SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

pub struct MariaDb {
    child: Option<Child>,
    /// The server's folder: `data/`, the socket, the error log.
    pub dir: PathBuf,
    pub port: u16,
    pub socket: PathBuf,
    /// The test's database and its owner.
    pub database: String,
    pub user: String,
    password: String,
}

/// A binary from the PATH, or from the sbin folders a non-login root shell
/// may leave out.
fn find_bin(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` not found: install Debian's mariadb-server (bash scripts/setup.sh)"))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits for `child` with a deadline; kills it past the deadline.
fn wait_deadline(child: &mut Child, deadline: Duration) -> Result<std::process::ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {} s; killed", deadline.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A loopback port free right now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True once a server on `port` sends its handshake (protocol version 10).
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && head[4] == 10
}

impl MariaDb {
    /// Installs a data folder, starts the server on a free loopback port and
    /// waits (with a deadline) until it answers; then creates the database
    /// `samp` and the user `samp` with a random password.
    pub fn start() -> Result<MariaDb> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("samp-mariadb-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut db = MariaDb {
            child: None,
            socket: dir.join("mysqld.sock"),
            dir,
            port: 0,
            database: "samp".into(),
            user: "samp".into(),
            password: random_hex(12),
        };
        db.install()?;
        // The free port may be taken between our look and the server's bind:
        // then the server exits saying so, and we take another.
        let mut last = None;
        for _ in 0..5 {
            match db.spawn(free_port()?) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        let (user, password, database) = (db.user.clone(), db.password.clone(), db.database.clone());
        db.root_sql(&format!(
            "CREATE DATABASE `{database}` CHARACTER SET utf8mb4;\n\
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';\n\
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}';\n\
             GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1', '{user}'@'localhost';\n"
        ))?;
        Ok(db)
    }

    fn install(&self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("install.log"))?;
        std::fs::create_dir_all(self.tmpdir())?;
        let mut cmd = Command::new(find_bin("mariadb-install-db")?);
        cmd.arg("--no-defaults")
            .arg("--auth-root-authentication-method=normal")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--tmpdir={}", self.tmpdir().display()))
            .args(["--skip-test-db", "--skip-name-resolve", "--innodb-log-file-size=8M"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if is_root() {
            cmd.arg("--user=root");
        }
        let mut child = cmd.spawn().context("starting mariadb-install-db")?;
        let status = wait_deadline(&mut child, START_DEADLINE).context("mariadb-install-db")?;
        if !status.success() {
            let log = std::fs::read_to_string(self.dir.join("install.log")).unwrap_or_default();
            let head: Vec<&str> = log.lines().take(8).collect();
            bail!("mariadb-install-db failed ({status}):\n{}", head.join("\n"));
        }
        Ok(())
    }

    fn spawn(&mut self, port: u16) -> Result<()> {
        let log = self.error_log();
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(find_bin("mariadbd")?);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--tmpdir={}", self.tmpdir().display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", self.dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=8M",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches only the child.
            // If the test process dies without dropping us (SIGKILL), the
            // server dies too instead of running on.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().context("starting mariadbd")?;
        self.child = Some(child);
        self.port = port;
        let until = Instant::now() + START_DEADLINE;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!("mariadbd exited ({status}) before answering:\n{}", tail(&log));
            }
            if answers(port) {
                return Ok(());
            }
            if Instant::now() >= until {
                self.stop();
                bail!(
                    "mariadbd did not answer on 127.0.0.1:{port} within {} s:\n{}",
                    START_DEADLINE.as_secs(),
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's own temporary folder: a starting server removes every
    /// `#sql*` file in its tmpdir, so servers must not share one.
    fn tmpdir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The server's error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// `mysql://samp:PASSWORD@127.0.0.1:PORT/samp`, over TCP.
    pub fn url(&self) -> String {
        self.url_for(&self.user, &self.password)
    }

    /// The URL of another user of the test's database, over TCP.
    pub fn url_for(&self, user: &str, password: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}/{}?prefer_socket=false", self.port, self.database)
    }

    /// The test user's URL over the server's Unix socket: reachable from
    /// every network namespace (the agent runs in the proxy's), since the
    /// socket is a file.
    pub fn socket_url(&self) -> String {
        format!("mysql://{}:{}@localhost/{}?socket={}", self.user, self.password, self.database, self.socket.display())
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Runs SQL as root through the `mariadb` client on the socket (the SQL
    /// on stdin, so no password shows in a process list); returns its
    /// output (tab-separated, no column names).
    pub fn root_sql(&self, sql: &str) -> Result<String> {
        self.client_sql(&[], sql)
    }

    /// Runs SQL as root in the test's database.
    pub fn root_sql_db(&self, sql: &str) -> Result<String> {
        self.client_sql(&[self.database.as_str()], sql)
    }

    fn client_sql(&self, extra: &[&str], sql: &str) -> Result<String> {
        let mut child = Command::new(find_bin("mariadb")?)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--protocol=socket", "-uroot", "--batch", "--skip-column-names", "--connect-timeout=10"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the mariadb client")?;
        // Closing stdin ends the client's input; it then prints and exits
        // (the server answers or the client's own connect timeout fires).
        child.stdin.take().expect("piped").write_all(sql.as_bytes())?;
        let out = child.wait_with_output().context("the mariadb client")?;
        if !out.status.success() {
            bail!("mariadb client failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Freezes the server (SIGSTOP): connections hang as with a database
    /// host that stopped answering. `resume` thaws it. Stopping a frozen
    /// server thaws it first.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on our own child's pid, which we have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Stops the server and starts it again on the same data, port and
    /// socket: a database restart (clients see their connections drop).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let port = self.port;
        self.spawn(port)
    }

    /// Stops the server: SIGTERM, then SIGKILL past the deadline.
    pub fn stop(&mut self) {
        self.freeze(false);
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        if wait_deadline(&mut child, STOP_DEADLINE).is_err() {
            eprintln!("mariadbd in {} did not stop within {} s; killed", self.dir.display(), STOP_DEADLINE.as_secs());
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("mariadb error log ({}):\n{}", self.error_log().display(), tail(&self.error_log()));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
