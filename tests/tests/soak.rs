//! The soak in CI (issue 23): three minutes of the whole cluster under the
//! fault schedule of a fixed seed, failing on any broken invariant; and the
//! checker's self-test: with one game node's return path taken away, the
//! checker must find players receiving packets from an address other than
//! the public one. `cargo xtask soak --minutes N --seed S` runs longer ones.

use std::sync::Mutex;

use tests::soak::{self, Break, Options};

/// The seed CI runs (`cargo xtask soak --seed 23` replays it).
const CI_SEED: u64 = 23;

/// One soak at a time: each builds a whole cluster on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn three_minutes_of_overlapping_faults_break_no_invariant() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let o = Options { seconds: 180, seed: CI_SEED, players: 40, breakage: None };
    let out = soak::run(&o).expect("the soak's harness");
    println!("{}", out.report);
    assert!(out.broken.is_empty(), "the soak broke {} invariant(s):\n{}", out.broken.len(), out.report);
}

#[test]
fn the_checker_bites_when_a_return_path_is_taken_away() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let o = Options { seconds: 120, seed: CI_SEED, players: 40, breakage: Some(Break::ReturnPath) };
    let out = soak::run(&o).expect("the soak's harness");
    println!("{}", out.report);
    assert!(
        out.broken.iter().any(|b| b.contains("from an address other than the public one")),
        "the checker did not see the broken return path:\n{}",
        out.report
    );
    assert!(out.report.contains("replay: cargo xtask soak"), "a broken run says how to replay it");
}
