//! Session events for the agent: one ring-buffer record per change this
//! program makes to the session tables (a placement, a promotion, a re-sync
//! after a move). Only handshake paths emit them, never the hit path; the
//! ICMP path adds one of its own (`SESSION_SHARD_REFUSED`, no session
//! changed). A full ring drops the record and counts it; the agent's
//! periodic scan repairs its index.

use proxy_common::{Counter, SessionEvent, SessionKey};

use crate::{maps::SESSION_EVENTS, stats};

#[inline(always)]
pub fn session(key: SessionKey, kind: u32, group: u32, epoch: u32) {
    let event = SessionEvent { key, kind, group, epoch, _pad: 0 };
    if SESSION_EVENTS.output::<SessionEvent>(&event, 0).is_err() {
        stats::count(Counter::SessionEventLost);
    }
}
