//! Which interfaces take redirected XDP frames right now, from the kernel's
//! own word: the `netdev` generic netlink family (Linux 6.3+) reports each
//! device's `xdp_features`, and `NDO_XMIT` is set only while the driver can
//! send frames another interface's program redirects to it. Drivers that
//! need an XDP program of their own first (Intel's i40e, ixgbe) and veths
//! whose peer has neither XDP nor GRO clear it, and a frame redirected
//! there is dropped without a trace.

use std::{io, mem};

use anyhow::{bail, Context, Result};

const NETLINK_GENERIC: libc::c_int = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `NETDEV_XDP_ACT_NDO_XMIT`: the device takes redirected frames.
pub const NDO_XMIT: u64 = 1 << 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;
const HEADERS: usize = 16 + 4;

/// One device's XDP features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub ifindex: u32,
    pub xdp_features: u64,
}

impl Device {
    pub fn takes_redirects(&self) -> bool {
        self.xdp_features & NDO_XMIT != 0
    }
}

/// Whether this kernel reports XDP features at all (the `netdev` family,
/// Linux 6.3). Without it `devices` fails and callers apply the
/// conservative rule instead (`redirect_targets`).
pub fn reported() -> bool {
    Socket::open().and_then(|s| s.netdev_family()).is_ok()
}

/// Every device of this network namespace, with its XDP features.
pub fn devices() -> Result<Vec<Device>> {
    let sock = Socket::open()?;
    let family = sock.netdev_family()?;
    let mut devices = Vec::new();
    sock.send(family, NLM_F_REQUEST | NLM_F_DUMP, NETDEV_CMD_DEV_GET, &[])?;
    sock.receive_until_done(|payload| {
        let (mut ifindex, mut features) = (None, 0);
        for (kind, value) in attributes(payload) {
            match kind {
                NETDEV_A_DEV_IFINDEX => ifindex = value.get(..4).map(|b| u32::from_ne_bytes(b.try_into().unwrap())),
                NETDEV_A_DEV_XDP_FEATURES => {
                    features = value.get(..8).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap()))
                }
                _ => {}
            }
        }
        if let Some(ifindex) = ifindex {
            devices.push(Device { ifindex, xdp_features: features });
        }
    })?;
    Ok(devices)
}

/// A generic netlink socket, closed on drop.
struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

impl Socket {
    fn open() -> Result<Self> {
        // SAFETY: a plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_GENERIC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("opening a generic netlink socket");
        }
        let sock = Socket(fd);
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: a valid descriptor and option of the size given.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const _ as *const libc::c_void,
                mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(sock)
    }

    /// The `netdev` family's id (the kernel assigns it at boot).
    fn netdev_family(&self) -> Result<u16> {
        let name = attribute(CTRL_ATTR_FAMILY_NAME, b"netdev\0");
        self.send(GENL_ID_CTRL, NLM_F_REQUEST, CTRL_CMD_GETFAMILY, &name)?;
        let mut id = None;
        self.receive_until_done(|payload| {
            for (kind, value) in attributes(payload) {
                if kind == CTRL_ATTR_FAMILY_ID && value.len() >= 2 {
                    id = Some(u16::from_ne_bytes([value[0], value[1]]));
                }
            }
        })
        .context("the kernel has no `netdev` netlink family (Linux 6.3 or later reports XDP features)")?;
        id.context("the kernel's answer named no `netdev` family id")
    }

    fn send(&self, kind: u16, flags: u16, cmd: u8, attrs: &[u8]) -> Result<()> {
        let len = HEADERS + attrs.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        msg.extend_from_slice(&[cmd, 1, 0, 0]); // genlmsghdr: command, version
        msg.extend_from_slice(attrs);
        // SAFETY: an all-zero sockaddr_nl addresses the kernel.
        let mut to: libc::sockaddr_nl = unsafe { mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `msg` and `to` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending a generic netlink request");
        }
        Ok(())
    }

    /// Hands each answer's attributes to `each`, until the kernel says it is
    /// done (a dump) or has answered once (a plain request).
    fn receive_until_done(&self, mut each: impl FnMut(&[u8])) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error()).context("reading a generic netlink answer");
            }
            let mut rest = &buf[..n as usize];
            let mut dump = false;
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let flags = u16::from_ne_bytes([rest[6], rest[7]]);
                if len < 16 || len > rest.len() {
                    bail!("a malformed generic netlink answer ({len} bytes of {})", rest.len());
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = rest.get(16..20).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno)).context("the kernel refused the request");
                        }
                        return Ok(());
                    }
                    _ => {
                        dump |= flags & NLM_F_MULTI != 0;
                        if len >= HEADERS {
                            each(&rest[HEADERS..len]);
                        }
                    }
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
            if !dump {
                return Ok(());
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut a = Vec::with_capacity(align4(len));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(align4(len), 0);
    a
}

/// The (type, value) pairs of a run of netlink attributes; a truncated one
/// ends the run.
fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff; // without the nested/byte-order flags
        if len < 4 || len > bytes.len() {
            return None;
        }
        let value = &bytes[4..len];
        bytes = &bytes[align4(len).min(bytes.len())..];
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_in_order_and_a_truncated_one_ends_the_run() {
        let mut bytes = attribute(NETDEV_A_DEV_IFINDEX, &7u32.to_ne_bytes());
        bytes.extend(attribute(NETDEV_A_DEV_XDP_FEATURES, &NDO_XMIT.to_ne_bytes()));
        bytes.extend([200, 0, 1, 0]);
        let read: Vec<(u16, Vec<u8>)> = attributes(&bytes).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(
            read,
            [
                (NETDEV_A_DEV_IFINDEX, 7u32.to_ne_bytes().to_vec()),
                (NETDEV_A_DEV_XDP_FEATURES, NDO_XMIT.to_ne_bytes().to_vec())
            ]
        );
    }

    #[test]
    fn the_loopback_device_is_reported_and_takes_no_redirects() {
        let lo = devices().unwrap().into_iter().find(|d| d.ifindex == 1).expect("lo is listed");
        assert!(!lo.takes_redirects(), "{lo:?}");
    }
}
