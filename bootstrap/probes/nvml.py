"""The only module that talks to NVML (through ``pynvml`` from nvidia-ml-py).

Importing this module never touches the driver. :func:`snapshot` initialises NVML, reads everything doctor
needs, and shuts it down; :class:`NvmlSession` initialises it once for a process that reads again and again
(`vboot top` every second, after nvitop's ``_lazy_init``). Every failure becomes data: "library missing" and
"driver not loaded" are whole-snapshot errors (:class:`~bootstrap.core.gpu.NvmlErrorKind`; the fixes live with
doctor's checks), "not supported" becomes a None field, and one GPU failing (lost, unknown error) is reported on
that GPU while the others still report.

Shell equivalents are noted on each field: ``nvidia-smi --query-gpu=...``.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

from bootstrap.core.gpu import TOPOLOGY_NAMES as TOPOLOGY_NAMES
from bootstrap.core.gpu import GpuInfo as GpuInfo
from bootstrap.core.gpu import GpuLink as GpuLink
from bootstrap.core.gpu import GpuProcess as GpuProcess
from bootstrap.core.gpu import NvmlErrorKind as NvmlErrorKind
from bootstrap.core.gpu import NvmlSnapshot as NvmlSnapshot

# NVML return codes (nvml.h); compared by value so fakes need not subclass pynvml's exceptions.
ERROR_UNINITIALIZED = 1
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_NOT_FOUND = 6
ERROR_DRIVER_NOT_LOADED = 9
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_FUNCTION_NOT_FOUND = 13
ERROR_GPU_IS_LOST = 15
ERROR_UNKNOWN = 999


def _code(exc: BaseException) -> int | None:
    return getattr(exc, "value", None)


def _is_nvml_error(nvml: Any, exc: BaseException) -> bool:
    base = getattr(nvml, "NVMLError", None)
    return (base is not None and isinstance(exc, base)) or _code(exc) is not None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _load_default() -> Any:
    import pynvml  # nvidia-ml-py; ~37 ms

    return pynvml


def snapshot(nvml: Any | None = None, with_processes: bool = True) -> NvmlSnapshot:
    """Read the driver, CUDA driver version and every GPU, then shut NVML down (one look: doctor, serve's
    pre-flight). Never raises for driver/GPU conditions."""
    session = NvmlSession(nvml)
    try:
        return session.snapshot(with_processes)
    finally:
        session.close()


# nvmlInit's error codes with a kind of their own; any other is INIT_FAILED.
_INIT_ERROR_KINDS: dict[int | None, NvmlErrorKind] = {
    ERROR_LIBRARY_NOT_FOUND: NvmlErrorKind.LIBRARY_NOT_FOUND,
    ERROR_DRIVER_NOT_LOADED: NvmlErrorKind.DRIVER_NOT_LOADED,
    ERROR_NO_PERMISSION: NvmlErrorKind.NO_PERMISSION,
}


class NvmlSession:
    """NVML initialised once and read many times (nvitop's ``_lazy_init``): the first :meth:`snapshot`
    initialises it, later ones reuse it, :meth:`close` shuts it down. A failure to initialise is remembered:
    a fatal kind (library missing, driver not loaded) is answered from memory without asking NVML again,
    another kind is tried again on the next read. Thread-safe."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()
        self._initialised = False
        self._fatal: NvmlSnapshot | None = None

    def _init(self) -> NvmlSnapshot | None:
        """Initialise NVML unless it is; the failed snapshot when that is impossible, else None."""
        if self._initialised:
            return None
        if self._fatal is not None:
            return self._fatal
        try:
            self._nvml = self._nvml if self._nvml is not None else _load_default()
        except ImportError as exc:  # nvidia-ml-py itself missing (a broken install of vboot)
            self._fatal = NvmlSnapshot(ok=False, error_kind=NvmlErrorKind.LIBRARY_NOT_FOUND,
                                       error=f"the pynvml module is not importable ({exc})")
            return self._fatal
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except Exception as exc:  # classify every init failure
            if not _is_nvml_error(nvml, exc):
                raise
            code = _code(exc)
            kind = _INIT_ERROR_KINDS.get(code, NvmlErrorKind.INIT_FAILED)
            failed = NvmlSnapshot(ok=False, error_kind=kind, error=str(exc) or f"NVML error {code}")
            if kind.fatal:
                self._fatal = failed
            return failed
        self._initialised = True
        return None

    def snapshot(self, with_processes: bool = True) -> NvmlSnapshot:
        """Everything doctor and top read, as of now (``with_processes``: who holds memory, and the links
        between GPUs)."""
        with self._lock:
            failed = self._init()
            if failed is not None:
                return failed
            return _read(self._nvml, with_processes)

    def close(self) -> None:
        """Shut NVML down if this session initialised it (errors while shutting down are ignored)."""
        with self._lock:
            nvml = self._nvml
            if not self._initialised or nvml is None:
                return
            self._initialised = False
            try:
                nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down must not hide the result
                pass


def _read(nvml: Any, with_processes: bool) -> NvmlSnapshot:
    """One reading of an initialised NVML."""
    driver = _optional(nvml, lambda: _text(nvml.nvmlSystemGetDriverVersion()))
    cuda = _optional(nvml, nvml.nvmlSystemGetCudaDriverVersion)
    nvml_version = _optional(nvml, lambda: _text(nvml.nvmlSystemGetNVMLVersion()))
    try:
        count = nvml.nvmlDeviceGetCount()
    except Exception as exc:
        if not _is_nvml_error(nvml, exc):
            raise
        return NvmlSnapshot(ok=False, error_kind=NvmlErrorKind.INIT_FAILED, error=f"cannot count GPUs: {exc}",
                            driver_version=driver, cuda_driver_version=cuda, nvml_version=nvml_version)
    gpus = tuple(_read_gpu(nvml, i, with_processes) for i in range(count))
    links = _links(nvml, gpus) if with_processes and count > 1 else ()
    return NvmlSnapshot(ok=True, driver_version=driver, cuda_driver_version=cuda, nvml_version=nvml_version,
                        gpus=gpus, links=links)


def _optional(nvml: Any, fn: Any) -> Any:
    """Call an NVML query; 'not supported' and other per-field errors become None."""
    try:
        return fn()
    except Exception as exc:
        if _is_nvml_error(nvml, exc):
            if _code(exc) == ERROR_GPU_IS_LOST:
                raise
            return None
        raise


def _read_gpu(nvml: Any, index: int, with_processes: bool) -> GpuInfo:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(nvml.nvmlDeviceGetName(handle))
    except Exception as exc:
        if not _is_nvml_error(nvml, exc):
            raise
        return GpuInfo(index=index, error=_gpu_error(exc))
    try:
        mem = _optional(nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        cc = _optional(nvml, lambda: tuple(nvml.nvmlDeviceGetCudaComputeCapability(handle)))
        mig = _optional(nvml, lambda: nvml.nvmlDeviceGetMigMode(handle))
        util = _optional(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        temp = _optional(nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, 0))  # NVML_TEMPERATURE_GPU
        power = _optional(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle))  # milliwatts
        limit = _optional(nvml, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        procs: tuple[GpuProcess, ...] = ()
        if with_processes:
            procs = _processes(nvml, handle)
        return GpuInfo(
            index=index, name=name,
            uuid=_optional(nvml, lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
            pci_bus_id=_optional(nvml, lambda: _text(nvml.nvmlDeviceGetPciInfo(handle).busId)),
            memory_total_bytes=int(mem.total) if mem is not None else None,
            memory_used_bytes=int(mem.used) if mem is not None else None,
            memory_free_bytes=int(mem.free) if mem is not None else None,
            compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
            mig_mode=bool(mig[0]) if mig is not None else None,
            utilization_gpu_pct=int(util.gpu) if util is not None else None,
            utilization_memory_pct=int(util.memory) if util is not None else None,
            temperature_c=int(temp) if temp is not None else None,
            power_w=power / 1000.0 if power is not None else None,
            power_limit_w=limit / 1000.0 if limit is not None else None,
            processes=procs,
        )
    except Exception as exc:
        if not _is_nvml_error(nvml, exc):
            raise
        return GpuInfo(index=index, name=name, error=_gpu_error(exc))


def _links(nvml: Any, gpus: tuple[GpuInfo, ...]) -> tuple[GpuLink, ...]:
    """Peer-to-peer status and PCIe/NVLink path for every pair of healthy GPUs."""
    healthy = [g.index for g in gpus if g.error is None]
    out = []
    for i, a in enumerate(healthy):
        for b in healthy[i + 1:]:
            try:
                ha, hb = nvml.nvmlDeviceGetHandleByIndex(a), nvml.nvmlDeviceGetHandleByIndex(b)
            except Exception as exc:
                if not _is_nvml_error(nvml, exc):
                    raise
                continue
            fn = getattr(nvml, "nvmlDeviceGetP2PStatus", None)
            read = _optional(nvml, partial(fn, ha, hb, 0)) if fn else None  # NVML_P2P_CAPS_INDEX_READ
            nvl = _optional(nvml, partial(fn, ha, hb, 2)) if fn else None  # NVML_P2P_CAPS_INDEX_NVLINK
            topo_fn = getattr(nvml, "nvmlDeviceGetTopologyCommonAncestor", None)
            level = _optional(nvml, partial(topo_fn, ha, hb)) if topo_fn else None
            out.append(GpuLink(a=a, b=b, nvlink=None if nvl is None else nvl == 0,
                               p2p_read=None if read is None else read == 0,
                               common_ancestor=None if level is None else int(level),
                               path=TOPOLOGY_NAMES.get(int(level)) if level is not None else None))
    return tuple(out)


def _processes(nvml: Any, handle: Any) -> tuple[GpuProcess, ...]:
    out: dict[int, GpuProcess] = {}
    for kind, fn_name in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                          ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
        fn = getattr(nvml, fn_name, None)
        if fn is None:
            continue
        entries = _optional(nvml, partial(fn, handle)) or []
        for p in entries:
            used = getattr(p, "usedGpuMemory", None)
            # NVML reports "not available" as a huge sentinel (NVML_VALUE_NOT_AVAILABLE) or None.
            if used is None or used >= 2**63 - 1 or used < 0:
                used = None
            if p.pid not in out:
                out[p.pid] = GpuProcess(pid=int(p.pid), used_bytes=int(used) if used is not None else None, kind=kind)
    return tuple(out.values())


def _gpu_error(exc: BaseException) -> str:
    code = _code(exc)
    if code == ERROR_GPU_IS_LOST:
        return "GPU is lost (fell off the bus): reboot the machine, then check `dmesg | grep -i xid`"
    return f"NVML error: {exc}"
