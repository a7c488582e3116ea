#!/usr/bin/env python3
"""Draws docs/dashboard.png: the Grafana dashboard filled with the demo's data.

No Grafana runs here, so this does what Grafana would do, with a real
Prometheus:

1. runs the demo (`target/release/demo`), which prints the network namespace
   its agent serves /metrics in (127.0.0.1:9478, nowhere else);
2. starts `prometheus` inside that namespace, scraping the agent every second;
3. shortly before the run ends (the namespace goes with it), evaluates every
   panel's PromQL from deploy/grafana/samp-proxy-dashboard.json over the run
   with /api/v1/query_range (step 1 s; `$__rate_interval` is what Grafana
   computes for a 1 s scrape and step, 4s; `$shard` is its "All", `.*`);
4. stops Prometheus, removes its data, and draws the panels with matplotlib:
   same titles, same grid (`gridPos`), stat / state-timeline / timeseries
   drawn the way the JSON asks (units, stacking, bars, legend tables, value
   mappings, Grafana's default thresholds where the JSON sets none), in
   Grafana's dark colours. Dashed lines mark the demo's story steps, read
   from its output.

Run as root (network namespaces): `bash scripts/dashboard-picture.sh`.
`--save-data FILE` keeps the query results as JSON; `--from-data FILE`
draws from such a file without running anything (to work on the drawing).
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/samp-proxy-dashboard.json"
METRICS_TARGET = "127.0.0.1:9478"  # the demo's METRICS_LISTEN
PROM_LISTEN = "127.0.0.1:9090"
SCRAPE = 1  # seconds
STEP = 1  # seconds
# Grafana: $__rate_interval = max($__interval + scrape interval, 4 * scrape interval)
RATE_INTERVAL = f"{max(STEP + SCRAPE, 4 * SCRAPE)}s"


def log(msg):
    print(f"dashboard-picture: {msg}", flush=True)


# ---------------------------------------------------------------- collecting


class Demo:
    """The demo as a child process; its stdout is echoed and parsed."""

    def __init__(self, demo_bin, agent_bin, players, seconds):
        env = dict(os.environ, PROXY_AGENT_BIN=str(agent_bin))
        self.proc = subprocess.Popen(
            [str(demo_bin), "--players", str(players), "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        self.lines = []
        self.ns = None
        self.t0 = None  # wall clock when the table starts (the demo's t=0)
        self.steps = []  # (t seconds, title) from "--- t=Ns  title"
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            now = time.time()
            line = line.rstrip("\n")
            print(f"  | {line}", flush=True)
            with self.cond:
                self.lines.append(line)
                m = re.search(r"metrics: http://\S+ inside namespace (\S+)", line)
                if m and self.ns is None:
                    self.ns = m.group(1)
                if self.t0 is None and re.match(r"\s*t\(s\)\s+shard", line):
                    self.t0 = now
                m = re.match(r"--- t=(\d+)s\s+(.*)", line)
                if m:
                    self.steps.append((int(m.group(1)), m.group(2)))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pred, timeout):
        end = time.time() + timeout
        with self.cond:
            while not pred():
                if self.proc.poll() is not None:
                    return pred()
                left = end - time.time()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
            return True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the demo tears down on SIGTERM
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


def prom_get(ns, path, params=None, timeout=10):
    """GET on the namespace's Prometheus through curl run inside it."""
    argv = ["curl", "-sS", "--max-time", str(timeout), "-G", f"http://{PROM_LISTEN}{path}"]
    for k, v in (params or {}).items():
        argv += ["--data-urlencode", f"{k}={v}"]
    out = subprocess.run(in_ns(ns, *argv), capture_output=True, text=True, timeout=timeout + 5)
    if out.returncode != 0:
        raise RuntimeError(f"curl {path}: {out.stderr.strip()}")
    return out.stdout


def substitute(expr):
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("${shard}", ".*").replace("$shard", ".*")


def collect(args, dashboard):
    demo_bin = ROOT / "target/release/demo"
    agent_bin = ROOT / "target/release/proxy-agent"
    for b in (demo_bin, agent_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"dashboard-picture: {b} is missing (cargo build --release -p proxy-agent -p tests --bins)")
    if shutil.which("prometheus") is None:
        sys.exit("dashboard-picture: no prometheus (Debian package `prometheus`; scripts/setup.sh installs it)")

    version = subprocess.run(["prometheus", "--version"], capture_output=True, text=True)
    version = re.search(r"version (\S+)", version.stdout + version.stderr)
    version = version.group(1) if version else "?"

    tmp = Path(tempfile.mkdtemp(prefix="dashboard-picture-"))
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE}s\n"
        f"  scrape_timeout: {SCRAPE}s\n"
        f"  evaluation_interval: {SCRAPE}s\n"
        "scrape_configs:\n"
        "  - job_name: samp-proxy\n"
        "    static_configs:\n"
        f"      - targets: ['{METRICS_TARGET}']\n"
    )
    prom = None
    prom_log = open(tmp / "prometheus.log", "w")
    log(f"running the demo: {args.players} players, {args.seconds} s")
    demo = Demo(demo_bin, agent_bin, args.players, args.seconds)
    ok = False
    try:
        # Prometheus finds its targets only ~5 s after it starts, so start it
        # the moment the demo's proxy namespace exists (the demo names it
        # sampx-PID-N-proxy), before the demo prints it.
        ns = None
        waited = time.time() + 120
        while ns is None:
            if demo.proc.poll() is not None or time.time() > waited:
                raise RuntimeError("the demo made no proxy namespace")
            with demo.cond:
                ns = demo.ns
            if ns is None:
                listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                for name in (line.split()[0] for line in listed.splitlines() if line.strip()):
                    if re.fullmatch(rf"sampx-{demo.proc.pid}-\d+-proxy", name):
                        ns = name
                time.sleep(0.02)
        log(f"starting prometheus {version} in namespace {ns}, scraping {METRICS_TARGET} every {SCRAPE} s")
        prom = subprocess.Popen(
            in_ns(
                ns,
                "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address={PROM_LISTEN}",
            ),
            stdout=prom_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ready_by = time.time() + 30
        while True:
            try:
                if "Ready" in prom_get(ns, "/-/ready", timeout=2):
                    break
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if prom.poll() is not None or time.time() > ready_by:
                raise RuntimeError("prometheus did not start")
            time.sleep(0.2)
        if not demo.wait_for(lambda: demo.t0 is not None, 120):
            raise RuntimeError("the demo's table never started")
        if demo.ns != ns:
            raise RuntimeError(f"the demo serves /metrics in {demo.ns}, not in {ns}")
        t0 = demo.t0
        # Read before the run ends: the namespace (and the agent) go with it.
        read_at = t0 + args.seconds - args.margin
        while time.time() < read_at and demo.proc.poll() is None:
            time.sleep(0.2)
        if demo.proc.poll() is not None:
            raise RuntimeError("the demo ended before the queries")
        start = math.floor(t0)
        end = start + int(time.time() - start)
        log(f"querying {end - start} s of data (t=0..{end - start}), step {STEP} s, $__rate_interval={RATE_INTERVAL}")
        targets = prom_get(ns, "/api/v1/targets")
        health = [t.get("health") for t in json.loads(targets)["data"]["activeTargets"]]
        panels = []
        for p in dashboard["panels"]:
            results = []
            for t in p.get("targets", []):
                expr = substitute(t["expr"])
                body = json.loads(
                    prom_get(ns, "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": STEP})
                )
                if body.get("status") != "success":
                    raise RuntimeError(f"{expr}: {body}")
                results.append({"expr": expr, "series": body["data"]["result"]})
            panels.append({"id": p.get("id"), "title": p["title"], "targets": results})
        with demo.cond:
            steps = list(demo.steps)
        data = {
            "prometheus": version,
            "players": args.players,
            "seconds": args.seconds,
            "rate_interval": RATE_INTERVAL,
            "t0": t0,
            "start": start,
            "end": end,
            "scrape_health": health,
            "steps": steps,
            "panels": panels,
        }
        ok = True
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(timeout=15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        prom_log.close()
        if not ok and (tmp / "prometheus.log").exists():
            tail = (tmp / "prometheus.log").read_text().splitlines()[-15:]
            log("prometheus' last lines:\n" + "\n".join(tail))
        if ok:
            log("waiting for the demo to finish and tear down")
            try:
                demo.proc.wait(timeout=args.seconds + 120)
            except subprocess.TimeoutExpired:
                demo.stop()
        else:
            demo.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if demo.proc.returncode != 0:
        log(f"note: the demo exited with {demo.proc.returncode}")
    data["demo_exit"] = demo.proc.returncode
    return data


# ------------------------------------------------------------------ drawing

BG = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
DIM = "#8e8e99"
GRIDC = "#2a2d33"
ANNOT = "#00d3ff"
# Grafana's named colours and its classic palette.
NAMED = {"green": "#73BF69", "red": "#F2495C", "yellow": "#FADE2A", "blue": "#5794F2", "orange": "#FF9830",
         "purple": "#B877D9", "text": TEXT}
CLASSIC = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
           "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477",
           "#B7DBAB", "#F4D598", "#70DBED", "#F9BA8F", "#F29191", "#82B5D8", "#E5A8E2", "#AEA2E0"]
# What Grafana puts in a panel whose fieldConfig sets no thresholds.
DEFAULT_THRESHOLDS = [{"color": "green", "value": None}, {"color": "red", "value": 80}]


def color(name):
    return NAMED.get(name, name)


def legend_name(fmt, metric, expr):
    if not fmt:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
        return f"{metric.get('__name__', '')}{{{inner}}}" if inner or "__name__" in metric else expr
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()


def fmt_value(v, unit, decimals=None):
    """Grafana-like value formatting for the units the dashboard uses."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    suffix = {"pps": " p/s", "reqps": " req/s", "Bps": "B/s", "s": " s"}.get(unit, "")

    def num(x, dec):
        if dec is None:
            dec = 0 if abs(x - round(x)) < 1e-9 else (1 if abs(x) >= 10 else 2)
        return f"{x:.{dec}f}"

    if unit == "s":
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 1e-3:
            return f"{num(v * 1e6, decimals if decimals is not None else (0 if a * 1e6 >= 100 else 1))} µs"
        if a < 1:
            return f"{num(v * 1e3, decimals if decimals is not None else (1 if a * 1e3 < 100 else 0))} ms"
        return f"{num(v, decimals)} s"
    if unit == "Bps":
        for div, pre in ((1e9, " GB/s"), (1e6, " MB/s"), (1e3, " kB/s")):
            if abs(v) >= div:
                return f"{num(v / div, decimals if decimals is not None else 2 if abs(v) / div < 10 else 1)}{pre}"
        return f"{num(v, decimals)} B/s"
    for div, pre in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if abs(v) >= div:
            return f"{num(v / div, decimals if decimals is not None and decimals > 0 else 2 if abs(v) / div < 10 else 1)}{pre}{suffix}"
    if decimals is not None:
        return f"{v:.{decimals}f}{suffix}"
    return f"{num(v, None)}{suffix}"


def series_of(panel_data, panel):
    """[(name, xs, ys)] over every target, in Grafana's order."""
    out = []
    for target, res in zip(panel.get("targets", []), panel_data["targets"]):
        for s in res["series"]:
            pts = [(float(t), float(v)) for t, v in s["values"]]
            out.append((legend_name(target.get("legendFormat"), s["metric"], res["expr"]), pts))
    return out


def last_not_null(pts):
    for _, v in reversed(pts):
        if not math.isnan(v):
            return v
    return None


def max_of(pts):
    vals = [v for _, v in pts if not math.isnan(v)]
    return max(vals) if vals else None


def threshold_color(v, fc):
    steps = (fc.get("defaults", {}).get("thresholds") or {}).get("steps") or DEFAULT_THRESHOLDS
    c = steps[0]["color"]
    for st in steps[1:]:
        if v is not None and st.get("value") is not None and v >= st["value"]:
            c = st["color"]
    return color(c)


def dense(pts, start, end):
    """Values on the full step grid, NaN where Prometheus returned no point."""
    by = {round(t): v for t, v in pts}
    xs = list(range(start, end + 1, STEP))
    return xs, [by.get(x, float("nan")) for x in xs]


def render(dashboard, data, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Rectangle

    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9, "text.color": TEXT})
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    col_px, row_px, gap = 80, 38, 8  # Grafana: 24 columns, 30 px rows + 8 px margins
    head_px, foot_px, side = 64, 40, 12
    W = 24 * col_px + 2 * side
    H = head_px + rows * row_px + foot_px
    dpi = 100
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi, facecolor=BG)

    def box(x, y, w, h):  # px from the top-left -> figure fraction rect
        return [x / W, 1 - (y + h) / H, w / W, h / H]

    start, end, t0 = data["start"], data["end"], data["t0"]
    steps = [(t, title) for t, title in data["steps"] if t <= end - t0]

    stamps = [float(v[0]) for pd in data["panels"] for t in pd["targets"] for se in t["series"] for v in se["values"]]
    first = (min(stamps) if stamps else start) - t0
    # Header: the dashboard's title bar, its variable and the range.
    fig.text(side / W, 1 - 24 / H, dashboard.get("title", ""), fontsize=15, color="#d8d9da", weight="bold", va="center")
    fig.text(
        side / W,
        1 - 48 / H,
        "Shard: All    Data source: Prometheus " + data["prometheus"] + f" (scrape {SCRAPE} s, step {STEP} s,"
        f" $__rate_interval = {data['rate_interval']}; its first scrape at t={first:.1f} s)    x axis: seconds into"
        f" the demo ({data['players']} players, {data['seconds']} s run)",
        fontsize=9,
        color=DIM,
        va="center",
    )
    marks = "   ".join(f"t={t}s {short_step(title)}" for t, title in steps)
    fig.text(1 - side / W, 1 - 48 / H, "- - -  " + marks, fontsize=9, color=ANNOT, va="center", ha="right")

    for p, pd in zip(panels, data["panels"]):
        g = p["gridPos"]
        x = side + g["x"] * col_px + gap / 2
        y = head_px + g["y"] * row_px + gap / 2
        w = g["w"] * col_px - gap
        h = g["h"] * row_px - gap
        bg = fig.add_axes(box(x, y, w, h))
        bg.set_axis_off()
        bg.add_patch(
            FancyBboxPatch((0, 0), 1, 1, boxstyle="round,pad=0,rounding_size=0.004", transform=bg.transAxes,
                           facecolor=PANEL, edgecolor=BORDER, linewidth=1)
        )
        fig.text((x + 10) / W, 1 - (y + 15) / H, p["title"], fontsize=10, color="#d8d9da", weight="bold",
                 va="center")
        inner = (x + 8, y + 30, w - 16, h - 36)
        series = series_of(pd, p)
        kind = p["type"]
        if not series:
            fig.text((x + w / 2) / W, 1 - (y + h / 2 + 8) / H, "No data", fontsize=12, color=DIM, ha="center",
                     va="center")
            continue
        if kind == "stat":
            draw_stat(fig, box, p, series, inner, start, end, t0)
        elif kind == "state-timeline":
            draw_state_timeline(fig, box, p, series, inner, start, end, t0, steps, Rectangle)
        else:
            draw_timeseries(fig, box, p, series, inner, start, end, t0, steps)

    fig.text(
        side / W,
        (foot_px / 2) / H,
        "Not a Grafana screenshot: rendered by scripts/dashboard_picture.py from the dashboard's own PromQL "
        "(deploy/grafana/samp-proxy-dashboard.json), evaluated by a real Prometheus that scraped the demo's "
        "agent; same titles, grid and panel options.",
        fontsize=9,
        color=DIM,
        va="center",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor=BG, pil_kwargs={"optimize": True})
    plt.close(fig)


def short_step(title):
    t = title.lower()
    for key in ("query", "migrate", "failover", "time is up"):
        if t.startswith(key):
            return key
    return title.split(":")[0][:20]


def time_axis(ax, start, end, t0, labels=True):
    ax.set_xlim(start - t0, end - t0)
    ticks = [s for s in range(0, int(end - t0) + 1, 5)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{s}s" for s in ticks] if labels else [])
    ax.tick_params(axis="x", colors=DIM, labelsize=8, length=0)


def draw_steps(ax, steps, label=True):
    for t, title in steps:
        ax.axvline(t, color=ANNOT, linestyle=(0, (4, 3)), linewidth=1, alpha=0.7, zorder=1)
        if label:
            ax.text(t, 1.0, " " + short_step(title), transform=ax.get_xaxis_transform(), color=ANNOT, fontsize=7,
                    va="top", ha="left", alpha=0.9)


def draw_stat(fig, box, p, series, inner, start, end, t0):
    x, y, w, h = inner
    fc = p.get("fieldConfig", {})
    opts = p.get("options", {})
    n = len(series)
    rh = h / n
    for i, (name, pts) in enumerate(series):
        v = last_not_null(pts)
        c = threshold_color(v, fc)
        ry = y + i * rh
        if opts.get("graphMode") == "area":
            ax = fig.add_axes(box(x, ry + rh * 0.15, w, rh * 0.85))
            ax.set_axis_off()
            xs, ys = dense(pts, start, end)
            xs = [a - t0 for a in xs]
            ax.fill_between(xs, ys, color=c, alpha=0.18, linewidth=0)
            ax.plot(xs, ys, color=c, alpha=0.6, linewidth=1)
            finite = [v for v in ys if not math.isnan(v)]
            ax.set_ylim(0, (max(finite) if finite else 1) * 1.15 or 1)
            ax.set_xlim(xs[0], xs[-1])
        fs = min(26, rh * 0.55)
        fig.text((x + 8) / fig.bbox.width, 1 - (ry + rh / 2) / fig.bbox.height, name, color=c, fontsize=fs * 0.5,
                 va="center", ha="left")
        fig.text((x + w - 8) / fig.bbox.width, 1 - (ry + rh / 2) / fig.bbox.height,
                 fmt_value(v, fc.get("defaults", {}).get("unit"), fc.get("defaults", {}).get("decimals")),
                 color=c, fontsize=fs, weight="bold", va="center", ha="right")


def draw_state_timeline(fig, box, p, series, inner, start, end, t0, steps, Rectangle):
    x, y, w, h = inner
    fc = p.get("fieldConfig", {}).get("defaults", {})
    mapping = {}
    for m in fc.get("mappings", []):
        if m.get("type") == "value":
            for k, v in m["options"].items():
                mapping[float(k)] = (v.get("text", k), color(v.get("color", "text")))
    label_w = 46
    ax = fig.add_axes(box(x + label_w, y, w - label_w, h - 16))
    ax.set_facecolor(PANEL)
    for s in ax.spines.values():
        s.set_visible(False)
    row_h = p.get("options", {}).get("rowHeight", 0.9)
    names = []
    for i, (name, pts) in enumerate(series):
        names.append(name)
        xs, ys = dense(pts, start, end)
        xs = [a - t0 for a in xs]
        # Merged runs of equal values, each drawn up to the next point.
        j = 0
        while j < len(xs):
            v = ys[j]
            k = j
            while k + 1 < len(xs) and (ys[k + 1] == v or (math.isnan(v) and math.isnan(ys[k + 1]))):
                k += 1
            if not math.isnan(v):
                right = xs[k + 1] if k + 1 < len(xs) else xs[k]
                _, c = mapping.get(v, (str(v), DIM))
                ax.add_patch(Rectangle((xs[j], i - row_h / 2), right - xs[j], row_h, facecolor=c, alpha=0.85,
                                       edgecolor=PANEL, linewidth=1))
            j = k + 1
    ax.set_ylim(len(series) - 0.5, -0.5)
    ax.set_yticks(range(len(series)))
    ax.set_yticklabels(names)
    ax.tick_params(axis="y", colors=TEXT, labelsize=8, length=0)
    time_axis(ax, start, end, t0)
    draw_steps(ax, steps, label=False)


def draw_timeseries(fig, box, p, series, inner, start, end, t0, steps):
    x, y, w, h = inner
    fc = p.get("fieldConfig", {}).get("defaults", {})
    custom = fc.get("custom", {})
    unit = fc.get("unit")
    decimals = fc.get("decimals")
    legend = p.get("options", {}).get("legend", {})
    show_legend = legend.get("showLegend", True)
    legend_w = w * 0.42 if show_legend and legend.get("placement") == "right" else 0
    axis_w = 62
    ax = fig.add_axes(box(x + axis_w, y + 6, w - legend_w - axis_w - 8, h - 22))
    ax.set_facecolor(PANEL)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.grid(True, color=GRIDC, linewidth=0.8)
    ax.set_axisbelow(True)
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    bars = custom.get("drawStyle") == "bars"
    alpha = custom.get("fillOpacity", 10) / 100
    lw = custom.get("lineWidth", 1)
    base = None
    rows = []
    top = 0.0
    n = len(series)
    for i, (name, pts) in enumerate(series):
        c = CLASSIC[i % len(CLASSIC)]
        xs, ys = dense(pts, start, end)
        xs = [a - t0 for a in xs]
        if stacked:
            if base is None:
                base = [0.0] * len(ys)
            lo = base
            hi = [float("nan") if math.isnan(v) else b + v for b, v in zip(lo, ys)]
            ax.fill_between(xs, lo, hi, color=c, alpha=alpha, linewidth=0)
            ax.plot(xs, hi, color=c, linewidth=lw)
            base = [b if math.isnan(hh) else hh for b, hh in zip(base, hi)]
            top = max([top] + [v for v in hi if not math.isnan(v)])
        elif bars:
            bw = STEP * 0.8 / max(1, n)
            off = (i - (n - 1) / 2) * bw
            ax.bar([a + off for a in xs], [0 if math.isnan(v) else v for v in ys], width=bw, color=c, alpha=alpha,
                   edgecolor=c, linewidth=lw * 0.5)
            top = max([top] + [v for v in ys if not math.isnan(v)])
        else:
            ax.plot(xs, ys, color=c, linewidth=lw + 0.3)
            if alpha > 0:
                ax.fill_between(xs, ys, color=c, alpha=alpha, linewidth=0)
            top = max([top] + [v for v in ys if not math.isnan(v)])
        rows.append((c, name, last_not_null(pts), max_of(pts)))
    ax.set_ylim(0, top * 1.08 if top > 0 else 1)
    from matplotlib import ticker

    ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=5, min_n_ticks=3))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_value(v, unit, decimals or None)))
    ax.tick_params(axis="y", colors=DIM, labelsize=8, length=0)
    time_axis(ax, start, end, t0)
    draw_steps(ax, steps)
    if legend_w:
        draw_legend_table(fig, rows, (x + w - legend_w, y, legend_w, h), unit, decimals, legend.get("calcs", []))


CALC_NAMES = {"lastNotNull": "Last *", "max": "Max", "min": "Min", "mean": "Mean", "last": "Last"}


def draw_legend_table(fig, rows, area, unit, decimals, calcs):
    from matplotlib.patches import Rectangle

    x, y, w, h = area
    W, H = fig.bbox.width, fig.bbox.height
    col_w = 74
    name_w = w - col_w * len(calcs)
    row_px = max(12.5, min(18, (h - 18) / max(1, len(rows))))
    fs = 8 if row_px >= 15 else 7
    fits = int((h - 18) // row_px)
    shown = rows if len(rows) <= fits else rows[: fits - 1]
    for j, cname in enumerate(calcs):
        fig.text((x + name_w + (j + 1) * col_w - 6) / W, 1 - (y + 8) / H, CALC_NAMES.get(cname, cname),
                 color=ANNOT if j == 0 else "#6e9fff", fontsize=fs, ha="right", va="center")
    for i, (c, name, last, mx) in enumerate(shown):
        ry = y + 18 + i * row_px + row_px / 2
        fig.patches.append(
            Rectangle(((x + 2) / W, 1 - (ry + 1.5) / H), 14 / W, 3 / H, transform=fig.transFigure, figure=fig,
                      facecolor=c, edgecolor="none")
        )
        label = name if len(name) <= 34 else name[:33] + "…"
        fig.text((x + 22) / W, 1 - ry / H, label, color=TEXT, fontsize=fs, va="center", ha="left")
        vals = {"lastNotNull": last, "max": mx}
        for j, cname in enumerate(calcs):
            fig.text((x + name_w + (j + 1) * col_w - 6) / W, 1 - ry / H,
                     fmt_value(vals.get(cname), unit, decimals), color=TEXT, fontsize=fs, ha="right", va="center")
    if len(shown) < len(rows):
        ry = y + 18 + len(shown) * row_px + row_px / 2
        fig.text((x + 22) / W, 1 - ry / H, f"… {len(rows) - len(shown)} more (Grafana scrolls)", color=DIM,
                 fontsize=fs, va="center")


# ---------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--players", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--margin", type=float, default=3.0, help="query this many seconds before the run ends")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/dashboard.png")
    ap.add_argument("--save-data", type=Path, help="also write the query results here (JSON)")
    ap.add_argument("--from-data", type=Path, help="draw from saved results; run nothing")
    args = ap.parse_args()
    dashboard = json.loads(DASHBOARD.read_text())
    started = time.time()
    if args.from_data:
        data = json.loads(args.from_data.read_text())
    else:
        if os.geteuid() != 0:
            sys.exit("dashboard-picture: run as root (the demo builds network namespaces)")
        data = collect(args, dashboard)
        if args.save_data:
            args.save_data.write_text(json.dumps(data))
    for pd in data["panels"]:
        for t in pd["targets"]:
            if not t["series"]:
                log(f"no series: {pd['title']!r}: {t['expr']}")
    render(dashboard, data, args.out)
    log(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
