"""`vboot ps`: vboot's servers, orphaned vLLM processes, and vLLM processes of other programs."""

from __future__ import annotations

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.servers import PsReport, collect_ps


@click.command()
@output.json_option
def ps(as_json: bool) -> int:
    """List vboot's servers (name, profile, PID, port, model, uptime, health), orphaned vLLM processes
    (engine cores and workers whose launcher is gone, with the memory they hold), vLLM servers vboot did not
    start, and engines of other programs (an offline script, `vllm bench`: not orphans, left alone)."""
    report = collect_ps(Environ())
    return output.emit(CommandResult("ps", report, status=report.status), human=render_ps)


def render_ps(data: PsReport) -> None:
    esc = output.escape
    for w in data.warnings:
        output.warn(w)
    con = output.console()
    if data.servers:
        t = output.table(("NAME", "PROFILE", "PID", "URL", "MODEL", "DEVICE", "UPTIME", "STATE", "RESTARTS", "VRAM"))
        notes = []
        for s in data.servers:
            state = {"ready": "[green]healthy[/]" if s.healthy else "[yellow]unhealthy[/]",
                     "starting": "[yellow]starting[/]", "restarting": "[yellow]restarting[/]",
                     "waiting": "[yellow]waiting (start lock)[/]",
                     "sleeping": "[cyan]sleeping[/]"}.get(s.state, s.state)
            if s.stale:
                state += " [yellow](stale)[/]"
            model = s.served_model_name
            if s.kind == "route":
                model = ", ".join(sorted(s.routes or {})) or "(no server yet)"
            t.add_row(esc(s.name) + (" [dim](route)[/]" if s.kind == "route" else ""), esc(s.profile), str(s.pid),
                      esc(s.url), esc(model),
                      (s.device or "-").upper(), output.human_duration(s.uptime_s), state, str(s.restarts),
                      output.human_bytes(s.gpu_bytes) if s.gpu_bytes else "-")
            if s.device_reason:
                notes.append(f"  {esc(s.name)}: {esc(s.device_reason)}")
            if s.last_exit:
                notes.append(f"  {esc(s.name)}: last failure {output.human_duration(s.last_exit['age_s'])} ago: "
                             f"{esc(s.last_exit['summary'])}")
            if s.stale:
                notes.append(f"  {esc(s.name)}: stale: restart to apply (its profile resolves to another command or "
                             f"environment now: `vboot stop {esc(s.name)}`, then `vboot serve {esc(s.profile)}`)")
        con.print(t)
        for note in notes:
            con.print(note)
        for s in data.servers:
            if s.refused:
                con.print(f"[yellow]![/] {esc(s.refused)} [dim](not provably vboot's: `vboot stop` leaves it alone)[/]")
    else:
        con.print("no vboot servers running")
    if data.unmanaged:
        con.print("\n[bold]vLLM servers not started by vboot[/]")
        for u in data.unmanaged:
            con.print(f"  PID {u.pid}  {esc(u.cmdline[:120])}")
    if data.unmanaged_engines:
        con.print("\n[bold]vLLM engines of other programs[/] (their launcher is alive: not orphans, left alone)")
        t = output.table(("PID", "NAME", "LAUNCHER", "RSS", "VRAM", "AGE"))
        for e in data.unmanaged_engines:
            t.add_row(str(e.pid), esc(e.name), str(e.launcher_pid or "?"), output.human_bytes(e.rss_bytes),
                      output.human_bytes(e.gpu_bytes) if e.gpu_bytes else "-", output.human_duration(e.age_s))
        con.print(t)
        con.print("[dim]stop one only if you mean to:[/] vboot stop --pid PID")
    if data.orphans:
        con.print("\n[bold red]orphaned vLLM processes[/] (their launcher is gone)")
        t = output.table(("PID", "NAME", "RSS", "VRAM", "AGE"))
        for o in data.orphans:
            t.add_row(str(o.pid), esc(o.name), output.human_bytes(o.rss_bytes),
                      output.human_bytes(o.gpu_bytes) if o.gpu_bytes else "-", output.human_duration(o.age_s))
        con.print(t)
        con.print("[dim]fix:[/] vboot stop --orphans")
