#!/usr/bin/env bash
# vboot setup's choice of vLLM build on a real GPU box (issue #16), from this tree (`python3 -m bootstrap`):
#   1. `setup --gpu --dry-run` (and plain `setup --dry-run`) on this driver: the CUDA 13 build from PyPI on a
#      driver reporting CUDA 13.x;
#   2. the same with a driver version injected by `--for-cuda 12.8` (the documented way to plan for another
#      box's driver; it is how tests inject one too): the cu129 build, its indexes and torch;
#   3. the other driver lines (11.8: refused, exit 7; 12.2, 12.9, 13.1) as JSON;
#   4. what the 12.8 plan would replace in an environment holding this machine's torch (a scratch venv that
#      gets only the metadata of the machine's torch: a symlinked dist-info; nothing is installed);
#   5. that none of it wrote anything (dry runs, into scratch XDG directories).
# Needs no network and no vLLM; prints everything it ran and saves the JSON under $OUT.
#
#   OUT=/tmp/out bash benchmarks/gpu/setup_plan_gpu.sh
set -u
R=$(cd "$(dirname "$0")/../.." && pwd)
cd "$R"
PY=${PYTHON:-python3}
V="$PY -m bootstrap"
OUT=${OUT:-$(mktemp -d)}
SCRATCH=$(mktemp -d)
export XDG_DATA_HOME="$SCRATCH/data" XDG_STATE_HOME="$SCRATCH/state" XDG_CONFIG_HOME="$SCRATCH/config"
run() { echo; echo "\$ $*"; "$@"; echo "[exit $?]"; }
build() {  # the plan's data.build, one line per field, or the error
  "$PY" -c 'import json,sys; d=json.load(sys.stdin)
b=d.get("data",{}).get("build")
print(json.dumps({k: b[k] for k in ("distribution","version","cuda_line","cuda","torch","indexes","changes","for_cuda")}, indent=1) if b else json.dumps(d["errors"], indent=1))'
}

nvidia-smi --query-gpu=index,name,driver_version,compute_cap --format=csv
nvidia-smi | grep -m1 "CUDA Version"

# 1. this box's driver
run $V setup --gpu --dry-run --installer pip 2>&1 | tee "$OUT/setup_gpu_dry_run.txt"
$V setup --gpu --dry-run --installer pip --json > "$OUT/setup_gpu_dry_run.json"
echo "[--json exit $?]"
build < "$OUT/setup_gpu_dry_run.json"
run $V setup --dry-run --installer pip 2>&1 | head -8 | tee "$OUT/setup_auto_dry_run.txt"

# 2. a CUDA 12.8 driver, injected
run $V setup --gpu --dry-run --installer pip --for-cuda 12.8 2>&1 | tee "$OUT/setup_cuda12_8_dry_run.txt"
$V setup --gpu --dry-run --installer pip --for-cuda 12.8 --json > "$OUT/setup_cuda12_8_dry_run.json"
echo "[--json exit $?]"
build < "$OUT/setup_cuda12_8_dry_run.json"

# 3. the other lines, auto (no --gpu): 11.8 is refused with exit 7 and the fix
for c in 11.8 12.2 12.9 13.1; do
  $V setup --dry-run --installer pip --for-cuda "$c" --json > "$OUT/setup_cuda${c/./_}.json"
  rc=$?
  echo; echo "== --for-cuda $c: exit $rc"
  build < "$OUT/setup_cuda${c/./_}.json"
done

# 4. what the 12.8 plan replaces in an environment that holds this machine's torch
TORCH_INFO=$("$PY" -c 'import importlib.metadata as m, pathlib; d=m.distribution("torch"); print(pathlib.Path(d._path))' 2>/dev/null)
if [ -n "$TORCH_INFO" ]; then
  "$PY" -m venv --without-pip "$SCRATCH/venv"
  SITE=$(ls -d "$SCRATCH"/venv/lib/python3*/site-packages)
  ln -s "$TORCH_INFO" "$SITE/"
  run $V setup --gpu --dry-run --installer pip --for-cuda 12.8 --venv "$SCRATCH/venv" 2>&1 | grep -E "^(build|index|torch|replaces|environment):"
else
  echo "no torch in $PY: step 4 skipped"
fi

# 5. nothing was written
echo; echo "written by the dry runs: $(find "$XDG_DATA_HOME" "$XDG_STATE_HOME" -type f 2>/dev/null | wc -l) file(s)"
rm -rf "$SCRATCH"
echo "JSON in $OUT"
