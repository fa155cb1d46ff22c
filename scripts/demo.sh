#!/usr/bin/env bash
# From a fresh machine to a real vLLM server on the CPU, serving vboot's bundled tiny model:
# installs vboot into .venv, builds the vLLM CPU environment with `vboot setup --cpu`, runs
# `vboot doctor --profile tiny`, then `vboot serve tiny` (healthy, a smoke request, Ctrl-C to stop).
#
#   bash scripts/demo.sh                # foreground, Ctrl-C stops everything
#   bash scripts/demo.sh --detach       # extra arguments go to `vboot serve tiny`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/vboot ]; then
  "$PY" -m venv .venv
  # editable ("compat": a plain path, no import hook to slow every `vboot` start), so a `git pull` takes effect
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . --config-settings editable_mode=compat
fi
.venv/bin/vboot setup --cpu
.venv/bin/vboot doctor --profile tiny || true   # show the verdict; serve's own pre-flight decides
exec .venv/bin/vboot serve tiny "$@"
