//! `proxy-agent run`, the composition root: load and attach the data
//! plane, fill its maps, make every channel, then start each part once
//! (the owner thread, the scanner, the upkeep, the control socket, the
//! health probes, the HTTP endpoint, the query responder, Agones, leases),
//! reload on SIGHUP, and on SIGTERM or Ctrl-C stop every task and join it,
//! leaving the data plane forwarding (pinned) for the next agent.
//!
//! Once READY is printed, no map or netlink I/O runs on the async
//! runtime's threads: the owner thread holds the maps, the scanner thread
//! reads the session tables, the upkeep thread the interfaces. Start-up
//! (load, attach, fill, `PEERS`) runs before anything is served.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc::unbounded_channel,
    task::JoinHandle,
};

mod cluster_links;

use crate::{
    agones,
    cluster::Cluster,
    config::{self, NodeRole, Validated},
    control::{self, ControlOwner},
    dataplane::{
        ebpf_object, links, scanner, session_events::SessionEvents, tables, upkeep::Upkeep, Dataplane, TableSizes,
    },
    health, http,
    leases::mover::LeaseMover,
    owner::{self, Links, NodeLinks, OwnerHandle},
    protocol::Request,
    query::{self, QueryOwner},
    sites,
};

/// The agent's async tasks, aborted and joined at shutdown.
#[derive(Default)]
struct Tasks(Vec<(&'static str, JoinHandle<()>)>);

impl Tasks {
    fn spawn(&mut self, name: &'static str, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push((name, tokio::spawn(task)));
    }

    fn adopt(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.0.push((name, handle));
    }

    async fn stop(self) {
        for (_, task) in &self.0 {
            task.abort();
        }
        for (name, task) in self.0 {
            if let Err(e) = task.await {
                if !e.is_cancelled() {
                    log::warn!("task {name} ended badly: {e}");
                }
            }
        }
    }
}

/// The data plane loaded and its maps filled, before anything runs.
struct Loaded {
    dp: Dataplane,
    cluster: Cluster,
    ring: SessionEvents,
    /// This node's own address, where long query answers are served.
    responder: Option<std::net::Ipv4Addr>,
}

fn load(cfg: &Validated, xdp_object: Option<&Path>) -> Result<Loaded> {
    let sizes = TableSizes { sessions: cfg.raw.max_sessions, pending: cfg.raw.max_pending };
    let object = ebpf_object::chosen(xdp_object)?;
    let (dp, tables) = Dataplane::load_object(&cfg.raw.bpffs, sizes, &object)?;
    let mut cluster = Cluster::start(cfg.clone(), tables).context("filling the maps")?;
    // Queries whose answer the data plane cannot fit go to this node's own
    // address on the frontend's port, where the responder answers them.
    let responder = query::local_address(&cfg.raw.interfaces);
    cluster.set_responder(responder).context("writing the query settings")?;
    // Shards' answers to these nodes' probes keep the shard's address.
    cluster_peers(cfg)?;
    let ring = SessionEvents::new(tables::session_events(&mut |name| tables::open_pin(dp.pin_dir(), name))?);
    Ok(Loaded { dp, cluster, ring, responder })
}

pub async fn run(config_path: &Path, xdp_object: Option<&Path>) -> Result<()> {
    // Validate everything before touching the kernel: a bad file attaches nothing.
    let cfg = config::load(config_path)?;
    let Loaded { mut dp, cluster, ring, responder } = load(&cfg, xdp_object)?;

    // Channels first: every part knows where its messages go before any starts.
    let (owner, inbox) = owner::channel();
    let (agones_handle, agones_commands) = agones::channel();
    let (node, probes_or_reports) = node_links(&cfg);
    let mut tasks = Tasks::default();

    let leases = cfg.raw.leases.clone().map(|l| {
        // Moves made from here on hand their players' account leases along.
        let reporter = owner.clone();
        LeaseMover::spawn(l, move |outcome| reporter.lease_outcome(outcome))
    });
    let scanner = {
        let inbox = owner.clone();
        scanner::spawn(dp.pin_dir(), move |generation, result, took| inbox.scanned(generation, result, took))?
    };
    let responder_counts = Arc::new(query::ResponderCounts::default());
    let (peers, decider, cluster_ends) = cluster_links::make(&cfg);
    let agones = cfg.uses_agones().then_some(agones_handle);
    let links = Links { leases, agones, node, peers, decider };
    let start = owner::Start {
        cluster,
        config_path: config_path.to_path_buf(),
        ring,
        responder_counts: responder_counts.clone(),
        scanner,
        links,
    };
    let owner_thread = owner::start(inbox, start)?;
    if cfg.uses_agones() {
        // Shards follow the Agones GameServers from here on.
        tasks.adopt("agones", agones::spawn(&cfg, owner.clone(), agones_commands));
    }

    let listener = control::bind(&cfg.raw.control_socket).await?;
    let metrics = bind_metrics(&cfg).await?;
    let logger = dp.take_logger()?;
    dp.attach(&cfg.raw.interfaces, cfg.raw.xdp_mode())?;
    owner.attached();
    log_attached(&dp, &cfg);
    let pin_dir = dp.pin_dir().to_path_buf();
    // Interfaces that take no redirected frames get the packets through the
    // kernel; kept current, as drivers and routes change.
    let shards = {
        let owner = owner.clone();
        move || owner.snapshot().shard_addresses.clone()
    };
    let upkeep = Upkeep::start(dp, cfg.raw.xdp_mode(), cfg.raw.role == NodeRole::Return, shards)?;

    tasks.spawn("control socket", control::serve(listener, owner.clone()));
    for (name, task) in cluster_links::spawn(&cfg, &owner, cluster_ends).await? {
        tasks.adopt(name, task);
    }
    spawn_node_side(&mut tasks, &cfg, &owner, probes_or_reports)?;
    if cfg.raw.role.decides() {
        spawn_responder(&mut tasks, &cfg, &owner, responder, responder_counts);
    }
    if let Some(listener) = metrics {
        tasks.spawn("http", http::serve(listener, owner.clone(), shard_api(&cfg)));
    }
    serve_signals(logger, &owner).await?;

    tasks.stop().await;
    owner.shutdown().await;
    let _ = owner_thread.join();
    let dp = upkeep.stop();
    let _ = std::fs::remove_file(&cfg.raw.control_socket);
    log::info!(
        "stopped; XDP keeps forwarding from the links and maps pinned in {} until the next agent adopts them \
         (`proxy-agent detach` takes it off)",
        pin_dir.display()
    );
    drop(dp);
    Ok(())
}

async fn bind_metrics(cfg: &Validated) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = cfg.raw.metrics_listen else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding `metrics_listen` {addr}; pick a free address or remove the field"))?;
    Ok(Some(listener))
}

fn shard_api(cfg: &Validated) -> http::ShardApi {
    let shard_api = http::ShardApi { secret: cfg.raw.shard_secret(), node_secret: cfg.raw.node_secret() };
    if shard_api.secret.is_none() {
        log::info!("area transfers are off: no shard_secret (or {})", config::SHARD_SECRET_ENV);
    }
    shard_api
}

/// The far ends of the node links: what the health loop or the node
/// reports read.
enum NodeEnds {
    Ingress(tokio::sync::mpsc::UnboundedReceiver<health::UrgentProbe>),
    /// A remote node probes nothing (the ingress agents probe its shards
    /// through the tunnel) and greets the ingress nodes instead.
    Remote,
    Return {
        answered: tokio::sync::mpsc::UnboundedReceiver<Vec<crate::cluster::answered::Answered>>,
        refused: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
    },
}

fn node_links(cfg: &Validated) -> (NodeLinks, NodeEnds) {
    if cfg.raw.role == NodeRole::Return {
        let (answered, answered_rx) = unbounded_channel();
        let (refused, refused_rx) = unbounded_channel();
        (NodeLinks::Return { answered, refused }, NodeEnds::Return { answered: answered_rx, refused: refused_rx })
    } else {
        let (urgent_probes, urgent_rx) = unbounded_channel();
        let ends = match cfg.raw.role {
            NodeRole::Remote => NodeEnds::Remote,
            _ => NodeEnds::Ingress(urgent_rx),
        };
        (NodeLinks::Ingress { urgent_probes }, ends)
    }
}

/// An ingress node probes its shards (and those the data plane sees
/// refuse players, at once); a game node only sends its shards' replies
/// on, and reports whom they accepted and which refused to the ingress
/// agents, which probe and decide.
fn spawn_node_side(tasks: &mut Tasks, cfg: &Validated, owner: &OwnerHandle, ends: NodeEnds) -> Result<()> {
    match ends {
        NodeEnds::Ingress(urgent) => tasks.spawn("health probes", health::probe_loop(owner.clone(), urgent)),
        NodeEnds::Remote => {
            let site = cfg.own_site().map(|i| cfg.sites[i].clone()).context("a remote node names no site")?;
            let greet = sites::heartbeat::run(site.remote_node, site.port, site.ingress_nodes, site.name);
            tasks.spawn("heartbeat", greet);
        }
        NodeEnds::Return { answered, refused } => {
            let secret = cfg.raw.node_secret().context(
                "a return node needs the node secret: set `node_secret` (the ingress agents' own) or SAMP_PROXY_NODE_SECRET",
            )?;
            let agents = cfg.raw.ingress_agents.clone();
            tasks.spawn("node reports", http::node::report(answered, agents.clone(), secret.clone()));
            tasks.spawn("node refusals", http::node::report_refused(refused, agents, secret));
        }
    }
    Ok(())
}

/// Answers too long for a frame are answered by the agent on the
/// frontends' ports at this node's own address.
fn spawn_responder(
    tasks: &mut Tasks,
    cfg: &Validated,
    owner: &OwnerHandle,
    responder: Option<std::net::Ipv4Addr>,
    counts: Arc<query::ResponderCounts>,
) {
    let Some(addr) = responder else {
        log::warn!(
            "no IPv4 address on {}: query answers too long for a frame go unanswered",
            cfg.raw.interfaces.join(", ")
        );
        return;
    };
    let mut ports: Vec<u16> = cfg.frontends.iter().map(|f| f.address.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    log::info!("query responder for long answers on {addr}, ports {ports:?}");
    let owner = owner.clone();
    tasks.spawn("query responder", async move {
        if let Err(e) = query::serve(owner, counts, ports).await {
            log::error!("query responder: {e:#}; answers too long for a frame go unanswered");
        }
    });
}

/// Prints READY, then serves the signals and the kernel's log ring until
/// SIGTERM or Ctrl-C.
async fn serve_signals(logger: aya_log::EbpfLogger<&'static dyn log::Log>, owner: &OwnerHandle) -> Result<()> {
    // SAFETY: the logger owns the ring buffer's fd and lives inside the AsyncFd,
    // so the fd stays open for as long as it is registered.
    let mut logs =
        unsafe { AsyncFd::register(logger) }.map_err(|e| anyhow::anyhow!("watching the kernel log ring: {e}"))?;
    // The handlers exist before READY: a signal right after it is ours, not fatal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    println!("READY");
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: stopping; the data plane keeps forwarding"); return Ok(()); }
            _ = int.recv() => { log::info!("interrupt: stopping; the data plane keeps forwarding"); return Ok(()); }
            _ = hup.recv() => {
                if let Err(e) = owner.call(Request::Reload).await {
                    log::error!("SIGHUP: {e}");
                }
            }
            guard = logs.readable_mut() => {
                // The ring is memory-mapped: reading it makes no system call.
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
}

fn log_attached(dp: &Dataplane, cfg: &Validated) {
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
    for fe in &cfg.frontends {
        let shards: Vec<String> = cfg
            .shards
            .iter()
            .filter(|s| cfg.frontends[s.frontend].name == fe.name)
            .map(|s| format!("{}={} ({:?}, {} slots)", s.name, s.address, s.role, s.capacity))
            .collect();
        log::info!("frontend {} {} -> {}", fe.name, fe.address, shards.join(", "));
    }
}

/// Writes the proxy's own nodes into `PEERS` (read at start).
fn cluster_peers(cfg: &Validated) -> Result<()> {
    let peers: Vec<std::net::Ipv4Addr> = cfg.raw.ingress_agents.iter().map(|a| *a.ip()).collect();
    let bpffs = &cfg.raw.bpffs;
    let mut map: aya::maps::HashMap<_, u32, u32> = tables::open_pin(bpffs, proxy_common::maps::PEERS)?.try_into()?;
    for p in &peers {
        map.insert(proxy_common::net::addr_to_map(p.octets()), 1, 0).context("writing PEERS")?;
    }
    let mut in_use: aya::maps::Array<_, u32> = tables::open_pin(bpffs, proxy_common::maps::PEERS_IN_USE)?.try_into()?;
    in_use.set(0, u32::from(!peers.is_empty()), 0).context("writing PEERS_IN_USE")?;
    Ok(())
}
