//! Validation of a parsed config: every rule, section by section. The first
//! mistake found is the error; it names the field, its line and the fix.

use std::collections::HashSet;

use super::{
    lines::{locate, render_path},
    Config, ConfigError, NodeRole, PathPart, Validated,
};
use PathPart::{Index as I, Key as K};

mod peers;
mod sites;
mod topology;

pub(super) struct Checker<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Checker<'_> {
    fn error(&self, path: &[PathPart<'_>], problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            line: locate(self.text, path),
            field: render_path(path),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// Checks a parsed file, section by section; the first mistake is the error.
    pub fn check(self, raw: Config) -> Result<Validated, ConfigError> {
        self.check_paths(&raw)?;
        self.check_timing(&raw)?;
        self.check_leases(&raw)?;
        self.check_kubernetes(&raw)?;
        self.check_peers(&raw)?;
        self.check_coordinator(&raw)?;
        let frontends = self.check_frontends(&raw)?;
        self.check_sites(&raw, &frontends)?;
        let shards = self.check_shards(&raw, &frontends)?;
        self.check_every_frontend_served(&frontends, &shards)?;
        let sites = raw.sites.clone();
        Ok(Validated { raw, frontends, shards, sites })
    }

    /// Interfaces, bpffs and the control socket.
    fn check_paths(&self, raw: &Config) -> Result<(), ConfigError> {
        if raw.role == NodeRole::Return && raw.ingress_agents.is_empty() {
            return Err(self.error(
                &[K("ingress_agents")],
                "a return node with no ingress agent to report accepted players to",
                "list the ingress agents' metrics_listen addresses, e.g. `ingress_agents: [10.0.0.1:9477]`",
            ));
        }
        if let Some(secret) = &raw.node_secret {
            if secret.len() < 16 {
                return Err(self.error(
                    &[K("node_secret")],
                    "a node secret shorter than 16 characters",
                    "use 16 or more",
                ));
            }
        }
        if raw.interfaces.is_empty() && raw.role != NodeRole::Return {
            // A remote node too: its WAN side and its shards' side.
            return Err(self.error(
                &[K("interfaces")],
                "no interface to attach to",
                "list the player-facing NIC (and the shard-facing one, if different), e.g. `interfaces: [eth0]`",
            ));
        }
        let mut seen = HashSet::new();
        for (i, name) in raw.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(self.error(
                    &[K("interfaces"), I(i)],
                    format!("`{name}` is not an interface name"),
                    "use the name `ip link` shows, at most 15 characters",
                ));
            }
            if !seen.insert(name) {
                return Err(self.error(
                    &[K("interfaces"), I(i)],
                    format!("interface `{name}` is listed twice"),
                    "list each interface once",
                ));
            }
        }
        if !raw.bpffs.is_absolute() {
            return Err(self.error(
                &[K("bpffs")],
                format!("`{}` is not an absolute path", raw.bpffs.display()),
                "use a folder on a bpf filesystem, e.g. /sys/fs/bpf/samp-proxy",
            ));
        }
        if !raw.control_socket.is_absolute() {
            return Err(self.error(
                &[K("control_socket")],
                format!("`{}` is not an absolute path", raw.control_socket.display()),
                "use an absolute path, e.g. /run/samp-proxy/control.sock",
            ));
        }
        Ok(())
    }

    /// Timeouts, health probing, the handshake pacer and the log level.
    fn check_timing(&self, raw: &Config) -> Result<(), ConfigError> {
        if raw.session_idle_timeout_ms < 1000 {
            return Err(self.error(
                &[K("session_idle_timeout_ms")],
                format!("{} ms is too short", raw.session_idle_timeout_ms),
                "use at least 1000 ms (players send many packets a second; 60000 is the default)",
            ));
        }
        if raw.move_timeout_ms < 1000 {
            return Err(self.error(&[K("move_timeout_ms")], format!("{} ms is too short", raw.move_timeout_ms), "use at least 1000 ms: a client needs seconds to notice it lost its shard and reconnect (30000 is the default)"));
        }
        let h = &raw.health;
        if !(50..=60_000).contains(&h.interval_ms) {
            return Err(self.error(
                &[K("health"), K("interval_ms")],
                format!("interval {} ms", h.interval_ms),
                "use 50..=60000 ms (200 is the default)",
            ));
        }
        if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
            return Err(self.error(
                &[K("health"), K("timeout_ms")],
                format!("timeout {} ms with an interval of {} ms", h.timeout_ms, h.interval_ms),
                "use a timeout of at least 1 ms and at most the interval",
            ));
        }
        if h.down_after == 0 || h.up_after == 0 || h.down_after > 100 || h.up_after > 100 {
            return Err(self.error(
                &[K("health"), K(if h.down_after == 0 || h.down_after > 100 { "down_after" } else { "up_after" })],
                "a probe count outside 1..=100",
                "count consecutive probes: 3 is the default",
            ));
        }
        if !(1024..=16_777_216).contains(&raw.max_sessions) {
            return Err(self.error(
                &[K("max_sessions")],
                format!("{} sessions", raw.max_sessions),
                "use 1024..=16777216 (262144 is the default; about 260 bytes of kernel memory each)",
            ));
        }
        if !(1024..=1_048_576).contains(&raw.max_pending) {
            return Err(self.error(
                &[K("max_pending")],
                format!("{} pending sessions", raw.max_pending),
                "use 1024..=1048576 (16384 is the default)",
            ));
        }
        if raw.handshake_rate > 100_000 {
            return Err(self.error(
                &[K("handshake_rate")],
                format!("{} handshakes/s", raw.handshake_rate),
                "use 0 (unlimited) or up to 100000 per second",
            ));
        }
        if raw.handshake_rate > 0 && raw.handshake_burst == 0 {
            return Err(self.error(
                &[K("handshake_burst")],
                "a burst of 0 with a rate set",
                "use a burst of at least 1 (50 is the default)",
            ));
        }
        if let Some(secret) = &raw.shard_secret {
            if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) {
                return Err(self.error(
                    &[K("shard_secret")],
                    "a shard secret shorter than 16 characters, or with characters a form body must escape",
                    "use 16 or more of A-Z a-z 0-9 - _ . ~ (e.g. `openssl rand -hex 24`), or set SAMP_PROXY_SHARD_SECRET",
                ));
            }
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&raw.log_level.as_str()) {
            return Err(self.error(
                &[K("log_level")],
                format!("unknown log level `{}`", raw.log_level),
                "use error, warn, info, debug or trace",
            ));
        }
        Ok(())
    }

    /// The lease database: its URL (when given here) and the lease times.
    fn check_leases(&self, raw: &Config) -> Result<(), ConfigError> {
        let Some(leases) = &raw.leases else {
            return Ok(());
        };
        if let Some(url) = &leases.database {
            crate::leases::check_url(url).map_err(|problem| {
                self.error(
                    &[K("leases"), K("database")],
                    problem,
                    format!(
                        "write mysql://USER:PASSWORD@HOST:PORT/DATABASE, or leave it out and set {}",
                        crate::leases::DATABASE_ENV
                    ),
                )
            })?;
        }
        if !(1..=crate::leases::MAX_LEASE_SECONDS).contains(&leases.lease_seconds) {
            return Err(self.error(
                &[K("leases"), K("lease_seconds")],
                format!("a lease of {} s", leases.lease_seconds),
                format!(
                    "use 1..={} seconds (30 is the default; shards renew a few times per lease)",
                    crate::leases::MAX_LEASE_SECONDS
                ),
            ));
        }
        if !(100..=60_000).contains(&leases.connect_timeout_ms) {
            return Err(self.error(
                &[K("leases"), K("connect_timeout_ms")],
                format!("{} ms to connect", leases.connect_timeout_ms),
                "use 100..=60000 ms (5000 is the default)",
            ));
        }
        Ok(())
    }

    /// The Kubernetes API settings (used when a frontend has `agones`).
    fn check_kubernetes(&self, raw: &Config) -> Result<(), ConfigError> {
        let Some(k) = &raw.kubernetes else {
            return Ok(());
        };
        if let Some(url) = &k.api_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(self.error(
                    &[K("kubernetes"), K("api_url")],
                    format!("`{url}` is not an http(s) URL"),
                    "write the API server's URL, e.g. https://10.96.0.1:443, or leave it out inside the cluster",
                ));
            }
        }
        if !(1000..=300_000).contains(&k.lease_duration_ms) {
            return Err(self.error(
                &[K("kubernetes"), K("lease_duration_ms")],
                format!("a lease of {} ms", k.lease_duration_ms),
                "use 1000..=300000 ms (5000 is the default: a dead decider is replaced within that)",
            ));
        }
        if !(10..=60_000).contains(&k.allocation_timeout_ms) {
            return Err(self.error(
                &[K("kubernetes"), K("allocation_timeout_ms")],
                format!("{} ms", k.allocation_timeout_ms),
                "use 10..=60000 ms (300 is the default: players wait for it before the fallback)",
            ));
        }
        if k.lease_name.is_empty() || k.lease_name.len() > 253 {
            return Err(self.error(
                &[K("kubernetes"), K("lease_name")],
                "an empty or over-long name",
                "use a DNS name, e.g. samp-proxy-leader",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::leases::DATABASE_ENV;

    #[test]
    fn the_leases_block_is_checked() {
        let base = "interfaces: [eth0]\nfrontends: [{name: play, address: \"198.18.100.1:7777\"}]\n\
                    shards: [{name: s1, address: 198.18.11.2, capacity: 100}]\n";
        let parse = |leases: &str| super::super::parse("c.yaml", &format!("{base}leases:\n{leases}"));
        let ok = parse("  database: mysql://u:hunter2@127.0.0.1:3306/samp\n").unwrap();
        assert_eq!(ok.raw.leases.unwrap().lease_seconds, 30);
        assert!(parse("  lease_seconds: 10\n").is_ok(), "the URL may come from the environment");
        assert_eq!(super::super::parse("c.yaml", base).unwrap().raw.leases, None);
        let cases = [
            ("  database: postgres://u:hunter2@h/d\n", "leases.database", "not a mysql:// URL", "mysql://USER"),
            ("  database: mysql://u:hunter2@h:3306\n", "leases.database", "names no database", DATABASE_ENV),
            ("  lease_seconds: 0\n", "leases.lease_seconds", "a lease of 0 s", "1..=86400"),
            ("  connect_timeout_ms: 5\n", "leases.connect_timeout_ms", "5 ms", "100..=60000"),
            ("  databse: mysql://u:p@h/d\n", "leases", "unknown field `databse`", "remove or correct"),
        ];
        for (yaml, field, problem, fix) in cases {
            let e = parse(yaml).unwrap_err();
            assert_eq!((e.field.as_str(), e.line), (field, Some(5)), "{yaml}: {e}");
            assert!(e.problem.contains(problem) && e.fix.contains(fix), "{yaml}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
