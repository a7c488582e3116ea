//! The `peers:` block: several ingress agents sharing their sessions.

use super::super::{Config, ConfigError, NodeRole};
use super::{Checker, PathPart};
use crate::peers::valid_node_name;
use PathPart::{Index as I, Key as K};

impl Checker<'_> {
    pub(super) fn check_coordinator(&self, raw: &Config) -> Result<(), ConfigError> {
        let Some(c) = &raw.coordinator else { return Ok(()) };
        if raw.peers.is_none() {
            return Err(self.error(
                &[K("coordinator")],
                "a coordinator without peers",
                "add `peers:` (the other ingress agents), or remove `coordinator:`: one node decides alone",
            ));
        }
        c.check().map_err(|problem| self.error(&[K("coordinator")], problem, "see docs/operating/coordinator.md"))
    }

    pub(super) fn check_peers(&self, raw: &Config) -> Result<(), ConfigError> {
        let Some(p) = &raw.peers else { return Ok(()) };
        if raw.role == NodeRole::Return {
            return Err(self.error(
                &[K("peers")],
                "a game node (role: return) with peers",
                "remove `peers:` here: only ingress nodes share sessions; a game node reports to every ingress agent in `ingress_agents`",
            ));
        }
        if raw.node_secret().is_none() {
            return Err(self.error(
                &[K("peers")],
                "peers but no node secret",
                "set `node_secret` (or SAMP_PROXY_NODE_SECRET) to the same secret on every ingress agent: peers prove it to each other",
            ));
        }
        let name = p.node_name();
        if !valid_node_name(&name) {
            return Err(self.error(
                &[K("peers"), K("node_name")],
                format!("the node name `{name}`"),
                "use 1..=64 printable ASCII characters without spaces (SAMP_PROXY_NODE_NAME wins over the file)",
            ));
        }
        if p.listen.port() == 0 {
            return Err(self.error(&[K("peers"), K("listen")], "port 0", "give the peer port, e.g. 0.0.0.0:7101"));
        }
        for (i, a) in p.nodes.iter().enumerate() {
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(self.error(
                    &[K("peers"), K("nodes"), I(i)],
                    format!("`{a}` is not a peer's address"),
                    "write each other ingress agent's IP:port (its peers.listen)",
                ));
            }
            if p.nodes[..i].contains(a) {
                return Err(self.error(&[K("peers"), K("nodes"), I(i)], format!("`{a}` twice"), "list each peer once"));
            }
        }
        if !(100..=600_000).contains(&p.join_timeout_ms) {
            return Err(self.error(
                &[K("peers"), K("join_timeout_ms")],
                format!("{} ms", p.join_timeout_ms),
                "use 100..=600000 ms (5000 is the default): how long a node waits for a peer before it is ready alone",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    fn parse(extra: &str) -> Result<super::super::super::Validated, String> {
        let base = "interfaces: [lo]\nfrontends:\n  - name: main\n    address: 198.18.100.1:7777\nshards:\n  - name: s1\n    address: 198.18.21.2\n    capacity: 10\n";
        super::super::super::parse("c.yaml", &format!("{base}{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_peers_block_is_checked() {
        let ok = parse("node_secret: 0123456789abcdef\npeers:\n  node_name: a\n  listen: 198.18.1.2:7101\n  nodes: [198.18.1.2:7101, 198.18.1.3:7101]\n").unwrap();
        let p = ok.raw.peers.unwrap();
        assert_eq!(p.others(), vec!["198.18.1.3:7101".parse().unwrap()], "its own address is skipped");
        assert_eq!(p.join_timeout_ms, 5000);
        for (extra, field, problem) in [
            ("peers:\n  listen: 198.18.1.2:7101\n", "peers", "no node secret"),
            ("node_secret: 0123456789abcdef\npeers:\n  node_name: 'a b'\n  listen: 198.18.1.2:7101\n", "peers.node_name", "`a b`"),
            (
                "node_secret: 0123456789abcdef\npeers:\n  listen: 198.18.1.2:7101\n  nodes: [0.0.0.0:7101]\n",
                "peers.nodes[0]",
                "not a peer",
            ),
            (
                "node_secret: 0123456789abcdef\npeers:\n  listen: 198.18.1.2:7101\n  nodes: [198.18.1.3:1, 198.18.1.3:1]\n",
                "peers.nodes[1]",
                "twice",
            ),
            (
                "node_secret: 0123456789abcdef\npeers:\n  listen: 198.18.1.2:7101\n  join_timeout_ms: 5\n",
                "peers.join_timeout_ms",
                "5 ms",
            ),
            ("node_secret: 0123456789abcdef\npeers:\n  listen: 198.18.1.2:7101\n  nodez: []\n", "peers", "unknown field `nodez`"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(field) && e.contains(problem), "{extra}: {e}");
        }
    }
}
