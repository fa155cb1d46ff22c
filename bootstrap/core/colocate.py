"""Several vLLM servers on one box: which start lock a server takes, whether a new one fits beside the running
ones, when vLLM has sized its KV cache, and how much a sleep freed. Pure functions of recorded and probed facts
(run records, NVML, psutil), so every rule is tested without a GPU.

Why (vLLM #55827): two engines that profile memory on one GPU at the same time each count the other's allocations
as "not free" (or as free, and then both take it): the KV caches come out wrong or a start fails. vboot therefore
serialises start-ups per device with a lock held from spawn until vLLM logs its KV cache size, and refuses a
server whose share does not fit beside the others'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bootstrap.core.gpu import GpuInfo
from bootstrap.core.runs import RunRecord

GIB = 1024**3
# The most of a GPU vboot hands out to its servers in all: vLLM's CUDA context, CUDA graphs and the allocator's
# slack live outside gpu_memory_utilization's share, so 1.0 in all does not fit.
GPU_BUDGET = 0.95
# vLLM's CPU build: RAM a server needs beyond its KV cache (weights of a small model, the engine's own pools).
CPU_OVERHEAD_BYTES = int(1.5 * GIB)
CPU_DEFAULT_KVCACHE_GIB = 4.0  # vLLM's CPU backend when VLLM_CPU_KVCACHE_SPACE is unset
CPU_LOCK = "cpu"

# vLLM 0.32 logs it once per engine when the cache is allocated (kv_cache_utils.py):
#   "GPU KV cache size: 1,234,567 tokens" / "CPU KV cache size: 2,097,152 tokens"
KV_CACHE_LINE = re.compile(r"\b(?:GPU|CPU|XPU|TPU) KV cache size: ([\d,]+) tokens")


def kv_cache_tokens(lines: Sequence[str]) -> int | None:
    """The KV cache size (tokens) vLLM logged among ``lines``, or None when it has not logged it yet."""
    for line in lines:
        m = KV_CACHE_LINE.search(line)
        if m:
            return int(m.group(1).replace(",", ""))
    return None


def gpu_key(uuid: str | None, index: int) -> str:
    """How a GPU is named in records and lock files: its UUID (stable across reboots and CUDA_VISIBLE_DEVICES),
    else its index."""
    return uuid or f"index:{index}"


def lock_names(device: str, gpus: Sequence[str]) -> tuple[str, ...]:
    """The start locks of a server: one per GPU it runs on, or the one CPU lock."""
    if device != "gpu":
        return (CPU_LOCK,)
    safe = [re.sub(r"[^A-Za-z0-9._-]", "_", g) for g in gpus] or ["any"]
    return tuple(f"gpu-{g}" for g in sorted(safe))


# --- budgets --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    """A running vboot server and what it holds of a device."""

    name: str
    share: float  # gpu_memory_utilization on a GPU; 0 on the CPU
    bytes: int  # what that share means in bytes (GPU total x share), or its KV cache on the CPU
    state: str = "ready"


@dataclass(frozen=True)
class GpuBudget:
    """One GPU: what the new server asks, what the others hold, and whether it fits."""

    gpu: str  # gpu_key
    index: int
    total_bytes: int
    free_bytes: int | None
    asked: float
    holders: tuple[Holder, ...]
    limit: float = GPU_BUDGET

    @property
    def held(self) -> float:
        return sum(h.share for h in self.holders)

    @property
    def fits_share(self) -> bool:
        return self.held + self.asked <= self.limit + 1e-9

    @property
    def fits_free(self) -> bool:
        return self.free_bytes is None or self.free_bytes >= int(self.total_bytes * self.asked)

    @property
    def fits(self) -> bool:
        return self.fits_share and self.fits_free

    @property
    def suggestion(self) -> float | None:
        """The largest gpu_memory_utilization that fits beside the others (two decimals, rounded down), or None
        when less than 0.05 is left."""
        room = self.limit - self.held
        if self.free_bytes is not None and self.total_bytes:
            room = min(room, self.free_bytes / self.total_bytes - 0.01)
        room = math.floor(room * 100 + 1e-9) / 100
        return room if room >= 0.05 else None


def gpu_budgets(new_gpus: Sequence[GpuInfo], asked: float, runs: Sequence[RunRecord]) -> list[GpuBudget]:
    """The budget of each GPU the new server will use (``new_gpus``: NVML GpuInfo), against vboot's live servers
    (run records) recorded on the same GPU."""
    out = []
    for g in new_gpus:
        key = gpu_key(g.uuid, g.index)
        total = g.memory_total_bytes or 0
        holders = tuple(Holder(r.name, r.gpu_memory_utilization, int(total * r.gpu_memory_utilization), r.state)
                        for r in runs if r.is_server and r.device == "gpu" and key in r.gpus
                        and r.gpu_memory_utilization > 0)
        out.append(GpuBudget(key, g.index, total, g.memory_free_bytes, asked, holders))
    return out


@dataclass(frozen=True)
class CpuBudget:
    """The CPU build: the new server's KV cache (VLLM_CPU_KVCACHE_SPACE) plus its overhead against available RAM,
    less what servers still starting are about to take (their memory is not in use yet)."""

    asked_bytes: int  # the new server's KV cache
    available_bytes: int  # psutil's available RAM now
    holders: tuple[Holder, ...]  # vboot's other CPU servers and their KV caches
    pending_bytes: int = 0  # KV caches + overhead of servers not yet past their start (not in use yet)
    overhead_bytes: int = CPU_OVERHEAD_BYTES

    @property
    def need_bytes(self) -> int:
        return self.asked_bytes + self.overhead_bytes

    @property
    def room_bytes(self) -> int:
        return self.available_bytes - self.pending_bytes

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.room_bytes

    @property
    def suggestion_gib(self) -> int | None:
        """The largest whole VLLM_CPU_KVCACHE_SPACE (GiB) that fits, or None below 1."""
        room = (self.room_bytes - self.overhead_bytes) // GIB
        return int(room) if room >= 1 else None


def cpu_kvcache_bytes(value: str | None) -> int:
    """VLLM_CPU_KVCACHE_SPACE (GiB, may be fractional) in bytes; vLLM's default when unset or unreadable."""
    try:
        gib = float(value) if value not in (None, "") else CPU_DEFAULT_KVCACHE_GIB
    except ValueError:
        gib = CPU_DEFAULT_KVCACHE_GIB
    if not math.isfinite(gib) or gib <= 0:
        gib = CPU_DEFAULT_KVCACHE_GIB
    return int(gib * GIB)


def cpu_budget(asked_bytes: int, available_bytes: int, runs: Sequence[RunRecord]) -> CpuBudget:
    """The RAM budget of a new CPU server beside vboot's live CPU servers (run records)."""
    others = [r for r in runs if r.is_server and r.device == "cpu"]
    holders = tuple(Holder(r.name, 0.0, r.cpu_kvcache_bytes, r.state) for r in others)
    # A server that has not allocated its KV cache yet will take it soon: count it against the room left.
    pending = sum(r.cpu_kvcache_bytes + CPU_OVERHEAD_BYTES for r in others
                  if r.state in ("waiting", "starting", "restarting") and not r.kv_cache_at)
    return CpuBudget(asked_bytes, available_bytes, holders, pending)


# --- sleep ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SleepReport:
    """NVML around one `/sleep` (or `/wake_up`): memory in use on the server's GPUs before and after, and what
    the server's own processes held before."""

    level: int
    before_bytes: int  # memory in use on its GPUs before
    after_bytes: int  # ... after
    server_bytes: int  # what its processes held before (NVML per process; 0 when not reported)
    took_s: float
    freed_fraction_floor: float = 0.5  # below this share of what it held, the sleep "freed too little"

    @property
    def freed_bytes(self) -> int:
        return max(0, self.before_bytes - self.after_bytes)

    @property
    def expected_bytes(self) -> int:
        """What a sleep should free: the weights (level 1 offloads them, level 2 discards them) and the KV cache,
        i.e. nearly everything the server holds beyond its CUDA context."""
        return self.server_bytes

    @property
    def too_little(self) -> bool:
        """Freed well under what the server held (vLLM #32714, #47654): stop/start frees it all."""
        return self.server_bytes > 0 and self.freed_bytes < self.server_bytes * self.freed_fraction_floor


# --- idle -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RequestCounts:
    """What /metrics says about requests: finished in all (every ``vllm:request_success_total`` series, whatever
    the finish reason) and in flight (running + waiting)."""

    finished: float
    in_flight: float


class IdleTracker:
    """Decides when a server has had no request for ``idle_s`` seconds, from its /metrics counters, not counting
    vboot's own liveness probes (each one finishes one request): a probe never keeps a server awake."""

    def __init__(self, idle_s: float, now: float) -> None:
        self.idle_s = idle_s
        self.last_active = now
        self._finished: float | None = None
        self._probes = 0  # probes finished since the last sample

    def probe_finished(self) -> None:
        self._probes += 1

    def sample(self, counts: RequestCounts | None, now: float) -> None:
        """Feed one reading of /metrics (None: unreadable, which counts as activity: never sleep blind)."""
        if counts is None:
            self.last_active = now
            return
        if self._finished is not None:
            outside = counts.finished - self._finished - self._probes
            if outside > 0.5 or counts.in_flight > 0:
                self.last_active = now
        elif counts.in_flight > 0:
            self.last_active = now
        self._finished = counts.finished
        self._probes = 0

    def reset(self, now: float) -> None:
        """After a wake (or a restart): a fresh start, the counters read anew."""
        self.last_active = now
        self._finished = None
        self._probes = 0

    def idle_for(self, now: float) -> float:
        return now - self.last_active

    def due(self, now: float) -> bool:
        return self.idle_s > 0 and self.idle_for(now) >= self.idle_s
