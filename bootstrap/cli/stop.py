"""`vboot stop`: stop a server, every server, orphaned vLLM processes, or vLLM processes named by PID."""

from __future__ import annotations

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError
from bootstrap.core.servers import StopReport


@click.command()
@click.argument("name", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Stop every vboot server.")
@click.option("--orphans", is_flag=True,
              help="Stop orphaned vLLM processes (engines whose launcher is gone; never one under a live program).")
@click.option("--pid", "pids", type=click.IntRange(min=1), multiple=True, metavar="PID",
              help="Stop this vLLM process (not one of vboot's servers) and its vLLM children; repeatable.")
@click.option("--timeout", "grace_s", type=float, default=20.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
@output.json_option
def stop(name: str | None, stop_all: bool, orphans: bool, pids: tuple[int, ...], grace_s: float,
         as_json: bool) -> int:
    """Stop a server by NAME, all servers (--all), orphaned vLLM processes (--orphans), or a vLLM process of
    another program named by --pid.

    SIGTERM to the server's whole process group, then SIGKILL after --timeout; returns once every process
    is gone (checked by PID). vboot signals only what it can prove it started: the recorded PID with its
    recorded create time, in its recorded process group, running what was started; anything else is refused
    with the reason and left alone.
    """
    from bootstrap.core.servers import execute_stop, plan_stop

    if not name and not stop_all and not orphans and not pids:
        raise UsageError("say what to stop: NAME, --all, --orphans or --pid PID",
                         hint="`vboot ps` lists servers, orphans and other vLLM processes")
    plan = plan_stop(Environ(), name=name, stop_all=stop_all, orphans=orphans, pids=pids)
    report = execute_stop(plan, grace_s=grace_s)
    if report.survivors:
        return output.emit(CommandResult("stop", report, status="fail", exit_code=1, errors=({
            "code": "survivors", "message": f"processes still alive after SIGKILL: {list(report.survivors)}",
            "hint": "they may be stuck in the kernel (D state); check `ps -o pid,stat,args -p PID`"},)),
            human=render_stop)
    return output.emit(CommandResult("stop", report, status=report.status), human=render_stop)


def render_stop(report: StopReport) -> None:
    esc = output.escape
    for w in report.warnings:
        output.warn(w)
    con = output.console()
    for r in report.refused:
        con.print(f"[yellow]refused[/] {esc(r.reason)}")
        con.print(f"  [dim]{esc(r.hint)}[/]")
    if report.spared:
        pids = ", ".join(str(e.pid) for e in report.spared)
        con.print(f"[dim]left alone: vLLM processes of running programs (PIDs {pids}); `vboot stop --pid PID` "
                  "stops one[/]")
    if not report.stopped:
        con.print("nothing to stop")
        return
    what = ", ".join(report.labels) or "orphans"
    con.print(f"stopped {esc(what)}: PIDs {', '.join(map(str, report.stopped))}"
              + (" (SIGKILL was needed)" if report.escalated else ""))
