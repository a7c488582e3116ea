//! Raw Ethernet frames sent from inside a namespace (AF_PACKET): how a test
//! forges packets from many source addresses (a spoofed flood) without
//! owning those addresses.

use std::{ffi::CString, fs, io, mem};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// The MAC address of `dev` in `ns`.
pub fn mac_of(ns: &NetNs, dev: &str) -> Result<[u8; 6]> {
    let text = ns.run(|| fs::read_to_string(format!("/sys/class/net/{dev}/address")))?;
    let text = match text {
        Ok(t) => t,
        // /sys may belong to another namespace: ask `ip` instead.
        Err(_) => {
            let out = ns.ip(&["-o", "link", "show", dev])?;
            out.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).context("no MAC")?.to_string()
        }
    };
    let bytes: Vec<u8> =
        text.trim().split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>().context("parsing a MAC")?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("a MAC has six bytes"))
}

/// Sends every frame out of `dev` in `ns`, as it is, `burst` at a time with
/// a millisecond between bursts (a veth peer's ring holds a few hundred
/// frames: faster, it drops them before any program sees them). Returns how
/// many went.
pub fn send_frames(ns: &NetNs, dev: &str, frames: &[Vec<u8>], burst: usize) -> Result<usize> {
    let dev = dev.to_string();
    ns.run(move || -> Result<usize> {
        let name = CString::new(dev.clone())?;
        // SAFETY: if_nametoindex reads a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {dev}");
        }
        // SAFETY: plain socket creation; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let mut sent = 0;
        for (n, f) in frames.iter().enumerate() {
            if n > 0 && n % burst.max(1) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            addr.sll_addr[..6].copy_from_slice(&f[..6]);
            // SAFETY: `f` is a live buffer of its length; `addr` a valid sockaddr_ll.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc == f.len() as isize {
                sent += 1;
            }
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        Ok(sent)
    })?
}
