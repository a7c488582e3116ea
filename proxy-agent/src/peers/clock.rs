//! Stamps for records: a hybrid logical clock. Wall time in nanoseconds,
//! but never at or below the last stamp this node made or merged, so a
//! node's own changes are ordered even if its clock steps back, and a
//! change made after hearing a peer's wins over it even with skewed clocks.

use super::record::Stamp;

#[derive(Debug)]
pub struct Clock {
    origin: u32,
    last: u64,
}

impl Clock {
    pub fn new(origin: u32) -> Clock {
        Clock { origin, last: 0 }
    }

    pub fn origin(&self) -> u32 {
        self.origin
    }

    /// A stamp newer than any made or merged so far.
    pub fn now(&mut self) -> Stamp {
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        self.last = wall.max(self.last + 1);
        Stamp { time: self.last, origin: self.origin }
    }

    /// Takes a peer's stamp into account (so the next `now` is later).
    pub fn merge(&mut self, seen: Stamp) {
        self.last = self.last.max(seen.time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_rise_past_what_was_heard() {
        let mut c = Clock::new(1);
        let a = c.now();
        let b = c.now();
        assert!(b > a);
        let future = Stamp { time: b.time + 1_000_000_000_000, origin: 2 };
        c.merge(future);
        assert!(c.now() > future, "a change made after hearing a peer wins over it");
    }
}
