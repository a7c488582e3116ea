//! The SA:MP cluster proxy agent: loads the XDP data plane, keeps its maps in
//! line with the config, and is the operator's CLI.

pub mod config;
pub mod dataplane;
pub mod ebpf_object;
pub mod placement;
pub mod plan;
pub mod run;
pub mod tables;
mod yaml_lines;
