"""`vboot serve`: run vLLM from a profile, supervised (`ps`, `stop` and `logs` live in their own modules).

`serve` only orchestrates: settings, pre-flight and model come from core, :func:`bootstrap.core.serve_plan.build_plan`
decides everything else, and :mod:`bootstrap.cli.supervise` runs the lifecycle (here, or in a detached supervisor)
while :class:`ServeView` renders its events."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import (
    EXIT_STARTUP,
    ConflictError,
    PortInUseError,
    StartupError,
    UsageError,
    VllmNotFoundError,
)
from bootstrap.core.lifecycle import (
    Event,
    Failed,
    GaveUp,
    GpuSettling,
    MemoryReleased,
    Outcome,
    ProbeFailed,
    Ready,
    Restarting,
    Slept,
    Starting,
    StartLockReleased,
    Stopping,
    Waiting,
    WaitingForStartLock,
    Woke,
)
from bootstrap.core.profiles import RESTART_MODES, Profile, ServeSettings
from bootstrap.core.reports.serve import ServeReady
from bootstrap.core.runs import RunRecord
from bootstrap.core.serve_plan import Observability
from bootstrap.core.sidecars import SidecarExited, SidecarStarted

if TYPE_CHECKING:

    from bootstrap.core.serve_plan import ServePlan

class PortOrAuto(click.ParamType):
    """A port number (1-65535) or ``auto``."""

    name = "PORT|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        from bootstrap.core.profiles import PORT_AUTO

        if isinstance(value, int) or value == PORT_AUTO:
            return value
        try:
            port = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a port number or 'auto'", param, ctx)
        if not 1 <= port <= 65535:
            self.fail(f"{port} is not in the range 1<=x<=65535", param, ctx)
        return port


# --- serve --------------------------------------------------------------------------------------------------

@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("profile_name", metavar="PROFILE")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- EXTRA_VLLM_ARGS]")
@click.option("--port", type=PortOrAuto(), help="HTTP port, or `auto` for a free one (default: the profile's, 8000).")
@click.option("--host", help="Bind address (default 127.0.0.1). Anything else needs --api-key or --insecure.")
@click.option("--api-key", help="Require this bearer key (default: the profile's [env] VLLM_API_KEY, then "
                                "$VLLM_API_KEY). vLLM gets it through its environment, never its command line.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option("--name", help="Name of this server for ps/stop/logs/top (default: the profile name).")
@click.option("--detach", "-d", is_flag=True,
              help="Return once healthy and leave the server under a detached vboot supervisor.")
@click.option("--restart", type=click.Choice(RESTART_MODES), default=None,
              help="Restart vLLM when it fails: no | on-failure | always (default: the profile's serve.restart, "
                   "else on-failure with --detach and no in the foreground).")
@click.option("--max-restarts", type=click.IntRange(0), default=5, show_default=True,
              help="Failures tolerated within --restart-window before vboot gives up (exit 8).")
@click.option("--restart-window", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds over which --max-restarts counts failures.")
@click.option("--probe-interval", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between liveness probes (a one-token generation); 0 turns them off.")
@click.option("--probe-timeout", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Seconds a liveness generation may take; two failures in a row mean a hung engine.")
@click.option("--prometheus", "with_prometheus", is_flag=True,
              help="Also run Prometheus (from PATH) on 127.0.0.1 with the generated config and rules.")
@click.option("--prometheus-port", type=click.IntRange(1, 65535), help="Port for --prometheus (default: a free one).")
@click.option("--vllm-python", metavar="PATH", help="Python whose vLLM to run (default: `vboot setup`'s, or this one).")
@click.option("--cache-dir", metavar="DIR", help="Model cache (default: the profile's, or MODELSCOPE_CACHE).")
@click.option("--device", type=click.Choice(("gpu", "cpu", "auto")),
              help="Serve on this device instead of the profile's serve.device (auto: the GPU when a usable GPU "
                   "and a CUDA build of vLLM are both there).")
@click.option("--idle-sleep", "idle_sleep", metavar="DURATION",
              help="Put the server to sleep (vLLM's sleep mode, level 1) after this long without requests, e.g. 10m; "
                   "`vboot wake NAME` wakes it. Needs serve.enable_sleep_mode and a GPU.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=900.0, show_default=True,
              help="Seconds to wait for /health before giving up on a start.")
@click.option("--no-smoke", is_flag=True, help="Skip the smoke chat completion once healthy.")
@click.option("--skip-preflight", is_flag=True, help="Start even if doctor's checks fail (not recommended).")
@output.json_option
def serve(profile_name: str, extra_args: tuple[str, ...], port: int | str | None, host: str | None,
          api_key: str | None, insecure: bool, name: str | None, detach: bool, restart: str | None, max_restarts: int,
          restart_window: float, probe_interval: float, probe_timeout: float, with_prometheus: bool,
          prometheus_port: int | None, vllm_python: str | None, cache_dir: str | None, device: str | None,
          idle_sleep: str | None, timeout_s: float, no_smoke: bool, skip_preflight: bool, as_json: bool) -> int:
    """Serve PROFILE with vLLM, supervised (`tiny` is the bundled CPU demo; `vboot profiles` lists them).

    Pre-flight (doctor's checks: port, leftovers, disk, VRAM, vLLM), the environment
    (PYTORCH_CUDA_ALLOC_CONF, VLLM_USE_MODELSCOPE, MODELSCOPE_CACHE and the profile's), the model (pulled through
    ModelScope when missing), a private run directory with the command, env, vllm.log and a Prometheus scrape
    config; then vLLM in its own process group, /health, a smoke request, and a summary. vboot then watches it:
    an exit (whatever its code), /health 503 or silent, a vanished EngineCore, or a hung engine (two failed
    one-token generations) is a failure, restarted per --restart. Ctrl-C or SIGTERM stops the whole tree
    (SIGTERM, then SIGKILL). Arguments after `--` go to vLLM unchanged, last: a --host, --port or --api-key there
    wins over vboot's own, as in vLLM, and vboot checks, waits on and records that one. vboot speaks plain HTTP
    to that host and port: --uds, --ssl-*, --grpc and --headless are refused.

    \b
    Examples:
      vboot serve tiny                  # CPU demo, bundled ~1 MB model
      vboot serve qwen --port 8001 -d   # detach once healthy; a vboot supervisor restarts it on failure
      vboot serve qwen --restart on-failure --max-restarts 3
      vboot serve qwen -- --max-num-seqs 64
      vboot serve qwen-0.5b --name small --port auto -d   # a second model beside the first (see `vboot route`)
      vboot serve qwen --idle-sleep 10m -d                 # sleep mode: frees the GPU when idle
    """
    from bootstrap.cli.wiring import doctor_collaborators
    from bootstrap.core import preflight, serving
    from bootstrap.core.lifecycle import ProbeSettings, RestartPolicy
    from bootstrap.core.paths import runs_dir
    from bootstrap.core.profiles import load_profile, local_model_dir, resolve_serve_settings
    from bootstrap.core.runs import find_run, live_runs, run_name_ok
    from bootstrap.core.serve_plan import build_plan, serve_inputs, write_run_dir

    t_start = time.monotonic()
    env = Environ()
    profile = load_profile(profile_name, env)
    settings = resolve_serve_settings(profile, env, host=host, port=port, api_key=api_key, extra_args=extra_args,
                                      cache_dir=cache_dir, vllm_python=vllm_python, device=device)
    # Refusals that need no probe come before the pre-flight's (NVML, the vLLM Python, a process scan).
    serving.check_exposure(settings.host, settings.api_key, insecure, settings.from_args.get("host"))
    serving.check_sleep_mode_exposure(settings.host, settings.vllm.enable_sleep_mode, settings.from_args.get("host"))
    idle_sleep_s = _idle_sleep_s(idle_sleep, settings)
    run_name = name or profile.name
    if not run_name_ok(run_name):
        raise UsageError(f"invalid --name {run_name!r}", hint="use letters, digits, '.', '_' or '-'")
    run_dir = runs_dir(env) / run_name
    for path, what in ((run_dir, "run directory"), (run_dir / "run.json", "run record")):
        if (path.exists() or path.is_symlink()) and (path.is_symlink() or not (path.is_dir() if what ==
                                                                             "run directory" else path.is_file())):
            kind = "directory" if what == "run directory" else "file"
            raise ConflictError(f"the {what} {path} is not a plain {kind}",
                                hint=f"move it out of the way (e.g. `mv {shlex.quote(str(path))} "
                                     f"{shlex.quote(str(path))}.bad`), or pass --name OTHER")
    same_name = find_run(env, run_name)
    if same_name is not None and _still_running(same_name):
        raise ConflictError(f"a server named {run_name!r} is already running (PID {same_name.pid}, {same_name.url})",
                            hint=f"`vboot stop {run_name}`, or pass --name OTHER")
    prometheus_exe = _prometheus_exe(settings, with_prometheus)
    mode = restart or profile.serve.restart or ("on-failure" if detach else "no")

    # Pre-flight: every failing check stops us here, within a second or two, before anything heavy.
    # The leftovers and port checks both ask for the live runs: load them once.
    collab = replace(doctor_collaborators(env), live_runs=functools.cache(lambda: live_runs(env)))
    facts, results = preflight.diagnose(settings, env, check_ids=() if skip_preflight else preflight.SERVE_CHECKS,
                                        collab=collab)
    if not skip_preflight:
        for r in preflight.verdict(facts, results, profile.name):
            output.info(f"[yellow]![/] {r.id}: {output.escape(r.summary)}"
                        + (f" [dim]({output.escape(r.hint)})[/]" if r.hint else ""))
    install = facts.install
    if install is None:
        raise VllmNotFoundError(f"no vLLM in {facts.python}", hint="run `vboot setup`, or pass --vllm-python")
    output.info(f"[dim]device[/] {output.escape(facts.device_decision.reason)}")
    if settings.port_auto:
        output.info(f"[dim]port[/] {settings.port} (auto: free on {output.escape(settings.host)})")
    if idle_sleep_s and facts.device != "gpu":
        raise UsageError("--idle-sleep needs vLLM's sleep mode, which its CPU build does not have",
                         hint="serve on a GPU, or drop --idle-sleep")

    # Model: a local directory to serve, so vLLM never contacts a hub.
    if profile.model.source == "local":
        model_dir = str(local_model_dir(profile))
    elif profile.model.source == "modelscope":
        from bootstrap.cli.pull import PullProgress
        from bootstrap.core.pull import ensure_model

        space = facts.disk_space  # the pre-flight's: where the model is and the free space, not looked up again
        with PullProgress() as bar:
            pulled = ensure_model(profile.model.id, profile.model.revision, settings.cache_dir, env,
                                  progress=bar.update, located=facts.model_cache,
                                  measured=(space.checked_path, space.free_bytes))
        model_dir = str(pulled.path)
    else:  # huggingface: vLLM downloads it itself
        model_dir = profile.model.id

    obs = _observability(profile, env, facts.device, prometheus_exe)
    plan_receivers = obs.receivers.describe() if obs.receivers else []
    plan = build_plan(
        settings, install=install, device=facts.device, device_reason=facts.device_decision.reason,
        env_plan=facts.env_plan, user_env=env.as_dict(), model_dir=model_dir, name=run_name, run_dir=run_dir,
        inputs=serve_inputs(profile_name, host=host, port=port if isinstance(port, int) else None,
                            cache_dir=cache_dir, vllm_python=vllm_python, device=device, extra_args=extra_args,
                            port_auto=settings.port_auto),
        gpus=_gpus(facts), idle_sleep_s=idle_sleep_s,
        prometheus_exe=prometheus_exe,
        prometheus_port=_prometheus_port(prometheus_port) if prometheus_exe else None,
        observability=obs,
        restart=RestartPolicy(mode=mode, max_restarts=max_restarts, window_s=restart_window),
        probes=ProbeSettings(liveness_interval_s=probe_interval, liveness_timeout_s=probe_timeout,
                             ready_timeout_s=timeout_s),
        detached=detach, smoke=not no_smoke)
    for w in plan.warnings:
        output.info(f"[yellow]![/] {output.escape(w)}")
    for var, value, origin in plan.shown_env_vars():
        output.info(f"[dim]env[/] {output.escape(var)}={output.escape(value)} [dim]({origin})[/]")
    write_run_dir(plan)
    output.info(f"[dim]run dir[/] {output.escape(str(plan.run_dir))}")
    output.info(f"[dim]command[/] {output.escape(shlex.join(plan.shown_argv))}")
    if plan.prometheus is not None:
        output.info(f"[dim]prometheus[/] {plan.prometheus.url} (config "
                    f"{output.escape(str(plan.run_dir))}/prometheus.yml)")
    if plan.alertmanager is not None:
        output.info(f"[dim]alertmanager[/] {plan.alertmanager.url} (receivers: "
                    f"{', '.join(plan_receivers) or 'none: alerts show in its UI only'})")
    if plan.gpu_exporter is not None:
        output.info(f"[dim]gpu metrics[/] {plan.gpu_exporter.url}/metrics ({plan.gpu_exporter.argv[0]})")
    view = ServeView(plan)
    if detach:
        return _serve_detached(plan, view, t_start)
    return _serve_foreground(plan, view, t_start)


def _idle_sleep_s(value: str | None, settings: ServeSettings) -> float:
    """--idle-sleep in seconds (0 without it); it needs the profile's sleep mode."""
    if value is None:
        return 0.0
    from bootstrap.core.units import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--idle-sleep: {exc}", hint="e.g. --idle-sleep 10m") from None
    if seconds <= 0:
        raise UsageError("--idle-sleep must be longer than 0", hint="e.g. --idle-sleep 10m")
    if not settings.vllm.enable_sleep_mode:
        raise UsageError(f"--idle-sleep needs vLLM's sleep mode, which profile {settings.profile.name} does not "
                         "turn on",
                         hint="set serve.enable_sleep_mode = true in the profile (or pass -- --enable-sleep-mode)")
    return seconds


def _gpus(facts: Any) -> list[str]:
    """The GPUs the server will run on (the first tensor-parallel-size visible ones), named for records and locks."""
    from bootstrap.core.colocate import gpu_key

    if facts.device != "gpu":
        return []
    tp = max(1, facts.settings.vllm.tensor_parallel_size)
    return [gpu_key(g.uuid, g.index) for g in facts.visible_gpus if g.error is None][:tp]


def _still_running(record: RunRecord) -> bool:
    """The run's server or its supervisor (between two restarts there is no server) is still alive."""
    from bootstrap.probes import procs

    return (record.pid > 0 and procs.pid_alive(record.pid, record.pid_create_time)) or (
        bool(record.supervisor_pid) and procs.pid_alive(record.supervisor_pid, record.supervisor_create_time))


def _prometheus_exe(settings: ServeSettings, wanted: bool) -> str | None:
    if not wanted:
        return None
    exe = shutil.which("prometheus")
    if exe is None:
        raise UsageError("--prometheus: no `prometheus` on PATH",
                         hint="install it (`sudo apt-get install -y prometheus`) or drop --prometheus; "
                              "the scrape config is written to the run directory either way")
    return exe


def _observability(profile: Profile, env: Environ, device: str, prometheus_exe: str | None) -> Observability:
    """Alertmanager (with the profile's [alerts]) and a GPU exporter (on a GPU), when Prometheus runs and the
    programs are installed; what is missing is said, not silently dropped."""
    from bootstrap.core import alerting, gpu_exporter
    from bootstrap.probes.procs import port_is_free

    if prometheus_exe is None:
        if profile.alerts is not None:
            output.info("[yellow]![/] the profile's [alerts] need --prometheus (Prometheus evaluates the rules and "
                        "Alertmanager delivers them); serving without alerting")
        return Observability()
    receivers = alerting.resolve_receivers(profile.alerts, env, profile.source_path or profile.name)
    am_exe = am_port = None
    if profile.alerts is not None:
        am_exe = next((found for prog in alerting.PROGRAMS if (found := shutil.which(prog))), None)
        if am_exe is None:
            raise UsageError("the profile's [alerts] need Alertmanager, which is not on PATH",
                             hint="install it (`sudo apt-get install -y prometheus-alertmanager`), or remove [alerts]")
        am_port = alerting.DEFAULT_PORT if port_is_free("127.0.0.1", alerting.DEFAULT_PORT) else _free_port()
    exporter = None
    if device == "gpu":
        beside = Path(sys.executable).with_name(gpu_exporter.NVITOP_PROGRAM)
        for program in gpu_exporter.PROGRAMS:
            exe = shutil.which(program) or (str(beside) if program == gpu_exporter.NVITOP_PROGRAM and beside.exists()
                                            else None)
            if exe:
                port = (gpu_exporter.DEFAULT_PORT if port_is_free("127.0.0.1", gpu_exporter.DEFAULT_PORT)
                        else _free_port())
                exporter = gpu_exporter.plan_gpu_exporter(program, exe, port, socket.gethostname())
                break
        else:
            output.info("[yellow]![/] no GPU exporter (dcgm-exporter, nvitop-exporter): GPU metrics stay out of "
                        "Prometheus; `pip install 'vboot[gpu]'` adds nvitop-exporter")
    return Observability(receivers, am_exe, am_port, exporter)


def _prometheus_port(port: int | None) -> int:
    from bootstrap.probes.procs import port_is_free

    if port is None:
        return 9090 if port_is_free("127.0.0.1", 9090) else _free_port()
    if not port_is_free("127.0.0.1", port):
        raise PortInUseError(f"--prometheus-port {port} is taken", hint="pass another --prometheus-port")
    return port


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve_foreground(plan: ServePlan, view: ServeView, t_start: float) -> int:
    """Supervise the server from this process until it is stopped (130/143) or vboot gives up (8); the exit code."""
    from bootstrap.cli.supervise import run_supervisor

    try:
        outcome = run_supervisor(plan, view.on_event, on_sidecar=view.on_sidecar, since=t_start)
    finally:
        view.close()
    if outcome.exit_code == EXIT_STARTUP and outcome.failure is not None:
        err = view.failure_error(outcome)
        if view.ready_doc_printed:
            # stdout already holds the ready document, and --json promises exactly one: the failure goes to stderr.
            output.print_error(err.message, err.hint)
            return err.exit_code
        raise err
    if outcome.exit_code not in (130, 143):
        return outcome.exit_code
    output.info(f"server {output.escape(plan.name)} stopped")
    return outcome.exit_code


def _serve_detached(plan: ServePlan, view: ServeView, t_start: float) -> int:
    """Start the detached supervisor, relay its events until the server is ready (exit 0) or failed (8)."""
    import json
    import subprocess

    from bootstrap.cli.supervise import SUPERVISOR_LOG
    from bootstrap.core.lifecycle import GaveUp, Ready, Stopped, event_from_json
    from bootstrap.core.serve_plan import plan_to_json

    read_fd, write_fd = os.pipe()
    log_fd = os.open(plan.run_dir / SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bootstrap", "supervise", "--status-fd", str(write_fd)],
            stdin=subprocess.PIPE, stdout=log_fd, stderr=log_fd, pass_fds=(write_fd,), start_new_session=True,
            env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")})
    finally:
        os.close(write_fd)
        os.close(log_fd)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(plan_to_json(plan)).encode())
    proc.stdin.close()

    stop = {"sig": 0}

    def forward(sig: int, _frame: object) -> None:  # Ctrl-C while it starts: the supervisor stops everything
        stop["sig"] = sig
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    final = None
    try:
        with os.fdopen(read_fd, "r", encoding="utf-8") as status:
            for line in status:
                try:
                    event = event_from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue
                view.on_event(event)
                if isinstance(event, (Ready, GaveUp, Stopped)):
                    final = event
                    break
    except BaseException:
        # Whatever broke here before the server was ready, it must not be left starting with nobody told: the
        # supervisor stops the tree on SIGTERM.
        if final is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=plan.probes.stop_grace_s + 30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        raise
    finally:
        view.close()
    if stop["sig"] or isinstance(final, Stopped):
        proc.wait(timeout=plan.probes.stop_grace_s + 30)
        for s, handler in previous.items():
            signal.signal(s, handler)
        output.info("stopped before the server was ready")
        return 128 + (stop["sig"] or signal.SIGTERM)
    for s, handler in previous.items():
        signal.signal(s, handler)
    if isinstance(final, Ready):
        return output.emit(view.ready_result(final, supervisor_pid=proc.pid), human=_render_ready)
    proc.wait(timeout=plan.probes.stop_grace_s + 30)
    if isinstance(final, GaveUp):
        from bootstrap.core.lifecycle import Outcome

        raise view.failure_error(Outcome(EXIT_STARTUP, final.failure, 0, False), gave_up=final)
    from bootstrap.core.serving import tail_lines

    tail = "\n".join(tail_lines(plan.run_dir / SUPERVISOR_LOG, 20))
    raise StartupError(f"the vboot supervisor exited ({proc.returncode}) before the server was ready",
                       hint=f"see {plan.run_dir / SUPERVISOR_LOG}", log=str(plan.run_dir / SUPERVISOR_LOG),
                       detail=tail)


class ServeView:
    """Renders the lifecycle's events for people (stderr) and the ready document (stdout with --json)."""

    def __init__(self, plan: ServePlan) -> None:
        self.plan = plan
        self.interactive = not output.STATE.json and sys.stderr.isatty()
        self.status: output.Status | None = None
        self.ready_doc_printed = False
        self.first_ready: Ready | None = None
        self.gave_up: GaveUp | None = None
        self._last_note = 0.0
        self._last_health_note = -1e9

    def _say(self, message: str) -> None:
        """A line for people; above the spinner while one runs (a second console would print into its line)."""
        if self.status is not None and not output.STATE.json:
            self.status.console.print(message)
        else:
            output.info(message)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def on_sidecar(self, event: SidecarStarted | SidecarExited) -> None:
        if isinstance(event, SidecarExited):
            what = (f"restarting it in {event.restart_in_s:g} s" if event.restart_in_s is not None
                    else "it keeps dying: vboot gave up on it")
            output.info(f"[yellow]![/] {event.name} exited ({event.code}); {what}")
        elif event.restarts:
            output.info(f"[dim]{event.name} started again (PID {event.pid})[/]")

    def on_event(self, event: Event) -> None:
        if isinstance(event, WaitingForStartLock):
            h = event.holder
            what = (f"waiting for the start lock of {output.escape(h.lock)}: held by {output.escape(h.name)} "
                    f"(supervisor PID {h.pid}) while its vLLM sizes its KV cache")
            if self.interactive:
                if self.status is None:
                    self.status = output.err_console().status(what)
                    self.status.start()
                self.status.update(f"{what} [bold]{event.waited_s:4.0f}s[/]")
            else:
                output.info(f"[yellow]…[/] {what} ({event.waited_s:.0f} s so far)")
            return
        if isinstance(event, StartLockReleased):
            tokens = f"KV cache: {event.kv_cache_tokens:,} tokens" if event.kv_cache_tokens else ""
            if event.waited_s >= 1.0:
                self._say(f"[dim]start lock released ({event.reason}) after waiting "
                          f"{output.human_duration(event.waited_s)} for it{'; ' + tokens if tokens else ''}[/]")
            elif tokens:
                self._say(f"[dim]{tokens}[/]")
            return
        if isinstance(event, Waiting):
            line = output.escape(event.last_line[:110])
            if self.interactive:
                if self.status is None:
                    self.status = output.err_console().status("starting vLLM…")
                    self.status.start()
                self.status.update(f"starting vLLM [bold]{event.elapsed_s:5.0f}s[/] [dim]{line}[/]")
            elif line and time.monotonic() - self._last_note >= 15:
                output.info(f"[dim]… {event.elapsed_s:.0f}s {line}[/]")
                self._last_note = time.monotonic()
            return
        self.close()
        if isinstance(event, Starting) and event.generation > 1:
            output.info(f"[bold]↻ starting vLLM again[/] (generation {event.generation}, PID {event.pid})")
        elif isinstance(event, Ready):
            if self.first_ready is None:
                self.first_ready = event
                if not self.plan.detached:
                    self._print_ready(self.ready_result(event))
            else:
                output.info(f"[bold green]✓ {output.escape(self.plan.name)} is ready again[/] in "
                            f"{output.human_duration(event.ready_s)} (generation {event.generation})")
        elif isinstance(event, ProbeFailed):
            if event.kind == "liveness":
                output.info(f"[yellow]![/] liveness probe failed ({event.consecutive}/"
                            f"{self.plan.probes.liveness_failures}): {output.escape(event.detail)}")
            elif time.monotonic() - self._last_health_note >= 10:
                self._last_health_note = time.monotonic()
                output.info(f"[yellow]![/] /health did not answer: {output.escape(event.detail)}")
        elif isinstance(event, Failed):
            f = event.failure
            why = f": {f.diagnosis.summary}" if f.diagnosis else ""
            output.info(f"[red]✗[/] {output.escape(f.summary + why)}")
        elif isinstance(event, MemoryReleased):
            r = event.release
            if r.released:
                output.info(f"[dim]GPU memory of the stopped engine released after {r.waited_s:.1f} s "
                            f"({output.human_bytes(r.held_bytes)})[/]")
            else:
                who = ("; holders: " + "; ".join(r.holders)) if r.holders else ""
                output.info(f"[yellow]![/] after {r.waited_s:.0f} s the GPU still uses "
                            f"{output.human_bytes(r.used_bytes - r.baseline_bytes)} more than before the stopped "
                            f"engine started; `vboot ps` / `nvidia-smi` show who holds it{output.escape(who)}")
        elif isinstance(event, GpuSettling):
            r = event.release
            if r.released:
                output.info(f"[dim]GPU memory in use settled after {r.waited_s:.1f} s[/]")
            else:
                who = "; ".join(r.holders) or "see `vboot ps` / `nvidia-smi`"
                output.info(f"[yellow]![/] GPU memory in use still changing after {r.waited_s:.0f} s "
                            f"({output.human_bytes(r.used_bytes)} in use): starting anyway; holders: "
                            f"{output.escape(who)}")
        elif isinstance(event, Slept):
            why = f"idle for {output.human_duration(event.idle_s)}" if event.reason == "idle" else "put to sleep"
            output.info(f"[cyan]z[/] {output.escape(self.plan.name)} is asleep ({why}); `vboot wake "
                        f"{output.escape(self.plan.name)}` wakes it")
        elif isinstance(event, Woke):
            output.info(f"[green]✓[/] {output.escape(self.plan.name)} is awake")
        elif isinstance(event, Restarting):
            output.info(f"[yellow]↻[/] restarting in {event.delay_s:g} s (restart {event.restarts}; at most "
                        f"{self.plan.restart.max_restarts} within {self.plan.restart.window_s:g} s)")
        elif isinstance(event, GaveUp):
            self.gave_up = event
        elif isinstance(event, Stopping):
            output.info(f"[dim]stopping {output.escape(self.plan.name)} ({signal.Signals(event.signal).name})…[/]")

    def ready_result(self, event: Ready, supervisor_pid: int | None = None) -> CommandResult[ServeReady]:
        plan = self.plan
        ready = ServeReady(
            name=plan.name, url=plan.url, pid=self._pid(), run_dir=str(plan.run_dir),
            served_model_name=plan.served_model_name, profile=plan.profile, model_path=plan.model_path,
            device=plan.device, device_reason=plan.device_reason, ready_s=round(event.ready_s, 3),
            metrics_url=f"{plan.url}/metrics", prometheus_url=plan.prometheus.url if plan.prometheus else None,
            prometheus_config=str(plan.run_dir / "prometheus.yml"), detached=plan.detached,
            supervisor_pid=supervisor_pid if plan.detached else os.getpid(), restart=plan.restart.mode,
            smoke=event.smoke, log=str(plan.log),
            env={name: value for name, value, _origin in plan.shown_env_vars()}, command=tuple(plan.shown_argv))
        return CommandResult("serve", ready, status=ready.status)

    def _pid(self) -> int:
        from bootstrap.core.runs import load_run

        record = load_run(self.plan.run_dir)
        return record.pid if record else 0

    def _print_ready(self, ready: CommandResult[ServeReady]) -> None:
        """The foreground's readiness report, printed without exiting (the server is supervised afterwards):
        with --json it is the one document on stdout, carrying the verdict (``warn`` when the smoke failed)."""
        if output.STATE.json:
            output.print_document(ready)
            self.ready_doc_printed = True
            return
        _render_ready(ready.data)
        if sys.stdin.isatty():
            output.info("[dim]Ctrl-C stops the server and everything it started.[/]")

    def failure_error(self, outcome: Outcome, gave_up: GaveUp | None = None) -> StartupError:
        """The error that says why vboot gave up (with the log's tail for people)."""
        from bootstrap.core.serving import tail_lines

        f = outcome.failure
        assert f is not None
        gave_up = gave_up or self.gave_up
        lines = tail_lines(self.plan.log, 15)
        if not output.STATE.json and lines:
            tail = "\n".join("    " + line for line in lines)
            output.info(f"[dim]last lines of {output.escape(str(self.plan.log))}:[/]\n[dim]{output.escape(tail)}[/]")
        what = f.summary
        if outcome.restarts:
            what = f"gave up on {self.plan.name} after {outcome.restarts} restart(s): {what}"
        elif gave_up is not None and gave_up.why.startswith(f"{outcome.restarts + 1} failures"):
            what = f"gave up on {self.plan.name}: {what}"
        context = dict(log=str(self.plan.log), exit_code=f.code, reason=f.reason,
                       why=gave_up.why if gave_up is not None else "")
        if f.diagnosis is not None:
            return StartupError(f"{what}: {f.diagnosis.summary}", hint=f.diagnosis.fix, diagnosis=f.diagnosis.code,
                                **context)
        return StartupError(what, hint=f"see the log: `vboot logs {self.plan.name}` ({self.plan.log})", **context)


def _render_ready(data: ServeReady) -> None:
    con = output.err_console() if not data.detached else output.console()
    esc = output.escape
    smoke = data.smoke
    con.print(f"[bold green]✓ {esc(data.name)} is ready[/] in {output.human_duration(data.ready_s)} "
              f"({data.device.upper()})")
    con.print(f"  url          {esc(data.url)}/v1   served model [bold]{esc(data.served_model_name)}[/]")
    if smoke:
        if smoke.ok:
            con.print(f"  smoke        {smoke.completion_tokens} tokens in {output.human_duration(smoke.latency_s)}"
                      f" ({smoke.tokens_per_s:.1f} tokens/s)")
        else:
            con.print(f"  [yellow]smoke        failed: {esc(smoke.error)}[/]")
    con.print(f"  metrics      {esc(data.metrics_url)}")
    if data.prometheus_url:
        con.print(f"  prometheus   {esc(data.prometheus_url)}")
    con.print(f"  scrape conf  {esc(data.prometheus_config)}")
    con.print(f"  restart      {data.restart}" + (f" (supervisor PID {data.supervisor_pid})" if data.detached else ""))
    con.print(f"  logs         vboot logs {esc(data.name)} -f")
    con.print(f"  try          {esc(curl_example(data.url, data.served_model_name))}")


def curl_example(url: str, served_model_name: str) -> str:
    """A curl command that asks the server for a chat completion, quoted for the shell: a served name with
    quotes, `$(...)` or backticks stays data when the line is pasted."""
    import json

    body = json.dumps({"model": served_model_name, "messages": [{"role": "user", "content": "Hello"}]})
    return shlex.join(["curl", f"{url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d", body])
