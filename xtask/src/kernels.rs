//! `cargo xtask test --kernel VERSION` and `cargo xtask kernels`: the test
//! binaries run inside Debian's own kernels, booted under qemu (software
//! emulation: /dev/kvm does not work on these machines) by virtme-ng with
//! this machine's root file system. `scripts/kernels.sh` fetches the
//! kernels (cached under ~/.cache) and the tools.
//!
//! Emulation is slow (a fixtures run takes about a minute), so each kernel
//! runs the subset that proves what it is in the docs' table for
//! (docs/requirements.md): the fully supported 6.1 everything the issue
//! names, 6.12 the program-level suites and two end-to-end ones, 5.10 (below
//! the floor) the refusal only. Each kernel's output is kept in
//! target/kernels/VERSION/.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use crate::{bin, cargo, root, run};

/// (kernel, test targets) of the matrix, in the order CI runs them.
pub const MATRIX: &[(&str, &[&str])] = &[
    ("5.10", &["kernel_floor"]),
    (
        "6.1",
        &[
            "kernel_floor",
            "kernel_helpers",
            "kernel_guard",
            "fixtures",
            "fuzz",
            "e2e_foundation",
            "e2e_failover",
            "e2e_restart",
            "e2e_query",
            "e2e_return",
            "e2e_samp037",
        ],
    ),
    ("6.12", &["kernel_floor", "kernel_helpers", "kernel_guard", "fixtures", "fuzz", "e2e_foundation", "e2e_query"]),
];

fn tools() -> PathBuf {
    std::env::var_os("SAMP_PROXY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/samp-cluster-proxy"))
}

/// One kernel's outcome.
pub struct Outcome {
    pub kernel: String,
    pub release: String,
    pub passed: u64,
    pub failed: u64,
    pub seconds: f64,
    pub failed_targets: Vec<String>,
}

/// Builds the named test targets (no run) and returns (target, executable).
fn test_executables(targets: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    // The same selection as `cargo xtask test`'s own run, so after it (CI)
    // nothing is compiled again: only the executables' paths are read.
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--workspace", "--all-targets", "--no-run", "--message-format=json"]);
    let out = cmd.stderr(std::process::Stdio::inherit()).output().map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !out.status.success() {
        return Err("building the test binaries failed".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in text.lines() {
        let (Some(name), Some(exe)) = (json_str(line, "\"name\":\""), json_str(line, "\"executable\":\"")) else {
            continue;
        };
        if line.contains("\"kind\":[\"test\"]") && targets.contains(&name.as_str()) && line.contains("/tests/tests/") {
            found.push((name, PathBuf::from(exe)));
        }
    }
    Ok(found)
}

/// The string after `key` up to the next quote (cargo's JSON escapes none
/// in names and paths here).
fn json_str(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Runs `targets` inside `kernel`; the guest's output is echoed.
pub fn run_kernel(kernel: &str, targets: &[&str]) -> Result<Outcome, String> {
    run(Command::new("bash").arg(root().join("scripts/kernels.sh")).arg(kernel))?;
    let dir = tools().join("kernels").join(kernel);
    let release = std::fs::read_to_string(dir.join("release")).map_err(|e| format!("kernel {kernel}: {e}"))?;
    let exes = test_executables(targets)?;
    let out_dir = root().join("target/kernels").join(kernel);
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let script = guest_script(&exes, &out_dir);
    std::fs::write(out_dir.join("guest.sh"), script).map_err(|e| format!("writing the guest script: {e}"))?;
    eprintln!("xtask: kernel {kernel} ({}): booting under qemu (TCG) for {}", release.trim(), targets.join(", "));
    let t0 = Instant::now();
    let vng = tools().join("virtme-ng/bin");
    let path = format!("{}:{}", vng.display(), std::env::var("PATH").unwrap_or_default());
    let status = Command::new(vng.join("vng"))
        .env("PATH", path)
        .args(["--run"])
        .arg(dir.join("vmlinuz"))
        .args(["--disable-kvm", "--cpus", "2", "--memory", "3G", "--user", "root", "--rwdir"])
        .arg(&out_dir)
        .args(["--exec", &format!("bash {}", out_dir.join("guest.sh").display())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // A pipe, copied to ours: qemu reopens its stderr by path
        // (/proc/self/fd/2) as a file, which would truncate a log file that
        // our stderr is redirected to (`cargo xtask test > log 2>&1`).
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut err) = child.stderr.take() {
                std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::stderr()));
            }
            child.wait()
        })
        .map_err(|e| format!("starting vng: {e}"))?;
    let seconds = t0.elapsed().as_secs_f64();
    let mut outcome = Outcome {
        kernel: kernel.into(),
        release: release.trim().into(),
        passed: 0,
        failed: 0,
        seconds,
        failed_targets: vec![],
    };
    for (name, _) in &exes {
        let log = std::fs::read_to_string(out_dir.join(format!("{name}.log"))).unwrap_or_default();
        print!("{}", log.lines().map(|l| format!("[{kernel}] {l}\n")).collect::<String>());
        let (p, f) = count(&log);
        let rc = std::fs::read_to_string(out_dir.join(format!("{name}.rc"))).unwrap_or_default();
        outcome.passed += p;
        outcome.failed += f;
        if rc.trim() != "0" {
            outcome.failed_targets.push(name.clone());
            if f == 0 {
                outcome.failed += 1;
            }
        }
    }
    if !status.success() && outcome.failed_targets.is_empty() && outcome.passed == 0 {
        return Err(format!("kernel {kernel}: the virtual machine failed ({status})"));
    }
    Ok(outcome)
}

/// What the guest runs: bpffs, then each test binary from the tests
/// crate's folder (as cargo runs them), output and exit code into the
/// writable folder shared with the host.
fn guest_script(exes: &[(String, PathBuf)], out: &Path) -> String {
    let mut s = String::from("set -u\nmount -t bpf bpf /sys/fs/bpf 2>/dev/null\nip link set lo up\n");
    s += &format!("cd {}\nexport PROXY_AGENT_BIN={}\n", root().join("tests").display(), bin("proxy-agent").display());
    for (name, exe) in exes {
        let log = out.join(format!("{name}.log"));
        s += &format!(
            "timeout 900 {exe} --test-threads 1 --show-output > {log} 2>&1; echo $? > {rc}\n",
            exe = exe.display(),
            log = log.display(),
            rc = out.join(format!("{name}.rc")).display()
        );
    }
    s
}

/// Passed and failed tests in a test binary's output.
fn count(log: &str) -> (u64, u64) {
    let (mut passed, mut failed) = (0, 0);
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("test result: ") else { continue };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            if let [.., n, kind] = words.as_slice() {
                let n = n.parse().unwrap_or(0);
                match *kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    (passed, failed)
}

/// Every kernel of `MATRIX` (or those named); prints the table and fails
/// when any test failed.
pub fn matrix(only: &[String]) -> Result<(), String> {
    let t0 = Instant::now();
    let mut outcomes = Vec::new();
    for (kernel, targets) in MATRIX.iter().filter(|(k, _)| only.is_empty() || only.iter().any(|o| o == k)) {
        outcomes.push(run_kernel(kernel, targets)?);
    }
    println!("kernel matrix (qemu TCG, {:.0} s):", t0.elapsed().as_secs_f64());
    let (mut passed, mut failed) = (0, 0);
    for o in &outcomes {
        println!(
            "  {:<5} {:<24} {:>3} passed {:>3} failed {:>5.0} s {}",
            o.kernel,
            o.release,
            o.passed,
            o.failed,
            o.seconds,
            if o.failed_targets.is_empty() {
                String::new()
            } else {
                format!("FAILED: {}", o.failed_targets.join(", "))
            }
        );
        passed += o.passed;
        failed += o.failed;
    }
    println!("kernels: {passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("kernel matrix: {failed} failed"))
    }
}
