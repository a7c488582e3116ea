//! Stable ids: every frontend and shard keeps the id the pinned maps already
//! give it (a frontend by its address in FRONTENDS, a shard by its address
//! in BACKENDS, its home group in SHARD_STATE), so no session, after a
//! reload or a restart, points anywhere new.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use proxy_common::{net::addr_to_map, FrontendKey, ShardState, MAX_BACKENDS, MAX_FRONTENDS};

use super::{allocate_group, plan, Cluster, ShardIds};

impl Cluster {
    /// Gives every frontend and shard of the config its ids.
    pub(super) fn assign_ids(&mut self) -> Result<()> {
        self.assign_frontend_ids()?;
        let by_addr: HashMap<u32, u32> = self
            .tables
            .read_backends()?
            .into_iter()
            .enumerate()
            .skip(1)
            .filter(|(_, b)| b.addr != 0)
            .map(|(id, b)| (b.addr, id as u32))
            .collect();
        let mut taken: HashSet<u32> = by_addr.values().copied().collect();
        let mut used = self.used_groups();
        let mut ids = Vec::with_capacity(self.cfg.shards.len());
        for i in 0..self.cfg.shards.len() {
            let addr = addr_to_map(self.cfg.shards[i].address.octets());
            let backend = match by_addr.get(&addr) {
                Some(&id) => id,
                None => {
                    let id = (1..MAX_BACKENDS).find(|i| !taken.contains(i)).context("no free backend id")?;
                    taken.insert(id);
                    self.write_shard_state(id, ShardState::default())?;
                    id
                }
            };
            let state = self.shard_state[backend as usize];
            let home_ok = state.home_group != 0 && self.group(state.home_group).backend == backend;
            let home_group = if home_ok {
                state.home_group
            } else {
                let g = allocate_group(&mut used, backend)?;
                self.write_shard_state(backend, ShardState { home_group: g, flags: state.flags })?;
                g
            };
            ids.push(ShardIds { backend, home_group });
        }
        self.ids = ids;
        Ok(())
    }

    fn assign_frontend_ids(&mut self) -> Result<()> {
        let existing: HashMap<FrontendKey, u32> =
            self.tables.frontend_entries()?.into_iter().map(|(k, v)| (k, v.id)).collect();
        let (keys, _) = plan::frontends(&self.cfg, &vec![0; self.cfg.frontends.len()]);
        let mut taken: HashSet<u32> = keys.iter().filter_map(|(k, _)| existing.get(k).copied()).collect();
        self.frontend_ids = keys
            .iter()
            .map(|(k, _)| {
                existing.get(k).copied().unwrap_or_else(|| {
                    let id = (0..MAX_FRONTENDS).find(|i| !taken.contains(i)).expect("validated: at most MAX_FRONTENDS");
                    taken.insert(id);
                    id
                })
            })
            .collect();
        Ok(())
    }
}
