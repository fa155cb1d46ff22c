"""Generated Prometheus files for one vLLM server: the scrape config, recording rules and alert rules.

Everything here is rendered in memory (pure functions returning plain data or YAML text); `vboot serve`
writes the text into its run directory and the Kubernetes export turns :func:`rule_groups` into a
PrometheusRule. Metric names are exactly those vLLM 0.32 serves (tests/data holds recorded /metrics texts):
counters carry ``_total`` and the KV-cache gauge is ``vllm:kv_cache_usage_perc`` (a 0..1 ratio despite its
name; the old ``vllm:gpu_cache_usage_perc`` is gone).

Recording rules aggregate ``without (engine)`` so a data-parallel server (several engines behind one API
server) reads as one model, while ``job``, ``instance`` and ``model_name`` stay for per-replica views and the
autoscaler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bootstrap.core import metrics as m
from bootstrap.core.yamltext import to_yaml

#: Rules file name `vboot serve` writes beside prometheus.yml (and loads from it).
RULES_FILE = "vllm-rules.yml"
#: Recording-rule group and alert group names (the Kubernetes export keeps them).
RECORDING_GROUP = "vllm.recording"
ALERT_GROUP = "vllm.alerts"
#: Quantiles recorded for every latency histogram (a ``quantile`` label tells them apart).
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
#: Latency histograms served by vLLM 0.32 -> short name used in recording-rule names. Queue time (from arrival
#: to scheduling, inside the engine) is recorded too, so TTFT can be read against it.
LATENCY_HISTOGRAMS: dict[str, str] = {m.TTFT: "ttft", m.ITL: "itl", m.E2E: "e2e", m.QUEUE_TIME: "queue"}
#: Recorded series other files refer to (alerts here; the autoscaler's metric name in the Kubernetes export).
WAITING_RECORD = "vllm_num_requests_waiting"
RUNNING_RECORD = "vllm_num_requests_running"
KV_CACHE_RECORD = "vllm_kv_cache_usage_ratio"

# Aggregation used by every recording rule: drop only the engine index.
_AGG = "sum without (engine)"


@dataclass(frozen=True)
class AlertThresholds:
    """Defaults for the alert rules. Durations are seconds; ratios are 0..1.

    The defaults suit an interactive single-GPU server: a queue of more than 10 requests for a minute means
    the box cannot keep up; a KV cache above 90 % for 5 minutes means preemptions are next; a TTFT p99 above
    2 s is what users notice in a chat UI.
    """

    queue_waiting: float = 10.0  # alert when more requests than this wait ...
    queue_for_s: float = 60.0  # ... for this long
    kv_cache_usage: float = 0.9  # KV-cache usage ratio (0..1) ...
    kv_cache_for_s: float = 300.0
    ttft_p99_s: float = 2.0  # time-to-first-token p99 over rate_window_s ...
    ttft_for_s: float = 300.0
    preemptions_increase: float = 0.0  # more preemptions than this within preemption_window_s ...
    preemption_window_s: float = 300.0
    preemptions_for_s: float = 120.0
    target_down_for_s: float = 60.0  # scrape target `up == 0` for this long
    rate_window_s: float = 60.0  # window of rate()/histogram_quantile() in recording rules
    # Scrape jobs that are vLLM servers for the target-down alert; a target whose job does not match still
    # alerts when it served vllm:* series within the last hour (`vboot serve` names the job after the run).
    job_regex: str = ".*vllm.*"
    # GPU alerts (gpu_rule_groups). vLLM preallocates --gpu-memory-utilization (0.9 by default) of every GPU it
    # uses, so 90 % is normal: alert only close to the edge, where another process would make vLLM run out.
    gpu_memory_usage: float = 0.97  # used / total framebuffer ...
    gpu_memory_for_s: float = 300.0
    gpu_lost_for_s: float = 60.0  # a GPU that reported within the last hour is gone or reads NaN this long
    gpu_exporter_down_for_s: float = 60.0  # the GPU exporter's scrape target `up == 0` this long

    def __post_init__(self) -> None:
        if not 0 < self.kv_cache_usage <= 1:
            raise ValueError(f"kv_cache_usage is a ratio in (0, 1], not {self.kv_cache_usage}")
        if not 0 < self.gpu_memory_usage <= 1:
            raise ValueError(f"gpu_memory_usage is a ratio in (0, 1], not {self.gpu_memory_usage}")
        for name in ("queue_for_s", "kv_cache_for_s", "ttft_for_s", "preemption_window_s", "preemptions_for_s",
                     "target_down_for_s", "rate_window_s", "gpu_memory_for_s", "gpu_lost_for_s",
                     "gpu_exporter_down_for_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``60 -> '1m'``, ``90 -> '90s'``, ``0.5 -> '500ms'``."""
    if seconds <= 0:
        raise ValueError("a Prometheus duration must be positive")
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _num(value: float) -> str:
    """A threshold as PromQL shows it (``10`` not ``10.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def recording_rule_names(thresholds: AlertThresholds = AlertThresholds(),
                         gpu: GpuExporter | None = None) -> list[str]:
    """The ``record:`` names produced by :func:`rule_groups` (each once, in order), and by
    :func:`gpu_rule_groups` for ``gpu`` when given."""
    seen: list[str] = []
    groups = rule_groups(thresholds) + (gpu_rule_groups(gpu, thresholds) if gpu is not None else [])
    for group in groups:
        for rule in group["rules"]:
            if "record" in rule and rule["record"] not in seen:
                seen.append(rule["record"])
    return seen


# Names of the rate and quantile recordings, built in one place: the rules, the alerts and the Grafana dashboard
# (bootstrap.core.dashboard) all call these, so a renamed rule cannot leave a panel reading nothing.

def prompt_tokens_rate_record(t: AlertThresholds = AlertThresholds()) -> str:
    """Prompt tokens per second over ``rate_window_s``, per model."""
    return f"model_name:vllm_prompt_tokens:rate{duration(t.rate_window_s)}"


def generation_tokens_rate_record(t: AlertThresholds = AlertThresholds()) -> str:
    """Generated tokens per second over ``rate_window_s``, per model."""
    return f"model_name:vllm_generation_tokens:rate{duration(t.rate_window_s)}"


def preemptions_rate_record(t: AlertThresholds = AlertThresholds()) -> str:
    """Preemptions per second over ``rate_window_s``, per model."""
    return f"model_name:vllm_num_preemptions:rate{duration(t.rate_window_s)}"


def finished_rate_record(t: AlertThresholds = AlertThresholds()) -> str:
    """Finished requests per second by ``finished_reason``, per model."""
    return f"model_name_finished_reason:vllm_request_success:rate{duration(t.rate_window_s)}"


def latency_record(histogram: str, t: AlertThresholds = AlertThresholds()) -> str:
    """The quantile recording of a latency histogram of :data:`LATENCY_HISTOGRAMS` (a ``quantile`` label holds
    0.5, 0.95 and 0.99): ``latency_record(metrics.TTFT)`` -> ``model_name:vllm_ttft_seconds:histogram_quantile_1m``."""
    return f"model_name:vllm_{LATENCY_HISTOGRAMS[histogram]}_seconds:histogram_quantile_{duration(t.rate_window_s)}"


def latency_mean_record(histogram: str, t: AlertThresholds = AlertThresholds()) -> str:
    """The mean of a latency histogram over ``rate_window_s`` (``_sum`` over ``_count``): exact, where quantiles are
    interpolated inside buckets (vLLM's queue-time buckets start at 0.3 s, so its p50 of a 1 ms queue reads 0.15 s)."""
    return f"model_name:vllm_{LATENCY_HISTOGRAMS[histogram]}_seconds:mean{duration(t.rate_window_s)}"


def _recording_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    w = duration(t.rate_window_s)
    rules: list[dict[str, Any]] = [
        # The series the production-stack autoscaler (prometheus-adapter -> HPA) scales on.
        {"record": WAITING_RECORD, "expr": f"{_AGG} ({m.WAITING})"},
        {"record": RUNNING_RECORD, "expr": f"{_AGG} ({m.RUNNING})"},
        # max, not sum: usage is a ratio per engine; the fullest engine is the one that preempts.
        {"record": KV_CACHE_RECORD, "expr": f"max without (engine) ({m.KV_CACHE})"},
        {"record": prompt_tokens_rate_record(t),
         "expr": f"{_AGG} (rate({m.PROMPT_TOKENS}[{w}]))"},
        {"record": generation_tokens_rate_record(t),
         "expr": f"{_AGG} (rate({m.GENERATION_TOKENS}[{w}]))"},
        {"record": preemptions_rate_record(t),
         "expr": f"{_AGG} (rate({m.PREEMPTIONS}[{w}]))"},
        # Finished requests per second by finished_reason (stop, length, abort, error, repetition).
        {"record": finished_rate_record(t),
         "expr": f"{_AGG} (rate({m.REQUEST_SUCCESS}[{w}]))"},
    ]
    for metric in LATENCY_HISTOGRAMS:
        for q in QUANTILES:
            rules.append({
                "record": latency_record(metric, t),
                "expr": f"histogram_quantile({q}, {_AGG} (rate({metric}_bucket[{w}])))",
                "labels": {"quantile": str(q)},
            })
    for metric in LATENCY_HISTOGRAMS:
        rules.append({
            "record": latency_mean_record(metric, t),
            "expr": f"{_AGG} (rate({metric}_sum[{w}])) / {_AGG} (rate({metric}_count[{w}]))",
        })
    return rules


def _alert_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    w = duration(t.rate_window_s)
    pw = duration(t.preemption_window_s)
    return [
        {
            "alert": "VllmQueueBacklog",
            "expr": f"{WAITING_RECORD} > {_num(t.queue_waiting)}",
            "for": duration(t.queue_for_s),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "vLLM queue backlog on {{ $labels.instance }} ({{ $labels.model_name }})",
                "description": (f"{{{{ $value }}}} requests have been waiting for more than {duration(t.queue_for_s)} "
                                f"(threshold {_num(t.queue_waiting)}). The server cannot keep up: add replicas, "
                                "lower max_tokens, or raise --max-num-seqs if KV cache allows."),
            },
        },
        {
            "alert": "VllmKvCacheNearFull",
            "expr": f"{KV_CACHE_RECORD} > {_num(t.kv_cache_usage)}",
            "for": duration(t.kv_cache_for_s),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "vLLM KV cache nearly full on {{ $labels.instance }} ({{ $labels.model_name }})",
                "description": ("KV-cache usage is {{ $value | humanizePercentage }} (threshold "
                                f"{t.kv_cache_usage:.0%}) for {duration(t.kv_cache_for_s)}. New requests will "
                                "queue and running ones get preempted: raise --gpu-memory-utilization, lower "
                                "--max-model-len, or add replicas."),
            },
        },
        {
            "alert": "VllmTimeToFirstTokenHigh",
            "expr": f'{latency_record(m.TTFT, t)}{{quantile="0.99"}} > {_num(t.ttft_p99_s)}',
            "for": duration(t.ttft_for_s),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "vLLM time to first token p99 high on {{ $labels.instance }} ({{ $labels.model_name }})",
                "description": (f"TTFT p99 over {w} is {{{{ $value | humanizeDuration }}}} (threshold "
                                f"{_num(t.ttft_p99_s)}s). Look at the queue ({WAITING_RECORD}) and "
                                "prompt lengths; chunked prefill or more replicas help."),
            },
        },
        {
            "alert": "VllmPreemptionsRising",
            "expr": f"{_AGG} (increase({m.PREEMPTIONS}[{pw}])) > {_num(t.preemptions_increase)}",
            "for": duration(t.preemptions_for_s),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "vLLM is preempting requests on {{ $labels.instance }} ({{ $labels.model_name }})",
                "description": (f"{{{{ $value | printf \"%.0f\" }}}} preemptions in the last {pw}: the KV cache is "
                                "too small for the load, so requests are evicted and recomputed. Raise "
                                "--gpu-memory-utilization or lower --max-num-seqs."),
            },
        },
        {
            "alert": "VllmTargetDown",
            # By job name, or any target that served vLLM metrics in the last hour (whatever its job is called).
            "expr": (f'up{{job=~"{t.job_regex}"}} == 0 or up == 0 and on (job, instance) '
                     f"group by (job, instance) (last_over_time({m.RUNNING}[1h]))"),
            "for": duration(t.target_down_for_s),
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "vLLM /metrics target {{ $labels.instance }} is down",
                "description": (f"Prometheus has not scraped {{{{ $labels.instance }}}} (job {{{{ $labels.job }}}}) "
                                "for "
                                f"{duration(t.target_down_for_s)}: the server stopped or hangs. Check `vboot ps` "
                                "and `vboot logs`."),
            },
        },
    ]


def rule_groups(thresholds: AlertThresholds = AlertThresholds()) -> list[dict[str, Any]]:
    """Prometheus rule groups as plain data: one recording group, one alert group.

    The same structure goes under ``groups:`` in a rules file and under ``spec.groups`` of a
    Kubernetes PrometheusRule.
    """
    return [
        {"name": RECORDING_GROUP, "rules": _recording_rules(thresholds)},
        {"name": ALERT_GROUP, "rules": _alert_rules(thresholds)},
    ]


def alert_names(thresholds: AlertThresholds = AlertThresholds(), gpu: GpuExporter | None = None) -> list[str]:
    """The alert names of :func:`rule_groups` (and of :func:`gpu_rule_groups` for ``gpu`` when given)."""
    groups = rule_groups(thresholds) + (gpu_rule_groups(gpu, thresholds) if gpu is not None else [])
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


# ---------------------------------------------------------------------------------------------------------------
# GPU metrics: an NVML exporter's series, recorded under names that do not depend on the exporter
#
# Locally `vboot serve --prometheus` runs nvitop-exporter (PyPI; NVML through nvitop) on loopback; in a cluster the
# NVIDIA GPU operator runs dcgm-exporter. The two name and scale things differently (``gpu_utilization_Percentage``
# 0..100 with an ``index`` label vs ``DCGM_FI_DEV_GPU_UTIL`` 0..100 with ``gpu``; memory in MiB; DCGM has no total,
# only used and free), so one recording group per exporter writes the same ``instance_gpu:*`` series with a ``gpu``
# label (the index), and the alerts and the dashboard read only those.

GPU_RECORDING_GROUP = "gpu.recording"
GPU_ALERT_GROUP = "gpu.alerts"
#: Scrape job of the local GPU exporter (`vboot serve --prometheus` on a GPU box).
GPU_JOB = "gpu-exporter"
#: Recorded GPU series (labels: job, instance, gpu, and whatever else the exporter adds that identifies a GPU).
GPU_UTILIZATION_RECORD = "instance_gpu:utilization:ratio"  # 0..1
GPU_MEMORY_USED_RECORD = "instance_gpu:memory_used:bytes"
GPU_MEMORY_TOTAL_RECORD = "instance_gpu:memory_total:bytes"
GPU_MEMORY_USAGE_RECORD = "instance_gpu:memory_usage:ratio"  # used / total, 0..1
GPU_POWER_RECORD = "instance_gpu:power_usage:watts"
GPU_TEMPERATURE_RECORD = "instance_gpu:temperature:celsius"
MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuExporter:
    """The metric names of one NVML exporter, as it serves them (see tests/data/*-exporter*.metrics.txt)."""

    name: str
    job_regex: str  # scrape jobs of this exporter (for the exporter-down alert)
    gpu_label: str  # the label holding the GPU index
    drop_labels: tuple[str, ...]  # labels that only describe a GPU (name, UUID, host): dropped when recording
    utilization_percent: str  # 0..100
    memory_used_mib: str
    memory_total_mib: str  # a PromQL expression in MiB
    power_watts: str
    temperature_celsius: str

    def metric_names(self) -> set[str]:
        """Every exporter metric the GPU rules read."""
        exprs = (self.utilization_percent, self.memory_used_mib, self.memory_total_mib, self.power_watts,
                 self.temperature_celsius)
        return {name for e in exprs for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e)}


#: nvitop-exporter 1.7.2 (nvitop_exporter/exporter.py): prometheus_client appends each Gauge's unit to its name.
NVITOP_EXPORTER = GpuExporter(
    name="nvitop-exporter", job_regex=GPU_JOB, gpu_label="index",
                              drop_labels=("index", "uuid", "devicename", "hostname"),
    utilization_percent="gpu_utilization_Percentage", memory_used_mib="gpu_memory_used_MiB",
    memory_total_mib="gpu_memory_total_MiB", power_watts="gpu_power_usage_W", temperature_celsius="gpu_temperature_C",
)
#: NVIDIA dcgm-exporter's default counters (etc/default-counters.csv): framebuffer used and free in MiB, no total.
DCGM_EXPORTER = GpuExporter(
    name="dcgm-exporter", job_regex=".*dcgm.*", gpu_label="gpu",
    drop_labels=("UUID", "device", "modelName", "pci_bus_id", "DCGM_FI_DRIVER_VERSION"),
    utilization_percent="DCGM_FI_DEV_GPU_UTIL", memory_used_mib="DCGM_FI_DEV_FB_USED",
    memory_total_mib="DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE", power_watts="DCGM_FI_DEV_POWER_USAGE",
    temperature_celsius="DCGM_FI_DEV_GPU_TEMP",
)


def _gpu_series(gpu: GpuExporter, expr: str) -> str:
    """``expr`` with the GPU index in a ``gpu`` label and the descriptive labels dropped."""
    if gpu.gpu_label != "gpu":
        expr = f'label_replace({expr}, "gpu", "$1", "{gpu.gpu_label}", "(.*)")'
    return f"max without ({', '.join(gpu.drop_labels)}) ({expr})"


def _gpu_recording_rules(gpu: GpuExporter) -> list[dict[str, Any]]:
    return [
        {"record": GPU_UTILIZATION_RECORD, "expr": f"{_gpu_series(gpu, gpu.utilization_percent)} / 100"},
        {"record": GPU_MEMORY_USED_RECORD, "expr": f"{_gpu_series(gpu, gpu.memory_used_mib)} * {MIB}"},
        {"record": GPU_MEMORY_TOTAL_RECORD, "expr": f"{_gpu_series(gpu, f'({gpu.memory_total_mib})')} * {MIB}"},
        # Rules of a group run in order within one evaluation: the two series above are this evaluation's.
        {"record": GPU_MEMORY_USAGE_RECORD, "expr": f"{GPU_MEMORY_USED_RECORD} / {GPU_MEMORY_TOTAL_RECORD}"},
        {"record": GPU_POWER_RECORD, "expr": _gpu_series(gpu, gpu.power_watts)},
        {"record": GPU_TEMPERATURE_RECORD, "expr": _gpu_series(gpu, gpu.temperature_celsius)},
    ]


def _gpu_alert_rules(gpu: GpuExporter, t: AlertThresholds) -> list[dict[str, Any]]:
    total = GPU_MEMORY_TOTAL_RECORD
    return [
        {
            "alert": "GpuMemoryNearFull",
            "expr": f"{GPU_MEMORY_USAGE_RECORD} > {_num(t.gpu_memory_usage)}",
            "for": duration(t.gpu_memory_for_s),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.instance }} is nearly out of memory",
                "description": ("GPU memory is {{ $value | humanizePercentage }} used (threshold "
                                f"{t.gpu_memory_usage:.0%}) for {duration(t.gpu_memory_for_s)}. vLLM holds "
                                "--gpu-memory-utilization of the GPU by design; above that, another process (an "
                                "orphaned EngineCore, a notebook) is using it: `vboot ps` lists orphans, "
                                "`nvidia-smi` every process."),
            },
        },
        {
            "alert": "GpuLost",
            # A GPU that reported within the last hour and now has no series, or reads NaN (NVML answers N/A for
            # a GPU that fell off the bus), while its exporter is up (GpuExporterDown covers the exporter).
            "expr": (f"(last_over_time({total}[1h]) unless {total} or {total} != {total}) "
                     "and on (job, instance) (up == 1)"),
            "for": duration(t.gpu_lost_for_s),
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.instance }} stopped reporting",
                "description": (f"{gpu.name} no longer reports GPU {{{{ $labels.gpu }}}} (or reads it as N/A) for "
                                f"{duration(t.gpu_lost_for_s)}. The GPU may have fallen off the bus (look for Xid "
                                "errors in `dmesg`); vLLM on it has stopped or will. `nvidia-smi` shows what the "
                                "driver sees."),
            },
        },
        {
            "alert": "GpuExporterDown",
            "expr": f'up{{job=~"{gpu.job_regex}"}} == 0',
            "for": duration(t.gpu_exporter_down_for_s),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "GPU exporter {{ $labels.instance }} is down",
                "description": (f"Prometheus has not scraped {gpu.name} at {{{{ $labels.instance }}}} for "
                                f"{duration(t.gpu_exporter_down_for_s)}: GPU metrics and GPU alerts are blind. Check "
                                "its log in the run directory (or the exporter pod)."),
            },
        },
    ]


def gpu_rule_groups(gpu: GpuExporter, thresholds: AlertThresholds = AlertThresholds()) -> list[dict[str, Any]]:
    """GPU rule groups for ``gpu``'s metric names: a recording group writing the ``instance_gpu:*`` series and an
    alert group (memory nearly full, a GPU lost, the exporter down)."""
    return [
        {"name": GPU_RECORDING_GROUP, "rules": _gpu_recording_rules(gpu)},
        {"name": GPU_ALERT_GROUP, "rules": _gpu_alert_rules(gpu, thresholds)},
    ]


def gpu_recording_rule_names() -> list[str]:
    """The ``record:`` names of :func:`gpu_rule_groups` (the same for every exporter)."""
    return [r["record"] for r in _gpu_recording_rules(NVITOP_EXPORTER)]


def render_gpu_rules(gpu: GpuExporter, thresholds: AlertThresholds = AlertThresholds()) -> str:
    """A rules file holding only ``gpu``'s groups (the promtool tests in tests/promtool use one per exporter)."""
    header = f"# Generated by vboot: GPU recording and alert rules for {gpu.name}.\n"
    return header + to_yaml({"groups": gpu_rule_groups(gpu, thresholds)})


def render_rules(thresholds: AlertThresholds = AlertThresholds(), gpu: GpuExporter | None = None) -> str:
    """The rules file (YAML) that prometheus.yml loads; with ``gpu``, the GPU groups follow vLLM's."""
    header = "# Generated by vboot: recording and alert rules for vLLM. Edit thresholds via vboot, not here.\n"
    groups = rule_groups(thresholds) + (gpu_rule_groups(gpu, thresholds) if gpu is not None else [])
    return header + to_yaml({"groups": groups})


@dataclass(frozen=True)
class ScrapeJob:
    """One more scrape job for prometheus.yml (the GPU exporter, :func:`gpu_scrape_job`)."""

    job: str
    target: str  # host:port
    interval_s: float | None = None  # default: the config's scrape interval
    labels: Mapping[str, str] = field(default_factory=dict)


def gpu_scrape_job(target: str, interval_s: float | None = None) -> ScrapeJob:
    """The scrape job of the local GPU exporter at ``target`` (``127.0.0.1:PORT``), named :data:`GPU_JOB`, which
    :data:`NVITOP_EXPORTER`'s exporter-down alert watches."""
    return ScrapeJob(GPU_JOB, target, interval_s)


def _check_target(target: str) -> None:
    if "/" in target or not target.rpartition(":")[2].isdigit():
        raise ValueError(f"target must be host:port, not {target!r}")


def render_prometheus_config(job: str, target: str, *, rule_files: Sequence[str] = (RULES_FILE,),
                             scrape_interval_s: float = 5.0, labels: Mapping[str, str] | None = None,
                             api_key: str | None = None, api_key_file: str | None = None,
                             alertmanagers: Sequence[str] = (), extra_jobs: Sequence[ScrapeJob] = (),
                             evaluation_interval_s: float | None = None) -> str:
    """The prometheus.yml for one server: scrape ``http://TARGET/metrics`` every ``scrape_interval_s``.

    ``target`` is ``host:port`` (``127.0.0.1:8000``). vLLM 0.32 does not guard ``/metrics`` with ``--api-key``
    (its AuthenticationMiddleware covers only /v1, /v2, /inference and /cohere), so no credential is needed;
    pass ``api_key_file`` (preferred: the secret stays out of the config) or ``api_key`` for servers behind
    a proxy that does guard it, and Prometheus sends it as a bearer token.

    ``alertmanagers`` (``host:port`` each) adds an ``alerting:`` block sending firing alerts there;
    ``extra_jobs`` adds scrape jobs (the GPU exporter, :func:`gpu_scrape_job`); ``evaluation_interval_s``
    (default: the scrape interval) is how often the rules run.
    """
    _check_target(target)
    for extra in (*alertmanagers, *(j.target for j in extra_jobs)):
        _check_target(extra)
    if api_key and api_key_file:
        raise ValueError("pass api_key or api_key_file, not both")
    interval = duration(scrape_interval_s)
    scrape: dict[str, Any] = {
        "job_name": job,
        "metrics_path": "/metrics",
        "scrape_interval": interval,
        "static_configs": [{"targets": [target], **({"labels": dict(labels)} if labels else {})}],
    }
    if api_key_file:
        scrape["authorization"] = {"type": "Bearer", "credentials_file": api_key_file}
    elif api_key:
        scrape["authorization"] = {"type": "Bearer", "credentials": api_key}
    scrapes = [scrape]
    for extra_job in extra_jobs:
        scrapes.append({
            "job_name": extra_job.job,
            "metrics_path": "/metrics",
            "scrape_interval": duration(extra_job.interval_s) if extra_job.interval_s else interval,
            "static_configs": [{"targets": [extra_job.target],
                                **({"labels": dict(extra_job.labels)} if extra_job.labels else {})}],
        })
    evaluation = duration(evaluation_interval_s) if evaluation_interval_s else interval
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": evaluation},
        "rule_files": list(rule_files),
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    config["scrape_configs"] = scrapes
    return "# Generated by vboot for one vLLM server.\n" + to_yaml(config)
