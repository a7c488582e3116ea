//! The agent's query responder: answers the server-browser queries whose
//! answer the data plane cannot fit into the frame it received (a long `c`
//! list, many rules). The data plane rewrites such a query's destination to
//! an address of this node, port kept (`QuerySettings::agent_addr`); the
//! responder reads it on the frontend's port and replies from the
//! frontend's own address (a transparent socket: IP_TRANSPARENT lets it send
//! from the VIP), with the requester's header and the cluster's answer from
//! the owner's snapshot. The per-source budget was applied in the kernel.

use std::{
    collections::HashMap,
    ffi::CStr,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::FromRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::{bail, Context, Result};
use proxy_common::{samp::QUERY_HEADER_LEN, QuerySlot};
use tokio::net::UdpSocket;

use crate::cluster::snapshot::Snapshot;

/// What the responder needs of the cluster's owner: its last snapshot,
/// without waiting for it.
pub trait QueryOwner: Clone + Send + Sync + 'static {
    fn snapshot(&self) -> Arc<Snapshot>;
}

/// Queries the responder answered, by slot (`QuerySlot as usize`).
#[derive(Debug, Default)]
pub struct ResponderCounts {
    answered: [AtomicU64; 5],
}

impl ResponderCounts {
    /// By type name, as the metrics label them.
    pub fn by_type(&self) -> Vec<(String, u64)> {
        QuerySlot::ALL
            .iter()
            .map(|s| (slot_name(*s).to_string(), self.answered[*s as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

pub fn slot_name(slot: QuerySlot) -> &'static str {
    match slot {
        QuerySlot::Info => "info",
        QuerySlot::Rules => "rules",
        QuerySlot::Clients => "clients",
        QuerySlot::Detail => "detail",
        QuerySlot::OpenMp => "openmp",
    }
}

fn slot_of(op: u8) -> Option<QuerySlot> {
    QuerySlot::ALL.into_iter().find(|s| s.opcode() == op)
}

/// The first IPv4 address of the first of `interfaces` that has one: where
/// the data plane sends the queries it cannot answer.
pub fn local_address(interfaces: &[String]) -> Option<Ipv4Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found: Vec<(String, Ipv4Addr)> = Vec::new();
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: a non-null sockaddr of the list; family read first.
            if unsafe { (*ifa.ifa_addr).sa_family } as i32 == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: ifa_name is a C string of the list.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
                found.push((name, Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(addrs) };
    interfaces.iter().find_map(|i| found.iter().find(|(n, _)| n == i).map(|(_, a)| *a))
}

fn setsockopt(fd: i32, level: i32, name: i32) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to an int of the given size.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&one as *const libc::c_int).cast(), size_of::<libc::c_int>() as u32)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP socket bound to `addr` with SO_REUSEADDR, and IP_TRANSPARENT when
/// `transparent` (to bind and send from an address this node does not own).
fn bound(addr: SocketAddrV4, transparent: bool) -> Result<UdpSocket> {
    // SAFETY: plain socket creation; the fd is owned by the std socket below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("creating a UDP socket: {}", io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let std_sock = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).context("SO_REUSEADDR")?;
    if transparent {
        setsockopt(fd, libc::SOL_IP, libc::IP_TRANSPARENT)
            .context("IP_TRANSPARENT (the agent needs CAP_NET_ADMIN to answer from the public address)")?;
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in of its size.
    let rc =
        unsafe { libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as u32) };
    if rc != 0 {
        bail!("binding {addr}: {}", io::Error::last_os_error());
    }
    Ok(UdpSocket::from_std(std_sock)?)
}

/// Serves every frontend port on this node's addresses until the runtime
/// stops. Errors binding are returned at once; errors later are logged.
pub async fn serve(owner: impl QueryOwner, counts: Arc<ResponderCounts>, ports: Vec<u16>) -> Result<()> {
    let mut tasks = Vec::new();
    for port in ports {
        let sock = bound(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), false)?;
        tasks.push(tokio::spawn(serve_port(sock, owner.clone(), counts.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn serve_port(sock: UdpSocket, owner: impl QueryOwner, counts: Arc<ResponderCounts>) {
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut senders: HashMap<SocketAddrV4, UdpSocket> = HashMap::new();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                crate::control::back_off("query responder: receiving", e).await;
                continue;
            }
        };
        let q = &buf[..n];
        if n != QUERY_HEADER_LEN || &q[..4] != b"SAMP" {
            continue;
        }
        let Some(slot) = slot_of(q[QUERY_HEADER_LEN - 1]) else { continue };
        let asked = Ipv4Addr::new(q[4], q[5], q[6], q[7]);
        let snap = owner.snapshot();
        let on_port: Vec<_> = snap.answers.iter().filter(|f| f.address.port() == port).collect();
        let Some(fe) = on_port.iter().find(|f| *f.address.ip() == asked).or(on_port.first()) else { continue };
        let Some(body) = &fe.bodies[slot as usize] else { continue };
        let mut reply = q.to_vec();
        reply.extend_from_slice(body);
        let sender = match senders.entry(fe.address) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match bound(fe.address, true) {
                Ok(s) => v.insert(s),
                Err(e) => {
                    log::warn!("query responder: {e:#}");
                    continue;
                }
            },
        };
        if sender.send_to(&reply, from).await.is_ok() {
            counts.answered[slot as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}
