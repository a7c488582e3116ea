//! SA:MP simulators that speak the real wire format (`shared/SAMP.md`):
//! players scramble their datagrams and run the 24 -> 26 -> 24 -> 25 cookie
//! handshake; shards un-scramble, check the checksum and drop what fails, as
//! open.mp does, answer the query protocol, and echo game packets tagged with
//! their name and the client address they saw.

pub mod player;
pub mod shard;
pub mod wire;
