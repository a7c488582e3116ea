//! `cargo xtask`: everything that is not a plain `cargo build`.
//!
//!   cargo xtask build-ebpf        build the XDP object (kernel side)
//!   cargo xtask build             the object, then the agent and the simulators
//!   cargo xtask test              build, then every test (needs root)
//!   cargo xtask demo [ARGS]       build, then the namespace demo
//!   cargo xtask fuzz [--packets N --seed S]  random and mutated frames through the program
//!   cargo xtask bench WHAT        build, then a benchmark: fastpath | migrate |
//!                                 failover | agent [--baseline-agent PATH] | query |
//!                                 memory | e2e [--rate N --repeats N --seconds S]

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        return fail("usage: cargo xtask build-ebpf | build | test | demo [--seconds N --players N] | bench fastpath|migrate|failover|agent|query|memory|e2e | fuzz [--packets N --seed S]");
    };
    let rest = &args[1..];
    let result = match task.as_str() {
        "build-ebpf" => build_ebpf(),
        "build" => build_ebpf().and_then(|_| build_user()),
        "test" => build_ebpf().and_then(|_| build_user()).and_then(|_| lint()).and_then(|_| {
            run_tests(
                cargo()
                    .args(["test", "--release", "--workspace", "--all-targets"])
                    .args(rest)
                    .env("PROXY_AGENT_BIN", bin("proxy-agent")),
            )
        }),
        "demo" => build_ebpf()
            .and_then(|_| build_user())
            .and_then(|_| run(Command::new(bin("demo")).args(rest).env("PROXY_AGENT_BIN", bin("proxy-agent")))),
        "bench" => build_ebpf()
            .and_then(|_| build_user())
            .and_then(|_| run(Command::new(bin("bench")).args(rest).env("PROXY_AGENT_BIN", bin("proxy-agent")))),
        "fuzz" => build_ebpf().and_then(|_| fuzz(rest)),
        other => Err(format!("unknown task `{other}`; tasks: build-ebpf, build, test, demo, bench, fuzz")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
