#!/usr/bin/env bash
# Draws docs/dashboard.png: the Grafana dashboard
# (deploy/grafana/samp-proxy-dashboard.json) filled with a 40 s demo's data.
# Runs the demo, scrapes its agent with a real Prometheus inside the demo's
# proxy namespace, evaluates every panel's PromQL through Prometheus' HTTP
# API and draws the panels with matplotlib (scripts/dashboard_picture.py).
# Builds nothing: needs target/release/{demo,proxy-agent}
# (cargo build --release -p proxy-agent -p tests --bins). Needs root.
# Arguments go to the Python script (--players, --seconds, --out, --save-data,
# --from-data FILE to redraw without running anything).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E bash "$0" "$@"
fi
for bin in target/release/demo target/release/proxy-agent; do
    if [ ! -x "$bin" ]; then
        echo "dashboard-picture: $bin is missing: cargo build --release -p proxy-agent -p tests --bins" >&2
        exit 1
    fi
done
for tool in prometheus curl ip; do
    if ! command -v "$tool" >/dev/null; then
        echo "dashboard-picture: no $tool (scripts/setup.sh installs prometheus; curl and iproute2 are Debian packages)" >&2
        exit 1
    fi
done
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "dashboard-picture: installing matplotlib (pip)"
    python3 -m pip install --quiet matplotlib 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages matplotlib
fi
exec python3 scripts/dashboard_picture.py "$@"
