"""`vboot export k8s`: the files from a profile, checked against Kubernetes schemas, the charts' value
layouts, promtool and golden files.

Regenerate the golden files (tests/golden/k8s/qwen/) after an intended change:

    VBOOT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_export_k8s.py -k golden

then review `git diff tests/golden/k8s` before committing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from bootstrap.core import k8s
from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError
from bootstrap.core.profiles import load_profile, parse_profile

GOLDEN = Path(__file__).parent / "golden" / "k8s" / "qwen"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
#: Kubernetes release whose schemas the manifests must satisfy (the newest kubernetes-validate ships).
K8S_VERSION = kubernetes_validate.utils.latest_version()

# The parts of vllm-stack's values.schema.json (helm/values.schema.json in vllm-project/production-stack) that
# the export relies on: the fields the chart requires of a modelSpec entry and their types.
MODEL_SPEC_SCHEMA = {
    "type": "object",
    "required": ["name", "repository", "tag", "modelURL", "replicaCount", "requestCPU", "requestMemory",
                 "requestGPU", "pvcStorage"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "repository": {"type": "string"}, "tag": {"type": "string"}, "modelURL": {"type": "string"},
        "replicaCount": {"type": "integer"}, "requestCPU": {"type": "integer"},
        "requestMemory": {"type": "string"}, "requestGPU": {"type": "integer"}, "pvcStorage": {"type": "string"},
        "vllmConfig": {"type": "object", "properties": {
            "enablePrefixCaching": {"type": "boolean"}, "maxModelLen": {"type": "integer"},
            "dtype": {"type": "string"}, "tensorParallelSize": {"type": "integer"},
            "gpuMemoryUtilization": {"type": "number"},
            "extraArgs": {"type": "array", "items": {"type": "string"}},
        }},
        "env": {"type": "array", "items": {"type": "object", "required": ["name", "value"],
                                           "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}},
    },
}


# servingEngineSpec.vllmApiKey in vllm-stack's values.schema.json: the key itself, or an existing Secret.
VLLM_API_KEY_SCHEMA = {
    "oneOf": [
        {"type": "string"},
        {"type": "object", "properties": {"secretName": {"type": "string"}, "secretKey": {"type": "string"}},
         "required": ["secretName", "secretKey"]},
    ],
}


def qwen():
    return load_profile("qwen", Environ({}))


def export_files(profile=None, options=None) -> dict[str, str]:
    result = k8s.build_export(profile or qwen(), options or k8s.K8sOptions())
    return {doc.filename: doc.text for doc in result.documents}


def parsed(profile=None, options=None) -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in export_files(profile, options).items()}


def two_gpu_profile():
    """A user profile: another model, tensor parallel 2 (GPU count), a served name and a dtype."""
    text = """
description = "Qwen2.5-7B on two GPUs"
[model]
id = "Qwen/Qwen2.5-7B-Instruct"
served_name = "qwen7"
[serve]
device = "gpu"
max_model_len = 16384
tensor_parallel_size = 2
dtype = "bfloat16"
[env]
VLLM_LOGGING_LEVEL = "INFO"
[needs]
weights = "15.3GB"
min_free_disk = "16GB"
"""
    return parse_profile(text, name="big7b", source="/tmp/big7b.toml")


# --- the files ------------------------------------------------------------------------------------------------


def test_export_writes_exactly_the_files_named_in_the_issues():
    assert list(export_files()) == ["production-stack-values.yaml", "kube-prom-stack-values.yaml",
                                    "prom-adapter-values.yaml", "hpa.yaml", "grafana-dashboard.yaml"]


def test_every_file_is_valid_yaml_with_a_provenance_header():
    for name, text in export_files().items():
        assert text.startswith("# "), name
        assert "vboot export k8s qwen" in text, name
        assert isinstance(yaml.safe_load(text), dict), name


def test_hpa_validates_against_the_kubernetes_schema_strictly():
    hpa = parsed()["hpa.yaml"]
    assert kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_schema_validation_can_fail_on_a_broken_hpa():
    hpa = parsed()["hpa.yaml"]
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = {"not": "a quantity"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_kubernetes_validate_ships_its_schemas_so_tests_need_no_network():
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    shipped = list(root.glob(f"v{K8S_VERSION}*-local-strict/horizontalpodautoscaler-autoscaling-v2.json"))
    assert shipped, f"no bundled schema for Kubernetes {K8S_VERSION} under {root}"


def test_hpa_scales_the_deployment_production_stack_creates_for_the_model():
    # deployment-vllm-multi.yaml names it "{{ .Release.Name }}-{{ $modelSpec.name }}-deployment-vllm".
    docs = parsed(options=k8s.K8sOptions(release="llmstack"))
    name = docs["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]["name"]
    target = docs["hpa.yaml"]["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"llmstack-{name}-deployment-vllm"}


def test_hpa_reads_the_adapter_metric_per_pod_with_the_queue_target_and_replica_bounds():
    opts = k8s.K8sOptions(min_replicas=2, max_replicas=6, queue_target=2.5, namespace="llm")
    docs = parsed(options=opts)
    hpa = docs["hpa.yaml"]
    adapter_rule = docs["prom-adapter-values.yaml"]["rules"]["custom"][0]
    assert hpa["metadata"]["namespace"] == "llm"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == adapter_rule["name"]["as"] == "vllm_num_requests_waiting"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "2500m"}
    assert docs["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]["replicaCount"] == 2


def test_production_stack_model_spec_has_the_fields_the_chart_requires():
    spec = parsed()["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]
    jsonschema.validate(spec, MODEL_SPEC_SCHEMA)


def test_production_stack_values_carry_the_qwen_profile():
    values = parsed()["production-stack-values.yaml"]["servingEngineSpec"]
    spec = values["modelSpec"][0]
    assert spec["modelURL"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert spec["requestGPU"] == 1
    assert spec["vllmConfig"]["maxModelLen"] == 8192
    assert spec["vllmConfig"]["gpuMemoryUtilization"] == 0.9
    # the chart adds --no-enable-prefix-caching unless this is true; vLLM's own default is on
    assert spec["vllmConfig"]["enablePrefixCaching"] is True
    assert values["serviceMonitor"]["enabled"] is True


def test_modelscope_profiles_get_the_modelscope_variables_with_the_cache_on_the_model_volume():
    spec = parsed()["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert env["VLLM_USE_MODELSCOPE"] == "true"
    assert env["MODELSCOPE_CACHE"] == "/data/modelscope"


def test_local_environment_does_not_leak_into_the_cluster_files(monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "garbage_collection_threshold:0.6")
    monkeypatch.setenv("MODELSCOPE_CACHE", "/home/me/ms")
    text = export_files()["production-stack-values.yaml"]
    assert "/home/me" not in text and "garbage_collection" not in text


def test_kube_prom_stack_enables_prometheus_alertmanager_and_grafana():
    values = parsed()["kube-prom-stack-values.yaml"]
    assert values["prometheus"]["enabled"] and values["alertmanager"]["enabled"] and values["grafana"]["enabled"]


def test_kube_prom_stack_selects_service_monitors_and_rules_of_other_releases():
    spec = parsed()["kube-prom-stack-values.yaml"]["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    assert spec["serviceMonitorNamespaceSelector"] == {}


def test_grafana_has_no_default_password_only_an_existing_secret():
    grafana = parsed()["kube-prom-stack-values.yaml"]["grafana"]
    assert "adminPassword" not in grafana
    assert grafana["admin"]["existingSecret"] == k8s.GRAFANA_SECRET
    text = export_files()["kube-prom-stack-values.yaml"]
    assert "prom-operator" not in text


def test_the_guide_creates_the_grafana_secret_with_a_random_password_before_installing_the_stack():
    guide = k8s.guide_commands(k8s.build_export(qwen(), k8s.K8sOptions()), "out")
    secret = next(i for i, c in enumerate(guide) if "create secret generic " + k8s.GRAFANA_SECRET in c)
    stack = next(i for i, c in enumerate(guide) if "kube-prometheus-stack" in c and "helm upgrade" in c)
    assert secret < stack
    assert "openssl rand" in guide[secret]


def test_prometheus_rule_holds_vboots_rule_groups():
    from bootstrap.core.prom import rule_groups

    rules = parsed()["kube-prom-stack-values.yaml"]["additionalPrometheusRulesMap"][k8s.RULES_MAP_KEY]
    assert rules["groups"] == yaml.safe_load(yaml.safe_dump(rule_groups()))


def test_prometheus_rule_groups_pass_promtool_check_rules(tmp_path):
    if not Path(PROMTOOL).exists():
        from tests.support.e2e import missing

        missing("promtool not installed (apt-get install prometheus)")
    rules = parsed()["kube-prom-stack-values.yaml"]["additionalPrometheusRulesMap"][k8s.RULES_MAP_KEY]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rules["groups"]}))
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_prometheus_rule_groups_read_exactly_like_the_local_rules_file():
    """One YAML style for both: the same groups, line for line, only indented under the values' keys."""
    import textwrap

    from bootstrap.core.prom import render_rules

    k8s_text = export_files()["kube-prom-stack-values.yaml"]
    assert k8s_text.endswith("\n") and "\n    groups:\n" in k8s_text
    vllm_entry = k8s_text.split("\n    groups:\n", 1)[1].split(f"\n  {k8s.GPU_RULES_MAP_KEY}:\n")[0] + "\n"
    k8s_groups = textwrap.dedent(vllm_entry)
    local_groups = textwrap.dedent(render_rules().split("\ngroups:\n", 1)[1])
    assert k8s_groups == local_groups


def test_rules_use_metric_names_vllm_032_serves():
    text = export_files()["kube-prom-stack-values.yaml"]
    assert "vllm:gpu_cache_usage_perc" not in text
    assert "vllm:time_per_output_token_seconds" not in text


def test_the_autoscaler_metric_names_come_from_the_metrics_and_rules_modules():
    from bootstrap.core import metrics, prom

    assert k8s.WAITING_METRIC == metrics.WAITING
    assert k8s.CUSTOM_METRIC == prom.WAITING_RECORD and k8s.CUSTOM_METRIC in prom.recording_rule_names()


def test_adapter_points_at_the_stacks_prometheus_service():
    values = parsed(options=k8s.K8sOptions(monitoring_namespace="obs"))["prom-adapter-values.yaml"]
    # kube-prometheus-stack: "{fullname | trunc 26}-prometheus", fullname = RELEASE-kube-prometheus-stack
    assert values["prometheus"]["url"] == "http://kube-prom-stack-kube-prome-prometheus.obs.svc"
    assert values["prometheus"]["port"] == 9090


def test_prometheus_service_name_follows_the_charts_truncation():
    assert k8s.K8sOptions(kps_release="kube-prometheus-stack").prometheus_service == "kube-prometheus-stack-prometheus"
    assert k8s.K8sOptions(kps_release="mon").prometheus_service == "mon-kube-prometheus-stack-prometheus"


def test_adapter_rule_exposes_waiting_requests_per_pod():
    rule = parsed()["prom-adapter-values.yaml"]["rules"]["custom"][0]
    assert rule["seriesQuery"] == 'vllm:num_requests_waiting{namespace!="",pod!=""}'
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert rule["name"] == {"matches": "^vllm:num_requests_waiting$", "as": "vllm_num_requests_waiting"}
    assert rule["metricsQuery"] == "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"


def test_adapter_metrics_query_fills_the_template_like_the_adapter():
    query = k8s.adapter_metrics_query(namespace="llm", pods=["vllm-a", "vllm.b"])
    assert query == 'sum by (pod) (vllm:num_requests_waiting{namespace="llm",pod=~"vllm-a|vllm\\\\.b"})'


# --- a profile change flows into every file ----------------------------------------------------------------------


def test_a_profile_change_of_model_and_gpu_count_flows_into_every_file():
    before, after = export_files(), export_files(two_gpu_profile())
    for name in before:
        assert before[name] != after[name], name
        assert "Qwen/Qwen2.5-7B-Instruct" in after[name] and "2 GPU(s) per replica" in after[name], name
    docs = {name: yaml.safe_load(text) for name, text in after.items()}
    spec = docs["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]
    assert spec["modelURL"] == "Qwen/Qwen2.5-7B-Instruct"
    assert spec["requestGPU"] == 2 and spec["vllmConfig"]["tensorParallelSize"] == 2
    assert spec["vllmConfig"]["extraArgs"] == ["--served-model-name", "qwen7"]
    assert spec["vllmConfig"]["dtype"] == "bfloat16"
    assert {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"} in spec["env"]
    rules = docs["kube-prom-stack-values.yaml"]["additionalPrometheusRulesMap"][k8s.RULES_MAP_KEY]
    assert rules["additionalLabels"]["vboot.dev/profile"] == "big7b"
    hpa = docs["hpa.yaml"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "vllm-big7b-deployment-vllm"
    assert hpa["metadata"]["annotations"]["vboot.dev/gpus-per-replica"] == "2"
    assert kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    jsonschema.validate(spec, MODEL_SPEC_SCHEMA)


def test_tensor_parallel_in_args_counts_as_gpus_and_is_not_passed_twice():
    prof = qwen()
    prof = replace(prof, serve=replace(prof.serve, args=("--tensor-parallel-size", "4", "--enforce-eager")))
    spec = parsed(prof)["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]
    assert spec["requestGPU"] == 4 and spec["vllmConfig"]["tensorParallelSize"] == 4
    assert spec["vllmConfig"]["extraArgs"] == ["--enforce-eager"]


@pytest.mark.parametrize("tp_args", [("-tp=4",), ("-tp", "4"), ("--tensor-parallel-size=4",),
                                     ("--tensor-parallel-size", "4"), ("--tensor_parallel_size=4",),
                                     ("--tensor_parallel_size", "4"), ("--tensor-parallel", "4"),
                                     ("--tensor_parallel=4",)])
def test_every_tensor_parallel_form_serve_reads_sets_the_gpu_count_and_is_stripped(tp_args):
    prof = qwen()
    prof = replace(prof, serve=replace(prof.serve, args=("--enforce-eager", *tp_args, "--max-num-seqs", "8")))
    spec = parsed(prof)["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]
    assert spec["requestGPU"] == 4 and spec["vllmConfig"]["tensorParallelSize"] == 4
    assert spec["vllmConfig"]["extraArgs"] == ["--enforce-eager", "--max-num-seqs", "8"]


@pytest.mark.parametrize("bind_args", [("--port", "9000"), ("--port=9000",), ("--host", "127.0.0.1"),
                                       ("--host=127.0.0.1", "--por", "9000")])
def test_host_and_port_in_args_are_left_to_the_chart_with_a_warning(bind_args):
    """The chart binds vLLM to 0.0.0.0 and its container port and looks there; a later --host/--port would win."""
    prof = qwen()
    prof = replace(prof, serve=replace(prof.serve, args=("--enforce-eager", *bind_args, "--max-num-seqs", "8")))
    result = k8s.build_export(prof, k8s.K8sOptions())
    [values] = [d.data for d in result.documents if d.filename == k8s.PRODUCTION_STACK_FILE]
    spec = values["servingEngineSpec"]["modelSpec"][0]
    assert spec["vllmConfig"]["extraArgs"] == ["--enforce-eager", "--max-num-seqs", "8"]
    assert any("left out of extraArgs" in w and bind_args[0].partition("=")[0] in w for w in result.warnings)


@pytest.mark.parametrize("args, shown", [('"--ssl-keyfile", "/etc/tls/k.pem"', "--ssl-keyfile"),
                                         ('"--ssl_certfile=/etc/tls/c.pem"', "--ssl_certfile"),
                                         ('"--uds", "/tmp/vllm.sock"', "--uds")])
def test_tls_or_a_unix_socket_in_args_is_refused_not_stripped(isolated_env, tmp_path, capsys, monkeypatch, args, shown):
    """Unlike --host/--port, which the chart sets itself, stripping these would quietly change what the profile
    asks for (HTTPS to plain HTTP), and serve refuses the profile anyway: export refuses it in one line too,
    writing nothing. TLS in the cluster belongs to the ingress."""
    from bootstrap.cli import output
    from bootstrap.cli.main import main

    monkeypatch.setattr(output.STATE, "json", False)
    profile = tmp_path / "mine.toml"
    profile.write_text(f'[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\n[serve]\nargs = ["--enforce-eager", {args}]\n')
    with pytest.raises(SystemExit) as exited:
        main(["export", "k8s", str(profile), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {profile}:") and f"{shown} in 'serve.args' is not supported" in line
    assert not (tmp_path / "o").exists()


def test_prefix_caching_turned_off_with_underscores_reaches_the_charts_field():
    prof = qwen()
    prof = replace(prof, serve=replace(prof.serve, args=("--no_enable_prefix_caching", "--enforce-eager")))
    config = parsed(prof)["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]["vllmConfig"]
    assert config["enablePrefixCaching"] is False and config["extraArgs"] == ["--enforce-eager"]


def test_prefix_caching_flags_shortened_reach_the_charts_field_and_keep_the_next_argument():
    """argparse takes a prefix (--no-enable-prefix for --no-enable-prefix-caching); a flag has no value, so the
    argument after it stays."""
    prof = qwen()
    prof = replace(prof, serve=replace(prof.serve, args=("--no-enable-prefix", "--max-num-seqs", "8")))
    config = parsed(prof)["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]["vllmConfig"]
    assert config["enablePrefixCaching"] is False and config["extraArgs"] == ["--max-num-seqs", "8"]


@pytest.mark.parametrize("sleep, kv", [("--enable-sleep", "--kv-transfer"),  # prefixes
                                       ("--enable_sleep_mode", "--kv_transfer_config")])  # underscores
def test_sleep_mode_and_kv_connector_in_other_spellings_are_not_passed_twice(sleep, kv):
    prof = qwen()
    given = (sleep, kv, '{"kv_connector":"X","kv_role":"kv_both"}')
    prof = replace(prof, serve=replace(prof.serve, enable_sleep_mode=True, kv_connector="X", args=given))
    config = parsed(prof)["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]["vllmConfig"]
    assert config["extraArgs"] == list(given)


# --- the API key: a Secret the user creates, never a value in the files ------------------------------------------

KEY = "s3cret"


def with_args(*args: str, env: dict[str, str] | None = None):
    prof = qwen()
    return replace(prof, serve=replace(prof.serve, args=args), env={**prof.env, **(env or {})})


def keyed_export(*args: str, env: dict[str, str] | None = None, options=None):
    return k8s.build_export(with_args(*args, env=env), options or k8s.K8sOptions(namespace="llm", release="stack"))


def engine_values(result) -> dict:
    [doc] = [d for d in result.documents if d.filename == k8s.PRODUCTION_STACK_FILE]
    return yaml.safe_load(doc.text)["servingEngineSpec"]


KEY_SPELLINGS = [("--api-key", KEY), ("--api-key=" + KEY,), ("--api_key", KEY), ("--api_key=" + KEY,),
                 ("--api-k", KEY), ("--api-key", "other", KEY)]


@pytest.mark.parametrize("key_args", KEY_SPELLINGS)
def test_an_api_key_in_serve_args_is_written_to_no_file(key_args, tmp_path):
    result = keyed_export("--enforce-eager", *key_args, "--max-num-seqs", "8")
    k8s.write_files(k8s.plan_writes(tmp_path, result), result)
    for path in tmp_path.iterdir():
        assert KEY not in path.read_text(), path.name
    assert KEY not in json.dumps([result.warnings, k8s.guide_commands(result, str(tmp_path))])


@pytest.mark.parametrize("key_args", KEY_SPELLINGS)
def test_an_api_key_in_serve_args_leaves_extra_args_and_becomes_a_secret_reference(key_args):
    values = engine_values(keyed_export("--enforce-eager", *key_args, "--max-num-seqs", "8"))
    assert values["modelSpec"][0]["vllmConfig"]["extraArgs"] == ["--enforce-eager", "--max-num-seqs", "8"]
    assert values["vllmApiKey"] == {"secretName": "stack-vllm-api-key", "secretKey": "VLLM_API_KEY"}
    jsonschema.validate(values["vllmApiKey"], VLLM_API_KEY_SCHEMA)
    jsonschema.validate(values["modelSpec"][0], MODEL_SPEC_SCHEMA)


def test_the_guide_creates_the_api_key_secret_from_the_shell_before_installing_vllm_stack():
    result = keyed_export("--api-key", KEY)
    guide = k8s.guide_commands(result, "out")
    namespace = guide.index("kubectl create namespace llm --dry-run=client -o yaml | kubectl apply -f -")
    secret = next(i for i, c in enumerate(guide) if "create secret generic stack-vllm-api-key" in c)
    stack = next(i for i, c in enumerate(guide) if "vllm/vllm-stack" in c and "helm upgrade" in c)
    assert namespace < secret < stack
    assert guide[secret].startswith("kubectl -n llm create secret generic stack-vllm-api-key ")
    # read from the shell, which refuses to run it with the variable unset or empty (no key = no auth)
    assert '--from-literal=VLLM_API_KEY="${VLLM_API_KEY:?' in guide[secret]


def test_the_api_key_secret_command_runs_in_a_shell_only_with_the_variable_set(tmp_path):
    command = k8s.api_key_secret_command(keyed_export("--api-key", KEY).api_key)
    fake = tmp_path / "kubectl"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    unset = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env)
    assert unset.returncode != 0 and "set VLLM_API_KEY" in unset.stderr and unset.stdout == ""
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env | {"VLLM_API_KEY": "k y"})
    assert ran.returncode == 0 and ran.stdout.splitlines()[-1] == "--from-literal=VLLM_API_KEY=k y"


def test_the_api_key_warning_names_the_secret_and_masks_the_key():
    [warning] = [w for w in keyed_export("--api_key", KEY).warnings if "vllmApiKey" in w]
    assert warning.startswith("serve.args --api_key *** left out of extraArgs")
    assert "stack-vllm-api-key" in warning and "namespace llm" in warning


def test_the_production_stack_header_says_to_create_the_secret_first():
    [doc] = [d for d in keyed_export("--api-key", KEY).documents if d.filename == k8s.PRODUCTION_STACK_FILE]
    header = [line for line in doc.text.splitlines() if line.startswith("# Before applying:")]
    assert len(header) == 1 and "create secret generic stack-vllm-api-key" in header[0]


def test_several_keys_warn_that_the_secret_holds_one():
    [warning] = [w for w in keyed_export("--api-key", "k1", "k2").warnings if "vllmApiKey" in w]
    assert "gives 2" in warning and "k1" not in warning


def test_a_vllm_api_key_in_the_profile_env_becomes_the_secret_and_leaves_the_pod_env():
    result = keyed_export("--enforce-eager", env={"VLLM_API_KEY": KEY})
    values = engine_values(result)
    assert all(KEY not in d.text for d in result.documents)
    assert "VLLM_API_KEY" not in {e["name"] for e in values["modelSpec"][0]["env"]}
    assert values["vllmApiKey"]["secretName"] == "stack-vllm-api-key"
    assert any(w.startswith("[env] VLLM_API_KEY *** left out of the pod's env") for w in result.warnings)


def test_an_api_key_in_args_wins_over_the_profile_env_as_in_vllm():
    result = keyed_export("--api-key", KEY, env={"VLLM_API_KEY": "envkey"})
    assert result.api_key.origin == "serve.args --api-key"
    assert all(KEY not in d.text and "envkey" not in d.text for d in result.documents)


def test_an_empty_last_api_key_means_no_key_and_no_secret():
    """vLLM reads --api-key= as no key at all (authentication off, [env] ignored): nothing to protect."""
    result = keyed_export("--api-key", KEY, "--api-key=", env={"VLLM_API_KEY": "envkey"})
    values = engine_values(result)
    assert result.api_key is None and "vllmApiKey" not in values
    assert all(KEY not in d.text and "envkey" not in d.text for d in result.documents)
    assert "extraArgs" not in values["modelSpec"][0]["vllmConfig"]


def test_no_api_key_means_no_secret_no_warning_and_no_guide_step():
    result = k8s.build_export(qwen(), k8s.K8sOptions())
    assert "vllmApiKey" not in engine_values(result) and result.api_key is None
    assert not any("vllm-api-key" in c for c in k8s.guide_commands(result, "out"))
    assert not any("vllmApiKey" in w for w in result.warnings)


def test_monitoring_files_are_the_same_with_and_without_an_api_key():
    """vLLM's /metrics is outside the API key's reach (only /v1, /v2, /inference, /cohere are guarded)."""
    plain, keyed = export_files(), {d.filename: d.text for d in keyed_export("--api-key", KEY,
                                                                             options=k8s.K8sOptions()).documents}
    for name in (k8s.KUBE_PROM_STACK_FILE, k8s.PROM_ADAPTER_FILE, k8s.HPA_FILE):
        assert keyed[name] == plain[name], name
    assert engine_values(keyed_export("--api-key", KEY))["serviceMonitor"] == \
        parsed()[k8s.PRODUCTION_STACK_FILE]["servingEngineSpec"]["serviceMonitor"]


def test_tensor_parallel_drops_expandable_segments_like_serve_does():
    env = parsed(two_gpu_profile())["production-stack-values.yaml"]["servingEngineSpec"]["modelSpec"][0]["env"]
    assert "PYTORCH_CUDA_ALLOC_CONF" not in {e["name"] for e in env}


def test_namespace_flows_into_the_hpa_and_the_guide():
    result = k8s.build_export(qwen(), k8s.K8sOptions(namespace="llm"))
    guide = " ".join(k8s.guide_commands(result, "out"))
    assert "vllm/vllm-stack -n llm" in guide and "kubectl apply -n llm -f out/hpa.yaml" in guide


# --- refusals -------------------------------------------------------------------------------------------------


def test_local_profiles_are_refused_because_pods_cannot_see_the_directory():
    with pytest.raises(UsageError, match="local directory"):
        k8s.build_export(load_profile("tiny", Environ({})), k8s.K8sOptions())


@pytest.mark.parametrize("text", ["a:b", "1:2:3", "", "1:"])
def test_replicas_that_are_not_numbers_are_usage_errors(text):
    with pytest.raises(UsageError, match="not MIN:MAX"):
        k8s.parse_replicas(text)


@pytest.mark.parametrize("text", ["0:2", "3:1", "0"])
def test_replica_bounds_out_of_order_are_usage_errors(text):
    low, high = k8s.parse_replicas(text)
    with pytest.raises(UsageError, match="1 <= MIN <= MAX"):
        k8s.K8sOptions(min_replicas=low, max_replicas=high)


def test_cli_bad_replica_bounds_fail_with_one_line_and_a_hint(run_vboot, tmp_path):
    proc = run_vboot("export", "k8s", "qwen", "--out", str(tmp_path / "o"), "--replicas", "3:1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "1 <= MIN <= MAX" in proc.stderr and "--replicas 1:4" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_single_replica_count_means_fixed_bounds():
    assert k8s.parse_replicas("3") == (3, 3)


def test_bad_namespace_is_a_usage_error():
    with pytest.raises(UsageError, match="namespace"):
        k8s.K8sOptions(namespace="Not_Valid")


# --- golden files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", k8s.FILES)
def test_golden_qwen(name):
    text = export_files()[name]
    path = GOLDEN / name
    if os.environ.get("VBOOT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing {path}; regenerate with VBOOT_UPDATE_GOLDEN=1 (see this module's docstring)"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; if intended, regenerate the golden files"


# --- the command -----------------------------------------------------------------------------------------------


def test_cli_writes_files_and_prints_the_guide(run_vboot, tmp_path):
    out = tmp_path / "k8s"
    proc = run_vboot("export", "k8s", "qwen", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(k8s.FILES)
    assert "helm upgrade --install" in proc.stdout and "kubectl apply" in proc.stdout
    assert (out / "hpa.yaml").read_text() == export_files()["hpa.yaml"]


def test_cli_default_out_dir_is_named_after_the_profile(run_vboot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = run_vboot("export", "k8s", "qwen")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "vboot-k8s-qwen" / "hpa.yaml").is_file()


def test_cli_json_lists_the_files_in_the_envelope(run_vboot, tmp_path):
    proc = run_vboot("export", "k8s", "qwen", "--out", str(tmp_path / "o"), "--replicas", "1:4", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["command"] == "export k8s" and doc["status"] == "ok"
    files = doc["data"]["files"]
    assert [f["name"] for f in files] == list(k8s.FILES)
    assert all(f["action"] == "create" and f["size_bytes"] > 0 for f in files)
    assert doc["data"]["max_replicas"] == 4
    assert any("kubectl apply" in c for c in doc["data"]["guide"])


def test_cli_rerun_with_same_content_is_unchanged(run_vboot, tmp_path):
    out = str(tmp_path / "o")
    assert run_vboot("export", "k8s", "qwen", "--out", out).returncode == 0
    doc = json.loads(run_vboot("export", "k8s", "qwen", "--out", out, "--json").stdout)
    assert {f["action"] for f in doc["data"]["files"]} == {"unchanged"}


def _keyed_profile(tmp_path) -> Path:
    """A user profile with --api-key in serve.args, where `vboot` finds it (XDG_CONFIG_HOME)."""
    profiles = tmp_path / "cfg" / "vboot" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "keyed.toml").write_text(f"""
[model]
id = "Qwen/Qwen2.5-1.5B-Instruct"
[serve]
args = ["--enforce-eager", "--api-key", "{KEY}"]
""")
    return tmp_path / "cfg"


def test_cli_json_reports_the_api_key_secret_and_never_the_key(run_vboot, tmp_path):
    out = tmp_path / "o"
    proc = run_vboot("export", "k8s", "keyed", "--out", str(out), "-n", "llm", "--json",
                     env={"XDG_CONFIG_HOME": str(_keyed_profile(tmp_path))})
    assert proc.returncode == 0, proc.stderr
    assert KEY not in proc.stdout + proc.stderr
    assert all(KEY not in p.read_text() for p in out.iterdir())
    doc = json.loads(proc.stdout)
    assert doc["status"] == "warn"
    secret = doc["data"]["api_key_secret"]
    assert (secret["name"], secret["namespace"], secret["key"]) == ("vllm-vllm-api-key", "llm", "VLLM_API_KEY")
    assert secret["create_command"] in doc["data"]["guide"]
    assert any("vllm-vllm-api-key" in w for w in doc["data"]["warnings"])


def test_cli_human_view_prints_the_secret_step_and_never_the_key(run_vboot, tmp_path):
    proc = run_vboot("export", "k8s", "keyed", "--out", str(tmp_path / "o"),
                     env={"XDG_CONFIG_HOME": str(_keyed_profile(tmp_path))})
    assert proc.returncode == 0, proc.stderr
    assert KEY not in proc.stdout + proc.stderr
    assert "create secret generic vllm-vllm-api-key" in proc.stdout and "--api-key ***" in proc.stdout


def test_cli_json_has_no_api_key_secret_without_a_key(run_vboot, tmp_path):
    doc = json.loads(run_vboot("export", "k8s", "qwen", "--out", str(tmp_path / "o"), "--json").stdout)
    assert doc["data"]["api_key_secret"] is None


def test_cli_refuses_to_overwrite_a_different_file_without_force(run_vboot, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "hpa.yaml").write_text("# my edits\n")
    proc = run_vboot("export", "k8s", "qwen", "--out", str(out), "--json")
    assert proc.returncode == 7
    doc = json.loads(proc.stdout)
    assert doc["errors"][0]["code"] == "conflict" and "--force" in doc["errors"][0]["hint"]
    assert (out / "hpa.yaml").read_text() == "# my edits\n"
    assert not (out / "production-stack-values.yaml").exists()


def test_cli_force_replaces_a_different_file(run_vboot, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "hpa.yaml").write_text("# my edits\n")
    proc = run_vboot("export", "k8s", "qwen", "--out", str(out), "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    actions = {f["name"]: f["action"] for f in json.loads(proc.stdout)["data"]["files"]}
    assert actions["hpa.yaml"] == "replace"
    assert (out / "hpa.yaml").read_text() == export_files()["hpa.yaml"]


def test_cli_local_profile_fails_with_one_line_and_a_hint(run_vboot, tmp_path):
    proc = run_vboot("export", "k8s", "tiny", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "local directory" in proc.stderr and "hint:" in proc.stderr


# --- the Grafana dashboard, GPU rules and Alertmanager's receivers (issue 19) -------------------------------------

ALERTS_PROFILE = """
[model]
id = "Qwen/Qwen2.5-1.5B-Instruct"
[serve]
device = "gpu"
[alerts]
webhook_url_env = "TEAM_HOOK"
slack_webhook_url = "https://hooks.slack.com/services/T0/B0/literalsecret"
slack_channel = "#vllm-alerts"
"""
GOLDEN_ALERTS = Path(__file__).parent / "golden" / "k8s" / "qwen-alerts"


def alerts_profile():
    return parse_profile(ALERTS_PROFILE, name="qwen-alerts", source="/etc/vboot/qwen-alerts.toml")


def alerts_export(options=None):
    return k8s.build_export(alerts_profile(), options or k8s.K8sOptions(monitoring_namespace="obs"))


def alerts_values(result) -> dict:
    [doc] = [d for d in result.documents if d.filename == k8s.KUBE_PROM_STACK_FILE]
    return yaml.safe_load(doc.text)


# Alertmanager.spec.secrets in the prometheus-operator CRD the chart ships
# (charts/kube-prometheus-stack/charts/crds/crds/crd-alertmanagers.yaml at cf408a2): a list of Secret names, each
# mounted at /etc/alertmanager/secrets/<secret-name> in the alertmanager container.
ALERTMANAGER_SPEC_SECRETS_SCHEMA = {
    "type": "object",
    "properties": {"secrets": {"type": "array", "items": {"type": "string"}}},
}


def test_dashboard_configmap_validates_against_the_kubernetes_schema_strictly():
    cm = parsed()["grafana-dashboard.yaml"]
    assert kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"


def test_schema_validation_can_fail_on_a_broken_configmap():
    cm = parsed()["grafana-dashboard.yaml"]
    cm["data"] = {"x": {"not": "a string"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cm, K8S_VERSION, strict=True)


def test_the_configmap_holds_the_same_dashboard_serve_writes():
    from bootstrap.core.dashboard import DASHBOARD_FILE, render_dashboard

    cm = parsed(options=k8s.K8sOptions(monitoring_namespace="obs"))["grafana-dashboard.yaml"]
    assert cm["data"] == {DASHBOARD_FILE: render_dashboard()} and cm["metadata"]["namespace"] == "obs"
    json.loads(cm["data"][DASHBOARD_FILE])


def test_the_grafana_sidecar_is_enabled_with_the_label_the_configmap_carries():
    docs = parsed()
    sidecar = docs["kube-prom-stack-values.yaml"]["grafana"]["sidecar"]["dashboards"]
    labels = docs["grafana-dashboard.yaml"]["metadata"]["labels"]
    assert sidecar["enabled"] is True and labels[sidecar["label"]] == sidecar["labelValue"] == "1"


def test_the_guide_applies_the_dashboard_after_the_stack():
    guide = k8s.guide_commands(k8s.build_export(qwen(), k8s.K8sOptions()), "out")
    stack = next(i for i, c in enumerate(guide) if "kube-prometheus-stack" in c and "helm upgrade" in c)
    assert guide.index("kubectl apply -n monitoring -f out/grafana-dashboard.yaml") > stack


def test_gpu_rules_for_dcgm_exporter_ship_beside_the_vllm_rules(tmp_path):
    from bootstrap.core.prom import DCGM_EXPORTER, gpu_rule_groups

    entry = parsed()["kube-prom-stack-values.yaml"]["additionalPrometheusRulesMap"][k8s.GPU_RULES_MAP_KEY]
    assert entry["groups"] == yaml.safe_load(yaml.safe_dump(gpu_rule_groups(DCGM_EXPORTER)))
    text = yaml.safe_dump({"groups": entry["groups"]})
    assert "DCGM_FI_DEV_GPU_UTIL" in text and "DCGM_FI_DEV_FB_USED" in text and "gpu_utilization_Percentage" not in text
    path = tmp_path / "gpu.yml"
    path.write_text(text)
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_without_alerts_alertmanager_keeps_the_charts_receivers_and_no_secret_is_asked_for():
    result = k8s.build_export(qwen(), k8s.K8sOptions())
    assert parsed()["kube-prom-stack-values.yaml"]["alertmanager"] == {"enabled": True}
    assert result.alerts is None
    assert not any("vboot-alertmanager-receivers" in c for c in k8s.guide_commands(result, "out"))


def test_alerts_become_receivers_reading_their_urls_from_the_secrets_files():
    am = alerts_values(alerts_export())["alertmanager"]
    assert am["alertmanagerSpec"] == {"secrets": ["vboot-alertmanager-receivers"]}
    jsonschema.validate(am["alertmanagerSpec"], ALERTMANAGER_SPEC_SECRETS_SCHEMA)
    receivers = {r["name"]: r for r in am["config"]["receivers"]}
    assert set(receivers) == {"null", "vboot"}
    mount = "/etc/alertmanager/secrets/vboot-alertmanager-receivers"
    assert receivers["vboot"]["webhook_configs"] == [{"url_file": f"{mount}/webhook-url", "send_resolved": True}]
    [slack] = receivers["vboot"]["slack_configs"]
    assert slack["api_url_file"] == f"{mount}/slack-api-url" and slack["channel"] == "#vllm-alerts"


def test_alertmanager_routes_vboots_alerts_to_the_receiver_and_keeps_watchdog_silent():
    from bootstrap.core.prom import DCGM_EXPORTER, alert_names

    route = alerts_values(alerts_export())["alertmanager"]["config"]["route"]
    assert route["receiver"] == "null"
    watchdog, ours = route["routes"]
    assert watchdog == {"receiver": "null", "matchers": ['alertname = "Watchdog"']}
    assert ours["receiver"] == "vboot"
    names = ours["matchers"][0].split('"')[1].split("|")
    assert set(names) == set(alert_names(gpu=DCGM_EXPORTER))


def test_no_receiver_url_is_written_anywhere(tmp_path):
    result = alerts_export()
    k8s.write_files(k8s.plan_writes(tmp_path, result), result)
    for path in tmp_path.iterdir():
        assert "literalsecret" not in path.read_text(), path.name
    assert "literalsecret" not in json.dumps(k8s.guide_commands(result, str(tmp_path)))


def test_the_guide_creates_the_receivers_secret_from_shell_variables_before_the_stack():
    result = alerts_export()
    guide = k8s.guide_commands(result, "out")
    secret = guide.index(k8s.alerts_secret_command(result.alerts))
    stack = next(i for i, c in enumerate(guide) if "kube-prometheus-stack" in c and "helm upgrade" in c)
    namespace = guide.index("kubectl create namespace obs --dry-run=client -o yaml | kubectl apply -f -")
    assert namespace < secret < stack
    # the profile's variable for the webhook, the default one for the Slack URL the profile wrote out
    assert '--from-literal=webhook-url="${TEAM_HOOK:?' in guide[secret]
    assert '--from-literal=slack-api-url="${VBOOT_ALERT_SLACK_WEBHOOK_URL:?' in guide[secret]


def test_the_receivers_secret_command_makes_a_valid_secret_with_the_keys_the_config_reads(tmp_path):
    """Run the guide's command with a stand-in kubectl, turn what it was given into the Secret kubectl would
    create, and validate that against the Kubernetes schema; its keys are the files the receivers read."""
    command = k8s.alerts_secret_command(alerts_export().alerts)
    fake = tmp_path / "kubectl"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    unset = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env)
    assert unset.returncode != 0 and "set TEAM_HOOK to the URL first" in unset.stderr and unset.stdout == ""
    urls = {"TEAM_HOOK": "https://h.example/x?t=1", "VBOOT_ALERT_SLACK_WEBHOOK_URL": "https://hooks.slack.com/s/1"}
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env | urls)
    assert ran.returncode == 0, ran.stderr
    args = ran.stdout.splitlines()
    data = dict(a.removeprefix("--from-literal=").split("=", 1) for a in args if a.startswith("--from-literal="))
    assert data == {"webhook-url": urls["TEAM_HOOK"], "slack-api-url": urls["VBOOT_ALERT_SLACK_WEBHOOK_URL"]}
    import base64

    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": args[args.index("generic") + 1], "namespace": args[args.index("-n") + 1]},
              "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    assert kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    am = alerts_values(alerts_export())["alertmanager"]
    mounted = {f"/etc/alertmanager/secrets/{name}/{key}" for name in am["alertmanagerSpec"]["secrets"] for key in data}
    receiver = next(r for r in am["config"]["receivers"] if r["name"] == "vboot")
    assert {receiver["webhook_configs"][0]["url_file"], receiver["slack_configs"][0]["api_url_file"]} == mounted


def test_amtool_accepts_the_exported_alertmanager_config_but_for_url_file(tmp_path):
    """amtool here is 0.25, which does not know webhook url_file (the chart's Alertmanager, 0.34, does): with
    that one field swapped for an inline url, every other field (routes, matchers, Slack) is checked."""
    from tests.support.e2e import amtool

    config = alerts_values(alerts_export())["alertmanager"]["config"]
    receiver = next(r for r in config["receivers"] if r["name"] == "vboot")
    receiver["webhook_configs"][0] = {"url": "http://127.0.0.1:1/x", "send_resolved": True}
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(config))
    res = subprocess.run([amtool(), "check-config", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_kube_prom_stack_header_says_to_create_the_receivers_secret_first():
    [doc] = [d for d in alerts_export().documents if d.filename == k8s.KUBE_PROM_STACK_FILE]
    [line] = [ln for ln in doc.text.splitlines() if ln.startswith("# Before applying:")]
    assert "create secret generic vboot-alertmanager-receivers" in line and "literalsecret" not in line


def test_cli_json_reports_the_receivers_secret_and_never_a_url(run_vboot, tmp_path):
    profiles = tmp_path / "cfg" / "vboot" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "alerting.toml").write_text(ALERTS_PROFILE)
    out = tmp_path / "o"
    proc = run_vboot("export", "k8s", "alerting", "--out", str(out), "--json", env={
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "TEAM_HOOK": "https://h.example/envsecret"})
    assert proc.returncode == 0, proc.stderr
    for text in [proc.stdout, proc.stderr, *(p.read_text() for p in out.iterdir())]:
        assert "literalsecret" not in text and "envsecret" not in text
    secret = json.loads(proc.stdout)["data"]["alerts_secret"]
    assert secret["name"] == "vboot-alertmanager-receivers" and secret["namespace"] == "monitoring"
    assert secret["keys"] == {"webhook-url": "TEAM_HOOK", "slack-api-url": "VBOOT_ALERT_SLACK_WEBHOOK_URL"}


@pytest.mark.parametrize("name", k8s.FILES)
def test_golden_qwen_alerts(name):
    text = {d.filename: d.text for d in alerts_export().documents}[name]
    path = GOLDEN_ALERTS / name
    if os.environ.get("VBOOT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing {path}; regenerate with VBOOT_UPDATE_GOLDEN=1 (see this module's docstring)"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; if intended, regenerate the golden files"
