"""`vboot env` and `vboot kernel`: a profile's variables as shell exports or a .env file, and a Jupyter kernel
that carries them.

The text and the kernel spec come from bootstrap.core.shellenv. The setup machinery (bootstrap.core.setup) is
imported only where `kernel install` has to put ipykernel into an environment or find a venv's python.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from bootstrap.cli import output
from bootstrap.cli.output import escape
from bootstrap.cli.progress import StepProgress
from bootstrap.core import shellenv
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, UsageError
from bootstrap.core.reports.env import EnvExports, KernelInstalled, KernelListing, KernelRemoved

# ---------------------------------------------------------------------------------------------- env


def _profile_vars(profile_name: str, cache_dir: str | None, env: Environ):
    from bootstrap.core.envplan import plan_environment
    from bootstrap.core.profiles import load_profile, resolve_serve_settings

    profile = load_profile(profile_name, env)
    settings = resolve_serve_settings(profile, env, cache_dir=cache_dir)
    return profile, plan_environment(profile, settings.cache_dir, env.as_dict())


@click.command()
@click.argument("profile")
@click.option("--shell", type=click.Choice(shellenv.SHELLS), help="Syntax to print [default: from $SHELL, else bash].")
@click.option("--dotenv", is_flag=True,
              help="Print a .env file (NAME='value') instead of shell commands, quoted so that bash/dash/zsh "
                   "(`set -a; . ./.env`), python-dotenv and docker compose's env_file read the same values. A value "
                   "none of them can be given safely is refused: a carriage return, ${VAR}, a trailing or doubled "
                   "backslash, or ' together with $, `, \" or a backslash escape. (`docker run --env-file` reads "
                   "lines literally, quotes included: not a reader of this format.)")
@click.option("--cache-dir",
              help="ModelScope cache for this profile [default: $MODELSCOPE_CACHE or ~/.cache/modelscope].")
@output.json_option
def env(profile: str, shell: str | None, dotenv: bool, cache_dir: str | None, as_json: bool) -> int:
    """Print the variables PROFILE implies for vLLM, quoted for your shell.

    vboot's defaults (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True where it is safe, VLLM_USE_MODELSCOPE and
    MODELSCOPE_CACHE for ModelScope models), values already in your environment, then the profile's [env].

    \b
    Examples:
      eval "$(vboot env qwen)"                 # bash, zsh
      vboot env qwen --shell fish | source     # fish
      vboot env qwen --dotenv > .env           # then: set -a; . ./.env; set +a
    """
    environ = Environ()
    prof, plan = _profile_vars(profile, cache_dir, environ)
    chosen = shell or shellenv.shell_from_env(environ)
    text = shellenv.render_exports(plan.as_dict(), chosen, dotenv)
    for w in plan.warnings:
        output.info(f"[yellow]# warning:[/] {escape(w)}")
    exports = EnvExports(prof.name, "dotenv" if dotenv else chosen, plan.vars, plan.warnings, text)
    return output.emit(CommandResult("env", exports, status=exports.status), human=_render_exports)


def _render_exports(data: EnvExports) -> None:
    # Plain text on stdout, exactly as generated: it is meant for eval, `source` or a .env file.
    sys.stdout.write(data.text)
    sys.stdout.flush()


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
        from bootstrap.core.setup import venv_python

        py = venv_python(venv_dir.expanduser().absolute())
        if not py.exists():
            raise UsageError(f"{venv_dir} has no {py.relative_to(venv_dir.expanduser().absolute())}: not a virtual "
                             "environment",
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
    from bootstrap.core import setup as core
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
    with StepProgress(1) as progress:
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
@click.option("--cache-dir",
              help="ModelScope cache for this profile [default: $MODELSCOPE_CACHE or ~/.cache/modelscope].")
@output.json_option
def kernel_install(profile: str, name: str | None, display_name: str | None, venv_dir: Path | None,
                   cache_dir: str | None, as_json: bool) -> int:
    """Write a user kernelspec for PROFILE (installing ipykernel into the environment if it is missing).

    The kernel.json carries the profile's variables (`vboot env PROFILE`), so a notebook gets them without exports.
    Goes to $JUPYTER_DATA_DIR/kernels (default ~/.local/share/jupyter/kernels); an existing kernel of the same
    name is replaced.
    """
    environ = Environ()
    prof, plan = _profile_vars(profile, cache_dir, environ)
    kname = shellenv.kernel_name_for(prof.name, name)
    python = _kernel_python(venv_dir, environ)
    installed = _ensure_ipykernel(python, environ)
    spec = shellenv.kernel_spec(python, prof.name, plan.as_dict(), display_name)
    kdir = shellenv.user_kernels_dir(environ)
    replaced = (kdir / kname / "kernel.json").exists()
    path = shellenv.write_kernel(kdir, kname, spec)
    for w in plan.warnings:
        output.info(f"[yellow]warning:[/] {escape(w)}")
    installed_kernel = KernelInstalled(kname, str(path), python, prof.name, spec["display_name"], spec["env"],
                                       ipykernel_installed=installed, replaced=replaced)
    return output.emit(CommandResult("kernel", installed_kernel), human=_render_installed)


def _render_installed(data: KernelInstalled) -> None:
    con = output.console()
    output.done(f"kernel [bold]{data.name}[/] ({escape(data.display_name)}) "
                f"{'replaced' if data.replaced else 'installed'} in {data.path}")
    con.print(f"  python: {data.python}")
    for k, v in data.env.items():
        con.print(f"  {k}={escape(v)}")
    con.print("[dim]check: jupyter kernelspec list[/]")


@kernel.command("list")
@output.json_option
def kernel_list(as_json: bool) -> int:
    """List the user's Jupyter kernels, marking those vboot wrote (with their profile)."""
    environ = Environ()
    kdir = shellenv.user_kernels_dir(environ)
    kernels = shellenv.list_kernels(kdir)
    return output.emit(CommandResult("kernel", KernelListing(str(kdir), kernels)), human=_render_list)


def _render_list(data: KernelListing) -> None:
    con = output.console()
    if not data.kernels:
        con.print(f"no kernels in {data.kernels_dir}; add one with `vboot kernel install PROFILE`")
        return
    table = output.table(("name", "profile", "display name", "python", "variables"))
    for k in data.kernels:
        if k.error:
            table.add_row(k.name, "", f"[red]{escape(k.error)}[/]", "", "")
            continue
        table.add_row(k.name, k.profile or "[dim](not vboot's)[/]", escape(k.display_name), k.python,
                      ", ".join(k.env))
    con.print(table)
    con.print(f"[dim]{data.kernels_dir}[/]")


@kernel.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it even if vboot did not write it.")
@output.json_option
def kernel_remove(name: str, force: bool, as_json: bool) -> int:
    """Delete the user kernelspec NAME (only vboot's own, unless --force)."""
    import shutil

    from bootstrap.core.errors import ConflictError

    environ = Environ()
    kdir = shellenv.user_kernels_dir(environ)
    target = kdir / name
    if not name or "/" in name or name in (".", "..") or not target.is_dir():
        known = ", ".join(k.name for k in shellenv.list_kernels(kdir)) or "none"
        raise NotFoundError(f"no kernel named {name!r} in {kdir} (installed: {known})",
                            hint="run `vboot kernel list`")
    info = shellenv.read_kernel(target)
    if info.profile is None and not force:
        raise ConflictError(f"kernel {name!r} was not written by vboot", hint="pass --force to remove it anyway, "
                            "or use `jupyter kernelspec remove`")
    shutil.rmtree(target)
    return output.emit(CommandResult("kernel", KernelRemoved(name, str(target))),
                       human=lambda d: output.done(f"removed kernel {d.name} ({d.path})"))
