#!/usr/bin/env bash
# The GPU steps of a session, in as few device calls as its budget allows (the GPU box has no network).
#
# Here, once: `bash ../shared/gpu-vllm/pack.sh .gpuw` (vLLM 0.26.0 for CUDA 13 and the wheels the box lacks, 15 parts),
# `bash benchmarks/gpu/exporter_gpu.sh pack` (nvitop-exporter + Debian's prometheus), and the wheels of vboot's
# dependencies the box lacks in .gpudeps/ (grafana-foundation-sdk, PyYAML).
# There, one call per part, carrying `.gpuw/part_NN`:      bash benchmarks/gpu/session.sh receive
# Then, carrying the last part, exporter-pack and .gpudeps: OUT=$OUT bash benchmarks/gpu/session.sh install STEP...
# and in later calls (the box stays warm 30 s):            OUT=$OUT bash benchmarks/gpu/session.sh STEP...
# STEPs: setup (issue 16), exporter (19), keepalive (15), multimodel (18). Outputs go to $OUT.
set -u
R=$(cd "$(dirname "$0")/../.." && pwd)
cd "$R"
export PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p /tmp/parts "$OUT"
mv .gpuw/part_* /tmp/parts/ 2>/dev/null || true
echo "parts on the box: $(ls /tmp/parts | wc -l)"
[ "${1:-}" = receive ] && exit 0

if [ "${1:-}" = install ]; then
  shift
  t0=$(date +%s)
  mkdir -p /tmp/whl && cat /tmp/parts/part_* | tar -C /tmp/whl -xf -
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/whl/*.whl \
    .gpudeps/*.whl 2>&1 | tail -3
  echo "installed in $(( $(date +%s) - t0 )) s"
  mkdir -p /tmp/gpu-exporter && cp -r benchmarks/gpu/exporter-pack/. /tmp/gpu-exporter/ 2>/dev/null || true
fi
export PYTHONPATH=/tmp/site VLLM_CACHE_ROOT=/tmp/vllm-cache
python3 -c "import vllm, sys; print('vllm', vllm.__version__, 'python', sys.version.split()[0])" 2>&1 | tail -1
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader

for step in "$@"; do
  t0=$(date +%s)
  echo "=== $step"
  case $step in
    setup) OUT=$OUT timeout 120 bash benchmarks/gpu/setup_plan_gpu.sh > "$OUT/setup_plan.txt" 2>&1; tail -25 "$OUT/setup_plan.txt" ;;
    exporter) OUT=$OUT timeout 150 bash benchmarks/gpu/exporter_gpu.sh run /tmp/gpu-exporter > "$OUT/exporter.txt" 2>&1
              tail -30 "$OUT/exporter.txt" ;;
    keepalive) VBOOT_VLLM_PYTHON=$(command -v python3) OUT=$OUT timeout 500 python3 benchmarks/gpu/keepalive_gpu.py \
                 -- --enforce-eager > "$OUT/keepalive.txt" 2>&1
               grep -E "^(PASS|FAIL)" "$OUT/keepalive.txt" ;;
    multimodel) VBOOT_VLLM_PYTHON=$(command -v python3) OUT=$OUT timeout 540 python3 benchmarks/gpu/multimodel_gpu.py \
                  > "$OUT/multimodel.txt" 2>&1; tail -40 "$OUT/multimodel.txt" ;;
    *) echo "unknown step $step" ;;
  esac
  echo "=== $step: exit $? after $(( $(date +%s) - t0 )) s"
done
