"""The JSON envelope every --json command prints. Field names may grow; these never change meaning."""

from __future__ import annotations

import json

import pytest

ENVELOPE_KEYS = {"version", "command", "status", "exit_code", "data", "errors"}


def _doc(res):
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert set(doc) >= ENVELOPE_KEYS
    assert doc["version"] == 1
    assert doc["status"] in ("ok", "warn", "fail", "error")
    assert doc["exit_code"] == res.returncode
    for err in doc["errors"]:
        assert {"code", "message", "hint"} <= set(err)
    return doc


def test_doctor_envelope_and_check_shape(run_vboot):
    res = run_vboot("doctor", "--profile", "tiny", "--json")
    doc = _doc(res)
    assert doc["command"] == "doctor"
    ids = [c["id"] for c in doc["data"]["checks"]]
    assert len(ids) == len(set(ids))
    for c in doc["data"]["checks"]:
        assert {"id", "status", "summary", "hint", "data"} <= set(c)
        assert c["status"] in ("ok", "warn", "fail", "skip")
    expected = {"nvidia.driver", "nvidia.gpus", "torch", "vllm", "disk", "vram", "leftovers", "port",
                "env.alloc_conf", "env.modelscope", "env.cuda_visible_devices", "env.misc", "env.report", "system"}
    assert expected <= set(ids)


def test_doctor_exit_code_follows_failures(run_vboot):
    # No vLLM in the environment vboot runs in (the test venv): the vllm check fails -> exit 1.
    res = run_vboot("doctor", "--profile", "tiny", "--json", "--vllm-python", "/nonexistent/python")
    doc = _doc(res)
    assert res.returncode == 1 and doc["status"] == "fail"
    assert {c["id"]: c["status"] for c in doc["data"]["checks"]}["vllm"] == "fail"


def test_error_envelope_for_a_bad_profile(run_vboot):
    res = run_vboot("doctor", "--profile", "nope", "--json")
    doc = _doc(res)
    assert res.returncode == 2 and doc["status"] == "error"
    assert doc["errors"][0]["code"] == "profile_not_found" and doc["errors"][0]["hint"]


@pytest.mark.parametrize("args", [["profiles", "--json"], ["ps", "--json"], ["doctor", "--list-checks", "--json"]])
def test_other_commands_share_the_envelope(run_vboot, args):
    _doc(run_vboot(*args))


def test_usage_error_is_one_line_exit_two_and_no_traceback(run_vboot):
    res = run_vboot("doctor", "--check", "nonsense")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "unknown check id" in res.stderr and "--list-checks" in res.stderr


def test_unknown_option_is_a_usage_error(run_vboot):
    res = run_vboot("doctor", "--frobnicate")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "No such option" in res.stderr


@pytest.mark.parametrize("closed, target, rc", [("2>&-", "missing", 4), (">&- --json", "", 0)])
def test_a_closed_stdout_or_stderr_keeps_the_exit_code(tmp_path, isolated_env, closed, target, rc):
    # The error line goes to stderr, the JSON document to stdout: each with its stream closed.
    import subprocess

    from conftest import vboot_exe

    script = f'"$@" disk {tmp_path / target} {closed}; echo "rc=$?"'
    proc = subprocess.run(["bash", "-c", script, "vboot", *vboot_exe()], capture_output=True, text=True,
                          env=isolated_env, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.stdout.strip().endswith(f"rc={rc}"), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
