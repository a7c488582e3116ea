//! The SA:MP cluster proxy agent: loads the XDP data plane, keeps its maps in
//! line with the config, and is the operator's CLI.

pub mod batch;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod ebpf_object;
pub mod health;
pub mod metrics;
pub mod placement;
pub mod plan;
pub mod protocol;
pub mod run;
pub mod state;
pub mod tables;
mod yaml_lines;
