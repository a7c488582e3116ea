//! How the egress guard is attached: through TCX (Linux 6.6) where the
//! kernel has it, else as a cls_bpf filter in direct-action mode under a
//! `clsact` qdisc (what Cilium falls back to as well). Which one is chosen
//! by probing the kernel (a TCX link on this namespace's loopback, made and
//! dropped at once), never by its version string, and recorded in the pin
//! folder (`guard-tcx` / `guard-clsact`), so a restarted or upgraded agent
//! keeps the kind its data plane already runs with.
//!
//! A TCX link is pinned like the XDP links (`links.rs`). A cls_bpf filter
//! needs no pin to outlive the agent: it stays on the qdisc until removed.
//! Ours sits at a fixed priority and handle, so a restart replaces its
//! program in place (one netlink request, the kernel swaps it atomically)
//! and `detach` finds it; an empty folder `egress-clsact/<interface>` in
//! the pin folder records which interfaces have one.

use std::{fs, path::Path};

use anyhow::{Context, Result};
use aya::programs::{
    links::Link,
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    LinkOrder, SchedClassifier, TcAttachType,
};

use super::links::Attachment;

/// The guard's filter priority and handle under clsact: high enough that a
/// CNI's own filters (tc's default priorities start at 49152 and count
/// down) usually run after ours; ours passes on with TC_ACT_UNSPEC anyway.
pub const CLSACT_PRIORITY: u16 = 0x5a11;
pub const CLSACT_HANDLE: TcHandle = TcHandle::new(0, 0x5a11);

/// The folder of the interfaces that carry our clsact filter.
pub const CLSACT_MARKS: &str = "egress-clsact";
const KIND_TCX: &str = "guard-tcx";
const KIND_CLSACT: &str = "guard-clsact";

/// The two ways the guard runs on an interface's egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardKind {
    Tcx,
    Clsact,
}

impl GuardKind {
    pub fn name(self) -> &'static str {
        match self {
            GuardKind::Tcx => "tcx",
            GuardKind::Clsact => "clsact",
        }
    }
}

/// Whether `name` (an entry of the pin folder) is one of this module's.
pub fn is_mark(name: &str) -> bool {
    name == KIND_TCX || name == KIND_CLSACT || name == CLSACT_MARKS
}

/// The kind recorded in `pin_dir`, if any.
pub fn recorded(pin_dir: &Path) -> Option<GuardKind> {
    if pin_dir.join(KIND_TCX).exists() {
        Some(GuardKind::Tcx)
    } else if pin_dir.join(KIND_CLSACT).exists() {
        Some(GuardKind::Clsact)
    } else {
        None
    }
}

/// The recorded kind, or (first start on these pins) the probed one, now
/// recorded. `prog` is the loaded guard, used for the probe.
pub fn choose(pin_dir: &Path, prog: &mut SchedClassifier) -> Result<GuardKind> {
    if let Some(kind) = recorded(pin_dir) {
        return Ok(kind);
    }
    let kind = if tcx_works(prog) { GuardKind::Tcx } else { GuardKind::Clsact };
    record(pin_dir, kind)?;
    Ok(kind)
}

/// Records `kind` in `pin_dir` (replacing another).
pub fn record(pin_dir: &Path, kind: GuardKind) -> Result<()> {
    let (mine, other) = match kind {
        GuardKind::Tcx => (KIND_TCX, KIND_CLSACT),
        GuardKind::Clsact => (KIND_CLSACT, KIND_TCX),
    };
    let _ = fs::remove_dir(pin_dir.join(other));
    fs::create_dir_all(pin_dir.join(mine)).with_context(|| format!("recording the guard kind in {}", pin_dir.display()))
}

/// The probe: a TCX link for `prog` on loopback's egress, dropped at once.
/// Kernels before 6.6 refuse the attach type. (`SAMP_PRETEND_NO_TCX=1`:
/// as if refused, for tests.)
pub fn tcx_works(prog: &mut SchedClassifier) -> bool {
    if super::kernel_probe::pretend_absent("SAMP_PRETEND_NO_TCX") {
        return false;
    }
    match prog.attach_with_options("lo", TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::last())) {
        Ok(id) => {
            let _ = prog.detach(id);
            true
        }
        Err(e) => {
            log::info!("no TCX in this kernel ({e}): the egress guard runs as a clsact/cls_bpf filter");
            false
        }
    }
}

/// Runs `prog` as our cls_bpf filter on `interface`'s egress: replaced in
/// place where it is already (an earlier agent's), else added (with the
/// clsact qdisc if the interface has none).
pub fn clsact_or_adopt(prog: &mut SchedClassifier, pin_dir: &Path, interface: &str) -> Result<Attachment> {
    let mark = pin_dir.join(CLSACT_MARKS).join(interface);
    let ours = || SchedClassifierLink::attached(interface, TcAttachType::Egress, CLSACT_PRIORITY, CLSACT_HANDLE, None);
    if mark.exists() {
        match prog.attach_to_link(ours().context("naming our filter")?) {
            Ok(id) => {
                keep(prog.take_link(id)?);
                return Ok(Attachment::Adopted);
            }
            Err(e) => log::warn!("our egress filter on {interface} cannot be replaced ({e}); adding it anew"),
        }
    }
    if let Err(e) = tc::qdisc_add_clsact(interface) {
        // EEXIST: the interface has one already (ours, or a CNI's).
        log::debug!("clsact on {interface}: {e}");
    }
    let options = NlOptions { priority: CLSACT_PRIORITY, handle: CLSACT_HANDLE, classid: None };
    let id = match prog.attach_with_options(interface, TcAttachType::Egress, TcAttachOptions::Netlink(options)) {
        Ok(id) => id,
        // A filter of ours from an agent whose mark is gone: replace it.
        Err(_) => prog.attach_to_link(ours().context("naming our filter")?).context("adding the cls_bpf filter")?,
    };
    keep(prog.take_link(id)?);
    fs::create_dir_all(&mark).with_context(|| format!("creating {}", mark.display()))?;
    Ok(Attachment::New)
}

/// Leaves the filter on its interface after the agent: aya's link wrapper
/// removes it when dropped, so it is forgotten instead (it holds no
/// descriptor or memory, only the interface, priority and handle).
fn keep(link: SchedClassifierLink) {
    std::mem::forget(link);
}

/// Removes our filter from `interface` (if it is still there) and its mark.
/// A filter, unlike a pinned link, is found by interface name in the
/// caller's network namespace: `detach` runs where the agent ran.
pub fn remove_clsact(pin_dir: &Path, interface: &str) {
    if pin_dir.join(CLSACT_MARKS).join(interface).exists() && super::ifindex(interface) == 0 {
        log::warn!(
            "the egress guard's clsact filter on {interface} was not removed: no such interface in this network \
             namespace (run `proxy-agent detach` in the agent's namespace)"
        );
    }
    if let Ok(link) =
        SchedClassifierLink::attached(interface, TcAttachType::Egress, CLSACT_PRIORITY, CLSACT_HANDLE, None)
    {
        let _ = link.detach();
    }
    let _ = fs::remove_dir(pin_dir.join(CLSACT_MARKS).join(interface));
}

/// The interfaces marked as carrying our filter.
pub fn marked(pin_dir: &Path) -> Vec<String> {
    fs::read_dir(pin_dir.join(CLSACT_MARKS))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}
