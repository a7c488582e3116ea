//! The agent's end of the `SESSION_EVENTS` ring: the data plane reports every
//! placement, promotion and re-sync it makes, so the agent's session index
//! follows the tables without scanning them. Reading is a walk over shared
//! memory, no system call per event.

use aya::maps::{MapData, RingBuf};
use proxy_common::SessionEvent;

pub struct SessionEvents {
    /// None: no data plane behind it (the owner's tests feed `queued`).
    ring: Option<RingBuf<MapData>>,
    queued: std::collections::VecDeque<SessionEvent>,
}

impl SessionEvents {
    pub fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring: Some(ring), queued: Default::default() }
    }

    /// Events that come from the caller alone, for tests without a kernel.
    pub fn detached() -> Self {
        Self { ring: None, queued: Default::default() }
    }

    /// An event as if the data plane had written it (tests).
    pub fn queue(&mut self, event: SessionEvent) {
        self.queued.push_back(event);
    }

    /// Hands every waiting event to `apply`; returns how many there were.
    /// A record of the wrong size (another program version) is skipped.
    pub fn drain(&mut self, mut apply: impl FnMut(SessionEvent)) -> usize {
        let mut n = 0;
        for event in self.queued.drain(..) {
            apply(event);
            n += 1;
        }
        let Some(ring) = &mut self.ring else { return n };
        while let Some(item) = ring.next() {
            if item.len() == size_of::<SessionEvent>() {
                // SAFETY: the record is exactly one SessionEvent, a plain
                // #[repr(C)] integer struct for which every bit pattern is
                // valid; read_unaligned makes no alignment assumption.
                apply(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SessionEvent>()) });
                n += 1;
            }
        }
        n
    }
}
