"""Known ways vLLM fails at startup, matched in its log, each with a diagnosis and the fix.

The patterns are vLLM's own messages (FACTS.md, "Startup failures users hit").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    code: str
    summary: str
    fix: str
    line: str  # the log line that matched


@dataclass(frozen=True)
class _Rule:
    code: str
    pattern: re.Pattern[str]
    summary: str
    fix: str


_RULES: tuple[_Rule, ...] = (
    _Rule("gpu_memory_busy",
          re.compile(r"Free memory on device \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less than "
                     r"desired GPU memory utilization \((?P<util>[\d.]+), (?P<want>[\d.]+) GiB\)"),
          "the GPU had {free} GiB free of {total} GiB; vLLM wanted {want} GiB (gpu_memory_utilization {util})",
          "another process holds GPU memory: `vboot ps` (orphans: `vboot stop --orphans`), `nvidia-smi`; "
          "or lower serve.gpu_memory_utilization"),
    _Rule("kv_cache_too_small",
          re.compile(r"To serve at least one request with the model's max seq len \((?P<len>\d+)\), "
                     r"\(?(?P<need>[\d.]+) GiB KV cache is needed, which is larger than the available KV cache memory "
                     r"\((?P<have>[\d.]+) GiB\)(?:.*?estimated maximum model length is (?P<max>\d+))?"),
          "max_model_len {len} needs {need} GiB of KV cache, only {have} GiB is available",
          "lower serve.max_model_len (vLLM estimates {max} fits), or raise serve.gpu_memory_utilization "
          "(on the CPU: VLLM_CPU_KVCACHE_SPACE)"),
    _Rule("address_in_use",
          re.compile(r"\[Errno 98\][^\n]*address(?: already)? in use|address already in use", re.I),
          "the HTTP port was already taken when vLLM tried to bind it",
          "`vboot ps` / `ss -ltnp` shows the holder; stop it or pass --port"),
    _Rule("driver_too_old",
          re.compile(r"The NVIDIA driver on your system is too old \(found version (?P<found>\d+)\)"),
          "the NVIDIA driver (CUDA {found}) is older than the CUDA build of torch/vLLM",
          "upgrade the driver, or install a vLLM/torch built for your driver's CUDA (`vboot doctor` shows both)"),
    _Rule("cuda_oom",
          re.compile(r"(torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory)[^\n]*"),
          "the GPU ran out of memory while loading or warming up the model",
          "lower serve.gpu_memory_utilization or serve.max_model_len, or free the GPU (`vboot ps`)"),
    _Rule("cpu_kv_space",
          re.compile(r"(VLLM_CPU_KVCACHE_SPACE|cpu_kvcache_space)[^\n]*(too (?:large|small)|exceeds|insufficient)",
                     re.I),
          "the CPU KV-cache size (VLLM_CPU_KVCACHE_SPACE) does not fit",
          "set VLLM_CPU_KVCACHE_SPACE (GiB) in the profile's [env] to fit the free RAM"),
    _Rule("modelscope_missing",
          re.compile(r"Please install modelscope[^\n]*to use ModelScope"),
          "vLLM needs the modelscope package when VLLM_USE_MODELSCOPE=true",
          "install it into vLLM's environment (`PY -m pip install 'modelscope>=1.18.1'`) or re-run `vboot setup`"),
    _Rule("bad_argument",
          re.compile(r"(?:api_server\.py|vllm serve|usage: )[^\n]*\berror: (?P<msg>.+)$", re.M),
          "vLLM rejected its command line: {msg}",
          "fix the argument (profile serve.args or the extra args after --); `vboot logs NAME` shows the full log"),
    _Rule("model_not_found",
          re.compile(r"(?:No such file or directory|does not appear to have a file named|is not a local folder and is "
                     r"not a valid model identifier)[^\n]*"),
          "vLLM could not find the model files",
          "check the profile's model (vboot pull PROFILE), then serve again"),
)


def diagnose(log_lines: Sequence[str]) -> Diagnosis | None:
    """The first known failure found in the log (searched from the end, where the fatal error usually is)."""
    text = "\n".join(log_lines)
    best: tuple[int, Diagnosis] | None = None
    for rule in _RULES:
        for m in rule.pattern.finditer(text):
            values = {k: (v if v is not None else "?") for k, v in m.groupdict().items()}
            d = Diagnosis(rule.code, rule.summary.format(**values), rule.fix.format(**values),
                          m.group(0).strip()[:300])
            if best is None or m.start() > best[0]:
                best = (m.start(), d)
    return best[1] if best else None
