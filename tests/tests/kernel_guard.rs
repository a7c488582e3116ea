//! The fixture of the TCX probe, and the egress guard's place in a chain:
//! the agent attaches the guard through TCX where the kernel has it and as
//! a clsact/cls_bpf filter where it does not (`SAMP_PRETEND_NO_TCX=1` here),
//! records the kind in its pins, adopts its own filter on restart (still
//! one), and lets every packet it does not drop go on to the next program
//! (TC_ACT_UNSPEC): another tc program behind it, as a CNI would add
//! (`tc_seen`, a counter from a second copy of the object), still counts
//! the node's own packets. One test: the knob is process-wide.

use std::time::Duration;

use proxy_agent::dataplane::{guard_attach::GuardKind, Dataplane};
use tests::{
    agent::{tcx_egress, Agent},
    pins::PinDir,
    scenario::wait_for,
    topology::Topology,
};

const IFACE: &str = "to-client";

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
        let shown = topo.proxy.exec("tc", &["filter", "show", "dev", IFACE, "egress"]).unwrap_or_default();
        assert_eq!(guard_filters(&topo), 1, "one cls_bpf egress_guard filter on {IFACE}: {shown}");
    }
    // Another program behind ours, attached the same way: it counts.
    let pins = PinDir::new("tc-seen").unwrap();
    let (mut other, _tables) = topo.proxy.run(|| Dataplane::load(&pins.path)).unwrap().expect("second object");
    if !tcx {
        other.force_guard_kind(GuardKind::Clsact).unwrap();
    }
    topo.proxy.run(|| other.attach_tc_seen(IFACE)).unwrap().expect("attaching tc_seen");
    let before = other.tc_seen().unwrap();
    let target = topo.client_ips[0].to_string();
    topo.proxy.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", &target]).expect("ping from the proxy node");
    wait_for("the program behind the guard to count the pings", Duration::from_secs(5), || {
        other.tc_seen().unwrap() >= before + 3
    });

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
