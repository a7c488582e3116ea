//! The length of a jiffy, which the loader gives the data plane for its
//! cache clock (`proxy_common::JIFFY_NS`): jiffies cost the hit path one
//! load where the coarse clock helper costs a call.
//!
//! The tick rate (CONFIG_HZ) is a kernel build option that user space cannot
//! read everywhere (/proc/config.gz is optional, /proc/timer_list is masked
//! in containers), so the agent asks the kernel: a twelve-instruction XDP
//! program, run with BPF_PROG_TEST_RUN, writes `bpf_jiffies64` and
//! `bpf_ktime_get_ns` into the frame; two changes of jiffies some ticks
//! apart give the length of one.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Nanoseconds per jiffy of this kernel, measured once per process; 0 when
/// it could not be measured (the data plane then uses the coarse clock
/// helper, correct but about 15 ns a packet slower).
pub fn jiffy_ns() -> u64 {
    static JIFFY: OnceLock<u64> = OnceLock::new();
    *JIFFY.get_or_init(|| match measure() {
        Ok(ns) => {
            log::debug!("cache clock: jiffies of {ns} ns ({} Hz)", 1_000_000_000 / ns);
            ns
        }
        Err(e) => {
            log::warn!("cannot tell the kernel's tick length ({e:#}); the data plane uses the coarse clock helper");
            0
        }
    })
}

fn measure() -> Result<u64> {
    let probe = Probe::load()?;
    let (j1, t1) = probe.next_jiffy()?;
    std::thread::sleep(Duration::from_millis(50));
    let (j2, t2) = probe.next_jiffy()?;
    if j2 <= j1 || t2 <= t1 {
        bail!("jiffies did not advance ({j1} -> {j2})");
    }
    let measured = (t2 - t1) / (j2 - j1);
    tick_of(measured)
}

/// CONFIG_HZ values kernels are built with (x86 offers 100, 250, 300 and
/// 1000; other architectures some of the rest).
const KNOWN_HZ: [u64; 9] = [100, 128, 200, 250, 256, 300, 500, 1000, 1024];

/// The kernel's TICK_NSEC for a measured jiffy: the known tick rate within
/// 2% of the measure, else a whole number of Hz within 2%. An edge seen late
/// on a loaded machine stretches the measure (4,016,064 ns was seen for
/// 250 Hz), so the known rates are preferred to the nearest whole Hz.
fn tick_of(measured: u64) -> Result<u64> {
    let tick = |hz: u64| (1_000_000_000 + hz / 2) / hz;
    let close = |hz: u64| tick(hz).abs_diff(measured) * 50 <= tick(hz);
    if let Some(&hz) = KNOWN_HZ.iter().find(|&&hz| close(hz)) {
        return Ok(tick(hz));
    }
    let hz = (1_000_000_000 + measured / 2) / measured.max(1);
    if !(10..=10_000).contains(&hz) {
        bail!("implausible jiffy of {measured} ns");
    }
    if !close(hz) {
        bail!("jiffy of {measured} ns is no whole number of Hz");
    }
    Ok(tick(hz))
}

/// The probe program, loaded.
struct Probe(OwnedFd);

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TEST_RUN: i64 = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_FUNC_KTIME_GET_NS: i32 = 5;
const BPF_FUNC_JIFFIES64: i32 = 118;
/// The most time between the two samples an edge of jiffies is seen
/// between (a test run takes about 1 µs here).
const EDGE_WINDOW_NS: u64 = 20_000;
/// Frames of this size go in and come out.
const FRAME: usize = 64;

/// One instruction: opcode, registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [code, dst | src << 4, o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// r7 = data; if data + 16 <= data_end: data[0..8] = jiffies,
/// data[8..16] = ktime_get_ns; return XDP_PASS.
const PROGRAM: [[u8; 8]; 12] = [
    insn(0xbf, 6, 1, 0, 0),                     // r6 = r1 (ctx)
    insn(0x61, 7, 6, 0, 0),                     // r7 = ctx->data
    insn(0x61, 8, 6, 4, 0),                     // r8 = ctx->data_end
    insn(0xbf, 2, 7, 0, 0),                     // r2 = r7
    insn(0x07, 2, 0, 0, 16),                    // r2 += 16
    insn(0x2d, 2, 8, 4, 0),                     // if r2 > r8 goto +4 (the return)
    insn(0x85, 0, 0, 0, BPF_FUNC_JIFFIES64),    // call bpf_jiffies64
    insn(0x7b, 7, 0, 0, 0),                     // *(u64 *)(r7 + 0) = r0
    insn(0x85, 0, 0, 0, BPF_FUNC_KTIME_GET_NS), // call bpf_ktime_get_ns
    insn(0x7b, 7, 0, 8, 0),                     // *(u64 *)(r7 + 8) = r0
    insn(0xb7, 0, 0, 0, 2),                     // r0 = XDP_PASS
    insn(0x95, 0, 0, 0, 0),                     // exit
];

/// `union bpf_attr`, as much of it as these commands use (the kernel reads
/// the rest as zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn put<const N: usize>(&mut self, offset: usize, bytes: [u8; N]) {
        self.0[offset..offset + N].copy_from_slice(&bytes);
    }
}

fn bpf(cmd: i64, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid bpf_attr of the given size for `cmd`, and
    // every pointer in it points to memory that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut Attr, std::mem::size_of::<Attr>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

impl Probe {
    fn load() -> Result<Self> {
        let license = c"GPL";
        let mut attr = Attr([0; 128]);
        attr.put(0, BPF_PROG_TYPE_XDP.to_ne_bytes());
        attr.put(4, (PROGRAM.len() as u32).to_ne_bytes());
        attr.put(8, (PROGRAM.as_ptr() as u64).to_ne_bytes());
        attr.put(16, (license.as_ptr() as u64).to_ne_bytes());
        attr.put(48, *b"samp_clock\0\0\0\0\0\0");
        let fd = bpf(BPF_PROG_LOAD, &mut attr).context("loading the clock probe")?;
        // SAFETY: a new file descriptor that nothing else owns.
        Ok(Probe(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// (jiffies, ktime_get_ns) now.
    fn sample(&self) -> Result<(u64, u64)> {
        let input = [0u8; FRAME];
        let mut output = [0u8; FRAME];
        let mut attr = Attr([0; 128]);
        attr.put(0, (self.0.as_raw_fd() as u32).to_ne_bytes());
        attr.put(8, (FRAME as u32).to_ne_bytes());
        attr.put(12, (FRAME as u32).to_ne_bytes());
        attr.put(16, (input.as_ptr() as u64).to_ne_bytes());
        attr.put(24, (output.as_mut_ptr() as u64).to_ne_bytes());
        attr.put(32, 1u32.to_ne_bytes());
        bpf(BPF_PROG_TEST_RUN, &mut attr).context("running the clock probe")?;
        let word = |at: usize| u64::from_ne_bytes(output[at..at + 8].try_into().expect("8 bytes"));
        Ok((word(0), word(8)))
    }

    /// Waits for jiffies to change: the new value and (within a test run)
    /// when it changed. An edge is taken only when the samples around it
    /// lie within `EDGE_WINDOW_NS`: a thread preempted across an edge would
    /// see it late (by 0.6 ms once on a loaded CI machine, which made a
    /// 4 ms jiffy read 4.1), so the next edge is awaited instead.
    fn next_jiffy(&self) -> Result<(u64, u64)> {
        let (mut seen, mut before) = self.sample()?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let (j, t) = self.sample()?;
            if j != seen && t.saturating_sub(before) <= EDGE_WINDOW_NS {
                return Ok((j, t));
            }
            (seen, before) = (j, t);
        }
        bail!("no sharp change of jiffies within 500 ms");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_late_edge_still_gives_the_kernels_tick() {
        assert_eq!(super::tick_of(4_016_064).unwrap(), 4_000_000);
        assert_eq!(super::tick_of(3_990_000).unwrap(), 4_000_000);
        assert_eq!(super::tick_of(1_010_000).unwrap(), 1_000_000);
        assert_eq!(super::tick_of(3_333_000).unwrap(), 3_333_333);
        // Not a known rate, but a whole number of Hz.
        assert_eq!(super::tick_of(25_000_000).unwrap(), 25_000_000);
        assert!(super::tick_of(5).is_err());
    }

    #[test]
    fn the_jiffy_measures_the_same_twice() {
        // Needs CAP_BPF; the tests run as root.
        let ns = super::measure().expect("measuring the jiffy");
        assert_eq!(super::measure().expect("measuring again"), ns);
        assert!((100_000..=100_000_000).contains(&ns), "{ns} ns");
    }
}
