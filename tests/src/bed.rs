//! A test bed for BPF_PROG_TEST_RUN: the data plane loaded with a small
//! config, and a namespace whose routes and neighbours make `bpf_fib_lookup`
//! answer deterministically (veth pairs stand in for NICs: this kernel has no
//! dummy driver):
//!
//! ```text
//!   fwd0 02:00:00:00:50:01 198.18.50.1/24   shard A 198.18.50.2 (neighbour
//!        known, 02:00:00:00:50:02), shard B 198.18.50.3 (no neighbour)
//!   cli0 02:00:00:00:60:01 198.18.60.1/24   client 198.18.60.2 (neighbour
//!        known, 02:00:00:00:60:02), client 198.18.60.9 (no neighbour)
//!   198.18.70.0/24 is a blackhole            shard C 198.18.70.2
//! ```
//! Used by the packet fixtures and the fast-path benchmark.

use std::net::Ipv4Addr;

use anyhow::Result;
use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};
use proxy_agent::{cluster::Cluster, config, dataplane::Dataplane, tables::Tables};
use proxy_common::{
    net::{addr_to_map, port_to_map},
    samp, Counter, Group, Session, SessionKey, PLACEMENT_SLOTS,
};

use crate::{netns::NetNs, pins::PinDir};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
/// The egress guard's verdicts (TC).
/// `TC_ACT_UNSPEC` (-1): the guard lets a packet go to the next program (TCX_NEXT).
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
pub const TC_ACT_SHOT: u32 = 2;

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
pub const PORT: u16 = 7777;
pub const SHARD_A: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 2);
pub const SHARD_B: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 3);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 2);
pub const CLIENT_NO_NEIGH: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 9);
pub const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 1);
pub const FWD0_MAC: [u8; 6] = [2, 0, 0, 0, 0x50, 1];
pub const SHARD_A_MAC: [u8; 6] = [2, 0, 0, 0, 0x50, 2];
pub const CLI0_MAC: [u8; 6] = [2, 0, 0, 0, 0x60, 1];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0x60, 2];

// Groups are the shards' home groups, in config order.
pub const GROUP_A: u32 = 1;
pub const GROUP_B: u32 = 2;
pub const GROUP_C: u32 = 3;
/// A group whose backend is unset.
pub const GROUP_NONE: u32 = 4;

const CONFIG: &str = "
interfaces: [lo]
handshake_rate: 0
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - name: a
    address: 198.18.50.2
    capacity: 100
  - name: b
    address: 198.18.50.3
    capacity: 100
  - name: c
    address: 198.18.70.2
    capacity: 100
";

pub fn handshake(cookie: u16) -> Vec<u8> {
    crate::sim::wire::handshake_request(cookie, PORT).to_vec()
}

/// An unreliable player-sync datagram of 42 bytes, scrambled as the client does.
pub fn game_packet() -> Vec<u8> {
    let plain: Vec<u8> = [207u8].into_iter().chain((0..40).map(|i| i as u8 * 7)).collect();
    let mut wire = vec![0u8; plain.len() + 1];
    samp::scramble(&plain, PORT, &mut wire);
    wire
}

pub fn query() -> Vec<u8> {
    crate::sim::wire::query_request(std::net::SocketAddrV4::new(VIP, PORT), b'i', &[])
}

pub fn key(client: Ipv4Addr, port: u16) -> SessionKey {
    SessionKey { client_addr: addr_to_map(client.octets()), client_port: port_to_map(port), frontend: 0 }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity pins this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub struct Bed {
    pub ns: NetNs,
    pub dp: Dataplane,
    /// The data plane's maps, for fixtures to set up and inspect.
    pub tables: Tables,
    _pins: PinDir,
}

impl Bed {
    pub fn new() -> Result<Bed> {
        let ns = NetNs::new("bed")?;
        for cmd in [
            "link add fwd0 address 02:00:00:00:50:01 type veth peer name fwd0p",
            "link set fwd0 up",
            "link set fwd0p up",
            "addr add 198.18.50.1/24 dev fwd0",
            "neigh add 198.18.50.2 lladdr 02:00:00:00:50:02 dev fwd0 nud permanent",
            "link add cli0 address 02:00:00:00:60:01 type veth peer name cli0p",
            "link set cli0 up",
            "link set cli0p up",
            "addr add 198.18.60.1/24 dev cli0",
            "neigh add 198.18.60.2 lladdr 02:00:00:00:60:02 dev cli0 nud permanent",
            "route add blackhole 198.18.70.0/24",
        ] {
            ns.ip(&cmd.split(' ').collect::<Vec<_>>())?;
        }
        ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        let pins = PinDir::new("bed")?;
        let (dp, cluster_tables) = Dataplane::load(pins.path())?;
        let cfg = config::parse("bed", CONFIG)?;
        let cluster = Cluster::start(cfg, cluster_tables)?;
        let homes: Vec<u32> = cluster.ids.iter().map(|i| i.home_group).collect();
        assert_eq!(homes, [GROUP_A, GROUP_B, GROUP_C]);
        // The fixtures write the maps directly, beside the cluster's handles.
        let mut tables = Tables::open_pinned(pins.path())?;
        tables.groups.set(GROUP_NONE, Group::default(), 0)?;
        Ok(Bed { ns, dp, tables, _pins: pins })
    }

    /// Runs one frame through `prog` inside the namespace: (verdict, output
    /// frame, kernel-measured ns per run).
    pub fn run_prog(&self, prog: &Xdp, input: &[u8], repeat: u32) -> (u32, Vec<u8>, u64) {
        self.test_run(prog, input, None, repeat).expect("BPF_PROG_TEST_RUN")
    }

    /// BPF_PROG_TEST_RUN of any program, on CPU 0 (the caches are per CPU)
    /// inside the namespace, with the context `ctx` if given; `None` when
    /// the kernel refuses the frame.
    fn test_run<P>(&self, prog: &P, input: &[u8], ctx: Option<&[u8]>, repeat: u32) -> Option<(u32, Vec<u8>, u64)>
    where
        P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult> + Sync,
    {
        self.ns
            .run(|| {
                pin_to_cpu(0);
                let mut out = vec![0u8; input.len() + 2048];
                let opts = TestRunOptions {
                    data_in: Some(input),
                    data_out: Some(&mut out),
                    ctx_in: ctx,
                    repeat,
                    ..Default::default()
                };
                let r = prog.test_run(opts).ok()?;
                out.truncate(r.data_size_out as usize);
                Some((r.return_value, out, r.duration.as_nanos() as u64))
            })
            .expect("running in the bed namespace")
    }

    /// Runs one frame through the data plane.
    pub fn run(&self, input: &[u8]) -> (u32, Vec<u8>) {
        let (v, out, _) = self.run_prog(self.dp.program(), input, 1);
        (v, out)
    }

    /// Runs one frame through the data plane as if it arrived on the bed's
    /// interface `iface` (the kernel's default is loopback).
    pub fn run_arriving_on(&self, iface: &str, input: &[u8]) -> (u32, Vec<u8>) {
        let ctx = xdp_ctx_arriving_on(self.ifindex(iface), input.len());
        let (v, out, _) =
            self.test_run(self.dp.program(), input, Some(&ctx), 1).expect("BPF_PROG_TEST_RUN with a context");
        (v, out)
    }

    /// The index of the bed's interface `iface`.
    pub fn ifindex(&self, iface: &str) -> u32 {
        let name = std::ffi::CString::new(iface).expect("an interface name");
        // SAFETY: a valid C string; the call only reads it.
        let index = self.ns.run(|| unsafe { libc::if_nametoindex(name.as_ptr()) }).expect("in the bed namespace");
        assert_ne!(index, 0, "the bed has no interface {iface}");
        index
    }

    /// Runs one frame through the egress guard (TC) inside the namespace,
    /// `repeat` times: (verdict, output frame, kernel-measured ns per run).
    pub fn run_guard(&self, input: &[u8], repeat: u32) -> (u32, Vec<u8>, u64) {
        self.try_run_guard(input, repeat).expect("BPF_PROG_TEST_RUN of the egress guard")
    }

    /// As `run_guard`, but `None` when the kernel refuses the frame (its
    /// skb test run takes no IPv4 frame shorter than an IPv4 header).
    pub fn try_run_guard(&self, input: &[u8], repeat: u32) -> Option<(u32, Vec<u8>, u64)> {
        self.test_run(self.dp.egress_guard(), input, None, repeat)
    }

    /// The agent's view of the bed's maps, as an agent adopting them has,
    /// for fixtures that go through the agent's own writes.
    pub fn cluster(&self) -> Cluster {
        let tables = Tables::open_pinned(self._pins.path()).expect("opening the bed's maps");
        Cluster::start(config::parse("bed", CONFIG).expect("the bed's config"), tables)
            .expect("adopting the bed's maps")
    }

    /// Tells the program that `PEERS` holds addresses (as a return node's
    /// agent does).
    pub fn peers_in_use(&self) {
        let map = proxy_agent::tables::open_pin(self._pins.path(), proxy_common::maps::PEERS_IN_USE).unwrap();
        let mut flag: aya::maps::Array<_, u32> = map.try_into().unwrap();
        flag.set(0, 1, 0).unwrap();
    }

    /// What the agent does every second: marks, in `REDIRECT_REFUSED`, the
    /// bed's interfaces that the kernel says take no redirected frames now
    /// (a veth whose peer has neither GRO nor XDP).
    pub fn sync_redirect_targets(&self) {
        let pins = self._pins.path().to_path_buf();
        self.ns
            .run(move || {
                let mut targets = proxy_agent::dataplane::redirect_targets::RedirectTargets::open(&pins).unwrap();
                targets.sync(proxy_agent::config::XdpModeName::Driver, &[], "");
            })
            .unwrap();
    }

    /// Every session event the program wrote since the last call.
    pub fn session_events(&self) -> Vec<proxy_common::SessionEvent> {
        let ring =
            proxy_agent::tables::session_events(&mut |name| proxy_agent::tables::open_pin(self._pins.path(), name))
                .expect("opening SESSION_EVENTS");
        let mut events = Vec::new();
        proxy_agent::dataplane::session_events::SessionEvents::new(ring).drain(|e| events.push(e));
        events
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.tables.counter(c).expect("reading counters")
    }

    /// Makes `client:port` an established player of `group`; `moving` gives
    /// it an epoch other than the group's, as a migration does.
    pub fn session(&mut self, client: Ipv4Addr, port: u16, group: u32, moving: bool) {
        let epoch = self.group_epoch(group).wrapping_add(moving as u32);
        let s = Session { group, epoch, last_seen_ns: 0 };
        self.tables.sessions.insert(key(client, port), s, 0).expect("writing SESSIONS");
        // As the agent does after rewriting sessions.
        self.tables.void_session_cache().expect("voiding the session cache");
    }

    pub fn group_epoch(&self, group: u32) -> u32 {
        self.tables.groups.get(&group, 0).expect("reading GROUPS").epoch
    }

    /// Points every placement slot of the frontend at `group`.
    pub fn place_all_on(&mut self, group: u32) {
        self.tables.write_placement(0, None, &vec![group; PLACEMENT_SLOTS as usize]).expect("writing PLACEMENT");
    }
}

/// A `struct xdp_md` for BPF_PROG_TEST_RUN: a frame of `len` bytes received
/// on `ifindex`, queue 0 (data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex).
pub fn xdp_ctx_arriving_on(ifindex: u32, len: usize) -> Vec<u8> {
    [0, len as u32, 0, ifindex, 0, 0].iter().flat_map(|w| w.to_ne_bytes()).collect()
}
