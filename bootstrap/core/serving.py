"""Pure pieces of `vboot serve`: run naming, the files of a run directory, log tails, summaries."""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from bootstrap.core.environ import mask
from bootstrap.core.errors import UsageError

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool, host_from: str | None = None) -> None:
    """A server reachable from other machines needs an API key, unless the user says --insecure.

    ``host`` and ``api_key`` are those vLLM will have (``ServeSettings``: a --host or --api-key among the vLLM
    arguments counts); ``host_from`` names those arguments when the host comes from them."""
    if is_loopback(host) or api_key or insecure:
        return
    raise UsageError(
        f"--host {host}{f' (in {host_from})' if host_from else ''} exposes the server beyond this machine "
        "without an API key",
        hint="pass --api-key KEY (clients send 'Authorization: Bearer KEY'), or --insecure if the network is trusted",
    )


def tail_lines(path: Path, n: int = 20, max_bytes: int = 256 * 1024) -> list[str]:
    """The last ``n`` lines of a (possibly large, possibly growing) log file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]


def last_log_line(path: Path) -> str:
    for line in reversed(tail_lines(path, 5)):
        if line.strip():
            return line.strip()
    return ""


def write_run_files(run_dir: Path, argv: Sequence[str], child_env: Mapping[str, str], shown_vars: Mapping[str, str],
                    prometheus_yml: str, rules_yml: str, rules_name: str, *, dashboard_json: str | None = None,
                    secrets: Collection[str] = ()) -> None:
    """The exact command line, the environment vboot set (secrets masked), the Prometheus files and, when given,
    the Grafana dashboard (:data:`bootstrap.core.dashboard.DASHBOARD_FILE`) written into ``run_dir`` (which the
    caller has made). ``secrets`` are values (alert receiver URLs) masked wherever they occur in the environment,
    whatever the variable is called."""

    def shown(name: str, value: str) -> str:
        return "***" if any(s and s in value for s in secrets) else mask(name, value)

    (run_dir / "cmdline").write_text(shlex.join(argv) + "\n", encoding="utf-8")
    (run_dir / "env.json").write_text(json.dumps(
        {"set_by_vboot": {k: shown(k, v) for k, v in shown_vars.items()},
         "full": {k: shown(k, v) for k, v in sorted(child_env.items())}}, indent=2) + "\n", encoding="utf-8")
    (run_dir / "prometheus.yml").write_text(prometheus_yml, encoding="utf-8")
    (run_dir / rules_name).write_text(rules_yml, encoding="utf-8")
    if dashboard_json is not None:
        from bootstrap.core.dashboard import DASHBOARD_FILE

        (run_dir / DASHBOARD_FILE).write_text(dashboard_json, encoding="utf-8")


def rotate_log(run_dir: Path) -> None:
    """Keep the previous run's log as vllm.prev.log so a restart never destroys the evidence."""
    log = run_dir / "vllm.log"
    if log.exists():
        os.replace(log, run_dir / "vllm.prev.log")
