//! What the owner publishes: the status every reader shares (metrics,
//! `/ready`, `status`), with why the agent is not ready, by name.

use std::{sync::Arc, time::Instant};

use super::Owner;
use crate::{
    cluster::snapshot::{NotReady, Snapshot},
    control::{
        error::ControlError,
        views::{AgentView, IndexView, StatusView},
    },
};

impl Owner {
    /// The first reason the agent is not ready, if any.
    pub(super) fn not_ready(&self) -> Option<NotReady> {
        if !self.attached {
            Some(NotReady::NotAttached)
        } else if let Some(e) = self.agones.api_error() {
            Some(NotReady::KubernetesApi(e))
        } else if self.health_rounds == 0 {
            Some(NotReady::NoHealthRound)
        } else if self.cluster.half_applied {
            Some(NotReady::HalfApplied)
        } else {
            self.peers_not_synced().map(NotReady::SyncingPeers)
        }
    }

    pub(super) fn publish(&mut self) {
        self.latch_peers_synced();
        match self.status() {
            Ok(status) => {
                let answers = self.cluster.answers_by_address();
                let shard_addresses = self.cluster.cfg.shards.iter().map(|s| (s.name.clone(), s.address)).collect();
                let taken = Some(Instant::now());
                let _ = self.publish.send(Arc::new(Snapshot { status, answers, shard_addresses, taken }));
            }
            Err(e) => log::warn!("building the status snapshot: {e}"),
        }
    }

    pub(super) fn status(&self) -> Result<StatusView, ControlError> {
        let c = &self.cluster;
        let loads = c.loads();
        let not_ready = self.not_ready();
        Ok(StatusView {
            frontends: c.frontend_views(),
            shards: c.shard_views(&loads, |name| self.parked.iter().any(|p| p == name))?,
            totals: c.totals(&loads),
            agent: AgentView {
                version: env!("CARGO_PKG_VERSION").into(),
                config: self.config_path.display().to_string(),
                expired_idle: self.expired_idle,
                expired_moving: self.expired_moving,
                events_total: self.events.totals(),
                parked_failovers: self.parked.len(),
                last_tick_ms: self.last_tick_ms,
                ready: not_ready.is_none(),
                not_ready: not_ready.map(|r| r.to_string()),
                kubernetes: self.kubernetes_view(),
                peers: self.peers_view(),
                coordinator: self.decider_view(),
                reloads: self.reloads.clone(),
                probe_rtt: self.probe_rtt.clone(),
                queries_answered: self.responder_counts.by_type().into_iter().collect(),
                index: IndexView {
                    sessions: c.index.len(),
                    scans: self.scan.done,
                    last_scan_ms: self.scan.last_ms,
                    repaired_added: self.scan.repaired.added as u64,
                    repaired_removed: self.scan.repaired.removed as u64,
                },
            },
            counters: c.counters()?,
        })
    }
}
