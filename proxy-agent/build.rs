//! Embeds the XDP object built by `cargo xtask build-ebpf`, when present.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_ebpf_object)");
    let object = match std::env::var_os("PROXY_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proxy-ebpf/target/bpfel-unknown-none/release/proxy-ebpf")
        }
    };
    println!("cargo::rerun-if-env-changed=PROXY_EBPF_OBJECT");
    println!("cargo::rerun-if-changed={}", object.display());
    if object.exists() {
        println!("cargo::rustc-cfg=has_ebpf_object");
        println!("cargo::rustc-env=PROXY_EBPF_OBJECT={}", object.display());
    } else {
        println!("cargo::warning=no XDP object at {}: run `cargo xtask build-ebpf`", object.display());
    }
}
