//! `cargo xtask bench e2e`: the same player traffic, on one namespace
//! topology, through (0) plain kernel routing in the proxy namespace (the
//! baseline), (a) our XDP data plane run by the real agent, (b) nftables
//! DNAT with conntrack, (c) a userspace UDP relay (`udp-relay`, tokio, one
//! upstream socket per flow); for each: the highest loss-free rate and what
//! limits it, the CPU one forwarded packet costs over routing at a fixed
//! offered rate, and the latency the hop adds.
//!
//! Method (`shared/PLATFORM.md`, "Measuring a forwarding hop on veth"): on a
//! 2-core machine the generator and the forwarding share the CPUs, so raw
//! delivered rates compare generators, not data planes. The hop is measured
//! differentially instead: the same fixed, rate-limited offered load (well
//! below every path's loss-free rate) through each path; busy CPU = CPUs x
//! wall - (idle + iowait) from /proc/stat over the window (exact, unlike the
//! tick-sampled busy columns); per delivered packet, minus the routing
//! baseline of the same repetition, is the hop's cost. Repetitions rotate
//! the order of the paths so drift hits all alike; medians and ranges are
//! printed. The generator (sendmmsg over 64 connected sockets, pinned to
//! CPU0) and the sink (recvmmsg, pinned to CPU1) are the same for every path
//! and cancel out. Every flow's first packets are a real SA:MP handshake, so
//! in ours the flows are established sessions; the agent's counters must
//! show that every packet of ours' windows was redirected by XDP.
//!
//! Two aids for reading the figure on veth and on a shared machine: a
//! diagnostic path, routing with a bare XDP_PASS on the proxy's veths (the
//! skb copy veth charges any native XDP program, which a NIC does not; so
//! ours also runs as generic XDP, on the skb veth already has, and the
//! ratios are against that), and
//! a cross-check that counts the exact run time of the bench's own threads
//! (schedstat), which other processes do not disturb. A window during which
//! other processes used the CPU is run again, and the figure is taken over
//! undisturbed repetitions when there are enough.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use tests::netns;

mod measure;
mod paths;
mod traffic;

use measure::Busy;
use paths::{counter, Bed, Mode, MODES};
use traffic::{Offer, FLOWS, PAYLOAD};

/// Set by SIGINT/SIGTERM: every loop stops, the bed is torn down.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Windows run again because another process used the CPU during them, and
/// windows kept although disturbed (after `--tries` attempts).
static REDONE: AtomicU64 = AtomicU64::new(0);
static KEPT_DISTURBED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(clap::Args)]
pub struct E2eArgs {
    /// Fixed offered rate (packets/s) of the CPU windows, the same for every
    /// path; lowered to 70% of the slowest path's loss-free rate if above it.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Repetitions of the CPU and latency measurements (paths rotated).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Seconds of each CPU window.
    #[arg(long, default_value_t = 2.5)]
    seconds: f64,
    /// Seconds of each step of the loss-free search.
    #[arg(long, default_value_t = 0.5)]
    step_seconds: f64,
    /// Highest rate the loss-free search tries.
    #[arg(long, default_value_t = 800_000)]
    max_rate: u64,
    /// Ping-pong round trips per path per repetition.
    #[arg(long, default_value_t = 300)]
    pings: usize,
    /// Steps of the loss-free search per path.
    #[arg(long, default_value_t = 8)]
    search_steps: usize,
    /// Attempts at a window other processes did not disturb.
    #[arg(long, default_value_t = 4)]
    tries: usize,
    /// Skip the diagnostic path "routing + XDP_PASS" (a bare XDP_PASS on the
    /// proxy's veths: what veth charges any native XDP program).
    #[arg(long)]
    no_veth_tax: bool,
}

impl E2eArgs {
    /// The paths this run measures.
    fn modes(&self) -> Vec<Mode> {
        MODES.iter().copied().filter(|&m| m != Mode::VethTax || !self.no_veth_tax).collect()
    }
}

/// A run is loss-free when the sink counted at least this share of what
/// the rate asked for (rate x window).
const LOSS_FREE: f64 = 0.999;
/// The fixed rate stays below this share of every path's loss-free rate.
const FIXED_SHARE: f64 = 0.7;

fn progress(msg: impl std::fmt::Display) {
    eprintln!("e2e: {msg}");
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// One traffic window.
struct Window {
    /// The generator's window, seconds (the wall time measured is longer:
    /// it includes the sink settling).
    window_s: f64,
    offer: Offer,
    delivered: u64,
    busy: Busy,
    /// Run time of the agent's process during the window (excluded: control
    /// plane, not forwarding).
    agent_ns: u64,
    relay_ns: u64,
    sink_ns: u64,
    drops: Vec<(String, u64)>,
    /// ingress_redirect / ingress_pass_neigh growth (ours only).
    redirected: u64,
    passed_neigh: u64,
    /// CPU other processes used meanwhile (tick-sampled; detection only).
    foreign_ns: f64,
    /// ksoftirqd threads' run time.
    ksoftirqd_ns: u64,
}

impl Window {
    fn loss_free(&self) -> bool {
        self.delivered as f64 >= LOSS_FREE * self.offer.target as f64
    }
    /// Busy ns per delivered packet, the agent's own process excluded.
    fn ns_per_packet(&self) -> f64 {
        (self.busy.total_ns - self.agent_ns as f64) / self.delivered.max(1) as f64
    }
    /// The cross-check: exact run time of the bench's own threads that carry
    /// the traffic (generator with its inline softirq work, sink, relay,
    /// ksoftirqd) per delivered packet. Blind to softirq work done while a
    /// CPU idles, but not disturbed by other processes.
    fn thread_ns_per_packet(&self) -> f64 {
        (self.offer.thread_ns + self.sink_ns + self.relay_ns + self.ksoftirqd_ns) as f64 / self.delivered.max(1) as f64
    }
    fn cpu(&self, i: usize) -> f64 {
        self.busy.per_cpu.get(i).copied().unwrap_or(0.0) * 100.0
    }
    /// Another load ran during the window: more than 1% of the machine, at
    /// least 3 ticks.
    fn disturbed(&self) -> bool {
        self.foreign_ns > (0.01 * self.busy.total_wall_cpus_ns()).max(3.0 * measure::tick_ns())
    }
}

/// Disturbed windows are run again only this long after the bench started,
/// so a machine that stays busy cannot make the bench run on and on.
const RETRY_BUDGET: Duration = Duration::from_secs(150);
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// `window`, run again (up to `tries` times, within `RETRY_BUDGET`) while
/// another process's CPU use disturbs it.
fn steady_window(bed: &Bed, mode: Mode, rate: u64, seconds: f64, with_drops: bool, tries: usize) -> Result<Window> {
    let in_budget = STARTED.get().is_none_or(|t| t.elapsed() < RETRY_BUDGET);
    let tries = if in_budget { tries.max(1) } else { 1 };
    for attempt in 1..=tries {
        let w = window(bed, mode, rate, seconds, with_drops)?;
        if !w.disturbed() {
            return Ok(w);
        }
        if attempt == tries {
            KEPT_DISTURBED.fetch_add(1, Ordering::Relaxed);
            progress(format!(
                "  window disturbed by other processes ({:.0} ms CPU), kept after {tries} tries",
                w.foreign_ns / 1e6
            ));
            return Ok(w);
        }
        REDONE.fetch_add(1, Ordering::Relaxed);
        progress(format!("  window disturbed by other processes ({:.0} ms CPU): again", w.foreign_ns / 1e6));
        std::thread::sleep(Duration::from_millis(300));
    }
    unreachable!()
}

/// Offers `rate` for `seconds` on a thread pinned to CPU0 and measures the
/// window: busy CPU, delivered packets, (optionally) every drop counter.
fn window(bed: &Bed, mode: Mode, rate: u64, seconds: f64, with_drops: bool) -> Result<Window> {
    check_stop()?;
    let t = &bed.topo;
    let d0 = if with_drops { measure::drops(&t.client, &t.proxy, &t.shards[0])? } else { Default::default() };
    let c0 = if mode.is_ours() { Some(bed.counters()?) } else { None };
    let sink_tid = bed.sink.counts.tid.load(Ordering::Relaxed);
    let (agent, relay) = (bed.agent_pid().filter(|_| mode.is_ours()), bed.relay_pid());
    let a0 = agent.map(measure::process_ns).unwrap_or(0);
    let r0 = relay.map(measure::process_ns).unwrap_or(0);
    let s0 = measure::thread_ns(sink_tid);
    let ours: Vec<u32> = [bed.agent_pid(), relay].into_iter().flatten().collect();
    let f0 = measure::foreign_ticks(&ours);
    let k0: u64 = bed.ksoftirqd.iter().map(|&p| measure::process_ns(p)).sum();
    let got0 = bed.sink.data();
    let cpu0 = measure::cpu_snap()?;
    let dur = Duration::from_secs_f64(seconds);
    let offer = std::thread::scope(|s| {
        s.spawn(|| -> Result<Offer> {
            traffic::pin_to(0)?;
            Ok(traffic::offer(&bed.flows, rate, dur))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })?;
    bed.sink.settle();
    let cpu1 = measure::cpu_snap()?;
    let foreign_ns = measure::foreign_ticks(&ours).saturating_sub(f0) as f64 * measure::tick_ns();
    let ksoftirqd_ns = bed.ksoftirqd.iter().map(|&p| measure::process_ns(p)).sum::<u64>().saturating_sub(k0);
    let delivered = bed.sink.data() - got0;
    let agent_ns = agent.map(measure::process_ns).unwrap_or(0).saturating_sub(a0);
    let relay_ns = relay.map(measure::process_ns).unwrap_or(0).saturating_sub(r0);
    let sink_ns = measure::thread_ns(sink_tid).saturating_sub(s0);
    let drops =
        if with_drops { measure::grown(&d0, &measure::drops(&t.client, &t.proxy, &t.shards[0])?) } else { Vec::new() };
    let (mut redirected, mut passed_neigh) = (0, 0);
    if let Some(c0) = c0 {
        let c1 = bed.counters()?;
        redirected = counter(&c1, "ingress_redirect") - counter(&c0, "ingress_redirect");
        passed_neigh = counter(&c1, "ingress_pass_neigh") - counter(&c0, "ingress_pass_neigh");
    }
    check_stop()?;
    Ok(Window {
        window_s: seconds,
        offer,
        delivered,
        busy: measure::busy(&cpu0, &cpu1),
        agent_ns,
        relay_ns,
        sink_ns,
        drops,
        redirected,
        passed_neigh,
        foreign_ns,
        ksoftirqd_ns,
    })
}

/// Packets of ours' window that did not go through XDP: the figure would
/// measure the kernel path. Fails the bench.
fn check_xdp(w: &Window) -> Result<()> {
    if (w.redirected as f64) < LOSS_FREE * w.delivered as f64 {
        bail!(
            "ours: the sink got {} packets but XDP redirected only {} (ingress_pass_neigh {}): traffic did not go \
             through the data plane",
            w.delivered,
            w.redirected,
            w.passed_neigh
        );
    }
    Ok(())
}

/// Short label and details of what stopped a path at a failing step.
fn limit(mode: Mode, rate: u64, w: &Window) -> (String, String) {
    let (cpu0, cpu1) = (w.cpu(0), w.cpu(1));
    let window_s = w.window_s;
    let relay_cpu = w.relay_ns as f64 / w.busy.wall_ns * 100.0;
    let sink_cpu = w.sink_ns as f64 / w.busy.wall_ns * 100.0;
    let short = (w.offer.sent as f64) < LOSS_FREE * w.offer.target as f64;
    let grew = |name: &str| w.drops.iter().any(|(k, _)| k == name);
    let label = if grew("shard: udp RcvbufErrors") {
        format!("sink socket buffer (bench limit), sink CPU {sink_cpu:.0}%")
    } else if mode == Mode::Relay && grew("proxy: udp RcvbufErrors") {
        format!("relay socket buffer overflow, relay CPU {relay_cpu:.0}%")
    } else if mode == Mode::Relay && (relay_cpu >= 90.0 || cpu1 >= 90.0) {
        format!("relay CPU: relay {relay_cpu:.0}% of a CPU, CPU1 {cpu1:.0}%")
    } else if short && cpu0 >= 90.0 {
        format!("CPU0 saturated by generator+softirq ({cpu0:.0}%)")
    } else if short {
        format!("generator short, CPU0 {cpu0:.0}%")
    } else if let Some((k, _)) = w.drops.first() {
        format!("drops: {k}")
    } else if cpu1 >= 90.0 {
        format!("CPU1 saturated ({cpu1:.0}%)")
    } else {
        format!("loss without a drop counter, CPU0 {cpu0:.0}% CPU1 {cpu1:.0}%")
    };
    let drops: Vec<String> = w.drops.iter().map(|(k, d)| format!("{k} +{d}")).collect();
    let mut details = format!(
        "at {rate} pps: offered {:.0} pps ({} of {} sent, {} failed sendmmsg calls), delivered {:.0} pps \
         ({:.2}%); CPU0 {cpu0:.0}% CPU1 {cpu1:.0}% busy; sink thread {sink_cpu:.0}% of a CPU",
        w.offer.sent as f64 / window_s,
        w.offer.sent,
        w.offer.target,
        w.offer.errors,
        w.delivered as f64 / window_s,
        100.0 * w.delivered as f64 / w.offer.target.max(1) as f64,
    );
    if mode == Mode::Relay {
        details.push_str(&format!("; relay process {relay_cpu:.0}% of a CPU"));
    }
    details.push_str(&format!(
        "; drop counters that grew: {}",
        if drops.is_empty() { "none".into() } else { drops.join(", ") }
    ));
    (label, details)
}

struct LossFree {
    /// Highest loss-free rate tried (0: none).
    rate: u64,
    /// The lowest failing rate, when one was found.
    failed_at: Option<u64>,
    label: String,
    details: String,
    /// Another process used the CPU during the failing step (after retries):
    /// the limit may be that load's, not the path's.
    disturbed: bool,
}

/// Steps the offered rate up (doubling from --rate), then bisects between
/// the highest loss-free and the lowest lossy rate.
fn search(bed: &mut Bed, mode: Mode, args: &E2eArgs) -> Result<LossFree> {
    bed.enter(mode)?;
    let result = (|| -> Result<LossFree> {
        window(bed, mode, 20_000, 0.3, false)?; // warm-up: neighbours, sessions, conntrack
        let (mut lo, mut hi): (u64, Option<(u64, String, String, bool)>) = (0, None);
        let mut rate = args.rate.clamp(1_000, args.max_rate);
        let (mut redirected, mut delivered) = (0u64, 0u64);
        for _ in 0..args.search_steps {
            let mut w = steady_window(bed, mode, rate, args.step_seconds, true, args.tries)?;
            if !w.loss_free() {
                // A lossy step counts only if it is lossy twice: one hiccup
                // (another process, a timer) must not end the search.
                redirected += w.redirected;
                delivered += w.delivered;
                std::thread::sleep(Duration::from_millis(100));
                w = steady_window(bed, mode, rate, args.step_seconds, true, args.tries)?;
            }
            redirected += w.redirected;
            delivered += w.delivered;
            let ok = w.loss_free();
            progress(format!(
                "  {:<18} {rate:>7} pps: delivered {:.2}%{}",
                mode.name(),
                100.0 * w.delivered as f64 / w.offer.target.max(1) as f64,
                if ok { "" } else { "  (lossy)" }
            ));
            if ok {
                lo = rate;
            } else {
                let (label, details) = limit(mode, rate, &w);
                hi = Some((rate, label, details, w.disturbed()));
            }
            let next = match &hi {
                None if rate >= args.max_rate => break,
                None => (rate * 2).min(args.max_rate),
                Some((h, ..)) => {
                    if h.saturating_sub(lo) <= h / 25 {
                        break;
                    }
                    (lo + h) / 2
                }
            };
            rate = (next / 1000).max(1) * 1000;
            std::thread::sleep(Duration::from_millis(100));
        }
        if mode.is_ours() && (redirected as f64) < LOSS_FREE * delivered as f64 {
            bail!(
                "{}: the sink got {delivered} packets in the search but XDP redirected only {redirected}",
                mode.name()
            );
        }
        Ok(match hi {
            Some((h, label, details, disturbed)) => {
                LossFree { rate: lo, failed_at: Some(h), label, details, disturbed }
            }
            None => LossFree {
                rate: lo,
                failed_at: None,
                label: format!("not reached: loss-free up to the search's top, {}", args.max_rate),
                details: String::new(),
                disturbed: false,
            },
        })
    })();
    let left = bed.leave(mode);
    let r = result?;
    left?;
    Ok(r)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if !n.is_multiple_of(2) => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

/// Per path, over the repetitions.
#[derive(Default)]
struct Samples {
    /// Busy ns per delivered packet (absolute), per repetition.
    abs_ns: Vec<f64>,
    /// The same minus routing's in the same repetition.
    hop_ns: Vec<f64>,
    /// The cross-check (own threads' run time), absolute and over routing.
    thread_abs_ns: Vec<f64>,
    thread_hop_ns: Vec<f64>,
    /// Delivered / sent, and sent / rate x window, per window.
    delivered_share: Vec<f64>,
    offered_share: Vec<f64>,
    cpu0: Vec<f64>,
    cpu1: Vec<f64>,
    agent_ms_per_s: Vec<f64>,
    relay_cpu: Vec<f64>,
    rtts: Vec<u64>,
    lost_pings: u64,
    /// The address the sink saw data from in the last window.
    seen: Option<std::net::Ipv4Addr>,
    redirected: u64,
    delivered: u64,
    packets_per_window: Vec<f64>,
}

fn idx(mode: Mode) -> usize {
    MODES.iter().position(|&m| m == mode).unwrap()
}

fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn e2e(args: &E2eArgs) -> Result<()> {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cpus < 2 {
        bail!("bench e2e needs 2 CPUs (generator on CPU0, sink on CPU1); this machine has {cpus}");
    }
    if args.repeats == 0 || args.seconds <= 0.0 || args.step_seconds <= 0.0 || args.pings == 0 || args.search_steps == 0
    {
        bail!("--repeats, --seconds, --step-seconds, --pings and --search-steps must be positive");
    }
    let started = *STARTED.get_or_init(Instant::now);
    let result = run(args, cpus);
    let left = netns::leftovers();
    let how = if result.is_ok() { "done" } else { "stopped" };
    if left.is_empty() {
        progress(format!(
            "{how} after {:.0} s; every namespace, process, rule and XDP attachment removed",
            started.elapsed().as_secs_f64()
        ));
    } else {
        progress(format!("{how}; namespaces left behind: {left:?}"));
    }
    result
}

fn run(args: &E2eArgs, cpus: usize) -> Result<()> {
    progress("building the topology (client, proxy, shard namespaces)");
    let mut bed = Bed::build()?;

    // Is anything else loading the machine? (Measured before each repetition too.)
    let quiet = |secs: f64| -> Result<f64> {
        let a = measure::cpu_snap()?;
        std::thread::sleep(Duration::from_secs_f64(secs));
        Ok(measure::busy(&a, &measure::cpu_snap()?).total_ns / (secs * 1e9))
    };

    // 1. Highest loss-free rate of each path.
    progress(format!(
        "loss-free search: {:.1} s steps, loss-free = delivered >= {:.1}% of rate x window",
        args.step_seconds,
        LOSS_FREE * 100.0
    ));
    let mut lossfree = Vec::new();
    for mode in MODES {
        lossfree.push(if args.modes().contains(&mode) {
            search(&mut bed, mode, args)?
        } else {
            LossFree { rate: 0, failed_at: None, label: String::new(), details: String::new(), disturbed: true }
        });
    }
    // The compared paths (not the diagnostic one) must all deliver the fixed rate.
    let slowest =
        MODES.iter().filter(|&&m| m != Mode::VethTax).map(|&m| lossfree[idx(m)].rate).min().unwrap_or(u64::MAX);
    let mut rate = args.rate;
    let mut lowered = None;
    if rate as f64 > FIXED_SHARE * slowest as f64 {
        let r = ((FIXED_SHARE * slowest as f64) as u64 / 1000).max(1) * 1000;
        lowered = Some(rate);
        rate = r;
    }

    // 2. CPU per packet at the fixed rate, and latency, paths rotated.
    let mut samples: Vec<Samples> = MODES.iter().map(|_| Samples::default()).collect();
    let mut background = Vec::new();
    let mut established = None;
    // A repetition is clean when no window of it was disturbed by another
    // process; the figures use the clean ones when there are enough.
    let mut clean_reps = Vec::new();
    progress(format!("CPU windows: {rate} pps for {:.1} s per path, {} repetitions", args.seconds, args.repeats));
    for rep in 0..args.repeats {
        background.push(quiet(0.3)?);
        let mut abs = [f64::NAN; MODES.len()];
        let mut thread_abs = [f64::NAN; MODES.len()];
        let modes = args.modes();
        let mut clean = true;
        for k in 0..modes.len() {
            let mode = modes[(rep + k) % modes.len()];
            let i = idx(mode);
            bed.enter(mode)?;
            let measured = (|| -> Result<()> {
                window(&bed, mode, rate, 0.2, false)?; // warm-up
                let w = steady_window(&bed, mode, rate, args.seconds, false, args.tries)?;
                clean &= !w.disturbed();
                if mode.is_ours() {
                    check_xdp(&w)?;
                    if established.is_none() {
                        established = Some(bed.shard_status()?);
                    }
                }
                let s = &mut samples[i];
                abs[i] = w.ns_per_packet();
                s.abs_ns.push(abs[i]);
                thread_abs[i] = w.thread_ns_per_packet();
                s.thread_abs_ns.push(thread_abs[i]);
                s.delivered_share.push(w.delivered as f64 / w.offer.sent.max(1) as f64);
                s.offered_share.push(w.offer.sent as f64 / w.offer.target.max(1) as f64);
                s.cpu0.push(w.cpu(0));
                s.cpu1.push(w.cpu(1));
                s.agent_ms_per_s.push(w.agent_ns as f64 / 1e6 / (w.busy.wall_ns / 1e9));
                s.relay_cpu.push(w.relay_ns as f64 / w.busy.wall_ns * 100.0);
                s.redirected += w.redirected;
                s.delivered += w.delivered;
                s.packets_per_window.push(w.delivered as f64);
                s.seen = Some(std::net::Ipv4Addr::from(bed.sink.counts.last_source.load(Ordering::Relaxed)));
                // Latency: the sink echoes; replies come back through the same hop.
                let c0 = if mode.is_ours() { Some(bed.counters()?) } else { None };
                bed.sink.echo.store(true, Ordering::Relaxed);
                let pp = std::thread::scope(|sc| {
                    sc.spawn(|| -> Result<(Vec<u64>, u64)> {
                        traffic::pin_to(0)?;
                        traffic::ping_pong(&bed.flows, args.pings, Duration::from_micros(500), (rep * 100_000) as u32)
                    })
                    .join()
                    .map_err(|_| anyhow::anyhow!("the ping-pong thread panicked"))?
                });
                bed.sink.echo.store(false, Ordering::Relaxed);
                let (rtts, lost) = pp?;
                if let Some(c0) = c0 {
                    let c1 = bed.counters()?;
                    let back = counter(&c1, "return_redirect") - counter(&c0, "return_redirect");
                    if back < rtts.len() as u64 {
                        bail!("ours: {} echoes came back but XDP rewrote only {back} replies", rtts.len());
                    }
                }
                s.rtts.extend(rtts);
                s.lost_pings += lost;
                Ok(())
            })();
            let left = bed.leave(mode);
            measured?;
            left?;
        }
        clean_reps.push(clean);
        for &m in &modes {
            samples[idx(m)].hop_ns.push(abs[idx(m)] - abs[idx(Mode::Routing)]);
            samples[idx(m)].thread_hop_ns.push(thread_abs[idx(m)] - thread_abs[idx(Mode::Routing)]);
        }
        // Named from MODES, so a path added there is labelled right here.
        let over: Vec<String> = modes
            .iter()
            .filter(|&&m| m != Mode::Routing)
            .map(|&m| format!("{} {:.0}", m.name(), abs[idx(m)] - abs[idx(Mode::Routing)]))
            .collect();
        progress(format!(
            "  repetition {}/{}: ns/packet over routing: {} (routing {:.0}){}",
            rep + 1,
            args.repeats,
            over.join(", "),
            abs[idx(Mode::Routing)],
            if clean { "" } else { "  [disturbed by another process]" }
        ));
    }
    report(&Results { args, cpus, rate, lowered, lossfree, samples, background, established, clean_reps });
    Ok(())
}

/// Everything the report prints.
struct Results<'a> {
    args: &'a E2eArgs,
    cpus: usize,
    rate: u64,
    lowered: Option<u64>,
    lossfree: Vec<LossFree>,
    samples: Vec<Samples>,
    background: Vec<f64>,
    established: Option<(u64, String)>,
    clean_reps: Vec<bool>,
}

/// Clean repetitions needed for the figures to use only those.
const MIN_CLEAN: usize = 3;

fn report(r: &Results) {
    let Results {
        args,
        cpus,
        rate,
        lowered,
        ref lossfree,
        ref samples,
        ref background,
        ref established,
        ref clean_reps,
    } = *r;
    let clean: Vec<usize> = (0..clean_reps.len()).filter(|&i| clean_reps[i]).collect();
    let enough_clean = clean.len() >= MIN_CLEAN.min(args.repeats);
    // The repetitions the CPU figures are taken over.
    let sel: Vec<usize> = if enough_clean { clean.clone() } else { (0..clean_reps.len()).collect() };
    let pick = |v: &[f64]| -> Vec<f64> { sel.iter().filter_map(|&i| v.get(i).copied()).collect() };
    let routing = &samples[idx(Mode::Routing)];
    let mut base_rtt = routing.rtts.clone();
    base_rtt.sort_unstable();
    let base_p50 = percentile(&base_rtt, 0.5);
    let per_window = median(&routing.packets_per_window);
    // One /proc/stat tick spread over a window's packets: the resolution of
    // a single window's figure.
    let floor = measure::tick_ns() / per_window.max(1.0);

    println!();
    println!(
        "e2e: the same player traffic through five paths on one namespace topology (client -> proxy -> shard, veth)"
    );
    println!(
        "  {FLOWS} flows (connected UDP sockets, 4 client IPs x 16 ports), {PAYLOAD}-byte payloads (scrambled SA:MP \
         game packets), every flow opened with a SA:MP handshake"
    );
    println!("  generator (sendmmsg, rate-limited, 0.5 ms ticks) pinned to CPU0, sink (recvmmsg) pinned to CPU1; {cpus} CPUs");
    match lowered {
        Some(asked) => println!(
            "  CPU: fixed {} pps (lowered from --rate {}: {:.0}% of the slowest path's loss-free rate) for {:.1} s, \
             {} repetitions, path order rotated",
            grouped(rate),
            grouped(asked),
            FIXED_SHARE * 100.0,
            args.seconds,
            args.repeats
        ),
        None => println!(
            "  CPU: fixed {} pps for {:.1} s per window, {} repetitions, path order rotated each repetition",
            grouped(rate),
            args.seconds,
            args.repeats
        ),
    }
    println!();
    let header =
        ["mode", "loss-free pps (limit)", "CPU ns/packet over routing median [min..max]", "p50 / p99 added latency µs"];
    let mut rows: Vec<[String; 4]> = Vec::new();
    for (i, mode) in MODES.iter().enumerate().filter(|(_, m)| args.modes().contains(m)) {
        let s = &samples[i];
        let lf = &lossfree[i];
        let lf_mark = if lf.disturbed { " **" } else { "" };
        let lf_text = if lf.rate == 0 {
            format!("< {} ({})", grouped(lf.failed_at.unwrap_or(0)), lf.label)
        } else if lf.failed_at.is_none() {
            format!(">= {} ({})", grouped(lf.rate), lf.label)
        } else {
            format!("{} ({})", grouped(lf.rate), lf.label)
        } + lf_mark;
        let mark = if enough_clean { "" } else { " *" };
        let cpu_text = if *mode == Mode::Routing {
            format!("0 (baseline: {} ns/packet absolute){mark}", grouped(median(&pick(&s.abs_ns)).max(0.0) as u64))
        } else {
            let hop = pick(&s.hop_ns);
            let (lo, hi) = range(&hop);
            format!("{:.0} [{:.0}..{:.0}]{mark}", median(&hop), lo, hi)
        };
        let mut rtt = s.rtts.clone();
        rtt.sort_unstable();
        let lat_text = format!(
            "{:.1} / {:.1}",
            (percentile(&rtt, 0.5) - base_p50) / 1e3,
            (percentile(&rtt, 0.99) - base_p50) / 1e3
        );
        rows.push([mode.name().to_string(), lf_text, cpu_text, lat_text]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].chars().count()]).max().unwrap())
        .collect();
    let line = |cells: [&str; 4]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s}{}", " ".repeat(widths[c] - s.chars().count())))
            .collect();
        println!("{}", padded.join(" | ").trim_end());
    };
    line(header);
    println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-|-"));
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
    println!();

    if args.modes().iter().any(|&m| lossfree[idx(m)].disturbed) {
        println!(
            "  ** another process used the CPU while this path's search failed its step: the limit may be that load's"
        );
    }
    if !enough_clean {
        println!(
            "  * only {} of {} repetitions ran without another process on the machine (fewer than {}): the column is \
             over all of them and includes that load",
            clean.len(),
            clean_reps.len(),
            MIN_CLEAN.min(args.repeats)
        );
    }
    // The ratios: from the /proc/stat figure over clean repetitions; with
    // none clean, from the cross-check (own threads), which another load
    // does not disturb.
    let by_threads = clean.is_empty();
    let (field, floor): (fn(&Samples) -> &Vec<f64>, f64) =
        if by_threads { (|s| &s.thread_hop_ns, 1.0) } else { (|s| &s.hop_ns, floor) };
    let med = |m: Mode| median(&pick(field(&samples[idx(m)])));
    // Against generic XDP first: it runs on the skb veth has already built,
    // as routing and nftables do, so veth's copy for native XDP (which a
    // NIC does not make) does not skew the comparison; on a NIC, native XDP
    // runs before any skb exists and costs less than generic.
    let ratios = |m: Mode| {
        let o = med(m);
        (o, med(Mode::Nft) / o.max(floor), med(Mode::Relay) / o.max(floor))
    };
    let (generic, nft_ratio, relay_ratio) = ratios(Mode::OursGeneric);
    let (ours, nft_native, relay_native) = ratios(Mode::Ours);
    println!("per-packet cost, nftables DNAT / ours: {nft_ratio:.1}x");
    println!("per-packet cost, userspace proxy / ours: {relay_ratio:.1}x");
    println!(
        "  ours = our data plane attached as generic XDP (`xdp_mode: skb`); attached natively on veth, which copies \
         every packet for a native XDP program: nftables / ours {nft_native:.1}x, userspace / ours {relay_native:.1}x"
    );
    if by_threads {
        println!(
            "  (no repetition ran on a quiet machine: these ratios are the cross-check's, the exact run time of the \
             bench's own threads, below)"
        );
    }
    for (name, o) in [("ours (generic XDP)", generic), ("ours (XDP)", ours)] {
        if o < floor {
            println!(
                "  {name}: median ({o:.0} ns) below the floor of {floor:.0} ns{}; its ratios are computed against the \
                 floor, so they are lower bounds",
                if by_threads {
                    String::new()
                } else {
                    format!(" (one /proc/stat tick over a window's {per_window:.0} packets)")
                }
            );
        }
    }
    println!(
        "  goal (ours at most 1/3 of nftables' and 1/10 of the userspace proxy's per-packet cost): {}; natively on \
         veth: {}",
        if nft_ratio >= 3.0 && relay_ratio >= 10.0 { "met" } else { "NOT met" },
        if nft_native >= 3.0 && relay_native >= 10.0 { "met" } else { "not met (veth's copy, below)" }
    );
    if !args.no_veth_tax {
        // Per repetition: ours minus routing + XDP_PASS.
        let over_pass: Vec<f64> = field(&samples[idx(Mode::Ours)])
            .iter()
            .zip(field(&samples[idx(Mode::VethTax)]))
            .map(|(o, p)| o - p)
            .collect();
        let over_pass = pick(&over_pass);
        let (lo, hi) = range(&over_pass);
        let m = median(&over_pass);
        let tax = med(Mode::VethTax);
        if m > floor {
            println!(
                "  veth's XDP tax: a bare XDP_PASS on the proxy's veths costs {tax:.0} ns/packet over routing; ours \
                 over that: {m:.0} [{lo:.0}..{hi:.0}] ns/packet, so without the tax nftables / ours would be {:.1} and \
                 userspace / ours {:.1} (an estimate for a NIC, where XDP runs before any skb exists)",
                med(Mode::Nft) / m,
                med(Mode::Relay) / m
            );
        } else {
            println!(
                "  veth's XDP tax: a bare XDP_PASS on the proxy's veths costs {tax:.0} ns/packet over routing, more than \
                 ours' whole hop ({ours:.0}; ours minus it: {m:.0} [{lo:.0}..{hi:.0}]): on veth, ours' figure is what \
                 veth adds for any native XDP program (a copy of every packet, its NAPI path), which a NIC does not; \
                 the bench cannot split ours' own cost out of it"
            );
        }
    }
    println!();

    println!("How to read it");
    println!(
        "  - CPU: busy = {cpus} CPUs x wall - (idle + iowait) from /proc/stat over each window (generator, sink and \
         every softirq included), per packet the sink received, minus routing's in the same repetition; so the \
         generator and sink cancel out; the agent's own process (control plane) is left out. Median and \
         [min..max] over the {} repetitions {}.",
        sel.len(),
        if enough_clean { "no other process disturbed" } else { "run (too few were undisturbed)" }
    );
    println!(
        "  - The generator, sink and ping-pong threads and the relay run at nice {}, so other processes on the machine \
         do not starve the traffic (no effect on a quiet machine); a window in which other processes used more than \
         1% of the machine is run again (up to {} times, within the first {} s).",
        traffic::NICE,
        args.tries.max(1),
        RETRY_BUDGET.as_secs()
    );
    println!(
        "  - Latency: {} ping-pongs per path per repetition, one at a time, 0.5 ms apart, the sink echoing through the \
         same hop (for ours the reply is rewritten by XDP and the client's connected socket accepts it only from \
         VIP:7777); added = the path's RTT percentile minus routing's p50 RTT ({:.1} µs).",
        args.pings,
        base_p50 / 1e3
    );
    println!(
        "  - Loss-free: the highest offered rate the search found with delivered >= {:.1}% of rate x window ({:.1} s \
         steps, doubling from {} then bisecting to 4%; a lossy step is tried twice); in brackets the resource that stopped the next step.",
        LOSS_FREE * 100.0,
        args.step_seconds,
        grouped(args.rate.clamp(1_000, args.max_rate))
    );
    println!(
        "  - note: on veth an XDP hop pays an skb copy a real NIC does not (veth copies each frame into a fresh page \
         before a native XDP program runs, and the receiving peer builds a new skb; PLATFORM.md), so ours' figure \
         here is an upper bound for a NIC. The row \"routing + XDP_PASS\" measures that tax alone: a bare XDP_PASS \
         program on the proxy's veths, packets routed by the kernel as in the baseline."
    );
    println!();

    println!(
        "Cross-check: exact run time of the bench's own threads (generator with the softirq work its sends run inline, \
         sink, relay, ksoftirqd; schedstat), per packet over routing -- not disturbed by other processes, blind to \
         softirq work done while a CPU idles"
    );
    for (i, mode) in MODES.iter().enumerate().filter(|(_, m)| **m != Mode::Routing && args.modes().contains(m)) {
        let s = &samples[i];
        let (lo, hi) = range(&s.thread_hop_ns);
        println!("  {:<18} {:.0} [{:.0}..{:.0}] ns/packet", mode.name(), median(&s.thread_hop_ns), lo, hi);
    }
    println!("  routing's own threads: {:.0} ns/packet absolute", median(&routing.thread_abs_ns));
    for m in [Mode::OursGeneric, Mode::Ours] {
        let t_ours = median(&samples[idx(m)].thread_hop_ns);
        if t_ours < 1.0 {
            println!("  {} costs no more than routing by this count ({t_ours:.0} ns): no ratio", m.name());
            continue;
        }
        println!(
            "  ratios by this count against {}: nftables / ours {:.1}, userspace / ours {:.1}",
            m.name(),
            median(&samples[idx(Mode::Nft)].thread_hop_ns) / t_ours,
            median(&samples[idx(Mode::Relay)].thread_hop_ns) / t_ours,
        );
    }
    println!();

    println!("What limits each figure");
    for (i, mode) in MODES.iter().enumerate().filter(|(_, m)| args.modes().contains(m)) {
        let lf = &lossfree[i];
        if !lf.details.is_empty() {
            println!("  {:<18} loss-free limit, {}", mode.name(), lf.details);
        } else {
            println!("  {:<18} loss-free: {}", mode.name(), lf.label);
        }
    }
    for (i, mode) in MODES.iter().enumerate().filter(|(_, m)| args.modes().contains(m)) {
        let s = &samples[i];
        let (dlo, _) = range(&s.delivered_share);
        let (olo, _) = range(&s.offered_share);
        let mut text = format!(
            "  {:<18} at {} pps: the generator sent >= {:.2}% of rate x window and the sink got >= {:.2}% of that in \
             every window; CPU0 {:.0}% CPU1 {:.0}% busy (medians)",
            mode.name(),
            grouped(rate),
            olo * 100.0,
            dlo * 100.0,
            median(&s.cpu0),
            median(&s.cpu1)
        );
        match mode {
            Mode::Ours | Mode::OursGeneric => text.push_str(&format!(
                "; XDP redirected {} of {} packets the sink got; the agent's own {:.1} ms CPU per second (health \
                 probes, tick, scans) is excluded",
                s.redirected,
                s.delivered,
                median(&s.agent_ms_per_s)
            )),
            Mode::Relay => {
                text.push_str(&format!("; relay process {:.0}% of a CPU", median(&s.relay_cpu)));
            }
            _ => {}
        }
        if dlo < LOSS_FREE {
            text.push_str(&format!(
                "; LOSSY at this rate in some window (up to {:.1}% lost): its cost per delivered packet includes the \
                 work spent on the lost ones",
                (1.0 - dlo) * 100.0
            ));
        }
        if s.lost_pings > 0 {
            text.push_str(&format!("; {} ping-pongs lost", s.lost_pings));
        }
        println!("{text}");
    }
    let seen = |m: Mode| samples[idx(m)].seen.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "  the shard saw the client's own address through ours ({}) and nftables ({}); the userspace proxy hides it ({})",
        seen(Mode::Ours),
        seen(Mode::Nft),
        seen(Mode::Relay)
    );
    if let Some((n, health)) = established {
        println!("  agent status: {n} of {FLOWS} flows established sessions on the shard (health {health})");
    }
    let (redone, kept) = (REDONE.load(Ordering::Relaxed), KEPT_DISTURBED.load(Ordering::Relaxed));
    println!(
        "  windows run again because other processes used the CPU meanwhile (> 1% of the machine): {redone}; kept \
         although disturbed: {kept}; clean repetitions: {} of {}",
        clean.len(),
        clean_reps.len()
    );
    let (blo, bhi) = range(background);
    println!(
        "  background (no traffic, 0.3 s before each repetition): {:.3}..{:.3} CPUs busy{}",
        blo,
        bhi,
        if bhi > 0.1 {
            " -- another load ran during the bench: the figures are unreliable, run again on a quiet machine"
        } else {
            ""
        }
    );
}
