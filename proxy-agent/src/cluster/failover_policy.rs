//! The failover policy: where a dead shard's players go, as a typed
//! decision and nothing else. Plain data in, a decision out, no I/O: the
//! owner applies it (maps, events, leases, allocations) and records it,
//! for listed and Agones shards alike. It is the one decision several
//! ingress nodes must share, so it depends on nothing but its inputs.

use std::time::Duration;

/// A shard that could take the players, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    /// Up, not drained, on the dead shard's frontend, not the dead shard.
    pub eligible: bool,
    pub standby: bool,
    /// No players and no group of another shard: a standby that took a
    /// group already serves players like an active shard.
    pub empty: bool,
    pub free: usize,
}

/// Why the players go where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An empty shard listed as `role: standby` with room for all of them.
    ListedStandby,
    /// The active shard with the most free slots (lowest index on a tie).
    RoomiestActive,
    /// A GameServer allocated for them.
    FreshGameServer,
    /// The decider's record on a GameServer says so.
    DecidersRecord,
}

impl Reason {
    /// How the event log names the path taken.
    pub fn describe(&self) -> &'static str {
        match self {
            Reason::ListedStandby => "a listed standby",
            Reason::RoomiestActive => "the roomiest active shard",
            Reason::FreshGameServer => "a fresh GameServer",
            Reason::DecidersRecord => "the decider's record",
        }
    }
}

/// Why the players wait where they are (parked, retried every round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParkReason {
    /// No shard has room for every one of them.
    NoRoom { roomiest: usize },
    /// This replica asked Agones for a fresh shard (or asked a moment ago).
    AwaitingAllocation,
    /// Another replica decides; its record has not come yet.
    AwaitingDecider,
}

/// What becomes of a dead shard's players.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverDecision {
    /// Nothing to do: no players, or this node only follows the decisions.
    Nothing,
    /// Every group of the dead shard moves to `target` now.
    Move {
        target: usize,
        reason: Reason,
    },
    /// Ask Agones for a fresh shard; the players are parked until it answers.
    Allocate,
    Park(ParkReason),
}

/// The Agones side of a dead shard of an Agones frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgonesSituation {
    /// This replica holds the Lease: it decides.
    pub leading: bool,
    /// How long this replica (not the decider) has waited for a record.
    pub waited: Duration,
    /// How long a follower waits for the decider before its own rule.
    pub patience: Duration,
    /// An allocation for this shard is in flight or was asked a moment ago.
    pub allocation_pending: bool,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub players: usize,
    /// A game node (`role: return`) only follows the ingress nodes' moves.
    pub follower_only: bool,
    /// Set for a shard of an Agones frontend.
    pub agones: Option<AgonesSituation>,
    pub candidates: &'a [Candidate],
}

/// The rule without a fresh shard: an empty listed standby with room for
/// all of them, else the roomiest active shard with room for all of them.
pub fn pick_target(players: usize, candidates: &[Candidate]) -> Result<(usize, Reason), ParkReason> {
    let eligible = || candidates.iter().filter(|c| c.eligible);
    if let Some(s) = eligible().find(|c| c.standby && c.empty && c.free >= players) {
        return Ok((s.index, Reason::ListedStandby));
    }
    eligible()
        .filter(|c| (!c.standby || !c.empty) && c.free >= players)
        .max_by_key(|c| (c.free, std::cmp::Reverse(c.index)))
        .map(|c| (c.index, Reason::RoomiestActive))
        .ok_or(ParkReason::NoRoom { roomiest: eligible().map(|c| c.free).max().unwrap_or(0) })
}

/// Decides what becomes of a dead shard's players.
pub fn decide(s: &Situation<'_>) -> FailoverDecision {
    if s.players == 0 || s.follower_only {
        return FailoverDecision::Nothing;
    }
    match s.agones {
        Some(a) if a.leading && a.allocation_pending => FailoverDecision::Park(ParkReason::AwaitingAllocation),
        Some(a) if a.leading => FailoverDecision::Allocate,
        Some(a) if a.waited < a.patience => FailoverDecision::Park(ParkReason::AwaitingDecider),
        // No decider decided in time (none is reachable): this replica's
        // own rule, as without Agones.
        _ => by_rule(s.players, s.candidates),
    }
}

/// What an allocation's answer means for the players still waiting:
/// `fresh` is the allocated shard when it can be one.
pub fn after_allocation(players: usize, fresh: Option<usize>, candidates: &[Candidate]) -> FailoverDecision {
    match (players, fresh) {
        (0, _) => FailoverDecision::Nothing,
        (_, Some(target)) => FailoverDecision::Move { target, reason: Reason::FreshGameServer },
        (_, None) => by_rule(players, candidates),
    }
}

fn by_rule(players: usize, candidates: &[Candidate]) -> FailoverDecision {
    match pick_target(players, candidates) {
        Ok((target, reason)) => FailoverDecision::Move { target, reason },
        Err(why) => FailoverDecision::Park(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(index: usize, standby: bool, empty: bool, free: usize) -> Candidate {
        Candidate { index, eligible: true, standby, empty, free }
    }

    fn listed(players: usize, candidates: &[Candidate]) -> FailoverDecision {
        decide(&Situation { players, follower_only: false, agones: None, candidates })
    }

    fn agones(leading: bool, waited_ms: u64, pending: bool) -> Option<AgonesSituation> {
        Some(AgonesSituation {
            leading,
            waited: Duration::from_millis(waited_ms),
            patience: Duration::from_millis(3000),
            allocation_pending: pending,
        })
    }

    #[test]
    fn an_empty_listed_standby_wins_over_roomier_actives() {
        let c = [shard(1, false, false, 90), shard(2, true, true, 50)];
        assert_eq!(listed(40, &c), FailoverDecision::Move { target: 2, reason: Reason::ListedStandby });
    }

    #[test]
    fn without_a_standby_the_roomiest_active_takes_them_lowest_index_on_a_tie() {
        let c = [shard(1, false, false, 30), shard(2, false, false, 60), shard(3, false, false, 60)];
        assert_eq!(listed(20, &c), FailoverDecision::Move { target: 2, reason: Reason::RoomiestActive });
    }

    #[test]
    fn a_standby_that_already_serves_a_group_counts_as_active() {
        let c = [shard(1, true, false, 70), shard(2, false, false, 60)];
        assert_eq!(listed(20, &c), FailoverDecision::Move { target: 1, reason: Reason::RoomiestActive });
    }

    #[test]
    fn a_group_is_never_split_no_shard_with_room_for_all_parks() {
        let c = [shard(1, false, false, 30), shard(2, true, true, 10)];
        assert_eq!(listed(31, &c), FailoverDecision::Park(ParkReason::NoRoom { roomiest: 30 }));
    }

    #[test]
    fn ineligible_shards_are_never_targets() {
        let mut down = shard(1, true, true, 100);
        down.eligible = false;
        assert_eq!(listed(5, &[down]), FailoverDecision::Park(ParkReason::NoRoom { roomiest: 0 }));
    }

    #[test]
    fn no_players_or_a_game_node_decide_nothing() {
        let c = [shard(1, false, false, 30)];
        assert_eq!(listed(0, &c), FailoverDecision::Nothing);
        let s = Situation { players: 5, follower_only: true, agones: None, candidates: &c };
        assert_eq!(decide(&s), FailoverDecision::Nothing);
    }

    #[test]
    fn the_decider_allocates_once_and_waits_for_the_answer() {
        let c = [shard(1, false, false, 30)];
        let s =
            |pending| Situation { players: 5, follower_only: false, agones: agones(true, 0, pending), candidates: &c };
        assert_eq!(decide(&s(false)), FailoverDecision::Allocate);
        assert_eq!(decide(&s(true)), FailoverDecision::Park(ParkReason::AwaitingAllocation));
    }

    #[test]
    fn a_follower_waits_for_the_decider_then_uses_its_own_rule() {
        let c = [shard(1, false, false, 30)];
        let s = |waited| Situation {
            players: 5,
            follower_only: false,
            agones: agones(false, waited, false),
            candidates: &c,
        };
        assert_eq!(decide(&s(2999)), FailoverDecision::Park(ParkReason::AwaitingDecider));
        assert_eq!(decide(&s(3000)), FailoverDecision::Move { target: 1, reason: Reason::RoomiestActive });
    }

    #[test]
    fn an_allocation_answered_moves_there_refused_or_late_falls_back_to_the_rule() {
        let c = [shard(1, true, true, 30)];
        assert_eq!(
            after_allocation(5, Some(7), &c),
            FailoverDecision::Move { target: 7, reason: Reason::FreshGameServer }
        );
        assert_eq!(after_allocation(5, None, &c), FailoverDecision::Move { target: 1, reason: Reason::ListedStandby });
        assert_eq!(after_allocation(50, None, &c), FailoverDecision::Park(ParkReason::NoRoom { roomiest: 30 }));
        // Late: the players moved meanwhile (or the shard came back).
        assert_eq!(after_allocation(0, Some(7), &c), FailoverDecision::Nothing);
    }
}
