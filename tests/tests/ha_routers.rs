//! The routers in front of several ingress nodes (`tests::ha`), proven at the
//! kernel level with UDP echo servers standing in for the ingress agents:
//!
//! - ECMP: a resilient next-hop group spreads 300 player flows over three
//!   ingress nodes; withdrawing one node's next hop moves exactly that
//!   node's flows and no other (what the agents' replication relies on); a
//!   dead node black-holes its flows until its next hop is withdrawn.
//! - VRRP: keepalived moves the address to the backup within its failover
//!   time, after a crash and after a planned stop.
//!
//! Each test prints the gaps its flows saw. The tests take turns (one lock):
//! on two shared cores, two traffic runs at once would measure each other.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tests::{
    dsr::pod_ip,
    ha::{
        ecmp::Ecmp,
        standin::{longest_gap, nodes_between, Answers, EchoNodes, Flows},
        topology::MultiIngress,
        vrrp::{failover_time, Stop, Vrrp},
    },
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const FLOWS: usize = 300;
/// A flow sends every 20 ms (a SA:MP client sends 20-30 packets a second).
const INTERVAL: Duration = Duration::from_millis(20);
/// No traffic run lasts longer.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Answers to probes sent before a change may still arrive after it.
const IN_FLIGHT: Duration = Duration::from_millis(50);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Min, median and max of some gaps, in ms.
fn spread(mut gaps: Vec<Duration>) -> (f64, f64, f64) {
    gaps.sort_unstable();
    (ms(gaps[0]), ms(gaps[gaps.len() / 2]), ms(gaps[gaps.len() - 1]))
}

/// Every flow's single node over `[from, to)`; panics if one had two.
fn owners(answers: &Answers, from: Duration, to: Duration) -> Vec<u8> {
    answers
        .iter()
        .enumerate()
        .map(|(f, a)| match nodes_between(a, from, to)[..] {
            [n] => n,
            ref other => panic!("flow {f} answered by nodes {other:?} between {from:?} and {to:?}"),
        })
        .collect()
}

/// Every flow has `n` answers after `from`.
fn answered_since(from: Duration, n: usize) -> impl Fn(&Answers) -> bool {
    move |a: &Answers| a.iter().all(|f| f.iter().filter(|(t, _)| *t >= from).count() >= n)
}

/// Each ingress node reaches every pod through the router, and back.
fn pods_reachable(net: &MultiIngress) {
    for node in &net.ingress {
        for p in 0..net.pods.len() {
            let ip = pod_ip(p).to_string();
            node.exec("ping", &["-c", "1", "-W", "2", "-q", &ip])
                .unwrap_or_else(|e| panic!("{} cannot reach pod {ip}: {e}", node.name));
        }
    }
}

fn assert_cleaned(names: &[String]) {
    let listed =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    for n in names {
        assert!(!listed.lines().any(|l| l.split_whitespace().next() == Some(n)), "namespace {n} left behind");
    }
}

/// 300 flows over three nodes, settled; returns the driver and each flow's node.
fn settled_ecmp(ecmp: &Ecmp) -> (Flows, Vec<u8>) {
    let flows = Flows::start(ecmp.net.player_sockets(FLOWS).unwrap(), ecmp.net.vip(), INTERVAL, RUN_LIMIT).unwrap();
    flows.wait("5 answers on every flow", Duration::from_secs(20), answered_since(Duration::ZERO, 5)).unwrap();
    let owner = owners(&flows.answers(), Duration::ZERO, flows.now());
    let per: Vec<usize> = (0..3).map(|n| owner.iter().filter(|&&o| o == n).count()).collect();
    println!("ECMP: {FLOWS} flows over 3 ingress nodes: {per:?}; buckets {:?}", ecmp.buckets().unwrap());
    assert!(per.iter().all(|&c| c > 0), "every ingress node gets some flows: {per:?}");
    (flows, owner)
}

/// After the change at `t0`: the victim's flows are on another node and stay
/// there, every other flow never left its node. Returns the victim's flows'
/// gaps and the others' longest gap.
fn check_moves(answers: &Answers, owner: &[u8], victim: u8, t0: Duration, end: Duration) -> (Vec<Duration>, Duration) {
    let after = owners(answers, t0 + IN_FLIGHT, end);
    let (mut moved, mut others_gap) = (Vec::new(), Duration::ZERO);
    for (f, a) in answers.iter().enumerate() {
        if owner[f] == victim {
            assert_ne!(after[f], victim, "flow {f} still answered by the withdrawn node");
            moved.push(longest_gap(a, t0, end));
        } else {
            assert_eq!(nodes_between(a, Duration::ZERO, end), [owner[f]], "flow {f} changed node");
            others_gap = others_gap.max(longest_gap(a, t0, end));
        }
    }
    (moved, others_gap)
}

#[test]
fn ecmp_withdrawal_moves_only_the_withdrawn_nodes_flows() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut ecmp = Ecmp::build(3, &[0, 1], 100).unwrap();
    let names = ecmp.net.namespaces();
    pods_reachable(&ecmp.net);
    let _echo = EchoNodes::start(&ecmp.net.ingress, ecmp.net.vip()).unwrap();
    let (flows, owner) = settled_ecmp(&ecmp);
    let table = ecmp.bucket_table().unwrap();

    let victim = 1;
    let t0 = flows.now();
    ecmp.withdraw(victim).unwrap();
    flows
        .wait("10 answers on every flow after the withdrawal", Duration::from_secs(10), answered_since(t0, 10))
        .unwrap();
    let end = flows.now();
    let answers = flows.stop().unwrap();

    // The resilient promise, in the kernel's own table: only the withdrawn
    // node's buckets changed hands.
    let after = ecmp.bucket_table().unwrap();
    for (b, (&was, &now)) in table.iter().zip(&after).enumerate() {
        assert!(was == victim || was == now, "bucket {b} moved from node {was} to {now}");
        assert_ne!(now, victim, "bucket {b} still on the withdrawn node");
    }
    let (moved, others) = check_moves(&answers, &owner, victim as u8, t0, end);
    let (lo, med, hi) = spread(moved.clone());
    println!(
        "ECMP withdrawal: {} flows of node {} moved, gap min/median/max {lo:.1}/{med:.1}/{hi:.1} ms (sending every {} ms); \
         the other {} flows stayed, longest gap {:.1} ms",
        moved.len(),
        victim + 1,
        ms(INTERVAL),
        FLOWS - moved.len(),
        ms(others)
    );
    assert!(hi < 200.0, "a withdrawal is a route change: the longest gap was {hi:.1} ms");
    drop((_echo, ecmp));
    assert_cleaned(&names);
}

#[test]
fn ecmp_dead_node_black_holes_its_flows_until_its_next_hop_is_withdrawn() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A router's detection time (BFD at 3 x 100 ms, say) before it withdraws.
    const DETECT: Duration = Duration::from_millis(300);
    let mut ecmp = Ecmp::build(3, &[], 100).unwrap();
    let _echo = EchoNodes::start(&ecmp.net.ingress, ecmp.net.vip()).unwrap();
    let (flows, owner) = settled_ecmp(&ecmp);

    let victim = 2;
    let t0 = flows.now();
    ecmp.kill_node(victim).unwrap();
    // The router has not noticed yet: the next hop is still in the group.
    assert!(ecmp.members().contains(&victim));
    // Not a wait for a condition: the emulated detection time itself.
    std::thread::sleep((t0 + DETECT).saturating_sub(flows.now()));
    let t_withdraw = flows.now();
    ecmp.withdraw(victim).unwrap();
    flows
        .wait("10 answers on every flow after the withdrawal", Duration::from_secs(10), answered_since(t_withdraw, 10))
        .unwrap();
    let end = flows.now();
    let answers = flows.stop().unwrap();

    let (moved, others) = check_moves(&answers, &owner, victim as u8, t0, end);
    let (lo, med, hi) = spread(moved.clone());
    println!(
        "ECMP node death: {} flows of node {} black-holed for the {:.0} ms until the withdrawal ({:.1} ms after the death): \
         gap min/median/max {lo:.1}/{med:.1}/{hi:.1} ms; the other flows' longest gap {:.1} ms",
        moved.len(),
        victim + 1,
        ms(DETECT),
        ms(t_withdraw - t0),
        ms(others)
    );
    assert!(lo >= ms(DETECT) - ms(INTERVAL) - 5.0, "the dead node's flows were black-holed until the withdrawal");
    assert!(hi <= ms(t_withdraw - t0) + 100.0, "gap beyond the withdrawal + 100 ms: {hi:.1} ms");
}

/// Two nodes, the master answers; stop it as `how` says; the backup must
/// answer every flow within keepalived's failover time (plus one interval
/// and scheduling slack).
fn vrrp_failover(how: Stop) {
    let mut vrrp = Vrrp::build(&[0], 50).unwrap();
    let names = vrrp.net.namespaces();
    pods_reachable(&vrrp.net);
    let first = vrrp.master().unwrap().expect("a master");
    assert_eq!(first, 0, "the higher priority is master");
    let _echo = EchoNodes::start(&vrrp.net.ingress, vrrp.net.vip()).unwrap();
    let flows = Flows::start(vrrp.net.player_sockets(100).unwrap(), vrrp.net.vip(), INTERVAL, RUN_LIMIT).unwrap();
    flows.wait("5 answers on every flow", Duration::from_secs(20), answered_since(Duration::ZERO, 5)).unwrap();
    let owner = owners(&flows.answers(), Duration::ZERO, flows.now());
    assert!(owner.iter().all(|&o| o == 0), "every flow answered by the master");

    let t0 = flows.now();
    let stopped = Instant::now();
    assert_eq!(vrrp.stop_master(how).unwrap(), 0);
    let backup = vrrp.wait_master(Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let took_vip = stopped.elapsed();
    assert_eq!(backup, 1);
    let settled = t0 + failover_time() + Duration::from_millis(100);
    flows
        .wait("10 answers from the backup on every flow", Duration::from_secs(10), answered_since(settled, 10))
        .unwrap();
    let end = flows.now();
    let answers = flows.stop().unwrap();
    let after = owners(&answers, settled, end);
    assert!(after.iter().all(|&o| o == 1), "every flow answered by the backup");
    let gaps: Vec<Duration> = answers.iter().map(|a| longest_gap(a, t0, end)).collect();
    let (lo, med, hi) = spread(gaps);
    println!(
        "VRRP {how:?}: the backup held the VIP {:.1} ms after the stop (keepalived's failover time as configured: {:.1} ms); \
         100 flows' gap min/median/max {lo:.1}/{med:.1}/{hi:.1} ms",
        ms(took_vip),
        ms(failover_time())
    );
    let bound = ms(failover_time()) + ms(INTERVAL) + 100.0;
    assert!(hi <= bound, "gap {hi:.1} ms beyond keepalived's failover time + 120 ms ({bound:.1} ms):\n{}", vrrp.logs());
    drop((_echo, vrrp));
    assert_cleaned(&names);
}

#[test]
fn vrrp_backup_answers_within_the_failover_time_after_the_master_crashes() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    vrrp_failover(Stop::Crash);
}

#[test]
fn vrrp_backup_answers_at_once_after_the_master_stops() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    vrrp_failover(Stop::Term);
}
