//! The kernel side as the agent holds it: loading the XDP object, pinning
//! its maps, attaching it to interfaces, XDP on their way in and the
//! egress guard (TC) on their way out (this file); typed map handles
//! (`tables`) behind the cluster's seam (`map_writer`, with the in-memory
//! `fake_maps` for tests), batched map I/O (`batch`), the session event ring
//! (`session_events`) and the background scan (`scanner`).

pub mod batch;
pub mod clock;
pub mod ebpf_object;
pub mod fake_maps;
pub mod guard_attach;
pub mod kernel_probe;
pub mod layout;
pub mod links;
pub mod map_writer;
pub mod pod_routes;
pub mod redirect_targets;
pub mod scanner;
pub mod session_events;
pub mod tables;
pub mod upkeep;
pub mod xdp_features;

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{xdp::XdpLinkId, SchedClassifier, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use proxy_common::{maps as names, programs};

use crate::config::XdpModeName;
use tables::Tables;

/// How many entries the session tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    pub sessions: u32,
    pub pending: u32,
}

impl Default for TableSizes {
    fn default() -> Self {
        Self { sessions: proxy_common::MAX_SESSIONS, pending: proxy_common::MAX_PENDING }
    }
}

impl TableSizes {
    /// Refuses pinned session tables of another size, with the way out.
    fn check_pinned(&self, pin_dir: &Path) -> Result<()> {
        for (name, want, field) in
            [(names::SESSIONS, self.sessions, "max_sessions"), (names::PENDING, self.pending, "max_pending")]
        {
            let path = pin_dir.join(name);
            let Ok(map) = aya::maps::MapData::from_pin(&path) else { continue };
            let have = map.info().with_context(|| format!("reading {}", path.display()))?.max_entries();
            if have != want {
                bail!(
                    "the pinned {name} in {dir} holds {have} entries but `{field}` asks for {want}; a running data plane \
                     cannot be resized: set `{field}: {have}`, or `proxy-agent detach --bpffs {dir}`, `rm -r {dir}` and start \
                     again (players reconnect once)",
                    dir = pin_dir.display()
                );
            }
        }
        Ok(())
    }
}

/// The loaded programs and their attachments. The attachments are pinned
/// links (`links`): dropping this, or the agent's death, leaves the data
/// plane forwarding with the pinned maps (and so every session) for the next
/// agent to adopt. The maps themselves are the cluster's ([`Tables`]).
pub struct Dataplane {
    ebpf: Ebpf,
    /// Unpinned attachments (test topologies' XDP_PASS), detached on drop.
    links: Vec<XdpLinkId>,
    /// Interfaces running the data plane, through pinned links.
    attached: Vec<(String, links::Attachment)>,
    /// Interfaces running only the egress guard (a game node's uplink).
    guarded: Vec<String>,
    pin_dir: PathBuf,
    /// How the egress guard attaches here (probed once, kept in the pins).
    guard_kind: guard_attach::GuardKind,
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Makes sure `dir` is a folder on a bpf filesystem, mounting bpffs on
/// /sys/fs/bpf when nothing is mounted there (a fresh node or container).
pub fn prepare_pin_dir(dir: &Path) -> Result<()> {
    let parent = dir.parent().context("the bpffs folder needs a parent")?;
    if !is_bpffs(parent)? {
        if parent.starts_with("/sys/fs/bpf") && !is_bpffs(Path::new("/sys/fs/bpf"))? {
            mount_bpffs(Path::new("/sys/fs/bpf"))?;
        }
        if !is_bpffs(parent)? {
            bail!("{} is not on a bpf filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) or set `bpffs:` to a folder under /sys/fs/bpf", parent.display());
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(false);
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(target: &Path) -> Result<()> {
    let target_c = CString::new(target.as_os_str().as_encoded_bytes())?;
    let fstype = CString::new("bpf")?;
    // SAFETY: valid C strings; a null data pointer is allowed for bpffs.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target_c.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("mounting bpffs on {}: {}", target.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel (not sysfs, which may belong to another namespace).
/// One partition of the session cache per possible CPU (the program indexes
/// it by CPU id): 4 MiB each.
fn session_cache_sets() -> Result<u32> {
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))?;
    Ok(cpus as u32 * proxy_common::SESSION_CACHE_SETS)
}

/// Removes pins this agent made (a failed attach), which detaches them.
fn remove_pins(pins: &[PathBuf]) {
    for pin in pins {
        let _ = fs::remove_file(pin);
    }
}

/// As `session_cache_sets`, for the return path's next-hop cache: 4 MiB a CPU.
fn client_route_sets() -> Result<u32> {
    Ok(session_cache_sets()? / proxy_common::SESSION_CACHE_SETS * proxy_common::CLIENT_ROUTE_SETS)
}

/// The index of interface `name` in this namespace, 0 when there is none.
pub fn ifindex(name: &str) -> u32 {
    let Ok(c) = CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn interface_exists(name: &str) -> bool {
    ifindex(name) != 0
}

impl Dataplane {
    /// Loads the programs and opens (or creates) the maps pinned in
    /// `pin_dir`, with the default table sizes.
    pub fn load(pin_dir: &Path) -> Result<(Self, Tables)> {
        Self::load_sized(pin_dir, TableSizes::default())
    }

    /// As `load`, with the session tables sized by the config. Pins made
    /// with other sizes are refused (a running data plane cannot be resized).
    pub fn load_sized(pin_dir: &Path, sizes: TableSizes) -> Result<(Self, Tables)> {
        Self::load_object(pin_dir, sizes, ebpf_object::bytes()?)
    }

    /// As `load_sized`, with the XDP object given.
    pub fn load_object(pin_dir: &Path, sizes: TableSizes, object: &[u8]) -> Result<(Self, Tables)> {
        if let Some(line) = kernel_probe::below_floor() {
            bail!(line);
        }
        prepare_pin_dir(pin_dir)?;
        layout::check_or_record(pin_dir, &format!("--bpffs {}", pin_dir.display()))?;
        sizes.check_pinned(pin_dir)?;
        let jiffy_ns = clock::jiffy_ns();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .override_global(proxy_common::JIFFY_NS, &jiffy_ns, false)
            .override_global(proxy_common::XDP_BYTES_HELPERS, &(kernel_probe::xdp_bytes_helpers() as u8), false)
            .map_max_entries(names::SESSIONS, sizes.sessions)
            .map_max_entries(names::PENDING, sizes.pending)
            .map_max_entries(names::SESSION_CACHE, session_cache_sets()?)
            .map_max_entries(names::CLIENT_ROUTES, client_route_sets()?)
            .load(object)
            .with_context(|| format!("loading the XDP object (maps pinned in {}); if a pinned map has a different layout after an upgrade, remove the folder to start afresh", pin_dir.display()))?;
        for name in [programs::PROXY, programs::PASS_BASELINE] {
            let prog: &mut Xdp =
                ebpf.program_mut(name).with_context(|| format!("the object has no program {name}"))?.try_into()?;
            prog.load().with_context(|| format!("the kernel refused program {name}"))?;
        }
        let guard: &mut SchedClassifier = ebpf
            .program_mut(programs::EGRESS_GUARD)
            .with_context(|| format!("the object has no program {}", programs::EGRESS_GUARD))?
            .try_into()?;
        guard.load().with_context(|| format!("the kernel refused program {}", programs::EGRESS_GUARD))?;
        let guard_kind = guard_attach::choose(pin_dir, guard)?;
        let tables = Tables::take(&mut ebpf)?;
        Ok((
            Self {
                ebpf,
                links: Vec::new(),
                attached: Vec::new(),
                guarded: Vec::new(),
                pin_dir: pin_dir.to_path_buf(),
                guard_kind,
            },
            tables,
        ))
    }

    /// How the egress guard attaches on this kernel and these pins.
    pub fn guard_kind(&self) -> guard_attach::GuardKind {
        self.guard_kind
    }

    /// Attaches the guard as `kind` from now on and records it: for the
    /// tests of the clsact path on a kernel that has TCX.
    pub fn force_guard_kind(&mut self, kind: guard_attach::GuardKind) -> Result<()> {
        guard_attach::record(&self.pin_dir, kind)?;
        self.guard_kind = kind;
        Ok(())
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The data-plane program, for attaching or test runs.
    pub fn program(&self) -> &Xdp {
        self.xdp(programs::PROXY)
    }

    /// The bare XDP_PASS program benchmarks compare against.
    pub fn baseline(&self) -> &Xdp {
        self.xdp(programs::PASS_BASELINE)
    }

    /// The egress guard (TC), for test runs.
    pub fn egress_guard(&self) -> &SchedClassifier {
        let prog = self.ebpf.program(programs::EGRESS_GUARD).expect("checked at load");
        prog.try_into().expect("checked at load")
    }

    fn xdp(&self, name: &str) -> &Xdp {
        let prog = self.ebpf.program(name).expect("checked at load");
        prog.try_into().expect("checked at load")
    }

    /// Starts forwarding kernel-side log records to the agent's log.
    pub fn take_logger(&mut self) -> Result<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf).context("starting the kernel log reader")
    }

    /// Attaches to every interface, or to none: on any failure, what was
    /// attached is detached again and the error names the interface. Each
    /// interface gets the XDP program on its way in and the egress guard
    /// on its way out, both through pinned links.
    pub fn attach(&mut self, interfaces: &[String], mode: XdpModeName) -> Result<()> {
        for name in interfaces {
            if !interface_exists(name) {
                bail!("interface `{name}` does not exist (config `interfaces`); `ip link` lists the interfaces of this host");
            }
        }
        let mode = match mode {
            XdpModeName::Driver => XdpMode::Driver,
            XdpModeName::Skb => XdpMode::Skb,
        };
        // The pins this start made: on a failure they go again, while
        // adopted links keep running.
        let mut created = Vec::new();
        for name in interfaces {
            let prog: &mut Xdp = self.ebpf.program_mut(programs::PROXY).expect("checked at load").try_into()?;
            let how = match links::attach_or_adopt(prog, &self.pin_dir, name, mode) {
                Ok(how) => how,
                Err(e) => {
                    remove_pins(&created);
                    let hint = if mode == XdpMode::Driver {
                        "; if the driver has no native XDP, set `xdp_mode: skb`"
                    } else {
                        ""
                    };
                    bail!("attaching XDP to `{name}` failed: {e:#}{hint}");
                }
            };
            if how == links::Attachment::New {
                created.push(links::link_pin(&self.pin_dir, name));
            }
            let guard: &mut SchedClassifier =
                self.ebpf.program_mut(programs::EGRESS_GUARD).expect("checked at load").try_into()?;
            match links::guard_or_adopt(guard, &self.pin_dir, name, self.guard_kind) {
                Ok(links::Attachment::New) => created.push(links::guard_pin(&self.pin_dir, name)),
                Ok(links::Attachment::Adopted) => {}
                Err(e) => {
                    remove_pins(&created);
                    bail!("attaching the egress guard (TC) to `{name}` failed: {e:#}");
                }
            }
            self.attached.push((name.clone(), how));
        }
        Ok(())
    }

    /// Runs only the egress guard on `name` (pinned, or adopted from an
    /// earlier agent): for an interface this node's own ICMP leaves by but
    /// whose incoming packets are none of the data plane's business.
    pub fn guard(&mut self, name: &str) -> Result<links::Attachment> {
        let guard: &mut SchedClassifier =
            self.ebpf.program_mut(programs::EGRESS_GUARD).expect("checked at load").try_into()?;
        let how = links::guard_or_adopt(guard, &self.pin_dir, name, self.guard_kind)
            .with_context(|| format!("attaching the egress guard (TC) to `{name}`"))?;
        self.guarded.push(name.to_string());
        Ok(how)
    }

    /// The interfaces running the data plane or the egress guard.
    pub fn covers(&self, name: &str) -> bool {
        self.attached.iter().any(|(n, _)| n == name) || self.guarded.iter().any(|n| n == name)
    }

    /// Attaches the bare XDP_PASS program to `iface` (in the calling
    /// thread's network namespace). For test topologies: a veth that is sent
    /// XDP_TX frames by its peer delivers them only if it runs an XDP
    /// program itself (without one, veth does not wake it for them).
    pub fn attach_pass(&mut self, iface: &str) -> Result<()> {
        let prog: &mut Xdp = self.ebpf.program_mut(programs::PASS_BASELINE).expect("checked at load").try_into()?;
        let link = prog.attach(iface, XdpMode::Driver).with_context(|| format!("attaching XDP_PASS to {iface}"))?;
        self.links.push(link);
        Ok(())
    }

    /// Attaches the test helper `tc_seen` (counts, then passes on) to the
    /// egress of `iface`, after everything there, the way this kernel
    /// attaches the guard: for the tests of the guard's place in a chain.
    pub fn attach_tc_seen(&mut self, iface: &str) -> Result<()> {
        use aya::programs::{tc::TcAttachOptions, LinkOrder, TcAttachType};
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut("tc_seen").context("the object has no program tc_seen")?.try_into()?;
        if prog.fd().is_err() {
            prog.load().context("loading tc_seen")?;
        }
        let options = match self.guard_kind {
            guard_attach::GuardKind::Tcx => TcAttachOptions::TcxOrder(LinkOrder::last()),
            guard_attach::GuardKind::Clsact => {
                let _ = aya::programs::tc::qdisc_add_clsact(iface);
                TcAttachOptions::Netlink(aya::programs::tc::NlOptions { priority: 60_000, ..Default::default() })
            }
        };
        prog.attach_with_options(iface, TcAttachType::Egress, options).context("attaching tc_seen")?;
        Ok(())
    }

    /// What `tc_seen` counted.
    pub fn tc_seen(&self) -> Result<u64> {
        let map: aya::maps::Array<_, u64> = self.ebpf.map("TC_SEEN").context("no map TC_SEEN")?.try_into()?;
        Ok(map.get(&0, 0)?)
    }

    /// Forgets interfaces that no longer exist (a deleted pod's veth took its
    /// programs with it) and removes their link pins; returns their names.
    pub fn forget_missing(&mut self) -> Vec<String> {
        let (gone, kept): (Vec<_>, Vec<_>) = self.attached.drain(..).partition(|(n, _)| !interface_exists(n));
        self.attached = kept;
        self.guarded.retain(|n| {
            let exists = interface_exists(n);
            if !exists {
                links::unpin(&self.pin_dir, n);
            }
            exists
        });
        gone.into_iter()
            .map(|(n, _)| {
                links::unpin(&self.pin_dir, &n);
                n
            })
            .collect()
    }

    /// The interfaces this agent runs on, and whether it adopted each.
    pub fn attached(&self) -> &[(String, links::Attachment)] {
        &self.attached
    }
}
