"""The Grafana dashboard: built from vboot's rule names, valid by the SDK's own model, no panel reading a metric
vLLM 0.32 does not serve or a rule vboot does not write."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.core import dashboard, prom
from bootstrap.core.metrics import parse_exposition

DATA = Path(__file__).parent / "data"
VLLM_RECORDINGS = sorted(DATA.glob("vllm-0.32-*.metrics.txt"))
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def served_by_vllm() -> set[str]:
    names: set[str] = set()
    for path in VLLM_RECORDINGS:
        names |= set(parse_exposition(path.read_text()).sample_names())
    return names


def series_names(expr: str) -> set[str]:
    """Metric and recorded-series names a PromQL expression reads (not functions, keywords, labels or strings)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range selectors: [1m]
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        following = stripped[m.end():].lstrip()[:1]
        if following == "(" or m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def unknown_names(dashboard_json: str) -> list[str]:
    """Names a panel reads that are neither served by vLLM 0.32 nor written by vboot's rules (vLLM and GPU)."""
    known_records = set(prom.recording_rule_names()) | set(prom.gpu_recording_rule_names())
    served = served_by_vllm()
    bad = []
    for title, expr in dashboard.panel_queries(dashboard_json):
        for name in series_names(expr):
            ok = name in served if name.startswith("vllm:") else name in known_records
            if not ok:
                bad.append(f"{title}: {name}")
    return bad


def test_recorded_vllm_expositions_are_there():
    assert len(VLLM_RECORDINGS) >= 2 and "vllm:kv_cache_usage_perc" in served_by_vllm()


def test_every_panel_reads_a_vboot_rule_or_a_metric_vllm_032_serves():
    assert unknown_names(dashboard.render_dashboard()) == []


def test_a_panel_on_a_renamed_or_removed_metric_is_caught():
    """What production-stack's dashboards did: vllm:gpu_cache_usage_perc, long gone; and a rule vboot never wrote."""
    text = dashboard.render_dashboard().replace(prom.KV_CACHE_RECORD, "vllm:gpu_cache_usage_perc", 1)
    text = text.replace(prom.GPU_POWER_RECORD, "instance_gpu:power:watts", 1)
    assert unknown_names(text) == ["KV-cache usage: vllm:gpu_cache_usage_perc", "GPU power: instance_gpu:power:watts"]


def test_series_names_ignores_functions_labels_and_keywords():
    expr = 'histogram_quantile(0.9, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{a="b(c)"}[1m])))'
    assert series_names(expr) == {"vllm:e2e_request_latency_seconds_bucket"}


def test_every_query_is_built_from_the_rule_names_of_the_rate_window_in_use():
    text = dashboard.render_dashboard(prom.AlertThresholds(rate_window_s=120))
    exprs = [e for _, e in dashboard.panel_queries(text)]
    assert any("histogram_quantile_2m" in e for e in exprs) and not any("histogram_quantile_1m" in e for e in exprs)
    assert unknown_names(text) != []  # the default rules record 1m, so these names are not theirs
    assert not [e for e in exprs if "2m" in e and e.split("{")[0] not in
                prom.recording_rule_names(prom.AlertThresholds(rate_window_s=120))]


def test_the_dashboard_is_valid_by_the_sdks_own_model():
    from grafana_foundation_sdk.models.dashboard import Dashboard

    doc = json.loads(dashboard.render_dashboard())
    again = json.loads(json.dumps(Dashboard.from_json(doc).to_json(), default=lambda o: o.to_json()))
    assert again == doc


def test_panels_cover_what_the_issue_lists():
    titles = [p.title for p in dashboard.dashboard_panels()]
    assert titles == ["Requests running and waiting", "KV-cache usage", "Tokens per second",
                      "Finished requests by reason", "Preemptions", "Time to first token", "Queue time",
                      "Inter-token latency", "End-to-end request latency", "GPU utilisation", "GPU memory used",
                      "GPU power", "GPU temperature"]
    latency = {p.title: p for p in dashboard.dashboard_panels() if p.unit == "s"}
    for panel in latency.values():
        *quantiles, mean = panel.queries
        assert [q.expr.rsplit('quantile="', 1)[1][:-2] for q in quantiles] == ["0.5", "0.95", "0.99"]
        assert ":mean1m{" in mean.expr and mean.legend.startswith("mean")
        assert "inside vLLM's engine" in panel.description


def test_per_model_panels_filter_on_the_model_variable_and_gpu_panels_read_only_gpu_records():
    gpu_records = set(prom.gpu_recording_rule_names())
    for panel in dashboard.dashboard_panels():
        for q in panel.queries:
            if panel.gpu:
                assert series_names(q.expr) <= gpu_records and "$model_name" not in q.expr
            else:
                assert 'model_name=~"$model_name"' in q.expr and not series_names(q.expr) & gpu_records


def test_the_json_has_the_variables_unique_panel_ids_and_a_stable_uid():
    doc = json.loads(dashboard.render_dashboard())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    model = variables["model_name"]
    assert model["type"] == "query" and model["includeAll"] and model["allValue"] == ".*"
    assert model["query"] == f"label_values({prom.RUNNING_RECORD}, model_name)"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and all(ids)
    assert doc["uid"] == "vboot-vllm" and doc["schemaVersion"] >= 39
    for p in doc["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_rendering_is_deterministic():
    assert dashboard.render_dashboard() == dashboard.render_dashboard()


def test_importing_the_dashboard_module_does_not_import_the_sdk():
    code = "import sys, bootstrap.core.dashboard, bootstrap.core.k8s; print('grafana_foundation_sdk' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_doctor_never_imports_the_sdk(isolated_env):
    code = ("import sys\nfrom bootstrap.cli.main import main\ntry:\n    main(['doctor', '--json'])\n"
            "except SystemExit:\n    pass\nprint('grafana_foundation_sdk' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=isolated_env)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr[-2000:]


@pytest.mark.parametrize("exporter", [prom.NVITOP_EXPORTER, prom.DCGM_EXPORTER])
def test_gpu_panels_read_series_both_exporters_record(exporter):
    records = {r["record"] for r in prom.gpu_rule_groups(exporter)[0]["rules"]}
    for panel in dashboard.dashboard_panels():
        if panel.gpu:
            for q in panel.queries:
                assert series_names(q.expr) <= records
