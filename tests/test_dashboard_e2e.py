"""End to end: every panel of the Grafana dashboard returns data from a real Prometheus scraping real vLLM.

Uses the session fixture ``tiny_server`` (`vboot serve tiny --detach --prometheus`: the tiny model on the vLLM CPU
build, scraped every 5 s by Debian's Prometheus with the rules serve writes). The test sends chat completions,
waits for the rules to see them, then runs each panel's queries (read back from the dashboard JSON in the run
directory, the ``$model_name`` variable substituted as Grafana would) and requires at least one series with a
finite value: no panel may show "No data".

There is no GPU here, so the GPU panels have no exporter to read. They are exempt only as exactly the panels
marked ``gpu`` (the test checks that set), and each of their series names must be one that the promtool unit tests
(tests/promtool/gpu-rules-nvitop_test.yml) produce from recorded nvitop-exporter output.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from bootstrap.core import dashboard, prom
from tests.support.e2e import chat, http_get

pytestmark = pytest.mark.e2e

PROMTOOL_DIR = Path(__file__).parent / "promtool"


def _range(prom_url: str, query: str, seconds: float = 180) -> list[dict]:
    end = time.time()
    params = {"query": query, "start": f"{end - seconds:.3f}", "end": f"{end:.3f}", "step": "5"}
    status, body = http_get(f"{prom_url}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout=10)
    assert status == 200, body[:500]
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _finite_series(result: list[dict]) -> list[dict]:
    return [r for r in result if any(math.isfinite(float(v)) for _, v in r["values"])]


def _grafana_regex_escape(value: str) -> str:
    """What Grafana's Prometheus data source does to a single variable value used in a regex matcher
    (prometheusRegularEscape): backslashes doubled twice, regex metacharacters behind a PromQL-escaped backslash."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value)


def _substitute(expr: str, model: str) -> str:
    """Grafana's interpolation of the dashboard variables for a single selected model."""
    return expr.replace(f"${dashboard.MODEL_VAR}", _grafana_regex_escape(model))


def test_every_panel_returns_a_series_under_load(tiny_server):
    prom_url = tiny_server.prometheus_url
    assert prom_url, "tiny_server runs with --prometheus"
    board = (Path(tiny_server.run_dir) / dashboard.DASHBOARD_FILE).read_text()
    assert board == dashboard.render_dashboard(), "serve wrote another dashboard than render_dashboard()"
    model = tiny_server.served_model_name

    # Load: requests that stop on length and others that may stop on their own, over a few scrapes.
    for i in range(12):
        chat(tiny_server.url, model, content=f"Tell me something, {i}", max_tokens=8 + 4 * (i % 3))
        time.sleep(0.5)

    panels = dashboard.dashboard_panels()
    gpu_titles = {p.title for p in panels if p.gpu}
    queries = dashboard.panel_queries(board)
    assert {t for t, _ in queries} == {p.title for p in panels}

    # Rates and quantiles need two samples of the new counts inside the 1m window; the rules run every 5 s.
    deadline = time.monotonic() + 90
    missing: list[str] = []
    while True:
        missing = []
        for title, expr in queries:
            if title in gpu_titles:
                continue
            if not _finite_series(_range(prom_url, _substitute(expr, model))):
                missing.append(f"{title}: {expr}")
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert missing == [], "panels with no data:\n" + "\n".join(missing)

    # Each query reads this model only: the variable selects it.
    for title, expr in queries:
        if title not in gpu_titles:
            for series in _range(prom_url, _substitute(expr, model)):
                assert series["metric"].get(dashboard.MODEL_VAR) == model, (title, series["metric"])


def test_the_only_panels_without_a_local_source_are_the_gpu_ones_and_promtool_covers_them(tiny_server):
    """No exporter runs without a GPU: the panels that read nothing here are exactly the GPU panels, and each
    series they read is produced by the promtool tests from recorded nvitop-exporter output."""
    prom_url = tiny_server.prometheus_url
    model = tiny_server.served_model_name
    board = (Path(tiny_server.run_dir) / dashboard.DASHBOARD_FILE).read_text()
    empty = {title for title, expr in dashboard.panel_queries(board)
             if not _finite_series(_range(prom_url, _substitute(expr, model)))}
    gpu = {p.title for p in dashboard.dashboard_panels() if p.gpu}
    assert empty == gpu == {"GPU utilisation", "GPU memory used", "GPU power", "GPU temperature"}

    spec = yaml.safe_load((PROMTOOL_DIR / "gpu-rules-nvitop_test.yml").read_text())
    proven = {case["expr"].split("{")[0] for test in spec["tests"] for case in test.get("promql_expr_test", [])
              if case.get("exp_samples")}
    for panel in dashboard.dashboard_panels():
        if panel.gpu:
            for q in panel.queries:
                assert q.expr in prom.gpu_recording_rule_names() and q.expr in proven, (panel.title, q.expr)
