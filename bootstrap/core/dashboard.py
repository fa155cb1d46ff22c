"""The Grafana dashboard for vLLM, as code: panels built from vboot's own rule and metric names.

Dashboards break when vLLM renames a metric (production-stack's read ``vllm:gpu_cache_usage_perc`` long after it
was removed). Here every query is assembled from the names :mod:`bootstrap.core.prom` records and
:mod:`bootstrap.core.metrics` reads, the same names the rules are tested with against recorded vLLM 0.32 output
(tests/test_dashboard.py fails on any other). Panels read recording rules, so the dashboard needs vboot's rules
loaded (`vboot serve --prometheus` does; `vboot export k8s` ships them as a PrometheusRule).

The JSON is built with Grafana's own SDK (``grafana-foundation-sdk``, the build for Grafana 11.6, which Grafana 12
loads too), imported only here, when a dashboard is rendered: doctor never pays for it.

Two steps, both pure: :func:`dashboard_panels` is the panel list as data (what tests and the README read), and
:func:`render_dashboard` turns it into the dashboard JSON text that `vboot serve` writes beside prometheus.yml
(:data:`DASHBOARD_FILE`) and the Kubernetes export ships in a ConfigMap for Grafana's dashboard sidecar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bootstrap.core import metrics as m
from bootstrap.core import prom
from bootstrap.core.prom import AlertThresholds

#: File name in the run directory and key in the Kubernetes ConfigMap.
DASHBOARD_FILE = "grafana-dashboard.json"
DASHBOARD_UID = "vboot-vllm"
DASHBOARD_TITLE = "vLLM (vboot)"
#: Dashboard variables: the Prometheus data source, and the served model(s) shown.
DATASOURCE_VAR = "datasource"
MODEL_VAR = "model_name"
#: The matcher every per-model query carries (Grafana fills in the variable; "All" is ".*").
MODEL_MATCHER = f'{{{MODEL_VAR}=~"${MODEL_VAR}"}}'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """One time-series panel: its title, Grafana unit id, queries, and whether it reads GPU exporter series."""

    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str
    row: str
    gpu: bool = False


def _per_model(series: str) -> str:
    return f"{series}{MODEL_MATCHER}"


def _quantiles(histogram: str, t: AlertThresholds) -> tuple[Query, ...]:
    """p50/p95/p99 (interpolated inside the histogram's buckets) and the exact mean."""
    record = prom.latency_record(histogram, t)
    who = f"{{{{{MODEL_VAR}}}}} {{{{instance}}}}"
    return (*(Query(f'{record}{{{MODEL_VAR}=~"${MODEL_VAR}",quantile="{q}"}}', f"p{round(q * 100)} {who}")
              for q in prom.QUANTILES),
            Query(_per_model(prom.latency_mean_record(histogram, t)), f"mean {who}"))


def dashboard_panels(thresholds: AlertThresholds = AlertThresholds()) -> tuple[PanelSpec, ...]:
    """Every panel of the dashboard, in order. Per model (the ``model_name`` variable): load, KV cache, tokens/s,
    latencies (p50/p95/p99, as the engine measures them), preemptions, finished requests; per GPU: utilisation,
    memory, power, temperature (from the GPU exporter's recorded ``instance_gpu:*`` series)."""
    t = thresholds
    w = prom.duration(t.rate_window_s)
    by_model = f"{{{{{MODEL_VAR}}}}} {{{{instance}}}}"
    engine = ("Measured inside vLLM's engine, from the request's arrival at the engine: clients also see "
              "tokenisation, HTTP and network time, so their numbers are higher.")
    gpu = "{{instance}} GPU {{gpu}}"
    return (
        PanelSpec("Requests running and waiting", "short", (
            Query(_per_model(prom.RUNNING_RECORD), f"running {by_model}"),
            Query(_per_model(prom.WAITING_RECORD), f"waiting {by_model}"),
        ), "Requests being processed and requests queued for a slot (the autoscaler's signal).", "Load"),
        PanelSpec("KV-cache usage", "percentunit", (
            Query(_per_model(prom.KV_CACHE_RECORD), by_model),
        ), f"Fullest engine's KV cache (0-100 %). Above {t.kv_cache_usage:.0%}, requests start to be preempted.",
            "Load"),
        PanelSpec("Tokens per second", "short", (
            Query(_per_model(prom.prompt_tokens_rate_record(t)), f"prompt {by_model}"),
            Query(_per_model(prom.generation_tokens_rate_record(t)), f"generation {by_model}"),
        ), f"Prompt (prefill) and generated tokens per second, averaged over {w}.", "Load"),
        PanelSpec("Finished requests by reason", "reqps", (
            Query(_per_model(prom.finished_rate_record(t)), f"{{{{finished_reason}}}} {by_model}"),
        ), f"Requests finished per second over {w}, by finished_reason (stop, length, abort, error, ...).", "Load"),
        PanelSpec("Preemptions", "short", (
            Query(_per_model(prom.preemptions_rate_record(t)), by_model),
        ), f"Requests evicted from the KV cache per second over {w} (recomputed later): the cache is too small.",
            "Load"),
        PanelSpec("Time to first token", "s", _quantiles(m.TTFT, t), engine, "Latency (inside the engine)"),
        PanelSpec("Queue time", "s", _quantiles(m.QUEUE_TIME, t),
                  "Time a request waited before the engine scheduled it; part of time to first token. vLLM's "
                  "queue-time buckets start at 0.3 s, so below that the percentiles are interpolations and the "
                  "mean is the number to read. " + engine, "Latency (inside the engine)"),
        PanelSpec("Inter-token latency", "s", _quantiles(m.ITL, t), engine, "Latency (inside the engine)"),
        PanelSpec("End-to-end request latency", "s", _quantiles(m.E2E, t), engine, "Latency (inside the engine)"),
        PanelSpec("GPU utilisation", "percentunit", (Query(prom.GPU_UTILIZATION_RECORD, gpu),),
                  "Share of time a kernel ran on the GPU (NVML's utilisation).", "GPU", gpu=True),
        PanelSpec("GPU memory used", "bytes", (
            Query(prom.GPU_MEMORY_USED_RECORD, f"used {gpu}"),
            Query(prom.GPU_MEMORY_TOTAL_RECORD, f"total {gpu}"),
        ), "Framebuffer memory used and total. vLLM reserves --gpu-memory-utilization of it at start.", "GPU",
            gpu=True),
        PanelSpec("GPU power", "watt", (Query(prom.GPU_POWER_RECORD, gpu),), "Power draw in watts.", "GPU", gpu=True),
        PanelSpec("GPU temperature", "celsius", (Query(prom.GPU_TEMPERATURE_RECORD, gpu),),
                  "GPU core temperature.", "GPU", gpu=True),
    )


def render_dashboard(thresholds: AlertThresholds = AlertThresholds(), *, title: str = DASHBOARD_TITLE,
                     uid: str = DASHBOARD_UID) -> str:
    """The dashboard JSON (Grafana's classic dashboard model, schemaVersion of the SDK build), deterministic:
    the same arguments give the same text. Import it in Grafana (Dashboards -> New -> Import) and pick the
    Prometheus that scrapes vLLM."""
    from grafana_foundation_sdk.builders import dashboard as gd
    from grafana_foundation_sdk.builders import prometheus as gp
    from grafana_foundation_sdk.builders import timeseries as gt
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import dashboard as dm

    ds = dm.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VAR}}}")
    board = (
        gd.Dashboard(title)
        .uid(uid)
        .tags(["vllm", "vboot"])
        .description("vLLM served by vboot: load, latency inside the engine, and GPUs. Generated by vboot from "
                     "the names of its recording rules; regenerate rather than edit.")
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(gd.DatasourceVariable(DATASOURCE_VAR).label("Prometheus").type("prometheus"))
        .with_variable(
            gd.QueryVariable(MODEL_VAR)
            .label("model")
            .datasource(ds)
            .query(f"label_values({prom.RUNNING_RECORD}, {MODEL_VAR})")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    row = None
    y = 0
    col = 0
    ids = iter(range(1, 1000))  # Grafana needs a unique id per panel and row
    for spec in dashboard_panels(thresholds):
        if spec.row != row:
            row = spec.row
            if col:
                y += 8
                col = 0
            board = board.with_row(gd.Row(row).id(next(ids)).grid_pos(dm.GridPos(h=1, w=24, x=0, y=y)))
            y += 1
        panel = (
            gt.Panel()
            .id(next(ids))
            .title(spec.title)
            .description(spec.description)
            .unit(spec.unit)
            .datasource(ds)
            .grid_pos(dm.GridPos(h=8, w=12, x=col, y=y))
        )
        for i, q in enumerate(spec.queries):
            panel = panel.with_target(gp.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(ord("A") + i))
                                      .datasource(ds))
        board = board.with_panel(panel)
        col = 12 - col
        if col == 0:
            y += 8
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def panel_queries(dashboard_json: str) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of a rendered dashboard, read back from its JSON."""
    doc = json.loads(dashboard_json)
    return [(p["title"], t["expr"]) for p in doc["panels"] if p.get("type") != "row" for t in p.get("targets", [])]
