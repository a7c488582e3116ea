//! Config validation: each class of mistake gets its own message naming the
//! field, the line and the fix; and the agent attaches nothing on a bad file.

use proxy_agent::config::parse;
use tests::{agent::agent_bin, netns::NetNs};

const GOOD: &str = "\
interfaces: [eth0]
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - name: a
    address: 198.18.11.2
    capacity: 100
  - name: b
    address: 198.18.12.2:7777
    capacity: 50
    role: standby
";

/// (what, yaml, line, field, words in the problem, words in the fix)
type Case = (&'static str, String, Option<usize>, &'static str, &'static str, &'static str);

fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "case text `{from}` not in GOOD");
    GOOD.replacen(from, to, 1)
}

fn cases() -> Vec<Case> {
    vec![
        ("YAML syntax", with("shards:\n", "shards:\n  - name: [\n"), Some(6), "", "", "YAML syntax"),
        ("unknown field", with("    capacity: 100", "    capacty: 100"), Some(8), "shards[0]", "unknown field `capacty`", "remove or correct"),
        ("missing field", with("    capacity: 50\n", ""), Some(9), "shards[1]", "missing field `capacity`", "add the field"),
        ("wrong type", with("capacity: 100", "capacity: lots"), Some(8), "shards[0].capacity", "invalid", "types"),
        ("unknown role", with("role: standby", "role: backup"), Some(12), "shards[1].role", "unknown variant `backup`", "one of the values"),
        ("unknown xdp mode", format!("xdp_mode: turbo\n{GOOD}"), Some(1), "xdp_mode", "unknown variant `turbo`", "one of the values"),
        ("no interface", with("interfaces: [eth0]", "interfaces: []"), Some(1), "interfaces", "no interface", "player-facing NIC"),
        ("interface twice", with("interfaces: [eth0]", "interfaces: [eth0, eth0]"), Some(1), "interfaces[1]", "listed twice", "each interface once"),
        ("bad interface name", with("interfaces: [eth0]", "interfaces: [\"eth/0\"]"), Some(1), "interfaces[0]", "not an interface name", "ip link"),
        ("relative bpffs", format!("{GOOD}bpffs: pins\n"), Some(13), "bpffs", "not an absolute path", "/sys/fs/bpf"),
        ("log level", format!("{GOOD}log_level: loud\n"), Some(13), "log_level", "unknown log level", "debug"),
        ("no frontend", with("frontends:\n  - name: play\n    address: 198.18.100.1:7777\n", "frontends: []\n"), Some(2), "frontends", "no frontend", "add one"),
        ("frontend without port", with("address: 198.18.100.1:7777", "address: 198.18.100.1"), Some(4), "frontends[0].address", "not an IPv4 address with a port", "IP:PORT"),
        ("frontend IPv6", with("address: 198.18.100.1:7777", "address: \"[::1]:7777\""), Some(4), "frontends[0].address", "not an IPv4 address", "IPv4 only"),
        ("frontend port 0", with("address: 198.18.100.1:7777", "address: 198.18.100.1:0"), Some(4), "frontends[0].address", "port 0", "7777"),
        ("frontend twice", with("shards:\n", "  - name: play\n    address: 198.18.100.2:7777\nshards:\n"), Some(5), "frontends[1].name", "defined twice", "own name"),
        ("bad name", with("name: a\n", "name: \"a b\"\n"), Some(6), "shards[0].name", "not allowed", "letters, digits"),
        ("no shard", with("shards:\n  - name: a\n    address: 198.18.11.2\n    capacity: 100\n  - name: b\n    address: 198.18.12.2:7777\n    capacity: 50\n    role: standby\n", "shards: []\n"), Some(5), "shards", "no shard", "at least one"),
        ("capacity 0", with("capacity: 100", "capacity: 0"), Some(8), "shards[0].capacity", "capacity 0", "1..=1000"),
        ("capacity too high", with("capacity: 100", "capacity: 1001"), Some(8), "shards[0].capacity", "capacity 1001", "max_players"),
        ("shard twice", with("name: b", "name: a"), Some(9), "shards[1].name", "defined twice", "own name"),
        ("shard address twice", with("198.18.12.2:7777", "198.18.11.2"), Some(10), "shards[1].address", "also shard `a`", "own IP"),
        ("shard on another port", with("198.18.12.2:7777", "198.18.12.2:7778"), Some(10), "shards[1].address", "differs from frontend `play` port 7777", "scramble"),
        ("shard address invalid", with("198.18.11.2", "shard-a.local"), Some(7), "shards[0].address", "not an IPv4 address", "shard's IPv4"),
        ("shard on the VIP", with("198.18.11.2", "198.18.100.1"), Some(7), "shards[0].address", "is a frontend address", "own IP"),
        ("unknown frontend", with("    capacity: 100\n", "    capacity: 100\n    frontend: lobby\n"), Some(9), "shards[0].frontend", "no frontend named `lobby`", "play"),
        ("which frontend", with("shards:\n", "  - name: lobby\n    address: 198.18.100.2:7777\nshards:\n"), Some(8), "shards[0].name", "does not say which frontend", "frontend: NAME"),
        ("sessions table too small", format!("{GOOD}max_sessions: 10\n"), Some(13), "max_sessions", "10 sessions", "1024..=16777216"),
        ("pending table too big", format!("{GOOD}max_pending: 99999999\n"), Some(13), "max_pending", "99999999 pending", "1024..=1048576"),
        ("hostname too long", with("    address: 198.18.100.1:7777\n", &format!("    address: 198.18.100.1:7777\n    query:\n      hostname: {}\n", "h".repeat(300))), Some(6), "frontends[0].query.hostname", "300 bytes long", "at most 255"),
        ("no active shard", with("    capacity: 100\n", "    capacity: 100\n    role: standby\n"), Some(3), "frontends[0].name", "no active shard", "role: active"),
    ]
}

#[test]
fn the_reference_config_is_valid() {
    let cfg = parse("good.yaml", GOOD).unwrap();
    assert_eq!(cfg.shards.len(), 2);
    assert_eq!(cfg.shards[1].address.to_string(), "198.18.12.2");
}

#[test]
fn every_mistake_names_field_line_and_fix() {
    let mut messages = Vec::new();
    for (what, yaml, line, field, problem, fix) in cases() {
        let err = parse("cluster.yaml", &yaml).expect_err(what);
        let text = err.to_string();
        assert_eq!(err.line, line, "{what}: line in `{text}`");
        assert!(err.field.starts_with(field), "{what}: field `{}` should start with `{field}` in `{text}`", err.field);
        assert!(err.problem.contains(problem), "{what}: problem should mention `{problem}`: `{text}`");
        assert!(err.fix.contains(fix), "{what}: fix should mention `{fix}`: `{text}`");
        if let Some(line) = line {
            assert!(text.starts_with(&format!("config cluster.yaml line {line}")), "{what}: `{text}`");
        }
        messages.push(text);
    }
    // Each class of mistake has its own message.
    let mut unique = messages.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), messages.len(), "two mistakes share a message: {messages:#?}");
}

#[test]
fn a_bad_file_attaches_nothing() {
    let ns = NetNs::new("badcfg").unwrap();
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]).unwrap();
    let dir = std::env::temp_dir().join(format!("sampx-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, with("capacity: 100", "capacity: 0")).unwrap();
    let out = ns.spawn_command(&agent_bin()).unwrap().arg("run").arg("--config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 8") && stderr.contains("shards[0].capacity"), "{stderr}");
    assert!(!ns.ip(&["link", "show", "eth0"]).unwrap().contains("xdp"), "XDP attached despite a bad config");

    // A missing interface is found before anything is attached, too.
    let missing = GOOD.replace("interfaces: [eth0]", "interfaces: [eth0, nope0]")
        + &format!("bpffs: /sys/fs/bpf/sampx-badcfg-{}\n", std::process::id());
    std::fs::write(&path, missing).unwrap();
    let out = ns.spawn_command(&agent_bin()).unwrap().arg("run").arg("--config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("interface `nope0` does not exist"), "{stderr}");
    assert!(!ns.ip(&["link", "show", "eth0"]).unwrap().contains("xdp"), "XDP attached despite a missing interface");
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/sampx-badcfg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
}
