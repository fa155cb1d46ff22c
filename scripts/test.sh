#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian/Ubuntu machine, check lint and types (ruff, mypy),
# then run the whole suite (unit tests and end-to-end tests against the real vLLM CPU build, Prometheus and the
# ModelScope client). A lint or type finding fails the run before any test.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not e2e"    # extra arguments go to pytest
#
# Heavy installs are cached outside the clone, keyed by a hash of what they install
# ($VBOOT_CACHE_DIR, default ~/.cache/vboot-ci): a second run only verifies them.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CACHE=${VBOOT_CACHE_DIR:-$HOME/.cache/vboot-ci}
PY=${PYTHON:-python3}
mkdir -p "$CACHE"
log() { printf '\033[1m[test.sh %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# 1. System programs the end-to-end tests use for real: Prometheus + promtool, Alertmanager + amtool, tmux
#    (vboot top's full-screen view), zsh and fish (shells that evaluate `vboot env`), dash (sources `vboot env
#    --dotenv`), readelf and gcc (the ELF reader is checked against readelf, on files the real linker made).
need=()
for prog in prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
            amtool:prometheus-alertmanager tmux:tmux zsh:zsh fish:fish dash:dash readelf:binutils gcc:gcc; do
  command -v "${prog%%:*}" >/dev/null 2>&1 || need+=("${prog##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  log "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi

# 2. vboot's own environment with the test dependencies (keyed by pyproject.toml).
key=$( (cat pyproject.toml; "$PY" -V) | sha256sum | cut -c1-16)
TOOLS="$CACHE/tools-$key"
if [ ! -f "$TOOLS/.complete" ]; then
  log "creating $TOOLS"
  rm -rf "$TOOLS"
  "$PY" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check ".[test]"
  touch "$TOOLS/.complete"
fi
# The package itself, from this checkout (editable: fast, and the tests see this tree). "compat" mode is a plain
# path in a .pth file; the default mode's import hook costs every `vboot` start ~20 ms (it imports pathlib).
EDITABLE=(-e . --config-settings editable_mode=compat)
"$TOOLS/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation "${EDITABLE[@]}" 2>/dev/null \
  || "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${EDITABLE[@]}"

# 3. Lint and types, pinned in the [test] extra (configuration: pyproject.toml). First, because they take
#    seconds and a finding fails the run: no need to build vLLM to learn about it.
log "ruff check, mypy"
"$TOOLS/bin/ruff" check .
"$TOOLS/bin/mypy"

# 4. The real vLLM (CPU build) for the end-to-end tests, built by vboot itself (keyed by the setup logic and
#    the table of builds it installs from).
vkey=$( (cat bootstrap/core/setup.py bootstrap/core/builds.py; "$PY" -V) | sha256sum | cut -c1-16)
VENV="$CACHE/vllm-cpu-$vkey"
log "vLLM environment: $VENV (vboot setup --cpu)"
XDG_STATE_HOME="$CACHE/state" "$TOOLS/bin/vboot" setup --cpu --venv "$VENV"
export VBOOT_TEST_VLLM_PYTHON="$VENV/bin/python"
# vLLM's compile cache, shared by the end-to-end servers (vLLM keys its entries by model and config).
export VBOOT_TEST_VLLM_CACHE="$CACHE/vllm-compile-cache-$vkey"

# 5. The suite.
log "running pytest $*"
cd "$REPO"
exec "$TOOLS/bin/python" -m pytest -p no:cacheprovider "$@"
