//! What the owner is told: one message a kind, each with its own typed
//! reply channel where it answers.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::{
    agones::{
        allocate::{Answer, Ask},
        gameserver::GameServer,
        lease::Leadership,
    },
    cluster::{answered::Answered, TransferAsk},
    control::{error::ControlError, protocol::Request, views::MoveReport, ControlReply},
    dataplane::scanner::ScanPart,
    health::{ProbeOutcome, ProbePlan},
    leases::mover::LeaseOutcome,
};

pub enum Msg {
    Control(Request, oneshot::Sender<ControlReply>),
    ProbePlan(oneshot::Sender<ProbePlan>),
    HealthRound(Vec<(String, ProbeOutcome)>),
    /// An urgent probe's outcome (a confirmed refusal), folded in as a round's.
    ProbedNow(String, ProbeOutcome),
    /// A part of the scan of `generation` (see `scanner`).
    Scanned {
        generation: u64,
        result: Result<ScanPart, String>,
        took: Duration,
    },
    /// A shard asks for one of its players to move (an area transfer).
    Transfer(TransferAsk, oneshot::Sender<Result<(String, MoveReport), ControlError>>),
    /// An ingress node: game nodes' shards accepted these players.
    Answered(Vec<Answered>, oneshot::Sender<usize>),
    /// An ingress node: a game node saw these shards refuse a player; the
    /// reply is how many are probed now.
    Refused(Vec<String>, oneshot::Sender<usize>),
    /// What became of a lease move.
    LeaseOutcome(LeaseOutcome),
    /// The programs are attached: the data plane forwards.
    Attached,
    /// Every GameServer of a watched namespace, after a change.
    GameServers(String, Vec<GameServer>),
    /// The decider's Lease: held, followed, or unreachable.
    Leadership(Leadership),
    /// An API user failed (Some) or works again (None).
    KubernetesError(String, Option<String>),
    /// What an allocation came to, and how long it took.
    Allocation(Ask, Answer, Duration),
    /// A peer connected: every established session as records.
    PeerSnapshot(oneshot::Sender<Vec<crate::peers::Record>>),
    /// Records from a peer (its name); the reply once they are written.
    PeerRecords(String, Vec<crate::peers::Record>, oneshot::Sender<()>),
    /// The coordinator's decider row: held, followed, or unreachable.
    DeciderStatus(crate::decide::Status),
    /// New entries of the decisions' log (or why it could not be read).
    Decisions(crate::decide::Result<Vec<(u64, crate::decide::Decision)>>),
    /// An asked decision was appended (its seq) or refused.
    Decided(u64, Result<u64, String>),
    Shutdown(oneshot::Sender<()>),
}
