"""The environment a profile implies for vLLM (used by serve, env, kernel and doctor).

Precedence: the profile's [env] > the user's environment > vboot's defaults. vboot's defaults are
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (less fragmentation on one GPU), ``VLLM_USE_MODELSCOPE=true``
and ``MODELSCOPE_CACHE`` for ModelScope profiles. expandable segments are left out, with a warning, where they
are known to break vLLM: tensor parallel > 1 (custom all-reduce 'invalid argument'), sleep mode (vLLM >= 0.8
asserted 'Expandable segments are not compatible with memory pool' until PR #40812) and KV connectors
(vLLM 0.32 raises 'KV connector ... is incompatible with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True').
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core.environ import Environ
from bootstrap.core.profiles import Profile, VllmOptions, vllm_options

ALLOC_VAR = "PYTORCH_CUDA_ALLOC_CONF"
ALLOC_ALIAS = "PYTORCH_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"


DEV_MODE_VAR = "VLLM_SERVER_DEV_MODE"


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


def expandable_conflicts(options: VllmOptions) -> list[str]:
    """Reasons expandable segments must not be used with these effective vLLM options; empty when they are fine."""
    reasons = []
    if options.tensor_parallel_size > 1:
        reasons.append(f"tensor parallel {options.tensor_parallel_size} > 1 (custom all-reduce fails with "
                       "'invalid argument'; or pass --disable-custom-all-reduce)")
    if options.enable_sleep_mode:
        reasons.append("sleep mode (vLLM before PR #40812 asserts 'Expandable segments are not compatible "
                       "with memory pool')")
    if options.kv_connector:
        reasons.append("a KV connector (vLLM refuses it with expandable_segments:True unless the cumem allocator "
                       "is on)")
    return reasons


def has_expandable(value: str | None) -> bool:
    if not value:
        return False
    parts = {p.split(":", 1)[0].strip(): p.split(":", 1)[1].strip() if ":" in p else "" for p in value.split(",")}
    return parts.get("expandable_segments", "").lower() == "true"


def plan_environment(profile: Profile, cache_dir: Path, user_env: Mapping[str, str] | Environ,
                     options: VllmOptions | None = None) -> EnvPlan:
    """What vboot sets in vLLM's environment for ``profile`` (run with the effective ``options``; default: the
    profile's own), each with its origin, plus warnings."""
    out: dict[str, EnvVar] = {}
    warnings: list[str] = []
    conflicts = expandable_conflicts(options or vllm_options(profile.serve))

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

    if (options or vllm_options(profile.serve)).enable_sleep_mode:
        # vLLM serves /sleep, /wake_up and /is_sleeping only in its development mode (which also opens
        # /collective_rpc, /reset_prefix_cache, ...; its API key guards /v1 paths only): serve allows it on loopback.
        out[DEV_MODE_VAR] = EnvVar(DEV_MODE_VAR, "1", "vboot", "sleep mode: vLLM's /sleep, /wake_up, /is_sleeping")

    for name, value in profile.env.items():
        out[name] = EnvVar(name, value, "profile", f"from profile {profile.name}")

    final_alloc = out.get(ALLOC_VAR)
    if final_alloc and has_expandable(final_alloc.value) and conflicts:
        warnings.append(f"{ALLOC_VAR}={final_alloc.value} (from your {final_alloc.origin}) is known to break: "
                        + "; ".join(conflicts) + ". Unset it or remove expandable_segments.")
    return EnvPlan(vars=tuple(out.values()), warnings=tuple(warnings))
