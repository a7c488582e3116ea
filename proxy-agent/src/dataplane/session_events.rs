//! The agent's end of the `SESSION_EVENTS` ring: the data plane reports every
//! placement, promotion and re-sync it makes, so the agent's session index
//! follows the tables without scanning them. Reading is a walk over shared
//! memory, no system call per event.

use aya::maps::{MapData, RingBuf};
use proxy_common::SessionEvent;

pub struct SessionEvents {
    ring: RingBuf<MapData>,
}

impl SessionEvents {
    pub fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Hands every waiting event to `apply`; returns how many there were.
    /// A record of the wrong size (another program version) is skipped.
    pub fn drain(&mut self, mut apply: impl FnMut(SessionEvent)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
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
