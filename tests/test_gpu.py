"""vboot's GPU facts against a real NVIDIA driver (the GPU machine): NVML as nvidia-smi sees it, doctor's driver and
GPU checks, setup's choice of build for this driver, top's GPU panel, and a process holding GPU memory found by
its PID. Skipped where NVML finds no GPU, with the reason.

These need no vLLM. The GPU steps that do (an EngineCore killed and restarted with the memory wait, two models
sharing one GPU with sleep and wake) are scripted in benchmarks/gpu/ (keepalive_gpu.py, multimodel_gpu.py),
because the GPU machine has no network and a CUDA vLLM is carried there in parts.

    pytest -m gpu tests/test_gpu.py      # on the GPU machine
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from bootstrap.probes import nvml
from tests.support.cli import run_in_process


def _why_no_gpu() -> str | None:
    snap = nvml.snapshot(with_processes=False)
    if not snap.ok:
        return f"NVML: {snap.error}"
    if not snap.gpus:
        return f"driver {snap.driver_version} loaded but NVML lists no GPU"
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi is not on PATH"
    return None


WHY = _why_no_gpu()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(WHY is not None, reason=f"needs an NVIDIA GPU ({WHY})")]

MiB = 1024**2


def smi(*fields: str) -> list[list[str]]:
    """`nvidia-smi --query-gpu=...` rows, one per GPU."""
    out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return [[cell.strip() for cell in line.split(",")] for line in out.strip().splitlines()]


def smi_cuda() -> str:
    """The "CUDA Version" of nvidia-smi's header (what the driver supports)."""
    head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=True, timeout=30).stdout
    return head.split("CUDA Version:")[1].split()[0]


def test_nvml_snapshot_agrees_with_nvidia_smi():
    snap = nvml.snapshot()
    rows = smi("index", "name", "uuid", "memory.total", "driver_version", "compute_cap")
    assert snap.ok and len(snap.gpus) == len(rows)
    for gpu, (index, name, uuid, total_mib, driver, cap) in zip(snap.gpus, rows, strict=True):
        assert (gpu.index, gpu.name, gpu.uuid) == (int(index), name, uuid)
        assert gpu.memory_total_bytes is not None and gpu.memory_total_bytes // MiB == int(total_mib)
        assert snap.driver_version == driver
        assert gpu.compute_capability == tuple(int(p) for p in cap.split("."))
        assert gpu.error is None
    assert snap.cuda_version_str == smi_cuda()


def test_doctor_passes_the_driver_and_gpu_checks_and_reports_the_driver():
    ran = run_in_process("doctor", "--device", "gpu", "--check", "nvidia", "--json")
    doc = json.loads(ran.stdout)
    checks = {c["id"]: c for c in doc["data"]["checks"]}
    assert checks["nvidia.driver"]["status"] == "ok", checks["nvidia.driver"]
    assert checks["nvidia.gpus"]["status"] in ("ok", "warn"), checks["nvidia.gpus"]
    assert checks["nvidia.driver"]["data"]["driver_version"] == smi("driver_version")[0][0]
    assert checks["nvidia.driver"]["data"]["cuda_driver_version_str"] == smi_cuda()
    assert doc["data"]["device"] == "gpu"


def test_setup_plans_a_build_this_driver_can_run_and_writes_nothing(tmp_path):
    ran = run_in_process("setup", "--gpu", "--dry-run", "--installer", "pip", "--venv", str(tmp_path / "venv"),
                          "--json")
    assert ran.returncode == 0, ran.stderr
    build = json.loads(ran.stdout)["data"]["build"]
    driver = tuple(int(p) for p in smi_cuda().split("."))
    wants = tuple(int(p) for p in build["cuda"].split("."))
    assert build["distribution"] == "vllm" and wants <= driver, (build, driver)
    assert build["cuda_line"] == ("cu130" if driver >= (13, 0) else "cu129")
    assert not (tmp_path / "venv").exists()


def test_tops_gpu_panel_reads_every_gpu_with_one_nvml_init():
    from bootstrap.cli.top import default_gpu_reader

    panel = default_gpu_reader()
    try:
        for _ in range(3):
            gpus, error = panel()
            assert error is None
            assert [g["name"] for g in gpus] == [row[0] for row in smi("name")]
    finally:
        panel.close()


def test_a_process_holding_gpu_memory_is_found_by_its_pid(tmp_path):
    """What ps, stop and doctor's leftovers check build on: NVML names the PID that holds the memory."""
    pytest.importorskip("torch", reason="needs torch with CUDA to allocate GPU memory")
    code = ("import sys, torch; x = torch.empty(1 << 30, dtype=torch.uint8, device='cuda'); "
            "torch.cuda.synchronize(); print('held', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        held = nvml.snapshot().gpu_bytes_by_pid()
        assert held.get(child.pid, 0) >= 1 << 30, held
    finally:
        child.kill()
        child.wait(timeout=30)
    deadline = time.monotonic() + 15  # the driver frees a dead process's memory within moments
    while child.pid in nvml.snapshot().gpu_bytes_by_pid() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child.pid not in nvml.snapshot().gpu_bytes_by_pid()
