//! Random and mutated frames through the data plane (BPF_PROG_TEST_RUN):
//! whatever comes in, no frame leaves with a checksum the program broke, no
//! frame goes to a shard its sender does not belong to, no ICMP error naming
//! a shard's game port goes on to a player, and a frame that is not ours
//! leaves as it came. Every IPv4 ICMP frame also goes through the egress
//! guard (TC), which must drop exactly those naming a shard's game port to
//! anyone but a shard, and change nothing. 100,000 frames from a fixed seed here;
//! `cargo xtask fuzz --packets N [--seed S]` runs more (the seed of a failure
//! is printed: add it to `SEEDS` below to keep it).

use std::{collections::HashMap, net::Ipv4Addr};

use proxy_common::csum::{finish_be, sum_be};
use tests::{
    bed::*,
    packet::{IcmpError, Udp},
};

/// Seeds run every time (the first is the CI default; add failures here).
const SEEDS: &[u64] = &[0x5a3d_2024_0001];
const DEFAULT_PACKETS: usize = 100_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What an independent reading of a frame says.
struct Seen {
    /// IPv4 without options or fragments, UDP, lengths consistent.
    udp: bool,
    /// Too short or inconsistent: the program may drop it.
    malformed: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ip_ok: bool,
    /// The UDP checksum verifies (or is zero).
    udp_ok: bool,
}

fn read(f: &[u8]) -> Seen {
    let mut s = Seen {
        udp: false,
        malformed: false,
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        sport: 0,
        dport: 0,
        ip_ok: false,
        udp_ok: false,
    };
    if f[12..14] != [0x08, 0x00] {
        return s;
    }
    if f.len() < 34 || f[14] >> 4 != 4 || f[14] & 0x0f < 5 {
        s.malformed = true;
        return s;
    }
    if f[14] & 0x0f != 5 || u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0 || f[23] != 17 {
        return s;
    }
    let ip_len = u16::from_be_bytes([f[16], f[17]]) as usize;
    if f.len() < 42 {
        s.malformed = true;
        return s;
    }
    let udp_len = u16::from_be_bytes([f[38], f[39]]) as usize;
    if ip_len > f.len() - 14 || ip_len < 28 || udp_len < 8 || udp_len > ip_len - 20 {
        s.malformed = true;
        return s;
    }
    s.udp = true;
    s.src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    s.dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    s.sport = u16::from_be_bytes([f[34], f[35]]);
    s.dport = u16::from_be_bytes([f[36], f[37]]);
    s.ip_ok = finish_be(sum_be(&f[14..34], 0)) == 0;
    let udp = &f[34..34 + udp_len];
    s.udp_ok = udp[6..8] == [0, 0] || {
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        finish_be(sum_be(udp, sum_be(&pseudo, 0))) == 0
    };
    s
}

/// Recomputes both checksums of a (well-formed) frame.
fn fix_checksums(f: &mut [u8]) {
    let s = read(f);
    if !s.udp {
        return;
    }
    f[24..26].copy_from_slice(&[0, 0]);
    let c = finish_be(sum_be(&f[14..34], 0));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let udp_len = u16::from_be_bytes([f[38], f[39]]) as usize;
    f[40..42].copy_from_slice(&[0, 0]);
    let mut pseudo = f[26..34].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let c = match finish_be(sum_be(&f[34..34 + udp_len], sum_be(&pseudo, 0))) {
        0 => 0xffff,
        c => c,
    };
    f[40..42].copy_from_slice(&c.to_be_bytes());
}

/// When `f` is an ICMP error quoting a UDP packet to a shard's game port
/// (IPv4 options allowed in both headers), its destination.
fn shard_icmp(f: &[u8]) -> Option<Ipv4Addr> {
    let ip = f.get(14..34)?;
    if f[12..14] != [0x08, 0x00] || ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 || ip[9] != 1 {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let icmp = 14 + (ip[0] & 0x0f) as usize * 4;
    if ![3, 4, 5, 11, 12].contains(f.get(icmp..icmp + 8)?.first()?) {
        return None;
    }
    let q = f.get(icmp + 8..icmp + 28)?;
    if q[0] >> 4 != 4 || q[0] & 0x0f < 5 || q[9] != 17 || u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
        return None;
    }
    let ports = icmp + 8 + (q[0] & 0x0f) as usize * 4;
    let dport = u16::from_be_bytes(f.get(ports..ports + 4)?[2..4].try_into().ok()?);
    let shard = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
    (SHARDS.contains(&shard) && dport == PORT).then(|| Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]))
}

const SHARDS: [Ipv4Addr; 3] = [SHARD_A, SHARD_B, Ipv4Addr::new(198, 18, 70, 2)];

fn template(rng: &mut Rng) -> Vec<u8> {
    let port = 50_000 + rng.below(10) as u16;
    let stranger = Ipv4Addr::new(198, 18, 60, 10 + rng.below(5) as u8);
    let client = if rng.below(2) == 0 { CLIENT } else { stranger };
    let mut p = match rng.below(10) {
        0 => Udp::new(client, port, VIP, PORT, &game_packet()),
        1 => Udp::new(client, port, VIP, PORT, &handshake(rng.next() as u16)),
        2 => Udp::new(client, port, VIP, PORT, &query()),
        3 => {
            let ops = [b'i', b'r', b'c', b'd', b'o', b'p', b'x', b'z'];
            let mut q = query();
            q[10] = ops[rng.below(ops.len())];
            Udp::new(client, port, VIP, PORT, &q)
        }
        4 => Udp::new(SHARDS[rng.below(3)], PORT, client, port, &[26, 1, 2]),
        5 => Udp::new(SHARDS[rng.below(3)], PORT, client, port, &[0xE3; 40]),
        6 => Udp::new(client, port, Ipv4Addr::new(198, 18, 99, 9), 9999, &[1, 2, 3]),
        // A shard refusing a player's packet, or a probe on this node; or
        // any ICMP error about any of these templates.
        8 => {
            let shard = SHARDS[rng.below(3)];
            let to = [client, LOCAL, Ipv4Addr::new(198, 18, 50, 1)][rng.below(3)];
            let about = Udp::new(to, port, shard, PORT, &game_packet());
            return IcmpError::port_unreachable(shard, to, &about).frame();
        }
        9 => {
            let about = Udp::new(client, port, SHARDS[rng.below(3)], [PORT, 3306][rng.below(2)], &[7; 9]);
            let from = [SHARD_A, Ipv4Addr::new(198, 18, 50, 77)][rng.below(2)];
            let mut e =
                IcmpError::about(from, client, [3, 4, 5, 11, 12, 0, 8][rng.below(7)], rng.below(16) as u8, &about);
            if rng.below(4) == 0 {
                e.options = vec![1; 4 * (1 + rng.below(3))];
            }
            e.quoted.truncate(rng.below(e.quoted.len() + 1));
            return e.frame();
        }
        _ => {
            let mut raw = vec![0u8; 14 + rng.below(120)];
            raw.iter_mut().for_each(|b| *b = rng.next() as u8);
            return raw;
        }
    };
    p.zero_udp_checksum = rng.below(10) == 0;
    p.frame()
}

fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    for _ in 0..rng.below(4) {
        match rng.below(6) {
            // A header field: lengths, ihl, frag bits, protocol, ports, addresses.
            0 => {
                let at = [14, 16, 17, 20, 21, 22, 23, 26, 29, 30, 33, 34, 36, 37, 38, 39][rng.below(16)];
                if at < f.len() {
                    f[at] = rng.next() as u8;
                }
            }
            // Any byte.
            1 if !f.is_empty() => {
                let at = rng.below(f.len());
                f[at] ^= 1 << rng.below(8);
            }
            // Truncate or extend.
            // (BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet
            // header, and no NIC delivers one.)
            2 => f.truncate(14 + rng.below(f.len().saturating_sub(14) + 1)),
            3 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            _ => {}
        }
    }
    if rng.below(2) == 0 {
        fix_checksums(f);
    }
}

fn run(seed: u64, packets: usize) {
    let mut bed = Bed::new().expect("test bed");
    bed.place_all_on(GROUP_A);
    // Known players: five on A, five on B; everyone else is placed on A.
    let mut shard_of: HashMap<(Ipv4Addr, u16), Ipv4Addr> = HashMap::new();
    for n in 0..10u16 {
        let (group, shard) = if n < 5 { (GROUP_A, SHARD_A) } else { (GROUP_B, SHARD_B) };
        bed.session(CLIENT, 50_000 + n, group, false);
        shard_of.insert((CLIENT, 50_000 + n), shard);
    }
    let mut rng = Rng(seed);
    let mut verdicts: HashMap<u32, usize> = HashMap::new();
    let mut shard_icmps = 0;
    let (mut guarded, mut guard_drops) = (0, 0);
    for i in 0..packets {
        let mut f = template(&mut rng);
        mutate(&mut rng, &mut f);
        let before = read(&f);
        if f.get(12..14) == Some(&[0x08, 0x00]) && f.get(23) == Some(&1) {
            if let Some((verdict, out, _)) = bed.try_run_guard(&f, 1) {
                let case = || format!("seed {seed:#x} packet {i} (egress guard): in {f:02x?}");
                assert_eq!(out, f, "the egress guard changed a frame: {}", case());
                let names_a_shard = shard_icmp(&f).is_some_and(|dst| !SHARDS.contains(&dst));
                let want = if names_a_shard { TC_ACT_SHOT } else { TC_ACT_UNSPEC };
                assert_eq!(verdict, want, "egress guard verdict: {}", case());
                guarded += 1;
                guard_drops += usize::from(names_a_shard);
            }
        }
        let (verdict, out) = bed.run(&f);
        *verdicts.entry(verdict).or_default() += 1;
        let case = || format!("seed {seed:#x} packet {i}: in {f:02x?}\nout {out:02x?}");
        if let Some(dst) = shard_icmp(&f) {
            // An ICMP error naming a shard's game port: never changed; only
            // this node (the agent's probe) may get it, never a player.
            assert_eq!(out, f, "a shard's ICMP changed: {}", case());
            shard_icmps += 1;
            let octets = dst.octets();
            let local = [Ipv4Addr::new(198, 18, 50, 1), LOCAL].contains(&dst);
            let player = octets[..3] == [198, 18, 60] && !matches!(octets[3], 0 | 1 | 255);
            if local {
                assert_eq!(verdict, XDP_PASS, "the prober's refusal held back: {}", case());
            } else if player {
                assert_eq!(verdict, XDP_DROP, "a shard's ICMP let through to a player: {}", case());
            } else {
                assert!(verdict == XDP_PASS || verdict == XDP_DROP, "verdict {verdict}: {}", case());
            }
            continue;
        }
        let to_frontend = before.udp && before.dst == VIP && before.dport == PORT;
        let from_shard = before.udp && SHARDS.contains(&before.src) && before.sport == PORT;
        if !(to_frontend || from_shard) {
            assert_eq!(out, f, "not ours, but changed: {}", case());
            assert!(verdict == XDP_PASS || before.malformed, "not ours, verdict {verdict}: {}", case());
            continue;
        }
        if out == f {
            continue;
        }
        let after = read(&out);
        assert!(after.udp, "left unreadable: {}", case());
        if verdict == XDP_TX {
            assert!(after.ip_ok && after.udp_ok, "an answer with a bad checksum: {}", case());
            assert_eq!((after.dst, after.dport), (before.src, before.sport), "answered someone else: {}", case());
            continue;
        }
        if before.ip_ok {
            assert!(after.ip_ok, "IPv4 checksum broken: {}", case());
        }
        if before.udp_ok {
            assert!(after.udp_ok, "UDP checksum broken: {}", case());
        }
        if SHARDS.contains(&after.dst) {
            let owner = shard_of.get(&(before.src, before.sport)).copied().unwrap_or(SHARD_A);
            assert_eq!(after.dst, owner, "sent to a shard it does not belong to: {}", case());
            assert_eq!((after.src, after.sport, after.dport), (before.src, before.sport, before.dport), "{}", case());
        } else if from_shard {
            assert_eq!(after.src, VIP, "a shard reply left without the public address: {}", case());
            assert_eq!(after.sport, PORT, "{}", case());
        } else {
            // The query responder's hand-off: only the destination changed.
            assert_eq!((after.src, after.sport, after.dport), (before.src, before.sport, before.dport), "{}", case());
        }
    }
    println!(
        "fuzz seed {seed:#x}: {packets} frames, verdicts {verdicts:?}, {shard_icmps} ICMP errors naming a shard; \
         egress guard: {guarded} ICMP frames, {guard_drops} dropped"
    );
}

#[test]
fn random_and_mutated_frames_break_nothing() {
    let packets = std::env::var("SAMP_FUZZ_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_PACKETS);
    let extra: Option<u64> = std::env::var("SAMP_FUZZ_SEED").ok().and_then(|v| v.parse().ok());
    for &seed in SEEDS.iter().chain(extra.as_ref()) {
        run(seed, packets);
    }
}
