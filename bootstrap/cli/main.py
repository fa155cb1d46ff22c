"""The vboot entry point: a lazily-loaded Click group and the one error handler.

Subcommands are imported only when invoked, so `vboot doctor` never pays for the import of `serve` or
`pull` (and through them modelscope or httpx).

The JSON contract is kept here for every command at once: each click context records its command path (the
envelope's ``command`` for errors, help and interrupts, the same one ``output.emit`` uses for results);
``--help`` and ``--version`` with ``--json`` print one envelope carrying the text; Ctrl-C and SIGTERM end in
the ``interrupted`` error envelope with exit 130 / 143 (bootstrap.cli.interrupt).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import click

from bootstrap import __version__
from bootstrap.cli import interrupt, output
from bootstrap.cli.optguard import GuardedCommand, guard
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import debug_enabled
from bootstrap.core.errors import EXIT_FAIL, EXIT_SIGINT, EXIT_USAGE, VbootError


@dataclass(frozen=True)
class HelpText:
    """`vboot ... --help --json`'s data: the help text and the usage line."""

    help: str
    usage: str


@dataclass(frozen=True)
class VersionText:
    """`vboot --version --json`'s data."""

    version: str


class Entry(NamedTuple):
    """One command of the lazily loaded group: where it is, and its line in `vboot --help`."""

    target: str  # "module:attribute", imported on first use
    help: str  # the short help `vboot --help` shows without importing the command
    hidden: bool = False  # not listed by `vboot --help` (still runs)


# The one table of commands (after vLLM's CLI_COMMANDS[name] = (module, help)). Order is `vboot --help`'s.
COMMANDS: dict[str, Entry] = {
    "doctor": Entry("bootstrap.cli.doctor:doctor",
                    "Judge this box: driver, CUDA, torch, vLLM, disk, VRAM, ports, env, leftovers."),
    "profiles": Entry("bootstrap.cli.profiles_cmd:profiles", "List the built-in and user profiles."),
    "pull": Entry("bootstrap.cli.pull:pull",
                  "Download a profile's model through ModelScope (disk budget, resume, integrity)."),
    "serve": Entry("bootstrap.cli.serve:serve", "Pre-flight, pull, and run a supervised vLLM server from a profile."),
    "ps": Entry("bootstrap.cli.ps:ps",
                "List vboot's servers, orphaned vLLM processes and other programs' vLLM processes."),
    "stop": Entry("bootstrap.cli.stop:stop",
                  "Stop a server, all servers, orphaned vLLM processes, or a vLLM process by PID."),
    "logs": Entry("bootstrap.cli.logs:logs", "Show (or follow) a server's vLLM log."),
    "top": Entry("bootstrap.cli.top:top", "Live view of a server's engine metrics and the GPUs."),
    "route": Entry("bootstrap.cli.route:route",
                   "One OpenAI endpoint in front of every running server, routing by model."),
    "sleep": Entry("bootstrap.cli.sleep_cmd:sleep",
                   "Put a GPU server to sleep (vLLM's sleep mode), measured with NVML."),
    "wake": Entry("bootstrap.cli.sleep_cmd:wake", "Wake a sleeping server."),
    "disk": Entry("bootstrap.cli.disk:disk", "Largest directories (du-style), model/package caches, and cleanup."),
    "setup": Entry("bootstrap.cli.setup_cmd:setup",
                   "Create a Python environment with the right vLLM build for this box."),
    "env": Entry("bootstrap.cli.env_cmd:env", "Print the exports a profile implies (for eval or a .env file)."),
    "kernel": Entry("bootstrap.cli.env_cmd:kernel",
                    "Register the vLLM environment as a Jupyter kernel with a profile's variables."),
    "export": Entry("bootstrap.cli.export:export", "Export a profile to other platforms (Kubernetes)."),
    "service": Entry("bootstrap.cli.service:service",
                     "Run a profile as a systemd service (restarts, boot, readiness, watchdog)."),
    # internal: the detached supervisor of `serve --detach`
    "supervise": Entry("bootstrap.cli.supervise:supervise", "Supervise a detached server (internal).", hidden=True),
    # internal: the detached supervisor of `route`, and the route's HTTP front
    "supervise-route": Entry("bootstrap.cli.route:supervise_route", "Supervise a detached route (internal).",
                             hidden=True),
    "route-front": Entry("bootstrap.cli.route:route_front", "The route's HTTP front (internal).", hidden=True),
}


def _show_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """click's help option, except that with --json the help text travels in the envelope (``data.help``, with
    ``data.usage``; exit 0): a caller that asked for JSON gets one JSON document, whatever else it asked."""
    if not value or ctx.resilient_parsing:
        return
    if output.STATE.json:
        ctx.exit(output.emit(CommandResult(output.command_path(ctx), HelpText(ctx.get_help(), ctx.get_usage()))))
    click.echo(ctx.get_help(), color=ctx.color)
    ctx.exit()


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    if output.STATE.json:
        ctx.exit(output.emit(CommandResult(output.command_path(ctx), VersionText(__version__))))
    click.echo(f"vboot, version {__version__}", color=ctx.color)
    ctx.exit()


class VbootContext(click.Context):
    """The context of every vboot command: records its command path for the error envelope (a usage error in
    `disk clean`'s options is reported as `disk clean`, like its result) and gives its help option the JSON
    behaviour of :func:`_show_help`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        output.STATE.command = output.command_path(self)
        help_option = self.command.get_help_option(self)  # click builds it once per command and keeps it
        if help_option is not None:
            help_option.callback = _show_help


def _adopt(command: click.Command) -> click.Command:
    """Give ``command`` and its subcommands (their modules declare plain click commands) :class:`VbootContext`."""
    command.context_class = VbootContext
    for sub in getattr(command, "commands", {}).values():
        _adopt(sub)
    return command


class LazyGroup(GuardedCommand, click.Group):
    """A group whose commands are imported on first use. Every command it hands out refuses an option-like
    argument where an option's value belongs (:mod:`bootstrap.cli.optguard`)."""

    context_class = VbootContext

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # a command not built yet in this checkout
                return None
            raise
        return _adopt(guard(getattr(module, attr)))

    def invoke(self, ctx: click.Context) -> Any:
        # click turns a KeyboardInterrupt into a bare Abort (after a blank line on stderr); carry it past click
        # instead, with its signal, to the one handler in main().
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise interrupt.Stopped(exc) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every command module.
        rows = [(name, entry.help) for name in self.list_commands(ctx) if not (entry := COMMANDS[name]).hidden]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="Show the version and exit.")
@click.option("--json", is_flag=True, expose_value=False, is_eager=True, hidden=True, callback=output.set_json)
def cli() -> None:
    """vboot: from a fresh GPU box to a vLLM server you trust and can watch.

    Start with `vboot doctor`, then `vboot serve tiny` (CPU demo) or `vboot serve qwen`.
    Every command takes --json for one machine-readable document on stdout.
    Set VBOOT_DEBUG=1 to see tracebacks.
    """


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI and leave the process with its exit code: the one place vboot exits (the console script's
    disk fast path aside, bootstrap.cli.entry). Commands return their exit code (:func:`output.emit`'s); expected
    errors become one line (or the error envelope) and their code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """The exit code of ``vboot ARGV``, with every error reported (and, with VBOOT_DEBUG=1, re-raised)."""
    args = list(sys.argv[1:] if argv is None else argv)
    ours = args[: args.index("--")] if "--" in args else args  # after `--`, arguments belong to vLLM
    output.STATE.reset(as_json="--json" in ours)
    previous = interrupt.install()
    debug = debug_enabled()
    try:
        rv: Any = cli.main(args=args, prog_name="vboot", standalone_mode=False)
    except VbootError as exc:
        if debug:
            raise
        output.report_error(exc.to_dict(), exc.exit_code)
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C or SIGTERM while click parsed the arguments
            return output.interrupted(exc.__cause__)
        output.print_error("aborted")  # end of input at a prompt
        return EXIT_SIGINT
    except click.ClickException as exc:
        code = exc.exit_code if exc.exit_code else EXIT_USAGE
        output.report_error({"code": "usage", "message": exc.format_message(),
                             "hint": "run `vboot --help` or `vboot COMMAND --help`"}, code)
        return code
    except (KeyboardInterrupt, interrupt.Stopped) as exc:
        return output.interrupted(exc)
    except BrokenPipeError:
        return output.broken_pipe()
    except Exception as exc:  # an unexpected failure: one line unless debugging
        if debug:
            raise
        return output.internal_error(exc, EXIT_FAIL)
    finally:
        interrupt.restore(previous)
    # A command returns its exit code; click's own exit (ctx.exit, --help) comes back as the code it carries.
    return rv if isinstance(rv, int) else 0
