"""An option's value that looks like an option is a usage error, for every option of every command.

Click gives an option that takes a value whatever argument comes next: ``vboot setup --venv --dry-run`` makes
``--dry-run`` the directory and runs a real install. The rule, applied to each command before click parses it:

- a value given as the *next argument* (``--venv X``, ``-n X``) must not begin with ``-`` (``-`` alone, the
  usual "stdin", is fine), unless the option takes a number and the value is one (``--queue-target -1`` is a
  negative number; the command's own range check judges it);
- a value *attached* to its option (``--venv=-odd-dir``, ``-n-5``) is taken as given: that is how to pass a value
  that really starts with ``-``, e.g. an API key (``--api-key=-Xyz...``);
- everything after ``--`` belongs to vLLM (``vboot serve tiny -- --max-model-len 512``) and is never looked at.

:class:`GuardedCommand` is mixed into every command the top-level group hands out (:func:`guard`), so a command or
option added later is covered without doing anything; ``tests/test_optguard.py`` walks every command to prove it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import click

from bootstrap.core.errors import UsageError
from bootstrap.core.textsafe import one_line

_NUMBER = re.compile(r"^-(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
_NUMERIC_TYPES = (click.types.IntParamType, click.types.FloatParamType)


def takes_value(param: click.Parameter) -> bool:
    """Whether ``param`` is an option that consumes the argument after it (not a flag or a counter; not one whose
    value may be left out, which click itself never takes from an option-like argument)."""
    return (isinstance(param, click.Option) and not param.is_flag and not param.count
            and not getattr(param, "_flag_needs_value", False))


def looks_like_option(value: str, param: click.Parameter) -> bool:
    """Whether ``value``, given as the argument after ``param``, is an option rather than its value."""
    if not value.startswith("-") or value == "-":
        return False
    return not (isinstance(param.type, _NUMERIC_TYPES) and _NUMBER.match(value))


def option_like_values(command: click.Command, ctx: click.Context | None, args: Sequence[str]
                       ) -> list[tuple[str, str]]:
    """(option as written, value) for each value in ``args`` that :func:`looks_like_option`, scanning the way
    click's parser does: long options with or without ``=``, short options alone or clustered (``-fn 5``), up to
    ``--``, and for a group only up to its subcommand (each subcommand checks its own arguments)."""
    params = command.get_params(ctx) if ctx is not None else command.params
    by_name = {name: p for p in params if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}
    interspersed = not isinstance(command, click.Group) and (ctx is None or ctx.allow_interspersed_args)
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            if not interspersed:
                break
            continue
        wanted: click.Option | None = None
        if arg.startswith("--"):
            param = by_name.get(arg)  # "--opt=value" is not a key here: attached values are taken as given
            if param is not None and takes_value(param):
                wanted = param
        else:  # -abc: flags until one takes a value; the rest of the argument (if any) is its attached value
            for j, ch in enumerate(arg[1:], 1):
                param = by_name.get(f"-{ch}")
                if param is None:
                    break
                if takes_value(param):
                    if j == len(arg) - 1:
                        wanted = param
                    break
        if wanted is None:
            continue
        for value in args[i:i + wanted.nargs]:
            if looks_like_option(value, wanted):
                found.append((arg, value))
        i += wanted.nargs
    return found


class GuardedCommand(click.Command):
    """Mixed in before a command's own class: checks the arguments (:func:`option_like_values`) before click
    parses them, so the command never runs with an option taken for a value."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:  # shell completion parses partial command lines
            found = option_like_values(self, ctx, args)
            if found:
                option, value = found[0]
                attached = f"{option}={value}" if option.startswith("--") else f"{option}{value}"
                raise UsageError(
                    f"{option} needs a value, but the next argument is {one_line(repr(value))}, which looks like "
                    "an option",
                    hint=f"give {option} its value ({option} VALUE); a value that really begins with '-' must be "
                         f"attached: {one_line(attached)}",
                    option=option, value=value)
        return super().parse_args(ctx, args)


_GUARDED: dict[type, type] = {}


def guard(command: Any) -> Any:
    """``command`` (and, for a group, its subcommands) with :class:`GuardedCommand` mixed in; idempotent."""
    if command is None:
        return None
    cls = type(command)
    if not issubclass(cls, GuardedCommand):
        if cls not in _GUARDED:
            _GUARDED[cls] = type(f"Guarded{cls.__name__}", (GuardedCommand, cls), {"__module__": cls.__module__})
        command.__class__ = _GUARDED[cls]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            guard(sub)
    return command
