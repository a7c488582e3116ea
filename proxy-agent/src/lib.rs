//! The SA:MP cluster proxy agent: loads the XDP data plane, keeps its maps in
//! line with the config, and is the operator's CLI.
//!
//! Rooms: `cli` (the operator's side), `config` (YAML, validation, lines),
//! `cluster` (THE model and the owner thread: the only writer of the maps),
//! `dataplane` (load, attach, typed maps, batch I/O, events, scans),
//! `health` (SA:MP probes), `http` (metrics), `control` (the socket, its
//! protocol, typed views and errors), `leases` (account leases in MariaDB),
//! `run` (wiring).

pub mod agones;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod events;
pub mod health;
pub mod http;
pub mod leases;
pub mod owner;
pub mod query;
pub mod run;

pub use control::protocol;
pub use dataplane::{batch, tables};
