//! `cargo xtask`: everything that is not a plain `cargo build`.
//!
//!   cargo xtask build-ebpf        build the XDP object (kernel side)
//!   cargo xtask build             the object, then the agent and the simulators
//!   cargo xtask test              build, then every test (needs root), the
//!                                 bench smoke and the kernel matrix
//!   cargo xtask test --kernel V   build, then V's tests inside Debian's kernel V
//!                                 in a VM (see kernels.rs; V: 5.10 | 6.1 | 6.12)
//!   cargo xtask kernels [V...]    build, then the kernel matrix (or some of it)
//!   cargo xtask demo [ARGS]       build, then the namespace demo
//!   cargo xtask fuzz [--packets N --seed S]  random and mutated frames through the program
//!   cargo xtask soak [--minutes N --seed S]  build, then the whole cluster under a seeded
//!                                 fault schedule, checked by an independent checker
//!                                 (--seconds N, --players N, --break return-path; see soak.rs)
//!   cargo xtask bench WHAT        build, then a benchmark: fastpath | migrate |
//!                                 failover | agent [--baseline-agent PATH] | query |
//!                                 memory | e2e [--rate N --repeats N --seconds S] | sites
//!   cargo xtask bench smoke       build, then every benchmark with its smallest
//!                                 settings (a few seconds each); `test` ends with it

mod bounded;
mod kernels;
mod soak;

use bounded::Ended;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("xtask: {msg}");
    ExitCode::FAILURE
}

/// Runs a command, returning an error message naming it when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

/// The eBPF toolchain setup chose, as `scripts/setup.sh --print-env` reports it.
struct EbpfToolchain {
    toolchain: String,
    bootstrap: bool,
    linker_dir: String,
}

fn ebpf_toolchain() -> Result<EbpfToolchain, String> {
    let out = Command::new("bash")
        .arg(root().join("scripts/setup.sh"))
        .arg("--print-env")
        .output()
        .map_err(|e| format!("running scripts/setup.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/setup.sh --print-env failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
            .ok_or_else(|| format!("scripts/setup.sh did not print {key}"))
    };
    Ok(EbpfToolchain {
        toolchain: get("EBPF_TOOLCHAIN")?,
        bootstrap: get("EBPF_RUSTC_BOOTSTRAP")? == "1",
        linker_dir: get("EBPF_LINKER_DIR")?,
    })
}

fn build_ebpf() -> Result<(), String> {
    let tc = ebpf_toolchain()?;
    let linker = Path::new(&tc.linker_dir).join("bpf-linker");
    if !linker.exists() {
        return Err(format!("{} is missing: run `bash scripts/setup.sh` first", linker.display()));
    }
    eprintln!("xtask: building the XDP object with {} (RUSTC_BOOTSTRAP={})", tc.toolchain, tc.bootstrap as u8);
    // First the rebuilt variant (one more log line, for the upgrade test),
    // kept aside; then the object the agent embeds, last, at its usual path.
    let object = root().join("proxy-ebpf/target/bpfel-unknown-none/release/proxy-ebpf");
    run(&mut ebpf_cargo(&tc, &["--features", "rebuilt-variant"]))?;
    std::fs::copy(&object, root().join(REBUILT_OBJECT)).map_err(|e| format!("keeping the rebuilt variant: {e}"))?;
    run(&mut ebpf_cargo(&tc, &[]))
}

/// Where `build-ebpf` keeps the rebuilt variant of the XDP object.
const REBUILT_OBJECT: &str = "proxy-ebpf/target/proxy-ebpf-rebuilt";

fn ebpf_cargo(tc: &EbpfToolchain, extra: &[&str]) -> Command {
    let path = format!("{}:{}", tc.linker_dir, std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("rustup");
    cmd.args(["run", &tc.toolchain, "cargo", "build", "--release"])
        .args(extra)
        .current_dir(root().join("proxy-ebpf"))
        .env("PATH", path)
        // The outer cargo's settings must not leak into the BPF build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    if tc.bootstrap {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    cmd
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn build_user() -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "proxy-agent", "-p", "tests", "--bins"]))
}

/// Runs the test command, echoing its output, and closes with one plain
/// line totalling every test binary's result ("N passed, M failed").
fn run_tests(cmd: &mut Command) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    let shown = format!("{cmd:?}");
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).spawn().map_err(|e| format!("cannot start {shown}: {e}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.trim_start_matches("ok. ").trim_start_matches("FAILED. ").parse().unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for {shown}: {e}"))?;
    println!("tests: {passed} passed, {failed} failed");
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

/// House rules: formatted, and clippy-clean with warnings as errors.
fn lint() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--release", "--workspace", "--all-targets", "--", "-D", "warnings"]))
}

fn bin(name: &str) -> PathBuf {
    root().join("target/release").join(name)
}

/// `fuzz [--packets N] [--seed S]`: the fuzz test with more frames and,
/// optionally, one more seed (its kept seeds always run too).
fn fuzz(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(["test", "--release", "-p", "tests", "--test", "fuzz", "--", "--nocapture"]);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--packets" => cmd.env("SAMP_FUZZ_PACKETS", value),
            "--seed" => cmd.env("SAMP_FUZZ_SEED", value),
            other => return Err(format!("unknown fuzz option {other}; use --packets N, --seed S")),
        };
    }
    run(&mut cmd)
}

/// Every benchmark the README names, with its smallest settings: each must
/// run to the end (a few seconds), so none is found broken later. The
/// figures they print mean nothing at these sizes.
const SMOKE: &[(&str, &str)] = &[
    ("fastpath", "--calls 20 --spread 4000"),
    ("migrate", "--runs 1"),
    ("ingress", "--join-rate 200 --join-seconds 1 --sessions 2000 --deaths 1"),
    ("failover", "--runs 1 --api-delays-ms 50 --players 5"),
    ("agent", "--sessions 250 --runs 3 --idle-seconds 0.5 --idle-timeout-ms 1000"),
    ("query", "--calls 20 --seconds 1 --rate 2000"),
    ("sites", "--pings 5 --runs 1 --players 3"),
    ("memory", "--sessions 4096 --agent-sessions 2000 --idle-timeout-ms 1000"),
    (
        "e2e",
        "--rate 5000 --repeats 1 --seconds 0.2 --step-seconds 0.1 --max-rate 20000 --search-steps 2 --tries 1 \
         --pings 10",
    ),
];

/// A smoke run longer than this is a failure (the bench is stopped).
const SMOKE_LIMIT: Duration = Duration::from_secs(180);

/// `bench smoke`: runs each of `SMOKE` in its own process group, stops one
/// that outlives `SMOKE_LIMIT`, removes what a failed one left (its
/// namespaces and bpffs pins are named `sampx-PID-...`), prints each one's
/// time and fails if any failed.
fn bench_smoke() -> Result<(), String> {
    let started = Instant::now();
    let mut results = Vec::new();
    for (what, args) in SMOKE {
        eprintln!("xtask: bench smoke: {what} {args}");
        let t0 = Instant::now();
        let outcome = smoke_one(what, args);
        results.push((*what, t0.elapsed(), outcome));
    }
    println!("bench smoke (smallest settings; the figures above mean nothing):");
    let mut failed = Vec::new();
    for (what, took, outcome) in &results {
        match outcome {
            Ok(()) => println!("  {what:<10} ok     {:>6.1} s", took.as_secs_f64()),
            Err(e) => {
                println!("  {what:<10} FAILED {:>6.1} s: {e}", took.as_secs_f64());
                failed.push(*what);
            }
        }
    }
    println!("  total {:.1} s", started.elapsed().as_secs_f64());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("bench smoke: {} failed", failed.join(", ")))
    }
}

fn smoke_one(what: &str, args: &str) -> Result<(), String> {
    let mut cmd = Command::new(bin("bench"));
    cmd.arg(what).args(args.split_whitespace()).env("PROXY_AGENT_BIN", bin("proxy-agent"));
    let (pid, ended) = bounded::run_bounded(cmd, SMOKE_LIMIT, Duration::from_secs(10))?;
    let result = match ended {
        Ended::Exited(status) if status.success() => Ok(()),
        Ended::Exited(status) => Err(format!("exited with {status}")),
        Ended::TimedOut => Err(format!("still running after {} s: stopped", SMOKE_LIMIT.as_secs())),
    };
    let left = bounded::remove_leftovers(pid);
    if left.is_empty() {
        return result;
    }
    let note = format!("left behind (now removed): {}", left.join(", "));
    Err(match result {
        Ok(()) => note,
        Err(e) => format!("{e}; {note}"),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        return fail("usage: cargo xtask build-ebpf | build | test [--kernel V] | kernels [V...] | demo [--seconds N --players N] | bench fastpath|migrate|failover|agent|query|memory|e2e|sites|smoke | fuzz [--packets N --seed S] | soak [--minutes N --seed S]");
    };
    let rest = &args[1..];
    let result = match task.as_str() {
        "build-ebpf" => build_ebpf(),
        "build" => build_ebpf().and_then(|_| build_user()),
        "test" if rest.first().map(String::as_str) == Some("--kernel") => {
            let kernel = rest.get(1).cloned().unwrap_or_default();
            build_ebpf().and_then(|_| build_user()).and_then(|_| kernels::matrix(&[kernel]))
        }
        "kernels" => build_ebpf().and_then(|_| build_user()).and_then(|_| kernels::matrix(rest)),
        "test" => build_ebpf()
            .and_then(|_| build_user())
            .and_then(|_| lint())
            .and_then(|_| {
                run_tests(
                    cargo()
                        .args(["test", "--release", "--workspace", "--all-targets"])
                        .args(rest)
                        .env("PROXY_AGENT_BIN", bin("proxy-agent")),
                )
            })
            // The whole suite (CI's) ends with every bench; a filtered run does not.
            .and_then(|_| if rest.is_empty() { bench_smoke() } else { Ok(()) })
            // ... and with the kernel matrix (SAMP_SKIP_KERNELS=1 leaves it out).
            .and_then(|_| {
                if rest.is_empty() && std::env::var_os("SAMP_SKIP_KERNELS").is_none() {
                    kernels::matrix(&[])
                } else {
                    Ok(())
                }
            }),
        "demo" => build_ebpf()
            .and_then(|_| build_user())
            .and_then(|_| run(Command::new(bin("demo")).args(rest).env("PROXY_AGENT_BIN", bin("proxy-agent")))),
        "bench" if rest.first().map(String::as_str) == Some("smoke") => {
            build_ebpf().and_then(|_| build_user()).and_then(|_| bench_smoke())
        }
        "bench" => build_ebpf()
            .and_then(|_| build_user())
            .and_then(|_| run(Command::new(bin("bench")).args(rest).env("PROXY_AGENT_BIN", bin("proxy-agent")))),
        "fuzz" => build_ebpf().and_then(|_| fuzz(rest)),
        "soak" => build_ebpf().and_then(|_| build_user()).and_then(|_| soak::soak(rest)),
        other => {
            Err(format!("unknown task `{other}`; tasks: build-ebpf, build, test, kernels, demo, bench, fuzz, soak"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
