//! `proxy-agent run`: load, attach, fill the maps, serve the control socket,
//! expire sessions and keep placement current; reload on SIGHUP; detach
//! cleanly on SIGTERM or Ctrl-C.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::Mutex,
};

use crate::{cluster::Cluster, config, control, dataplane::Dataplane, health, metrics, state::AgentState};

/// Probes every shard each `health.interval_ms`, all at once, and hands the
/// round to the state (which fails over what went down).
async fn health_loop(state: Arc<Mutex<AgentState>>) {
    let mut nonce: u32 = std::process::id();
    loop {
        let (targets, cfg) = {
            let st = state.lock().await;
            (st.probe_targets(), st.cluster.cfg.raw.health.clone())
        };
        let started = tokio::time::Instant::now();
        let mut probes = tokio::task::JoinSet::new();
        for (name, addr) in targets {
            nonce = nonce.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let wait = Duration::from_millis(cfg.timeout_ms);
            let n = nonce;
            probes.spawn(async move { (name, health::probe(addr, wait, n).await) });
        }
        let results: Vec<_> = probes.join_all().await;
        state.lock().await.health_round(results);
        tokio::time::sleep_until(started + Duration::from_millis(cfg.interval_ms)).await;
    }
}

pub async fn run(config_path: &Path) -> Result<()> {
    // Validate everything before touching the kernel: a bad file attaches nothing.
    let cfg = config::load(config_path)?;
    let mut dp = Dataplane::load(&cfg.raw.bpffs)?;
    let cluster = Cluster::start(cfg.clone(), &mut dp.tables).context("filling the maps")?;
    let listener = control::bind(&cfg.raw.control_socket).await?;
    let metrics =
        match cfg.raw.metrics_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding `metrics_listen` {addr}; pick a free address or remove the field")
            })?),
            None => None,
        };
    let logger = dp.take_logger()?;
    dp.attach(&cfg.raw.interfaces, cfg.raw.xdp_mode)?;
    log::info!(
        "attached to {} ({:?} mode); maps pinned in {}; control socket {}",
        dp.attached().join(", "),
        cfg.raw.xdp_mode,
        dp.pin_dir().display(),
        cfg.raw.control_socket.display()
    );
    for fe in &cfg.frontends {
        let shards: Vec<String> = cfg
            .shards
            .iter()
            .filter(|s| cfg.frontends[s.frontend].name == fe.name)
            .map(|s| format!("{}={} ({:?}, {} slots)", s.name, s.address, s.role, s.capacity))
            .collect();
        log::info!("frontend {} {} -> {}", fe.name, fe.address, shards.join(", "));
    }
    let socket_path = cfg.raw.control_socket.clone();
    let state = Arc::new(Mutex::new(AgentState::new(dp, cluster, config_path.to_path_buf())));
    tokio::spawn(control::serve(listener, state.clone()));
    tokio::spawn(health_loop(state.clone()));
    if let Some(listener) = metrics {
        tokio::spawn(metrics::serve(listener, state.clone()));
    }
    println!("READY");

    // SAFETY: the logger owns the ring buffer's fd and lives inside the AsyncFd,
    // so the fd stays open for as long as it is registered.
    let mut logs =
        unsafe { AsyncFd::register(logger) }.map_err(|e| anyhow::anyhow!("watching the kernel log ring: {e}"))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: detaching"); break; }
            _ = int.recv() => { log::info!("interrupt: detaching"); break; }
            _ = hup.recv() => {
                if let Err(e) = state.lock().await.reload() {
                    log::error!("SIGHUP: {e}");
                }
            }
            _ = tick.tick() => state.lock().await.maintain(),
            guard = logs.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
    let mut st = state.lock().await;
    st.dp.detach();
    let _ = std::fs::remove_file(&socket_path);
    log::info!("detached; maps stay pinned in {} for the next start", st.dp.pin_dir().display());
    Ok(())
}
