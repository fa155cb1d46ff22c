"""The vboot entry point: a lazily-loaded Click group and the one error handler.

Subcommands are imported only when invoked, so `vboot doctor` never pays for the import of `serve` or
`pull` (and through them modelscope or httpx).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from bootstrap import __version__
from bootstrap.cli import output
from bootstrap.cli.optguard import GuardedCommand, guard
from bootstrap.core.environ import debug_enabled
from bootstrap.core.errors import EXIT_FAIL, EXIT_SIGINT, EXIT_USAGE, VbootError

# name -> "module:attribute". Order is the order in `vboot --help`.
COMMANDS: dict[str, str] = {
    "doctor": "bootstrap.cli.doctor:doctor",
    "profiles": "bootstrap.cli.profiles_cmd:profiles",
    "pull": "bootstrap.cli.pull:pull",
    "serve": "bootstrap.cli.serve:serve",
    "ps": "bootstrap.cli.ps:ps",
    "stop": "bootstrap.cli.stop:stop",
    "logs": "bootstrap.cli.logs:logs",
    "top": "bootstrap.cli.top:top",
    "route": "bootstrap.cli.route:route",
    "sleep": "bootstrap.cli.sleep_cmd:sleep",
    "wake": "bootstrap.cli.sleep_cmd:wake",
    "disk": "bootstrap.cli.disk:disk",
    "setup": "bootstrap.cli.setup_cmd:setup",
    "env": "bootstrap.cli.env_cmd:env",
    "kernel": "bootstrap.cli.env_cmd:kernel",
    "export": "bootstrap.cli.export:export",
    "service": "bootstrap.cli.service:service",
    "supervise": "bootstrap.cli.supervise:supervise",  # internal: the detached supervisor of `serve --detach`
    "supervise-route": "bootstrap.cli.route:supervise_route",  # internal: the detached supervisor of `route`
    "route-front": "bootstrap.cli.route:route_front",  # internal: the route's HTTP front
}
HIDDEN = frozenset({"supervise", "supervise-route", "route-front"})

SHORT_HELP: dict[str, str] = {
    "doctor": "Judge this box: driver, CUDA, torch, vLLM, disk, VRAM, ports, env, leftovers.",
    "profiles": "List the built-in and user profiles.",
    "pull": "Download a profile's model through ModelScope (disk budget, resume, integrity).",
    "serve": "Pre-flight, pull, and run a supervised vLLM server from a profile.",
    "ps": "List vboot's servers, orphaned vLLM processes and other programs' vLLM processes.",
    "stop": "Stop a server, all servers, orphaned vLLM processes, or a vLLM process by PID.",
    "logs": "Show (or follow) a server's vLLM log.",
    "top": "Live view of a server's engine metrics and the GPUs.",
    "route": "One OpenAI endpoint in front of every running server, routing by model.",
    "sleep": "Put a GPU server to sleep (vLLM's sleep mode), measured with NVML.",
    "wake": "Wake a sleeping server.",
    "disk": "Largest directories (du-style), model/package caches, and cleanup.",
    "setup": "Create a Python environment with the right vLLM build for this box.",
    "env": "Print the exports a profile implies (for eval or a .env file).",
    "kernel": "Register the vLLM environment as a Jupyter kernel with a profile's variables.",
    "export": "Export a profile to other platforms (Kubernetes).",
    "service": "Run a profile as a systemd service (restarts, boot, readiness, watchdog).",
}


class LazyGroup(GuardedCommand, click.Group):
    """A group whose commands are imported on first use. Every command it hands out refuses an option-like
    argument where an option's value belongs (:mod:`bootstrap.cli.optguard`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # a command not built yet in this checkout
                return None
            raise
        return guard(getattr(module, attr))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every command module.
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx) if name not in HIDDEN]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vboot")
def cli() -> None:
    """vboot: from a fresh GPU box to a vLLM server you trust and can watch.

    Start with `vboot doctor`, then `vboot serve tiny` (CPU demo) or `vboot serve qwen`.
    Every command takes --json for one machine-readable document on stdout.
    Set VBOOT_DEBUG=1 to see tracebacks.
    """


def _command_name(argv: list[str]) -> str:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return "vboot"


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; translate expected errors to one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    ours = args[: args.index("--")] if "--" in args else args  # after `--`, arguments belong to vLLM
    if "--json" in ours:
        output.STATE.json = True
    output.STATE.command = _command_name(ours)
    debug = debug_enabled()
    try:
        rv: Any = cli.main(args=args, prog_name="vboot", standalone_mode=False)
    except VbootError as exc:
        if debug:
            raise
        output.report_error(exc.to_dict(), exc.exit_code)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        output.print_error("aborted")
        sys.exit(EXIT_SIGINT)
    except click.ClickException as exc:
        output.report_error({"code": "usage", "message": exc.format_message(), "hint": "run `vboot --help` or `vboot COMMAND --help`"},
                exc.exit_code if exc.exit_code else EXIT_USAGE)
        sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(EXIT_SIGINT)
    except BrokenPipeError:
        output.exit_broken_pipe()
    except Exception as exc:  # an unexpected failure: one line unless debugging
        if debug:
            raise
        output.exit_internal_error(exc, EXIT_FAIL)
    if isinstance(rv, int):
        sys.exit(rv)
    sys.exit(0)
