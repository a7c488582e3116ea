//! One decider among the agent replicas: the holder of a coordination.k8s.io
//! Lease. A replica takes the Lease when it is free or its holder stopped
//! renewing it for a whole duration; the holder renews it every third of
//! the duration and stops deciding when it has not managed to for two
//! thirds, before any other replica may take it. Writes carry the
//! resourceVersion they read, so of two replicas racing, one gets 409
//! Conflict and stays a follower.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api};

/// What this replica should do with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it: create it (absent) or take it.
    Take,
    /// Ours: renew it.
    Renew,
    /// Held by a live replica: wait.
    Follow { holder: String },
}

/// The step for a Lease as read at `now` (None: it does not exist).
pub fn step(lease: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> Step {
    let Some(spec) = lease else { return Step::Take };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Step::Renew;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let lasts = spec.lease_duration_seconds.map(|s| Duration::from_secs(s.max(1) as u64)).unwrap_or(duration);
    if holder.is_empty() {
        return Step::Take; // released
    }
    match renewed {
        Some(at) if now < at || now.duration_since(at).unsigned_abs() < lasts => Step::Follow { holder },
        _ => Step::Take,
    }
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    Leading,
    Following { holder: String },
}

/// Reads the Lease and takes, renews or follows it. A 409 means another
/// replica wrote first: this one follows.
pub async fn round(api: &Api<Lease>, name: &str, me: &str, duration: Duration) -> kube::Result<Round> {
    let current = api.get_opt(name).await?;
    let now = Timestamp::now();
    let seconds = duration.as_secs_f64().ceil().max(1.0) as i32;
    let conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
    match step(current.as_ref().and_then(|l| l.spec.as_ref()), me, now, duration) {
        Step::Follow { holder } => Ok(Round::Following { holder }),
        step => {
            let mut lease = current.clone().unwrap_or_else(|| Lease {
                metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
                spec: None,
            });
            let old = lease.spec.take().unwrap_or_default();
            let taking = step == Step::Take;
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(seconds),
                acquire_time: if taking { Some(MicroTime(now)) } else { old.acquire_time.clone() },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(old.lease_transitions.unwrap_or(0) + i32::from(taking && current.is_some())),
                ..old
            });
            let written = match current {
                None => api.create(&PostParams::default(), &lease).await,
                Some(_) => api.replace(name, &PostParams::default(), &lease).await,
            };
            match written {
                Ok(_) => Ok(Round::Leading),
                Err(e) if conflict(&e) => {
                    let holder = api.get_opt(name).await.ok().flatten().and_then(|l| l.spec?.holder_identity);
                    Ok(Round::Following { holder: holder.unwrap_or_default() })
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// The decider's state as the rest of the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub leading: bool,
    pub holder: Option<String>,
    /// The last round's error, if it failed (the API is unreachable).
    pub error: Option<String>,
}

/// Holds or follows the Lease for as long as the agent runs, reporting
/// every change through `report`.
pub async fn hold(api: Api<Lease>, name: String, me: String, duration: Duration, report: impl Fn(Leadership)) {
    let mut last_renewed: Option<Instant> = None;
    let mut last: Option<Leadership> = None;
    loop {
        let started = Instant::now();
        let outcome = tokio::time::timeout(duration / 3, round(&api, &name, &me, duration)).await;
        let now = Leadership { leading: false, holder: last.as_ref().and_then(|l| l.holder.clone()), error: None };
        let now = match outcome {
            Ok(Ok(Round::Leading)) => {
                last_renewed = Some(started);
                Leadership { leading: true, holder: Some(me.clone()), error: None }
            }
            Ok(Ok(Round::Following { holder })) => {
                last_renewed = None;
                Leadership { leading: false, holder: Some(holder), error: None }
            }
            Ok(Err(e)) => lost_touch(now, &mut last_renewed, duration, format!("{e}")),
            Err(_) => lost_touch(now, &mut last_renewed, duration, "the API did not answer in time".into()),
        };
        if last.as_ref() != Some(&now) {
            report(now.clone());
        }
        // The holder renews every third; a follower looks every tenth, so a
        // dead holder is replaced soon after its lease runs out.
        let pause = if now.leading { duration / 3 } else { duration / 10 };
        last = Some(now);
        tokio::time::sleep_until((started + pause).into()).await;
    }
}

/// The API failed: a holder keeps deciding until two thirds of the
/// duration passed since its last renewal (nobody may take the Lease
/// before the whole duration), then stops.
fn lost_touch(
    mut now: Leadership,
    last_renewed: &mut Option<Instant>,
    duration: Duration,
    error: String,
) -> Leadership {
    let still = last_renewed.is_some_and(|at| at.elapsed() < duration * 2 / 3);
    if !still {
        *last_renewed = None;
    }
    now.leading = still;
    now.error = Some(error);
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(5),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_absent_free_or_expired() {
        let now = Timestamp::now();
        let d = Duration::from_secs(5);
        assert_eq!(step(None, "me", now, d), Step::Take);
        assert_eq!(step(Some(&spec("me", now)), "me", now, d), Step::Renew);
        let fresh = spec("other", now - Duration::from_secs(2));
        assert_eq!(step(Some(&fresh), "me", now, d), Step::Follow { holder: "other".into() });
        let stale = spec("other", now - Duration::from_secs(6));
        assert_eq!(step(Some(&stale), "me", now, d), Step::Take);
        assert_eq!(step(Some(&spec("", now)), "me", now, d), Step::Take, "released");
    }
}
