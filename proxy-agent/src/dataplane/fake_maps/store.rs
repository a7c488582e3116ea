//! The kernel's map semantics the fakes follow: array slots, hash entries
//! with a capacity, and the session tables' order.

use std::{collections::HashMap, hash::Hash};

use anyhow::{anyhow, bail, Result};
use proxy_common::{
    net::{addr_from_map, port_from_map},
    Session, SessionKey,
};

/// One array slot, as the kernel's array update: past the end is E2BIG.
pub(super) fn set<T>(array: &mut [T], name: &str, index: u32, value: T) -> Result<()> {
    let len = array.len();
    let slot = array
        .get_mut(index as usize)
        .ok_or_else(|| anyhow!("{name} has {len} entries, index {index} is past the end (E2BIG)"))?;
    *slot = value;
    Ok(())
}

/// One hash entry, as the kernel's hash update with BPF_ANY: a new key in a
/// full map is E2BIG.
pub(super) fn insert<K: Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    name: &str,
    capacity: u32,
    key: K,
    value: V,
) -> Result<()> {
    if !map.contains_key(&key) && map.len() >= capacity as usize {
        bail!("{name} is full ({capacity} entries) (E2BIG)");
    }
    map.insert(key, value);
    Ok(())
}

pub(super) fn remove<K: Hash + Eq, V>(map: &mut HashMap<K, V>, name: &str, key: &K) -> Result<()> {
    map.remove(key).map(|_| ()).ok_or_else(|| anyhow!("{name} has no such key (ENOENT)"))
}

pub(super) fn session_order(k: &SessionKey) -> (u16, u32, u16) {
    (k.frontend, u32::from_be_bytes(addr_from_map(k.client_addr)), port_from_map(k.client_port))
}

pub(super) fn sorted_sessions(map: &HashMap<SessionKey, Session>) -> Vec<(SessionKey, Session)> {
    let mut all: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
    all.sort_unstable_by_key(|(k, _)| session_order(k));
    all
}
