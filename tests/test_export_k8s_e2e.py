"""End to end: the prometheus-adapter rule of `vboot export k8s` against a real Prometheus scraping a real vLLM.

In a cluster the series carry ``namespace`` and ``pod`` labels (added by the ServiceMonitor); a plain local
Prometheus has ``job`` and ``instance`` instead, so the same rule is run with those label names in their place.
Uses the session fixture ``tiny_server`` (tests/conftest.py): the tiny model served by real vLLM, scraped by a
real Prometheus at ``tiny_server.prometheus_url``.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
import yaml

from bootstrap.core import k8s
from bootstrap.core.environ import Environ
from bootstrap.core.profiles import load_profile
from tests.support.e2e import http_get


def _prom(prometheus_url: str, path: str, **params: str) -> list[dict]:
    status, body = http_get(f"{prometheus_url}{path}?{urllib.parse.urlencode(params)}", timeout=10)
    assert status == 200, body[:500]
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    data = doc["data"]
    return data["result"] if isinstance(data, dict) else data


def _wait_for_series(prometheus_url: str, query: str, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = _prom(prometheus_url, "/api/v1/query", query=query)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1)


def _adapter_rule() -> dict:
    result = k8s.build_export(load_profile("qwen", Environ({})), k8s.K8sOptions())
    text = next(d.text for d in result.documents if d.filename == k8s.PROM_ADAPTER_FILE)
    return yaml.safe_load(text)["rules"]["custom"][0]


@pytest.mark.e2e
def test_adapter_metrics_query_returns_the_waiting_requests_series_of_real_vllm(tiny_server):
    prom = tiny_server.prometheus_url
    raw = _wait_for_series(prom, f'{k8s.WAITING_METRIC}{{model_name="{tiny_server.served_model_name}"}}')
    assert raw, f"Prometheus at {prom} has no {k8s.WAITING_METRIC} for {tiny_server.served_model_name}"
    job, instance = raw[0]["metric"]["job"], raw[0]["metric"]["instance"]
    rule = _adapter_rule()

    # seriesQuery: what the adapter lists to discover the metric (label names swapped for the local ones)
    assert rule["seriesQuery"] == k8s.adapter_series_query()
    series = _prom(prom, "/api/v1/series", **{"match[]": k8s.adapter_series_query("job", "instance")})
    assert series and {s["__name__"] for s in series} == {k8s.WAITING_METRIC}

    # metricsQuery: the rule's own template, filled the way the adapter fills it for one namespace's pods
    query = k8s.adapter_metrics_query(namespace_label="job", pod_label="instance", namespace=job, pods=[instance],
                                      template=rule["metricsQuery"])
    result = _prom(prom, "/api/v1/query", query=query)
    assert len(result) == 1, (query, result)
    assert result[0]["metric"] == {"instance": instance}
    expected = sum(float(s["value"][1]) for s in raw if s["metric"]["instance"] == instance)
    assert float(result[0]["value"][1]) == expected
