//! The layout of the pinned maps, recorded beside them: an agent adopts the
//! maps (and every session) of an earlier agent only if it reads and writes
//! them the same way. A different layout is refused with the way out.

use std::{fs, path::Path};

use anyhow::{bail, Context, Result};

/// Bumped whenever a pinned map's type, key, value or size changes.
pub const LAYOUT_VERSION: u32 = 3;
/// bpffs holds only pinned objects and folders, so the version is a folder:
/// `layout-v<N>`.
const LAYOUT_PREFIX: &str = "layout-v";

/// Refuses pins of another layout; records ours in a fresh folder.
pub fn check_or_record(pin_dir: &Path, detach_hint: &str) -> Result<()> {
    let entries: Vec<String> = fs::read_dir(pin_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let recorded = entries.iter().find_map(|n| n.strip_prefix(LAYOUT_PREFIX).map(|v| v.parse::<u32>().unwrap_or(0)));
    let has_maps = entries.iter().any(|n| {
        !n.starts_with(LAYOUT_PREFIX)
            && n != "links"
            && n != super::links::GUARD_LINKS
            && !super::guard_attach::is_mark(n)
    });
    let found = match recorded {
        Some(v) => Some(v),
        None if has_maps => Some(0),
        None => None,
    };
    match found {
        Some(v) if v == LAYOUT_VERSION => Ok(()),
        Some(v) => bail!(
            "the maps pinned in {dir} have layout {v} and this agent needs layout {LAYOUT_VERSION}: it cannot adopt them \
             (nor their sessions). Way out: `proxy-agent detach {detach_hint}` to take the old data plane off, \
             `rm -r {dir}`, then start this agent (players reconnect once, as after a restart of a plain server)",
            dir = pin_dir.display()
        ),
        None => {
            let marker = pin_dir.join(format!("{LAYOUT_PREFIX}{LAYOUT_VERSION}"));
            fs::create_dir_all(&marker).with_context(|| format!("creating {}", marker.display()))
        }
    }
}
