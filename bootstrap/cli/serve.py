"""`vboot serve`, `vboot ps`, `vboot stop`, `vboot logs`: run vLLM from a profile and manage what runs."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import (ConflictError, NotFoundError, PortInUseError, PreflightError, StartupError,
                                   UsageError, VllmNotFoundError)

if TYPE_CHECKING:
    from bootstrap.core.supervisor import GroupOps
    from bootstrap.probes.procs import VllmProcess

PREFLIGHT_CHECKS = ("nvidia.driver", "torch", "vllm", "disk", "vram", "leftovers", "port", "env.alloc_conf",
                    "env.modelscope", "env.cuda_visible_devices", "env.misc")


# --- serve --------------------------------------------------------------------------------------------------

@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("profile_name", metavar="PROFILE")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- EXTRA_VLLM_ARGS]")
@click.option("--port", type=click.IntRange(1, 65535), help="HTTP port (default: the profile's, 8000).")
@click.option("--host", help="Bind address (default 127.0.0.1). Anything else needs --api-key or --insecure.")
@click.option("--api-key", envvar="VLLM_API_KEY", help="Require this bearer key (passed to vLLM; env VLLM_API_KEY).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option("--name", help="Name of this server for ps/stop/logs/top (default: the profile name).")
@click.option("--detach", "-d", is_flag=True, help="Return once healthy and leave the server running.")
@click.option("--prometheus", "with_prometheus", is_flag=True,
              help="Also start Prometheus (from PATH) on 127.0.0.1 with the generated config and rules.")
@click.option("--prometheus-port", type=click.IntRange(1, 65535), help="Port for --prometheus (default: a free one).")
@click.option("--vllm-python", metavar="PATH", help="Python whose vLLM to run (default: `vboot setup`'s, or this one).")
@click.option("--cache-dir", metavar="DIR", help="Model cache (default: the profile's, or MODELSCOPE_CACHE).")
@click.option("--timeout", "timeout_s", type=float, default=900.0, show_default=True,
              help="Seconds to wait for /health before giving up.")
@click.option("--no-smoke", is_flag=True, help="Skip the smoke chat completion once healthy.")
@click.option("--skip-preflight", is_flag=True, help="Start even if doctor's checks fail (not recommended).")
@output.json_option
def serve(profile_name: str, extra_args: tuple[str, ...], port: int | None, host: str | None, api_key: str | None,
          insecure: bool, name: str | None, detach: bool, with_prometheus: bool, prometheus_port: int | None,
          vllm_python: str | None, cache_dir: str | None, timeout_s: float, no_smoke: bool, skip_preflight: bool,
          as_json: bool) -> None:
    """Serve PROFILE with vLLM, supervised (`tiny` is the bundled CPU demo; `vboot profiles` lists them).

    Pre-flight (doctor's checks: port, leftovers, disk, VRAM, vLLM), the environment
    (PYTORCH_CUDA_ALLOC_CONF, VLLM_USE_MODELSCOPE, MODELSCOPE_CACHE and the profile's), the model (pulled through
    ModelScope when missing), a run directory with the command, env, vllm.log and a Prometheus scrape config;
    then vLLM in its own process group, /health, a smoke request, and a summary. Ctrl-C or SIGTERM stops the
    whole tree (SIGTERM, then SIGKILL). Arguments after `--` go to vLLM unchanged, last: a --host, --port or
    --api-key there wins over vboot's own, as in vLLM, and vboot checks, waits on and records that one.
    vboot speaks plain HTTP to that host and port: --uds, --ssl-*, --grpc and --headless are refused.

    \b
    Examples:
      vboot serve tiny                  # CPU demo, bundled ~1 MB model
      vboot serve qwen --port 8001 -d   # detach once healthy
      vboot serve qwen -- --max-num-seqs 64
    """
    from bootstrap.cli.doctor import default_collaborators, diagnose
    from bootstrap.core import envplan, prom, serving
    from bootstrap.core.dashboard import render_dashboard
    from bootstrap.core.checks import Status
    from bootstrap.core.paths import runs_dir
    from bootstrap.core.profiles import load_profile, local_model_dir, resolve_serve_settings
    from bootstrap.core.runs import RUN_FILE, RunRecord, client_host, find_run, live_runs, run_name_ok, save_run
    from bootstrap.core.supervisor import Supervisor, spawn
    from bootstrap.core.vllm_cmd import build_command, redact
    from bootstrap.probes import procs

    t_start = time.monotonic()
    env = Environ()
    profile = load_profile(profile_name, env)
    settings = resolve_serve_settings(profile, env, host=host, port=port, api_key=api_key, extra_args=extra_args,
                                      cache_dir=cache_dir, vllm_python=vllm_python)
    # Refusals that need no probe come before the pre-flight's (NVML, the vLLM Python, a process scan).
    serving.check_exposure(settings.host, settings.api_key, insecure, settings.from_args.get("host"))
    run_name = name or profile.name
    if not run_name_ok(run_name):
        raise UsageError(f"invalid --name {run_name!r}", hint="use letters, digits, '.', '_' or '-'")
    same_name = find_run(env, run_name)
    if same_name is not None and procs.pid_alive(same_name.pid, same_name.pid_create_time):
        raise ConflictError(f"a server named {run_name!r} is already running (PID {same_name.pid}, {same_name.url})",
                            hint=f"`vboot stop {run_name}`, or pass --name OTHER")

    # Pre-flight: every failing check stops us here, within a second or two, before anything heavy.
    # The leftovers and port checks both ask for the live runs: load them once.
    collab = replace(default_collaborators(env), live_runs=functools.cache(lambda: live_runs(env)))
    facts, results = diagnose(settings, env, check_ids=() if skip_preflight else PREFLIGHT_CHECKS, collab=collab)
    if not skip_preflight:
        by_id = {r.id: r for r in results}
        port_check = by_id.get("port")
        if port_check is not None and port_check.status != Status.OK:
            raise PortInUseError(port_check.summary, hint=port_check.hint, port=settings.port)
        if by_id.get("vllm") and by_id["vllm"].status == Status.FAIL and facts.install is None:
            raise VllmNotFoundError(by_id["vllm"].summary, hint=by_id["vllm"].hint)
        failed = [r for r in results if r.status == Status.FAIL]
        if failed:
            first = failed[0]
            more = f" (+{len(failed) - 1} more: {', '.join(r.id for r in failed[1:])})" if len(failed) > 1 else ""
            raise PreflightError(f"pre-flight {first.id}: {first.summary}{more}",
                                 hint=(first.hint or "run `vboot doctor`") + "; `vboot doctor --profile "
                                 f"{profile.name}` shows all findings")
        for r in results:
            if r.status == Status.WARN:
                output.info(f"[yellow]![/] {r.id}: {r.summary}" + (f" [dim]({r.hint})[/]" if r.hint else ""))
    install = facts.install
    if install is None:
        raise VllmNotFoundError(f"no vLLM in {facts.python}", hint="run `vboot setup`, or pass --vllm-python")
    device = facts.device

    # Environment for the child, shown to the user.
    plan = envplan.plan_environment(profile, settings.cache_dir, env.as_dict(), settings.extra_args)
    for w in plan.warnings:
        output.info(f"[yellow]![/] {w}")
    for v in plan.vars:
        output.info(f"[dim]env[/] {v.name}={v.value} [dim]({v.origin})[/]")

    # Model: a local directory to serve, so vLLM never contacts a hub.
    if profile.model.source == "local":
        model_dir = str(local_model_dir(profile))
    elif profile.model.source == "modelscope":
        from bootstrap.cli.pull import PullProgress
        from bootstrap.core.pull import ensure_model

        with PullProgress() as bar:
            pulled = ensure_model(profile.model.id, profile.model.revision, settings.cache_dir, env,
                                  progress=bar.update)
        model_dir = str(pulled.path)
    else:  # huggingface: vLLM downloads it itself
        model_dir = profile.model.id

    argv = build_command(install, model_dir, settings, device)
    shown_argv = redact(argv)  # the command as stored and shown: the API key masked
    child_env = env.as_dict()
    child_env.update(plan.as_dict())
    child_env.setdefault("PYTHONUNBUFFERED", "1")

    run_dir = runs_dir(env) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    serving.rotate_log(run_dir)
    (run_dir / RUN_FILE).unlink(missing_ok=True)  # the old server's record; the new one is saved once vLLM runs
    target = f"{client_host(settings.host)}:{settings.port}"
    serving.write_run_files(
        run_dir, shown_argv, child_env, plan.as_dict(),
        prom.render_prometheus_config(run_name, target, api_key=settings.api_key,
                                      labels={"profile": profile.name}),
        prom.render_rules(), prom.RULES_FILE, dashboard_json=render_dashboard())

    log_fh = open(run_dir / "vllm.log", "ab")
    sup = Supervisor(argv, child_env, log_fh, pdeathsig=not detach, popen=spawn)
    # From here on, our signals stop the tree instead of killing us half-way.
    previous = {sig: signal.signal(sig, lambda s, _f: sup.request_stop(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    pid = sup.start()
    record = RunRecord(
        name=run_name, profile=profile.name, run_dir=str(run_dir), pid=pid, pid_create_time=procs.create_time(pid),
        pgid=pid, host=settings.host, port=settings.port, served_model_name=profile.model.served,
        model_id=profile.model.id, model_path=model_dir, started_at=time.time(),
        supervisor_pid=0 if detach else os.getpid(),
        supervisor_create_time=0.0 if detach else procs.create_time(os.getpid()), detached=detach,
        api_key_set=bool(settings.api_key), argv=tuple(shown_argv))
    save_run(record)
    (run_dir / "vllm.pid").write_text(f"{pid}\n")
    output.info(f"[dim]run dir[/] {run_dir}")
    output.info(f"[dim]command[/] {_esc(shlex.join(shown_argv))}")

    prom_sup = None
    try:
        if with_prometheus:
            prom_sup, prom_port = _start_prometheus(run_dir, prometheus_port, detach)
            record = replace(record, prometheus_pid=prom_sup.proc.pid,
                             prometheus_create_time=procs.create_time(prom_sup.proc.pid), prometheus_port=prom_port)
            save_run(record)
        ready_s = _wait_ready(sup, record, timeout_s, t_start)
    except BaseException:
        if prom_sup is not None:
            prom_sup.stop()
        raise
    if ready_s is None:  # stopped by a signal while starting
        if prom_sup is not None:
            prom_sup.stop()
        output.info("stopped before the server was ready")
        sys.exit(128 + int(sup.stop_requested or signal.SIGINT))

    smoke = None
    if not no_smoke:
        from bootstrap.probes.http import smoke_chat

        smoke = smoke_chat(record.url, profile.model.served, api_key=settings.api_key)
    data = {
        "name": run_name, "url": record.url, "pid": pid, "run_dir": str(run_dir),
        "served_model_name": profile.model.served, "profile": profile.name, "model_path": model_dir,
        "device": device, "ready_s": round(ready_s, 3), "metrics_url": f"{record.url}/metrics",
        "prometheus_url": f"http://127.0.0.1:{record.prometheus_port}" if record.prometheus_port else None,
        "prometheus_config": str(run_dir / "prometheus.yml"), "detached": detach,
        "smoke": asdict(smoke) if smoke else None, "log": str(run_dir / "vllm.log"),
        "env": plan.as_dict(), "command": shown_argv,
    }
    # A failed smoke request is a warning, detached or not: the server is up but did not answer a chat.
    ready = CommandResult("serve", data, status="warn" if smoke is not None and not smoke.ok else "ok", exit_code=0)
    if detach:
        output.emit(ready, human=_render_ready)
    # Foreground: report readiness now, then supervise until the end.
    _print_ready(ready)
    rc = sup.wait()
    if prom_sup is not None:
        prom_sup.stop()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if sup.stop_requested is None and rc != 0:
        err = _startup_failure(record, rc, during="while serving")
        if output.STATE.json:
            # stdout already holds the ready document, and --json promises exactly one: the failure goes to stderr.
            output.print_error(err.message, err.hint)
            sys.exit(err.exit_code)
        raise err
    output.info(f"server {run_name} stopped (exit {rc})")
    sys.exit(rc)


def _start_prometheus(run_dir: Path, port: int | None, detach: bool):
    from bootstrap.core.supervisor import Supervisor, spawn
    from bootstrap.probes.procs import port_is_free

    exe = shutil.which("prometheus")
    if exe is None:
        raise UsageError("--prometheus: no `prometheus` on PATH",
                         hint="install it (`sudo apt-get install -y prometheus`) or drop --prometheus; "
                              f"the config is ready at {run_dir / 'prometheus.yml'}")
    if port is None:
        port = 9090 if port_is_free("127.0.0.1", 9090) else _free_port()
    elif not port_is_free("127.0.0.1", port):
        raise PortInUseError(f"--prometheus-port {port} is taken", hint="pass another --prometheus-port")
    data = run_dir / "prometheus-data"
    data.mkdir(exist_ok=True)
    argv = [exe, f"--config.file={run_dir / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={data}", "--web.enable-lifecycle"]
    log = open(run_dir / "prometheus.log", "ab")
    sup = Supervisor(argv, dict(os.environ), log, pdeathsig=not detach, popen=spawn, grace_s=10.0)
    sup.start()
    output.info(f"[dim]prometheus[/] http://127.0.0.1:{port} (config {run_dir / 'prometheus.yml'})")
    return sup, port


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(sup, record, timeout_s: float, t_start: float) -> float | None:
    """Poll /health until 200. Returns seconds since `vboot serve` started, None if a signal stopped us."""
    from bootstrap.core.serving import last_log_line
    from bootstrap.probes.http import healthy

    deadline = time.monotonic() + timeout_s
    status = None
    interactive = not output.STATE.json and sys.stderr.isatty()
    if interactive:
        status = output.err_console().status("starting vLLM…")
        status.start()
    last_note = time.monotonic()
    try:
        while True:
            if sup.stop_requested is not None:
                sup.stop()
                return None
            rc = sup.proc.poll()
            if rc is not None:
                sup.stop()  # the rest of the tree (EngineCore) must not outlive a failed start
                raise _startup_failure(record, rc, during="during startup")
            if healthy(record.url, timeout=1.0):
                return time.monotonic() - t_start
            now = time.monotonic()
            if now > deadline:
                sup.stop()
                raise _startup_failure(record, None, during=f"within --timeout {timeout_s:g}s")
            line = last_log_line(record.log_path)
            elapsed = now - t_start
            if status is not None:
                from rich.markup import escape

                status.update(f"starting vLLM [bold]{elapsed:5.0f}s[/] [dim]{escape(line[-110:])}[/]")
            elif now - last_note >= 15 and not output.STATE.json:
                output.info(f"[dim]… {elapsed:.0f}s {line[-110:]}[/]")
                last_note = now
            time.sleep(0.5)
    finally:
        if status is not None:
            status.stop()


def _startup_failure(record, rc: int | None, during: str) -> StartupError:
    """The error that says why vLLM stopped or never became healthy (with the log's tail for people)."""
    from bootstrap.core.diagnosis import diagnose
    from bootstrap.core.serving import tail_lines

    lines = tail_lines(record.log_path, 400)
    diag = diagnose(lines)
    tail = "\n".join("    " + line for line in lines[-15:])
    if not output.STATE.json and tail:
        output.info(f"[dim]last lines of {record.log_path}:[/]\n[dim]{_esc(tail)}[/]")
    what = f"vLLM exited with code {rc} {during}" if rc is not None else f"vLLM did not become healthy {during}"
    if diag is not None:
        return StartupError(f"{what}: {diag.summary}", hint=diag.fix, diagnosis=diag.code, log=str(record.log_path),
                            exit_code=rc)
    return StartupError(what, hint=f"see the log: `vboot logs {record.name}` ({record.log_path})",
                        log=str(record.log_path), exit_code=rc)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_ready(ready: CommandResult) -> None:
    """The foreground's readiness report, printed without exiting (the server is supervised afterwards): with
    --json it is the one document on stdout, carrying the verdict (``warn`` when the smoke request failed)."""
    if output.STATE.json:
        import json

        from bootstrap.core.envelope import envelope

        sys.stdout.write(json.dumps(envelope(ready), indent=2) + "\n")
        sys.stdout.flush()
        return
    _render_ready(ready.data)
    output.info("[dim]Ctrl-C stops the server and everything it started.[/]")


def _render_ready(data: dict) -> None:
    con = output.err_console() if not data.get("detached") else output.console()
    smoke = data.get("smoke")
    con.print(f"[bold green]✓ {data['name']} is ready[/] in {output.human_duration(data['ready_s'])} "
              f"({data['device'].upper()})")
    con.print(f"  url          {data['url']}/v1   served model [bold]{data['served_model_name']}[/]")
    if smoke:
        if smoke["ok"]:
            con.print(f"  smoke        {smoke['completion_tokens']} tokens in {output.human_duration(smoke['latency_s'])}"
                      f" ({smoke['tokens_per_s']:.1f} tokens/s)")
        else:
            con.print(f"  [yellow]smoke        failed: {_esc(smoke['error'])}[/]")
    con.print(f"  metrics      {data['metrics_url']}")
    if data.get("prometheus_url"):
        con.print(f"  prometheus   {data['prometheus_url']}")
    con.print(f"  scrape conf  {data['prometheus_config']}")
    con.print(f"  logs         vboot logs {data['name']} -f")
    con.print(f"  try          curl {data['url']}/v1/chat/completions -H 'Content-Type: application/json' "
              f"-d '{{\"model\": \"{data['served_model_name']}\", \"messages\": [{{\"role\": \"user\", "
              f"\"content\": \"Hello\"}}]}}'")


# --- ps -----------------------------------------------------------------------------------------------------

def _gpu_bytes_by_pid() -> dict[int, int]:
    from bootstrap.probes import nvml

    return nvml.snapshot().gpu_bytes_by_pid()


def collect_ps(env: Environ) -> dict:
    """vboot's live servers, orphaned vLLM processes and vLLM servers vboot did not start.

    One process scan serves all three (a server's processes are those of its process group); NVML and the
    HTTP probe are used only when there is something to show.
    """
    from bootstrap.core.runs import live_runs
    from bootstrap.probes import procs

    found = procs.vllm_processes()
    runs = live_runs(env)
    managed_pgids = {r.pgid for r in runs}
    orphans = [p for p in found if p.orphan]
    unmanaged = [p for p in found if not p.orphan and p.role == "api_server" and p.pgid not in managed_pgids]
    if not (runs or orphans or unmanaged):
        return {"servers": [], "orphans": [], "unmanaged": []}
    gpu = _gpu_bytes_by_pid()
    pids_by_pgid: dict[int, set[int]] = {}
    for p in found:
        pids_by_pgid.setdefault(p.pgid, set()).add(p.pid)
    now = time.time()
    servers = []
    if runs:
        from bootstrap.probes.http import healthy

        for r in runs:
            servers.append({
                "name": r.name, "pid": r.pid, "port": r.port, "host": r.host, "url": r.url, "profile": r.profile,
                "model": r.model_id, "served_model_name": r.served_model_name,
                "uptime_s": round(now - r.started_at, 1), "healthy": healthy(r.url, timeout=1.0),
                "detached": r.detached, "run_dir": r.run_dir,
                "supervised": bool(r.supervisor_pid) and procs.pid_alive(r.supervisor_pid, r.supervisor_create_time),
                "gpu_bytes": sum(gpu.get(p, 0) for p in pids_by_pgid.get(r.pgid, set()) | {r.pid}),
                "prometheus_port": r.prometheus_port or None,
            })

    def row(p: VllmProcess) -> dict:
        return {"pid": p.pid, "name": p.name, "role": p.role, "ppid": p.ppid, "pgid": p.pgid, "rss_bytes": p.rss_bytes,
                "gpu_bytes": gpu.get(p.pid, 0), "age_s": round(now - p.create_time, 1)}

    return {"servers": servers, "orphans": [row(p) for p in orphans],
            "unmanaged": [row(p) | {"cmdline": p.cmdline} for p in unmanaged]}


@click.command()
@output.json_option
def ps(as_json: bool) -> None:
    """List vboot's servers (name, profile, PID, port, model, uptime, health) and orphaned vLLM processes
    (engine cores and workers whose API server is gone, with the memory they hold)."""
    data = collect_ps(Environ())
    status = "warn" if data["orphans"] else "ok"
    output.emit(CommandResult("ps", data, status=status), human=_render_ps)


def _render_ps(data: dict) -> None:
    from rich.table import Table

    con = output.console()
    if data["servers"]:
        t = Table(box=None, header_style="bold")
        for col in ("NAME", "PROFILE", "PID", "URL", "MODEL", "UPTIME", "HEALTH", "VRAM"):
            t.add_column(col)
        for s in data["servers"]:
            t.add_row(s["name"], s["profile"], str(s["pid"]), s["url"], s["served_model_name"],
                      output.human_duration(s["uptime_s"]),
                      "[green]healthy[/]" if s["healthy"] else "[yellow]starting/unhealthy[/]",
                      output.human_bytes(s["gpu_bytes"]) if s["gpu_bytes"] else "-")
        con.print(t)
    else:
        con.print("no vboot servers running")
    if data["unmanaged"]:
        con.print(f"\n[bold]vLLM servers not started by vboot[/]")
        for u in data["unmanaged"]:
            con.print(f"  PID {u['pid']}  {_esc(u['cmdline'][:120])}")
    if data["orphans"]:
        con.print(f"\n[bold red]orphaned vLLM processes[/] (their API server is gone)")
        t = Table(box=None, header_style="bold")
        for col in ("PID", "NAME", "RSS", "VRAM", "AGE"):
            t.add_column(col)
        for o in data["orphans"]:
            t.add_row(str(o["pid"]), o["name"], output.human_bytes(o["rss_bytes"]),
                      output.human_bytes(o["gpu_bytes"]) if o["gpu_bytes"] else "-", output.human_duration(o["age_s"]))
        con.print(t)
        con.print("[dim]fix:[/] vboot stop --orphans")


# --- stop ---------------------------------------------------------------------------------------------------

@click.command()
@click.argument("name", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Stop every vboot server.")
@click.option("--orphans", is_flag=True, help="Stop orphaned vLLM processes (engine cores whose server is gone).")
@click.option("--timeout", "grace_s", type=float, default=20.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
@output.json_option
def stop(name: str | None, stop_all: bool, orphans: bool, grace_s: float, as_json: bool) -> None:
    """Stop a server by NAME, all servers (--all), or orphaned vLLM processes (--orphans).

    SIGTERM to the server's whole process group, then SIGKILL after --timeout; returns once every process
    is gone (checked by PID).
    """
    from bootstrap.core.runs import find_run, live_runs
    from bootstrap.core.supervisor import GroupOps, stop_group
    from bootstrap.probes import procs

    if not name and not stop_all and not orphans:
        raise UsageError("say what to stop: NAME, --all or --orphans", hint="`vboot ps` lists servers and orphans")
    env = Environ()
    ops = GroupOps.real()
    stopped: list[int] = []
    survivors: list[int] = []
    escalated = False
    if stop_all:
        targets = live_runs(env)
    elif name:
        found = find_run(env, name)
        if found is None or not procs.pid_alive(found.pid, found.pid_create_time):
            known = ", ".join(r.name for r in live_runs(env)) or "none running"
            raise NotFoundError(f"no running server named {name!r} ({known})", hint="`vboot ps` lists them")
        targets = [found]
    else:
        targets = []
    for r in targets:
        members = procs.group_members(r.pgid)
        if r.supervisor_pid and procs.signal_pid(r.supervisor_pid, signal.SIGTERM, r.supervisor_create_time):
            # A foreground `vboot serve` watches this server: let it run its own shutdown (it exits 143),
            # and only then make sure of the group ourselves.
            deadline = time.monotonic() + grace_s + 15
            while time.monotonic() < deadline and (procs.group_members(r.pgid) or
                                                   procs.pid_alive(r.supervisor_pid, r.supervisor_create_time)):
                time.sleep(0.2)
        out = stop_group(r.pgid, ops, grace_s=grace_s)
        stopped.extend(members or [r.pid])
        survivors.extend(out.survivors)
        escalated |= out.escalated
        if r.prometheus_pid and procs.pid_alive(r.prometheus_pid, r.prometheus_create_time):
            pout = stop_group(r.prometheus_pid, ops, grace_s=10.0)
            stopped.extend(pout.signalled)
            survivors.extend(pout.survivors)
    if orphans:
        found = [p for p in procs.vllm_processes() if p.orphan]
        out = stop_group(0, orphan_ops(found), grace_s=grace_s)
        stopped.extend(out.signalled)
        survivors.extend(out.survivors)
        escalated |= out.escalated
    data = {"stopped": sorted(set(stopped)), "survivors": sorted(set(survivors)), "escalated": escalated,
            "servers": [r.name for r in targets]}
    if survivors:
        output.emit(CommandResult("stop", data, status="fail", exit_code=1, errors=({
            "code": "survivors", "message": f"processes still alive after SIGKILL: {sorted(set(survivors))}",
            "hint": "they may be stuck in the kernel (D state); check `ps -o pid,stat,args -p PID`"},)),
            human=_render_stop)
    output.emit(CommandResult("stop", data), human=_render_stop)


def orphan_ops(found: Sequence[VllmProcess], signal_pid: Callable[[int, int, float], bool] | None = None,
               pid_alive: Callable[[int, float], bool] | None = None) -> GroupOps:
    """stop_group's operations over the orphans ``found``, as if they were one group.

    Orphans keep their old process group, which may also hold unrelated processes of whoever launched vLLM
    by hand: each orphan is signalled alone, by PID and create time, and the members are those still alive.
    """
    from bootstrap.core.supervisor import GroupOps
    from bootstrap.probes import procs

    signal_pid = signal_pid or procs.signal_pid
    pid_alive = pid_alive or procs.pid_alive

    def signal_each(_pgid: int, sig: int) -> bool:
        return any([signal_pid(p.pid, sig, p.create_time) for p in found])

    def alive(_pgid: int) -> list[int]:
        return [p.pid for p in found if pid_alive(p.pid, p.create_time)]

    return GroupOps(signal_group=signal_each, members=alive)


def _render_stop(data: dict) -> None:
    con = output.console()
    if not data["stopped"]:
        con.print("nothing to stop")
        return
    what = ", ".join(data["servers"]) if data["servers"] else "orphans"
    con.print(f"stopped {what}: PIDs {', '.join(map(str, data['stopped']))}"
              + (" (SIGKILL was needed)" if data["escalated"] else ""))


# --- logs ---------------------------------------------------------------------------------------------------

@click.command()
@click.argument("name", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the server stops (or Ctrl-C).")
@click.option("--lines", "-n", type=click.IntRange(0), default=50, show_default=True, help="Lines to show first.")
@click.option("--prometheus", "which", flag_value="prometheus.log", help="Show Prometheus' log instead of vLLM's.")
def logs(name: str | None, follow: bool, lines: int, which: str | None) -> None:
    """Show the vLLM log of server NAME (the most recent run when NAME is omitted)."""
    from bootstrap.core.paths import runs_dir
    from bootstrap.core.runs import find_run, iter_runs
    from bootstrap.core.serving import tail_lines
    from bootstrap.probes import procs

    env = Environ()
    if name:
        run = find_run(env, name)
        if run is None:
            known = ", ".join(sorted({r.name for r in iter_runs(env)})) or "none yet"
            raise NotFoundError(f"no server named {name!r} (known: {known})", hint="`vboot ps` lists running servers")
    else:
        runs = iter_runs(env)
        if not runs:
            raise NotFoundError(f"no runs under {runs_dir(env)}", hint="start one with `vboot serve PROFILE`")
        run = runs[-1]
    path = Path(run.run_dir) / (which or "vllm.log")
    if not path.exists():
        raise NotFoundError(f"{path} does not exist", hint="the server may not have started yet")
    for line in tail_lines(path, lines, max_bytes=max(256 * 1024, lines * 400)):
        click.echo(line)
    if not follow:
        return
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        idle = 0.0
        while True:
            chunk = fh.readline()
            if chunk:
                click.echo(chunk.decode("utf-8", "replace").rstrip("\n"))
                idle = 0.0
                continue
            time.sleep(0.25)
            idle += 0.25
            if idle >= 2.0 and not procs.pid_alive(run.pid, run.pid_create_time):
                return
