//! Shards from Agones: the agent watches GameServers (`watch`), sorts them
//! into each frontend's shards and pool (`discover`), holds or follows the
//! decider's Lease (`lease`), and allocates fresh shards (`allocate`). This
//! task only talks to the API; every decision and map write is the owner's
//! (`owner`), which receives what happens here as messages.

use std::{collections::BTreeMap, time::Duration};

use tokio::sync::mpsc;

use crate::config::Validated;

pub mod allocate;
pub mod client;
pub mod discover;
pub mod gameserver;
pub mod lease;
pub mod watch;

/// What the owner asks of the API.
#[derive(Debug)]
pub enum Command {
    Allocate(allocate::Ask),
    /// Writes the decider's record onto a GameServer (retried until it lands).
    Annotate {
        namespace: String,
        name: String,
        annotations: BTreeMap<String, String>,
        what: String,
    },
}

/// What the Kubernetes task reports to the cluster's owner.
pub trait AgonesOwner: Clone + Send + Sync + 'static {
    /// Every GameServer of a watched namespace, after a change.
    fn gameservers(&self, namespace: String, list: Vec<gameserver::GameServer>);
    /// The decider's Lease: held, followed, or unreachable.
    fn leadership(&self, l: lease::Leadership);
    /// An API user (`who`) failed (Some) or works again (None).
    fn kubernetes_error(&self, who: &str, error: Option<String>);
    /// What an allocation came to, and how long it took.
    fn allocation(&self, ask: allocate::Ask, answer: allocate::Answer, took: Duration);
}

/// The owner's end: commands go to the Kubernetes task.
#[derive(Clone, Debug)]
pub struct AgonesHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl AgonesHandle {
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }
}

/// The owner's end and the task's end of the command channel: made
/// before either side starts, so neither waits to be told of the other.
pub fn channel() -> (AgonesHandle, mpsc::UnboundedReceiver<Command>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (AgonesHandle { tx }, rx)
}

/// Starts the Kubernetes task for the config's Agones frontends; it takes
/// the owner's commands from `rx`.
pub fn spawn(
    cfg: &Validated,
    owner: impl AgonesOwner,
    rx: mpsc::UnboundedReceiver<Command>,
) -> tokio::task::JoinHandle<()> {
    let k = cfg.kubernetes();
    let mut namespaces: Vec<String> =
        cfg.frontends.iter().filter_map(|f| f.agones.as_ref().map(|a| a.namespace.clone())).collect();
    namespaces.sort();
    namespaces.dedup();
    // A game node (or a remote node) follows the GameServers to know its
    // local shards; only ingress agents decide, so it never joins the election.
    let elect = cfg.raw.role.decides();
    tokio::spawn(run(k, namespaces, elect, owner, rx))
}

/// The watch's reports, handed to the owner.
struct WatchSink<O>(O);

impl<O: AgonesOwner> watch::Sink for WatchSink<O> {
    fn gameservers(&self, namespace: &str, list: Vec<gameserver::GameServer>) {
        self.0.gameservers(namespace.to_string(), list);
    }
    fn api_error(&self, error: Option<String>) {
        self.0.kubernetes_error("watch", error);
    }
}

async fn run(
    k: crate::config::KubernetesConfig,
    namespaces: Vec<String>,
    elect: bool,
    owner: impl AgonesOwner,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let client = loop {
        match client::connect(&k).await {
            Ok(c) => break c,
            Err(e) => {
                owner.kubernetes_error("client", Some(format!("{e:#}")));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    for ns in namespaces {
        tokio::spawn(watch::follow(client.clone(), ns, WatchSink(owner.clone())));
    }
    if elect {
        let leases = kube::Api::namespaced(client.clone(), &client::lease_namespace(&k));
        let me = client::identity(&k);
        log::info!("Kubernetes: replica `{me}` follows Lease {}/{}", client::lease_namespace(&k), k.lease_name);
        let reporter = owner.clone();
        tokio::spawn(lease::hold(
            leases,
            k.lease_name.clone(),
            me,
            Duration::from_millis(k.lease_duration_ms),
            move |l| reporter.leadership(l),
        ));
    }
    while let Some(cmd) = rx.recv().await {
        let (client, owner) = (client.clone(), owner.clone());
        match cmd {
            Command::Allocate(ask) => {
                tokio::spawn(async move {
                    let (answer, took) = allocate::allocate(client, &ask).await;
                    owner.allocation(ask, answer, took);
                });
            }
            Command::Annotate { namespace, name, annotations, what } => {
                tokio::spawn(async move {
                    let mut pause = Duration::from_millis(100);
                    // Retried until it lands: the other replicas wait for it.
                    for attempt in 1.. {
                        match allocate::annotate(client.clone(), &namespace, &name, &annotations).await {
                            Ok(()) => {
                                log::info!("recorded on GameServer {namespace}/{name}: {what}");
                                return;
                            }
                            Err(kube::Error::Api(s)) if s.code == 404 => {
                                log::warn!("recording {what}: GameServer {namespace}/{name} is gone");
                                return;
                            }
                            Err(e) if attempt % 10 == 1 => {
                                log::warn!("recording {what} on GameServer {namespace}/{name} (attempt {attempt}): {e}")
                            }
                            Err(_) => {}
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                });
            }
        }
    }
}
