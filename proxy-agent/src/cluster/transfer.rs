//! Area transfers: a shard asks for one of its players to be moved to
//! another shard (the player crossed the city limits). The move is the same
//! silent re-routing as `migrate`; what is added is who may ask.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{ClientSelector, Cluster};
use crate::control::{error::ControlError, views::MoveReport};

/// An area transfer request: who asked (the TCP peer), for whom, to where.
#[derive(Debug, Clone)]
pub struct TransferAsk {
    pub requester: Ipv4Addr,
    pub client: SocketAddrV4,
    pub to: String,
}

impl Cluster {
    /// Moves `client` to shard `to` for the shard at `requester`, which must
    /// hold the client: every session of that client address is established
    /// on a shard at `requester` and not moving. Checked in full before
    /// anything is written, like every move. Returns the holder's name too.
    pub fn transfer(
        &mut self,
        requester: Ipv4Addr,
        client: SocketAddrV4,
        to: &str,
    ) -> Result<(String, MoveReport), ControlError> {
        let mine: Vec<usize> =
            (0..self.cfg.shards.len()).filter(|&i| self.cfg.shards[i].address == requester).collect();
        if mine.is_empty() {
            return Err(ControlError::NotAShard(requester.to_string()));
        }
        let selector = ClientSelector { ip: *client.ip(), port: Some(client.port()) };
        let sessions = self.sessions_of(&[selector])?;
        let mut holder = None;
        for (_, s, pending) in &sessions {
            let g = self.group(s.group);
            let held_by =
                self.shard_by_backend(g.backend).filter(|h| !pending && g.epoch == s.epoch && mine.contains(h));
            match held_by {
                Some(h) => holder = Some(h),
                None => {
                    let names: Vec<&str> = mine.iter().map(|&i| self.cfg.shards[i].name.as_str()).collect();
                    return Err(ControlError::NotYourPlayer { client: client.to_string(), shard: names.join("`, `") });
                }
            }
        }
        let from = self.cfg.shards[holder.ok_or_else(|| ControlError::NoSession(client.to_string()))?].name.clone();
        if from == to {
            return Err(ControlError::SameShard(from));
        }
        let report = self.migrate_clients(&[selector], to)?;
        Ok((from, report))
    }
}
