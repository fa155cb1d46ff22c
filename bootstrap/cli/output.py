"""The one place that knows human vs JSON output, and the only module that imports rich (`vboot top`'s full-screen
view aside: tests/test_output_layer.py lists it).

stdout carries the result (exactly one JSON document with ``--json``); logs, progress and hints go to stderr.
Commands hand a :class:`~bootstrap.core.envelope.CommandResult` to :func:`emit` and return the exit code it gives
back; their human renderers print with :func:`console`, :func:`table`, :func:`done` and :func:`escape`, and ask
with :func:`confirm`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bootstrap.core.envelope import CommandResult, PayloadT, envelope, error_envelope
from bootstrap.core.units import format_bytes as human_bytes  # noqa: F401 - the renderers' name for it

if TYPE_CHECKING:  # click is imported where an option is declared: `vboot disk`'s fast path never loads it
    import click
    from rich.console import Console
    from rich.status import Status as Status  # re-exported: the spinner's type, for serve and setup's steps
    from rich.table import Table


class _State:
    json: bool = False
    # The envelope's ``command`` when vboot stops outside a command's own result (an error, an interrupt): the
    # command path click has resolved so far (see :func:`command_path`), "vboot" before it has resolved any.
    command: str = "vboot"
    # The exit code of the result already printed (None until then): an interrupt after it changes nothing.
    result_code: int | None = None

    def reset(self, as_json: bool = False) -> None:
        self.json, self.command, self.result_code = as_json, "vboot", None


STATE = _State()


def command_path(ctx: Any) -> str:
    """The envelope's ``command`` for a click context: the names of the commands invoked, without the program's
    own (``disk``, ``disk clean``, ``export k8s``); the program's name when no subcommand was resolved.

    One rule for a command's result, its errors, its help and an interrupt (tests/test_contract.py pins it).
    """
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    names.reverse()
    return " ".join(n for n in names[1:] if n) or names[0] or "vboot"


def _current_command() -> str | None:
    """The command path of the click command running now; None outside click (the disk fast path never loads it)."""
    click = sys.modules.get("click")
    ctx = click.get_current_context(silent=True) if click is not None else None
    return command_path(ctx) if ctx is not None else None


def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        STATE.json = True
    return value


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print one versioned JSON document on stdout instead of the human view."""
    import click

    return click.option(
        "--json", "as_json", is_flag=True, expose_value=True, is_eager=True, callback=set_json,
        help="Print one JSON document (the versioned vboot envelope) on stdout.",
    )(f)


def load_human_view() -> None:
    """Import what the human view prints with (rich: ~40 ms of CPU) now, while something else still runs (a
    forked scan), instead of after it has finished."""
    import rich.console
    import rich.markup
    import rich.table  # noqa: F401


def console(stderr: bool = False) -> Console:
    """The console the human view prints with: stdout, or stderr for logs, progress and hints."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people in logs and by grep: don't squeeze tables into 80 columns.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    # soft_wrap: long lines (paths, commands) stay whole when piped, instead of breaking at 80 columns.
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def err_console() -> Console:
    return console(stderr=True)


@dataclass(frozen=True)
class Column:
    """A column of a :func:`table`: its header, its alignment, and what a cell too long for it does (``fold``: break
    it over lines, for paths; ``no_wrap``: never break it, for bars)."""

    header: str
    justify: Literal["left", "center", "right"] = "left"
    fold: bool = False
    no_wrap: bool = False


def table(columns: Sequence[str | Column], rows: Iterable[Sequence[str]] = (), *, pad_edge: bool = True,
          padding: tuple[int, int] = (0, 1)) -> Table:
    """vboot's one table style: no borders, bold headers. Cells are markup: pass untrusted text through
    :func:`escape`. More rows can be added with ``.add_row``; print it with ``console().print``."""
    from rich.table import Table

    grid = Table(box=None, header_style="bold", pad_edge=pad_edge, padding=padding)
    for col in columns:
        col = Column(col) if isinstance(col, str) else col
        grid.add_column(col.header, justify=col.justify, overflow="fold" if col.fold else "ellipsis",
                        no_wrap=col.no_wrap)
    for row in rows:
        grid.add_row(*row)
    return grid


def confirm(question: str) -> bool:
    """Ask a person a yes/no question on stderr (the answer defaults to no). The caller decides first whether
    anybody can answer (a terminal, no --json): see `vboot disk clean`. End of input raises click's Abort, which
    bootstrap.cli.main reports as "aborted"."""
    import click

    return click.confirm(question, default=False, err=True)


def done(message: str) -> None:
    """A finished action's line on stdout: a green check mark, then ``message`` (markup; escape what is untrusted)."""
    console().print(f"[green]✓[/] {message}")


class DownloadBar:
    """One progress bar for a download (bytes, rate, time left) on stderr, gone when it stops."""

    def __init__(self, label: str, total: int, completed: int) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                  TimeRemainingColumn(), console=err_console(), transient=True)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, completed=completed)

    def update(self, completed: int, total: int) -> None:
        self._progress.update(self._task, completed=completed, total=total)

    def stop(self) -> None:
        self._progress.stop()


def _write_document(doc: dict[str, Any]) -> None:
    """The one JSON document of a --json run, on stdout, never cut short by a signal: SIGINT and SIGTERM wait
    until it is written (then arrive as usual, and find the result out: :func:`interrupted`)."""
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
        STATE.result_code = doc["exit_code"]
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def print_document(result: CommandResult[Any]) -> None:
    """Print ``result``'s JSON document now without leaving (a foreground `vboot serve` reports readiness, then
    goes on supervising): the same one document, held against signals like :func:`emit`'s."""
    _write_document(envelope(result))


def emit(result: CommandResult[PayloadT], human: Callable[[PayloadT], object] | None = None) -> int:
    """Print ``result`` (JSON envelope or the human view, then its errors for people) and return its exit code,
    which the command returns to :func:`bootstrap.cli.main.main`, the one place that exits.

    The envelope's ``command`` is the running click command's path (:func:`command_path`), the same rule as for
    errors; ``result.command`` names it where click is not loaded (the disk fast path).
    """
    if STATE.json:
        command = _current_command()
        if command is not None and command != result.command:
            from dataclasses import replace

            result = replace(result, command=command)
        _write_document(envelope(result))
    elif human is not None:
        human(result.data)
        STATE.result_code = result.exit_code
    for err in result.errors:
        if not STATE.json:
            print_error(err.get("message", ""), err.get("hint", ""))
    return result.exit_code


def print_error(message: str, hint: str = "") -> None:
    """One line on stderr (and the next action on a second line when there is one)."""
    con = err_console()
    con.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        con.print(f"[dim]hint:[/] {escape(hint)}")


def report_error(error: dict[str, Any], exit_code: int) -> None:
    """An error as the command's output: the JSON error document with --json, else one line (and a hint)."""
    if STATE.json:
        print_json_error(STATE.command, error, exit_code)
    else:
        print_error(error.get("message", ""), error.get("hint", ""))


def internal_error(exc: BaseException, exit_code: int) -> int:
    """Report a failure vboot did not expect in one line (callers re-raise under VBOOT_DEBUG=1); returns the exit
    code to leave with."""
    report_error({"code": "internal", "message": f"internal error: {type(exc).__name__}: {exc}",
                  "hint": "re-run with VBOOT_DEBUG=1 for the traceback and report it"}, exit_code)
    return exit_code


def broken_pipe() -> int:
    """`vboot ... | head`: the reader went away, which is no error (exit 0). stderr is closed too, so that Python's
    final flush of the unread output does not print a second error."""
    sys.stderr.close()
    return 0


def print_json_error(command: str, error: dict[str, Any], exit_code: int) -> None:
    _write_document(error_envelope(command, error, exit_code))


def interrupted(exc: BaseException) -> int:
    """Ctrl-C (KeyboardInterrupt) or SIGTERM (its ``signum`` attribute, see bootstrap.cli.interrupt): the
    error envelope with --json, else one line on stderr; returns the exit code, 128 + the signal's number (130,
    143).

    When the command's result is already out, it stands: the exit code is that result's.
    """
    signum = int(getattr(exc, "signum", signal.SIGINT))
    if STATE.result_code is not None:
        return STATE.result_code
    code = 128 + signum
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    message = f"interrupted by {name}; the command did not finish"
    if STATE.json:
        print_json_error(STATE.command, {"code": "interrupted", "message": message,
                                         "hint": "run it again (a pull resumes where it stopped)"}, code)
    else:  # one line: the person who pressed Ctrl-C needs no hint
        if signum == signal.SIGINT and sys.stderr.isatty():
            sys.stderr.write("\n")  # the terminal echoed ^C without a line break
        print_error(message)
    return code


def info(message: str) -> None:
    """A progress or log line for people, on stderr (never with --json)."""
    if not STATE.json:
        err_console().print(message)


def warn(message: str) -> None:
    """A warning for people, on stderr (never with --json: the JSON data carries it), markup escaped."""
    if not STATE.json:
        err_console().print(f"[yellow]warning:[/] {escape(message)}")


# What a terminal acts on instead of showing: C0 controls (ESC starts escape sequences, CR rewrites the line, BEL
# rings), DEL, C1 controls (U+009B alone is a CSI on some terminals), the Unicode line and paragraph separators, the
# bidirectional marks and overrides (they reorder what is shown) and lone surrogates (a file name's undecodable
# bytes, which the stream's encoder would refuse).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _SHORT:
        return _SHORT[ch]
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # os.fsdecode's surrogateescape of byte cp - 0xDC00: as display_path writes it
        return f"\\x{cp - 0xDC00:02x}"
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as a visible escape (``\\x1b``, ``\\n``,
    ``\\u2028``; an undecodable byte of a file name as ``\\xff``, like ``disk``'s JSON). Plain text is returned
    as is."""
    return _UNSAFE.sub(_visible, text)


def escape(text: str) -> str:
    """``text`` made safe for the human view: control characters as visible escapes (:func:`printable`) and rich
    markup escaped (paths, messages and pip output may hold ``[...]``). Every untrusted string a person reads goes
    through here; JSON carries the original."""
    from rich.markup import escape as rich_escape

    return rich_escape(printable(str(text)))


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"
