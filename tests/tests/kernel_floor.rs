//! Below the floor (Linux 5.12's 64-bit cmpxchg; Debian 11's 5.10) the agent
//! refuses at start with one line naming the kernel, the first missing
//! feature and the minimum, before it touches any interface. On a kernel at
//! or above the floor the same start succeeds. Runs on every kernel of the
//! matrix (`cargo xtask kernels`); only 5.10 exercises the refusal.

use proxy_agent::dataplane::kernel_probe;
use tests::{agent::Agent, topology::Topology};

#[test]
fn below_the_floor_the_agent_refuses_in_one_line_and_attaches_nothing() {
    let topo = Topology::build(1, 1).expect("topology");
    let started = Agent::start(&topo.proxy, &topo.config(&[100], ""));
    let Some(line) = kernel_probe::below_floor() else {
        started.expect("at or above the floor the agent starts");
        return;
    };
    let err = format!("{:#}", started.err().expect("below the floor the agent must refuse"));
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors, [format!("error: {line}")], "one line, the probe's:\n{err}");
    assert!(line.contains(&kernel_probe::release()), "names the kernel: {line}");
    assert!(line.contains("compare-and-swap") && line.contains("Linux 5.12"), "names feature and minimum: {line}");
    // Nothing on the proxy's interface: no XDP, no qdisc of ours.
    let link = topo.proxy.ip(&["-d", "link", "show", "to-client"]).unwrap();
    assert!(!link.contains("prog/xdp") && !link.contains("xdpgeneric"), "XDP left attached: {link}");
    let qdisc = topo.proxy.exec("tc", &["qdisc", "show", "dev", "to-client"]).unwrap();
    assert!(!qdisc.contains("clsact"), "a clsact qdisc was added: {qdisc}");
}
