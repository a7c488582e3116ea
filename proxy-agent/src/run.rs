//! `proxy-agent run`: load, attach, hand the maps to the cluster's owner
//! thread, serve the control socket, the health probes and the metrics;
//! reload on SIGHUP; on SIGTERM or Ctrl-C stop, leaving the data plane
//! forwarding (pinned) for the next agent.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    cluster::{
        owner::{self, Msg},
        Cluster,
    },
    config::{self, NodeRole},
    control,
    dataplane::{
        ebpf_object, links, pod_routes, redirect_targets::RedirectTargets, scanner, session_events::SessionEvents,
        tables, Dataplane, TableSizes,
    },
    health, http,
    leases::mover::LeaseMover,
    protocol::Request,
    query,
};

pub async fn run(config_path: &Path, xdp_object: Option<&Path>) -> Result<()> {
    // Validate everything before touching the kernel: a bad file attaches nothing.
    let cfg = config::load(config_path)?;
    let sizes = TableSizes { sessions: cfg.raw.max_sessions, pending: cfg.raw.max_pending };
    let object = ebpf_object::chosen(xdp_object)?;
    let (mut dp, tables) = Dataplane::load_object(&cfg.raw.bpffs, sizes, &object)?;
    let mut cluster = Cluster::start(cfg.clone(), tables).context("filling the maps")?;
    // Queries whose answer the data plane cannot fit go to this node's own
    // address on the frontend's port, where the responder answers them.
    let responder = query::local_address(&cfg.raw.interfaces);
    cluster.set_responder(responder).context("writing the query settings")?;
    let responder_counts = Arc::new(query::ResponderCounts::default());
    let ring = SessionEvents::new(tables::session_events(&mut |name| tables::open_pin(dp.pin_dir(), name))?);
    let pin_dir = dp.pin_dir().to_path_buf();
    let owner = owner::spawn(cluster, config_path.to_path_buf(), ring, responder_counts.clone(), |inbox| {
        scanner::spawn(&pin_dir, move |generation, result, took| {
            let _ = inbox.send(Msg::Scanned { generation, result, took });
        })
    })?;
    if let Some(leases) = cfg.raw.leases.clone() {
        // Moves made from here on hand their players' account leases along.
        let reporter = owner.clone();
        owner.use_leases(LeaseMover::spawn(leases, move |outcome| reporter.lease_outcome(outcome)));
    }
    if cfg.uses_agones() {
        // Shards follow the Agones GameServers from here on.
        owner.use_agones(crate::agones::spawn(&cfg, owner.clone()));
    }
    let listener = control::bind(&cfg.raw.control_socket).await?;
    let metrics =
        match cfg.raw.metrics_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding `metrics_listen` {addr}; pick a free address or remove the field")
            })?),
            None => None,
        };
    // Shards' answers to these nodes' probes keep the shard's address.
    {
        let peers: Vec<std::net::Ipv4Addr> = cfg.raw.ingress_agents.iter().map(|a| *a.ip()).collect();
        cluster_peers(&cfg.raw.bpffs, &peers)?;
    }
    let logger = dp.take_logger()?;
    dp.attach(&cfg.raw.interfaces, cfg.raw.xdp_mode())?;
    owner.attached();
    let attached: Vec<String> = dp
        .attached()
        .iter()
        .map(|(n, how)| match how {
            links::Attachment::Adopted => format!("{n} (adopted: program replaced in place)"),
            links::Attachment::New => n.clone(),
        })
        .collect();
    log::info!(
        "attached to {} ({:?} mode); maps and links pinned in {}; control socket {}",
        if attached.is_empty() {
            "no interface yet (a return node finds its pods' veths)".to_string()
        } else {
            attached.join(", ")
        },
        cfg.raw.xdp_mode(),
        dp.pin_dir().display(),
        cfg.raw.control_socket.display()
    );
    // Interfaces that take no redirected frames get the packets through the
    // kernel; kept current, as drivers and routes change.
    let mut redirect_targets = RedirectTargets::open(dp.pin_dir())?;
    let shard_addresses = |owner: &owner::OwnerHandle| -> Vec<(String, std::net::Ipv4Addr)> {
        owner.snapshot().status.shards.iter().filter_map(|s| Some((s.name.clone(), s.address.parse().ok()?))).collect()
    };
    redirect_targets.sync(cfg.raw.xdp_mode(), &shard_addresses(&owner), &pod_routes::local_table());
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
    tokio::spawn(control::serve(listener, owner.clone()));
    if cfg.raw.role == NodeRole::Return {
        // The ingress nodes probe the shards and decide; this node only
        // sends its shards' replies on, and reports whom they accepted.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        owner.report_answered(tx);
        let secret = cfg.raw.node_secret().context(
            "a return node needs the node secret: set `node_secret` (the ingress agents' own) or SAMP_PROXY_NODE_SECRET",
        )?;
        tokio::spawn(http::node::report(rx, cfg.raw.ingress_agents.clone(), secret.clone()));
        // Shards seen refusing players are named to the ingress agents,
        // which probe them at once.
        let (refused_tx, refused_rx) = tokio::sync::mpsc::unbounded_channel();
        owner.report_refused(refused_tx);
        tokio::spawn(http::node::report_refused(refused_rx, cfg.raw.ingress_agents.clone(), secret));
    } else {
        // Shards the data plane sees refuse players are probed at once.
        let (urgent_tx, urgent_rx) = tokio::sync::mpsc::unbounded_channel();
        owner.urgent_probes(urgent_tx);
        tokio::spawn(health::probe_loop(owner.clone(), urgent_rx));
    }
    match responder {
        Some(addr) => {
            let mut ports: Vec<u16> = cfg.frontends.iter().map(|f| f.address.port()).collect();
            ports.sort_unstable();
            ports.dedup();
            log::info!("query responder for long answers on {addr}, ports {ports:?}");
            let owner = owner.clone();
            tokio::spawn(async move {
                if let Err(e) = query::serve(owner, responder_counts, ports).await {
                    log::error!("query responder: {e:#}; answers too long for a frame go unanswered");
                }
            });
        }
        None => log::warn!(
            "no IPv4 address on {}: query answers too long for a frame go unanswered",
            cfg.raw.interfaces.join(", ")
        ),
    }
    if let Some(listener) = metrics {
        let shard_api = http::ShardApi { secret: cfg.raw.shard_secret(), node_secret: cfg.raw.node_secret() };
        if shard_api.secret.is_none() {
            log::info!("area transfers are off: no shard_secret (or {})", config::SHARD_SECRET_ENV);
        }
        tokio::spawn(http::serve(listener, owner.clone(), shard_api));
    }
    // SAFETY: the logger owns the ring buffer's fd and lives inside the AsyncFd,
    // so the fd stays open for as long as it is registered.
    let mut logs =
        unsafe { AsyncFd::register(logger) }.map_err(|e| anyhow::anyhow!("watching the kernel log ring: {e}"))?;
    // The handlers exist before READY: a signal right after it is ours, not fatal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut pods = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut unguarded_uplinks = Vec::new();
    let mut redirects = tokio::time::interval(std::time::Duration::from_secs(1));
    println!("READY");
    loop {
        tokio::select! {
            _ = pods.tick(), if cfg.raw.role == NodeRole::Return => {
                // The shards of the config in force (a reload may change them).
                let shards: Vec<std::net::Ipv4Addr> = shard_addresses(&owner).into_iter().map(|(_, a)| a).collect();
                follow_pods(&mut dp, &shards, cfg.raw.xdp_mode());
            }
            _ = redirects.tick() => {
                // One read of the routing table serves both.
                let table = pod_routes::local_table();
                redirect_targets.sync(cfg.raw.xdp_mode(), &shard_addresses(&owner), &table);
                guard_uplinks(&mut dp, &mut unguarded_uplinks, &table);
            }
            _ = term.recv() => { log::info!("SIGTERM: stopping; the data plane keeps forwarding"); break; }
            _ = int.recv() => { log::info!("interrupt: stopping; the data plane keeps forwarding"); break; }
            _ = hup.recv() => {
                if let Err(e) = owner.call(Request::Reload).await {
                    log::error!("SIGHUP: {e}");
                }
            }
            guard = logs.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
    owner.shutdown().await;
    let _ = std::fs::remove_file(&socket_path);
    log::info!(
        "stopped; XDP keeps forwarding from the links and maps pinned in {} until the next agent adopts them \
         (`proxy-agent detach` takes it off)",
        dp.pin_dir().display()
    );
    Ok(())
}

/// A node's own ICMP errors to players leave by its uplinks, which on a
/// game node are not the pods' veths the data plane runs on (and on any
/// node may be left out of `interfaces`): a player's packet that dies here
/// (its pod just deleted and its route gone, a TTL run out, a pod's MTU
/// too small) is answered with the packet quoted, shard address included.
/// The egress guard runs on every interface a default route leaves by, as
/// it does where XDP runs; checked every second.
/// An uplink the guard could not attach to is named once, in `failed`.
fn guard_uplinks(dp: &mut Dataplane, failed: &mut Vec<String>, table: &str) {
    for uplink in pod_routes::default_interfaces(table) {
        if dp.covers(&uplink) || failed.contains(&uplink) {
            continue;
        }
        match dp.guard(&uplink) {
            Ok(how) => log::info!(
                "egress guard on {uplink} ({how:?}): this node's own ICMP naming a shard never leaves by its uplink"
            ),
            Err(e) => {
                log::warn!("{e:#}; this node's own ICMP errors may name a pod to a player");
                failed.push(uplink);
            }
        }
    }
}

/// Writes the proxy's own nodes into `PEERS` (read at start).
fn cluster_peers(bpffs: &Path, peers: &[std::net::Ipv4Addr]) -> Result<()> {
    let mut map: aya::maps::HashMap<_, u32, u32> = tables::open_pin(bpffs, proxy_common::maps::PEERS)?.try_into()?;
    for p in peers {
        map.insert(proxy_common::net::addr_to_map(p.octets()), 1, 0).context("writing PEERS")?;
    }
    let mut in_use: aya::maps::Array<_, u32> = tables::open_pin(bpffs, proxy_common::maps::PEERS_IN_USE)?.try_into()?;
    in_use.set(0, u32::from(!peers.is_empty()), 0).context("writing PEERS_IN_USE")?;
    Ok(())
}

/// A game node follows its shards' pods: attaches to the interface of each
/// new local shard, forgets the interfaces of pods that went away.
fn follow_pods(dp: &mut Dataplane, shards: &[std::net::Ipv4Addr], mode: config::XdpModeName) {
    for gone in dp.forget_missing() {
        log::info!("{gone} is gone (its pod went away); its XDP program went with it");
    }
    let attached: Vec<String> = dp.attached().iter().map(|(n, _)| n.clone()).collect();
    let new: Vec<String> = pod_routes::local_interfaces(shards).into_iter().filter(|i| !attached.contains(i)).collect();
    if new.is_empty() {
        return;
    }
    match dp.attach(&new, mode) {
        Ok(()) => log::info!("attached to {} (local shards' interfaces)", new.join(", ")),
        Err(e) => log::warn!("attaching to {}: {e:#}", new.join(", ")),
    }
}
