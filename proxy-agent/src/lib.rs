//! The SA:MP cluster proxy agent: loads the XDP data plane, keeps its maps in
//! line with the config, and is the operator's CLI.
//!
//! Rooms (arrows point down the list, never up): `events` (every event
//! kind), `config` (YAML, validation, lines), `control` (the socket's wire
//! types and the socket), `dataplane` (load, attach, the maps behind
//! `MapWriter`, batch I/O, events, scans, upkeep), `health` (SA:MP probes),
//! `query` (the long-answer responder), `agones` (Kubernetes), `leases`
//! (account leases in MariaDB), `decide` (the one decider without
//! Kubernetes: a row and a log in MariaDB), `cluster` (THE model and the failover
//! policy: plain data over a `MapWriter`), `http` (metrics and the nodes'
//! API), `owner` (the thread that owns the model and implements each
//! client's port), `run` (the composition root), `cli`. See
//! docs/development/architecture.md.

pub mod agones;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod decide;
pub mod events;
pub mod health;
pub mod http;
pub mod leases;
pub mod owner;
pub mod peers;
pub mod query;
pub mod run;
pub mod sites;

pub use control::protocol;
pub use dataplane::{batch, tables};
