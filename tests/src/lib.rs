//! Test harness for the SA:MP cluster proxy: network namespaces, packet
//! builders, SA:MP simulators (players and shards), the agent as a process,
//! a private MariaDB for the lease tests.
//! Used by the integration tests in `tests/`, the demo and the benchmarks.

pub mod agent;
pub mod agones;
pub mod bed;
pub mod dsr;
pub mod ha;
pub mod http;
pub mod icmp_capture;
pub mod kube_api;
pub mod mariadb;
pub mod netns;
pub mod one_arm;
pub mod packet;
pub mod pins;
pub mod raw;
pub mod scenario;
pub mod sim;
pub mod sites;
pub mod soak;
pub mod stack_budget;
pub mod tables;
pub mod topology;
