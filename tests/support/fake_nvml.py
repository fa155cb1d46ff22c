"""A fake NVML that plays named scenarios (gpustat's habit): no library, no driver, no GPU, one H100, a lost GPU,
several GPUs with or without NVLink, a field not supported, a process holding memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

GiB = 1024**3


class FakeNVMLError(Exception):
    def __init__(self, value: int, text: str = "") -> None:
        super().__init__(text or f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * GiB
    used: int = 1 * GiB
    cc: tuple[int, int] = (9, 0)
    mig: int | None = 0
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)
    lost: bool = False  # every query fails with GPU_IS_LOST
    unsupported: set[str] = field(default_factory=set)  # query names answering NOT_SUPPORTED


class FakeNvml:
    """Implements the slice of pynvml that bootstrap.probes.nvml uses."""

    NVMLError = FakeNVMLError

    def __init__(self, gpus: list[FakeGpu] | None = None, init_error: int | None = None,
                 driver: str = "580.159.04", cuda: int = 13000) -> None:
        self.gpus = gpus or []
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.initialised = False
        self.inits = 0  # nvmlInit calls, failed ones included
        self.shutdowns = 0
        self.links: dict[tuple[int, int], tuple[bool, bool]] = {}  # (a, b) -> (nvlink, p2p read)
        self.topology: dict[tuple[int, int], int] = {}  # (a, b) -> NVML_TOPOLOGY_* level

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlSystemGetNVMLVersion(self) -> str:
        return "13.580.159.04"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    def _q(self, g: FakeGpu, what: str) -> None:
        if g.lost:
            raise FakeNVMLError(15, "GPU is lost")
        if what in g.unsupported:
            raise FakeNVMLError(3, "Not Supported")

    def nvmlDeviceGetName(self, g: FakeGpu) -> str:
        self._q(g, "name")
        return g.name

    def nvmlDeviceGetUUID(self, g: FakeGpu) -> str:
        self._q(g, "uuid")
        return g.uuid

    def nvmlDeviceGetPciInfo(self, g: FakeGpu) -> Any:
        self._q(g, "pci")
        return SimpleNamespace(busId=b"00000000:01:00.0")

    def nvmlDeviceGetMemoryInfo(self, g: FakeGpu) -> Any:
        self._q(g, "memory")
        return SimpleNamespace(total=g.total, used=g.used, free=g.total - g.used)

    def nvmlDeviceGetCudaComputeCapability(self, g: FakeGpu) -> tuple[int, int]:
        self._q(g, "cc")
        return g.cc

    def nvmlDeviceGetMigMode(self, g: FakeGpu) -> tuple[int, int]:
        self._q(g, "mig")
        if g.mig is None:
            raise FakeNVMLError(3, "Not Supported")
        return (g.mig, g.mig)

    def nvmlDeviceGetUtilizationRates(self, g: FakeGpu) -> Any:
        self._q(g, "util")
        return SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetTemperature(self, g: FakeGpu, sensor: int) -> int:
        self._q(g, "temperature")
        return 41

    def nvmlDeviceGetPowerUsage(self, g: FakeGpu) -> int:
        self._q(g, "power")
        return 123456

    def nvmlDeviceGetEnforcedPowerLimit(self, g: FakeGpu) -> int:
        self._q(g, "power")
        return 700000

    def nvmlDeviceGetP2PStatus(self, a: FakeGpu, b: FakeGpu, index: int) -> int:
        link = self.links.get((self.gpus.index(a), self.gpus.index(b))) or self.links.get(
            (self.gpus.index(b), self.gpus.index(a)))
        if link is None:
            raise FakeNVMLError(3, "Not Supported")
        nvlink, p2p = link
        return 0 if (nvlink if index == 2 else p2p) else 4  # NVML_P2P_STATUS_OK / _NOT_SUPPORTED

    def nvmlDeviceGetTopologyCommonAncestor(self, a: FakeGpu, b: FakeGpu) -> int:
        key = (self.gpus.index(a), self.gpus.index(b))
        return self.topology.get(key, self.topology.get(key[::-1], 50))

    def nvmlDeviceGetComputeRunningProcesses(self, g: FakeGpu) -> list[Any]:
        self._q(g, "processes")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in g.processes]


# Named scenarios (gpustat's habit): each returns a fresh FakeNvml.
def no_library() -> FakeNvml:
    return FakeNvml(init_error=12)


def driver_not_loaded() -> FakeNvml:
    return FakeNvml(init_error=9)


def no_gpu() -> FakeNvml:
    return FakeNvml(gpus=[])


def one_h100(used: int = 1 * GiB, processes=None) -> FakeNvml:
    return FakeNvml(gpus=[FakeGpu(used=used, processes=list(processes or []))])


def two_gpus_one_lost() -> FakeNvml:
    return FakeNvml(gpus=[FakeGpu(uuid="GPU-aaaa"), FakeGpu(uuid="GPU-bbbb", lost=True)])


def gpus(n: int, nvlink_pairs: set[tuple[int, int]] = frozenset(), p2p: bool = True, level: int = 50,
         free: int | None = None) -> FakeNvml:
    """n H100s; pairs in ``nvlink_pairs`` have NVLink, the others PCIe (P2P per ``p2p``) through ``level``."""
    fake = FakeNvml(gpus=[FakeGpu(uuid=f"GPU-{i:04d}", used=(80 * GiB - free) if free is not None else GiB)
                          for i in range(n)])
    for a in range(n):
        for b in range(a + 1, n):
            nv = (a, b) in nvlink_pairs
            fake.links[(a, b)] = (nv, nv or p2p)
            fake.topology[(a, b)] = 0 if nv else level
    return fake


def driver_for_cuda(cuda: int, driver: str = "", gpu: FakeGpu | None = None) -> FakeNvml:
    """One GPU (an H100 unless ``gpu``) behind a driver whose NVML reports CUDA ``cuda`` (12080 = 12.8)."""
    drivers = {11080: "520.61.05", 12020: "535.183.01", 12080: "570.86.15", 12090: "575.57.08", 13000: "580.159.04",
               13010: "590.44.01"}
    return FakeNvml(gpus=[gpu or FakeGpu()], driver=driver or drivers.get(cuda, "999.0"), cuda=cuda)


def below_min_capability() -> FakeNvml:
    """A Tesla V100 (compute capability 7.0) on a current driver: below vLLM's 7.5."""
    return driver_for_cuda(13000, gpu=FakeGpu(name="Tesla V100-SXM2-32GB", total=32 * GiB, cc=(7, 0)))


def field_not_supported() -> FakeNvml:
    return FakeNvml(gpus=[FakeGpu(unsupported={"temperature", "power", "mig", "processes"})])


def process_holding_memory(pid: int = 4242, held: int = 70 * GiB) -> FakeNvml:
    return FakeNvml(gpus=[FakeGpu(used=held + GiB, processes=[(pid, held)])])

