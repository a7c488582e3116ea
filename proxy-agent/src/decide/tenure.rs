//! "Am I still the decider?", on this agent's own monotonic clock.
//!
//! The database lets another agent take the row once a whole lease has
//! passed since the holder's last renewal, on the database's clock. The
//! holder counts from the moment it *sent* that renewal (which is no later
//! than when the database stamped it), and stops deciding after two thirds
//! of the lease: a third of the lease is left for clocks that run at
//! slightly different rates and for the answer's way back. The same rule as
//! `agones::lease::hold`.

use std::time::{Duration, Instant};

use super::{Result, Round};

/// The in-process half of the decider's lease.
#[derive(Debug, Clone)]
pub struct Tenure {
    lease: Duration,
    /// When the last successful Leading round was sent, and its term.
    renewed: Option<(Instant, u64)>,
}

impl Tenure {
    pub fn new(lease: Duration) -> Self {
        Tenure { lease, renewed: None }
    }

    /// Records the outcome of a round sent at `started`. A failed round
    /// (database down, timeout) changes nothing: the last renewal still
    /// counts until it runs out.
    pub fn record(&mut self, started: Instant, outcome: &Result<Round>) {
        match outcome {
            Ok(Round::Leading { term }) => self.renewed = Some((started, *term)),
            Ok(Round::Following { .. }) => self.renewed = None,
            Err(_) => {}
        }
    }

    /// The term this agent may decide with at `now`; None when it must not
    /// (it follows, never led, or has not renewed for two thirds of the
    /// lease).
    pub fn deciding(&self, now: Instant) -> Option<u64> {
        let (at, term) = self.renewed?;
        (now.saturating_duration_since(at) < self.deadline()).then_some(term)
    }

    /// When this agent stops deciding unless it renews first.
    pub fn stops_at(&self) -> Option<Instant> {
        self.renewed.map(|(at, _)| at + self.deadline())
    }

    /// How long after a renewal was sent this agent stops deciding.
    pub fn deadline(&self) -> Duration {
        self.lease * 2 / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Error;

    fn down() -> Result<Round> {
        Err(Error::Config("stand-in for a database error".into()))
    }

    #[test]
    fn a_leader_decides_until_two_thirds_of_the_lease_without_renewal() {
        let lease = Duration::from_millis(3000);
        let t0 = Instant::now();
        let mut t = Tenure::new(lease);
        assert_eq!(t.deciding(t0), None, "never led");
        t.record(t0, &Ok(Round::Leading { term: 4 }));
        assert_eq!(t.deciding(t0 + Duration::from_millis(1999)), Some(4));
        // The database is down: the old renewal still counts, then runs out.
        t.record(t0 + Duration::from_millis(1000), &down());
        assert_eq!(t.deciding(t0 + Duration::from_millis(1999)), Some(4));
        assert_eq!(t.deciding(t0 + Duration::from_millis(2000)), None, "2/3 of the lease");
        // Back: a renewal counts from when it was sent.
        t.record(t0 + Duration::from_millis(2500), &Ok(Round::Leading { term: 5 }));
        assert_eq!(t.deciding(t0 + Duration::from_millis(4499)), Some(5));
        assert_eq!(t.deciding(t0 + Duration::from_millis(4500)), None);
    }

    #[test]
    fn following_stops_at_once() {
        let t0 = Instant::now();
        let mut t = Tenure::new(Duration::from_secs(2));
        t.record(t0, &Ok(Round::Leading { term: 1 }));
        t.record(t0, &Ok(Round::Following { holder: "b".into(), term: 2 }));
        assert_eq!(t.deciding(t0), None);
        t.record(t0, &down());
        assert_eq!(t.deciding(t0), None, "an error does not make a follower lead");
    }

    #[test]
    fn the_deadline_comes_before_anyone_may_take_over() {
        let lease = Duration::from_millis(2000);
        assert!(Tenure::new(lease).deadline() < lease);
        assert_eq!(Tenure::new(lease).deadline().as_millis(), 1333);
    }
}
