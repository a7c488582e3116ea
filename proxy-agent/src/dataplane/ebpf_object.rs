//! The XDP object, embedded at build time by `build.rs` from what
//! `cargo xtask build-ebpf` produced.

use anyhow::{bail, Result};

#[cfg(has_ebpf_object)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PROXY_EBPF_OBJECT"));

#[cfg(not(has_ebpf_object))]
static OBJECT: &[u8] = &[];

/// The embedded object, or an error saying how to build it.
pub fn bytes() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        bail!("this binary was built without the XDP object: run `cargo xtask build-ebpf` (or `cargo xtask build`), then rebuild the agent");
    }
    Ok(OBJECT)
}
