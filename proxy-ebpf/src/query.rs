//! SA:MP queries to a frontend, answered here for the whole cluster and never
//! forwarded to a shard: the browser, the masterlist and launchers see one
//! server, and a query flood never reaches user space.
//!
//! `p` is echoed (addresses, ports and MACs swapped: the UDP checksum is
//! unchanged by the swap). `i`, `r`, `c`, `d` and `o` get the agent's
//! ready-made body from `QUERY_ANSWERS` after the requester's own 11-byte
//! header; the UDP checksum is the agent's precomputed body sum plus the
//! header's few words. An answer the frame cannot grow to hold goes to the
//! agent's responder (destination rewritten to the agent's address). `x` (RCON) is never answered nor forwarded. A source
//! past its per-second budget is dropped (the proxy is no reflector).

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST},
    helpers::generated::{
        bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
    Global,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use proxy_common::{
    csum, samp::QUERY_HEADER_LEN, Counter, Frontend, QuerySlot, QuerySource, MAX_QUERY_ANSWER, QUERY_BY_AGENT,
    QUERY_SLOTS,
};

use crate::{
    atomic, bounds,
    maps::{QUERY_ANSWERS, QUERY_SETTINGS, QUERY_SOURCES},
    parse::{ptr_at, Packet, L3_OFF, L4_OFF, PAYLOAD_OFF},
    stats::verdict,
};

/// 1 where the kernel has `bpf_xdp_get_buff_len` and `bpf_xdp_store_bytes`
/// (Linux 5.18); the agent loads the object with 0 where its probe finds
/// (`proxy_common::XDP_BYTES_HELPERS`)
/// them missing. A read-only global: the verifier knows its value and
/// removes the branches that call the missing helpers before it checks
/// them, so one object serves both kinds of kernel.
#[unsafe(no_mangle)]
static XDP_BYTES_HELPERS: Global<u8> = Global::new(1);

#[inline(always)]
fn bytes_helpers() -> bool {
    XDP_BYTES_HELPERS.load() != 0
}

/// A ping is the header plus 4 bytes the requester chose.
const PING_LEN: usize = QUERY_HEADER_LEN + 4;
const REPLY_TTL: u8 = 64;
const IPPROTO_UDP: u32 = 17;

#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet, frontend: Frontend) -> u32 {
    let Some(op) = ptr_at::<u8>(ctx, PAYLOAD_OFF + QUERY_HEADER_LEN - 1) else {
        return verdict(Counter::DropQueryMalformed, xdp_action::XDP_DROP);
    };
    // SAFETY: bounds-checked by `ptr_at`.
    let slot = match unsafe { *op } {
        b'x' => return verdict(Counter::DropQueryRcon, xdp_action::XDP_DROP),
        b'p' => None,
        b'i' => Some(QuerySlot::Info),
        b'r' => Some(QuerySlot::Rules),
        b'c' => Some(QuerySlot::Clients),
        b'd' => Some(QuerySlot::Detail),
        b'o' => Some(QuerySlot::OpenMp),
        _ => return verdict(Counter::DropQueryMalformed, xdp_action::XDP_DROP),
    };
    let expected = if slot.is_none() { PING_LEN } else { QUERY_HEADER_LEN };
    if pkt.payload_len != expected {
        return verdict(Counter::DropQueryMalformed, xdp_action::XDP_DROP);
    }
    if !within_budget(pkt.src_addr()) {
        return verdict(Counter::DropQueryBudget, xdp_action::XDP_DROP);
    }
    match slot {
        None => {
            turn_around(pkt.eth, pkt.ip, pkt.udp);
            verdict(Counter::QueryPing, xdp_action::XDP_TX)
        }
        Some(slot) => answer(ctx, pkt, frontend, slot),
    }
}

/// One more query from `src` in its one-second window (which opens at its
/// first query); false past the budget. Exact while both CPUs answer the
/// same source: the window's start and its count are one word, changed only
/// by compare-and-swap.
#[inline(always)]
fn within_budget(src: u32) -> bool {
    let limit = QUERY_SETTINGS.get(0).map(|l| l.per_second).unwrap_or(0);
    if limit == 0 {
        return true;
    }
    // SAFETY: coarse clock helper, no arguments.
    let tick = (unsafe { bpf_ktime_get_coarse_ns() } >> QuerySource::TICK_SHIFT) as u32;
    if QUERY_SOURCES.get_ptr_mut(&src).is_none() {
        // NOEXIST: when another CPU inserted it first, share its budget.
        // A full LRU evicts an old source: at worst that one starts afresh.
        let _ = QUERY_SOURCES.insert(&src, &QuerySource::default(), BPF_NOEXIST as u64);
    }
    let Some(s) = QUERY_SOURCES.get_ptr_mut(&src) else {
        return false;
    };
    // SAFETY: a live map value.
    let word = unsafe { &raw mut (*s).start_and_count };
    for _ in 0..atomic::ATTEMPTS {
        // SAFETY: `word` points into the live map value.
        let seen = unsafe { atomic::load(word) };
        let (start, count) = QuerySource::unpack(seen);
        let (start, count) = if count == 0 || tick.wrapping_sub(start) >= QuerySource::WINDOW_TICKS {
            (tick, 0)
        } else {
            (start, count)
        };
        if count >= limit {
            return false;
        }
        // SAFETY: as above.
        if unsafe { atomic::replace(word, seen, QuerySource::pack(start, count + 1)) } {
            return true;
        }
    }
    false
}

/// Sends the frontend's answer for `slot` back to the requester.
#[inline(always)]
fn answer(ctx: &XdpContext, pkt: &Packet, frontend: Frontend, slot: QuerySlot) -> u32 {
    let Some(a) = QUERY_ANSWERS.get(frontend.id * QUERY_SLOTS + slot as u32) else {
        return verdict(Counter::DropQueryUnanswered, xdp_action::XDP_DROP);
    };
    if !bytes_helpers() {
        // Below 5.18 the frame cannot be grown and filled here: every
        // answer is the agent's, rewritten through the parsed headers.
        return AgentRewrite::apply_direct(AgentRewrite::of(pkt), pkt);
    }
    if a.flags & QUERY_BY_AGENT != 0 {
        return AgentRewrite::apply(AgentRewrite::of(pkt), ctx);
    }
    let len = a.len as usize;
    if len == 0 || len > MAX_QUERY_ANSWER {
        return verdict(Counter::DropQueryUnanswered, xdp_action::XDP_DROP);
    }
    let frame = PAYLOAD_OFF + QUERY_HEADER_LEN + len;
    // The frame's length as a plain number (packet-pointer arithmetic
    // would not pass the verifier once the compiler folds it).
    // SAFETY: the context is this program's.
    let current = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    let delta = frame as i32 - current;
    // Should the frame not grow, the agent answers: the rewrite that sends
    // the query there is computed now, while the headers are at hand.
    let fallback = AgentRewrite::of(pkt);
    let grown = grow(ctx, delta) && {
        // SAFETY: `a` points at a map value of MAX_QUERY_ANSWER body bytes
        // and `len` is at most that; the frame was sized for exactly this copy.
        // The length checked again here, on the register the call gets
        // (6.1's verifier lost the first check across the helper calls):
        // the helper takes 1..=MAX_QUERY_ANSWER bytes of the map value.
        let len = bounds::within(len, 1, MAX_QUERY_ANSWER);
        let stored = unsafe {
            bpf_xdp_store_bytes(ctx.ctx, (PAYLOAD_OFF + QUERY_HEADER_LEN) as u32, a.body.as_ptr() as *mut _, len as u32)
        };
        stored == 0
    };
    if !grown {
        return AgentRewrite::apply(fallback, ctx);
    }
    // The frame moved: every header pointer is proven again.
    let (Some(eth), Some(ip), Some(udp), Some(head)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, L3_OFF),
        ptr_at::<UdpHdr>(ctx, L4_OFF),
        ptr_at::<[u8; QUERY_HEADER_LEN]>(ctx, PAYLOAD_OFF),
    ) else {
        return verdict(Counter::DropQueryUnanswered, xdp_action::XDP_DROP);
    };
    let udp_len = (UdpHdr::LEN + QUERY_HEADER_LEN + len) as u16;
    // SAFETY: all four bounds-checked just above.
    unsafe {
        (*ip).tot_len = (Ipv4Hdr::LEN as u16 + udp_len).to_be_bytes();
        (*udp).len = udp_len.to_be_bytes();
    }
    turn_around(eth, ip, udp);
    // SAFETY: as above.
    let (ip, udp, head) = unsafe { (&*ip, &mut *udp, &*head) };
    // Pseudo-header, UDP header (checksum 0), the echoed header; the body's
    // words (with header byte 10 as the high half of its first) are in
    // `body_sum`.
    let mut sum = a.body_sum;
    sum = csum::sum_be(&ip.src_addr, sum);
    sum = csum::sum_be(&ip.dst_addr, sum);
    sum += IPPROTO_UDP + udp_len as u32 * 2;
    sum = csum::sum_be(&udp.src, sum);
    sum = csum::sum_be(&udp.dst, sum);
    sum = csum::sum_be(head, sum);
    udp.check = match csum::finish_be(sum) {
        0 => 0xffff,
        c => c,
    }
    .to_be_bytes();
    verdict(slot_counter(slot), xdp_action::XDP_TX)
}

/// Makes the frame `delta` bytes longer (or shorter): at the tail where the
/// driver left room (NIC page buffers), else at the head (XDP guarantees 256
/// bytes there; veth leaves no tailroom), moving the headers and the echoed
/// query header to the new front. False when neither fits: the frame is
/// then as it was.
#[inline(always)]
fn grow(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: the context is this program's; the kernel checks the room.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0 {
        return true;
    }
    let Some(front) = ptr_at::<[u8; PAYLOAD_OFF + QUERY_HEADER_LEN]>(ctx, 0) else {
        return false;
    };
    // SAFETY: bounds-checked by `ptr_at`; copied to the stack before the frame moves.
    let mut saved = unsafe { *front };
    // SAFETY: as for adjust_tail.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return false;
    }
    // SAFETY: `saved` is a stack buffer of exactly the length stored.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, saved.as_mut_ptr() as *mut _, saved.len() as u32) == 0 }
}

/// The rewrite that hands a query to the agent's responder: its destination
/// becomes the agent's address on this node (port kept, both checksums
/// updated) and the kernel delivers it there. Computed while the parsed
/// headers are at hand and written with `bpf_xdp_store_bytes`, so it needs
/// no packet pointer after the frame was touched.
struct AgentRewrite {
    dst: [u8; 4],
    ip_check: [u8; 2],
    udp_check: [u8; 2],
}

impl AgentRewrite {
    #[inline(always)]
    fn of(pkt: &Packet) -> Option<Self> {
        let agent = QUERY_SETTINGS.get(0).map(|s| s.agent_addr).unwrap_or(0);
        if agent == 0 {
            return None;
        }
        let old = pkt.dst_addr();
        // SAFETY: `ip` and `udp` were bounds-checked when parsed.
        let (ip_check, udp_check) =
            unsafe { (u16::from_ne_bytes((*pkt.ip).check), u16::from_ne_bytes((*pkt.udp).check)) };
        Some(Self {
            dst: agent.to_ne_bytes(),
            ip_check: csum::replace4(ip_check, old, agent).to_ne_bytes(),
            udp_check: csum::udp_replace4(udp_check, old, agent).to_ne_bytes(),
        })
    }

    #[inline(always)]
    fn apply(this: Option<Self>, ctx: &XdpContext) -> u32 {
        let Some(mut rw) = this else {
            return verdict(Counter::DropQueryUnanswered, xdp_action::XDP_DROP);
        };
        // SAFETY: stack buffers of exactly the lengths stored, at offsets
        // inside the unchanged frame's headers.
        let failed = unsafe {
            bpf_xdp_store_bytes(ctx.ctx, (L3_OFF + 16) as u32, rw.dst.as_mut_ptr() as *mut _, 4) != 0
                || bpf_xdp_store_bytes(ctx.ctx, (L3_OFF + 10) as u32, rw.ip_check.as_mut_ptr() as *mut _, 2) != 0
                || bpf_xdp_store_bytes(ctx.ctx, (L4_OFF + 6) as u32, rw.udp_check.as_mut_ptr() as *mut _, 2) != 0
        };
        if failed {
            return verdict(Counter::DropQueryUnanswered, xdp_action::XDP_DROP);
        }
        verdict(Counter::PassQueryAgent, xdp_action::XDP_PASS)
    }

    /// `apply` without `bpf_xdp_store_bytes`: written through the headers
    /// `pkt` parsed, valid while nothing has moved the frame.
    #[inline(always)]
    fn apply_direct(this: Option<Self>, pkt: &Packet) -> u32 {
        let Some(rw) = this else {
            return verdict(Counter::DropQueryUnanswered, xdp_action::XDP_DROP);
        };
        // SAFETY: `ip` and `udp` were bounds-checked when parsed and the
        // frame is untouched since.
        unsafe {
            (*pkt.ip).dst_addr = rw.dst;
            (*pkt.ip).check = rw.ip_check;
            (*pkt.udp).check = rw.udp_check;
        }
        verdict(Counter::PassQueryAgent, xdp_action::XDP_PASS)
    }
}

#[inline(always)]
fn slot_counter(slot: QuerySlot) -> Counter {
    match slot {
        QuerySlot::Info => Counter::QueryInfo,
        QuerySlot::Rules => Counter::QueryRules,
        QuerySlot::Clients => Counter::QueryClients,
        QuerySlot::Detail => Counter::QueryDetail,
        QuerySlot::OpenMp => Counter::QueryOpenmp,
    }
}

/// Makes a received frame a reply: MACs, addresses and ports swapped, a
/// fresh TTL and IPv4 checksum. The UDP checksum sums both addresses and
/// both ports, so the swap leaves it right.
#[inline(always)]
fn turn_around(eth: *mut EthHdr, ip: *mut Ipv4Hdr, udp: *mut UdpHdr) {
    // SAFETY: the caller bounds-checked all three headers.
    let (eth, ip, udp) = unsafe { (&mut *eth, &mut *ip, &mut *udp) };
    core::mem::swap(&mut eth.src_addr, &mut eth.dst_addr);
    core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
    core::mem::swap(&mut udp.src, &mut udp.dst);
    ip.ttl = REPLY_TTL;
    ip.check = [0, 0];
    // SAFETY: an IPv4 header without options is exactly 20 bytes.
    let bytes = unsafe { &*(ip as *const Ipv4Hdr as *const [u8; Ipv4Hdr::LEN]) };
    ip.check = csum::finish_be(csum::sum_be(bytes, 0)).to_be_bytes();
}
