"""vboot: from a fresh GPU box to a vLLM server you trust and can watch.

Importing this package has no side effects: no NVML initialisation, no torch, vllm or modelscope import,
no network. Commands import what they need when they run.
"""

__version__ = "0.1.0"
