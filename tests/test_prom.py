"""The generated Prometheus config and rules: structure, metric names, and promtool's verdict."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bootstrap.core.metrics import parse_exposition
from bootstrap.core.prom import (
    ALERT_GROUP,
    RECORDING_GROUP,
    AlertThresholds,
    alert_names,
    duration,
    recording_rule_names,
    render_prometheus_config,
    render_rules,
    rule_groups,
)

DATA = Path(__file__).parent / "data"
PROMTOOL_DIR = Path(__file__).parent / "promtool"
IDLE = DATA / "vllm-0.32-idle.metrics.txt"


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed (apt-get install -y prometheus)")
    return exe


def _raw_metric_names(expr: str) -> set[str]:
    """``vllm:...`` names referenced by a PromQL expression (recorded names use ``vllm_``)."""
    return set(re.findall(r"vllm:[a-z0-9_]+", expr))


def test_rule_groups_have_one_recording_and_one_alert_group():
    groups = rule_groups()
    assert [g["name"] for g in groups] == [RECORDING_GROUP, ALERT_GROUP]
    assert all("record" in r for r in groups[0]["rules"])
    assert all("alert" in r for r in groups[1]["rules"])


def test_recording_rules_cover_what_the_issue_asks_for():
    names = recording_rule_names()
    assert "vllm_num_requests_waiting" in names  # the production autoscaler's series, exact name
    for part in ("requests_running", "prompt_tokens", "generation_tokens", "kv_cache_usage", "ttft", "itl",
                 "request_success"):
        assert any(part in n for n in names), part


def test_latency_rules_record_p50_p95_p99_for_ttft_and_itl():
    rules = rule_groups()[0]["rules"]
    for short in ("ttft", "itl", "e2e", "queue"):
        quantiles = {r["labels"]["quantile"] for r in rules
                     if f"vllm_{short}_seconds:histogram_quantile" in r["record"]}
        assert quantiles == {"0.5", "0.95", "0.99"}
        assert f"model_name:vllm_{short}_seconds:mean1m" in recording_rule_names()


def test_mean_latency_rules_divide_sum_by_count_per_model():
    from bootstrap.core.metrics import QUEUE_TIME
    from bootstrap.core.prom import latency_mean_record

    [rule] = [r for r in rule_groups()[0]["rules"] if r["record"] == latency_mean_record(QUEUE_TIME)]
    assert rule["expr"] == ("sum without (engine) (rate(vllm:request_queue_time_seconds_sum[1m])) / "
                            "sum without (engine) (rate(vllm:request_queue_time_seconds_count[1m]))")


def test_every_alert_has_summary_description_severity_and_for():
    for rule in rule_groups()[1]["rules"]:
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["for"]


def test_alerts_are_the_five_the_issue_names():
    assert alert_names() == ["VllmQueueBacklog", "VllmKvCacheNearFull", "VllmTimeToFirstTokenHigh",
                             "VllmPreemptionsRising", "VllmTargetDown"]


def test_every_vllm_metric_in_the_rules_is_served_by_vllm_0_32():
    served = set(parse_exposition(IDLE.read_text()).sample_names())
    for group in rule_groups():
        for rule in group["rules"]:
            for name in _raw_metric_names(rule["expr"]):
                assert name in served, f"{name} (in {rule.get('record') or rule.get('alert')}) is not served"


def test_every_vllm_metric_in_the_rules_is_a_name_from_the_metrics_module():
    from bootstrap.core import metrics

    known = {v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str) and v.startswith("vllm:")}
    for group in rule_groups():
        for rule in group["rules"]:
            for name in _raw_metric_names(rule["expr"]):
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert family in known, f"{name} is not one of bootstrap.core.metrics' names"


def test_the_exported_recorded_names_are_recorded():
    from bootstrap.core.prom import KV_CACHE_RECORD, RUNNING_RECORD, WAITING_RECORD

    assert {WAITING_RECORD, RUNNING_RECORD, KV_CACHE_RECORD} <= set(recording_rule_names())


def test_importing_the_rules_does_not_import_prometheus_client():
    import subprocess
    import sys

    code = "import sys, bootstrap.core.prom, bootstrap.core.k8s; print('prometheus_client' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_rules_never_use_removed_or_total_less_names():
    text = render_rules()
    assert "gpu_cache_usage_perc" not in text
    assert "time_per_output_token_seconds" not in text
    assert re.search(r"vllm:num_preemptions(?!_total)\b", text) is None


def test_thresholds_change_the_alert_expressions():
    groups = rule_groups(AlertThresholds(queue_waiting=3, queue_for_s=30, kv_cache_usage=0.8, ttft_p99_s=0.5))
    alerts = {r["alert"]: r for r in groups[1]["rules"]}
    assert alerts["VllmQueueBacklog"]["expr"] == "vllm_num_requests_waiting > 3"
    assert alerts["VllmQueueBacklog"]["for"] == "30s"
    assert alerts["VllmKvCacheNearFull"]["expr"].endswith("> 0.8")
    assert alerts["VllmTimeToFirstTokenHigh"]["expr"].endswith("> 0.5")


def test_a_kv_threshold_above_one_is_refused():
    with pytest.raises(ValueError, match="ratio"):
        AlertThresholds(kv_cache_usage=90)


@pytest.mark.parametrize(("seconds", "text"), [(60, "1m"), (90, "90s"), (300, "5m"), (3600, "1h"), (0.5, "500ms")])
def test_duration_renders_prometheus_durations(seconds, text):
    assert duration(seconds) == text


def test_render_rules_round_trips_through_yaml():
    assert yaml.safe_load(render_rules()) == {"groups": rule_groups()}


def test_config_scrapes_the_target_and_loads_the_rules():
    cfg = yaml.safe_load(render_prometheus_config("vllm-demo", "127.0.0.1:8000", labels={"run": "demo"}))
    assert cfg["rule_files"] == ["vllm-rules.yml"]
    (scrape,) = cfg["scrape_configs"]
    assert scrape["job_name"] == "vllm-demo"
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"] == [{"targets": ["127.0.0.1:8000"], "labels": {"run": "demo"}}]
    assert scrape["scrape_interval"] == "5s"
    assert "authorization" not in scrape


def test_config_with_api_key_sends_a_bearer_credential():
    scrape = yaml.safe_load(render_prometheus_config("vllm", "127.0.0.1:8000", api_key="s3cret"))["scrape_configs"][0]
    assert scrape["authorization"] == {"type": "Bearer", "credentials": "s3cret"}


def test_config_with_api_key_file_keeps_the_secret_out_of_the_file():
    text = render_prometheus_config("vllm", "127.0.0.1:8000", api_key_file="/run/key")
    assert yaml.safe_load(text)["scrape_configs"][0]["authorization"] == {"type": "Bearer",
                                                                          "credentials_file": "/run/key"}


def test_config_rejects_a_url_as_target():
    with pytest.raises(ValueError, match="host:port"):
        render_prometheus_config("vllm", "http://127.0.0.1:8000/metrics")


def test_promtool_accepts_the_config_and_rules(tmp_path):
    (tmp_path / "prometheus.yml").write_text(render_prometheus_config("vllm", "127.0.0.1:8000", api_key="k"))
    (tmp_path / "vllm-rules.yml").write_text(render_rules())
    cfg = subprocess.run([promtool(), "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    rules = subprocess.run([promtool(), "check", "rules", "vllm-rules.yml"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"{sum(len(g['rules']) for g in rule_groups())} rules found" in rules.stdout


def test_promtool_rejects_a_broken_rules_file(tmp_path):
    """The check above can fail: a rule with bad PromQL is refused."""
    (tmp_path / "bad.yml").write_text("groups:\n- name: x\n  rules:\n  - record: a\n    expr: sum(\n")
    result = subprocess.run([promtool(), "check", "rules", "bad.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0


def test_checked_in_rules_for_promtool_tests_match_the_generator():
    assert (PROMTOOL_DIR / "vllm-rules.yml").read_text() == render_rules(), (
        "regenerate: python -c 'from bootstrap.core.prom import render_rules; "
        "open(\"tests/promtool/vllm-rules.yml\",\"w\").write(render_rules())'")


def test_promtool_unit_tests_cover_every_alert():
    spec = yaml.safe_load((PROMTOOL_DIR / "vllm-rules_test.yml").read_text())
    tested = {case["alertname"] for test in spec["tests"] for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    assert tested == set(alert_names())


def test_promtool_unit_tests_pass():
    result = subprocess.run([promtool(), "test", "rules", "vllm-rules_test.yml"], cwd=PROMTOOL_DIR,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path):
    """The unit tests pin behaviour: rules with a higher queue threshold no longer fire where expected."""
    (tmp_path / "vllm-rules.yml").write_text(render_rules(AlertThresholds(queue_waiting=50)))
    shutil.copy(PROMTOOL_DIR / "vllm-rules_test.yml", tmp_path / "vllm-rules_test.yml")
    result = subprocess.run([promtool(), "test", "rules", "vllm-rules_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "VllmQueueBacklog" in result.stdout + result.stderr
