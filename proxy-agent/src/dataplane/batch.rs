//! Batched hash-map access (BPF_MAP_LOOKUP_BATCH / BPF_MAP_UPDATE_BATCH):
//! one system call for thousands of sessions, where aya 0.14's iterators
//! make two per entry. A migration of many players is one batch update.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
};

use aya::{
    maps::IterableMap,
    // (IterableMap gives every typed map its MapData.)
    Pod,
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Entries fetched per call.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, fully initialised batch attribute whose
    // pointers reference live buffers of the advertised sizes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut BatchAttr, size_of::<BatchAttr>() as u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fd<K: Pod, V>(map: &impl IterableMap<K, V>) -> u32 {
    map.map().fd().as_fd().as_raw_fd() as u32
}

/// Every entry of a hash, LRU hash or array map (arrays: `K` = u32 index).
pub fn dump<K: Pod + Default, V: Pod + Default>(map: &impl IterableMap<K, V>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    dump_each(map, |keys, values| out.extend(keys.iter().copied().zip(values.iter().copied())))?;
    Ok(out)
}

/// Every entry of a hash, LRU hash or array map, handed to `each` as it is
/// read, up to 4096 at a time (keys and values in the same order): the
/// whole map is never held.
pub fn dump_each<K: Pod + Default, V: Pod + Default>(
    map: &impl IterableMap<K, V>,
    mut each: impl FnMut(&[K], &[V]),
) -> io::Result<()> {
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &mut token_in as *mut u64 as u64 },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd(map),
            ..Default::default()
        };
        let done = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        let n = attr.count as usize;
        if n > 0 {
            each(&keys[..n], &values[..n]);
        }
        if done {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}

/// A batch write that stopped part way.
#[derive(Debug)]
pub struct PartialWrite {
    /// Entries written before the failure.
    pub written: usize,
    pub error: io::Error,
}

impl std::fmt::Display for PartialWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch write stopped after {} entries: {}", self.written, self.error)
    }
}

impl std::error::Error for PartialWrite {}

/// Writes many entries with one call per 4096. (The kernel takes no
/// BPF_EXIST for batches: a key that vanished meanwhile is written anew.)
pub fn update<K: Pod, V: Pod>(map: &impl IterableMap<K, V>, entries: &[(K, V)]) -> Result<(), PartialWrite> {
    let mut written = 0;
    for chunk in entries.chunks(CHUNK) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd(map),
            ..Default::default()
        };
        let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        // A failure inside the loop reports in `count` how many were written
        // (always fewer than asked); one refused up front leaves it as sent.
        if result.is_err() && attr.count as usize >= keys.len() {
            attr.count = 0;
        }
        written += attr.count as usize;
        match result {
            Err(error) => return Err(PartialWrite { written, error }),
            Ok(()) if attr.count as usize != keys.len() => {
                let error = io::Error::other(format!("the kernel wrote {} of {} entries", attr.count, keys.len()));
                return Err(PartialWrite { written, error });
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Replaces existing entries, all or nothing: when the write stops part way,
/// the entries already written get `old` (same keys, same order) back.
pub fn update_all_or_nothing<K: Pod, V: Pod>(
    map: &impl IterableMap<K, V>,
    new: &[(K, V)],
    old: &[(K, V)],
) -> anyhow::Result<()> {
    debug_assert_eq!(new.len(), old.len());
    let Err(failed) = update(map, new) else {
        return Ok(());
    };
    let undo = &old[..failed.written.min(old.len())];
    match update(map, undo) {
        Ok(()) => Err(anyhow::anyhow!(
            "entry {} of {} refused ({}); the {} written before it were restored",
            failed.written + 1,
            new.len(),
            failed.error,
            failed.written
        )),
        Err(undo_failed) => Err(anyhow::anyhow!(
            "entry {} of {} refused ({}) and restoring the {} written before it failed too ({}): {} entries keep their new value",
            failed.written + 1,
            new.len(),
            failed.error,
            failed.written,
            undo_failed.error,
            failed.written - undo_failed.written
        )),
    }
}
