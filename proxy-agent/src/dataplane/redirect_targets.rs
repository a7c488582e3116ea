//! Keeps `REDIRECT_REFUSED` true to the kernel: natively attached, the data
//! plane redirects a packet to the interface its route leaves by, and a
//! driver that takes no redirected frames (Intel's 10G/40G without an XDP
//! program of their own; a veth whose peer has neither XDP nor GRO) drops
//! it without a trace. Every such interface is marked, so the data plane
//! passes those packets up for the kernel to forward instead: slower, but
//! no player is lost. Generic XDP redirects to any interface, so in skb
//! mode nothing is marked. Each shard reached through a marked interface is
//! named once, with the fix, and again when it is fixed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use proxy_common::{maps::REDIRECT_REFUSED, MAX_REFUSING_INTERFACES};

use super::{ifindex, pod_routes, tables, xdp_features};
use crate::config::XdpModeName;

pub struct RedirectTargets {
    map: HashMap<MapData, u32, u32>,
    pin_dir: std::path::PathBuf,
    /// Shards named as reached through an interface that refuses, by name.
    named: BTreeMap<String, String>,
    /// Whether the failure to read the kernel's answer was already logged.
    unreadable_logged: bool,
}

impl RedirectTargets {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let map = tables::open_pin(pin_dir, REDIRECT_REFUSED)?
            .try_into()
            .with_context(|| format!("{REDIRECT_REFUSED} is not a hash of u32 to u32"))?;
        Ok(Self { map, pin_dir: pin_dir.to_path_buf(), named: BTreeMap::new(), unreadable_logged: false })
    }

    /// Brings the map to what the kernel says now, and names the shards
    /// (name, address) whose route in `table` (`/proc/net/route`) leaves
    /// by a marked interface.
    pub fn sync(&mut self, mode: XdpModeName, shards: &[(String, Ipv4Addr)], table: &str) {
        let refusing = match refusing(mode, &self.pin_dir) {
            Ok(r) => {
                self.unreadable_logged = false;
                r
            }
            Err(e) => {
                if !self.unreadable_logged {
                    log::warn!("reading the interfaces' XDP features: {e:#}; the data plane's list stays as it was");
                    self.unreadable_logged = true;
                }
                return;
            }
        };
        self.write(&refusing);
        self.name_shards(&refusing, shards, table);
    }

    fn write(&mut self, refusing: &BTreeSet<u32>) {
        let marked: BTreeSet<u32> = self.map.keys().filter_map(|k| k.ok()).collect();
        for gone in marked.difference(refusing) {
            let _ = self.map.remove(gone);
        }
        for (n, new) in refusing.difference(&marked).enumerate() {
            if marked.len() + n >= MAX_REFUSING_INTERFACES as usize {
                log::warn!(
                    "more than {MAX_REFUSING_INTERFACES} interfaces take no redirected frames; packets redirected to \
                     the others are lost"
                );
                break;
            }
            if let Err(e) = self.map.insert(new, 1, 0) {
                log::warn!("marking interface {new} in {REDIRECT_REFUSED}: {e}");
            }
        }
    }

    fn name_shards(&mut self, refusing: &BTreeSet<u32>, shards: &[(String, Ipv4Addr)], table: &str) {
        let mut now = BTreeMap::new();
        for (name, addr) in shards {
            let Some(iface) = pod_routes::route_interface(table, *addr) else { continue };
            if refusing.contains(&ifindex(&iface)) {
                now.insert(name.clone(), iface);
            }
        }
        for (name, iface) in &now {
            if self.named.get(name) != Some(iface) {
                log::warn!(
                    "shard {name} is reached through {iface}, which takes no redirected XDP frames: its players' \
                     packets go through the kernel's forwarding (slower; none is lost). Fix: add {iface} to \
                     `interfaces` (drivers such as Intel's 10G/40G take redirected frames only while they run XDP \
                     themselves); for a veth, turn GRO on at its peer (`ethtool -K PEER gro on`)"
                );
            }
        }
        for (name, iface) in &self.named {
            if !now.contains_key(name) {
                log::info!(
                    "shard {name}: {iface} takes redirected frames again (or the route moved); back on the fast path"
                );
            }
        }
        self.named = now;
    }
}

/// The interfaces of this namespace that take no redirected frames, as far
/// as `mode` cares.
fn refusing(mode: XdpModeName, pin_dir: &Path) -> Result<BTreeSet<u32>> {
    if mode == XdpModeName::Skb {
        return Ok(BTreeSet::new());
    }
    if !xdp_features::reported() {
        return Ok(without_own_xdp(pin_dir));
    }
    Ok(xdp_features::devices()?.into_iter().filter(|d| !d.takes_redirects()).map(|d| d.ifindex).collect())
}

/// Below Linux 6.3 the kernel reports no XDP features: the conservative
/// rule. Every interface of this namespace counts as refusing except those
/// running this agent's XDP program (a pinned link): a driver takes
/// redirected frames at least while it runs XDP itself, and an interface
/// without it may drop them silently. Packets to shards behind the others
/// go through the kernel's forwarding: slower, never lost.
fn without_own_xdp(pin_dir: &Path) -> BTreeSet<u32> {
    // if_nameindex, not /sys/class/net: sysfs shows the namespace it was
    // mounted in, the call the caller's.
    let mut out = BTreeSet::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut at = list;
        while (*at).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*at).if_name).to_string_lossy();
            if !super::links::link_pin(pin_dir, &name).exists() {
                out.insert((*at).if_index);
            }
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}
