//! The YAML config: parsing, defaults and validation.
//!
//! Every error names the field (as a path like `shards[2].capacity`), the line
//! in the file, and the fix. Validation is complete before anything is
//! attached, so a bad file changes nothing.

use std::{
    collections::HashSet,
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::yaml_lines::locate;

/// Most players a SA:MP / open.mp server can hold.
pub const MAX_SHARD_CAPACITY: u32 = 1000;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interfaces the XDP program attaches to: the player-facing NIC and the
    /// shard-facing one(s); one NIC may be both.
    pub interfaces: Vec<String>,
    /// `driver` (native XDP, the default) or `skb` (generic, any NIC, slower).
    #[serde(default)]
    pub xdp_mode: XdpModeName,
    /// bpffs folder where maps are pinned; reused on restart.
    #[serde(default = "default_bpffs")]
    pub bpffs: PathBuf,
    /// Log level of the agent and of the kernel-side log: error|warn|info|debug|trace.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The control socket the CLI talks to (mode 0600, owner only).
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// A session with no client packet for this long is removed.
    #[serde(default = "default_idle_timeout")]
    pub session_idle_timeout_ms: u64,
    /// A moved session whose client has not handshaken again within this
    /// time is removed (the player went away instead of reconnecting).
    #[serde(default = "default_move_timeout")]
    pub move_timeout_ms: u64,
    /// Where to serve Prometheus metrics (`/metrics`, `/live`, `/ready`);
    /// off when absent.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// SA:MP query probes of every shard.
    #[serde(default)]
    pub health: HealthConfig,
    /// What a shard that comes back after a failure becomes. It never takes
    /// its old players back (they moved); `standby` keeps it empty for the
    /// next failover.
    #[serde(default = "default_recovered_role")]
    pub recovered_role: Role,
    /// Handshakes per second each shard receives at most (0 = unlimited), so a
    /// mass reconnect neither trips per-IP flood limits nor melts login code.
    #[serde(default = "default_handshake_rate")]
    pub handshake_rate: u32,
    /// Handshakes a shard may receive at once above that rate.
    #[serde(default = "default_handshake_burst")]
    pub handshake_burst: u32,
    pub frontends: Vec<FrontendConfig>,
    pub shards: Vec<ShardConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between probes of a shard.
    pub interval_ms: u64,
    /// How long a probe waits for the answer.
    pub timeout_ms: u64,
    /// Consecutive missed probes that mark a shard down.
    pub down_after: u32,
    /// Consecutive answered probes that mark a down shard up again.
    pub up_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { interval_ms: 200, timeout_ms: 150, down_after: 3, up_after: 3 }
    }
}

fn default_recovered_role() -> Role {
    Role::Standby
}

fn default_handshake_rate() -> u32 {
    250
}

fn default_handshake_burst() -> u32 {
    50
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeName {
    #[default]
    Driver,
    Skb,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    pub name: String,
    /// The public `IP:port` players connect to.
    pub address: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives new players.
    #[default]
    Active,
    /// Kept empty for failover; no placement until it receives a group.
    Standby,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    pub name: String,
    /// The shard's IPv4, optionally with `:port`, which must equal the frontend's port.
    pub address: String,
    /// The frontend it serves; may be left out when there is only one.
    #[serde(default)]
    pub frontend: Option<String>,
    /// Player slots (the server's `max_players`), 1..=1000.
    pub capacity: u32,
    #[serde(default)]
    pub role: Role,
}

fn default_bpffs() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/samp-proxy")
}

pub fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/samp-proxy/control.sock")
}

fn default_idle_timeout() -> u64 {
    60_000
}

fn default_move_timeout() -> u64 {
    30_000
}

fn default_log_level() -> String {
    "info".into()
}

/// A config that passed validation, with addresses parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub raw: Config,
    pub frontends: Vec<Frontend>,
    pub shards: Vec<Shard>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frontend {
    pub name: String,
    pub address: SocketAddrV4,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub name: String,
    pub address: Ipv4Addr,
    /// Index into `Validated::frontends`.
    pub frontend: usize,
    pub capacity: u32,
    pub role: Role,
}

/// A config mistake: where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": `{}`", self.field)?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Validated, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        field: String::new(),
        problem: format!("cannot read the file: {e}"),
        fix: "pass an existing, readable YAML file with --config".into(),
    })?;
    parse(&file, &text)
}

/// Parses and validates config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Validated, ConfigError> {
    let raw: Config = serde_yaml::from_str(text).map_err(|e| syntax_error(file, &e))?;
    Checker { file, text, errors: Vec::new() }.check(raw)
}

fn syntax_error(file: &str, e: &serde_yaml::Error) -> ConfigError {
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; we print the line ourselves.
    let problem = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.clone(),
    };
    let field = problem
        .split_once(": ")
        .filter(|(path, _)| !path.contains(' '))
        .map(|(path, _)| path.to_string())
        .unwrap_or_default();
    let problem = if field.is_empty() { problem } else { problem[field.len() + 2..].to_string() };
    let fix = if problem.contains("unknown field") {
        "remove or correct the field; the README's config reference lists every field".into()
    } else if problem.contains("missing field") {
        "add the field; the README's config reference shows an example".into()
    } else if problem.contains("unknown variant") {
        "use one of the values the message lists".into()
    } else {
        "check the YAML syntax and types at that line".into()
    };
    ConfigError { file: file.into(), line: e.location().map(|l| l.line()), field, problem, fix }
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&self, path: &[PathPart<'_>], problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            line: locate(self.text, path),
            field: render_path(path),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn check(self, raw: Config) -> Result<Validated, ConfigError> {
        use PathPart::{Index as I, Key as K};
        if raw.interfaces.is_empty() {
            return Err(self.error(
                &[K("interfaces")],
                "no interface to attach to",
                "list the player-facing NIC (and the shard-facing one, if different), e.g. `interfaces: [eth0]`",
            ));
        }
        let mut seen = HashSet::new();
        for (i, name) in raw.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(self.error(
                    &[K("interfaces"), I(i)],
                    format!("`{name}` is not an interface name"),
                    "use the name `ip link` shows, at most 15 characters",
                ));
            }
            if !seen.insert(name) {
                return Err(self.error(
                    &[K("interfaces"), I(i)],
                    format!("interface `{name}` is listed twice"),
                    "list each interface once",
                ));
            }
        }
        if !raw.bpffs.is_absolute() {
            return Err(self.error(
                &[K("bpffs")],
                format!("`{}` is not an absolute path", raw.bpffs.display()),
                "use a folder on a bpf filesystem, e.g. /sys/fs/bpf/samp-proxy",
            ));
        }
        if !raw.control_socket.is_absolute() {
            return Err(self.error(
                &[K("control_socket")],
                format!("`{}` is not an absolute path", raw.control_socket.display()),
                "use an absolute path, e.g. /run/samp-proxy/control.sock",
            ));
        }
        if raw.session_idle_timeout_ms < 1000 {
            return Err(self.error(
                &[K("session_idle_timeout_ms")],
                format!("{} ms is too short", raw.session_idle_timeout_ms),
                "use at least 1000 ms (players send many packets a second; 60000 is the default)",
            ));
        }
        if raw.move_timeout_ms < 1000 {
            return Err(self.error(&[K("move_timeout_ms")], format!("{} ms is too short", raw.move_timeout_ms), "use at least 1000 ms: a client needs seconds to notice it lost its shard and reconnect (30000 is the default)"));
        }
        let h = &raw.health;
        if !(50..=60_000).contains(&h.interval_ms) {
            return Err(self.error(
                &[K("health"), K("interval_ms")],
                format!("interval {} ms", h.interval_ms),
                "use 50..=60000 ms (200 is the default)",
            ));
        }
        if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
            return Err(self.error(
                &[K("health"), K("timeout_ms")],
                format!("timeout {} ms with an interval of {} ms", h.timeout_ms, h.interval_ms),
                "use a timeout of at least 1 ms and at most the interval",
            ));
        }
        if h.down_after == 0 || h.up_after == 0 || h.down_after > 100 || h.up_after > 100 {
            return Err(self.error(
                &[K("health"), K(if h.down_after == 0 || h.down_after > 100 { "down_after" } else { "up_after" })],
                "a probe count outside 1..=100",
                "count consecutive probes: 3 is the default",
            ));
        }
        if raw.handshake_rate > 100_000 {
            return Err(self.error(
                &[K("handshake_rate")],
                format!("{} handshakes/s", raw.handshake_rate),
                "use 0 (unlimited) or up to 100000 per second",
            ));
        }
        if raw.handshake_rate > 0 && raw.handshake_burst == 0 {
            return Err(self.error(
                &[K("handshake_burst")],
                "a burst of 0 with a rate set",
                "use a burst of at least 1 (50 is the default)",
            ));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&raw.log_level.as_str()) {
            return Err(self.error(
                &[K("log_level")],
                format!("unknown log level `{}`", raw.log_level),
                "use error, warn, info, debug or trace",
            ));
        }
        if raw.frontends.is_empty() {
            return Err(self.error(
                &[K("frontends")],
                "no frontend",
                "add one, e.g. `frontends: [{name: play, address: \"203.0.113.10:7777\"}]`",
            ));
        }
        if raw.frontends.len() > proxy_common::MAX_FRONTENDS as usize {
            return Err(self.error(
                &[K("frontends")],
                format!("{} frontends, at most {} are supported", raw.frontends.len(), proxy_common::MAX_FRONTENDS),
                "run another proxy for the rest",
            ));
        }
        let mut frontends: Vec<Frontend> = Vec::new();
        for (i, fe) in raw.frontends.iter().enumerate() {
            let at = |f| [K("frontends"), I(i), K(f)];
            check_name(self.error(&at("name"), "", ""), &fe.name)?;
            if frontends.iter().any(|f| f.name == fe.name) {
                return Err(self.error(
                    &at("name"),
                    format!("frontend `{}` is defined twice", fe.name),
                    "give each frontend its own name",
                ));
            }
            let address: SocketAddrV4 = fe.address.parse().map_err(|_| {
                self.error(
                    &at("address"),
                    format!("`{}` is not an IPv4 address with a port", fe.address),
                    "write it as IP:PORT, e.g. 203.0.113.10:7777 (SA:MP is IPv4 only)",
                )
            })?;
            if address.port() == 0 {
                return Err(self.error(&at("address"), "port 0", "use the port players connect to, usually 7777"));
            }
            if address.ip().is_unspecified() || address.ip().is_multicast() || address.ip().is_broadcast() {
                return Err(self.error(
                    &at("address"),
                    format!("{} cannot be a public address", address.ip()),
                    "use the unicast IPv4 players connect to",
                ));
            }
            if frontends.iter().any(|f| f.address == address) {
                return Err(self.error(
                    &at("address"),
                    format!("{address} is used by two frontends"),
                    "give each frontend its own address",
                ));
            }
            frontends.push(Frontend { name: fe.name.clone(), address });
        }
        if raw.shards.is_empty() {
            return Err(self.error(
                &[K("shards")],
                "no shard",
                "add at least one shard with name, address and capacity",
            ));
        }
        if raw.shards.len() >= proxy_common::MAX_BACKENDS as usize {
            return Err(self.error(
                &[K("shards")],
                format!("{} shards, at most {} are supported", raw.shards.len(), proxy_common::MAX_BACKENDS - 1),
                "split the cluster over more proxies",
            ));
        }
        let mut shards: Vec<Shard> = Vec::new();
        for (i, sh) in raw.shards.iter().enumerate() {
            let at = |f| [K("shards"), I(i), K(f)];
            check_name(self.error(&at("name"), "", ""), &sh.name)?;
            if shards.iter().any(|s| s.name == sh.name) {
                return Err(self.error(
                    &at("name"),
                    format!("shard `{}` is defined twice", sh.name),
                    "give each shard its own name",
                ));
            }
            let frontend = match &sh.frontend {
                Some(name) => frontends.iter().position(|f| &f.name == name).ok_or_else(|| {
                    let known: Vec<_> = frontends.iter().map(|f| f.name.as_str()).collect();
                    self.error(
                        &at("frontend"),
                        format!("no frontend named `{name}`"),
                        format!("use one of: {}", known.join(", ")),
                    )
                })?,
                None if frontends.len() == 1 => 0,
                None => {
                    return Err(self.error(
                        &at("name"),
                        format!("shard `{}` does not say which frontend it serves", sh.name),
                        "add `frontend: NAME`; with several frontends every shard needs one",
                    ));
                }
            };
            let fe = &frontends[frontend];
            let (ip_text, port) = match sh.address.rsplit_once(':') {
                Some((ip, port)) => (ip, Some(port)),
                None => (sh.address.as_str(), None),
            };
            let address: Ipv4Addr = ip_text.parse().map_err(|_| {
                self.error(
                    &at("address"),
                    format!("`{}` is not an IPv4 address", sh.address),
                    "write the shard's IPv4, e.g. 10.0.0.5 (the port is always the frontend's)",
                )
            })?;
            if let Some(port) = port {
                if port.parse::<u16>().ok() != Some(fe.address.port()) {
                    return Err(self.error(&at("address"), format!("shard port `{port}` differs from frontend `{}` port {}", fe.name, fe.address.port()), format!("run the shard on port {} and drop the port here: SA:MP clients scramble packets with the server port, so the proxy never changes it", fe.address.port())));
                }
            }
            if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
                return Err(self.error(
                    &at("address"),
                    format!("{address} cannot be a shard address"),
                    "use the shard's unicast IPv4",
                ));
            }
            if frontends.iter().any(|f| *f.address.ip() == address) {
                return Err(self.error(
                    &at("address"),
                    format!("{address} is a frontend address"),
                    "a shard needs its own IP, distinct from the public one",
                ));
            }
            if let Some(other) = shards.iter().find(|s| s.address == address) {
                return Err(self.error(
                    &at("address"),
                    format!("{address} is also shard `{}`", other.name),
                    "each shard needs its own IP: replies are mapped back by shard IP",
                ));
            }
            if sh.capacity == 0 || sh.capacity > MAX_SHARD_CAPACITY {
                return Err(self.error(
                    &at("capacity"),
                    format!("shard `{}` has capacity {}", sh.name, sh.capacity),
                    format!("capacity must be 1..={MAX_SHARD_CAPACITY} (the server's max_players)"),
                ));
            }
            shards.push(Shard { name: sh.name.clone(), address, frontend, capacity: sh.capacity, role: sh.role });
        }
        for (i, fe) in frontends.iter().enumerate() {
            if !shards.iter().any(|s| s.frontend == i && s.role == Role::Active) {
                return Err(self.error(
                    &[K("frontends"), I(i), K("name")],
                    format!("frontend `{}` has no active shard", fe.name),
                    "add a shard with `role: active` (the default) for it",
                ));
            }
        }
        debug_assert!(self.errors.is_empty());
        Ok(Validated { raw, frontends, shards })
    }
}

fn check_name(template: ConfigError, name: &str) -> Result<(), ConfigError> {
    let ok =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        return Ok(());
    }
    Err(ConfigError {
        problem: format!("name `{name}` is not allowed"),
        fix: "use 1 to 63 letters, digits, `-` or `_`".into(),
        ..template
    })
}

/// One step of a field path.
#[derive(Debug, Clone, Copy)]
pub enum PathPart<'a> {
    Key(&'a str),
    Index(usize),
}

fn render_path(path: &[PathPart<'_>]) -> String {
    let mut out = String::new();
    for part in path {
        match part {
            PathPart::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathPart::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}
