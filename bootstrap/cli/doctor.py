"""`vboot doctor`: is this box ready to serve the profile? One verdict per check, each with a fix."""

from __future__ import annotations

import click

from bootstrap.cli import output
from bootstrap.core.checks import CHECKS, Status, overall
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError
from bootstrap.core.profiles import DEFAULT_PROFILE, load_profile, resolve_serve_settings
from bootstrap.core.reports.doctor import CheckListing, DoctorReport, check_listing, doctor_report


class _DoctorCommand(click.Command):
    """Records what came after ``--``: only that is vLLM's (a stray ``vboot doctor qwen`` is an error)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["vboot.after_double_dash"] = args[args.index("--") + 1:] if "--" in args else []
        return super().parse_args(ctx, args)


@click.command(cls=_DoctorCommand)
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- EXTRA_VLLM_ARGS]")
@click.option("--profile", "-p", "profile_name", default=DEFAULT_PROFILE, show_default=True,
              help="Profile to judge the box against (see `vboot profiles`).")
@click.option("--check", "check_ids", multiple=True, metavar="ID",
              help="Run only this check (repeatable; a prefix such as 'env' selects a group).")
@click.option("--list-checks", is_flag=True, help="List the checks and their ids, then exit.")
@click.option("--vllm-python", metavar="PATH", help="The Python whose vLLM `vboot serve` will use.")
@click.option("--port", type=click.IntRange(1, 65535), help="Judge this port instead of the profile's.")
@click.option("--host", help="Judge this bind address instead of the profile's (as `vboot serve --host`).")
@click.option("--cache-dir", metavar="DIR", help="Judge this model cache (as `vboot serve --cache-dir`).")
@click.option("--device", type=click.Choice(("gpu", "cpu", "auto")),
              help="Judge serving on this device instead of the profile's serve.device (as `vboot serve --device`).")
@output.json_option
def doctor(extra_args: tuple[str, ...], profile_name: str, check_ids: tuple[str, ...], list_checks: bool,
           vllm_python: str | None, port: int | None, host: str | None, cache_dir: str | None, device: str | None,
           as_json: bool) -> int:
    """Judge whether this box can serve PROFILE: NVIDIA driver and CUDA (NVML), torch's CUDA build, vLLM,
    disk and VRAM against the model, ports, leftover vLLM processes and environment variables.

    Give it what you will give `vboot serve` (--port, --host, --cache-dir, --vllm-python and the vLLM arguments
    after --) and it judges exactly that run. Each finding comes with a fix. Exit 0 when nothing fails, 1
    otherwise, 2 for usage errors.
    """
    after = click.get_current_context().meta.get("vboot.after_double_dash", [])
    if len(extra_args) > len(after):
        raise UsageError(f"unexpected argument {extra_args[0]!r}",
                         hint="the profile is --profile NAME; vLLM arguments go after --")
    if list_checks:
        return output.emit(CommandResult("doctor", check_listing()), human=_render_list)
    known = {c.id for c in CHECKS}
    for cid in check_ids:
        if cid not in known and not any(k.startswith(cid + ".") for k in known):
            raise UsageError(f"unknown check id {cid!r}", hint="run `vboot doctor --list-checks` for the ids")
    env = Environ()
    settings = resolve_serve_settings(load_profile(profile_name, env), env, host=host, port=port,
                                      extra_args=extra_args, cache_dir=cache_dir, vllm_python=vllm_python,
                                      device=device)
    from bootstrap.cli.wiring import doctor_collaborators
    from bootstrap.core.preflight import diagnose

    facts, results = diagnose(settings, env, check_ids=check_ids or None, collab=doctor_collaborators(env))
    status, code = overall(results)
    report = doctor_report(profile_name, facts.device, facts.device_decision.reason, results, env.read)
    return output.emit(CommandResult("doctor", report, status=status, exit_code=code), human=_render)


_MARK = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "skip": "[dim]-[/]"}


def _render(data: DoctorReport) -> None:
    escape = output.escape  # summaries and hints quote paths, pip output and variables: never markup

    con = output.console()
    con.print(f"[bold]vboot doctor[/] — profile [bold]{data.profile}[/], serving on the {data.device.upper()}")
    con.print(f"[dim]device: {escape(data.device_reason)}[/]")
    group = None
    for c in data.checks:
        if c.group != group:
            group = c.group
            con.print(f"\n[bold]{group}[/]")
        con.print(f"  {_MARK[c.status.value]} [dim]{c.id:<26}[/] {escape(c.summary)}")
        if c.hint and c.status in (Status.WARN, Status.FAIL):
            con.print(f"    [dim]fix:[/] {escape(c.hint)}")
        if c.id == "env.report" and c.data.get("variables"):
            for k, v in c.data["variables"].items():
                con.print(f"    [dim]{k}={escape(v)}[/]")
    n = data.counts
    colour = "red" if n.fail else "yellow" if n.warn else "green"
    verdict = "not ready" if n.fail else "ready, with warnings" if n.warn else "ready"
    con.print(f"\n[bold {colour}]{verdict}[/]: {n.ok} ok, {n.warn} warning(s), {n.fail} failure(s), "
              f"{n.skip} skipped")


def _render_list(data: CheckListing) -> None:
    con = output.console()
    for c in data.checks:
        con.print(f"[bold]{c.id:<26}[/] {c.title}")
