//! What happened, for `proxy-agent events` and the metrics: a bounded ring
//! of events and, since the ring forgets, a total per kind.

use std::collections::{BTreeMap, VecDeque};

use crate::{control::views::Event, events::EventKind};

/// Events kept for `proxy-agent events`.
const MAX_EVENTS: usize = 1000;

#[derive(Debug, Default)]
pub struct EventLog {
    ring: VecDeque<Event>,
    totals: BTreeMap<EventKind, u64>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl EventLog {
    /// Records and logs an event.
    pub fn record(
        &mut self,
        kind: EventKind,
        shard: &str,
        target: Option<&str>,
        groups: Vec<u32>,
        players: usize,
        detail: String,
    ) {
        *self.totals.entry(kind).or_default() += 1;
        let e = Event {
            at_ms: unix_ms(),
            kind,
            shard: shard.into(),
            target: target.map(Into::into),
            groups,
            players,
            detail,
        };
        log::info!(
            "event {}: shard {} {}{}",
            e.kind,
            e.shard,
            e.target.as_deref().map(|t| format!("-> {t} ")).unwrap_or_default(),
            e.detail
        );
        if self.ring.len() == MAX_EVENTS {
            self.ring.pop_front();
        }
        self.ring.push_back(e);
    }

    /// The kept events, oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.ring.iter().cloned().collect()
    }

    /// Every kind's total, zeros included, by wire name.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        EventKind::ALL.iter().map(|k| (k.name().to_string(), self.totals.get(k).copied().unwrap_or(0))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_logged_and_totalled_and_the_totals_list_every_kind() {
        let mut log = EventLog::default();
        assert_eq!(log.totals().len(), EventKind::ALL.len(), "status lists every kind, zeros too");
        for &kind in EventKind::ALL {
            log.record(kind, "s1", None, vec![], 0, "test".into());
        }
        let kinds: Vec<EventKind> = log.list().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, EventKind::ALL);
        for k in EventKind::ALL {
            assert_eq!(log.totals()[k.name()], 1, "{k}");
        }
    }
}
