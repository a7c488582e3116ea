//! The manual's drift tests: they fail when `README.md` or `docs/` no
//! longer say what the code does. No root needed.
//!
//! - every config field (derived from `Config`'s own `Deserialize`) is on
//!   the config reference;
//! - every metric family `/metrics` serves (rendered by the real function)
//!   and every data-plane counter is on the metrics page;
//! - every event kind (`EventKind::ALL`) is on the events page;
//! - every relative link and `#anchor` in the README and `docs/` resolves;
//! - the minimum kernel is stated once, on `docs/requirements.md`.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    rc::Rc,
};

use serde::{
    de::{self, value::Error as DeError, DeserializeSeed, IntoDeserializer, Visitor},
    Deserialize,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every Markdown file of the manual: the README and `docs/**/*.md`.
fn manual_files() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut |p| {
        if p.extension().is_some_and(|e| e == "md") {
            out.push(p.to_path_buf());
        }
    });
    out.sort();
    out
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let mut entries: Vec<_> =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

// ---------------------------------------------------------------------------
// a) Config fields, from the code.
// ---------------------------------------------------------------------------

/// A deserializer that feeds `Config`'s derived `Deserialize` a value for
/// every field it asks for and records the path of each field: the `fields`
/// slice `derive(Deserialize)` passes to `deserialize_struct`, nested
/// through options, lists and structs (`frontends[].query.hostname`).
struct Recorder {
    path: String,
    seen: Rc<RefCell<Vec<String>>>,
}

impl Recorder {
    /// A string every field of this path parses.
    fn any_str(&self) -> &'static str {
        match IP_FIELDS.iter().any(|f| self.path.ends_with(&format!(".{f}"))) {
            true => ANY_IP,
            false => ANY_STR,
        }
    }

    fn child(&self, path: String) -> Self {
        Recorder { path, seen: self.seen.clone() }
    }
}

/// What any string-like field gets: parses as a `SocketAddr`, a
/// `SocketAddrV4`, a `PathBuf` and a `String` alike.
const ANY_STR: &str = "192.0.2.1:7777";
/// What the recorder gives fields that are a bare IPv4 address.
const ANY_IP: &str = "192.0.2.1";
const IP_FIELDS: [&str; 3] = ["remote_node", "ingress_nodes[]", "source"];

impl<'de> de::Deserializer<'de> for Recorder {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom(format!("`{}`: a type this recorder does not know (teach it)", self.path)))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_bool(false)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_i64(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_i64(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_i64(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_i64(1)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_u64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_u64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_f64(1.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_f64(1.0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_char('a')
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_str(self.any_str())
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_str(self.any_str())
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_bytes(ANY_STR.as_bytes())
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_bytes(ANY_STR.as_bytes())
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let element = self.child(format!("{}[]", self.path));
        v.visit_seq(OneElement(Some(element)))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom(format!("`{}`: a tuple (teach the recorder)", self.path)))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, n: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_tuple(n, v)
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // A map's keys are the user's (rules, labels): the field itself is the leaf.
        v.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(String, String)>()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let at = |f: &str| if self.path.is_empty() { f.to_string() } else { format!("{}.{f}", self.path) };
        self.seen.borrow_mut().extend(fields.iter().map(|f| at(f)));
        v.visit_map(Fields { fields, next: 0, parent: self })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_enum(FirstVariant(variants[0]))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_str(ANY_STR)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
}

struct OneElement(Option<Recorder>);

impl<'de> de::SeqAccess<'de> for OneElement {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        self.0.take().map(|r| seed.deserialize(r)).transpose()
    }
}

struct Fields {
    fields: &'static [&'static str],
    next: usize,
    parent: Recorder,
}

impl<'de> de::MapAccess<'de> for Fields {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.fields.get(self.next) {
            Some(f) => seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(*f)).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DeError> {
        let f = self.fields[self.next];
        self.next += 1;
        let path = if self.parent.path.is_empty() { f.to_string() } else { format!("{}.{f}", self.parent.path) };
        seed.deserialize(self.parent.child(path))
    }
}

struct FirstVariant(&'static str);

impl<'de> de::EnumAccess<'de> for FirstVariant {
    type Error = DeError;
    type Variant = UnitOnly;
    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, UnitOnly), DeError> {
        Ok((seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(self.0))?, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> de::VariantAccess<'de> for UnitOnly {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, DeError> {
        Err(de::Error::custom("a config enum with data (teach the recorder)"))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom("a config enum with data (teach the recorder)"))
    }
    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom("a config enum with data (teach the recorder)"))
    }
}

/// Every field path of the config file, as `Config`'s `Deserialize` sees it.
fn config_fields() -> Vec<String> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    proxy_agent::config::Config::deserialize(Recorder { path: String::new(), seen: seen.clone() })
        .unwrap_or_else(|e| panic!("recording the config's fields: {e}"));
    let mut fields = seen.take();
    fields.sort();
    fields.dedup();
    fields
}

#[test]
fn the_recorder_sees_nested_fields() {
    // Proves the recorder walks into lists, options and nested structs,
    // so the test below cannot pass by seeing only the top level.
    let fields = config_fields();
    for nested in ["shards[].capacity", "frontends[].query.hostname", "leases.lease_seconds", "health.up_after"] {
        assert!(fields.iter().any(|f| f == nested), "{nested} not recorded: {fields:?}");
    }
}

#[test]
fn every_config_field_is_on_the_config_reference() {
    let page = read("docs/operating/config.md");
    let missing: Vec<_> = config_fields().into_iter().filter(|f| !page.contains(&format!("`{f}`"))).collect();
    assert!(
        missing.is_empty(),
        "docs/operating/config.md does not document {missing:?}: add a row `FIELD` | default | what | error"
    );
}

// ---------------------------------------------------------------------------
// b) Metric families and data-plane counters, from the code.
// ---------------------------------------------------------------------------

/// The `/metrics` text of a snapshot with one shard, a probe answered and
/// the Kubernetes source on, so that every family has a sample.
fn metrics_text() -> String {
    use proxy_agent::control::views::{KubernetesView, ShardView, StatusView};
    let mut st = StatusView::default();
    st.shards.push(ShardView { name: "s1".into(), rtt_ms: Some(1.0), ..Default::default() });
    st.shards.push(ShardView {
        name: "far1".into(),
        rtt_ms: Some(9.0),
        site: Some("far".into()),
        ..Default::default()
    });
    let mut k = KubernetesView::default();
    k.pool_ready.insert("play".into(), 1);
    st.agent.kubernetes = Some(k);
    let mut peers = proxy_agent::control::views::PeersView::default();
    peers.links.outbound.push(proxy_agent::peers::board::OutboundView {
        address: "198.18.1.3:7101".into(),
        name: Some("in2".into()),
        connected: true,
        away_s: None,
        sent_records: 1,
        sent_bytes: 75,
        queue_depth: 0,
        lag_p50_ms: Some(1.0),
        lag_p99_ms: Some(2.0),
        snapshots: 1,
        last_snapshot_sessions: Some(1),
        last_snapshot_ms: Some(1.0),
        last_snapshot_age_s: Some(1.0),
        resyncs: 0,
        last_error: None,
    });
    peers.links.inbound.push(proxy_agent::peers::board::InboundView {
        name: "in2".into(),
        connected: true,
        received_records: 1,
        snapshot_sessions: Some(1),
        snapshot_age_s: Some(1.0),
        last_refusal: None,
    });
    peers.links.refused.insert("bad_tag".into(), 1);
    st.agent.peers = Some(peers);
    st.agent.coordinator = Some(Default::default());
    for c in proxy_common::Counter::ALL {
        st.counters.insert(c.name().to_string(), 1);
    }
    proxy_agent::http::render(&st).expect("render")
}

fn metric_families() -> BTreeSet<String> {
    metrics_text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn every_metric_family_is_on_the_metrics_page() {
    let families = metric_families();
    assert!(families.len() > 20, "only {families:?}");
    let page = read("docs/operating/metrics.md");
    let missing: Vec<_> = families.iter().filter(|f| !page.contains(&format!("`{f}`"))).collect();
    assert!(missing.is_empty(), "docs/operating/metrics.md does not list {missing:?}");
    // And the page lists no family the agent does not serve.
    let mut listed = BTreeSet::new();
    for part in page.split('`').skip(1).step_by(2) {
        if part.starts_with("samp_proxy_") && part.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            listed.insert(part.to_string());
        }
    }
    let stale: Vec<_> = listed.difference(&families).collect();
    assert!(stale.is_empty(), "docs/operating/metrics.md lists families /metrics does not serve: {stale:?}");
}

#[test]
fn every_data_plane_counter_is_on_the_metrics_page() {
    let page = read("docs/operating/metrics.md");
    let missing: Vec<_> =
        proxy_common::Counter::ALL.iter().map(|c| c.name()).filter(|n| !page.contains(&format!("| `{n}` |"))).collect();
    assert!(missing.is_empty(), "the outcome table of docs/operating/metrics.md lacks {missing:?}");
}

// ---------------------------------------------------------------------------
// c) Event kinds, from the code.
// ---------------------------------------------------------------------------

#[test]
fn every_event_kind_is_on_the_events_page() {
    let page = read("docs/operating/events.md");
    let missing: Vec<_> = proxy_agent::events::EventKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| !page.contains(&format!("| `{n}` |")))
        .collect();
    assert!(missing.is_empty(), "docs/operating/events.md has no row for {missing:?}");
    // The metric counts every kind too: the rendered text agrees.
    let text = metrics_text();
    for k in proxy_agent::events::EventKind::ALL {
        let sample = format!("samp_proxy_events_total{{kind=\"{}\"}}", k.name());
        assert!(text.contains(&sample), "/metrics has no {sample}");
    }
}

// ---------------------------------------------------------------------------
// d) Links and anchors.
// ---------------------------------------------------------------------------

/// The file's text outside fenced code blocks, line by line, with inline
/// code spans blanked (links inside them are examples, not links).
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let mut kept = String::new();
        let mut code = false;
        for c in line.chars() {
            if c == '`' {
                code = !code;
                kept.push('`');
            } else if !code {
                kept.push(c);
            }
        }
        out.push((i + 1, kept));
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (`-` and
/// `_` kept), spaces to `-`; repeats get `-1`, `-2`...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// Every `](target)` of the file, with its line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or("").to_string();
            out.push((n, target));
            rest = &rest[end..];
        }
    }
    out
}

fn broken_links() -> Vec<String> {
    let mut broken = Vec::new();
    for file in manual_files() {
        let text = fs::read_to_string(&file).unwrap();
        for (line, target) in links(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            let at = format!("{}:{line}: `{target}`", rel(&file));
            if !dest.exists() {
                broken.push(format!("{at}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let dest_text =
                    if dest.is_dir() { String::new() } else { fs::read_to_string(&dest).unwrap_or_default() };
                if !anchors(&dest_text).contains(anchor) {
                    broken.push(format!("{at}: no heading with that anchor in {}", rel(&dest)));
                }
            }
        }
    }
    broken
}

#[test]
fn the_anchor_slugs_are_githubs() {
    let a =
        anchors("# A\n## Area transfers: `POST /shard/transfer`\n## Upgrades keep forwarding\n## A\n```\n# not\n```\n");
    let want: BTreeSet<String> = ["a", "area-transfers-post-shardtransfer", "upgrades-keep-forwarding", "a-1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(a, want);
    assert_eq!(links("see [x](a.md#b) and `[y](not.md)`\n```\n[z](no.md)\n```\n"), vec![(1, "a.md#b".to_string())]);
}

#[test]
fn every_link_and_anchor_of_the_manual_resolves() {
    let broken = broken_links();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

// ---------------------------------------------------------------------------
// e) The minimum kernel, stated once.
// ---------------------------------------------------------------------------

/// Where the text names a kernel version: `kernel 6.6`, `Linux 6.6`,
/// `kernels >= 5.11`, `kernel of 6.6`, `Linux v5.12`, and `N.N or later`
/// (or `newer`, `N.N+`) on a line that says kernel or Linux.
fn kernel_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.to_lowercase();
        let mut found = false;
        for word in ["kernel", "linux"] {
            let mut from = 0;
            while let Some(i) = l[from..].find(word) {
                let after = &l[from + i + word.len()..];
                let after = after.strip_prefix('s').unwrap_or(after).trim_start();
                let after =
                    ["of ", ">=", "≥", "v"].iter().find_map(|p| after.strip_prefix(p)).unwrap_or(after).trim_start();
                if starts_with_version(after) {
                    found = true;
                }
                from += i + word.len();
            }
        }
        let says_kernel = l.contains("kernel") || l.contains("linux");
        if says_kernel
            && (version_before(&l, " or later") || version_before(&l, " or newer") || version_before(&l, "+"))
        {
            found = true;
        }
        if found {
            out.push(line.trim().to_string());
        }
    }
    out
}

fn starts_with_version(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0 && b.get(digits) == Some(&b'.') && b.get(digits + 1).is_some_and(|c| c.is_ascii_digit())
}

/// `N.N` right before `suffix` somewhere in `l`.
fn version_before(l: &str, suffix: &str) -> bool {
    let mut from = 0;
    while let Some(i) = l[from..].find(suffix) {
        let head = &l.as_bytes()[..from + i];
        let minor = head.iter().rev().take_while(|c| c.is_ascii_digit()).count();
        let dot = head.len().checked_sub(minor + 1);
        if minor > 0 && dot.is_some_and(|d| head[d] == b'.' && d > 0 && head[d - 1].is_ascii_digit()) {
            return true;
        }
        from += i + suffix.len();
    }
    false
}

#[test]
fn kernel_statements_are_recognised() {
    for s in ["kernel >= 5.12 with bpffs", "Linux 6.3+", "kernel 6.6 or later", "(kernels >= 5.11)", "a kernel of 6.6"]
    {
        assert_eq!(kernel_statements(s).len(), 1, "{s}");
    }
    for s in ["Agones >= 1.49", "containerd >= 1.7", "the kernel's own routing: 8.6 µs", "CAP_BPF (5.8)"] {
        assert!(kernel_statements(s).is_empty(), "{s}");
    }
}

#[test]
fn the_minimum_kernel_is_stated_once() {
    let mut files = manual_files();
    walk(&root().join("deploy"), &mut |p| files.push(p.to_path_buf()));
    let mut statements = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else { continue };
        for s in kernel_statements(&text) {
            statements.push(format!("{}: {s}", rel(&file)));
        }
    }
    assert_eq!(
        statements.len(),
        1,
        "the minimum kernel must be stated once, in docs/requirements.md (link to it elsewhere): {statements:#?}"
    );
    assert!(statements[0].starts_with("docs/requirements.md: **Minimum kernel: Linux "), "{statements:?}");
}
