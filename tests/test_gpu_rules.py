"""GPU metrics in Prometheus: the exporter's command line and scrape job, and the GPU rules checked by promtool
against recorded exporter output (tests/data/nvitop-exporter-1.7.2.metrics.txt, recorded by running
nvitop-exporter's own PrometheusExporter on stand-in devices: there is no GPU here; and dcgm-exporter's default
counters, tests/data/dcgm-exporter-4.x.metrics.txt)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bootstrap.core import prom
from bootstrap.core.gpu_exporter import DCGM_PROGRAM, NVITOP_PROGRAM, plan_gpu_exporter
from bootstrap.core.metrics import parse_exposition

DATA = Path(__file__).parent / "data"
PROMTOOL_DIR = Path(__file__).parent / "promtool"
RECORDED = {"nvitop": DATA / "nvitop-exporter-1.7.2.metrics.txt", "dcgm": DATA / "dcgm-exporter-4.x.metrics.txt"}
EXPORTERS = {"nvitop": prom.NVITOP_EXPORTER, "dcgm": prom.DCGM_EXPORTER}
# Labels Prometheus adds when it scrapes (not in the exporter's output).
SCRAPE_LABELS = {"job", "instance"}


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed (apt-get install -y prometheus)")
    return exe


def recorded(kind: str) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    snap = parse_exposition(RECORDED[kind].read_text())
    return {name: {labels for labels, _ in rows} for name, rows in snap.samples.items()}


def _series(selector: str) -> tuple[str, dict[str, str]]:
    name, _, rest = selector.partition("{")
    labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return name, labels


@pytest.mark.parametrize("kind", ["nvitop", "dcgm"])
def test_checked_in_gpu_rules_match_the_generator(kind):
    assert (PROMTOOL_DIR / f"gpu-rules-{kind}.yml").read_text() == prom.render_gpu_rules(EXPORTERS[kind]), (
        "regenerate: python -c 'from bootstrap.core import prom; open(\"tests/promtool/gpu-rules-KIND.yml\",\"w\")"
        ".write(prom.render_gpu_rules(prom.KIND_EXPORTER))'")


@pytest.mark.parametrize("kind", ["nvitop", "dcgm"])
def test_promtool_gpu_rule_unit_tests_pass(kind):
    result = subprocess.run([promtool(), "test", "rules", f"gpu-rules-{kind}_test.yml"], cwd=PROMTOOL_DIR,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_gpu_tests_fail_when_the_memory_threshold_moves(tmp_path):
    (tmp_path / "gpu-rules-nvitop.yml").write_text(
        prom.render_gpu_rules(prom.NVITOP_EXPORTER, prom.AlertThresholds(gpu_memory_usage=0.99)))
    shutil.copy(PROMTOOL_DIR / "gpu-rules-nvitop_test.yml", tmp_path)
    result = subprocess.run([promtool(), "test", "rules", "gpu-rules-nvitop_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "GpuMemoryNearFull" in result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["nvitop", "dcgm"])
def test_promtool_tests_feed_only_series_the_exporter_serves(kind):
    """Every input series (less up, and less the labels a scrape adds) is a series of the recorded output."""
    served = recorded(kind)
    spec = yaml.safe_load((PROMTOOL_DIR / f"gpu-rules-{kind}_test.yml").read_text())
    checked = 0
    for test in spec["tests"]:
        for item in test["input_series"]:
            name, labels = _series(item["series"])
            if name == "up":
                continue
            own = tuple(sorted((k, v) for k, v in labels.items() if k not in SCRAPE_LABELS))
            assert name in served, f"{name} is not served by {kind}"
            assert own in served[name], f"{name}{dict(own)} is not a series {kind} serves"
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("kind", ["nvitop", "dcgm"])
def test_every_exporter_metric_the_rules_read_is_in_the_recorded_output(kind):
    served = recorded(kind)
    assert EXPORTERS[kind].metric_names() <= set(served), EXPORTERS[kind].metric_names() - set(served)


def test_nvitop_units_are_in_the_metric_names_as_prometheus_client_appends_them():
    served = recorded("nvitop")
    assert "gpu_memory_used_MiB" in served and "gpu_memory_used" not in served


@pytest.mark.parametrize("kind", ["nvitop", "dcgm"])
def test_promtool_gpu_tests_cover_every_gpu_alert(kind):
    spec = yaml.safe_load((PROMTOOL_DIR / f"gpu-rules-{kind}_test.yml").read_text())
    tested = {case["alertname"] for test in spec["tests"] for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    wanted = {"GpuMemoryNearFull", "GpuLost", "GpuExporterDown"} if kind == "nvitop" else {
        "GpuMemoryNearFull", "GpuExporterDown"}
    assert wanted <= tested
    assert set(prom.alert_names(gpu=EXPORTERS[kind])) - set(prom.alert_names()) == {
        "GpuMemoryNearFull", "GpuLost", "GpuExporterDown"}


def test_both_exporters_record_the_same_series_names():
    for exporter in EXPORTERS.values():
        names = [r["record"] for r in prom.gpu_rule_groups(exporter)[0]["rules"]]
        assert names == prom.gpu_recording_rule_names()


def test_gpu_memory_threshold_above_one_is_refused():
    with pytest.raises(ValueError, match="ratio"):
        prom.AlertThresholds(gpu_memory_usage=97)


def test_nvitop_exporter_runs_on_loopback_at_the_given_port_with_its_hostname():
    plan = plan_gpu_exporter(NVITOP_PROGRAM, "/opt/v/bin/nvitop-exporter", port=9911, hostname="box")
    argv = list(plan.argv)
    assert argv[0] == "/opt/v/bin/nvitop-exporter"
    assert argv[argv.index("--bind-address") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "9911"
    assert argv[argv.index("--hostname") + 1] == "box"
    assert plan.scrape_job.target == "127.0.0.1:9911" and plan.scrape_job.job == prom.GPU_JOB
    assert plan.metrics.job_regex == prom.GPU_JOB


def test_dcgm_exporter_where_installed_gets_the_dcgm_names_and_the_local_job():
    plan = plan_gpu_exporter(DCGM_PROGRAM, "/usr/bin/dcgm-exporter", port=9400)
    assert list(plan.argv) == ["/usr/bin/dcgm-exporter", "--address", "127.0.0.1:9400"]
    assert plan.metrics.utilization_percent == "DCGM_FI_DEV_GPU_UTIL" and plan.metrics.job_regex == prom.GPU_JOB


def test_an_unknown_exporter_is_refused():
    with pytest.raises(ValueError, match="unknown GPU exporter"):
        plan_gpu_exporter("gpustat", "/bin/gpustat")


def test_prometheus_config_with_the_gpu_job_and_alertmanager_passes_promtool(tmp_path):
    plan = plan_gpu_exporter(NVITOP_PROGRAM, "nvitop-exporter", port=9911, hostname="box")
    text = prom.render_prometheus_config("vllm-demo", "127.0.0.1:8000", alertmanagers=["127.0.0.1:9093"],
                                         extra_jobs=[plan.scrape_job])
    cfg = yaml.safe_load(text)
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["vllm-demo", prom.GPU_JOB]
    assert cfg["scrape_configs"][1]["static_configs"] == [{"targets": ["127.0.0.1:9911"]}]
    assert cfg["alerting"] == {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]}
    (tmp_path / "prometheus.yml").write_text(text)
    (tmp_path / prom.RULES_FILE).write_text(prom.render_rules(gpu=plan.metrics))
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", prom.RULES_FILE]):
        res = subprocess.run([promtool(), *args], cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_rules_without_a_gpu_exporter_are_unchanged():
    assert prom.render_rules() == (PROMTOOL_DIR / "vllm-rules.yml").read_text()
    assert "instance_gpu" not in prom.render_rules()
