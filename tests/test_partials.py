"""`vboot pull` and `vboot disk clean --partial` agree on what a partial download is (one predicate)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bootstrap.core.caches import plan_clean, scan_caches
from bootstrap.core.environ import Environ
from bootstrap.core.paths import locate_model, partial_target
from bootstrap.core.pull import RemoteFile, find_partials, plan_pull

MODEL = "acme/demo-1.5B"
LISTED = (RemoteFile("config.json", 100), RemoteFile("model.safetensors", 300))
OLD = time.time() - 3600


def make_cache(root: Path) -> tuple[Path, set[str]]:
    """A new-layout model with one partial of each kind the client writes, an ordinary file ending in ``_1_2``
    and a stray partial of another revision; returns (snapshot dir, the partial paths)."""
    snap = locate_model(root, MODEL, "master").snapshot_dir
    other = locate_model(root, MODEL, "v0").snapshot_dir
    snap.mkdir(parents=True)
    other.mkdir(parents=True)
    files = {
        snap / "config.json": 100,  # complete
        snap / "notes_1_2": 31,  # an ordinary file: a range part 1..2 holds at most 2 bytes
        snap / "model.safetensors.incomplete": 40,
        snap / "model.safetensors_0_149": 150,
        snap / "model.safetensors.parallel_tmp": 20,
        other / "config.json.incomplete": 10,
    }
    for path, size in files.items():
        path.write_bytes(b"x" * size)
        os.utime(path, (OLD, OLD))
    return snap, {str(p) for p in files if partial_target(p.name, files[p]) is not None}


def test_the_predicate_knows_every_partial_the_client_writes():
    assert partial_target("a.bin.incomplete", 5) == "a.bin"
    assert partial_target("a.bin.parallel_tmp", 5) == "a.bin"
    assert partial_target("a.bin_100_199", 100) == "a.bin"
    assert partial_target("a.bin_100_199", 101) is None  # longer than its range: an ordinary file
    assert partial_target("a.bin_9_1", 0) is None
    assert partial_target("a.bin", 5) is None


def test_pull_and_disk_clean_see_the_same_partial_files(tmp_path):
    snap, partials = make_cache(tmp_path)
    assert len(partials) == 4
    seen_by_pull = {p.path for p in find_partials(locate_model(tmp_path, MODEL, "master"), LISTED)}
    reports = scan_caches(Environ({"HOME": f"{tmp_path}-home", "MODELSCOPE_CACHE": str(tmp_path)}), active={},
                          names=("modelscope",))
    seen_by_clean = {p for item in reports[0].items if item.kind == "partial" for p in item.paths}
    assert seen_by_pull == seen_by_clean == partials


def test_disk_clean_partial_frees_every_stray_byte_the_pull_refusal_names(tmp_path):
    snap, _ = make_cache(tmp_path)
    found = find_partials(locate_model(tmp_path, MODEL, "master"), LISTED)
    plan = plan_pull(MODEL, "master", snap, LISTED, present=frozenset({"config.json"}), partials=found,
                     free_bytes=0, filesystem_path="/", margin_bytes=0)
    stray = {p.path for p in plan.partials if not p.resumes}
    assert plan.stray_bytes == 30  # the .parallel_tmp (never resumed) and the other revision's .incomplete
    reports = scan_caches(Environ({"HOME": f"{tmp_path}-home", "MODELSCOPE_CACHE": str(tmp_path)}), active={},
                          names=("modelscope",))
    clean = plan_clean(reports, partial=True, busy=lambda r: False)
    assert stray <= {e.path for e in clean.entries}
