"""The environment a profile implies for vLLM (used by serve, env, kernel and doctor).

Precedence: the profile's [env] > the user's environment > vboot's defaults. vboot's defaults are
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (less fragmentation on one GPU), ``VLLM_USE_MODELSCOPE=true``
and ``MODELSCOPE_CACHE`` for ModelScope profiles. expandable segments are left out, with a warning, where they
are known to break vLLM: tensor parallel > 1 (custom all-reduce 'invalid argument'), sleep mode (vLLM >= 0.8
asserted 'Expandable segments are not compatible with memory pool' until PR #40812) and KV connectors
(vLLM 0.32 raises 'KV connector ... is incompatible with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True').
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core.environ import Environ
from bootstrap.core.profiles import Profile
from bootstrap.core.vllm_args import gives_option, last_flag_value  # noqa: F401  (last_flag_value: also read from here)

ALLOC_VAR = "PYTORCH_CUDA_ALLOC_CONF"
ALLOC_ALIAS = "PYTORCH_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    origin: str  # "vboot" (default), "environment" (the user's, kept), "profile"
    why: str = ""


@dataclass(frozen=True)
class EnvPlan:
    vars: tuple[EnvVar, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, str]:
        return {v.name: v.value for v in self.vars}

    def var(self, name: str) -> EnvVar | None:
        """The planned variable ``name``, or None when vboot leaves it as the user's environment has it."""
        return next((v for v in self.vars if v.name == name), None)


def _serve_args(profile: Profile, extra_args: Sequence[str]) -> list[str]:
    """The arguments vLLM gets after the profile's own settings, in order (build_command's tail)."""
    return [*profile.serve.args, *extra_args]


def tensor_parallel_size(profile: Profile, extra_args: Sequence[str] = ()) -> int:
    """The tensor-parallel size vLLM will get: the last --tensor-parallel-size / -tp among the profile's args
    and the extra args of `vboot serve ... -- ARGS`, else the profile's serve.tensor_parallel_size."""
    raw = last_flag_value(_serve_args(profile, extra_args), "--tensor-parallel-size", "-tp")
    tp = int(raw) if raw is not None and raw.isdigit() else profile.serve.tensor_parallel_size
    return max(1, tp)


def gpu_memory_utilization(profile: Profile, extra_args: Sequence[str] = ()) -> float:
    """The share of each GPU's memory vLLM will claim: the last --gpu-memory-utilization among the profile's
    args and the extra args, else the profile's serve.gpu_memory_utilization, else vLLM's default 0.9."""
    raw = last_flag_value(_serve_args(profile, extra_args), "--gpu-memory-utilization")
    if raw is not None:
        try:
            return float(raw)
        except ValueError:  # vLLM refuses it at start; meanwhile judge the profile's value
            pass
    return profile.serve.gpu_memory_utilization or 0.9


def expandable_conflicts(profile: Profile, extra_args: Sequence[str] = ()) -> list[str]:
    """Reasons expandable segments must not be used with this profile (and the extra vLLM arguments of a
    `vboot serve ... -- ARGS`); empty when they are fine."""
    s = profile.serve
    reasons = []
    args = _serve_args(profile, extra_args)
    tp = tensor_parallel_size(profile, extra_args)
    if tp > 1:
        reasons.append(f"tensor parallel {tp} > 1 (custom all-reduce fails with 'invalid argument'; "
                       "or pass --disable-custom-all-reduce)")
    if s.enable_sleep_mode or gives_option(args, "--enable-sleep-mode"):
        reasons.append("sleep mode (vLLM before PR #40812 asserts 'Expandable segments are not compatible "
                       "with memory pool')")
    if s.kv_connector or gives_option(args, "--kv-transfer-config"):
        reasons.append("a KV connector (vLLM refuses it with expandable_segments:True unless the cumem allocator is on)")
    return reasons


def has_expandable(value: str | None) -> bool:
    if not value:
        return False
    parts = {p.split(":", 1)[0].strip(): p.split(":", 1)[1].strip() if ":" in p else "" for p in value.split(",")}
    return parts.get("expandable_segments", "").lower() == "true"


def plan_environment(profile: Profile, cache_dir: Path, user_env: Mapping[str, str] | Environ,
                     extra_args: Sequence[str] = ()) -> EnvPlan:
    """What vboot sets in vLLM's environment for ``profile``, each with its origin, plus warnings."""
    out: dict[str, EnvVar] = {}
    warnings: list[str] = []
    conflicts = expandable_conflicts(profile, extra_args)

    user_alloc = user_env.get(ALLOC_VAR)
    if user_alloc is not None:
        out[ALLOC_VAR] = EnvVar(ALLOC_VAR, user_alloc, "environment", "kept from your environment")
    elif not conflicts:
        out[ALLOC_VAR] = EnvVar(ALLOC_VAR, EXPANDABLE, "vboot", "less fragmentation of GPU memory on one GPU")
    else:
        warnings.append(f"{ALLOC_VAR} not set to {EXPANDABLE}: " + "; ".join(conflicts))

    if profile.model.source == "modelscope":
        out["VLLM_USE_MODELSCOPE"] = EnvVar("VLLM_USE_MODELSCOPE", "true", "vboot",
                                            "vLLM resolves model ids on ModelScope ('true': old vLLM ignores '1')")
        out["MODELSCOPE_CACHE"] = EnvVar("MODELSCOPE_CACHE", str(cache_dir), "vboot", "where the model is cached")
    elif user_cache := user_env.get("MODELSCOPE_CACHE"):
        out["MODELSCOPE_CACHE"] = EnvVar("MODELSCOPE_CACHE", user_cache, "environment")

    for name, value in profile.env.items():
        out[name] = EnvVar(name, value, "profile", f"from profile {profile.name}")

    final_alloc = out.get(ALLOC_VAR)
    if final_alloc and has_expandable(final_alloc.value) and conflicts:
        warnings.append(f"{ALLOC_VAR}={final_alloc.value} (from your {final_alloc.origin}) is known to break: "
                        + "; ".join(conflicts) + f". Unset it or remove expandable_segments.")
    return EnvPlan(vars=tuple(out.values()), warnings=tuple(warnings))
