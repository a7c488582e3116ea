//! The operator's requests (the control socket) and the shards' own
//! (area transfers): each refused request changes no map; each done one
//! is an event, and the account leases follow the players it moved.

use super::{scan_interval, Owner};
use crate::{
    cluster::{ClientSelector, TransferAsk},
    config,
    control::{
        error::ControlError,
        protocol::Request,
        views::{DrainView, MoveReport, ReloadView, Reply},
        ControlReply,
    },
    events::EventKind,
    leases::mover::LeaseMove,
};

impl Owner {
    /// Carries out one control request. A refused request changed no map.
    pub(super) fn control(&mut self, req: Request) -> ControlReply {
        match req {
            Request::Status => Ok(Reply::Status(Box::new(self.status()?))),
            Request::Shards => {
                let loads = self.cluster.loads();
                Ok(Reply::Shards(self.cluster.shard_views(&loads, |name| self.parked.iter().any(|p| p == name))?))
            }
            Request::Sessions { shard, client } => {
                let client = client.as_deref().map(str::parse::<ClientSelector>).transpose()?;
                Ok(Reply::Sessions(self.cluster.sessions(shard.as_deref(), client.as_ref())?))
            }
            Request::Migrate { clients, from, to } => self.migrate(clients, from, to).map(Reply::Moved),
            Request::Drain { shard } => self.drain(&shard, true).map(Reply::Drain),
            Request::Undrain { shard } => self.drain(&shard, false).map(Reply::Drain),
            Request::Reload => {
                let result = self.reload();
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(ControlError::ReloadRolledBack(_)) => "rolled_back",
                    Err(_) => "refused",
                };
                *self.reloads.entry(outcome.into()).or_default() += 1;
                result.map(|changes| Reply::Reload(ReloadView { changes }))
            }
            Request::Events => Ok(Reply::Events(self.events.list())),
            Request::Failover { shard, to } => {
                let from = self.cluster.shard(&shard)?;
                let to = to.as_deref().map(|t| self.cluster.shard(t)).transpose()?;
                let report = self.cluster.failover(from, to)?;
                let players = report.moved;
                self.events.record(
                    EventKind::Failover,
                    &shard,
                    Some(&report.to),
                    report.groups.clone(),
                    players,
                    format!("manual: {players} players moving together to {}", report.to),
                );
                self.leases_follow_shard(&shard, &report.to);
                Ok(Reply::Moved(report))
            }
        }
    }

    pub(super) fn migrate(
        &mut self,
        clients: Vec<String>,
        from: Option<String>,
        to: String,
    ) -> Result<MoveReport, ControlError> {
        let from_label = from.clone().unwrap_or_else(|| format!("clients {}", clients.join(" ")));
        let whole_shard = from.is_some();
        let report = match (clients.is_empty(), from) {
            (false, None) => {
                let sel = clients.iter().map(|c| c.parse::<ClientSelector>()).collect::<Result<Vec<_>, _>>()?;
                self.cluster.migrate_clients(&sel, &to)?
            }
            (true, Some(from)) => self.cluster.migrate_shard(&from, &to)?,
            (false, Some(_)) => return Err(ControlError::ClientsAndFrom),
            (true, None) => return Err(ControlError::NoPlayersNamed),
        };
        let what = format!("{} players moving to {} ({} already there)", report.moved, report.to, report.already_there);
        self.events.record(
            EventKind::Migration,
            &from_label,
            Some(&report.to),
            report.groups.clone(),
            report.moved,
            what,
        );
        if whole_shard {
            self.leases_follow_shard(&from_label, &report.to);
        } else {
            self.leases_follow_clients(&report);
        }
        Ok(report)
    }

    /// The leases of a whole shard's players go where its groups went.
    pub(super) fn leases_follow_shard(&self, from: &str, to: &str) {
        if let Some(mover) = &self.links.leases {
            mover.send(LeaseMove::Shard { from: from.into(), to: to.into() });
        }
    }

    /// The leases of chosen players go with them.
    pub(super) fn leases_follow_clients(&self, report: &MoveReport) {
        if let Some(mover) = &self.links.leases {
            for (from, clients) in &report.clients_from {
                mover.send(LeaseMove::Clients { from: from.clone(), clients: clients.clone(), to: report.to.clone() });
            }
        }
    }

    /// An area transfer, recorded as an event whether it moved or not.
    pub(super) fn transfer(&mut self, ask: TransferAsk) -> Result<(String, MoveReport), ControlError> {
        let result = self.cluster.transfer(ask.requester, ask.client, &ask.to);
        match &result {
            Ok((from, report)) => {
                let what = format!("client {} asked by its shard ({} moving)", ask.client, report.moved);
                self.events.record(
                    EventKind::Transfer,
                    from,
                    Some(&report.to),
                    report.groups.clone(),
                    report.moved,
                    what,
                );
                self.leases_follow_clients(report);
            }
            Err(e) => {
                let what = format!("client {} asked by {}: {e}", ask.client, ask.requester);
                self.events.record(
                    EventKind::TransferRefused,
                    &ask.requester.to_string(),
                    Some(&ask.to),
                    vec![],
                    0,
                    what,
                );
            }
        }
        result
    }

    pub(super) fn drain(&mut self, shard: &str, drained: bool) -> Result<DrainView, ControlError> {
        let changed = self.cluster.set_drained(shard, drained)?;
        if changed {
            let (kind, verb) = if drained { (EventKind::Drain, "drained") } else { (EventKind::Undrain, "undrained") };
            self.events.record(kind, shard, None, vec![], 0, verb.to_string());
        }
        Ok(DrainView { shard: shard.into(), drained, changed })
    }

    /// Re-reads the config file; a bad file leaves the running config.
    pub(super) fn reload(&mut self) -> Result<Vec<String>, ControlError> {
        let new = config::load(&self.config_path).map_err(|e| ControlError::ConfigRefused(e.to_string()))?;
        let mut ignored = Vec::new();
        let old = &self.cluster.cfg.raw;
        if new.raw.interfaces != old.interfaces || new.raw.xdp_mode() != old.xdp_mode() {
            ignored.push("interfaces/xdp_mode (restart the agent to change them)");
        }
        if new.raw.bpffs != old.bpffs || new.raw.control_socket != old.control_socket {
            ignored.push("bpffs/control_socket (restart the agent to change them)");
        }
        let namespaces = |c: &crate::config::Validated| -> Vec<Option<String>> {
            c.frontends.iter().map(|f| f.agones.as_ref().map(|a| a.namespace.clone())).collect()
        };
        if namespaces(&new) != namespaces(&self.file) || new.raw.kubernetes != self.file.raw.kubernetes {
            ignored.push("kubernetes/agones namespaces (restart the agent to change them)");
        }
        let discovered = self.cluster.cfg.shards.iter().filter(|s| s.source != crate::config::ShardSource::File);
        let desired = crate::agones::discover::compose(&new, &discovered.cloned().collect::<Vec<_>>());
        let mut changes = self.cluster.reconcile(desired)?;
        self.file = new;
        self.scan.interval = scan_interval(self.cluster.cfg.raw.session_idle_timeout_ms);
        changes.extend(ignored.into_iter().map(|i| format!("not applied: {i}")));
        log::info!(
            "config reloaded: {}",
            if changes.is_empty() { "no change".to_string() } else { changes.join("; ") }
        );
        Ok(changes)
    }
}
