//! The fixture of the TCX probe, and the egress guard's place in a chain:
//! the agent attaches the guard through TCX where the kernel has it and as
//! a clsact/cls_bpf filter where it does not (`SAMP_PRETEND_NO_TCX=1` here),
//! records the kind in its pins, adopts its own filter on restart (still
//! one), and lets every packet it does not drop go on to the next program
//! (TC_ACT_UNSPEC): a classic tc filter behind it, as a CNI would add,
//! still counts the node's own packets. One test: the knob is process-wide.

use std::time::Duration;

use tests::{
    agent::{tcx_egress, Agent},
    scenario::wait_for,
    topology::Topology,
};

const IFACE: &str = "to-client";

/// Packets the matchall filter behind the guard has seen.
fn counted(topo: &Topology) -> u64 {
    let out = topo.proxy.exec("tc", &["-s", "filter", "show", "dev", IFACE, "egress"]).unwrap_or_default();
    // "Sent N bytes M pkt" in the matchall's action statistics.
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Sent "))
        .filter_map(|l| l.split_whitespace().nth(2).and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

fn guard_filters(topo: &Topology) -> usize {
    let out = topo.proxy.exec("tc", &["filter", "show", "dev", IFACE, "egress"]).unwrap_or_default();
    out.lines().filter(|l| l.contains("egress_guard")).count()
}

fn check(pretend_no_tcx: bool) {
    let topo = Topology::build(1, 1).expect("topology");
    let mut agent = Agent::start(&topo.proxy, &topo.config(&[100], "")).expect("agent");
    let tcx = agent.pins.path.join("guard-tcx").exists();
    let clsact = agent.pins.path.join("guard-clsact").exists();
    assert!(tcx != clsact, "exactly one guard kind recorded in the pins");
    if pretend_no_tcx {
        assert!(clsact, "told TCX is missing, the guard must run under clsact");
    }
    if tcx {
        let progs = tcx_egress(&topo.proxy, IFACE).unwrap();
        assert!(progs.iter().any(|(n, _)| n == "egress_guard"), "TCX programs on {IFACE}: {progs:?}");
    } else {
        assert_eq!(guard_filters(&topo), 1, "one cls_bpf egress_guard filter on {IFACE}");
    }
    // Another program behind ours: a classic matchall filter that counts.
    let _ = topo.proxy.exec("tc", &["qdisc", "add", "dev", IFACE, "clsact"]);
    topo.proxy
        .exec("tc", &["filter", "add", "dev", IFACE, "egress", "prio", "60000", "matchall", "action", "pass"])
        .expect("adding the matchall filter");
    let before = counted(&topo);
    let target = topo.client_ips[0].to_string();
    topo.proxy.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", &target]).expect("ping from the proxy node");
    wait_for("the filter behind the guard to count the pings", Duration::from_secs(5), || counted(&topo) >= before + 3);

    // A restart adopts: still one guard, the same kind.
    agent.stop().expect("stop");
    agent.restart(&topo.proxy).expect("restart");
    assert_eq!(agent.pins.path.join("guard-tcx").exists(), tcx, "the kind survives a restart");
    if !tcx {
        assert_eq!(guard_filters(&topo), 1, "the restarted agent replaced its filter, not added one");
    }
    eprintln!("guard via {}: passed", if tcx { "tcx" } else { "clsact" });
}

#[test]
fn the_guard_attaches_as_probed_and_lets_later_tc_programs_run() {
    check(false);
    std::env::set_var("SAMP_PRETEND_NO_TCX", "1");
    check(true);
}
