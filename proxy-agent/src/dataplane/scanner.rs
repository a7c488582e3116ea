//! The full scan of the session tables, on a thread of its own: the batched
//! kernel walk (about a millisecond per 262,144 buckets, plus the entries)
//! never runs on the owner's thread or the async runtime, so no request
//! waits behind it. The owner asks with a generation and gets the result,
//! tagged with it, through `deliver`.

use std::{
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::tables::{Scan, SessionTables};

/// Starts the scanner on the maps pinned in `pin_dir`. Each generation sent
/// is answered once through `deliver(generation, result, time taken)`; the
/// thread ends when the sender is dropped.
pub fn spawn(
    pin_dir: &Path,
    deliver: impl Fn(u64, Result<Scan, String>, Duration) + Send + 'static,
) -> Result<mpsc::Sender<u64>> {
    let tables = SessionTables::open_pinned(pin_dir)?;
    let (tx, rx) = mpsc::channel::<u64>();
    std::thread::Builder::new().name("session-scan".into()).spawn(move || {
        for generation in rx {
            let started = Instant::now();
            let result = tables.scan().map_err(|e| format!("{e:#}"));
            deliver(generation, result, started.elapsed());
        }
    })?;
    Ok(tx)
}
