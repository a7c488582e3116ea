//! Shard-level requests given to a follower, carried out by the decider:
//! with a coordinator only the decider may fail a listed shard over, move a
//! whole shard or drain one, so a follower sends the request to its peers
//! over the peer links (`Record::Ask`); the agent deciding carries it out
//! through the log and sends the reply back (`Record::Answer`), which the
//! follower hands to its operator as if it had answered itself. Nobody
//! deciding answers within `ANSWER_WITHIN`: the operator is told who holds
//! the decider row.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use super::Owner;
use crate::{
    control::{error::ControlError, protocol::Request, views::Reply, ControlReply},
    peers::Record,
};

/// How long a follower waits for the decider's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Forwarding {
    next: u64,
    /// This node's asks, awaiting an answer: token -> (sent, operator).
    waiting: HashMap<u64, (Instant, oneshot::Sender<ControlReply>)>,
    /// Peers' asks this node is carrying out: (token, origin, the reply).
    carrying: Vec<(u64, u32, oneshot::Receiver<ControlReply>)>,
}

impl Owner {
    fn my_origin(&self) -> Option<u32> {
        self.replication.as_ref().map(|r| r.origin())
    }

    /// Sends `req` to the peers for the decider; gives `reply` back when
    /// there are no peers to ask.
    pub(super) fn forward_to_decider(
        &mut self,
        req: &Request,
        reply: oneshot::Sender<ControlReply>,
    ) -> Option<oneshot::Sender<ControlReply>> {
        let Some(origin) = self.my_origin() else { return Some(reply) };
        let f = &mut self.forwarding;
        f.next += 1;
        let token = f.next;
        f.waiting.insert(token, (Instant::now(), reply));
        self.send_to_peers(vec![Record::Ask { token, origin, body: req.to_line() }]);
        None
    }

    fn send_to_peers(&self, records: Vec<Record>) {
        if let Some(rep) = self.replication.as_ref() {
            rep.send(records);
        }
    }

    /// A peer's ask: carried out here only while this agent decides.
    pub(super) fn on_ask(&mut self, token: u64, origin: u32, body: &str) {
        if !self.decider.as_ref().is_some_and(|d| d.deciding()) || Some(origin) == self.my_origin() {
            return; // the decider answers; a follower stays silent
        }
        let (tx, rx) = oneshot::channel();
        match Request::parse(body.trim_end()) {
            Ok(req) => {
                if let Some((_, tx)) = self.control_through_log(req, tx) {
                    let why = ControlError::BadRequest("only failover, migrate --from and drain are forwarded".into());
                    let _ = tx.send(Err(why));
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        self.forwarding.carrying.push((token, origin, rx));
    }

    /// The decider's answer to one of this node's asks.
    pub(super) fn on_answer(&mut self, token: u64, origin: u32, ok: bool, body: String) {
        if Some(origin) != self.my_origin() {
            return;
        }
        let Some((_, reply)) = self.forwarding.waiting.remove(&token) else { return };
        let result = if ok {
            serde_json::from_str(&body).map(Reply::Forwarded).map_err(|e| ControlError::Forwarded(e.to_string()))
        } else {
            Err(ControlError::Forwarded(body))
        };
        let _ = reply.send(result);
    }

    /// Sends the replies of peers' asks carried out since the last look,
    /// and tells this node's operators whose ask nobody answered.
    pub(super) fn settle_forwarded(&mut self) {
        let mut answers = Vec::new();
        self.forwarding.carrying.retain_mut(|(token, origin, rx)| match rx.try_recv() {
            Ok(result) => {
                let (ok, body) = match result {
                    Ok(reply) => (true, serde_json::to_string(&reply).unwrap_or_default()),
                    Err(e) => (false, e.to_string()),
                };
                answers.push(Record::Answer { token: *token, origin: *origin, ok, body });
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => false,
        });
        if !answers.is_empty() {
            self.send_to_peers(answers);
        }
        let late: Vec<u64> = self
            .forwarding
            .waiting
            .iter()
            .filter(|(_, (at, _))| at.elapsed() > ANSWER_WITHIN)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            let Some((_, reply)) = self.forwarding.waiting.remove(&token) else { continue };
            let holder = self.decider.as_ref().map(|d| d.holder()).unwrap_or_default();
            let why = format!("{holder}, which did not answer within {} s", ANSWER_WITHIN.as_secs());
            let _ = reply.send(Err(ControlError::NotDecider(why)));
        }
    }
}
