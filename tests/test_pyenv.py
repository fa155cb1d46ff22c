"""Reading a Python environment from disk: versions, torch's build, vLLM's torch pin."""

from __future__ import annotations

from bootstrap.probes import pyenv


def make_venv(root, dists, torch_version=None, cuda=None, vllm_requires=()):
    sp = root / "lib" / "python3.12" / "site-packages"
    sp.mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "python").write_text("")
    (root / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
    for name, version in dists.items():
        info = sp / f"{name}-{version}.dist-info"
        info.mkdir()
        meta = [f"Name: {name}", f"Version: {version}"]
        if name.startswith("vllm"):
            meta += [f"Requires-Dist: {r}" for r in vllm_requires]
        (info / "METADATA").write_text("\n".join(meta) + "\n")
    if torch_version:
        (sp / "torch").mkdir()
        (sp / "torch" / "version.py").write_text(
            f"__version__ = '{torch_version}'\ndebug = False\ncuda: Optional[str] = {cuda!r}\nhip = None\n")
    return root / "bin" / "python"


def test_versions_torch_build_and_pin_are_read_from_files(tmp_path):
    py = make_venv(tmp_path, {"vllm": "0.26.0", "torch": "2.11.0+cu130", "nvidia_ml_py": "13.610"},
                   torch_version="2.11.0+cu130", cuda="13.0",
                   vllm_requires=["torch==2.11.0", "pytest; extra == 'test'", "openai>=1.0"])
    env = pyenv.env_for_python(str(py))
    assert env.version("vllm") == "0.26.0" and env.version("nvidia-ml-py") == "13.610"
    assert env.python_version == "3.12.3"
    tb = pyenv.torch_build(env)
    assert tb.version == "2.11.0+cu130" and tb.cuda == "13.0"
    assert pyenv.requirement_pin(env, "vllm", "torch") == "==2.11.0"
    assert pyenv.requirement_pin(env, "vllm", "pytest") is None  # extras are not pins


def test_cpu_torch_has_no_cuda(tmp_path):
    py = make_venv(tmp_path, {"torch": "2.13.0+cpu"}, torch_version="2.13.0+cpu", cuda=None)
    assert pyenv.torch_build(pyenv.env_for_python(str(py))).cuda is None


def test_missing_interpreter_is_reported_not_raised(tmp_path):
    assert pyenv.env_for_python(str(tmp_path / "nope" / "python")).exists is False


def test_pythonpath_packages_count(tmp_path, monkeypatch):
    py = make_venv(tmp_path / "venv", {"torch": "2.11.0"})
    extra = tmp_path / "site"
    (extra / "vllm-0.26.0.dist-info").mkdir(parents=True)
    monkeypatch.setenv("PYTHONPATH", str(extra))
    assert pyenv.env_for_python(str(py)).version("vllm") == "0.26.0"
