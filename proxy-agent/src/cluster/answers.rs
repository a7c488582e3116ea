//! The cluster's answers to the server browser, as one server: built from
//! the config (hostname, gamemode, language, password, rules) and from what
//! the healthy shards report, then written into `QUERY_ANSWERS` for the data
//! plane to send. Rebuilt after every health round and reload; a slot is
//! written only when its bytes change.

use std::collections::BTreeMap;

use anyhow::Result;
use proxy_common::{
    csum, samp::QUERY_HEADER_LEN, QueryAnswer, QuerySettings, QuerySlot, MAX_QUERY_ANSWER, QUERY_BY_AGENT, QUERY_SLOTS,
};

use super::{Cluster, Loads};
use crate::config::Role;
use crate::health::answers::DetailRow;

/// One frontend's answers by `QuerySlot` index (`None` = no answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendAnswers {
    pub address: std::net::SocketAddrV4,
    pub bodies: [Option<Vec<u8>>; 5],
}

/// open.mp answers `c` only up to this many players, and stays silent above.
pub const MAX_LISTED_CLIENTS: usize = 100;

fn push_str32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The cluster's `d`, when every healthy shard answered one (SA:MP 0.3.7
/// shards; open.mp answers none, and then neither does the cluster): the
/// rows of all shards, listed like `c` (up to `MAX_LISTED_CLIENTS`), with
/// the player ids renumbered 0.. so that no two shards' ids collide.
fn merged_detail(details: &[Option<&Vec<DetailRow>>], players: usize) -> Option<Vec<u8>> {
    if details.is_empty() || details.iter().any(Option::is_none) {
        return None;
    }
    let rows: Vec<&DetailRow> = details.iter().flatten().flat_map(|d| d.iter()).collect();
    if players > MAX_LISTED_CLIENTS || rows.len() > MAX_LISTED_CLIENTS {
        return None;
    }
    let mut d = (rows.len() as u16).to_le_bytes().to_vec();
    for (id, row) in rows.iter().enumerate() {
        d.push(id as u8);
        push_str8(&mut d, &row.name);
        d.extend_from_slice(&row.score.to_le_bytes());
        d.extend_from_slice(&row.ping.to_le_bytes());
    }
    Some(d)
}

fn push_str8(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// A body as the data plane stores it, with the sum it finishes the UDP
/// checksum from (header bytes counted as zeros, body after them).
pub fn stored(body: Option<&[u8]>) -> QueryAnswer {
    let mut a = QueryAnswer::default();
    let Some(body) = body else { return a };
    if body.len() > MAX_QUERY_ANSWER {
        a.len = body.len() as u32;
        a.flags = QUERY_BY_AGENT;
        return a;
    }
    let mut payload = vec![0u8; QUERY_HEADER_LEN];
    payload.extend_from_slice(body);
    a.len = body.len() as u32;
    a.body[..body.len()].copy_from_slice(body);
    a.body_sum = csum::sum_be(&payload, 0);
    a
}

impl Cluster {
    /// Every frontend's answers as the cluster stands now.
    pub fn build_answers(&self) -> Vec<[Option<Vec<u8>>; 5]> {
        let loads = self.loads();
        (0..self.cfg.frontends.len()).map(|fe| self.frontend_answers(fe, &loads)).collect()
    }

    fn frontend_answers(&self, fe: usize, loads: &Loads) -> [Option<Vec<u8>>; 5] {
        let q = &self.cfg.frontends[fe].query;
        let healthy: Vec<usize> =
            (0..self.cfg.shards.len()).filter(|&i| self.cfg.shards[i].frontend == fe && self.is_up(i)).collect();
        let health = |i: usize| self.health.get(&self.cfg.shards[i].name);
        // Players: what each shard reports (its own count), else its sessions.
        let players: usize = healthy
            .iter()
            .map(|&i| health(i).and_then(|h| h.players).map(usize::from).unwrap_or_else(|| self.players_on(i, loads)))
            .sum();
        // Slots: each shard's own room (capped by its max_players), but a
        // standby that holds no group has none for newcomers (as placement).
        let slots: usize = healthy
            .iter()
            .filter(|&&i| self.role(i) != Role::Standby || self.holds_foreign_group(i))
            .map(|&i| {
                let cap = self.cfg.shards[i].capacity as usize;
                health(i).and_then(|h| h.max_players).filter(|&m| m > 0).map_or(cap, |m| cap.min(m as usize))
            })
            .sum();
        let mut info = vec![q.password as u8];
        info.extend_from_slice(&(players.min(u16::MAX as usize) as u16).to_le_bytes());
        info.extend_from_slice(&(slots.min(u16::MAX as usize) as u16).to_le_bytes());
        for s in [&q.hostname, &q.gamemode, &q.language] {
            push_str32(&mut info, s);
        }

        let mut rules: BTreeMap<String, String> = q.rules.clone();
        rules.insert("proxy".into(), format!("samp-cluster-proxy {}", env!("CARGO_PKG_VERSION")));
        let versions: Vec<Option<&String>> = healthy
            .iter()
            .filter_map(|&i| health(i).and_then(|h| h.answers.rules.as_ref()))
            .map(|r| r.iter().find(|(k, _)| k == "version").map(|(_, v)| v))
            .collect();
        if let Some(Some(first)) = versions.first() {
            if versions.iter().all(|v| *v == Some(*first)) {
                rules.insert("version".into(), (*first).clone());
            }
        }
        let mut r = (rules.len() as u16).to_le_bytes().to_vec();
        for (k, v) in &rules {
            push_str8(&mut r, k);
            push_str8(&mut r, v);
        }

        let listed: Vec<&(String, i32)> =
            healthy.iter().filter_map(|&i| health(i).and_then(|h| h.answers.clients.as_ref())).flatten().collect();
        let clients = (players <= MAX_LISTED_CLIENTS && listed.len() <= MAX_LISTED_CLIENTS).then(|| {
            let mut c = (listed.len() as u16).to_le_bytes().to_vec();
            for (name, score) in listed {
                push_str8(&mut c, name);
                c.extend_from_slice(&score.to_le_bytes());
            }
            c
        });

        let openmp: Vec<Option<&Vec<u8>>> =
            healthy.iter().map(|&i| health(i).and_then(|h| h.answers.openmp.as_ref())).collect();
        let openmp = match openmp.first() {
            Some(Some(first)) if openmp.iter().all(|o| *o == Some(*first)) => Some((*first).clone()),
            _ => None,
        };
        let details: Vec<Option<&Vec<DetailRow>>> =
            healthy.iter().map(|&i| health(i).and_then(|h| h.answers.detail.as_ref())).collect();
        [Some(info), Some(r), clients, merged_detail(&details, players), openmp]
    }

    /// Where the agent's query responder listens (an address of this node),
    /// for answers the data plane cannot send itself.
    pub fn set_responder(&mut self, addr: Option<std::net::Ipv4Addr>) -> Result<()> {
        self.responder = addr;
        self.write_answers()
    }

    /// Every frontend's address with the answers last written for the data
    /// plane, so the responder says exactly what the kernel says.
    pub fn answers_by_address(&self) -> Vec<FrontendAnswers> {
        self.cfg
            .frontends
            .iter()
            .zip(&self.frontend_ids)
            .map(|(f, &id)| FrontendAnswers {
                address: f.address,
                bodies: QuerySlot::ALL
                    .map(|slot| self.written_answers.get(&(id * QUERY_SLOTS + slot as u32)).cloned().flatten()),
            })
            .collect()
    }

    /// Writes the answers that changed, and the per-source budget.
    pub fn write_answers(&mut self) -> Result<()> {
        let all = self.build_answers();
        for (fe, answers) in all.into_iter().enumerate() {
            let id = self.frontend_ids[fe];
            for (slot, body) in QuerySlot::ALL.into_iter().zip(answers) {
                let index = id * QUERY_SLOTS + slot as u32;
                if self.written_answers.get(&index) == Some(&body) {
                    continue;
                }
                self.tables.write_query_answer(index, &stored(body.as_deref()))?;
                self.written_answers.insert(index, body);
            }
        }
        let agent_addr = self.responder.map(|a| proxy_common::net::addr_to_map(a.octets())).unwrap_or(0);
        let limit = QuerySettings { per_second: self.cfg.raw.query_budget_per_second, agent_addr };
        if self.written_settings == Some(limit) {
            return Ok(());
        }
        self.tables.write_query_settings(limit)?;
        self.written_settings = Some(limit);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_body_sums_as_if_it_followed_the_header() {
        let body = [7u8, 1, 2, 3, 4];
        let a = stored(Some(&body));
        let header = *b"SAMP\x01\x02\x03\x04\x61\x1ei";
        let mut whole = header.to_vec();
        whole.extend_from_slice(&body);
        // The data plane adds the header's words to body_sum: header words
        // 0..5 and byte 10 as the high half of word 5.
        let mut sum = a.body_sum;
        sum = csum::sum_be(&header, sum);
        assert_eq!(csum::finish_be(sum), csum::finish_be(csum::sum_be(&whole, 0)));
        assert_eq!(stored(None).len, 0);
        assert_eq!(stored(Some(&vec![0; MAX_QUERY_ANSWER + 1])).flags, QUERY_BY_AGENT);
    }
}
