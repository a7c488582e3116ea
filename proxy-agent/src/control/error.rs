//! Why the agent refused a control request. Each variant's message is what
//! the operator reads (and what scripts have matched since version 1);
//! every refusal has changed nothing.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The request line itself is wrong (JSON, version, command, fields).
    BadRequest(String),
    UnknownShard {
        name: String,
        known: Vec<String>,
    },
    /// A `--client` that is neither IPv4 nor IPv4:port.
    BadClient(String),
    NoClientGiven,
    ClientsAndFrom,
    NoPlayersNamed,
    /// No session matches this client (shown as given).
    NoSession(String),
    SameShard(String),
    FailoverToItself(String),
    Drained(String),
    NoRoomForClients {
        target: String,
        free: usize,
        asked: usize,
    },
    NoRoomForGroup {
        target: String,
        free: usize,
        from: String,
        players: usize,
    },
    NoRoomForFailover {
        target: String,
        free: usize,
        from: String,
        players: usize,
    },
    NoFailoverTarget {
        from: String,
        players: usize,
        roomiest: usize,
    },
    /// The new config file is invalid; the running one stays.
    ConfigRefused(String),
    ShardHasPlayers {
        name: String,
        address: String,
        players: usize,
    },
    /// A map read or write failed (with its context); the request was rolled
    /// back or had not written anything yet.
    Dataplane(String),
    /// Writing a new config failed part way and the old one was put back.
    ReloadRolledBack(String),
    /// The agent is stopping.
    Unavailable,
    /// An area transfer asked from an address that is no shard's.
    NotAShard(String),
    /// An area transfer of a client the asking shard does not hold.
    NotYourPlayer {
        client: String,
        shard: String,
    },
    /// Several ingress nodes with a coordinator: this agent does not decide
    /// (the holder named decides; ask its agent).
    NotDecider(String),
    /// The coordinator's database refused or did not answer a decision.
    Coordinator(String),
    /// The decider's own error for a forwarded request.
    Forwarded(String),
}

impl ControlError {
    /// A failed map operation, with the chain of contexts.
    pub fn dataplane(e: anyhow::Error) -> Self {
        Self::Dataplane(format!("{e:#}"))
    }
}

impl From<anyhow::Error> for ControlError {
    fn from(e: anyhow::Error) -> Self {
        Self::dataplane(e)
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ControlError::*;
        match self {
            BadRequest(why) => f.write_str(why),
            UnknownShard { name, known } => write!(f, "no shard named `{name}`; shards: {}", known.join(", ")),
            BadClient(s) => write!(f, "`{s}` is not a client IPv4 or IPv4:port"),
            NoClientGiven => f.write_str("no client given; name players as IP or IP:PORT"),
            ClientsAndFrom => f.write_str("give either clients or `from`, not both"),
            NoPlayersNamed => f.write_str("say which players move: clients (IP or IP:PORT) or `from` (a shard)"),
            NoSession(c) => write!(f, "no session for client {c}; `sessions` lists the players"),
            SameShard(s) => write!(f, "`{s}` is both source and target"),
            FailoverToItself(s) => write!(f, "`{s}` cannot fail over to itself"),
            Drained(s) => write!(f, "shard `{s}` is drained; `undrain {s}` first or pick another target"),
            NoRoomForClients { target, free, asked } => {
                write!(f, "shard `{target}` has {free} free slots, {asked} players asked to move: nothing was moved")
            }
            NoRoomForGroup { target, free, from, players } => write!(
                f,
                "shard `{target}` has {free} free slots and `{from}`'s {players} players move together: nothing was moved"
            ),
            NoRoomForFailover { target, free, from, players } => {
                write!(f, "shard `{target}` has {free} free slots for `{from}`'s {players} players")
            }
            NoFailoverTarget { from, players, roomiest } => write!(
                f,
                "no healthy shard can take `{from}`'s {players} players together (no empty standby; the roomiest active shard has {roomiest} free slots)"
            ),
            ConfigRefused(why) => write!(f, "reload refused, the running config stays: {why}"),
            ShardHasPlayers { name, address, players } => write!(
                f,
                "reload refused: shard `{name}` ({address}) still has {players} players; drain it and move them first (`proxy-agent migrate --from {name} --to SHARD`); the running config stays"
            ),
            Dataplane(why) => write!(f, "the data plane refused a map operation, nothing was changed: {why}"),
            ReloadRolledBack(why) => {
                write!(f, "reload failed while writing maps, the old config was restored: {why}")
            }
            Unavailable => f.write_str("the agent is shutting down; try again when it is back"),
            NotAShard(addr) => write!(f, "{addr} is not the address of any shard"),
            NotYourPlayer { client, shard } => {
                write!(f, "client {client} is not playing on shard `{shard}`: a shard may transfer only its own players")
            }
            NotDecider(holder) => write!(
                f,
                "this agent does not decide shard-level moves and drains; the decider is {holder}: run the command on its agent (nothing was changed)"
            ),
            Forwarded(why) => write!(f, "the decider says: {why}"),
            Coordinator(why) => write!(f, "the coordinator did not take the decision, nothing was changed: {why}"),
        }
    }
}

impl std::error::Error for ControlError {}
