//! `soak`: the whole cluster under a seeded fault schedule (issue 23; see
//! `tests::soak` and docs/development/testing.md). Exits 1 when an
//! invariant broke, printing the seed, the schedule and the history.
//! `cargo xtask soak --minutes N --seed S` runs it.

use std::process::ExitCode;

use clap::Parser;
use tests::soak::{self, Break, Options};

#[derive(Parser)]
#[command(about = "The soak: a cluster in namespaces, players, and overlapping faults drawn from a seed")]
struct Args {
    /// Length of the run in minutes (the quiet end included).
    #[arg(long, default_value_t = 3)]
    minutes: u64,
    /// Length in seconds instead (overrides --minutes).
    #[arg(long)]
    seconds: Option<u64>,
    #[arg(long, default_value_t = 23)]
    seed: u64,
    /// Players that stay the whole run; waves of others come and go.
    #[arg(long, default_value_t = 40)]
    players: usize,
    /// A deliberately broken behaviour (the checker's self-test): return-path or split-group.
    #[arg(long = "break")]
    breakage: Option<Break>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let o = Options {
        seconds: a.seconds.unwrap_or(a.minutes * 60).max(60),
        seed: a.seed,
        players: a.players,
        breakage: a.breakage,
    };
    match soak::run(&o) {
        Ok(out) => {
            println!("{}", out.report);
            if out.broken.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: the harness failed: {e:#}");
            ExitCode::from(2)
        }
    }
}
