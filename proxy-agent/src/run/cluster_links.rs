//! The links between ingress agents, composed: the peer links (sessions)
//! and the coordinator's decider (listed shards' decisions), each with the
//! owner's end made before the owner starts and the loops spawned after.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    sync::mpsc::{unbounded_channel, UnboundedReceiver},
    task::JoinHandle,
};

use crate::{
    config::Validated,
    decide::{self, Decision},
    owner::{DeciderLink, OwnerHandle, PeerLinks},
    peers,
};

/// What the loops start with, once the owner runs.
pub struct Ends {
    peers: Option<PeerEnds>,
    /// This agent's name in the decider row, and the owner's decisions to append.
    asks: Option<(String, UnboundedReceiver<(u64, Decision)>)>,
}

/// The owner's ends of the peer links and the decider, when configured.
pub fn make(cfg: &Validated) -> (Option<PeerLinks>, Option<DeciderLink>, Ends) {
    let (peer_links, peers) = peer_links(cfg);
    // The coordinator needs peers (checked): the decider row names the node.
    let me = peer_links.as_ref().map(|l| l.node.clone()).unwrap_or_default();
    let (decider, asks) = match &cfg.raw.coordinator {
        Some(_) => {
            let (tx, rx) = unbounded_channel();
            (Some(DeciderLink { me: me.clone(), asks: tx }), Some((me, rx)))
        }
        None => (None, None),
    };
    (peer_links, decider, Ends { peers, asks })
}

/// Binds the peer port and starts the links and the decider's loops.
pub async fn spawn(cfg: &Validated, owner: &OwnerHandle, ends: Ends) -> Result<Vec<(&'static str, JoinHandle<()>)>> {
    let mut tasks = Vec::new();
    if let (Some(c), Some((me, asks))) = (&cfg.raw.coordinator, ends.asks) {
        tasks.push(("decider", spawn_decider(c, me, owner, asks)?));
    }
    if let Some((settings, outbox, board)) = ends.peers {
        for task in peers::spawn(settings, owner.clone(), outbox, board).await? {
            tasks.push(("peers", task));
        }
    }
    Ok(tasks)
}

/// The coordinator's loops: hold (or follow) the decider row, read the log
/// from its head at start (what came before is in the peers' sessions and
/// this node's pinned maps: replaying old moves would move today's
/// players), and append what the owner decides. Until the database first
/// answers, nothing is decided here and failovers of listed shards wait.
fn spawn_decider(
    cfg: &decide::CoordinatorConfig,
    me: String,
    owner: &OwnerHandle,
    mut asks: UnboundedReceiver<(u64, Decision)>,
) -> Result<JoinHandle<()>> {
    let coord = decide::Coordinator::new(cfg).context("the coordinator's database URL")?;
    let owner = owner.clone();
    let task = tokio::spawn(async move {
        let mut said = None;
        let head = loop {
            let tried = async { coord.migrate().await.and(coord.head().await) };
            match tried.await {
                Ok(seq) => break seq,
                Err(e) => {
                    let why = e.to_string();
                    if said.as_ref() != Some(&why) {
                        log::warn!("coordinator {}: {why}; retrying (listed shards' failovers wait)", coord.target());
                        said = Some(why);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        log::info!("coordinator {}: this agent is {me}; decisions from #{head} on", coord.target());
        let (status_to, log_to) = (owner.clone(), owner.clone());
        let handle = decide::spawn(coord, me, head, move |s| status_to.decider_status(s), move |l| log_to.decisions(l));
        while let Some((token, decision)) = asks.recv().await {
            let result = handle.decide(&decision).await.map_err(|e| e.to_string());
            owner.decided(token, result);
        }
        handle.stop();
    });
    Ok(task)
}

/// What the peer links start with: their settings, the owner's outbox, the board.
type PeerEnds = (peers::Settings, peers::Outbox, Arc<peers::Board>);

/// The peer links' ends, when `peers:` is configured: the owner's (its
/// outbox and the board it reads) and the links' own.
fn peer_links(cfg: &Validated) -> (Option<PeerLinks>, Option<PeerEnds>) {
    let Some(p) = &cfg.raw.peers else { return (None, None) };
    let node = p.node_name();
    let outbox = peers::Outbox::new();
    let join_timeout = Duration::from_millis(p.join_timeout_ms);
    let dial = p.others();
    let board = Arc::new(peers::Board::new(join_timeout.max(peers::SILENCE), &dial));
    let settings = peers::Settings {
        me: node.clone(),
        secret: cfg.raw.node_secret().unwrap_or_default().into_bytes(),
        listen: p.listen,
        dial,
    };
    log::info!("peers: this node is {node}; listening on {}, dialing {:?}", p.listen, settings.dial);
    let links = PeerLinks { node, outbox: outbox.clone(), board: board.clone(), join_timeout };
    (Some(links), Some((settings, outbox, board)))
}
