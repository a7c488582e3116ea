//! The full scan of the session tables, on a thread of its own: the batched
//! kernel walk (about a millisecond per 262,144 buckets, plus the entries)
//! never runs on the owner's thread or the async runtime, so no request
//! waits behind it. The owner asks with a generation and gets the scan,
//! tagged with it, through `deliver`: in chunks of up to 4096 sessions as
//! they are read (SESSIONS first, then PENDING), then `Done`, or an error.
//!
//! Neither side ever holds a copy of the tables: at most two chunks are out
//! at a time, and a chunk's buffer comes back to the scanner when the owner
//! drops it (so a scan waits for the owner's merge, never the other way).
//! PENDING, which must be read first (a promotion racing the scan then
//! shows in both tables rather than in neither) but merged last, is held
//! here meanwhile: the LRU's size bounds it.

use std::{
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use proxy_common::{Session, SessionKey};

use super::{batch, tables::SessionTables};

/// Sessions per chunk (one batched read's worth).
const CHUNK: usize = 4096;
/// Chunks out at a time.
const IN_FLIGHT: usize = 2;

type Entries = Vec<(SessionKey, Session)>;

/// One delivery of a scan.
pub enum ScanPart {
    Chunk(Chunk),
    /// Every chunk was delivered.
    Done,
}

/// Sessions of one table; the buffer goes back to the scanner on drop.
pub struct Chunk {
    /// From PENDING (else SESSIONS).
    pub pending: bool,
    entries: Entries,
    home: mpsc::Sender<Entries>,
}

impl Chunk {
    pub fn entries(&self) -> &[(SessionKey, Session)] {
        &self.entries
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let _ = self.home.send(std::mem::take(&mut self.entries));
    }
}

/// The chunk buffers: at most `IN_FLIGHT`, reused from scan to scan.
struct Buffers {
    made: usize,
    home: mpsc::Sender<Entries>,
    back: mpsc::Receiver<Entries>,
}

impl Buffers {
    fn new() -> Self {
        let (home, back) = mpsc::channel();
        Buffers { made: 0, home, back }
    }

    /// A chunk of `entries`, once a buffer is free.
    fn chunk(&mut self, pending: bool, entries: impl Iterator<Item = (SessionKey, Session)>) -> Chunk {
        let mut buf = match self.back.try_recv() {
            Ok(b) => b,
            Err(_) if self.made < IN_FLIGHT => {
                self.made += 1;
                Vec::with_capacity(CHUNK)
            }
            // Never disconnected: `home` is held here.
            Err(_) => self.back.recv().unwrap_or_default(),
        };
        buf.clear();
        buf.extend(entries);
        Chunk { pending, entries: buf, home: self.home.clone() }
    }
}

/// Starts the scanner on the maps pinned in `pin_dir`. Each generation sent
/// is answered through `deliver(generation, part, time taken so far)`: its
/// chunks, then `Done` or an error (the last delivery for it); the thread
/// ends when the sender is dropped.
pub fn spawn(
    pin_dir: &Path,
    deliver: impl Fn(u64, Result<ScanPart, String>, Duration) + Send + 'static,
) -> Result<mpsc::Sender<u64>> {
    let tables = SessionTables::open_pinned(pin_dir)?;
    let (tx, rx) = mpsc::channel::<u64>();
    std::thread::Builder::new().name("session-scan".into()).spawn(move || {
        let mut buffers = Buffers::new();
        let mut pending: Entries = Vec::new();
        for generation in rx {
            let started = Instant::now();
            let send = |part: ScanPart| deliver(generation, Ok(part), started.elapsed());
            let result = scan(&tables, &mut buffers, &mut pending, send);
            let last = result.map(|()| ScanPart::Done).map_err(|e| format!("{e:#}"));
            deliver(generation, last, started.elapsed());
        }
    })?;
    Ok(tx)
}

fn scan(tables: &SessionTables, buffers: &mut Buffers, pending: &mut Entries, send: impl Fn(ScanPart)) -> Result<()> {
    pending.clear();
    batch::dump_each(&tables.pending, |k, v| pending.extend(k.iter().copied().zip(v.iter().copied())))
        .context("reading PENDING")?;
    batch::dump_each(&tables.sessions, |k, v| {
        send(ScanPart::Chunk(buffers.chunk(false, k.iter().copied().zip(v.iter().copied()))));
    })
    .context("reading SESSIONS")?;
    for part in pending.chunks(CHUNK) {
        send(ScanPart::Chunk(buffers.chunk(true, part.iter().copied())));
    }
    // A flood's worth of PENDING is not kept between scans.
    pending.clear();
    pending.shrink_to(CHUNK);
    Ok(())
}
