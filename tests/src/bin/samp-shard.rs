//! `samp-shard`: a simulated SA:MP / open.mp shard as a process (see
//! `tests::sim::shard`). Writes its statistics as JSON to `--stats-file`
//! every 250 ms, so a demo or an operator can watch it; exits on SIGTERM.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use tests::sim::shard::{self, ShardConfig};

#[derive(Parser)]
#[command(about = "A simulated SA:MP shard: query protocol, cookie handshake, echo")]
struct Args {
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 7777)]
    port: u16,
    #[arg(long, default_value_t = 1000)]
    max_players: u16,
    /// Seed of the handshake cookies (each server process has its own).
    #[arg(long, default_value_t = 0)]
    seed: u32,
    #[arg(long)]
    stats_file: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, args.port))
        .with_context(|| format!("binding UDP port {}", args.port))?;
    let seed = if args.seed == 0 { std::process::id() } else { args.seed };
    let mut handle = shard::spawn(socket, ShardConfig { name: args.name.clone(), max_players: args.max_players, seed });
    while !STOP.load(Ordering::Relaxed) {
        if let Some(path) = &args.stats_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&handle.stats())?)?;
            std::fs::rename(&tmp, path)?;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    handle.stop();
    Ok(())
}
