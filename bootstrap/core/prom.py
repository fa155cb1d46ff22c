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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
#: Latency histograms served by vLLM 0.32 -> short name used in recording-rule names.
LATENCY_HISTOGRAMS: dict[str, str] = {m.TTFT: "ttft", m.ITL: "itl", m.E2E: "e2e"}
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

    def __post_init__(self) -> None:
        if not 0 < self.kv_cache_usage <= 1:
            raise ValueError(f"kv_cache_usage is a ratio in (0, 1], not {self.kv_cache_usage}")
        for name in ("queue_for_s", "kv_cache_for_s", "ttft_for_s", "preemption_window_s", "preemptions_for_s",
                     "target_down_for_s", "rate_window_s"):
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


def recording_rule_names() -> list[str]:
    """The ``record:`` names produced by :func:`rule_groups` (each once, in order)."""
    seen: list[str] = []
    for rule in rule_groups()[0]["rules"]:
        if rule["record"] not in seen:
            seen.append(rule["record"])
    return seen


def _recording_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    w = duration(t.rate_window_s)
    rules: list[dict[str, Any]] = [
        # The series the production-stack autoscaler (prometheus-adapter -> HPA) scales on.
        {"record": WAITING_RECORD, "expr": f"{_AGG} ({m.WAITING})"},
        {"record": RUNNING_RECORD, "expr": f"{_AGG} ({m.RUNNING})"},
        # max, not sum: usage is a ratio per engine; the fullest engine is the one that preempts.
        {"record": KV_CACHE_RECORD, "expr": f"max without (engine) ({m.KV_CACHE})"},
        {"record": f"model_name:vllm_prompt_tokens:rate{w}",
         "expr": f"{_AGG} (rate({m.PROMPT_TOKENS}[{w}]))"},
        {"record": f"model_name:vllm_generation_tokens:rate{w}",
         "expr": f"{_AGG} (rate({m.GENERATION_TOKENS}[{w}]))"},
        {"record": f"model_name:vllm_num_preemptions:rate{w}",
         "expr": f"{_AGG} (rate({m.PREEMPTIONS}[{w}]))"},
        # Finished requests per second by finished_reason (stop, length, abort, error, repetition).
        {"record": f"model_name_finished_reason:vllm_request_success:rate{w}",
         "expr": f"{_AGG} (rate({m.REQUEST_SUCCESS}[{w}]))"},
    ]
    for metric, short in LATENCY_HISTOGRAMS.items():
        for q in QUANTILES:
            rules.append({
                "record": f"model_name:vllm_{short}_seconds:histogram_quantile_{w}",
                "expr": f"histogram_quantile({q}, {_AGG} (rate({metric}_bucket[{w}])))",
                "labels": {"quantile": str(q)},
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
            "expr": (f'model_name:vllm_ttft_seconds:histogram_quantile_{w}{{quantile="0.99"}} '
                     f"> {_num(t.ttft_p99_s)}"),
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
                "description": (f"Prometheus has not scraped {{{{ $labels.instance }}}} (job {{{{ $labels.job }}}}) for "
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


def alert_names(thresholds: AlertThresholds = AlertThresholds()) -> list[str]:
    return [r["alert"] for r in rule_groups(thresholds)[1]["rules"]]


def render_rules(thresholds: AlertThresholds = AlertThresholds()) -> str:
    """The rules file (YAML) that prometheus.yml loads."""
    header = "# Generated by vboot: recording and alert rules for vLLM. Edit thresholds via vboot, not here.\n"
    return header + to_yaml({"groups": rule_groups(thresholds)})


def render_prometheus_config(job: str, target: str, *, rule_files: Sequence[str] = (RULES_FILE,),
                             scrape_interval_s: float = 5.0, labels: Mapping[str, str] | None = None,
                             api_key: str | None = None, api_key_file: str | None = None) -> str:
    """The prometheus.yml for one server: scrape ``http://TARGET/metrics`` every ``scrape_interval_s``.

    ``target`` is ``host:port`` (``127.0.0.1:8000``). vLLM 0.32 does not guard ``/metrics`` with ``--api-key``
    (its AuthenticationMiddleware covers only /v1, /v2, /inference and /cohere), so no credential is needed;
    pass ``api_key_file`` (preferred: the secret stays out of the config) or ``api_key`` for servers behind
    a proxy that does guard it, and Prometheus sends it as a bearer token.
    """
    if "/" in target or not target.rpartition(":")[2].isdigit():
        raise ValueError(f"target must be host:port, not {target!r}")
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
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [scrape],
    }
    return "# Generated by vboot for one vLLM server.\n" + to_yaml(config)
