#!/usr/bin/env bash
# vboot doctor on a real GPU box (issues #2 and #9): the human and JSON verdicts with another process holding
# GPU memory, doctor's speed against `python -m torch.utils.collect_env`, and on a box with several GPUs the
# CUDA_VISIBLE_DEVICES mapping (unset, subsets, reversed, invalid) against a tensor-parallel-2 profile.
#
#   VBOOT="vboot" OUT=/tmp/out bash benchmarks/gpu/doctor_gpu.sh      (ONLY_MULTI=1: only the several-GPU part)
set -u
R=$(cd "$(dirname "$0")/../.." && pwd)
V=${VBOOT:-vboot}
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
nvidia-smi -L
if [ -z "${ONLY_MULTI:-}" ]; then
# 1. another process holds 10 GiB on GPU 0 while doctor looks
$PY -c "import torch,time; x=torch.empty(10*2**30,dtype=torch.uint8,device='cuda:0'); print('holder ready',flush=True); time.sleep(90)" &
H=$!
sleep 10
/usr/bin/time -f "doctor (human) took %e s" $V doctor --profile qwen 2>&1 | tee "$OUT/doctor_qwen_human.txt"
/usr/bin/time -f "doctor --json took %e s" -o "$OUT/doctor_json_time.txt" $V doctor --profile qwen --json > "$OUT/doctor_qwen.json"
cat "$OUT/doctor_json_time.txt"
kill $H; wait $H 2>/dev/null
# 2. speed
$PY "$R/benchmarks/bench_doctor.py" --runs 11 --profile qwen --collect-env | tee "$OUT/bench_doctor_gpu.json"
fi
# 3. several GPUs: CUDA_VISIBLE_DEVICES against a tensor-parallel-2 profile
CFG=$(mktemp -d)
mkdir -p "$CFG/vboot/profiles"
printf '[model]\nid = "Qwen/Qwen2.5-7B-Instruct"\n[serve]\ndevice = "gpu"\ntensor_parallel_size = 2\n[needs]\nweights = "15.3GB"\nmin_free_vram = "20GB"\n' > "$CFG/vboot/profiles/qwen7b-tp2.toml"
for cvd in unset 0 1 1,0 0,0 7; do
  if [ "$cvd" = unset ]; then unset CUDA_VISIBLE_DEVICES; else export CUDA_VISIBLE_DEVICES=$cvd; fi
  XDG_CONFIG_HOME=$CFG $V doctor --profile qwen7b-tp2 --json > "$OUT/tp2_cvd_${cvd/,/_}.json"
  echo "== CUDA_VISIBLE_DEVICES=$cvd exit $?"
  XDG_CONFIG_HOME=$CFG $V doctor --profile qwen7b-tp2 2>&1 | grep -E -A1 "nvidia\.|vram|cuda_visible|alloc_conf|^(ready|not ready)" | grep -v "^--"
done
unset CUDA_VISIBLE_DEVICES
nvidia-smi topo -m | tee "$OUT/topo.txt"
