//! The data plane's upkeep, on a thread of its own (its netlink, `/proc`
//! and map I/O never runs on the async runtime's threads): every second
//! the interfaces that take no redirected frames are marked and the
//! uplinks get the egress guard; on a game node, every 250 ms, new local
//! shards' interfaces are attached and gone ones forgotten.

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{pod_routes, redirect_targets::RedirectTargets, Dataplane};
use crate::config::XdpModeName;

const REDIRECTS_EVERY: Duration = Duration::from_secs(1);
const PODS_EVERY: Duration = Duration::from_millis(250);

/// The running upkeep; `stop` ends it and gives the data plane back.
pub struct Upkeep {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Dataplane>,
}

impl Upkeep {
    /// Starts the upkeep of `dp`. `shards` gives the shards of the config
    /// in force (a reload may change them); `follow_pods` on a game node.
    pub fn start(
        mut dp: Dataplane,
        mode: XdpModeName,
        follow_pods: bool,
        shards: impl Fn() -> Vec<(String, Ipv4Addr)> + Send + 'static,
    ) -> Result<Upkeep> {
        let mut redirect_targets = RedirectTargets::open(dp.pin_dir())?;
        // Once before READY, so the first players already go the right way.
        redirect_targets.sync(mode, &shards(), &pod_routes::local_table());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name("dataplane-upkeep".into()).spawn(move || {
            let mut unguarded_uplinks = Vec::new();
            let (mut next_redirects, mut next_pods) = (Instant::now() + REDIRECTS_EVERY, Instant::now());
            while !stopped.load(Ordering::Relaxed) {
                let now = Instant::now();
                if follow_pods && now >= next_pods {
                    let addresses: Vec<Ipv4Addr> = shards().into_iter().map(|(_, a)| a).collect();
                    follow_local_pods(&mut dp, &addresses, mode);
                    next_pods = now + PODS_EVERY;
                }
                if now >= next_redirects {
                    // One read of the routing table serves both.
                    let table = pod_routes::local_table();
                    redirect_targets.sync(mode, &shards(), &table);
                    guard_uplinks(&mut dp, &mut unguarded_uplinks, &table);
                    next_redirects = now + REDIRECTS_EVERY;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            dp
        })?;
        Ok(Upkeep { stop, thread })
    }

    /// Stops the upkeep (within 50 ms) and hands the data plane back.
    pub fn stop(self) -> Dataplane {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the data plane upkeep thread panicked")
    }
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

/// A game node follows its shards' pods: attaches to the interface of each
/// new local shard, forgets the interfaces of pods that went away.
fn follow_local_pods(dp: &mut Dataplane, shards: &[Ipv4Addr], mode: XdpModeName) {
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
