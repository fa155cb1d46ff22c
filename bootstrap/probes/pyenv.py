"""What a Python environment has installed, read from disk without starting that Python or importing anything.

Versions come from ``*.dist-info`` folder names (~6 ms for a whole site-packages, against ~80 ms for
``importlib.metadata``); torch's version and CUDA build from ``torch/version.py``; vLLM's torch pin from its
METADATA. Equivalent shell: ``PY -m pip list``, ``PY -c "import torch; print(torch.version.cuda)"``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from bootstrap.core.records import PythonEnv as PythonEnv
from bootstrap.core.records import TorchBuild as TorchBuild
from bootstrap.core.records import normalize_dist

_DIST = re.compile(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[^-]+?)\.dist-info$")


_norm = normalize_dist


def find(env: PythonEnv, rel: str) -> Path | None:
    """``rel`` (a file or folder) in the first of ``env``'s site-packages that holds it."""
    for sp in env.site_packages:
        p = Path(sp) / rel
        if p.exists():
            return p
    return None


def dist_info(env: PythonEnv, name: str) -> Path | None:
    """The ``*.dist-info`` folder of distribution ``name`` in ``env``, if it is installed."""
    if env.version(name) is None:
        return None
    for sp in env.site_packages:
        for cand in Path(sp).glob("*.dist-info"):
            m = _DIST.match(cand.name)
            if m and _norm(m.group("name")) == _norm(name):
                return cand
    return None


def _scan(site_dirs: list[Path]) -> dict[str, str]:
    dists: dict[str, str] = {}
    for sp in site_dirs:
        try:
            names = os.listdir(sp)
        except OSError:
            continue
        for entry in names:
            m = _DIST.match(entry)
            if m:
                dists.setdefault(_norm(m.group("name")), m.group("version"))
    return dists


def _pythonpath(environ: dict[str, str] | None = None) -> list[Path]:
    """Directories on PYTHONPATH (a child we start inherits them, so their packages count)."""
    raw = (environ if environ is not None else os.environ).get("PYTHONPATH", "")
    return [Path(p) for p in raw.split(os.pathsep) if p and os.path.isdir(p)]


def current_env() -> PythonEnv:
    """The environment vboot itself runs in (its site-packages and any PYTHONPATH directories)."""
    sites = [Path(p) for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    sites = _pythonpath() + [s for s in sites if s not in _pythonpath()]
    return PythonEnv(
        python=sys.executable, prefix=sys.prefix, site_packages=tuple(map(str, sites)), dists=_scan(sites),
        python_version=".".join(map(str, sys.version_info[:3])),
    )


def env_for_python(python: str) -> PythonEnv:
    """The environment of another interpreter (a venv's ``bin/python``), found from its path alone.

    Works for venvs (``pyvenv.cfg`` beside ``bin/``) and conda-style prefixes; for the running interpreter it
    returns :func:`current_env`.
    """
    path = Path(python).expanduser()
    if not path.exists():
        return PythonEnv(python=str(path), prefix="", site_packages=(), exists=False)
    if path.absolute() == Path(sys.executable).absolute():
        return current_env()
    prefix = path.absolute().parent.parent
    sites = _pythonpath() + sorted(prefix.glob("lib/python3*/site-packages")) + sorted(
        prefix.glob("lib64/python3*/site-packages"))
    version = ""
    cfg = prefix / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("version", "version_info"):
                version = value.strip()
    if not version and sites:
        version = sites[0].parent.name.removeprefix("python")
    return PythonEnv(python=str(path), prefix=str(prefix), site_packages=tuple(map(str, sites)),
                     dists=_scan(sites), python_version=version)


def torch_build(env: PythonEnv) -> TorchBuild | None:
    """torch's version and CUDA build from ``torch/version.py`` (importing torch would take ~2 s)."""
    vfile = find(env, "torch/version.py")
    if vfile is None:
        return None
    values: dict[str, str | None] = {}
    try:
        text = vfile.read_text(errors="replace")
    except OSError:
        return None
    for key in ("__version__", "cuda", "hip"):
        m = re.search(rf"^{key}\s*(?::\s*[^=]+)?=\s*(?P<v>.+)$", text, re.M)
        if m:
            raw = m.group("v").strip()
            values[key] = None if raw == "None" else raw.strip("'\"")
    if "__version__" not in values:
        return None
    return TorchBuild(version=values["__version__"] or "", cuda=values.get("cuda"), hip=values.get("hip"))


def requirement_pin(env: PythonEnv, dist: str, requirement: str) -> str | None:
    """The version specifier ``dist`` declares for ``requirement`` (e.g. vllm's ``torch==2.11.0``)."""
    info = dist_info(env, dist)
    if info is None:
        return None
    try:
        meta = (info / "METADATA").read_text(errors="replace")
    except OSError:
        return None
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        spec = line.split(":", 1)[1].strip()
        if ";" in spec and "extra" in spec.split(";", 1)[1]:
            continue
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*\(?([^;)]*)\)?", spec)
        if m and _norm(m.group(1)) == _norm(requirement):
            return m.group(2).strip() or None
    return None
