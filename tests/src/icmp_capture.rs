//! Every ICMP packet delivered in a namespace, read by a raw socket: how the
//! tests prove no ICMP carrying a shard's address ever reaches a player.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use crate::netns::NetNs;

/// One ICMP packet that reached the namespace.
#[derive(Debug, Clone)]
pub struct IcmpSeen {
    pub src: Ipv4Addr,
    pub kind: u8,
    pub code: u8,
    /// The destination of the packet it quotes, if it quotes one.
    pub quoted_dst: Option<Ipv4Addr>,
}

/// Every ICMP packet delivered in a namespace, read by a raw socket (a
/// copy of each, whatever socket it is for).
pub struct IcmpCapture {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<IcmpSeen>>>,
    thread: Option<JoinHandle<()>>,
}

impl IcmpCapture {
    pub fn start(ns: &NetNs) -> IcmpCapture {
        let fd = ns
            .run(|| {
                // SAFETY: plain socket creation; the fd is owned below.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
                assert!(fd >= 0, "raw ICMP socket: {}", std::io::Error::last_os_error());
                // SAFETY: a fresh fd nothing else owns.
                unsafe { OwnedFd::from_raw_fd(fd) }
            })
            .unwrap();
        let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        // SAFETY: setting a receive timeout on our fd, with a valid timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: receiving into a live buffer of its length.
                    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n > 0 {
                        if let Some(s) = parse(&buf[..n as usize]) {
                            seen.lock().unwrap().push(s);
                        }
                    }
                }
            })
        };
        IcmpCapture { stop, seen, thread: Some(thread) }
    }

    /// What it has seen so far.
    pub fn seen(&self) -> Vec<IcmpSeen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops reading; everything it saw.
    pub fn stop(&mut self) -> Vec<IcmpSeen> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen()
    }

    /// The packets that name one of `addrs`: as their source, or as the
    /// destination of the packet they quote.
    pub fn naming<'a>(seen: &'a [IcmpSeen], addrs: &[Ipv4Addr]) -> Vec<&'a IcmpSeen> {
        seen.iter().filter(|s| addrs.contains(&s.src) || s.quoted_dst.is_some_and(|d| addrs.contains(&d))).collect()
    }
}

impl Drop for IcmpCapture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An IPv4 packet carrying ICMP, as a raw socket hands it over.
fn parse(p: &[u8]) -> Option<IcmpSeen> {
    let ihl = (*p.first()? & 0x0f) as usize * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let icmp = p.get(ihl..ihl + 8)?;
    let quoted_dst = p.get(ihl + 8 + 16..ihl + 8 + 20).map(|d| Ipv4Addr::new(d[0], d[1], d[2], d[3]));
    let quotes = matches!(icmp[0], 3 | 4 | 5 | 11 | 12);
    Some(IcmpSeen { src, kind: icmp[0], code: icmp[1], quoted_dst: quoted_dst.filter(|_| quotes) })
}
