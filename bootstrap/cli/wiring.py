"""Production wiring: the real probes behind core's collaborator bags (doctor's checks, the server lifecycle).
The one place where core's injected collaborators meet psutil, NVML, HTTP and subprocess."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from bootstrap.core.checks import Collaborators
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError


def doctor_collaborators(env: Environ) -> Collaborators:
    """The real probes for doctor's checks. Imported lazily, so `--list-checks` stays instant."""
    from bootstrap.core import runs
    from bootstrap.core.paths import locate_model
    from bootstrap.probes import nvml, procs, pyenv, system

    def scan(root: Path, depth: int):  # the du-style scanner, loaded only when a check measures a directory
        from bootstrap.core.disk import scan as du_scan

        return du_scan(root, depth=depth)

    def largest_dirs(root: Path, n: int) -> list[tuple[str, int]]:
        try:
            report = scan(root, depth=1)
        except (OSError, NotFoundError):
            return []
        rows = [(str(e.path), int(e.bytes)) for e in report.entries if str(e.path) != str(root)]
        return sorted(rows, key=lambda r: -r[1])[:n]

    def vllm_cudart(env) -> tuple[int, ...]:  # only a CUDA vLLM without a +cuXYZ label gets here
        from bootstrap.probes.elf import package_cudart

        links = package_cudart(pyenv.find(env, "vllm"), recursive=False)
        return tuple(sorted({m for ms in links.values() for m in ms}))

    def dir_bytes(path: Path) -> int:
        """`du -s -B1 PATH`: hard links counted once."""
        try:
            return scan(path, depth=0).total_bytes
        except (OSError, NotFoundError):
            return 0

    return Collaborators(
        nvml_snapshot=nvml.snapshot,
        python_env=pyenv.env_for_python,
        torch_build=pyenv.torch_build,
        requirement_pin=pyenv.requirement_pin,
        disk_free=system.disk_free,
        port_is_free=procs.port_is_free,
        port_holder=procs.port_holder,
        vllm_processes=procs.vllm_processes,
        system_info=system.system_info,
        process_name=procs.process_name,
        live_runs=lambda: runs.live_runs(env),
        largest_dirs=largest_dirs,
        dir_bytes=dir_bytes,
        is_dir=Path.is_dir,
        locate_model=locate_model,
        vllm_cudart=vllm_cudart,
    )


def spawn_logged(argv: Sequence[str], env: dict[str, str], log: Path, pdeathsig: bool):  # -> subprocess.Popen
    """Start ``argv`` as a session leader with stdout and stderr appended to ``log`` (private to the user)."""
    import os

    from bootstrap.core.supervisor import spawn

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "ab") as fh:
        return spawn(argv, env, fh, pdeathsig=pdeathsig)


def lifecycle_collaborators(device: str, tick=None, *, gpus: Sequence[str] = (), start_lock=None,
                            sleep_mode: bool = False):  # -> bootstrap.core.lifecycle.Collaborators
    """The real collaborators of a server's lifecycle: subprocess, HTTP on loopback, psutil, NVML on a GPU (only
    the GPUs in ``gpus``, colocate.gpu_key names, when given), the device's start lock, vLLM's sleep mode."""
    from concurrent.futures import ThreadPoolExecutor

    from bootstrap.core import lifecycle, serving
    from bootstrap.core.supervisor import GroupOps, SystemClock
    from bootstrap.probes import http, procs

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vboot-probe")

    def generate(url: str, model: str, key: str | None, timeout: float):
        return pool.submit(http.generate_once, url, model, key, timeout)

    def engines(pgid: int) -> list[lifecycle.ProcessRef]:
        return [lifecycle.ProcessRef(p.pid, p.create_time) for p in procs.vllm_processes()
                if p.pgid == pgid and p.role == "engine_core"]

    from bootstrap.core.colocate import gpu_key

    def mine(snap) -> list:
        return [g for g in snap.gpus if not gpus or gpu_key(g.uuid, g.index) in gpus] if snap.ok else []

    from bootstrap.probes import nvml

    # One NVML session for the supervisor's life (nvitop's _lazy_init): the settle wait after an exit reads
    # the GPU's memory every second, and initialising NVML for each read costs more than the read.
    gpu_session = nvml.NvmlSession() if device == "gpu" else None

    def nvml_used() -> int:
        assert gpu_session is not None
        return sum(g.memory_used_bytes or 0 for g in mine(gpu_session.snapshot(with_processes=False)))

    def holders() -> list[str]:
        assert gpu_session is not None
        out = []
        for g in mine(gpu_session.snapshot()):
            for p in sorted(g.processes, key=lambda p: -(p.used_bytes or 0))[:4]:
                size = f" {(p.used_bytes or 0) / 1024**3:.1f} GiB" if p.used_bytes else ""
                out.append(f"PID {p.pid} ({procs.process_name(p.pid) or '?'}) on GPU {g.index}{size}")
        return out

    gpu_used = nvml_used if device == "gpu" else None

    return lifecycle.Collaborators(
        spawn=spawn_logged, health=http.health, generate=generate,
        smoke=lambda url, model, key: http.smoke_chat(url, model, api_key=key),
        engines=engines, pid_alive=procs.pid_alive, ops=GroupOps.real(), clock=SystemClock(), wall=time.time,
        log_tail=lambda path, n: serving.tail_lines(path, n), rotate_log=serving.rotate_log, gpu_used=gpu_used,
        tick=tick, start_lock=start_lock, gpu_holders=holders if device == "gpu" else None,
        is_sleeping=http.is_sleeping if sleep_mode else None,
        request_counts=http.request_counts if sleep_mode else None,
        sleep=(lambda url, key, level: http.sleep_server(url, key, level)) if sleep_mode else None)
