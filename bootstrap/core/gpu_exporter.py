"""The GPU exporter `vboot serve --prometheus` runs beside vLLM on a GPU box, as a plan (pure).

nvitop-exporter (PyPI, ``pip install 'vboot[gpu]'``) reads NVML through nvitop and serves ``gpu_*`` gauges; where
NVIDIA's dcgm-exporter is installed it can be used instead. Either runs on loopback only, is scraped by the run's
Prometheus as job :data:`bootstrap.core.prom.GPU_JOB`, and is read by the matching GPU rules
(:func:`bootstrap.core.prom.gpu_rule_groups`), which record both into the same ``instance_gpu:*`` series that the
dashboard and the GPU alerts use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bootstrap.core import prom

NVITOP_PROGRAM = "nvitop-exporter"
DCGM_PROGRAM = "dcgm-exporter"
#: Preferred order when both are on PATH: DCGM's needs its host engine and reports more; nvitop needs only NVML.
PROGRAMS: tuple[str, ...] = (DCGM_PROGRAM, NVITOP_PROGRAM)
DEFAULT_PORT = 9835  # nvitop-exporter's own default (8000) is vLLM's


@dataclass(frozen=True)
class GpuExporterPlan:
    """How to run one GPU exporter and what reads it: ``argv`` (loopback, ``port``), the scrape job for
    prometheus.yml, and the metric names for the rules (job regex set to the local job)."""

    program: str
    argv: tuple[str, ...]
    port: int
    scrape_job: prom.ScrapeJob
    metrics: prom.GpuExporter
    log_file: str = "gpu-exporter.log"


def nvitop_exporter_argv(exe: str, port: int, hostname: str, interval_s: float = 5.0,
                         host: str = "127.0.0.1") -> list[str]:
    """``nvitop-exporter`` bound to ``host:port``. ``hostname`` (its ``hostname`` label) is passed so the exporter
    does not guess one from the routing table; ``interval_s`` is how often it reads NVML."""
    return [exe, "--bind-address", host, "--port", str(port), "--hostname", hostname, "--interval", f"{interval_s:g}"]


def dcgm_exporter_argv(exe: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """``dcgm-exporter`` listening on ``host:port`` with its default counters."""
    return [exe, "--address", f"{host}:{port}"]


def plan_gpu_exporter(program: str, exe: str, port: int = DEFAULT_PORT, hostname: str = "localhost",
                      interval_s: float = 5.0) -> GpuExporterPlan:
    """The plan for ``program`` (:data:`NVITOP_PROGRAM` or :data:`DCGM_PROGRAM`) found at ``exe``."""
    if program == NVITOP_PROGRAM:
        argv, metrics = nvitop_exporter_argv(exe, port, hostname, interval_s), prom.NVITOP_EXPORTER
    elif program == DCGM_PROGRAM:
        argv, metrics = dcgm_exporter_argv(exe, port), prom.DCGM_EXPORTER
    else:
        raise ValueError(f"unknown GPU exporter {program!r} (known: {', '.join(PROGRAMS)})")
    target = f"127.0.0.1:{port}"
    return GpuExporterPlan(program=program, argv=tuple(argv), port=port,
                           scrape_job=prom.gpu_scrape_job(target, interval_s),
                           metrics=replace(metrics, job_regex=prom.GPU_JOB))
