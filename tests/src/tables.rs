//! Helpers that write the data plane's tables behind the agent's back.

use proxy_agent::{batch, tables::Tables};
use proxy_common::{Session, SessionKey, MAX_SESSIONS};

/// The frontend id of filler sessions (no configured frontend has it).
pub const FILLER_FRONTEND: u16 = 9;

/// Fills SESSIONS to the last slot with filler sessions, so the next new key
/// written fails (E2BIG): how a batch write is made to fail part way.
pub fn fill_up(tables: &Tables) {
    let filler: Vec<(SessionKey, Session)> = (0..MAX_SESSIONS)
        .map(|i| (SessionKey { client_addr: i, client_port: 1, frontend: FILLER_FRONTEND }, Session::default()))
        .collect();
    let err = batch::update(&tables.sessions, &filler).unwrap_err();
    assert_eq!(err.error.raw_os_error(), Some(libc::E2BIG), "the table filled up: {err}");
}
