"""A plain `vboot disk [PATH]...` request, and the scan started for it before the CLI loads (its head start).

The options of the report live here, in one table: the click command declares itself from it
(bootstrap.cli.disk) and :func:`disk_request`'s grammar is generated from it, so the head start can never
understand an option differently from click (tests/test_disk_headstart.py holds the two to each other). The
console script (bootstrap.cli.entry) parses with it and starts the scan; the fast path (bootstrap.cli.disk_view)
and the click command take the scan's result with :func:`take_head_start`.

Imported before anything else by the console script: plain Python only (no dataclasses, no typing).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing itself costs an import on the disk fast path
if TYPE_CHECKING:
    from bootstrap.core.headstart import HeadStart

# The report's options: (parameter, spellings). A flag is False unless given.
FLAGS = (
    ("apparent", ("--apparent",)),
    ("one_file_system", ("--one-file-system", "-x")),
    ("json", ("--json",)),  # bootstrap.cli.output.json_option (the parameter click calls as_json)
)
# Options with a whole-number value: (parameter, spellings, default, smallest, largest or None).
VALUED = (
    ("depth", ("--depth", "-d"), 1, 0, 64),
    ("top", ("--top", "-n"), 15, 1, None),
)
SUBCOMMANDS = ("caches", "clean")  # a first argument with one of these names is no PATH

_FLAG = {spelling: name for name, spellings in FLAGS for spelling in spellings}
_VALUED = {spelling: (name, low, high) for name, spellings, _default, low, high in VALUED for spelling in spellings}
_DEFAULTS = {**{name: False for name, _ in FLAGS}, **{name: default for name, _, default, _, _ in VALUED}}

# The HeadStart running this process's first disk scan, if any (set by bootstrap.cli.entry).
HEAD_START: HeadStart | None = None


def option(name: str) -> tuple[str, ...]:
    """The spellings of the option ``name``, for its click declaration."""
    for table in (FLAGS, VALUED):
        for row in table:
            if row[0] == name:
                return row[1]
    raise KeyError(name)


def valued(name: str) -> tuple[int, int, int | None]:
    """(default, smallest, largest or None) of the valued option ``name``."""
    row = next(r for r in VALUED if r[0] == name)
    return row[2], row[3], row[4]


def disk_request(args: list[str]) -> dict | None:
    """What `vboot disk ARGS` asks for, when ARGS are plain: {"paths", "depth", "top", "apparent",
    "one_file_system", "json"} with click's defaults; None for anything else (click then parses it)."""
    found: dict = {"paths": [], **_DEFAULTS}
    paths = found["paths"]
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            paths.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            paths.append(arg)
            continue
        if arg in _FLAG:
            found[_FLAG[arg]] = True
            continue
        spelling, value = arg, None
        if arg.startswith("--") and "=" in arg:
            spelling, value = arg.split("=", 1)
        elif not arg.startswith("--") and len(arg) > 2:
            spelling, value = arg[:2], arg[2:]
        if spelling not in _VALUED:
            return None
        if value is None:
            if i >= len(args):
                return None
            value, i = args[i], i + 1
        if not (value.isascii() and value.isdigit()) or len(value) > 9:
            return None
        name, low, high = _VALUED[spelling]
        number = int(value)
        if number < low or (high is not None and number > high):
            return None  # click refuses it
        found[name] = number
    if paths and paths[0] in SUBCOMMANDS:
        return None  # a subcommand
    return found


def scan_args(request: dict) -> tuple[str, int, bool, bool]:
    """(root, depth, apparent, one_file_system) of a request's first report: the scan the head start runs."""
    root = request["paths"][0] if request["paths"] else os.environ.get("HOME") or os.path.expanduser("~")
    return root, request["depth"], request["apparent"], request["one_file_system"]


def _same(a: tuple, b: tuple) -> bool:
    return (os.path.abspath(a[0]), *a[1:]) == (os.path.abspath(b[0]), *b[1:])


def take_head_start(root: str, depth: int, apparent: bool, one_file_system: bool) -> dict | None:
    """The head start's result (what :func:`bootstrap.core.duwalk.scan_wire` returns) when it measured exactly
    this request; otherwise None, after stopping a head start that measured something else."""
    global HEAD_START
    started, HEAD_START = HEAD_START, None
    if started is None:
        return None
    if not _same(started.args, (root, depth, apparent, one_file_system)):
        started.cancel()
        return None
    result = started.result()
    return result if isinstance(result, dict) else None
