//! What the owner publishes after every change and every tick, for readers
//! that must not wait on it (metrics, `/ready`, the query responder).

use std::{net::Ipv4Addr, time::Instant};

use super::answers::FrontendAnswers;
use crate::control::views::StatusView;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: StatusView,
    /// The cluster's query answers by frontend, for the agent's responder.
    pub answers: Vec<FrontendAnswers>,
    /// Every shard's name and address (the status holds them as text).
    pub shard_addresses: Vec<(String, Ipv4Addr)>,
    /// When the snapshot was taken.
    pub taken: Option<Instant>,
}

/// Why the agent does not take players yet; `/ready` answers 503 with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    NotAttached,
    NoHealthRound,
    HalfApplied,
    KubernetesApi(String),
    /// Several ingress nodes: this one has not got its peers' state yet.
    SyncingPeers(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NotAttached => f.write_str("the programs are not attached yet"),
            NotReady::NoHealthRound => f.write_str("no health round has finished yet"),
            NotReady::HalfApplied => f.write_str("a reload or failover is half applied"),
            NotReady::SyncingPeers(why) => f.write_str(why),
            NotReady::KubernetesApi(e) => {
                write!(f, "the Kubernetes API is unreachable ({e}); forwarding goes on with the shards known")
            }
        }
    }
}
