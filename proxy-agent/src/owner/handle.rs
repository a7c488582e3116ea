//! The other threads' end of the owner: one handle that implements the
//! small port each client defines (control, health, query, HTTP, Agones),
//! so none of them imports the owner.

use std::{
    sync::{mpsc, Arc},
    time::Duration,
};

use tokio::sync::{oneshot, watch};

use super::msg::Msg;
use crate::{
    agones::{
        allocate::{Answer, Ask},
        gameserver::GameServer,
        lease::Leadership,
        AgonesOwner,
    },
    cluster::{answered::Answered, snapshot::Snapshot, TransferAsk},
    control::{error::ControlError, protocol::Request, views::MoveReport, ControlOwner, ControlReply},
    dataplane::scanner::ScanPart,
    health::{HealthOwner, ProbeOutcome, ProbePlan},
    http::HttpOwner,
    leases::mover::LeaseOutcome,
    peers::{PeersOwner, Record},
    query::QueryOwner,
};

#[derive(Clone)]
pub struct OwnerHandle {
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl OwnerHandle {
    fn tell(&self, msg: Msg) {
        // A gone owner means the agent is stopping: nothing to tell.
        let _ = self.tx.send(msg);
    }

    /// Sends a message carrying a reply channel; None when the owner is gone.
    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).ok()?;
        rx.await.ok()
    }

    /// A part of a full scan (the scanner thread's deliveries).
    pub fn scanned(&self, generation: u64, result: Result<ScanPart, String>, took: Duration) {
        self.tell(Msg::Scanned { generation, result, took });
    }

    pub fn lease_outcome(&self, outcome: LeaseOutcome) {
        self.tell(Msg::LeaseOutcome(outcome));
    }

    pub fn decider_status(&self, s: crate::decide::Status) {
        self.tell(Msg::DeciderStatus(s));
    }

    pub fn decisions(&self, batch: crate::decide::Result<Vec<(u64, crate::decide::Decision)>>) {
        self.tell(Msg::Decisions(batch));
    }

    pub fn decided(&self, token: u64, result: Result<u64, String>) {
        self.tell(Msg::Decided(token, result));
    }

    pub fn attached(&self) {
        self.tell(Msg::Attached);
    }

    /// Stops the owner after the message it is handling.
    pub async fn shutdown(&self) {
        let _ = self.ask(Msg::Shutdown).await;
    }
}

impl ControlOwner for OwnerHandle {
    async fn call(&self, req: Request) -> ControlReply {
        self.ask(|tx| Msg::Control(req, tx)).await.unwrap_or(Err(ControlError::Unavailable))
    }
}

impl HealthOwner for OwnerHandle {
    async fn probe_plan(&self) -> Option<ProbePlan> {
        self.ask(Msg::ProbePlan).await
    }

    fn health_round(&self, results: Vec<(String, ProbeOutcome)>) {
        self.tell(Msg::HealthRound(results));
    }

    fn probed_now(&self, shard: String, outcome: ProbeOutcome) {
        self.tell(Msg::ProbedNow(shard, outcome));
    }
}

impl QueryOwner for OwnerHandle {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

impl HttpOwner for OwnerHandle {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    async fn answered(&self, list: Vec<Answered>) -> usize {
        self.ask(|tx| Msg::Answered(list, tx)).await.unwrap_or(0)
    }

    async fn refused(&self, shards: Vec<String>) -> usize {
        self.ask(|tx| Msg::Refused(shards, tx)).await.unwrap_or(0)
    }

    async fn transfer(&self, ask: TransferAsk) -> Result<(String, MoveReport), ControlError> {
        self.ask(|tx| Msg::Transfer(ask, tx)).await.unwrap_or(Err(ControlError::Unavailable))
    }
}

impl PeersOwner for OwnerHandle {
    async fn snapshot_records(&self) -> Option<Vec<Record>> {
        self.ask(Msg::PeerSnapshot).await
    }

    async fn peer_records(&self, from: String, records: Vec<Record>) {
        let _ = self.ask(|tx| Msg::PeerRecords(from, records, tx)).await;
    }
}

impl AgonesOwner for OwnerHandle {
    fn gameservers(&self, namespace: String, list: Vec<GameServer>) {
        self.tell(Msg::GameServers(namespace, list));
    }

    fn leadership(&self, l: Leadership) {
        self.tell(Msg::Leadership(l));
    }

    fn kubernetes_error(&self, who: &str, error: Option<String>) {
        self.tell(Msg::KubernetesError(who.into(), error));
    }

    fn allocation(&self, ask: Ask, answer: Answer, took: Duration) {
        self.tell(Msg::Allocation(ask, answer, took));
    }
}
