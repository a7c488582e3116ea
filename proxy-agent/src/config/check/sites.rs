//! The `sites:` block, shards' `site:` and the `remote` role.

use std::collections::HashSet;

use super::super::{Config, ConfigError, Frontend, FrontendConfig, NodeRole, ShardConfig, SiteConfig};
use super::{topology::check_name, Checker, PathPart};
use PathPart::{Index as I, Key as K};

/// What `prefer_site` calls the shards without a site.
const LOCAL: &str = "local";

/// The shortest path MTU a site may have: IPv4's minimum datagram.
const MIN_MTU: u16 = 576;

impl Checker<'_> {
    pub(super) fn check_sites(&self, raw: &Config, frontends: &[Frontend]) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut nodes = HashSet::new();
        for (i, site) in raw.sites.iter().enumerate() {
            let at = |f| [K("sites"), I(i), K(f)];
            check_name(self.error(&at("name"), "", ""), &site.name)?;
            if site.name == LOCAL {
                return Err(self.error(
                    &at("name"),
                    "`local` names the shards without a site",
                    "give the site another name",
                ));
            }
            if !names.insert(site.name.as_str()) {
                return Err(self.error(
                    &at("name"),
                    format!("site `{}` is defined twice", site.name),
                    "give each site its own name",
                ));
            }
            if !nodes.insert(site.remote_node) {
                return Err(self.error(
                    &at("remote_node"),
                    format!("{} is also another site's remote node", site.remote_node),
                    "each site has its own remote node",
                ));
            }
            self.check_site_port(i, site, frontends)?;
            if site.mtu < MIN_MTU {
                return Err(self.error(
                    &at("mtu"),
                    format!("a path MTU of {} bytes", site.mtu),
                    format!("use at least {MIN_MTU} (1500 on most paths between data centres; less through a VPN)"),
                ));
            }
            if site.ingress_nodes.is_empty() {
                return Err(self.error(
                    &at("ingress_nodes"),
                    "no ingress node",
                    "list the ingress nodes' tunnel addresses: the remote node accepts tunnel packets from these alone",
                ));
            }
        }
        self.check_role_site(raw)
    }

    fn check_site_port(&self, i: usize, site: &SiteConfig, frontends: &[Frontend]) -> Result<(), ConfigError> {
        let at = [K("sites"), I(i), K("port")];
        if site.port == 0 {
            return Err(self.error(&at, "port 0", "use the tunnel's UDP port, 5555 by default"));
        }
        if let Some(fe) = frontends.iter().find(|f| f.address.port() == site.port) {
            return Err(self.error(
                &at,
                format!("port {} is also frontend `{}`'s", site.port, fe.name),
                "give the tunnel a port of its own (5555 by default)",
            ));
        }
        Ok(())
    }

    /// `role: remote` names its site; no other role does.
    fn check_role_site(&self, raw: &Config) -> Result<(), ConfigError> {
        match (&raw.role, &raw.site) {
            (NodeRole::Remote, None) => Err(self.error(
                &[K("role")],
                "a remote node that names no site",
                "add `site: NAME`, one of `sites`: the site whose shards sit beside this node",
            )),
            (NodeRole::Remote, Some(name)) if !raw.sites.iter().any(|s| &s.name == name) => {
                Err(self.error(&[K("site")], format!("no site named `{name}`"), known_sites(&raw.sites)))
            }
            (NodeRole::Remote, Some(_)) => Ok(()),
            (_, Some(_)) => Err(self.error(
                &[K("site")],
                "`site:` on a node that is not a remote node",
                "remove it, or set `role: remote` on the node beside that site's shards",
            )),
            (NodeRole::Return, None) if !raw.sites.is_empty() => Err(self.error(
                &[K("sites")],
                "sites on a game node (role: return)",
                "remove `sites:` here: the ingress nodes tunnel to other sites, a game node sends its replies straight",
            )),
            _ => Ok(()),
        }
    }

    /// Frontend `i`'s `prefer_site`: `local` or a site's index.
    pub(super) fn preferred_site(
        &self,
        i: usize,
        fe: &FrontendConfig,
        sites: &[SiteConfig],
    ) -> Result<Option<Option<usize>>, ConfigError> {
        match fe.prefer_site.as_deref() {
            None => Ok(None),
            Some(LOCAL) => Ok(Some(None)),
            Some(name) => match sites.iter().position(|s| s.name == name) {
                Some(index) => Ok(Some(Some(index))),
                None => Err(self.error(
                    &[K("frontends"), I(i), K("prefer_site")],
                    format!("no site named `{name}`"),
                    format!("{}, or `{LOCAL}` for the shards without a site", known_sites(sites)),
                )),
            },
        }
    }

    /// The index of the site shard `i` names.
    pub(super) fn shard_site(
        &self,
        i: usize,
        sh: &ShardConfig,
        sites: &[SiteConfig],
    ) -> Result<Option<usize>, ConfigError> {
        let Some(name) = &sh.site else { return Ok(None) };
        match sites.iter().position(|s| &s.name == name) {
            Some(index) => Ok(Some(index)),
            None => {
                Err(self.error(&[K("shards"), I(i), K("site")], format!("no site named `{name}`"), known_sites(sites)))
            }
        }
    }
}

/// The fix for a `site:` that names no site.
fn known_sites(sites: &[SiteConfig]) -> String {
    let known: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    if known.is_empty() {
        "add the site under `sites:`".into()
    } else {
        format!("use one of: {}", known.join(", "))
    }
}
