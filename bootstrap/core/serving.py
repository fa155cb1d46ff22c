"""Small pieces of `vboot serve`: the exposure rule, log tails and log rotation."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

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


def check_sleep_mode_exposure(host: str, sleep_mode: bool, host_from: str | None = None) -> None:
    """Sleep mode needs vLLM's development mode (VLLM_SERVER_DEV_MODE=1) for /sleep and /wake_up, and that mode
    also serves /collective_rpc, /reset_prefix_cache and more, which vLLM's API key does not guard (it guards
    paths under /v1 only): such a server is allowed on loopback only. `vboot route` can expose it instead (its
    front forwards /v1 paths only)."""
    if not sleep_mode or is_loopback(host):
        return
    raise UsageError(
        f"sleep mode needs vLLM's development endpoints (/sleep, /wake_up, /collective_rpc, ...), which its API key "
        f"does not guard, and --host {host}{f' (in {host_from})' if host_from else ''} would expose them beyond this "
        "machine",
        hint="serve it on 127.0.0.1 and expose `vboot route --host HOST --api-key KEY` instead (it forwards /v1 "
             "only), or turn sleep mode off",
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


def rotate_log(run_dir: Path, keep: int = 5) -> None:
    """Keep the previous logs as vllm.log.1 (the newest) ... vllm.log.KEEP, so a restart never destroys the
    evidence of why the last one died."""
    log = run_dir / "vllm.log"
    if not log.exists():
        return
    for n in range(keep - 1, 0, -1):
        older = run_dir / f"vllm.log.{n}"
        if older.exists():
            os.replace(older, run_dir / f"vllm.log.{n + 1}")
    os.replace(log, run_dir / "vllm.log.1")
