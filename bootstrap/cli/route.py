"""`vboot route`: one OpenAI endpoint in front of vboot's running servers (see :mod:`bootstrap.core.route`).

Three processes, supervised like a server's: the router (vllm-router, restarted when it dies), vboot's HTTP front
(`python -m bootstrap route-front`, the endpoint clients use) and the supervisor, which keeps the router's workers
equal to the running servers (once a second) and keeps the run record (`vboot ps`, `stop`, `logs` know it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, MissingDependencyError, StartupError, UsageError
from bootstrap.core.reports.serve import RouteReady
from bootstrap.core.route import RoutePlan

SUPERVISOR_LOG = "supervisor.log"
ROUTER_LOG = "router.log"
FRONT_LOG = "front.log"


def find_router_python(env: Environ, given: str | None) -> str | None:
    """The Python whose ``vllm_router`` runs the router: --router-python, $VBOOT_ROUTER_PYTHON, the interpreter
    of a `vllm-router` on PATH (its script's first line), or vboot's own when it has the package."""
    import importlib.util

    for cand in (given, env.get("VBOOT_ROUTER_PYTHON")):
        if cand:
            return cand
    script = shutil.which("vllm-router")
    if script:
        try:
            first = Path(script).read_text(encoding="utf-8", errors="replace").splitlines()[0]
        except (OSError, IndexError):
            first = ""
        if first.startswith("#!") and "python" in first:
            return first[2:].strip().split()[0]
    if importlib.util.find_spec("vllm_router") is not None:
        return sys.executable
    return None


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME ...]")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port of the endpoint (default 8080, "
              "else a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address. Anything but loopback needs --api-key (the servers must have the same key).")
@click.option("--api-key", help="Require this bearer key on /v1 (default: $VLLM_API_KEY). Routed servers must "
                                "have been started with the same key.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option("--name", "run_name", default="route", show_default=True, help="Name of the route for ps/stop/logs.")
@click.option("--detach", "-d", is_flag=True, help="Return once the endpoint answers; a detached supervisor keeps it.")
@click.option("--router-python", metavar="PATH", help="Python with vllm-router installed (default: see README).")
@output.json_option
def route(names: tuple[str, ...], port: int | None, host: str, api_key: str | None, insecure: bool, run_name: str,
          detach: bool, router_python: str | None, as_json: bool) -> int:
    """One OpenAI-compatible endpoint in front of vboot's running servers (or those NAMEd), routing each request
    by its `model`; `/v1/models` lists every served name. Servers started or stopped later are added or dropped
    within about a second, without restarting the endpoint.

    \b
    Examples:
      vboot route -d                      # every running server, on http://127.0.0.1:8080/v1
      vboot route chat small --port 9000  # only these two
    """
    from bootstrap.core import serving
    from bootstrap.core.paths import runs_dir
    from bootstrap.core.runs import find_run, run_name_ok
    from bootstrap.probes.procs import free_port, pid_alive, port_is_free

    env = Environ()
    key = api_key or env.get("VLLM_API_KEY") or None
    serving.check_exposure(host, key, insecure)
    if not run_name_ok(run_name):
        raise UsageError(f"invalid --name {run_name!r}", hint="use letters, digits, '.', '_' or '-'")
    old = find_run(env, run_name)
    if old is not None and ((old.pid and pid_alive(old.pid, old.pid_create_time)) or
                            (old.supervisor_pid and pid_alive(old.supervisor_pid, old.supervisor_create_time))):
        raise ConflictError(f"{'a route' if old.kind == 'route' else 'a server'} named {run_name!r} is already "
                            f"running ({old.url})", hint=f"`vboot stop {run_name}`, or pass --name OTHER")
    py = find_router_python(env, router_python)
    if py is None:
        raise MissingDependencyError("vllm-router (vllm-project's router) is not installed",
                                     hint="`pip install 'vboot[route]'` (or `pip install vllm-router`), or pass "
                                          "--router-python PATH")
    if port is None:
        port = 8080 if port_is_free(host, 8080) else free_port(host)
    elif not port_is_free(host, port):
        from bootstrap.core.errors import PortInUseError

        raise PortInUseError(f"port {port} on {host} is taken", hint="pass another --port", port=port)
    plan = RoutePlan(name=run_name, run_dir=runs_dir(env) / run_name, host=host, port=port,
                     router_port=free_port("127.0.0.1"), router_metrics_port=free_port("127.0.0.1"),
                     router_python=py, names=tuple(names), api_key=key, detached=detach)
    plan.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(plan.run_dir, 0o700)
    output.info(f"[dim]router[/] {output.escape(py)} (vllm-router, multi-model mode) on {plan.router_url}")
    if detach:
        return _route_detached(plan)
    return _route_foreground(plan)


def _ready_result(plan: RoutePlan, supervisor_pid: int) -> CommandResult[RouteReady]:
    from bootstrap.core.runs import find_run

    rec = find_run(Environ(), plan.name)
    ready = RouteReady(name=plan.name, url=plan.url, run_dir=str(plan.run_dir), detached=plan.detached,
                       supervisor_pid=supervisor_pid, pid=rec.pid if rec else 0,
                       routes=dict(rec.routes) if rec else {}, router_url=plan.router_url,
                       log=str(plan.run_dir / ROUTER_LOG))
    return CommandResult("route", ready)


def _render_ready(data: RouteReady) -> None:
    con = output.err_console() if not data.detached else output.console()
    con.print(f"[bold green]✓ route {output.escape(data.name)} is ready[/]: {output.escape(data.url)}/v1")
    for model, url in sorted(data.routes.items()):
        con.print(f"  {output.escape(model):24} → {output.escape(url)}")
    if not data.routes:
        con.print("  (no server running yet: servers started later are added within a second)")
    con.print(f"  logs         vboot logs {output.escape(data.name)} -f")


def _route_foreground(plan: RoutePlan) -> int:
    def ready() -> None:  # the ready document, printed without leaving: the route is supervised from here on
        res = _ready_result(plan, os.getpid())
        if output.STATE.json:
            from bootstrap.core.envelope import envelope

            sys.stdout.write(json.dumps(envelope(res), indent=2) + "\n")
            sys.stdout.flush()
        else:
            _render_ready(res.data)

    code = run_route(plan, on_ready=ready, on_note=lambda msg: output.info(output.escape(msg)))
    output.info(f"route {output.escape(plan.name)} stopped")
    return code


def _route_detached(plan: RoutePlan) -> int:
    import subprocess

    from bootstrap.core.route import plan_to_json
    from bootstrap.core.runs import find_run

    log_fd = os.open(plan.run_dir / SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "bootstrap", "supervise-route"], stdin=subprocess.PIPE,
                                stdout=log_fd, stderr=log_fd, start_new_session=True,
                                env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET",)})
    finally:
        os.close(log_fd)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(plan_to_json(plan)).encode())
    proc.stdin.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rec = find_run(Environ(), plan.name)
        if rec is not None and rec.kind == "route" and rec.state == "ready" and rec.supervisor_pid == proc.pid:
            return output.emit(_ready_result(plan, proc.pid), human=_render_ready)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.terminate()
    from bootstrap.core.serving import tail_lines

    raise StartupError(f"route {plan.name!r} did not become ready", hint=f"see {plan.run_dir / SUPERVISOR_LOG} and "
                       f"{plan.run_dir / ROUTER_LOG}", log=str(plan.run_dir / ROUTER_LOG),
                       detail="\n".join(tail_lines(plan.run_dir / ROUTER_LOG, 20)))


# --- the supervisor -------------------------------------------------------------------------------------------

def run_route(plan: RoutePlan, on_ready: Any = lambda: None, on_note: Any = lambda _m: None) -> int:
    """Run the router and the front and keep the router's workers equal to the running servers until SIGINT or
    SIGTERM (exit 130/143). The router and the front are restarted when they die (with backoff)."""
    from dataclasses import replace

    from bootstrap.cli.wiring import spawn_logged
    from bootstrap.core.route import desired_routes, reconcile
    from bootstrap.core.runs import RunRecord, live_runs, save_run
    from bootstrap.core.serve_plan import Sidecar
    from bootstrap.core.sidecars import SidecarExited, SidecarRunner, SidecarStarted
    from bootstrap.core.supervisor import GroupOps, SystemClock
    from bootstrap.probes import http, procs

    env = Environ()
    me = os.getpid()
    stop = {"sig": 0}
    previous = {s: signal.signal(s, lambda sig, _f: stop.update(sig=sig)) for s in (signal.SIGINT, signal.SIGTERM)}
    child_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    from bootstrap.core.route import FRONT_KEY_VAR, WORKER_KEY_VAR

    child_env.pop(WORKER_KEY_VAR, None)
    child_env.pop(FRONT_KEY_VAR, None)
    if plan.api_key:
        child_env[WORKER_KEY_VAR] = plan.api_key
        child_env[FRONT_KEY_VAR] = plan.api_key
    front = plan.front_argv(sys.executable)
    state: dict[str, Any] = {"record": None, "front": (0, 0.0), "router": {}}

    def write(**changes: Any) -> None:
        r = state["record"]
        pid, ct = state["front"]
        if r is None:
            if not pid:
                return
            r = RunRecord(name=plan.name, profile="", run_dir=str(plan.run_dir), pid=pid, pid_create_time=ct,
                          pgid=pid, host=plan.host, port=plan.port, served_model_name="", model_id="", model_path="",
                          started_at=time.time(), supervisor_pid=me, supervisor_create_time=procs.create_time(me),
                          detached=plan.detached, api_key_set=bool(plan.api_key), argv=tuple(front), state="starting",
                          kind="route", restart_mode="always")
        r = replace(r, pid=pid or r.pid, pid_create_time=ct or r.pid_create_time, pgid=pid or r.pgid,
                    sidecars=dict(state["router"]), **changes)
        state["record"] = r
        save_run(r)

    def on_sidecar(e: SidecarStarted | SidecarExited) -> None:
        if isinstance(e, SidecarStarted):
            if e.name == "front":
                state["front"] = (e.pid, procs.create_time(e.pid))
            else:
                state["router"] = {"router": {"pid": e.pid, "create_time": procs.create_time(e.pid),
                                              "port": e.port}}
            write()
        else:
            on_note(f"{e.name} exited ({e.code}); " + (f"restarting it in {e.restart_in_s:g} s"
                                                       if e.restart_in_s is not None else "vboot gave up on it"))
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {type(e).__name__} {e}", flush=True)

    specs = [Sidecar("router", plan.router_argv(), plan.router_port, ROUTER_LOG),
             Sidecar("front", front, plan.port, FRONT_LOG)]
    runner = SidecarRunner(specs, plan.run_dir, child_env, spawn_logged, GroupOps.real(), SystemClock(),
                           on_event=on_sidecar)

    def server_key(r: RunRecord) -> str | None:
        if not r.api_key_set:
            return None
        try:
            return (Path(r.run_dir) / "prometheus.key").read_text().strip() or None
        except OSError:
            return None

    ready = False
    skipped_said: set[tuple[str, str]] = set()
    try:
        runner.start_all()
        while not stop["sig"]:
            runner.check()
            actual = http.router_workers(plan.router_url)
            if actual is not None:
                desired, skipped = desired_routes(live_runs(env), plan.names, plan.api_key, server_key)
                for s in skipped:
                    if (s.name, s.why) not in skipped_said:
                        skipped_said.add((s.name, s.why))
                        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} Skipped {s.name}: {s.why}", flush=True)
                change = reconcile(desired, actual)
                for url in change.remove:
                    http.router_remove_worker(plan.router_url, url)
                for url, model in change.add:
                    http.router_add_worker(plan.router_url, url, model)
                if change.add or change.remove or not ready:
                    now_routes = {m: u for u, m in sorted(desired.items())}
                    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} Routes {json.dumps(now_routes)}", flush=True)
                    front_ok = http.health(plan.url, 2.0).status is not None
                    if front_ok:
                        write(routes=now_routes, state="ready")
                        if not ready:
                            ready = True
                            on_ready()
            time.sleep(0.5 if not ready else 1.0)
        return 128 + stop["sig"]
    finally:
        runner.stop_all()
        if state["record"] is not None:
            write(state="stopped")
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@click.command(hidden=True)
def supervise_route() -> int:
    """(internal) The detached supervisor of `vboot route --detach`: reads its plan from stdin."""
    from bootstrap.core.route import plan_from_json

    plan = plan_from_json(json.loads(sys.stdin.read()))
    sys.stdin.close()
    return run_route(plan, on_note=lambda m: print(m, flush=True))


# --- the front ------------------------------------------------------------------------------------------------

@click.command(hidden=True)
@click.option("--listen", required=True, help="HOST:PORT to serve on.")
@click.option("--upstream", required=True, help="HOST:PORT of the router.")
def route_front(listen: str, upstream: str) -> None:
    """(internal) The route's HTTP front: /v1/* and /health to the router, /v1/models in the OpenAI shape."""
    host, _, port = listen.rpartition(":")
    up_host, _, up_port = upstream.rpartition(":")
    key = os.environ.get("VBOOT_ROUTE_KEY") or None
    try:
        asyncio.run(_serve_front(host.strip("[]"), int(port), up_host, int(up_port), key))
    except KeyboardInterrupt:
        pass


async def _serve_front(host: str, port: int, up_host: str, up_port: int, key: str | None) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _handle(reader, writer, up_host, up_port, key)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, host, port, limit=1 << 20)
    print(f"route front on {host}:{port} -> {up_host}:{up_port}", flush=True)
    async with server:
        await stop


def _reply(writer: asyncio.StreamWriter, status: int, reason: str, doc: Any) -> None:
    body = json.dumps(doc).encode()
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + body)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_host: str, up_port: int,
                  key: str | None) -> None:
    from bootstrap.core.route import allowed_path, authorized, openai_models

    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    path = target.split("?", 1)[0]
    headers = [ln.split(":", 1) for ln in lines[1:] if ":" in ln]
    auth = next((v.strip() for k, v in headers if k.strip().lower() == "authorization"), None)
    if not allowed_path(path):
        _reply(writer, 404, "Not Found", {"error": {"message": f"vboot route serves /v1/* and /health, not {path}",
                                                    "type": "NotFoundError"}})
        return await writer.drain()
    if not authorized(path, auth, key):
        _reply(writer, 401, "Unauthorized", {"error": "Unauthorized"})
        return await writer.drain()
    up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
    try:
        kept = [f"{k}:{v}" for k, v in headers
                if k.strip().lower() not in ("connection", "keep-alive", "proxy-connection")]
        if method == "GET" and path.rstrip("/") == "/v1/models":
            # The router's list, in the OpenAI shape (vllm-router <= 0.1.17 answers {"models": [...]}).
            up_writer.write(b"GET /v1/models HTTP/1.1\r\n" + "\r\n".join(
                [k for k in kept if not k.lower().startswith("accept-encoding")] + ["Connection: close", "", ""]
            ).encode())
            await up_writer.drain()
            raw = await up_reader.read()
            status, body = _parse_response(raw)
            _reply(writer, 200, "OK", openai_models(status, body))
            return await writer.drain()
        up_writer.write(f"{lines[0]}\r\n".encode() + "\r\n".join(kept + ["Connection: close", "", ""]).encode())
        await up_writer.drain()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()

        upload = asyncio.create_task(pump(reader, up_writer))
        try:
            await pump(up_reader, writer)
        finally:
            upload.cancel()
    finally:
        up_writer.close()


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 502, b""
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body
