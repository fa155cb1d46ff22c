"""`vboot disk [PATH ...]`, `vboot disk caches`, `vboot disk clean`.

`disk` takes PATH arguments *and* has subcommands, which a plain click Group cannot do: :class:`DiskGroup`
sends the arguments to the `caches`/`clean` subcommand only when the first argument is its name, and to the
report otherwise (a directory literally named `caches` or `clean` is given as `./caches`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from bootstrap.cli import disk_request, output
from bootstrap.cli.disk_request import SUBCOMMANDS, option, valued
from bootstrap.cli.disk_view import plural
from bootstrap.core.envelope import CommandResult
from bootstrap.core.reports.disk import CachesView, CleanReport


class DiskGroup(click.Group):
    """A group whose first argument is a subcommand only when it names one; otherwise the report runs."""

    def __init__(self, *args: Any, report: click.Command, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report = report

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        if args and args[0] in self.commands:
            return super().make_context(info_name, args, parent=parent, **extra)
        self.report.context_class = self.context_class  # the report stands for the group: the same context
        return self.report.make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.command is self.report:
            return self.report.invoke(ctx)
        return super().invoke(ctx)

    def get_help(self, ctx: click.Context) -> str:
        return self.report.get_help(ctx)


def _valued(name: str, text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A whole-number option of the report, declared from the table the head start's grammar is made of."""
    default, low, high = valued(name)
    return click.option(*option(name), name, default=default, show_default=True, type=click.IntRange(low, high),
                        help=text)


def _flag(name: str, text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(*option(name), name, is_flag=True, help=text)


@click.command("disk", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(path_type=str), metavar="[PATH]...")
@_valued("depth", "Levels below PATH to list (du --max-depth).")
@_valued("top", "Rows shown per directory in the human view (JSON lists every entry).")
@_flag("apparent", "Apparent sizes (du --apparent-size) instead of allocated blocks.")
@_flag("one_file_system", "Skip directories on other filesystems (du -x).")
@output.json_option
def report_cmd(paths: tuple[str, ...], depth: int, top: int, apparent: bool, one_file_system: bool,
               as_json: bool) -> int:
    """Largest directories and files under PATH (default: your home), like `du -h --max-depth=1 | sort -hr`.

    Sizes are du's (`du -a -B1 --max-depth=N`): allocated blocks, hard links counted once, symlinks not
    followed, sparse files as allocated; --apparent gives `du --apparent-size`. Unreadable directories and
    files that vanish mid-scan become warnings; the report says how much it could not read.

    \b
    Subcommands (when the first argument is their name; write ./caches for a directory of that name):
      vboot disk caches   model and package caches (ModelScope, Hugging Face, pip, uv, torch, vLLM, Triton)
      vboot disk clean    delete partial downloads, models or whole caches (plan, confirm, then delete)
    """
    from bootstrap.cli.disk_view import render_report, report_result
    from bootstrap.core.disk import report_from_wire, scan
    from bootstrap.core.environ import Environ

    targets = list(paths) or [str(Environ().home())]
    if not as_json:
        output.load_human_view()  # while a head start may still be scanning
    # The console script may have started the first scan before click was imported (bootstrap.cli.entry).
    wire = disk_request.take_head_start(targets[0], depth, apparent, one_file_system)
    reports = [report_from_wire(wire) if wire else scan(targets[0], depth, apparent, one_file_system)]
    reports += [scan(p, depth=depth, apparent=apparent, one_file_system=one_file_system) for p in targets[1:]]
    return output.emit(report_result(reports, depth, apparent, top), human=render_report)


@click.command("caches", context_settings={"help_option_names": ["-h", "--help"]})
@output.json_option
def caches_cmd(as_json: bool) -> int:
    """Model and package caches: location (from their env variables), size, items, last use, and which models a
    running vboot server uses.

    ModelScope (both layouts, partial downloads separately), Hugging Face hub, pip, uv, torch hub, torch
    inductor, vLLM (VLLM_CACHE_ROOT) and Triton. Free space with `vboot disk clean`.
    """
    from bootstrap.core.caches import scan_caches
    from bootstrap.core.environ import Environ
    from bootstrap.core.runs import RunProblem, active_model_paths

    env = Environ()
    problems: list[RunProblem] = []
    reports = scan_caches(env, active=active_model_paths(env, problems=problems))
    view = CachesView(tuple(reports), sum(r.bytes for r in reports),
                      warnings=tuple(str(p) for p in problems) if problems else None)
    return output.emit(CommandResult("disk caches", view, status=view.status), human=_render_caches)


def _ago(ts: float | None) -> str:
    import time

    if ts is None:
        return "-"
    return output.human_duration(max(0.0, time.time() - ts)) + " ago"


def _render_caches(data: CachesView) -> None:
    from bootstrap.cli.output import Column

    escape = output.escape  # file names are untrusted: control characters and markup escaped

    for w in data.warnings or ():
        output.warn(w)
    con = output.console()
    table = output.table(["cache", Column("size", "right"), Column("items", "right"), Column("last used", "right"),
                          "path", "set by"], pad_edge=False)
    for c in data.caches:
        if not c.exists:
            table.add_row(f"[dim]{c.name}[/]", "[dim]-[/]", "", "", f"[dim]{escape(c.path)} (absent)[/]", c.source)
            continue
        if c.refused:
            table.add_row(f"[yellow]{c.name}[/]", "-", "[yellow]refused[/]", "", escape(c.path), c.source)
            continue
        table.add_row(c.name, output.human_bytes(c.bytes), str(len(c.items)), _ago(c.last_used), escape(c.path),
                      c.source)
    con.print(table)
    for c in data.caches:
        for warning in c.warnings:
            con.print(f"[yellow]{c.name}:[/] {escape(warning)}")
    for c in data.caches:
        models = [i for i in c.items if i.kind in ("model", "partial")]
        if not models:
            continue
        con.print(f"\n[bold]{c.name}[/] models")
        t = output.table(["id", Column("size", "right"), Column("last used", "right"), "layout", "in use"],
                         pad_edge=False)
        for i in models:
            ident = escape(i.id) if i.kind == "model" else f"[yellow]{escape(i.id)}[/]"
            t.add_row(ident, output.human_bytes(i.bytes), _ago(i.last_used), i.layout,
                      f"[green]{escape(i.in_use_by)}[/]" if i.in_use_by else "")
        con.print(t)
    cmds = [f"{c.name}: `{c.clean_command}`" for c in data.caches if c.exists and c.clean_command and not c.refused]
    con.print(f"\n[dim]total {output.human_bytes(data.total_bytes)}. Free space: `vboot disk clean --partial`, "
              "`--model ID`, `--cache NAME`, `--older-than 30d`."
              + (f" Own cleaners: {'; '.join(cmds)}." if cmds else "")
              + "[/]")


@click.command("clean", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--partial", is_flag=True, help="Partial downloads (*.incomplete, ModelScope temp folders).")
@click.option("--model", "models", multiple=True, metavar="ID", help="A cached model (Owner/Name); repeatable.")
@click.option("--cache", "caches", multiple=True, metavar="NAME",
              help="Everything in one cache: modelscope, huggingface, pip, uv, torch, inductor, vllm, triton.")
@click.option("--older-than", metavar="DURATION", help="Only items not used for this long (30d, 12h); alone: all such.")
@click.option("--dry-run", is_flag=True, help="Show the plan; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (needed when nobody can answer a prompt).")
@output.json_option
def clean_cmd(partial: bool, models: tuple[str, ...], caches: tuple[str, ...], older_than: str | None,
              dry_run: bool, yes: bool, as_json: bool) -> int:
    """Free disk space in the caches: scan, plan (every path and the bytes it frees), confirm, delete.

    Deletes only inside the recognised cache roots, never follows a symlink out of one (the link is removed,
    not its target), never deletes across a mount point (an item with one inside is kept), refuses a cache
    root that is no cache of its own (`/`, your home, a system directory: a variable such as PIP_CACHE_DIR set
    by mistake), refuses models a running vboot server uses, removes a legacy ModelScope model together with
    its dotted symlink, and reports what it freed, measured afterwards. A path it could not remove fails the
    command (exit 1). --older-than judges an item by the newest file inside it. Without --yes and without a
    terminal it stops before deleting (exit 2).
    """
    from bootstrap.core.caches import execute_plan, plan_clean, scan_caches
    from bootstrap.core.environ import Environ
    from bootstrap.core.errors import EXIT_FAIL, ConfirmationRequired, UsageError
    from bootstrap.core.units import parse_duration

    env = Environ()
    older_s = None
    if older_than:
        try:
            older_s = parse_duration(older_than)
        except ValueError as exc:
            raise UsageError(str(exc), hint="write e.g. --older-than 30d") from None
    from bootstrap.core.runs import RunProblem, active_model_paths

    problems: list[RunProblem] = []
    active = active_model_paths(env, problems=problems)
    for p in problems:  # a malformed run record is skipped (its model is not protected): say which
        output.warn(str(p))
    plan = plan_clean(scan_caches(env, active=active), partial=partial, models=models, caches=caches,
                      older_than_s=older_s)
    data = CleanReport(plan.entries, plan.total_bytes, plan.refused, plan.notes, dry_run,
                       warnings=tuple(str(p) for p in problems) if problems else None)
    if dry_run or not plan.entries:
        return output.emit(CommandResult("disk clean", data, status=data.status), human=_render_clean)
    if not yes:
        if output.STATE.json or not sys.stdin.isatty():
            if not output.STATE.json:
                _render_clean(data)
            raise ConfirmationRequired(f"would delete {plural(len(plan.entries), 'path', 'paths')} "
                                       f"({output.human_bytes(plan.total_bytes)}); nobody to confirm",
                                       hint="re-run with --yes to delete, or --dry-run to only see the plan")
        _render_clean(data)
        what = "this path" if len(plan.entries) == 1 else f"these {len(plan.entries)} paths"
        if not output.confirm(f"Delete {what}?"):
            output.info("nothing deleted")
            return 1
    result = execute_plan(plan, active=active_model_paths(env))
    data = replace(data, freed_bytes=result.freed_bytes, removed=result.removed, failed=result.failed,
                   fs_free_before_bytes=result.fs_free_before_bytes, fs_free_after_bytes=result.fs_free_after_bytes,
                   confirmed=True)
    if not result.failed:
        return output.emit(CommandResult("disk clean", data, status=data.status), human=_render_clean)
    # Something planned is still there: the command failed, whatever else it freed (data says what).
    first = result.failed[0]
    return output.emit(CommandResult("disk clean", data, status="fail", exit_code=EXIT_FAIL, errors=({
        "code": "clean_incomplete",
        "message": f"{plural(len(result.failed), 'path was', 'paths were')} not removed, first {first.path}: "
                   f"{first.reason}",
        "hint": "nothing outside the plan was touched; fix the cause (see data.failed) and run the same command "
                "again", "context": {"failed": len(result.failed), "reason": first.code}},)), human=_render_clean)


def _render_clean(data: CleanReport) -> None:
    from bootstrap.cli.output import Column

    escape = output.escape  # file names are untrusted: control characters and markup escaped

    con = output.console()
    done = data.confirmed
    if not done:
        if data.plan:
            t = output.table([Column("frees", "right"), "cache", Column("path", fold=True)], pad_edge=False)
            for e in data.plan:
                t.add_row(output.human_bytes(e.bytes), e.cache, escape(e.path) + (" (symlink)" if e.is_symlink else ""))
            con.print(t)
            con.print(f"[bold]total {output.human_bytes(data.plan_bytes)}[/] in "
                      f"{plural(len(data.plan), 'path', 'paths')}"
                      + (" [dim](dry run: nothing deleted)[/]" if data.dry_run else ""))
        else:
            con.print("nothing to clean")
    for r in data.refused:
        con.print(f"[yellow]kept[/] {escape(r.item_id)}: {escape(r.reason)}")
    for note in data.notes:
        con.print(f"[dim]note: {escape(note)}[/]")
    if done:
        con.print(f"[green]freed {output.human_bytes(data.freed_bytes)}[/] "
                  f"({plural(len(data.removed), 'path', 'paths')} removed)")
        for f in data.failed:
            con.print(f"[red]not removed[/] {escape(f.path)}: {escape(f.reason)}")


disk = DiskGroup("disk", report=report_cmd, commands=dict(zip(SUBCOMMANDS, (caches_cmd, clean_cmd), strict=True)),
                 help=report_cmd.help, context_settings={"help_option_names": ["-h", "--help"]})
