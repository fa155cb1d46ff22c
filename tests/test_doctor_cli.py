"""`vboot doctor` as a command: what it reports about itself (the checks' verdicts live in test_doctor_checks)."""

from __future__ import annotations

import json


def test_doctor_lists_the_variables_its_checks_read(run_vboot):
    res = run_vboot("doctor", "--profile", "tiny", "--json", "--check", "env.alloc_conf",
                    "--check", "env.cuda_visible_devices", env={"CUDA_VISIBLE_DEVICES": "0"})
    read = json.loads(res.stdout)["data"]["env_read"]
    assert {"CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"} <= set(read), read


def test_doctor_does_not_list_variables_no_selected_check_reads(run_vboot):
    res = run_vboot("doctor", "--profile", "tiny", "--json", "--check", "port")
    read = json.loads(res.stdout)["data"]["env_read"]
    assert "CUDA_EMPTY_CACHE" not in read and "HF_HUB_OFFLINE" not in read, read


def test_doctor_says_the_vllm_python_came_from_the_environment(run_vboot):
    import sys

    res = run_vboot("doctor", "--profile", "tiny", "--json", "--check", "vllm",
                    env={"VBOOT_VLLM_PYTHON": sys.executable})
    [check] = json.loads(res.stdout)["data"]["checks"]
    assert check["data"]["python_origin"] == "environment", check


def _profile_with_args(tmp_path, args: str):
    path = tmp_path / "mine.toml"
    path.write_text(f'[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\n[serve]\nargs = [{args}]\n')
    return path


def _doctor(*args: str) -> int:
    import pytest

    from bootstrap.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["doctor", *args])
    return exited.value.code


def test_doctor_refuses_a_profile_whose_vllm_serves_https_as_serve_does(isolated_env, tmp_path, capsys,
                                                                         monkeypatch):
    """Doctor judges what serve would run; serve refuses --ssl-*/--uds in serve.args, so doctor says so, in one
    line with exit 2, instead of judging a port vLLM would serve HTTPS on."""
    from bootstrap.cli import output

    monkeypatch.setattr(output.STATE, "json", False)
    profile = _profile_with_args(tmp_path, '"--ssl_keyfile=k.pem", "--ssl-certfile", "c.pem"')
    code = _doctor("--profile", str(profile))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {profile}:") and "--ssl_keyfile in 'serve.args' is not supported" in line


def test_doctor_json_reports_the_refusal_as_a_profile_error(isolated_env, tmp_path, capsys, monkeypatch):
    from bootstrap.cli import output

    monkeypatch.setattr(output.STATE, "json", False)
    code = _doctor("--profile", str(_profile_with_args(tmp_path, '"--uds", "/tmp/vllm.sock"')), "--json")
    doc = json.loads(capsys.readouterr().out)
    assert code == 2 and doc["exit_code"] == 2
    [error] = doc["errors"]
    assert error["code"] == "profile_invalid" and "--uds in 'serve.args' is not supported" in error["message"]


def test_doctor_judges_the_run_serve_would_make_from_the_same_options(isolated_env, tmp_path, capsys, monkeypatch):
    """--cache-dir, --host/--port and the vLLM arguments after -- mean what they mean to `vboot serve`."""
    from bootstrap.cli import output

    monkeypatch.setattr(output.STATE, "json", True)
    (tmp_path / "afile").write_text("x")
    code = _doctor("--profile", "qwen-0.5b", "--check", "disk", "--check", "port", "--cache-dir",
                   str(tmp_path / "afile" / "ms"), "--json", "--", "--port=9", "--host", "127.0.0.1")
    doc = json.loads(capsys.readouterr().out)
    checks = {c["id"]: c for c in doc["data"]["checks"]}
    assert code == 1 and checks["disk"]["status"] == "fail"
    assert "is not a directory" in checks["disk"]["summary"] and "pass another --cache-dir" in checks["disk"]["hint"]
    assert checks["port"]["data"]["port"] == 9, checks["port"]


def test_doctor_refuses_a_stray_argument_before_the_double_dash(isolated_env, capsys, monkeypatch):
    from bootstrap.cli import output

    monkeypatch.setattr(output.STATE, "json", False)
    assert _doctor("qwen") == 2
    assert "unexpected argument 'qwen'" in capsys.readouterr().err
    assert _doctor("qwen", "--", "--port", "9") == 2
