//! XDP attachments that outlive the agent. Each interface's link is pinned
//! at `<bpffs>/links/<interface>`, so the data plane keeps forwarding (and
//! keeps rewriting shard replies to the public address) while the agent is
//! stopped, killed, restarting or being upgraded. A starting agent adopts a
//! pinned link and swaps its own program in atomically (BPF_LINK_UPDATE):
//! there is no moment without a program on the interface. Only
//! `proxy-agent detach` takes the data plane off.
//!
//! The egress guard (a TC program on the egress of the same interfaces,
//! attached through TCX where the kernel has it, else as a clsact/cls_bpf
//! filter: `guard_attach`) is, under TCX, pinned the same way at
//! `<bpffs>/egress-links/<interface>`, adopted the same way, and taken off
//! by the same `detach`: the node's own ICMP errors naming a shard stay
//! dropped while no agent runs.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::guard_attach::{self, GuardKind};
use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
};

/// Where an interface's pinned link lives.
pub fn link_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join("links").join(interface)
}

/// The folder of the egress guard's pinned links, beside `links`.
pub const GUARD_LINKS: &str = "egress-links";

/// Where an interface's pinned egress guard link lives.
pub fn guard_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(GUARD_LINKS).join(interface)
}

/// Removes both pins of an interface (its XDP link and its guard), which
/// detaches whatever no one else holds.
pub fn unpin(pin_dir: &Path, interface: &str) {
    let _ = fs::remove_file(link_pin(pin_dir, interface));
    let _ = fs::remove_file(guard_pin(pin_dir, interface));
    guard_attach::remove_clsact(pin_dir, interface);
}

/// How an interface got the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// A pinned link from an earlier agent now runs this agent's program.
    Adopted,
    /// A new link, now pinned.
    New,
}

/// Swaps a program into the link pinned at `pin`, if there is one (`swap`
/// does it); returns whether it did. A pinned link whose interface went
/// away (and came back under the same name: a re-created pod's veth) is
/// severed and takes no program: its pin is removed so that a new link
/// replaces it.
fn adopt_pinned(pin: &Path, what: &str, swap: impl FnOnce(FdLink) -> Result<()>) -> Result<bool> {
    if !pin.exists() {
        return Ok(false);
    }
    let pinned = PinnedLink::from_pin(pin).with_context(|| format!("opening the pinned link {}", pin.display()))?;
    match swap(FdLink::from(pinned)) {
        Ok(()) => Ok(true),
        Err(e) => {
            log::warn!("the pinned {what} {} cannot be adopted ({e:#}); attaching a new one", pin.display());
            fs::remove_file(pin).with_context(|| format!("removing {}", pin.display()))?;
            Ok(false)
        }
    }
}

/// Pins a new link at `pin`, creating its folder.
fn pin_new(pin: &Path, fd: FdLink) -> Result<Attachment> {
    fs::create_dir_all(pin.parent().expect("a links folder")).context("creating the links folder")?;
    fd.pin(pin).with_context(|| format!("pinning the link at {}", pin.display()))?;
    Ok(Attachment::New)
}

/// Runs `prog` on `interface`: in the pinned link if there is one (atomic
/// replace), else in a new link that is then pinned.
pub fn attach_or_adopt(prog: &mut Xdp, pin_dir: &Path, interface: &str, mode: XdpMode) -> Result<Attachment> {
    let pin = link_pin(pin_dir, interface);
    let adopted = adopt_pinned(&pin, "XDP link", |fd| {
        let link = XdpLink::try_from(fd).context("not an XDP link")?;
        prog.attach_to_link(link).map(|_| ()).context("replacing the program")
    })?;
    if adopted {
        return Ok(Attachment::Adopted);
    }
    let id = prog.attach(interface, mode)?;
    let link = prog.take_link(id)?;
    let fd = FdLink::try_from(link).context(
        "the kernel attached XDP without a BPF link (netlink), which cannot be pinned; a kernel of 5.9 or later is needed",
    )?;
    pin_new(&pin, fd)
}

/// Runs the egress guard `prog` on `interface`'s egress: in the pinned
/// TCX link if there is one (atomic replace), else in a new TCX link, last
/// of the interface's TCX programs, that is then pinned.
pub fn guard_or_adopt(
    prog: &mut SchedClassifier,
    pin_dir: &Path,
    interface: &str,
    kind: GuardKind,
) -> Result<Attachment> {
    if kind == GuardKind::Clsact {
        return guard_attach::clsact_or_adopt(prog, pin_dir, interface);
    }
    let pin = guard_pin(pin_dir, interface);
    let adopted = adopt_pinned(&pin, "egress guard", |fd| {
        let link = SchedClassifierLink::try_from(fd).context("not a TCX link")?;
        prog.attach_to_link(link).map(|_| ()).context("replacing the program")
    })?;
    if adopted {
        return Ok(Attachment::Adopted);
    }
    let id = prog
        .attach_with_options(interface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::last()))
        .context("attaching the egress guard through TCX (a kernel of 6.6 or later is needed)")?;
    let link = prog.take_link(id)?;
    pin_new(&pin, FdLink::try_from(link).context("the egress guard's TCX link is not a BPF link")?)
}

/// Whether `interface` has the egress guard from these pins (a TCX link
/// pin or a clsact filter's mark).
pub fn guarded(pin_dir: &Path, interface: &str) -> bool {
    guard_pin(pin_dir, interface).exists() || pin_dir.join(guard_attach::CLSACT_MARKS).join(interface).exists()
}

/// The interfaces with a pinned link (XDP, egress guard or both).
pub fn pinned(pin_dir: &Path) -> Vec<String> {
    let names = |folder: &str| -> Vec<String> {
        fs::read_dir(pin_dir.join(folder))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let mut out = names("links");
    out.extend(names(GUARD_LINKS));
    out.extend(guard_attach::marked(pin_dir));
    out.sort();
    out.dedup();
    out
}

/// Takes the data plane off: removes every pinned link, which detaches the
/// programs (XDP and the egress guard) from their interfaces. Returns the
/// interfaces.
pub fn detach_all(pin_dir: &Path) -> Result<Vec<String>> {
    let names = pinned(pin_dir);
    for name in &names {
        for pin in [link_pin(pin_dir, name), guard_pin(pin_dir, name)] {
            match fs::remove_file(&pin) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", pin.display()))
                }
                _ => {}
            }
        }
        guard_attach::remove_clsact(pin_dir, name);
    }
    Ok(names)
}
