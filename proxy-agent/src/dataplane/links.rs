//! XDP attachments that outlive the agent. Each interface's link is pinned
//! at `<bpffs>/links/<interface>`, so the data plane keeps forwarding (and
//! keeps rewriting shard replies to the public address) while the agent is
//! stopped, killed, restarting or being upgraded. A starting agent adopts a
//! pinned link and swaps its own program in atomically (BPF_LINK_UPDATE):
//! there is no moment without a program on the interface. Only
//! `proxy-agent detach` takes the data plane off.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
    Xdp, XdpMode,
};

/// Where an interface's pinned link lives.
pub fn link_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join("links").join(interface)
}

/// How an interface got the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// A pinned link from an earlier agent now runs this agent's program.
    Adopted,
    /// A new link, now pinned.
    New,
}

/// Runs `prog` on `interface`: in the pinned link if there is one (atomic
/// replace), else in a new link that is then pinned.
pub fn attach_or_adopt(prog: &mut Xdp, pin_dir: &Path, interface: &str, mode: XdpMode) -> Result<Attachment> {
    let pin = link_pin(pin_dir, interface);
    if pin.exists() {
        let pinned =
            PinnedLink::from_pin(&pin).with_context(|| format!("opening the pinned link {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .with_context(|| format!("{} is not an XDP link; remove it and start again", pin.display()))?;
        prog.attach_to_link(link).with_context(|| format!("replacing the program in {}", pin.display()))?;
        return Ok(Attachment::Adopted);
    }
    fs::create_dir_all(pin.parent().expect("links folder")).context("creating the links folder")?;
    let id = prog.attach(interface, mode)?;
    let link = prog.take_link(id)?;
    let fd = FdLink::try_from(link).context(
        "the kernel attached XDP without a BPF link (netlink), which cannot be pinned; a kernel of 5.9 or later is needed",
    )?;
    fd.pin(&pin).with_context(|| format!("pinning the link at {}", pin.display()))?;
    Ok(Attachment::New)
}

/// The interfaces with a pinned link.
pub fn pinned(pin_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(pin_dir.join("links"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Takes the data plane off: removes every pinned link, which detaches the
/// program from its interface. Returns the interfaces.
pub fn detach_all(pin_dir: &Path) -> Result<Vec<String>> {
    let names = pinned(pin_dir);
    for name in &names {
        let pin = link_pin(pin_dir, name);
        fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
    }
    Ok(names)
}
