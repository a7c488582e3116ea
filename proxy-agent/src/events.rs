//! Every kind of event the agent records, in one enum: the event log, the
//! `events` command, `status`, `samp_proxy_events_total` and the docs'
//! events page all iterate `EventKind::ALL`, so a new kind cannot be
//! missing from any of them.

use serde::{Deserialize, Serialize};

macro_rules! event_kinds {
    ($($variant:ident => $name:literal: $meaning:literal,)*) => {
        /// What happened to a shard, a group of players or the agent.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EventKind {
            $(#[doc = $meaning] $variant,)*
        }

        impl EventKind {
            /// Every kind, in the order the docs and `/metrics` list them.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The name on the wire, in the log and in the metric's `kind` label.
            pub fn name(self) -> &'static str {
                match self { $(EventKind::$variant => $name,)* }
            }

            /// One line on what the event means (the docs' events page).
            pub fn meaning(self) -> &'static str {
                match self { $(EventKind::$variant => $meaning,)* }
            }
        }
    };
}

event_kinds! {
    HealthDown => "health_down": "A shard stopped answering probes (or its GameServer left); its players fail over.",
    HealthUp => "health_up": "A shard that was down answers again; it keeps no old players and takes the `recovered_role`.",
    Failover => "failover": "Every group of a shard moved together to one target (automatic, manual, or the decider's record).",
    FailoverParked => "failover_parked": "A dead shard's players found no room; retried as soon as capacity appears.",
    Migration => "migration": "Players moved by the operator (`migrate`).",
    Transfer => "transfer": "A shard asked for one of its players to move (an area transfer).",
    TransferRefused => "transfer_refused": "An area transfer was refused (the detail says why).",
    Drain => "drain": "A shard was drained: it takes no new players.",
    Undrain => "undrain": "A drained shard takes new players again.",
    LeaseMove => "lease_move": "Account leases followed their players to the new shard.",
    LeaseMoveFailed => "lease_move_failed": "Handing account leases over failed; retried.",
    LeaseMoveGaveUp => "lease_move_gave_up": "Handing account leases over was given up; the leases expire instead.",
    Decider => "decider": "The agent that decides changed: the Agones Lease changed hands, or this agent started or stopped deciding through the coordinator.",
    GameserverUnusable => "gameserver_unusable": "An Allocated GameServer cannot be a shard (the detail names the fix).",
    Grow => "grow": "A shard was allocated from Agones for headroom.",
    GrowFailed => "grow_failed": "An allocation for headroom failed.",
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Lets readers compare a kind with its wire name (`e.kind == "failover"`).
impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_serde() {
        let mut seen = std::collections::BTreeSet::new();
        for k in EventKind::ALL {
            assert!(seen.insert(k.name()), "{} twice", k.name());
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{}\"", k.name()));
            assert!(!k.meaning().is_empty());
        }
    }
}
