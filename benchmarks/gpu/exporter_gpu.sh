#!/usr/bin/env bash
# GPU metrics on a real GPU box (issue 19): nvitop-exporter started with vboot's own command line
# (bootstrap.core.gpu_exporter.plan_gpu_exporter), its /metrics read with vboot's metrics parser, then scraped by a
# real Prometheus with vboot's generated config and GPU rules, and the recorded instance_gpu:* series printed.
#
# The GPU machine has no network: `pack` (here) puts what it needs into one folder, which is carried there.
#   bash benchmarks/gpu/exporter_gpu.sh pack [DIR]          # here: nvitop + nvitop-exporter wheels (no deps: the
#                                                           # GPU box has nvidia-ml-py, psutil, prometheus-client),
#                                                           # and Debian's prometheus binary (needs only libc), gzipped
#   OUT=/tmp/out bash benchmarks/gpu/exporter_gpu.sh run DIR  # there: install to /tmp, run, scrape, print
# DIR defaults to benchmarks/gpu/exporter-pack (git-ignored; carry it).
set -euo pipefail
R=$(cd "$(dirname "$0")/../.." && pwd)
MODE=${1:-}
DIR=${2:-$R/benchmarks/gpu/exporter-pack}
PY=${PYTHON:-python3}

if [ "$MODE" = pack ]; then
  rm -rf "$DIR" && mkdir -p "$DIR"
  $PY -m pip download -q --no-deps -d "$DIR" nvitop==1.7.2 nvitop-exporter==1.7.2 2>&1 | grep -v "^WARNING" || true
  gzip -9 -c "$(command -v prometheus)" > "$DIR/prometheus.gz"
  ls -la "$DIR" && du -sh "$DIR"
  exit 0
fi
[ "$MODE" = run ] || { echo "usage: $0 pack [DIR] | run [DIR]" >&2; exit 2; }

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
T=$(mktemp -d /tmp/vboot-exporter.XXXXXX)
$PY -m pip install -q --no-index --no-deps --target "$T/site" "$DIR"/*.whl
gunzip -c "$DIR/prometheus.gz" > "$T/prometheus" && chmod +x "$T/prometheus"
nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total,power.draw,temperature.gpu --format=csv
export PYTHONPATH="$R:$T/site" T OUT
exec $PY - <<'PYEOF'
"""Run the exporter as vboot would, parse its output with vboot, then let a real Prometheus record the GPU rules."""
import json, os, signal, socket, subprocess, sys, time, urllib.parse, urllib.request
from pathlib import Path

from bootstrap.core import prom
from bootstrap.core.gpu_exporter import NVITOP_PROGRAM, plan_gpu_exporter
from bootstrap.core.errors import ScrapeError
from bootstrap.probes.http import MetricsEndpoint

T, OUT = Path(os.environ["T"]), Path(os.environ["OUT"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


procs = []
try:
    plan = plan_gpu_exporter(NVITOP_PROGRAM, str(T / "site" / "bin" / "nvitop-exporter"), port=free_port(),
                             hostname=socket.gethostname(), interval_s=1.0)
    print("exporter argv:", " ".join(plan.argv), flush=True)
    argv = [sys.executable, "-m", "nvitop_exporter", *plan.argv[1:]]  # --target installs have no working shebang
    procs.append(subprocess.Popen(argv, stdout=open(OUT / "exporter.log", "wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True))
    endpoint = MetricsEndpoint(f"http://{plan.scrape_job.target}", families=None)
    deadline = time.monotonic() + 30
    while True:
        try:
            text = endpoint.fetch_text()
            break
        except ScrapeError as exc:
            if time.monotonic() > deadline or procs[0].poll() is not None:
                print((OUT / "exporter.log").read_text(), file=sys.stderr)
                raise SystemExit(f"exporter did not answer: {exc}")
            time.sleep(0.5)
    time.sleep(2)
    text = endpoint.fetch_text()
    (OUT / "nvitop-exporter.metrics.txt").write_text(text)
    snap = endpoint.scrape()
    wanted = plan.metrics.metric_names()
    missing = sorted(wanted - set(snap.sample_names()))
    print(f"\n== vboot's parser: {len(snap.sample_names())} series names; the GPU rules read {sorted(wanted)}")
    for name in sorted(wanted):
        for labels, value in snap.samples.get(name, ()):
            d = dict(labels)
            print(f"  {name}{{index={d.get('index')}, devicename={d.get('devicename')}}} = {value}")
    if missing:
        raise SystemExit(f"MISSING from the exporter: {missing}")

    # A real Prometheus with vboot's config and rules scraping the exporter.
    pport = free_port()
    (T / prom.RULES_FILE).write_text(prom.render_rules(gpu=plan.metrics))
    (T / "prometheus.yml").write_text(prom.render_prometheus_config(
        "vllm-absent", "127.0.0.1:9", extra_jobs=[plan.scrape_job], scrape_interval_s=1, evaluation_interval_s=1))
    procs.append(subprocess.Popen([str(T / "prometheus"), f"--config.file={T / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={T / 'data'}", f"--web.listen-address=127.0.0.1:{pport}"],
                                  cwd=T, stdout=open(OUT / "prometheus.log", "wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True))

    def query(q: str) -> list:
        url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]

    names = prom.gpu_recording_rule_names()
    deadline = time.monotonic() + 60
    results = {}
    while time.monotonic() < deadline:
        try:
            results = {n: query(n) for n in names}
        except OSError:
            results = {}
        if results and all(results.values()):
            break
        time.sleep(1)
    print(f"\n== Prometheus (Debian's, carried) scraping it with vboot's config and GPU rules:")
    for n in names:
        for r in results.get(n, []):
            print(f"  {n}{{gpu={r['metric'].get('gpu')}, job={r['metric'].get('job')}}} = {r['value'][1]}")
    print("  up:", [(r["metric"]["job"], r["value"][1]) for r in query("up")])
    print("  alerts:", [a["labels"]["alertname"] + ":" + a["state"] for a in json.load(urllib.request.urlopen(
        f"http://127.0.0.1:{pport}/api/v1/alerts", timeout=5))["data"]["alerts"]])
    empty = [n for n in names if not results.get(n)]
    if empty:
        raise SystemExit(f"NO SERIES for {empty}")
    print("\nOK: every GPU recording rule has a series")
finally:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(p.pid, signal.SIGKILL)
PYEOF
