//! Direct server return: a game node (`return` role) sees its shards accept
//! players (ID_OPEN_CONNECTION_REPLY) that were placed on an ingress node,
//! and tells the ingress nodes, which promote those pending players to the
//! established table. Admission still rests on the shard's acceptance,
//! which a spoofed source never gets (it never receives the cookie).

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Result;
use proxy_common::{
    net::{addr_to_map, port_to_map},
    SessionEvent, SessionKey,
};

use super::{client_of, Cluster};

/// One accepted player: the client and the address of the shard that
/// accepted it (backend ids differ between nodes; addresses do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub client: SocketAddrV4,
    pub shard: Ipv4Addr,
}

impl Answered {
    /// `client@shard`, the wire form of `/node/answered`.
    pub fn encode(list: &[Answered]) -> String {
        list.iter().map(|a| format!("{}@{}", a.client, a.shard)).collect::<Vec<_>>().join(",")
    }

    pub fn decode(text: &str) -> Result<Vec<Answered>, String> {
        text.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (client, shard) = p.split_once('@').ok_or_else(|| format!("`{p}` is not client@shard"))?;
                Ok(Answered {
                    client: client.parse().map_err(|_| format!("`{client}` is not an IPv4:port"))?,
                    shard: shard.parse().map_err(|_| format!("`{shard}` is not an IPv4"))?,
                })
            })
            .collect()
    }
}

impl Cluster {
    /// The accepted players of these data-plane events, by shard address.
    pub fn answered_players(&self, events: &[SessionEvent]) -> Vec<Answered> {
        events
            .iter()
            .filter_map(|e| {
                let shard = self.shard_by_backend(e.group)?;
                let client = client_of(&e.key);
                Some(Answered { client, shard: self.cfg.shards[shard].address })
            })
            .collect()
    }

    /// Promotes each pending player whose group points at the shard that
    /// accepted it; anything else (unknown, established, another shard's)
    /// is ignored. Returns how many were promoted.
    pub fn promote_answered(&mut self, list: &[Answered]) -> Result<usize> {
        let mut promoted = 0;
        for a in list {
            let Some(shard) = self.cfg.shards.iter().position(|s| s.address == a.shard) else { continue };
            let backend = self.ids[shard].backend;
            for &fe in &self.frontend_ids {
                let key = SessionKey {
                    client_addr: addr_to_map(a.client.ip().octets()),
                    client_port: port_to_map(a.client.port()),
                    frontend: fe as u16,
                };
                let Some(entry) = self.index.get(&key) else { continue };
                let session = entry.session();
                if !entry.pending || self.group(session.group).backend != backend {
                    continue;
                }
                self.tables.promote(&key, session)?;
                self.index.set(key, session, false);
                self.changed_sessions.push(key);
                promoted += 1;
            }
        }
        Ok(promoted)
    }
}
