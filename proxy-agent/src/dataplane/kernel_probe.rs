//! What this kernel can do, asked of the kernel itself: each feature the
//! data plane needs or can do without is probed by loading a few
//! instructions that use it (as libbpf and Cilium probe), never read from
//! the version string, since distributions backport features (RHEL's 4.18
//! has much of 5.x) and custom kernels leave some out. The versions named
//! are where mainline gained each feature, for the messages and the docs
//! (docs/requirements.md).

use std::{ffi::CStr, io};

use aya::{
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, BpfHelper},
};

/// A feature without which the data plane cannot run at all.
struct Required {
    what: &'static str,
    since: &'static str,
    present: fn() -> bool,
}

/// In the order mainline gained them, so the first missing one is the
/// oldest thing the kernel lacks.
const REQUIRED: &[Required] = &[
    Required { what: "the BPF ring buffer (session events)", since: "5.8", present: ring_buffer },
    Required {
        what: "64-bit atomic compare-and-swap in BPF programs (the handshake pacer, the query budget)",
        since: "5.12",
        present: cmpxchg,
    },
];

/// The oldest mainline release with every required feature.
pub const MINIMUM: &str = "5.12";

/// The line the agent refuses to start with on a kernel below the floor,
/// or None when every required feature is there. Checked before the agent
/// touches any interface or pin.
pub fn below_floor() -> Option<String> {
    // Without the right to make BPF objects (no CAP_BPF, say) every probe
    // fails and says nothing about the kernel: the load that follows fails
    // with the real reason (Operation not permitted) instead.
    if !may_probe() {
        return None;
    }
    let missing = REQUIRED.iter().find(|r| !(r.present)())?;
    Some(format!(
        "this kernel ({release}) lacks {what} (Linux {since}); the proxy needs Linux {MINIMUM} or later \
         (docs/requirements.md lists what each kernel runs); nothing was attached",
        release = release(),
        what = missing.what,
        since = missing.since,
    ))
}

/// What the running kernel is called (`uname -r`), for messages only.
pub fn release() -> String {
    // SAFETY: uname fills the zeroed struct; its fields are C strings.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    }
}

/// `bpf_xdp_get_buff_len` and `bpf_xdp_store_bytes` (5.18), with which the
/// data plane writes the cluster's query answers into the frame. Without
/// them the object is loaded with `XDP_BYTES_HELPERS = 0` and every answer
/// but `p` comes from the agent's responder.
pub fn xdp_bytes_helpers() -> bool {
    if pretend_absent("SAMP_PRETEND_NO_XDP_BYTES_HELPERS") {
        return false;
    }
    [BpfHelper::BPF_FUNC_xdp_get_buff_len, BpfHelper::BPF_FUNC_xdp_store_bytes]
        .iter()
        .all(|h| is_helper_supported(ProgramType::Xdp, *h).unwrap_or(false))
}

/// Test knobs: `NAME=1` makes a probe answer "absent" on a kernel that has
/// the feature, so the fallbacks are tested on this machine's kernel too.
pub fn pretend_absent(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// Whether this process may make the objects the probes make: an array
/// map and the plainest XDP program (`r0 = XDP_PASS; exit`), which every
/// kernel with XDP loads.
fn may_probe() -> bool {
    const BPF_MOV64_IMM: u8 = 0xb7;
    const BPF_EXIT: u8 = 0x95;
    let pass = [insn(BPF_MOV64_IMM, 0, 0, 0, 2), insn(BPF_EXIT, 0, 0, 0, 0)];
    is_map_supported(aya::maps::MapType::Array).unwrap_or(false) && load_xdp(&pass).is_ok()
}

fn ring_buffer() -> bool {
    is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false)
}

/// Loads `*(u64 *)(r10 - 8) = 0; r0 = 0; r1 = 1; cmpxchg r10[-8], r0, r1;
/// r0 = XDP_PASS; exit` as an XDP program. 5.10's verifier refuses the
/// atomic with "BPF_STX uses reserved fields".
fn cmpxchg() -> bool {
    const BPF_ST_MEM_DW: u8 = 0x7a;
    const BPF_MOV64_IMM: u8 = 0xb7;
    const BPF_STX_ATOMIC_DW: u8 = 0xdb;
    const BPF_CMPXCHG: i32 = 0xf0 | 0x01;
    const BPF_EXIT: u8 = 0x95;
    let insns = [
        insn(BPF_ST_MEM_DW, 10, 0, -8, 0),
        insn(BPF_MOV64_IMM, 0, 0, 0, 0),
        insn(BPF_MOV64_IMM, 1, 0, 0, 1),
        insn(BPF_STX_ATOMIC_DW, 10, 1, -8, BPF_CMPXCHG),
        insn(BPF_MOV64_IMM, 0, 0, 0, 2),
        insn(BPF_EXIT, 0, 0, 0, 0),
    ];
    load_xdp(&insns).is_ok()
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let regs = (dst & 0x0f) | (src << 4);
    (code as u64) | (regs as u64) << 8 | (off as u16 as u64) << 16 | (imm as u32 as u64) << 32
}

/// BPF_PROG_LOAD of `insns` as an XDP program; the descriptor is closed.
fn load_xdp(insns: &[u64]) -> io::Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    // The first fields of `union bpf_attr` for BPF_PROG_LOAD; the rest zero.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        rest: [u64; 16],
    }
    let license = c"GPL";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        rest: [0; 16],
    };
    // SAFETY: a bpf(2) call with an attribute of the size given, pointing
    // at live instructions and a C string.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoad, std::mem::size_of::<ProgLoad>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor the kernel just gave us, closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r0 = 2 is b7 00 00 00 02 00 00 00 in the object's byte order.
        assert_eq!(insn(0xb7, 0, 0, 0, 2).to_le_bytes(), [0xb7, 0, 0, 0, 2, 0, 0, 0]);
        // *(u64 *)(r10 - 8) = 0: dst r10, offset -8.
        assert_eq!(insn(0x7a, 10, 0, -8, 0).to_le_bytes(), [0x7a, 0x0a, 0xf8, 0xff, 0, 0, 0, 0]);
        assert_eq!(insn(0xdb, 10, 1, -8, 0xf1).to_le_bytes(), [0xdb, 0x1a, 0xf8, 0xff, 0xf1, 0, 0, 0]);
    }
}
