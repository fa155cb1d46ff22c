"""`vboot sleep NAME` and `vboot wake NAME`: vLLM's sleep mode on a running server, measured with NVML."""

from __future__ import annotations

import time
from typing import Any

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, SleepUnavailableError, StartupError
from bootstrap.core.reports.sleep import SleepDone, WakeDone


def _server(name: str) -> Any:  # -> RunRecord
    from bootstrap.core.runs import find_run, live_runs
    from bootstrap.probes import procs

    env = Environ()
    rec = find_run(env, name)
    if rec is None or not rec.is_server or not (rec.pid and procs.pid_alive(rec.pid, rec.pid_create_time)):
        known = ", ".join(r.name for r in live_runs(env) if r.is_server) or "none running"
        raise NotFoundError(f"no running server named {name!r} ({known})", hint="`vboot ps` lists them")
    if rec.device == "cpu":
        raise SleepUnavailableError(f"server {name!r} runs on vLLM's CPU build, which has no sleep mode (vLLM's "
                                    "sleep mode offloads GPU memory: CUDA, ROCm and XPU only)",
                                    hint=f"`vboot stop {name}` frees its memory; `vboot serve` starts it again")
    if not rec.sleep_mode:
        raise SleepUnavailableError(f"server {name!r} was started without vLLM's sleep mode",
                                    hint=f"set serve.enable_sleep_mode = true in profile {rec.profile} and serve it "
                                         f"again (`vboot stop {name}`), or stop it to free its memory")
    return rec


def _gpu_bytes(rec: Any) -> tuple[int, int]:
    """(memory in use on the server's GPUs, what the server's processes hold) per NVML, in bytes."""
    from bootstrap.core.colocate import gpu_key
    from bootstrap.probes import nvml, procs

    snap = nvml.snapshot()
    if not snap.ok:
        return 0, 0
    mine = [g for g in snap.gpus if not rec.gpus or gpu_key(g.uuid, g.index) in rec.gpus]
    group = set(procs.group_members(rec.pgid)) | {rec.pid}
    held = sum(p.used_bytes or 0 for g in mine for p in g.processes if p.pid in group)
    return sum(g.memory_used_bytes or 0 for g in mine), held


def _wait_state(url: str, key: str | None, want: bool, timeout: float = 120.0) -> bool:
    from bootstrap.probes import http

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http.is_sleeping(url, key) is want:
            return True
        time.sleep(0.2)
    return False


def _key(rec: Any) -> str | None:
    from bootstrap.core.serve_plan import PROMETHEUS_KEY_FILE

    if not rec.api_key_set:
        return None
    try:
        from pathlib import Path

        return (Path(rec.run_dir) / PROMETHEUS_KEY_FILE).read_text().strip() or None
    except OSError:
        return None


@click.command()
@click.argument("name")
@click.option("--level", type=click.IntRange(1, 2), default=1, show_default=True,
              help="1: weights to CPU memory, KV cache dropped (fast wake); 2: weights dropped too (wake reloads "
                   "them).")
@output.json_option
def sleep(name: str, level: int, as_json: bool) -> int:
    """Put server NAME to sleep (vLLM's sleep mode) and measure what that freed with NVML.

    Needs a GPU server started with serve.enable_sleep_mode. While it sleeps, vboot's liveness probes pause;
    `vboot wake NAME` wakes it (requests to a sleeping server are not woken on demand)."""
    from bootstrap.core.colocate import SleepReport
    from bootstrap.probes import http

    rec = _server(name)
    key = _key(rec)
    before, held = _gpu_bytes(rec)
    t0 = time.perf_counter()
    if not http.sleep_server(rec.url, key, level) or not _wait_state(rec.url, key, True):
        raise StartupError(f"server {name!r} did not go to sleep", hint=f"see `vboot logs {name}`")
    took = time.perf_counter() - t0
    time.sleep(1.0)  # the driver returns freed memory a moment later
    after, _ = _gpu_bytes(rec)
    report = SleepReport(level, before, after, held, took)
    done = SleepDone(name, level, round(took, 3), before, after, report.freed_bytes, held, report.too_little)
    return output.emit(CommandResult("sleep", done, status=done.status), human=_render_sleep)


def _render_sleep(data: SleepDone) -> None:
    con = output.console()
    con.print(f"[cyan]z[/] {output.escape(data.name)} is asleep (level {data.level}) after "
              f"{output.human_duration(data.took_s)}: freed {output.human_bytes(data.freed_bytes)} "
              f"({output.human_bytes(data.before_bytes)} → {output.human_bytes(data.after_bytes)} in use)")
    if data.too_little:
        con.print(f"[yellow]![/] that is much less than the {output.human_bytes(data.server_bytes)} it held "
                  "(weights and KV cache; vLLM #32714, #47654): `vboot stop NAME` and `vboot serve` again frees all "
                  "of it")


@click.command()
@click.argument("name")
@output.json_option
def wake(name: str, as_json: bool) -> int:
    """Wake server NAME from vLLM's sleep mode and measure it (time to awake, GPU memory taken back)."""
    from bootstrap.probes import http

    rec = _server(name)
    key = _key(rec)
    before, _ = _gpu_bytes(rec)
    t0 = time.perf_counter()
    try:
        status, _body = http.post(rec.url, "/wake_up", key)
    except OSError as exc:
        raise StartupError(f"server {name!r} did not answer /wake_up: {exc}", hint=f"see `vboot logs {name}`") from None
    if status != 200 or not _wait_state(rec.url, key, False):
        raise StartupError(f"server {name!r} did not wake up (HTTP {status})", hint=f"see `vboot logs {name}`")
    took = time.perf_counter() - t0
    after, _ = _gpu_bytes(rec)
    woke = WakeDone(name, round(took, 3), before, after, max(0, after - before))
    return output.emit(CommandResult("wake", woke), human=lambda d: output.done(
        f"{output.escape(d.name)} is awake after {output.human_duration(d.took_s)} "
        f"({output.human_bytes(d.before_bytes)} → {output.human_bytes(d.after_bytes)} in use)"))
