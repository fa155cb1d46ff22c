"""`vboot logs`: show or follow a server's vLLM (or Prometheus) log."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import click

from bootstrap.cli import output
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, RunRecordInvalid


@click.command()
@click.argument("name", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the server stops (or Ctrl-C).")
@click.option("--lines", "-n", type=click.IntRange(0), default=50, show_default=True, help="Lines to show first.")
@click.option("--prometheus", "which", flag_value="prometheus.log", help="Show Prometheus' log instead of vLLM's.")
def logs(name: str | None, follow: bool, lines: int, which: str | None) -> None:
    """Show the vLLM log of server NAME (the most recent run when NAME is omitted)."""
    from bootstrap.core.paths import runs_dir
    from bootstrap.core.runs import RunProblem, find_run, iter_runs
    from bootstrap.core.serving import tail_lines
    from bootstrap.probes import procs

    env = Environ()
    problems: list[RunProblem] = []
    if name:
        run = find_run(env, name, problems=problems)
        if run is None:  # a malformed record of that name is the error itself
            if problems:
                raise RunRecordInvalid(f"the run record of {name!r} is malformed: {problems[0].reason}",
                                       hint=f"its log, if any, is in {runs_dir(env) / name}")
            known = ", ".join(sorted({r.name for r in iter_runs(env)})) or "none yet"
            raise NotFoundError(f"no server named {name!r} (known: {known})", hint="`vboot ps` lists running servers")
    else:
        runs = iter_runs(env, problems=problems)
        for p in problems:
            output.warn(str(p))
        if not runs:
            raise NotFoundError(f"no runs under {runs_dir(env)}", hint="start one with `vboot serve PROFILE`")
        run = runs[-1]
    path = Path(run.run_dir) / which if which else run.log_path  # a route's main log is its router's
    try:
        mode = path.lstat().st_mode
    except OSError:
        raise NotFoundError(f"{path} does not exist", hint="the server may not have started yet") from None
    if not stat.S_ISREG(mode):  # a FIFO would block the read forever
        raise NotFoundError(f"{path} is not a log file", hint="vboot writes the log there; remove what is in its place")
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
