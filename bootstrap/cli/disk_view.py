"""The report of `vboot disk PATH`: its JSON data and its human view, without click.

Besides the `disk` command (bootstrap.cli.disk), the console script uses this module directly: a plain
`vboot disk [PATH] [--depth N] [--top N] [--apparent] [-x] [--json]` whose scan it started before loading
anything (bootstrap.cli.entry) is printed from here, so the scan never shares the CPUs with loading click.
"""

from __future__ import annotations

import sys
from typing import Any

from bootstrap.cli import output
from bootstrap.core.disk import DiskReport
from bootstrap.core.envelope import CommandResult
from bootstrap.core.reports.disk import DiskView, disk_view


def report_result(reports: list[DiskReport], depth: int, apparent: bool, top: int) -> CommandResult[DiskView]:
    """`vboot disk`'s result (:class:`~bootstrap.core.reports.disk.DiskView`), status "warn" when any report could not
    read everything."""
    view = disk_view(reports, depth, apparent, top)
    return CommandResult("disk", view, status=view.status)


def print_head_start(request: dict[str, Any]) -> int | None:
    """Print the report of a plain request (:func:`bootstrap.cli.disk_request.disk_request`, one PATH at most) from
    the head start, flush, and return the exit code for the console script to leave with (bootstrap.cli.entry).
    Returns None, having printed nothing, when the head start brought no report (it failed, say on a missing
    PATH): the full CLI then scans and reports as usual, errors included."""
    from bootstrap.cli.disk_request import scan_args, take_head_start
    from bootstrap.core.disk import report_from_wire

    output.STATE.json = request["json"]
    output.STATE.command = "disk"  # what click would resolve for the same arguments (the envelope's rule)
    if not request["json"]:
        output.load_human_view()  # while the scan runs: it is CPU time either way, but not on the critical path
    wire = take_head_start(*scan_args(request))
    if wire is None:
        output.STATE.reset()  # the CLI takes over, from scratch
        return None
    result = report_result([report_from_wire(wire)], request["depth"], request["apparent"], request["top"])
    try:
        code = output.emit(result, human=render_report)
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        return output.broken_pipe()
    except Exception as exc:  # as bootstrap.cli.main does: one line, the traceback only when debugging
        from bootstrap.core.environ import debug_enabled
        from bootstrap.core.errors import EXIT_FAIL

        if debug_enabled():
            raise
        code = output.internal_error(exc, EXIT_FAIL)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass
    return code


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _marks(encoding: str) -> tuple[str, str, str]:
    """(bar filled, bar empty, ellipsis) in characters the output can carry: ASCII on an ASCII-only stream."""
    try:
        "█░…".encode(encoding or "utf-8")
        return "█", "░", "…"
    except (UnicodeEncodeError, LookupError):
        return "#", "-", "..."


def _bar(share: float, marks: tuple[str, str, str], width: int = 20) -> str:
    filled = max(0, min(width, round(share * width)))
    return marks[0] * filled + marks[1] * (width - filled)


def render_report(data: DiskView) -> None:
    from bootstrap.cli.output import Column

    escape = output.escape  # file names are untrusted: control characters and markup escaped

    con = output.console()
    marks = _marks(con.encoding)
    top = data.top
    for rep in data.reports:
        fs = ""
        if rep.fs_total_bytes:
            fs = (f"  [dim]filesystem {output.human_bytes(rep.fs_total_bytes)}, "
                  f"{output.human_bytes(rep.fs_free_bytes)} free[/]")
        kind = "apparent" if rep.apparent else "on disk"
        con.print(f"[bold]{escape(rep.root)}[/]  {output.human_bytes(rep.total_bytes)} {kind}{fs}")
        children: dict[str, list] = {}
        for e in rep.entries:
            children.setdefault(e.path.rsplit("/", 1)[0] or "/", []).append(e)
        table = output.table([Column("size", "right"), Column("share", "right"), Column("", no_wrap=True),
                              Column("path", fold=True)], pad_edge=False)

        def add(parent: str, parent_bytes: int, indent: int) -> None:
            rows = sorted(children.get(parent, []), key=lambda e: (-e.bytes, e.path))
            for e in rows[:top]:
                share = e.bytes / parent_bytes if parent_bytes else 0.0
                name = e.path[len(rep.root):].lstrip("/") if indent == 0 else e.path.rsplit("/", 1)[-1]
                name = "  " * indent + escape(name) + ("/" if e.is_dir else "")
                table.add_row(output.human_bytes(e.bytes), f"{share:4.0%}", _bar(share, marks), name)
                if e.is_dir:
                    add(e.path, e.bytes, indent + 1)
            rest = rows[top:]
            if rest:
                table.add_row(output.human_bytes(sum(e.bytes for e in rest)), "", "",
                              "  " * indent + f"[dim]{marks[2]} {len(rest)} more[/]")

        add(rep.root.rstrip("/") or "/", rep.total_bytes, 0)
        con.print(table)
        if rep.skipped_mounts:
            shown = ", ".join(escape(m) for m in rep.skipped_mounts[:6])
            more = f" and {len(rep.skipped_mounts) - 6} more" if len(rep.skipped_mounts) > 6 else ""
            con.print(f"[dim]not entered (pseudo filesystems, no disk blocks): {shown}{more}[/]")
        if rep.unreadable_count or rep.error_count:
            parts = []
            if rep.unreadable_count:
                parts.append(plural(rep.unreadable_count, "directory", "directories") + " could not be read")
            if rep.error_count:
                parts.append(plural(rep.error_count, "entry", "entries") + " failed")
            con.print(f"[yellow]incomplete:[/] {' and '.join(parts)}; their contents are not in the totals "
                      f"(run as their owner or with sudo):")
            for w in rep.warnings[:5]:
                con.print(f"  [dim]{escape(w.kind)}[/] {escape(w.path)}: {escape(w.message)}")
            if len(rep.warnings) > 5:
                con.print(f"  [dim]{marks[2]} {len(rep.warnings) - 5} more (--json lists them)[/]")
        odd = [w for w in rep.warnings if w.kind == "non_utf8"]
        if odd and not (rep.unreadable_count or rep.error_count):
            con.print(f"[dim]{len(odd)} names are not valid UTF-8 (shown with \\x escapes)[/]")
