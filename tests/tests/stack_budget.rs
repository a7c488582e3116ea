//! The XDP object's stack as Debian 12's 6.1 verifier counts it (see
//! `tests::stack_budget`): every program's deepest chain of calls within
//! 512 bytes, counted the way 6.1 does, checked on the host in a second.
//! The emulated 6.1 of the kernel matrix is the proof; this catches the
//! regression where it is made.

use proxy_agent::dataplane::ebpf_object;
use tests::stack_budget::{counted_frame, deepest_chain, functions, readable, MAX_STACK};

#[test]
fn every_programs_call_chain_fits_6_1s_stack_limit() {
    let elf = ebpf_object::bytes().unwrap();
    let functions = functions(elf).unwrap();
    let mut checked = 0;
    for entry in ["samp_proxy", "egress_guard", "tc_seen", "xdp_pass_baseline"] {
        let chain = deepest_chain(&functions, entry).unwrap();
        let shown: Vec<String> = chain
            .frames
            .iter()
            .map(|(name, depth)| format!("{} {depth} (counted {})", readable(name), counted_frame(*depth)))
            .collect();
        println!("{entry}: {} of {MAX_STACK} bytes: {}", chain.counted, shown.join(" -> "));
        assert!(
            chain.counted <= MAX_STACK,
            "6.1 would refuse {entry}: its deepest chain counts {} bytes > {MAX_STACK}: {}",
            chain.counted,
            shown.join(" -> ")
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
    // The count is not vacuous: the XDP program calls out and holds a frame.
    let main = deepest_chain(&functions, "samp_proxy").unwrap();
    assert!(main.frames.len() >= 3 && main.counted >= 256, "the chain was read: {main:?}");
}

/// The counting itself, on the refusal 6.1 printed for the program before
/// it was cut ("combined stack size of 3 calls is 544", depths 0+480+0).
#[test]
fn the_count_matches_what_6_1_printed() {
    assert_eq!(counted_frame(0) + counted_frame(480) + counted_frame(0), 544);
    assert_eq!(counted_frame(0) + counted_frame(360) + counted_frame(80) + counted_frame(0), 544);
    assert_eq!(counted_frame(33), 64);
}
