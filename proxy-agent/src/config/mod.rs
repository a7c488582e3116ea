//! The YAML config: parsing, defaults and validation.
//!
//! Every error names the field (as a path like `shards[2].capacity`), the line
//! in the file, and the fix. Validation is complete before anything is
//! attached, so a bad file changes nothing.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod check;
mod error;
mod lines;
mod sites;

use error::syntax_error;
pub use error::ConfigError;
pub use lines::PathPart;
pub use sites::{source_towards, Encapsulation, SiteConfig, SITE_LABEL};

/// Most players a SA:MP / open.mp server can hold.
pub const MAX_SHARD_CAPACITY: u32 = 1000;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What this node does: `both` (players in and shard replies out, on
    /// one node: the default), `ingress` (players in; the shards' nodes
    /// send the replies) or `return` (a game node: its shards' replies are
    /// rewritten where they enter the node and sent straight to players).
    #[serde(default)]
    pub role: NodeRole,
    /// Interfaces the XDP program attaches to: the player-facing NIC and the
    /// shard-facing one(s); one NIC may be both. On a `return` node the
    /// local shards' interfaces are found from the routes and may be left out.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// `remote` nodes: the site (in `sites`) whose shards sit beside this
    /// node; it takes their players' packets out of the tunnel and puts
    /// their replies in.
    #[serde(default)]
    pub site: Option<String>,
    /// Other data centres, whose shards are reached through a tunnel.
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    /// `return` nodes: the ingress agents (their `metrics_listen`), told of
    /// every player a local shard accepted; their addresses also mark the
    /// shards' answers to health probes, which keep the shard's address.
    #[serde(default)]
    pub ingress_agents: Vec<SocketAddrV4>,
    /// The secret between proxy nodes (`/node/answered`); the environment
    /// variable `SAMP_PROXY_NODE_SECRET` wins over the file.
    #[serde(default)]
    pub node_secret: Option<String>,
    /// `driver` (native XDP) or `skb` (generic XDP); unset, see
    /// [`Config::xdp_mode`].
    #[serde(default, rename = "xdp_mode")]
    pub xdp_mode_set: Option<XdpModeName>,
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
    /// The secret shards send with area-transfer requests (`POST
    /// /shard/transfer` on `metrics_listen`); transfers are off without it.
    /// The environment variable `SAMP_PROXY_SHARD_SECRET` wins over the file.
    #[serde(default)]
    pub shard_secret: Option<String>,
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
    /// Established sessions the data plane holds (SESSIONS' size). Fixed when
    /// the maps are first pinned; changing it means new pins.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// Admitted handshakes awaiting their shard's answer (PENDING, an LRU).
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
    /// Queries one source address may send per second (0 = unlimited);
    /// past it they are dropped in the kernel, so the proxy is no reflector.
    #[serde(default = "default_query_budget")]
    pub query_budget_per_second: u32,
    /// Account leases in MariaDB (`proxy-agent db migrate`); off when absent.
    #[serde(default)]
    pub leases: Option<crate::leases::LeaseConfig>,
    /// The one decider of listed shards' failovers, moves and drains among
    /// several ingress agents: a row in the cluster's MariaDB. Off when absent.
    #[serde(default)]
    pub coordinator: Option<crate::decide::CoordinatorConfig>,
    /// The other ingress agents this one shares its sessions with; off when
    /// absent (one ingress node, or nodes that share nothing).
    #[serde(default)]
    pub peers: Option<crate::peers::PeersConfig>,
    /// The Kubernetes API, for frontends whose shards are Agones
    /// GameServers (`frontends[].agones`); defaults when left out.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    pub frontends: Vec<FrontendConfig>,
    /// Shards listed by hand; may be empty when every frontend discovers
    /// its shards from Agones.
    #[serde(default)]
    pub shards: Vec<ShardConfig>,
}

/// How the agent reaches the Kubernetes API and shares decisions with the
/// other replicas.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// The API server; absent = in the cluster (the pod's service account),
    /// else the kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    pub api_url: Option<String>,
    /// The coordination.k8s.io Lease whose holder decides failovers and growth.
    pub lease_name: String,
    /// Its namespace; absent = `POD_NAMESPACE`, else `default`.
    pub lease_namespace: Option<String>,
    /// How long a decider's lease lasts without renewal (renewed every third).
    pub lease_duration_ms: u64,
    /// This replica's name in the Lease; absent = `POD_NAME`, else the host name.
    pub identity: Option<String>,
    /// How long a GameServerAllocation may take before the fallback applies.
    pub allocation_timeout_ms: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api_url: None,
            lease_name: "samp-proxy-leader".into(),
            lease_namespace: None,
            lease_duration_ms: 5000,
            identity: None,
            allocation_timeout_ms: 300,
        }
    }
}

/// A frontend whose shards are Agones GameServers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgonesFrontend {
    /// Where the GameServers live.
    pub namespace: String,
    /// Labels of this frontend's shards: an `Allocated` GameServer carrying
    /// them is an active shard; every allocation puts them on its GameServer.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Labels of the standby pool: a `Ready` GameServer carrying them can be
    /// allocated (usually `agones.dev/fleet: NAME`).
    pub pool_labels: std::collections::BTreeMap<String, String>,
    /// Allocate one more shard when the active shards' free slots fall under
    /// this (0 = never grow).
    #[serde(default)]
    pub headroom: u32,
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

fn default_max_sessions() -> u32 {
    proxy_common::MAX_SESSIONS
}

fn default_max_pending() -> u32 {
    proxy_common::MAX_PENDING
}

fn default_query_budget() -> u32 {
    20
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    #[default]
    Both,
    Ingress,
    Return,
    /// Beside the shards of another site (`site`): decapsulates their
    /// players' packets and encapsulates their replies.
    Remote,
}

impl NodeRole {
    /// True for the nodes that take players in, probe the shards and
    /// decide: not a game node (`return`) nor a remote node.
    pub fn decides(self) -> bool {
        matches!(self, NodeRole::Both | NodeRole::Ingress)
    }
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
    /// What the server browser is told about this frontend.
    #[serde(default)]
    pub query: QueryConfig,
    /// Shards discovered from Agones GameServers (besides any listed).
    #[serde(default)]
    pub agones: Option<AgonesFrontend>,
    /// New players go to shards of this site (a `sites` name, or `local`
    /// for shards without a site) while any of them has room; to the
    /// others only when none has. Absent: every site alike.
    #[serde(default)]
    pub prefer_site: Option<String>,
}

/// A frontend's face in the server browser (answers to `i` and `r`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub hostname: String,
    pub gamemode: String,
    pub language: String,
    /// Shown as "locked" in the browser.
    pub password: bool,
    /// Extra rules (`r`), e.g. `weburl: example.net`.
    pub rules: std::collections::BTreeMap<String, String>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            hostname: "SA:MP cluster".into(),
            gamemode: String::new(),
            language: String::new(),
            password: false,
            rules: Default::default(),
        }
    }
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
    /// The site (in `sites`) the shard sits in; absent, it is reached by
    /// plain routing.
    #[serde(default)]
    pub site: Option<String>,
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

/// Where the shard secret comes from when the environment has it.
pub const SHARD_SECRET_ENV: &str = "SAMP_PROXY_SHARD_SECRET";

/// Where the node secret comes from when the environment has it.
pub const NODE_SECRET_ENV: &str = "SAMP_PROXY_NODE_SECRET";

impl Config {
    /// How XDP attaches: as set, else generic (`skb`) on a `return` node and
    /// native (`driver`) elsewhere. A return node's program runs on its pods'
    /// veths and redirects the replies to the node's uplink, which runs no
    /// XDP program: natively, that needs the uplink's driver to take
    /// redirected frames without a program of its own (Intel's 10G and 40G
    /// drivers do not, and every reply would be lost), and veth copies every
    /// frame for a native program. Generic XDP hands the uplink an skb, as
    /// routing does, and costs less than routing on veth (`bench e2e`).
    pub fn xdp_mode(&self) -> XdpModeName {
        self.xdp_mode_set.unwrap_or(match self.role {
            NodeRole::Return => XdpModeName::Skb,
            NodeRole::Both | NodeRole::Ingress | NodeRole::Remote => XdpModeName::Driver,
        })
    }

    /// The shard secret in force: the environment's, else the file's.
    pub fn shard_secret(&self) -> Option<String> {
        env_or(SHARD_SECRET_ENV, &self.shard_secret)
    }

    /// The node secret in force: the environment's, else the file's.
    pub fn node_secret(&self) -> Option<String> {
        env_or(NODE_SECRET_ENV, &self.node_secret)
    }
}

/// A secret from the environment variable `name` when set and not empty,
/// else the config file's.
fn env_or(name: &str, file: &Option<String>) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty()).or_else(|| file.clone())
}

/// A config that passed validation, with addresses parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub raw: Config,
    pub frontends: Vec<Frontend>,
    pub shards: Vec<Shard>,
    /// `raw.sites`, with each `source` filled in by [`load`] (the kernel's
    /// choice where the file leaves it out).
    pub sites: Vec<SiteConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frontend {
    pub name: String,
    pub address: SocketAddrV4,
    pub query: QueryConfig,
    pub agones: Option<AgonesFrontend>,
    /// `Some(None)`: prefer shards without a site (`local`); `Some(Some(i))`:
    /// prefer site `i`; `None`: no preference.
    pub prefer_site: Option<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub name: String,
    pub address: Ipv4Addr,
    /// Index into `Validated::frontends`.
    pub frontend: usize,
    pub capacity: u32,
    pub role: Role,
    pub source: ShardSource,
    /// Index into `Validated::sites`; `None` = reached by plain routing.
    pub site: Option<usize>,
}

/// Where a shard comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// Listed in the YAML file.
    File,
    /// An Agones GameServer. Without a cap (`capped`), its capacity is the
    /// `max_players` its query probe reports (no players until known).
    GameServer { namespace: String, capped: bool },
}

impl Shard {
    /// True when only the probe's `max_players` says how many it holds.
    pub fn capacity_from_probe(&self) -> bool {
        matches!(self.source, ShardSource::GameServer { capped: false, .. })
    }
}

impl Validated {
    /// True when some frontend discovers shards from Agones.
    pub fn uses_agones(&self) -> bool {
        self.frontends.iter().any(|f| f.agones.is_some())
    }

    /// The site id of shard `i` in the data plane (`SITES`): its index + 1,
    /// 0 for plain routing.
    pub fn site_id(&self, site: Option<usize>) -> u32 {
        site.map_or(0, |i| i as u32 + 1)
    }

    /// The site this remote node serves (its index in `sites`).
    pub fn own_site(&self) -> Option<usize> {
        let name = self.raw.site.as_ref()?;
        self.sites.iter().position(|s| &s.name == name)
    }

    /// The Kubernetes settings in force (defaults when the block is absent).
    pub fn kubernetes(&self) -> KubernetesConfig {
        self.raw.kubernetes.clone().unwrap_or_default()
    }
}

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
    let mut cfg = parse(&file, &text)?;
    sites::resolve_sources(&file, &mut cfg)?;
    Ok(cfg)
}

/// Parses and validates config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Validated, ConfigError> {
    let raw: Config = serde_yaml::from_str(text).map_err(|e| syntax_error(file, &e))?;
    check::Checker { file, text }.check(raw)
}
