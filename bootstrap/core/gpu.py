"""What the NVML probe (bootstrap.probes.nvml) and the code that judges its answers (doctor's checks, `vboot top`, ps,
the supervisor) share: the records of a snapshot and the kind of a failure to read the GPUs. The probe fills them;
the remedies live where the checks are (bootstrap.core.checks)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from bootstrap.core.units import cuda_str


class NvmlErrorKind(str, enum.Enum):
    """Why NVML could not be read at all (a whole-snapshot failure; one GPU failing is reported on that GPU)."""

    LIBRARY_NOT_FOUND = "library_not_found"  # libnvidia-ml.so (or pynvml itself) is missing: no driver installed
    DRIVER_NOT_LOADED = "driver_not_loaded"  # installed but the kernel module is not loaded
    NO_PERMISSION = "no_permission"  # /dev/nvidia* not accessible to this user
    INIT_FAILED = "init_failed"  # any other failure of nvmlInit or of counting the GPUs

    @property
    def fatal(self) -> bool:
        """Nothing changes until the machine does (a driver installed or loaded): asking again is pointless."""
        return self in (NvmlErrorKind.LIBRARY_NOT_FOUND, NvmlErrorKind.DRIVER_NOT_LOADED)


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_bytes: int | None  # None where NVML reports N/A (e.g. inside some containers)
    kind: str = "compute"  # "compute" or "graphics"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str | None = None  # nvidia-smi --query-gpu=name
    uuid: str | None = None  # --query-gpu=uuid
    pci_bus_id: str | None = None  # --query-gpu=pci.bus_id
    memory_total_bytes: int | None = None  # --query-gpu=memory.total
    memory_used_bytes: int | None = None  # --query-gpu=memory.used
    memory_free_bytes: int | None = None  # --query-gpu=memory.free
    compute_capability: tuple[int, int] | None = None  # --query-gpu=compute_cap
    mig_mode: bool | None = None  # --query-gpu=mig.mode.current
    utilization_gpu_pct: int | None = None  # --query-gpu=utilization.gpu
    utilization_memory_pct: int | None = None  # --query-gpu=utilization.memory
    temperature_c: int | None = None  # --query-gpu=temperature.gpu
    power_w: float | None = None  # --query-gpu=power.draw
    power_limit_w: float | None = None  # --query-gpu=power.limit
    processes: tuple[GpuProcess, ...] = ()  # nvidia-smi --query-compute-apps=pid,used_memory
    error: str | None = None  # set when this GPU could not be read (lost, unknown error)


TOPOLOGY_NAMES = {0: "same board", 10: "one PCIe switch", 20: "several PCIe switches", 30: "PCIe host bridge",
                  40: "same NUMA node (through the CPU)", 50: "across NUMA nodes (through the SMP interconnect)"}


@dataclass(frozen=True)
class GpuLink:
    """How two GPUs reach each other: ``nvidia-smi topo -m`` and ``nvidia-smi topo -p2p rwn``."""

    a: int
    b: int
    nvlink: bool | None  # P2P over NVLink available
    p2p_read: bool | None  # peer-to-peer reads possible (NVLink or PCIe)
    common_ancestor: int | None  # NVML_TOPOLOGY_* level; None when not reported
    path: str | None = None  # TOPOLOGY_NAMES of common_ancestor


@dataclass(frozen=True)
class NvmlSnapshot:
    ok: bool
    error_kind: NvmlErrorKind | None = None  # set when ok is False
    error: str | None = None
    driver_version: str | None = None  # nvidia-smi --query-gpu=driver_version
    cuda_driver_version: int | None = None  # e.g. 13000 = CUDA 13.0 (nvidia-smi header "CUDA Version")
    nvml_version: str | None = None
    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)
    links: tuple[GpuLink, ...] = field(default_factory=tuple)  # every pair of healthy GPUs (several GPUs only)

    def __post_init__(self) -> None:
        if isinstance(self.error_kind, str) and not isinstance(self.error_kind, NvmlErrorKind):
            object.__setattr__(self, "error_kind", NvmlErrorKind(self.error_kind))  # read back from JSON

    def link(self, a: int, b: int) -> GpuLink | None:
        for ln in self.links:
            if {ln.a, ln.b} == {a, b}:
                return ln
        return None

    def gpu_bytes_by_pid(self) -> dict[int, int]:
        """GPU memory each process holds, summed over the GPUs (`nvidia-smi --query-compute-apps=pid,used_memory`)."""
        out: dict[int, int] = {}
        for g in self.gpus if self.ok else ():
            for p in g.processes:
                out[p.pid] = out.get(p.pid, 0) + (p.used_bytes or 0)
        return out

    @property
    def cuda_version_str(self) -> str | None:
        """The CUDA version the driver supports, as nvidia-smi's header shows it ("13.0"); None when unknown."""
        return cuda_str(self.cuda_driver_version) if self.cuda_driver_version else None
