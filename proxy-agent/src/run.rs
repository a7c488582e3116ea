//! `proxy-agent run`: load, attach, fill the maps, forward kernel logs, and
//! detach cleanly on SIGTERM or Ctrl-C.

use std::path::Path;

use anyhow::{Context, Result};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{config, dataplane::Dataplane, plan};

pub async fn run(config_path: &Path) -> Result<()> {
    // Validate everything before touching the kernel: a bad file attaches nothing.
    let cfg = config::load(config_path)?;
    let mut dp = Dataplane::load(&cfg.raw.bpffs)?;
    let plan = plan::build(&cfg, |i| cfg.shards[i].capacity);
    dp.tables.apply(&plan).context("filling the maps")?;
    let logger = dp.take_logger()?;
    dp.attach(&cfg.raw.interfaces, cfg.raw.xdp_mode)?;
    log::info!(
        "attached to {} ({:?} mode); maps pinned in {}",
        dp.attached().join(", "),
        cfg.raw.xdp_mode,
        dp.pin_dir().display()
    );
    for fe in &cfg.frontends {
        let shards: Vec<String> = cfg
            .shards
            .iter()
            .filter(|s| cfg.frontends[s.frontend].name == fe.name)
            .map(|s| {
                format!(
                    "{}={} ({:?}, {} slots)",
                    s.name, s.address, s.role, s.capacity
                )
            })
            .collect();
        log::info!(
            "frontend {} {} -> {}",
            fe.name,
            fe.address,
            shards.join(", ")
        );
    }
    println!("READY");

    // SAFETY: the logger owns the ring buffer's fd and lives inside the AsyncFd,
    // so the fd stays open for as long as it is registered.
    let mut logs = unsafe { AsyncFd::register(logger) }
        .map_err(|e| anyhow::anyhow!("watching the kernel log ring: {e}"))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: detaching"); break; }
            _ = int.recv() => { log::info!("interrupt: detaching"); break; }
            guard = logs.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
    dp.detach();
    log::info!(
        "detached; maps stay pinned in {} for the next start",
        dp.pin_dir().display()
    );
    Ok(())
}
