//! SA:MP simulators that speak the real wire format (`shared/SAMP.md`):
//! players scramble their datagrams and run the 24 -> 26 -> 24 -> 25 cookie
//! handshake; shards un-scramble, check the checksum and drop what fails, as
//! open.mp does, answer the query protocol, and echo game packets tagged with
//! their name and the client address they saw.

pub mod player;
pub mod shard;
pub mod wire;

/// Milliseconds since the first call in this process: one clock for players
/// and shards, so a handshake's send and arrival can be compared.
pub fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}
