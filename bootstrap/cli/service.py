"""`vboot service install|status|logs|uninstall`: a profile as a systemd service (Type=notify, restarts, boot)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, SystemdUnavailableError, UsageError
from bootstrap.core.reports.service import ServiceInstall, ServiceRemoved, ServiceRun, ServiceStatus


def _scope_option(f: Any) -> Any:
    f = click.option("--user", "scope", flag_value="user",
                     help="A user unit (systemctl --user); default when not root.")(f)
    return click.option("--system", "scope", flag_value="system",
                        help="A system unit (/etc/systemd/system); default as root.")(f)


def _is_system(scope: str | None) -> bool:
    return scope == "system" or (scope is None and os.geteuid() == 0)


def _systemctl(system: bool) -> list[str]:
    return ["systemctl"] if system else ["systemctl", "--user"]


def _systemd_running(system: bool) -> str | None:
    """None when systemd (the system manager, or this user's) answers here; else why not."""
    if system:
        return None if Path("/run/systemd/system").is_dir() else "systemd is not running on this machine " \
                                                                  "(no /run/systemd/system)"
    try:
        res = subprocess.run([*_systemctl(False), "show-environment"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run systemctl --user ({exc})"
    return None if res.returncode == 0 else f"no systemd user manager answers ({res.stderr.strip()[:120]})"


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _vboot_command() -> list[str]:
    """How the service starts this very vboot: its console script, else this Python with ``-m bootstrap``."""
    exe = Path(sys.argv[0])
    if exe.name == "vboot" and exe.exists():
        return [str(exe.absolute())]
    return [sys.executable, "-m", "bootstrap"]


@click.group()
def service() -> None:
    """Run a profile as a systemd service: started at boot, restarted on failure, ready only when it generates.

    \b
    Examples:
      vboot service install qwen --dry-run     # print the unit, change nothing
      sudo vboot service install qwen --now    # /etc/systemd/system/vboot-qwen.service, enabled and started
      vboot service status vboot-qwen          # systemd's view beside vboot's run record
      vboot service logs vboot-qwen -f
      vboot service uninstall vboot-qwen
    """


@service.command()
@click.argument("profile_name", metavar="PROFILE")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- EXTRA_VLLM_ARGS]")
@_scope_option
@click.option("--name", help="Unit name, also the server's name in `vboot ps` (default: vboot-PROFILE).")
@click.option("--port", type=click.IntRange(1, 65535), help="HTTP port (as `vboot serve --port`).")
@click.option("--host", help="Bind address (as `vboot serve --host`; a non-loopback host needs a key).")
@click.option("--prometheus", "with_prometheus", is_flag=True,
              help="Also run Prometheus (as `vboot serve --prometheus`).")
@click.option("--probe-interval", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between liveness generations; the watchdog period follows from it.")
@click.option("--probe-timeout", type=click.FloatRange(min=0.1), default=20.0, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=900.0, show_default=True,
              help="Seconds a cold start may take (TimeoutStartSec= adds two minutes).")
@click.option("--vllm-python", metavar="PATH", help="The Python whose vLLM to run (as `vboot serve`).")
@click.option("--cache-dir", metavar="DIR", help="Model cache (as `vboot serve --cache-dir`).")
@click.option("--now", is_flag=True, help="Also start it now (returns once the server answered a generation).")
@click.option("--dry-run", is_flag=True, help="Print the unit and what would run; write nothing.")
@output.json_option
def install(profile_name: str, extra_args: tuple[str, ...], scope: str | None, name: str | None, port: int | None,
            host: str | None, with_prometheus: bool, probe_interval: float, probe_timeout: float, timeout_s: float,
            vllm_python: str | None, cache_dir: str | None, now: bool, dry_run: bool, as_json: bool) -> int:
    """Write a systemd unit that runs `vboot serve PROFILE` (Type=notify, Restart=on-failure, a watchdog), and
    enable it. The unit carries the environment vboot needs (HOME, XDG dirs, the vLLM Python, model caches);
    secrets (VLLM_API_KEY, tokens) go into a 0600 EnvironmentFile, never into the unit."""
    from bootstrap.core import service as svc
    from bootstrap.core.profiles import load_profile, resolve_serve_settings
    from bootstrap.core.serving import check_exposure

    env = Environ()
    system = _is_system(scope)
    profile = load_profile(profile_name, env)  # a broken profile fails now, not at boot
    settings = resolve_serve_settings(profile, env, host=host, port=port, extra_args=extra_args, cache_dir=cache_dir,
                                      vllm_python=vllm_python)
    check_exposure(settings.host, settings.api_key, False, settings.from_args.get("host"))
    unit = name or f"vboot-{profile.name}"
    if not svc.unit_name_ok(unit):
        raise UsageError(f"{unit!r} is not a valid unit name", hint="pass --name with letters, digits, '_', '.', '-'")
    given = profile_name
    if given.endswith(".toml") or "/" in given:
        given = str(Path(given).expanduser().absolute())
    argv = [*_vboot_command(), "serve", given, "--name", unit, "--restart", "no",
            "--probe-interval", f"{probe_interval:g}", "--probe-timeout", f"{probe_timeout:g}", "--timeout",
            f"{timeout_s:g}"]
    for flag, value in (("--port", port), ("--host", host), ("--vllm-python", vllm_python),
                        ("--cache-dir", cache_dir)):
        if value is not None:
            argv += [flag, str(Path(str(value)).expanduser().absolute()) if flag in ("--vllm-python", "--cache-dir")
                     else str(value)]
    if with_prometheus:
        argv.append("--prometheus")
    if extra_args:
        argv += ["--", *extra_args]
    plain, secrets = svc.split_environment(env)
    if settings.api_key and "VLLM_API_KEY" not in secrets and settings.from_args.get("api_key"):
        raise UsageError("an --api-key among the vLLM arguments would be written into the unit's command line",
                         hint="put the key in the profile's [env] VLLM_API_KEY or export VLLM_API_KEY instead")
    user = None
    if system:
        user = os.environ.get("SUDO_USER") or None
    spec = svc.UnitSpec(
        name=unit, description=f"vLLM server {unit} (vboot profile {profile.name})", exec_start=tuple(argv),
        environment=plain, user=user, timeout_start_s=timeout_s + 120,
        timeout_stop_s=svc.STOP_GRACE_S + 40, watchdog_s=svc.watchdog_for(probe_interval, probe_timeout),
        wanted_by="multi-user.target" if system else "default.target")
    files = svc.plan_files(spec, system, env, secrets)
    ctl = _systemctl(system)
    commands = [shlex.join([*ctl, "daemon-reload"]), shlex.join([*ctl, "enable", *(["--now"] if now else []),
                                                                   f"{unit}.service"])]
    report = ServiceInstall(name=unit, scope="system" if system else "user", unit_path=str(files.unit_path),
                            unit=files.unit_text, env_file=str(files.env_path) if files.env_path else None,
                            secrets=tuple(sorted(secrets)), commands=tuple(commands), written=False, started=False)
    if dry_run:
        return output.emit(CommandResult("service", report), human=_render_dry_run)
    why = _systemd_running(system)
    if why is not None:
        raise SystemdUnavailableError(f"{why}: nothing written", hint=f"on a machine with systemd this runs: "
                                      f"write {files.unit_path}, then {' && '.join(commands)}")
    _write_files(files, system)
    report = replace(report, written=True)
    for cmd in ([*ctl, "daemon-reload"], [*ctl, "enable", f"{unit}.service"]):
        res = _run(cmd)
        if res.returncode != 0:
            raise SystemdUnavailableError(f"`{shlex.join(cmd)}` failed: {res.stderr.strip()[:300]}",
                                          hint=f"the unit is at {files.unit_path}; fix the error and re-run")
    if now:
        output.info(f"starting {unit}.service (returns once the server answered a generation)…")
        res = _run([*ctl, "start", f"{unit}.service"], timeout=spec.timeout_start_s + 30)
        if res.returncode != 0:
            raise SystemdUnavailableError(f"{unit}.service did not start: {res.stderr.strip()[:300]}",
                                          hint=f"`vboot service logs {unit}` shows why")
        report = replace(report, started=True)
    return output.emit(CommandResult("service", report), human=_render_installed)


def _write_files(files: Any, system: bool) -> None:
    """The secrets first (0600 from creation, in a 0700 directory), then the unit (0644: systemd reads it)."""
    from bootstrap.core.atomicwrite import write_atomic

    if files.env_path is not None:
        files.env_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(files.env_path, files.env_text, 0o600)
    files.unit_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(files.unit_path, files.unit_text, 0o644)


def _render_dry_run(data: ServiceInstall) -> None:
    con = output.console()
    con.print(f"[dim]# {output.escape(data.unit_path)}[/]")
    con.print(output.escape(data.unit), end="")
    if data.env_file:
        con.print(f"[dim]# {output.escape(data.env_file)} (0600): {', '.join(data.secrets)}[/]")
    for cmd in data.commands:
        con.print(f"[dim]$[/] {output.escape(cmd)}")


def _render_installed(data: ServiceInstall) -> None:
    con = output.console()
    con.print(f"[bold green]✓[/] {output.escape(data.unit_path)} written and enabled"
              + (" and started" if data.started else ""))
    if data.env_file:
        con.print(f"  secrets    {output.escape(data.env_file)} (0600): {', '.join(data.secrets)}")
    ctl = "systemctl" if data.scope == "system" else "systemctl --user"
    if not data.started:
        con.print(f"  start      {ctl} start {data.name}   (returns once the server answered a generation)")
    con.print(f"  status     vboot service status {data.name}")
    con.print(f"  logs       vboot service logs {data.name} -f")


def _show(name: str, system: bool) -> dict[str, str]:
    from bootstrap.core.service import SHOW_PROPERTIES, parse_show

    res = _run([*_systemctl(system), "show", f"{name}.service", *[f"--property={p}" for p in SHOW_PROPERTIES]])
    if res.returncode != 0:
        raise SystemdUnavailableError(f"systemctl show {name}.service failed: {res.stderr.strip()[:200]}",
                                      hint="is systemd running here? (`systemctl is-system-running`)")
    props = parse_show(res.stdout)
    if props.get("LoadState") == "not-found":
        raise NotFoundError(f"no unit {name}.service", hint="`vboot service install PROFILE` writes one")
    return props


def _run_record(props: dict[str, str], name: str) -> Any:
    """vboot's record of the server the unit runs, found through the unit's own environment."""
    from bootstrap.core.paths import runs_dir
    from bootstrap.core.runs import find_run
    from bootstrap.core.service import environment_from_show

    unit_env = environment_from_show(props.get("Environment", ""))
    view = Environ(unit_env) if ("HOME" in unit_env or "XDG_STATE_HOME" in unit_env) else Environ()
    return find_run(view, name, root=runs_dir(view))


@service.command()
@click.argument("name")
@_scope_option
@output.json_option
def status(name: str, scope: str | None, as_json: bool) -> int:
    """systemd's view of unit NAME (ActiveState, NRestarts, ExecMainStatus) beside vboot's run record."""
    from bootstrap.probes.http import healthy

    system = _is_system(scope)
    why = _systemd_running(system)
    if why is not None:
        raise SystemdUnavailableError(why, hint="`vboot ps` shows servers started without systemd")
    props = _show(name, system)
    record = _run_record(props, name)
    run: ServiceRun | None = None
    if record is not None:
        run = ServiceRun(state=record.state, pid=record.pid, url=record.url, generation=record.generation,
                         restarts=record.restarts, last_exit=record.last_exit, run_dir=record.run_dir,
                         healthy=healthy(record.url, timeout=1.0))
    systemd = {k: props.get(k, "") for k in ("ActiveState", "SubState", "NRestarts", "ExecMainStatus", "MainPID",
                                              "StatusText", "Result", "UnitFileState", "FragmentPath")}
    report = ServiceStatus(name, systemd, run)
    return output.emit(CommandResult("service", report, status=report.status), human=_render_status)


def _render_status(data: ServiceStatus) -> None:
    con = output.console()
    s = data.systemd
    colour = "green" if s["ActiveState"] == "active" else "yellow"
    con.print(f"[bold]{output.escape(data.name)}.service[/]  [{colour}]{s['ActiveState']} ({s['SubState']})[/]  "
              f"restarts by systemd: {s['NRestarts'] or 0}  last exit status: {s['ExecMainStatus'] or '-'}  "
              f"main PID: {s['MainPID'] or '-'}")
    if s.get("StatusText"):
        con.print(f"  status     {output.escape(s['StatusText'])}")
    run = data.run
    if run:
        last = run.last_exit
        con.print(f"  server     {run.state}, {'healthy' if run.healthy else 'not healthy'}, "
                  f"{output.escape(run.url)} (PID {run.pid}, generation {run.generation})")
        if last:
            con.print(f"  last exit  {output.escape(last.summary)}")
    else:
        con.print("  server     no run record yet (it has not started)")


@service.command()
@click.argument("name")
@_scope_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--lines", "-n", type=click.IntRange(0), default=50, show_default=True)
@click.option("--vllm", "vllm_log", is_flag=True, help="vLLM's own log (vllm.log) instead of the journal.")
def logs(name: str, scope: str | None, follow: bool, lines: int, vllm_log: bool) -> None:
    """The unit's journal (vboot's events: ready, failures, restarts), or with --vllm the server's vllm.log."""
    system = _is_system(scope)
    if vllm_log:
        props = _show(name, system)
        record = _run_record(props, name)
        if record is None:
            raise NotFoundError(f"{name} has no run record yet", hint=f"`vboot service status {name}`")
        cmd = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(record.log_path)]
    else:
        cmd = ["journalctl", *([] if system else ["--user"]), "-u", f"{name}.service", "-n", str(lines),
               "--no-pager", *(["-f"] if follow else [])]
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        raise SystemdUnavailableError(f"cannot run {cmd[0]}: {exc}",
                                      hint="`vboot logs NAME` reads vLLM's log") from None


@service.command()
@click.argument("name")
@_scope_option
@output.json_option
def uninstall(name: str, scope: str | None, as_json: bool) -> int:
    """Stop and disable unit NAME and remove its files (only a unit vboot wrote)."""
    from bootstrap.core import service as svc

    env = Environ()
    system = _is_system(scope)
    path = svc.unit_dir(system, env) / f"{name}.service"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"no unit file {path}",
                            hint="`vboot service status NAME`; pass --user or --system") from None
    if svc.MARKER not in text:
        raise UsageError(f"{path} was not written by vboot: left alone", hint="remove it yourself if you mean to")
    why = _systemd_running(system)
    ctl = _systemctl(system)
    if why is None:
        _run([*ctl, "disable", "--now", f"{name}.service"], timeout=svc.STOP_GRACE_S + 90)
    removed = [str(path)]
    path.unlink()
    secrets = svc.secrets_path(system, env, name)
    if secrets.exists():
        secrets.unlink()
        removed.append(str(secrets))
    if why is None:
        _run([*ctl, "daemon-reload"])
    return output.emit(CommandResult("service", ServiceRemoved(name, tuple(removed), stopped=why is None)),
                       human=lambda d: output.console().print(f"removed {', '.join(map(output.escape, d.removed))}"))

