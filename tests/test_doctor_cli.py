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
