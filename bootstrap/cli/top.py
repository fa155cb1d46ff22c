"""`vboot top`: a live terminal view of one vLLM server's engine metrics and the GPUs.

It reads the server's /metrics directly (no Prometheus needed) and NVML for the GPU panel. The maths lives in
bootstrap.core.metrics; this module resolves the target, drives the refresh loop and draws the screen.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult, to_jsonable
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, ScrapeError, UsageError
from bootstrap.core.metrics import TOP_FAMILIES, TopFrame, TopSession
from bootstrap.core.reports.top import top_measurement

if TYPE_CHECKING:
    pass

SPARK = "▁▂▃▄▅▆▇█"
GpuReader = Callable[[], tuple[list[dict[str, Any]], str | None]]
# The fields of bootstrap.probes.nvml.GpuInfo that top shows (and `top --once --json` reports).
GPU_FIELDS = ("index", "name", "memory_total_bytes", "memory_used_bytes", "memory_free_bytes", "utilization_gpu_pct",
              "temperature_c", "power_w", "power_limit_w", "error")


def resolve_target(target: str | None, env: Environ, problems: list[Any] | None = None) -> tuple[str, str]:
    """``(label, base_url)`` for NAME (a live run), URL (http://host:port), or the only live run. Run records
    that had to be skipped are added to ``problems``."""
    if target and target.startswith(("http://", "https://")):
        return target.rstrip("/"), target.rstrip("/")
    from bootstrap.core.runs import find_run, live_runs
    from bootstrap.probes.procs import pid_alive

    if target is None:
        live = [r for r in live_runs(env, problems=problems) if r.is_server]  # the route has no engine metrics
        if len(live) == 1:
            return live[0].name, live[0].url
        if not live:
            raise NotFoundError("no vboot server is running",
                                hint="start one with `vboot serve tiny`, or pass a URL: `vboot top http://HOST:PORT`")
        names = ", ".join(f"{r.name} ({r.url})" for r in live)
        raise UsageError(f"{len(live)} servers are running: {names}", hint="name one: `vboot top NAME`")
    record = find_run(env, target, problems=problems)
    if record is not None:
        if pid_alive(record.pid, record.pid_create_time):
            return record.name, record.url
        raise NotFoundError(f"server {target!r} is not running",
                            hint=f"start it again with `vboot serve`, or see `vboot logs {target}`")
    known = ", ".join(r.name for r in live_runs(env)) or "none"
    raise NotFoundError(f"no running server named {target!r} (running: {known})",
                        hint="pass a run name from `vboot ps` or a URL such as http://127.0.0.1:8000")


class GpuPanel:
    """The GPU panel's reader: ``snapshot`` (default: an :class:`~bootstrap.probes.nvml.NvmlSession`, so NVML is
    initialised once for the whole session, not every refresh) as rows of GPU_FIELDS; a missing library or
    driver gives no GPUs and is not asked again. :meth:`close` shuts NVML down."""

    def __init__(self, snapshot: Callable[[], Any] | None = None) -> None:
        self._session = None
        if snapshot is None:
            from bootstrap.probes import nvml  # here, not at module level: top without GPUs never pays for it

            self._session = session = nvml.NvmlSession()

            def snapshot() -> Any:
                return session.snapshot(with_processes=False)

        self._snapshot = snapshot
        self._fatal: str | None = None

    def __call__(self) -> tuple[list[dict[str, Any]], str | None]:
        if self._fatal is not None:  # no library / no driver: asking again every second would only cost time
            return [], self._fatal
        snap = self._snapshot()
        if not snap.ok:
            reason = snap.error or "NVML unavailable"
            if snap.error_kind is not None and snap.error_kind.fatal:
                self._fatal = reason
            return [], reason
        gpus = [{k: getattr(g, k) for k in GPU_FIELDS} for g in snap.gpus]
        return gpus, None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def default_gpu_reader(snapshot: Callable[[], Any] | None = None) -> GpuPanel:
    """The GPU panel's reader (:class:`GpuPanel`)."""
    return GpuPanel(snapshot)


def frame_data(frame: TopFrame, label: str, gpus: list[dict[str, Any]], gpu_error: str | None) -> dict[str, Any]:
    """The JSON ``data`` of `vboot top --once --json` (:class:`~bootstrap.core.reports.top.TopMeasurement`)."""
    data: dict[str, Any] = to_jsonable(top_measurement(frame, label, gpus, gpu_error))
    return data


# ---------------------------------------------------------------------------------------------- rendering

def sparkline(values: Sequence[float], width: int = 24) -> str:
    """Block characters scaled from 0 to the maximum of the last ``width`` values."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return SPARK[0] * len(vals)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in vals)


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _bar(ratio: float | None, width: int = 20) -> str:
    if ratio is None:
        return "-"
    filled = max(0, min(width, round(ratio * width)))
    color = "red" if ratio >= 0.9 else "yellow" if ratio >= 0.7 else "green"
    return f"[{color}]{'█' * filled}[/][dim]{'░' * (width - filled)}[/] {ratio * 100:5.1f} %"


def render(frame: TopFrame, label: str, gpus: list[dict[str, Any]], gpu_error: str | None, interval_s: float,
           live: bool = True):  # -> rich renderable
    """The whole screen as one rich renderable (also used by `--once` without --json)."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    s = frame.stats
    model = ", ".join(s.model_names) if s and s.model_names else "?"
    if frame.up:
        state = "[bold green]UP[/]"
    else:
        state = f"[bold red]DOWN[/] [red]{frame.error}[/] [dim](for {output.human_duration(frame.down_for_s)})[/]"
    window = f"window {_num(s.window_s)} s" if s and s.window_s else "window -"
    keys = " · [bold]q[/] quit" if live else ""
    where = frame.url if label == frame.url else f"{label} [dim]{frame.url}[/]"
    header = Text.from_markup(
        f"[bold]vboot top[/] {where}  model [bold]{model}[/]  {state}\n"
        f"[dim]{time.strftime('%H:%M:%S')} · refresh {interval_s:g} s · {window}{keys}[/]")

    h = frame.history
    dim = "" if frame.up else "[dim]"
    eng = Table.grid(padding=(0, 2))
    eng.add_column(style="bold")
    eng.add_column(justify="right", min_width=10)
    eng.add_column(min_width=30)
    eng.add_column(style="cyan")
    if s is not None:
        eng.add_row("running", f"{dim}{_num(s.requests_running, '{:.0f}')}", "requests in the batch",
                    sparkline(h.get("requests_running", ())))
        eng.add_row("waiting", f"{dim}{_num(s.requests_waiting, '{:.0f}')}", "requests queued",
                    sparkline(h.get("requests_waiting", ())))
        eng.add_row("KV cache", "", _bar(s.kv_cache_usage), sparkline(h.get("kv_cache_usage", ())))
        eng.add_row("prompt", f"{dim}{_num(s.prompt_tokens_per_s)}", "tokens/s",
                    sparkline(h.get("prompt_tokens_per_s", ())))
        eng.add_row("generation", f"{dim}{_num(s.generation_tokens_per_s)}", "tokens/s",
                    sparkline(h.get("generation_tokens_per_s", ())))
        reasons = ", ".join(f"{k} {v:.1f}" for k, v in s.finished_by_reason_per_s.items())
        eng.add_row("finished", f"{dim}{_num(s.requests_finished_per_s)}", f"requests/s {reasons}", "")
        pre_style = "[bold red]" if (s.preemptions_per_s or 0) > 0 else ""
        eng.add_row("preemptions", f"{pre_style}{_num(s.preemptions_total, '{:.0f}')}",
                    f"total ({_num(s.preemptions_per_s, '{:.2f}')}/s)", "")
    else:
        eng.add_row("", "", "[dim]no data yet[/]", "")

    lat = output.table(["latency", *(output.Column(c, "right") for c in ("p50", "p95", "p99", "mean", "n"))],
                       padding=(0, 2))
    if s is not None:
        for name, p in (("time to first token", s.ttft_s), ("  of which queued", s.queue_s),
                        ("inter-token", s.itl_s), ("end-to-end", s.e2e_s)):
            lat.add_row(name, _ms(p.p50), _ms(p.p95), _ms(p.p99), _ms(p.mean), f"{p.count:.0f}")

    gpu_table: Any
    if gpus:
        right = (output.Column(c, "right") for c in ("util", "memory", "temp", "power"))
        gpu_table = output.table(["gpu", "name", *right], padding=(0, 2))
        for g in gpus:
            if g.get("error"):
                gpu_table.add_row(str(g.get("index")), g.get("name") or "?", f"[red]{g['error']}[/]", "", "", "")
                continue
            used, total = g.get("memory_used_bytes"), g.get("memory_total_bytes")
            mem = f"{output.human_bytes(used)} / {output.human_bytes(total)}"
            if used is not None and total:
                mem += f" ({used / total * 100:.0f} %)"
            util = g.get("utilization_gpu_pct")
            power = g.get("power_w")
            gpu_table.add_row(str(g.get("index")), g.get("name") or "?", "-" if util is None else f"{util} %", mem,
                              "-" if g.get("temperature_c") is None else f"{g['temperature_c']} °C",
                              "-" if power is None else f"{power:.0f} W")
    else:
        gpu_table = Text.from_markup(f"[dim]no GPU data{': ' + gpu_error if gpu_error else ''}[/]")

    return Group(
        header,
        Panel(eng, title="engine", title_align="left", border_style="blue" if frame.up else "red"),
        Panel(lat, title=f"latency inside the engine, over the last {_num(s.window_s) if s and s.window_s else '-'} s",
              subtitle="[dim]measured by vLLM from arrival: clients also see tokenisation, HTTP, network[/]",
              subtitle_align="left", title_align="left", border_style="blue" if frame.up else "red"),
        Panel(gpu_table, title="GPUs (NVML)", title_align="left", border_style="blue"),
    )


# ---------------------------------------------------------------------------------------------- the loop

class _Keys:
    """Single keypresses from a terminal (cbreak mode: Ctrl-C still raises KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._saved: Any = None

    def __enter__(self) -> _Keys:
        if sys.stdin is not None and sys.stdin.isatty():
            import termios
            import tty

            self.fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def wait(self, timeout_s: float) -> str:
        """Keys pressed within ``timeout_s`` ('' when none); sleeps the whole time without a terminal."""
        timeout_s = max(0.0, timeout_s)
        if self.fd is None:
            time.sleep(timeout_s)
            return ""
        import select

        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return ""
        try:
            return os.read(self.fd, 32).decode("utf-8", "replace")
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run_live(session: TopSession, label: str, gpu_reader: GpuReader, interval_s: float,
             max_refreshes: int | None = None) -> int:
    """The full-screen loop; returns 0 when the user quits with q or Ctrl-C (SIGTERM too)."""
    from rich.live import Live

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    con = output.console()
    refreshes = 0
    try:
        with _Keys() as keys, Live(console=con, screen=True, auto_refresh=False, transient=True) as live:
            while True:
                started = time.monotonic()
                frame = session.poll()
                gpus, gpu_error = gpu_reader()
                live.update(render(frame, label, gpus, gpu_error, interval_s), refresh=True)
                refreshes += 1
                if max_refreshes is not None and refreshes >= max_refreshes:
                    return 0
                while True:
                    pressed = keys.wait(interval_s - (time.monotonic() - started))
                    if "q" in pressed.lower():
                        return 0
                    if not pressed:
                        break
    except KeyboardInterrupt:
        return 0  # Ctrl-C is the ordinary way to leave a viewer
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command()
@click.argument("target", required=False, metavar="[NAME|URL]")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes (and, with --once, between the two scrapes).")
@click.option("--window", "window_s", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds of history behind the rates and latency percentiles of the live view.")
@click.option("--once", is_flag=True, help="Take one measurement (two scrapes, --interval apart), print it, exit.")
@output.json_option
def top(target: str | None, interval_s: float, window_s: float, once: bool, as_json: bool) -> int:
    """Live view of a vLLM server: requests, KV cache, tokens/s, latency percentiles, GPUs.

    TARGET is a run name from `vboot ps`, or a URL such as http://127.0.0.1:8000; without it, the only
    running vboot server. Reads the server's /metrics directly (no Prometheus needed) and NVML for the GPU
    panel. Press q or Ctrl-C to leave. `--once --json` prints one measurement: requests_running,
    requests_waiting, kv_cache_usage (0..1), prompt_tokens_per_s, generation_tokens_per_s, ttft_s / queue_s /
    itl_s / e2e_s as {p50, p95, p99} in seconds (null when nothing finished in the window), and gpus.
    Latencies are measured inside the engine (vLLM's histograms): a client's TTFT adds tokenisation, HTTP
    and the network; queue_s, the time a request waited to be scheduled, is part of TTFT.
    """
    env = Environ()
    problems: list[Any] = []
    try:
        label, url = resolve_target(target, env, problems)
    finally:
        for p in problems:  # a malformed run record is skipped, never fatal: say which
            output.warn(str(p))
    from bootstrap.probes.http import MetricsEndpoint

    endpoint = MetricsEndpoint(url, families=TOP_FAMILIES)
    gpu_reader = default_gpu_reader()
    if not once:
        if as_json:
            raise UsageError("--json needs --once (the live view is for terminals)",
                             hint="run `vboot top --once --json`")
        session = TopSession(endpoint.scrape, url, window_s=window_s)
        try:
            code = run_live(session, label, gpu_reader, interval_s)
        finally:
            endpoint.close()
            gpu_reader.close()
        return code

    session = TopSession(endpoint.scrape, url, window_s=interval_s * 2)
    frame = session.poll()
    if frame.up:
        time.sleep(interval_s)
        frame = session.poll()
    endpoint.close()
    gpus, gpu_error = gpu_reader()
    gpu_reader.close()
    data = top_measurement(frame, label, gpus, gpu_error, warnings=[str(p) for p in problems])
    if frame.up:
        result = CommandResult("top", data)
    else:
        down = ScrapeError(f"{endpoint.url}: {frame.error}",
                           hint="is the server running? see `vboot ps` and `vboot logs`")
        result = CommandResult("top", data, status="error", exit_code=down.exit_code, errors=(down.to_dict(),))
    return output.emit(result, human=lambda _d: output.console().print(
        render(frame, label, gpus, gpu_error, interval_s, live=False)))
