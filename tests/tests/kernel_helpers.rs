//! The fixture of the 5.18 helper probe: where the kernel has
//! `bpf_xdp_get_buff_len` and `bpf_xdp_store_bytes` the data plane answers
//! `i` itself (XDP_TX); where the probe finds them missing (5.15, or
//! `SAMP_PRETEND_NO_XDP_BYTES_HELPERS=1` here) the object is loaded with
//! them cut out and the query goes to the agent's responder (XDP_PASS, the
//! destination rewritten to the agent's address); `p` stays in the kernel.
//! One test: the knob is process-wide, so the two loads run in turn.

use proxy_agent::dataplane::kernel_probe;
use proxy_common::{Counter, QuerySettings};
use tests::{bed::*, packet::Udp};

fn query(op: u8, extra: &[u8]) -> Vec<u8> {
    let mut q = b"SAMP".to_vec();
    q.extend_from_slice(&VIP.octets());
    q.extend_from_slice(&PORT.to_le_bytes());
    q.push(op);
    q.extend_from_slice(extra);
    q
}

fn run_one(bed: &Bed, name: &str, p: &Udp, want: u32, expected: Option<Vec<u8>>, counter: Counter) {
    let before = bed.counter(counter);
    let (verdict, out) = bed.run(&p.frame());
    assert_eq!(verdict, want, "{name}: verdict");
    if let Some(expected) = expected {
        assert_eq!(out, expected, "{name}: output");
    }
    assert_eq!(bed.counter(counter), before + 1, "{name}: counter {}", counter.name());
}

#[test]
fn the_query_path_follows_the_helper_probe() {
    for pretend in [false, true] {
        if pretend {
            std::env::set_var("SAMP_PRETEND_NO_XDP_BYTES_HELPERS", "1");
        }
        let present = kernel_probe::xdp_bytes_helpers();
        let mut bed = Bed::new().expect("test bed");
        // The figure the docs quote per kernel (the matrix prints it).
        let verified = bed.dp.program().info().ok().and_then(|i| i.verified_instruction_count());
        println!(
            "verifier: samp_proxy {} instructions processed on {} (query helpers {})",
            verified.map_or("?".into(), |n| n.to_string()),
            kernel_probe::release(),
            if present { "present" } else { "cut out" }
        );
        let local = proxy_common::net::addr_to_map(LOCAL.octets());
        bed.tables.query_settings.set(0, QuerySettings { per_second: 0, agent_addr: local }, 0).unwrap();
        let p = Udp::new(CLIENT, 43000, VIP, PORT, &query(b'i', &[]));
        if present {
            run_one(&bed, "`i` in the kernel", &p, XDP_TX, None, Counter::QueryInfo);
        } else {
            let mut to_agent = p.clone();
            to_agent.dst = LOCAL;
            run_one(&bed, "`i` to the agent", &p, XDP_PASS, Some(to_agent.frame()), Counter::PassQueryAgent);
        }
        let ping = Udp::new(CLIENT, 43001, VIP, PORT, &query(b'p', &[1, 2, 3, 4]));
        run_one(&bed, "`p` always in the kernel", &ping, XDP_TX, None, Counter::QueryPing);
        eprintln!("helpers {}: passed", if present { "present" } else { "absent" });
    }
}
