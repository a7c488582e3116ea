//! The XDP object, embedded at build time by `build.rs` from what
//! `cargo xtask build-ebpf` produced.

use std::{borrow::Cow, path::Path};

use anyhow::{bail, Context, Result};

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

/// The object in `file` when given (`run --xdp-object`: a rebuilt data plane
/// without rebuilding the agent), else the embedded one.
pub fn chosen(file: Option<&Path>) -> Result<Cow<'static, [u8]>> {
    match file {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading the XDP object {}", path.display()))?;
            if !bytes.starts_with(b"\x7fELF") {
                bail!("{} is not an ELF object (build one with `cargo xtask build-ebpf`)", path.display());
            }
            Ok(Cow::Owned(bytes))
        }
        None => bytes().map(Cow::Borrowed),
    }
}
