//! The two loops an agent runs against the coordinator: one holds (or
//! follows) the decider row, one reads the log every `poll_ms` and hands
//! new decisions on. They report through the caller's closures and know
//! nothing of the rest of the agent.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::task::JoinHandle;

use super::{Coordinator, Decision, Error, Result, Round, Tenure};

/// The decider as this agent sees it; reported on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The last round that got an answer (None until one does).
    pub round: Option<Round>,
    /// The term this agent may decide with now (None: it must not).
    pub deciding: Option<u64>,
    /// The last round's error, if it failed.
    pub error: Option<String>,
}

/// The running loops. Clones share them; [`Handle::stop`] ends both.
#[derive(Clone)]
pub struct Handle {
    coord: Coordinator,
    me: String,
    tenure: Arc<Mutex<Tenure>>,
    tasks: Arc<[JoinHandle<()>; 2]>,
}

impl Handle {
    /// The term this agent may decide with at this instant. Ask it right
    /// before deciding: the status callback may lag by one round.
    pub fn deciding(&self) -> Option<u64> {
        self.tenure.lock().expect("tenure lock").deciding(Instant::now())
    }

    /// Appends `d` if this agent is deciding; [`Error::Fenced`] without
    /// asking the database when it is not (its own clock says so first).
    pub async fn decide(&self, d: &Decision) -> Result<u64> {
        match self.deciding() {
            Some(term) => self.coord.append(term, &self.me, d).await,
            None => Err(Error::Fenced { holder: String::new(), term: 0, live: false }),
        }
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.coord
    }

    pub fn stop(&self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Starts both loops on the current tokio runtime: rounds as `me`
/// (reported through `on_status` when the status changes), and the log
/// from after `seq` (every new batch through `on_log`; a failed read
/// through `on_log` too, once per distinct error, and the read is tried
/// again at the same seq: a garbled row stops the log there until it is
/// fixed, as it does on every agent).
pub fn spawn(
    coord: Coordinator,
    me: String,
    seq: u64,
    on_status: impl FnMut(Status) + Send + 'static,
    on_log: impl FnMut(Result<Vec<(u64, Decision)>>) + Send + 'static,
) -> Handle {
    let tenure = Arc::new(Mutex::new(Tenure::new(coord.lease())));
    let hold = tokio::spawn(hold(coord.clone(), me.clone(), tenure.clone(), on_status));
    let follow = tokio::spawn(follow(coord.clone(), seq, on_log));
    Handle { coord, me, tenure, tasks: Arc::new([hold, follow]) }
}

async fn hold(coord: Coordinator, me: String, tenure: Arc<Mutex<Tenure>>, mut report: impl FnMut(Status)) {
    let lease = coord.lease();
    let mut last: Option<Status> = None;
    let mut round: Option<Round> = None;
    let mut tell = |now: Status| {
        if last.as_ref() != Some(&now) {
            report(now.clone());
            last = Some(now);
        }
    };
    loop {
        let started = Instant::now();
        let call = coord.round(&me);
        tokio::pin!(call);
        // A round may take a third of the lease; when the 2/3 mark passes
        // meanwhile, say so then, not when the round gives up.
        let mut stops_at = tenure.lock().expect("tenure lock").stops_at();
        let outcome = loop {
            tokio::select! {
                outcome = &mut call => break outcome,
                _ = tokio::time::sleep_until(stops_at.unwrap_or(started).into()), if stops_at.is_some() => {
                    stops_at = None;
                    let error = Some("no renewal for 2/3 of the lease: not deciding".to_string());
                    tell(Status { round: round.clone(), deciding: None, error });
                }
            }
        };
        let (deciding, stops_at) = {
            let mut t = tenure.lock().expect("tenure lock");
            t.record(started, &outcome);
            (t.deciding(Instant::now()), t.stops_at())
        };
        let error = match outcome {
            Ok(r) => {
                round = Some(r);
                None
            }
            Err(e) => Some(e.to_string()),
        };
        // The holder renews every third of the lease; a follower looks
        // every tenth, so a dead holder is replaced soon after it expires.
        let pause = if deciding.is_some() { lease / 3 } else { lease / 10 };
        let mut next = started + pause;
        // Wake at the 2/3 mark too, so losing the right is reported then.
        if let Some(at) = stops_at.filter(|_| deciding.is_some()) {
            next = next.min(at);
        }
        tell(Status { round: round.clone(), deciding, error });
        tokio::time::sleep_until(next.into()).await;
    }
}

async fn follow(coord: Coordinator, mut seq: u64, mut report: impl FnMut(Result<Vec<(u64, Decision)>>)) {
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(coord.poll());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Drain a backlog at once, a batch at a time.
        loop {
            match coord.since(seq, 1000).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    last_error = None;
                    seq = batch.last().map_or(seq, |(s, _)| *s);
                    report(Ok(batch));
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        last_error = Some(text);
                        report(Err(e));
                    }
                    break;
                }
            }
        }
    }
}
