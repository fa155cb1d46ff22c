"""Hand-written fakes for unit tests: an NVML that plays named scenarios, and doctor collaborators."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
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
        self.shutdowns = 0

    def nvmlInit(self) -> None:
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


def field_not_supported() -> FakeNvml:
    return FakeNvml(gpus=[FakeGpu(unsupported={"temperature", "power", "mig", "processes"})])


def process_holding_memory(pid: int = 4242, held: int = 70 * GiB) -> FakeNvml:
    return FakeNvml(gpus=[FakeGpu(used=held + GiB, processes=[(pid, held)])])


@dataclass
class FakeDiskFree:
    free: int = 500 * GiB
    total: int = 1000 * GiB

    def __call__(self, path: Path) -> Any:
        return SimpleNamespace(path=str(path), checked_path=str(path), free_bytes=self.free, total_bytes=self.total)
