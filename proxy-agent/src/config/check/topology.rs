//! The frontends, their Agones sources and the shards behind them: names,
//! addresses, capacities, and that every frontend has a shard to serve it.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::super::{
    AgonesFrontend, Config, ConfigError, Frontend, FrontendConfig, QueryConfig, Role, Shard, ShardConfig, ShardSource,
    SiteConfig, MAX_SHARD_CAPACITY,
};
use super::{Checker, PathPart};
use PathPart::{Index as I, Key as K};

impl Checker<'_> {
    /// A frontend's Agones source: a namespace and the labels that tell its
    /// shards and its pool apart.
    fn check_agones(&self, i: usize, a: &AgonesFrontend) -> Result<(), ConfigError> {
        let at = |f| [K("frontends"), I(i), K("agones"), K(f)];
        if a.namespace.is_empty() || a.namespace.len() > 63 {
            return Err(self.error(
                &at("namespace"),
                "no namespace",
                "name the namespace of the GameServers, e.g. `game`",
            ));
        }
        if a.labels.is_empty() {
            return Err(self.error(
                &at("labels"),
                "no labels: every Allocated GameServer of the namespace would be taken as a shard",
                "give the frontend's shards a label, e.g. `labels: {samp-proxy.dev/frontend: main}`",
            ));
        }
        if a.pool_labels.is_empty() {
            return Err(self.error(
                &at("pool_labels"),
                "no pool labels: any Ready GameServer of the namespace could be allocated",
                "name the standby fleet, e.g. `pool_labels: {agones.dev/fleet: samp-shards}`",
            ));
        }
        if a.headroom > 100_000 {
            return Err(self.error(
                &at("headroom"),
                format!("{} free slots", a.headroom),
                "use 0 (never grow) up to the players you expect at once",
            ));
        }
        Ok(())
    }

    pub(super) fn check_frontends(&self, raw: &Config) -> Result<Vec<Frontend>, ConfigError> {
        if raw.frontends.is_empty() {
            return Err(self.error(
                &[K("frontends")],
                "no frontend",
                "add one, e.g. `frontends: [{name: play, address: \"203.0.113.10:7777\"}]`",
            ));
        }
        if raw.frontends.len() > proxy_common::MAX_FRONTENDS as usize {
            return Err(self.error(
                &[K("frontends")],
                format!("{} frontends, at most {} are supported", raw.frontends.len(), proxy_common::MAX_FRONTENDS),
                "run another proxy for the rest",
            ));
        }
        let mut frontends: Vec<Frontend> = Vec::new();
        for (i, fe) in raw.frontends.iter().enumerate() {
            let frontend = self.check_frontend(i, fe, &frontends, &raw.sites)?;
            frontends.push(frontend);
        }
        Ok(frontends)
    }

    /// Frontend `i`, against the ones before it.
    fn check_frontend(
        &self,
        i: usize,
        fe: &FrontendConfig,
        frontends: &[Frontend],
        sites: &[SiteConfig],
    ) -> Result<Frontend, ConfigError> {
        let at = |f| [K("frontends"), I(i), K(f)];
        check_name(self.error(&at("name"), "", ""), &fe.name)?;
        if frontends.iter().any(|f| f.name == fe.name) {
            return Err(self.error(
                &at("name"),
                format!("frontend `{}` is defined twice", fe.name),
                "give each frontend its own name",
            ));
        }
        let address = self.check_frontend_address(i, &fe.address, frontends)?;
        self.check_query(i, &fe.query)?;
        if let Some(agones) = &fe.agones {
            self.check_agones(i, agones)?;
        }
        let prefer_site = self.preferred_site(i, fe, sites)?;
        Ok(Frontend { name: fe.name.clone(), address, query: fe.query.clone(), agones: fe.agones.clone(), prefer_site })
    }

    /// The public address of frontend `i`: IPv4, a port, unicast, its own.
    fn check_frontend_address(
        &self,
        i: usize,
        text: &str,
        frontends: &[Frontend],
    ) -> Result<SocketAddrV4, ConfigError> {
        let at = |f| [K("frontends"), I(i), K(f)];
        let address: SocketAddrV4 = text.parse().map_err(|_| {
            self.error(
                &at("address"),
                format!("`{}` is not an IPv4 address with a port", text),
                "write it as IP:PORT, e.g. 203.0.113.10:7777 (SA:MP is IPv4 only)",
            )
        })?;
        if address.port() == 0 {
            return Err(self.error(&at("address"), "port 0", "use the port players connect to, usually 7777"));
        }
        if address.ip().is_unspecified() || address.ip().is_multicast() || address.ip().is_broadcast() {
            return Err(self.error(
                &at("address"),
                format!("{} cannot be a public address", address.ip()),
                "use the unicast IPv4 players connect to",
            ));
        }
        if frontends.iter().any(|f| f.address == address) {
            return Err(self.error(
                &at("address"),
                format!("{address} is used by two frontends"),
                "give each frontend its own address",
            ));
        }
        Ok(address)
    }

    /// What frontend `i` answers to the server browser.
    fn check_query(&self, i: usize, query: &QueryConfig) -> Result<(), ConfigError> {
        for (field, value, max) in
            [("hostname", &query.hostname, 255), ("gamemode", &query.gamemode, 255), ("language", &query.language, 255)]
        {
            if value.len() > max {
                return Err(self.error(
                    &[K("frontends"), I(i), K("query"), K(field)],
                    format!("{field} is {} bytes long", value.len()),
                    format!("use at most {max} bytes: the server browser shows no more"),
                ));
            }
        }
        for (name, value) in &query.rules {
            if name.is_empty() || name.len() > 255 || value.len() > 255 {
                return Err(self.error(
                    &[K("frontends"), I(i), K("query"), K("rules")],
                    format!("rule `{name}` does not fit the query protocol"),
                    "rule names of 1..=255 bytes and values of at most 255 bytes",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn check_shards(&self, raw: &Config, frontends: &[Frontend]) -> Result<Vec<Shard>, ConfigError> {
        if raw.shards.is_empty() && frontends.iter().all(|f| f.agones.is_none()) {
            return Err(self.error(
                &[K("shards")],
                "no shard",
                "add at least one shard with name, address and capacity, or let a frontend discover them (`agones:`)",
            ));
        }
        if raw.shards.len() >= proxy_common::MAX_BACKENDS as usize {
            return Err(self.error(
                &[K("shards")],
                format!("{} shards, at most {} are supported", raw.shards.len(), proxy_common::MAX_BACKENDS - 1),
                "split the cluster over more proxies",
            ));
        }
        let mut shards: Vec<Shard> = Vec::new();
        for (i, sh) in raw.shards.iter().enumerate() {
            let shard = self.check_shard(i, sh, frontends, &shards, &raw.sites)?;
            shards.push(shard);
        }
        Ok(shards)
    }

    /// Shard `i`, against the ones before it.
    fn check_shard(
        &self,
        i: usize,
        sh: &ShardConfig,
        frontends: &[Frontend],
        shards: &[Shard],
        sites: &[SiteConfig],
    ) -> Result<Shard, ConfigError> {
        let at = |f| [K("shards"), I(i), K(f)];
        check_name(self.error(&at("name"), "", ""), &sh.name)?;
        if shards.iter().any(|s| s.name == sh.name) {
            return Err(self.error(
                &at("name"),
                format!("shard `{}` is defined twice", sh.name),
                "give each shard its own name",
            ));
        }
        let frontend = self.shard_frontend(i, sh, frontends)?;
        let address = self.check_shard_address(i, sh, &frontends[frontend], frontends, shards)?;
        if sh.capacity == 0 || sh.capacity > MAX_SHARD_CAPACITY {
            return Err(self.error(
                &at("capacity"),
                format!("shard `{}` has capacity {}", sh.name, sh.capacity),
                format!("capacity must be 1..={MAX_SHARD_CAPACITY} (the server's max_players)"),
            ));
        }
        Ok(Shard {
            name: sh.name.clone(),
            address,
            frontend,
            capacity: sh.capacity,
            role: sh.role,
            source: ShardSource::File,
            site: self.shard_site(i, sh, sites)?,
        })
    }

    /// The index of the frontend shard `i` serves.
    fn shard_frontend(&self, i: usize, sh: &ShardConfig, frontends: &[Frontend]) -> Result<usize, ConfigError> {
        let at = |f| [K("shards"), I(i), K(f)];
        let frontend = match &sh.frontend {
            Some(name) => frontends.iter().position(|f| &f.name == name).ok_or_else(|| {
                let known: Vec<_> = frontends.iter().map(|f| f.name.as_str()).collect();
                self.error(
                    &at("frontend"),
                    format!("no frontend named `{name}`"),
                    format!("use one of: {}", known.join(", ")),
                )
            })?,
            None if frontends.len() == 1 => 0,
            None => {
                return Err(self.error(
                    &at("name"),
                    format!("shard `{}` does not say which frontend it serves", sh.name),
                    "add `frontend: NAME`; with several frontends every shard needs one",
                ));
            }
        };
        Ok(frontend)
    }

    /// The IPv4 of shard `i`, serving `fe`: unicast, its own, and no port
    /// but the frontend's.
    fn check_shard_address(
        &self,
        i: usize,
        sh: &ShardConfig,
        fe: &Frontend,
        frontends: &[Frontend],
        shards: &[Shard],
    ) -> Result<Ipv4Addr, ConfigError> {
        let at = |f| [K("shards"), I(i), K(f)];
        let (ip_text, port) = match sh.address.rsplit_once(':') {
            Some((ip, port)) => (ip, Some(port)),
            None => (sh.address.as_str(), None),
        };
        let address: Ipv4Addr = ip_text.parse().map_err(|_| {
            self.error(
                &at("address"),
                format!("`{}` is not an IPv4 address", sh.address),
                "write the shard's IPv4, e.g. 10.0.0.5 (the port is always the frontend's)",
            )
        })?;
        if let Some(port) = port {
            if port.parse::<u16>().ok() != Some(fe.address.port()) {
                return Err(self.error(&at("address"), format!("shard port `{port}` differs from frontend `{}` port {}", fe.name, fe.address.port()), format!("run the shard on port {} and drop the port here: SA:MP clients scramble packets with the server port, so the proxy never changes it", fe.address.port())));
            }
        }
        if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
            return Err(self.error(
                &at("address"),
                format!("{address} cannot be a shard address"),
                "use the shard's unicast IPv4",
            ));
        }
        if frontends.iter().any(|f| *f.address.ip() == address) {
            return Err(self.error(
                &at("address"),
                format!("{address} is a frontend address"),
                "a shard needs its own IP, distinct from the public one",
            ));
        }
        if let Some(other) = shards.iter().find(|s| s.address == address) {
            return Err(self.error(
                &at("address"),
                format!("{address} is also shard `{}`", other.name),
                "each shard needs its own IP: replies are mapped back by shard IP",
            ));
        }
        Ok(address)
    }

    pub(super) fn check_every_frontend_served(
        &self,
        frontends: &[Frontend],
        shards: &[Shard],
    ) -> Result<(), ConfigError> {
        for (i, fe) in frontends.iter().enumerate() {
            // Discovered shards come and go: an empty list is a state, not a mistake.
            if fe.agones.is_none() && !shards.iter().any(|s| s.frontend == i && s.role == Role::Active) {
                return Err(self.error(
                    &[K("frontends"), I(i), K("name")],
                    format!("frontend `{}` has no active shard", fe.name),
                    "add a shard with `role: active` (the default) for it",
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn check_name(template: ConfigError, name: &str) -> Result<(), ConfigError> {
    let ok =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        return Ok(());
    }
    Err(ConfigError {
        problem: format!("name `{name}` is not allowed"),
        fix: "use 1 to 63 letters, digits, `-` or `_`".into(),
        ..template
    })
}
