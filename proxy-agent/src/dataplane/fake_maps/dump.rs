//! `Dump`: every fake map as stable text, for golden comparisons.

use super::*;

/// Every map's non-empty entries as lines of text, by map name, in a stable
/// order: compare whole dumps, one map (`map`), or all but some (`without`).
/// Sessions are shown without `last_seen_ns` (a move stamps the clock), a
/// placement row as slots per group, a query answer as its length, flags
/// and sum (the body holds the agent's version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub maps: BTreeMap<&'static str, Vec<String>>,
}

fn ip(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr_from_map(addr))
}

fn client(k: &SessionKey) -> String {
    format!("{}:{} frontend {}", ip(k.client_addr), port_from_map(k.client_port), k.frontend)
}

impl Dump {
    pub(super) fn of(m: &Maps) -> Self {
        let mut maps = Lines::new();
        routing(m, &mut maps);
        reverse_and_sessions(m, &mut maps);
        stats_and_queries(m, &mut maps);
        maps.retain(|_, lines| !lines.is_empty());
        Self { maps }
    }

    /// One map's lines (none when it is empty).
    pub fn map(&self, name: &str) -> &[String] {
        self.maps.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The dump without these maps (SESSION_CACHE_GENERATION, say, which a
    /// rolled-back write still bumps).
    pub fn without(mut self, names: &[&str]) -> Self {
        self.maps.retain(|name, _| !names.contains(name));
        self
    }
}

/// `[index] text` for every slot that is not all zeros.
fn nonzero<T: Default + PartialEq>(array: &[T], show: impl Fn(&T) -> String) -> Vec<String> {
    let zero = T::default();
    array.iter().enumerate().filter(|(_, v)| **v != zero).map(|(i, v)| format!("[{i}] {}", show(v))).collect()
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, lines) in &self.maps {
            writeln!(f, "{name}")?;
            for line in lines {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// Every map's lines, by name.
type Lines = BTreeMap<&'static str, Vec<String>>;

fn array(name: &'static str, lines: Vec<String>, maps: &mut Lines) {
    maps.insert(name, lines);
}

/// FRONTENDS, PORTS, placement, GROUPS, SHARD_STATE, METER, BACKENDS.
fn routing(m: &Maps, maps: &mut Lines) {
    let mut frontends: Vec<_> = m.frontends.iter().collect();
    frontends.sort_unstable_by_key(|(k, _)| (u32::from(ip(k.vip)), port_from_map(k.port)));
    maps.insert(
        names::FRONTENDS,
        frontends.iter().map(|(k, f)| format!("{}:{} id {}", ip(k.vip), port_from_map(k.port), f.id)).collect(),
    );
    let mut ports: Vec<(u16, &PortEntry)> = m
        .ports
        .iter()
        .enumerate()
        .filter(|(_, e)| **e != PortEntry::default())
        .map(|(p, e)| (port_from_map(p as u16), e))
        .collect();
    ports.sort_unstable_by_key(|(p, _)| *p);
    maps.insert(
        names::PORTS,
        ports.iter().map(|(p, e)| format!("{p} vip {} frontend {} flags {}", ip(e.vip), e.frontend, e.flags)).collect(),
    );
    let rows = m.placement.chunks(PLACEMENT_SLOTS as usize).enumerate().filter(|(_, r)| r.iter().any(|&g| g != 0));
    maps.insert(
        names::PLACEMENT,
        rows.map(|(fe, row)| {
            let mut by_group: BTreeMap<u32, usize> = BTreeMap::new();
            for &g in row {
                *by_group.entry(g).or_default() += 1;
            }
            let counts: Vec<String> = by_group.iter().map(|(g, n)| format!("group {g} x {n}")).collect();
            format!("row {fe}: {}", counts.join(", "))
        })
        .collect(),
    );
    array(names::GROUPS, nonzero(&m.groups, |g| format!("backend {} epoch {}", g.backend, g.epoch)), maps);
    array(
        names::SHARD_STATE,
        nonzero(&m.shard_state, |s| format!("home_group {} flags {}", s.home_group, s.flags)),
        maps,
    );
    array(
        names::METER,
        nonzero(&m.meter, |x| {
            format!("interval_ns {} tolerance_ns {} tat_ns {}", x.interval_ns, x.tolerance_ns, x.tat_ns)
        }),
        maps,
    );
    array(names::BACKENDS, nonzero(&m.backends, |b| ip(b.addr).to_string()), maps);
}

/// REVERSE, SESSIONS and PENDING.
fn reverse_and_sessions(m: &Maps, maps: &mut Lines) {
    let mut reverse: Vec<_> = m.reverse.iter().collect();
    reverse.sort_unstable_by_key(|(a, _)| u32::from(ip(**a)));
    maps.insert(
        names::REVERSE,
        reverse
            .iter()
            .map(|(a, r)| {
                format!(
                    "{} -> {}:{} frontend {} backend {}",
                    ip(**a),
                    ip(r.vip),
                    port_from_map(r.port),
                    r.frontend,
                    r.backend
                )
            })
            .collect(),
    );
    for (name, table) in [(names::SESSIONS, &m.sessions), (names::PENDING, &m.pending)] {
        let lines = sorted_sessions(table)
            .iter()
            .map(|(k, s)| format!("{} group {} epoch {}", client(k), s.group, s.epoch))
            .collect();
        maps.insert(name, lines);
    }
    let counters = Counter::ALL
        .iter()
        .filter(|&&c| m.counters[c as usize] != 0)
        .map(|&c| format!("{} {}", c.name(), m.counters[c as usize]))
        .collect();
    maps.insert(names::COUNTERS, counters);
}

/// COUNTERS, BACKEND_STATS, the query maps and the cache's generation.
fn stats_and_queries(m: &Maps, maps: &mut Lines) {
    array(
        names::BACKEND_STATS,
        nonzero(&m.backend_stats, |s| {
            format!(
                "in {} packets {} bytes, out {} packets {} bytes",
                s.packets_in, s.bytes_in, s.packets_out, s.bytes_out
            )
        }),
        maps,
    );
    let answers = m
        .query_answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.len != 0 || a.flags != 0)
        .map(|(i, a)| format!("[{i}] len {} flags {} sum {:#x}", a.len, a.flags, a.body_sum))
        .collect();
    maps.insert(names::QUERY_ANSWERS, answers);
    let s = m.query_settings;
    let settings = if s == QuerySettings::default() {
        Vec::new()
    } else {
        vec![format!("per_second {} agent_addr {}", s.per_second, ip(s.agent_addr))]
    };
    maps.insert(names::QUERY_SETTINGS, settings);
    maps.insert(names::SESSION_CACHE_GENERATION, vec![m.session_cache_generation.to_string()]);
}
