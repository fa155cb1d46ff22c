"""What `vboot disk clean` must never delete: across a mount point, in a root that is no cache of its own, an item
it cannot prove old. Real mounts (tests run as root, as CI does) and the installed `vboot` with --yes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bootstrap.core import caches
from bootstrap.core.caches import (
    CacheReport,
    _remove_tree,
    execute_plan,
    mounts_inside,
    plan_clean,
    scan_caches,
    unsafe_root,
)
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, UnsafeCacheRootError
from tests.support.e2e import bind_mounted, mounted
from tests.support.trees import OLD, age, by_name, items, make_hf, make_modelscope_new

MODEL = "openai-community/gpt2"


def precious(where: Path, n: int = 3) -> dict[str, bytes]:
    """Files nobody asked to delete, as {relative path: content}, written under ``where``."""
    where.mkdir(parents=True, exist_ok=True)
    files = {f"keep{i}.bin": os.urandom(5000 + i) for i in range(n)}
    (where / "deeper").mkdir(exist_ok=True)
    files["deeper/note.txt"] = b"still here"
    for rel, data in files.items():
        (where / rel).write_bytes(data)
    return files


def intact(where: Path, files: dict[str, bytes]) -> bool:
    return all((where / rel).is_file() and (where / rel).read_bytes() == data for rel, data in files.items())


def clean(run_vboot, cache_env, *args: str):
    proc = run_vboot("disk", "clean", *args, "--json", env=cache_env, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


# -- mount points inside an item ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_an_item_with_a_mount_inside_is_refused_and_what_is_mounted_stays(cache_env, tmp_path, run_vboot, kind):
    model = make_hf(tmp_path / "hf" / "hub")
    for partial in model.rglob("*.incomplete"):  # its partial downloads would be cleaned: they are items of their own
        partial.unlink()
    where = model / "snapshots" / "mnt"
    where.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    with bind_mounted(outside, where) if kind == "bind" else mounted("tmpfs", where):
        files = precious(where)
        rc, doc = clean(run_vboot, cache_env, "--model", MODEL, "--yes")
        assert rc == 7 and doc["errors"][0]["code"] == "conflict", doc
        assert "mounted inside it" in doc["errors"][0]["message"] and str(where) in doc["errors"][0]["message"]
        assert intact(where, files)
        assert (model / "blobs").is_dir()  # the item is left whole, not emptied up to the mount
    if kind == "bind":
        assert intact(outside, files)


def test_other_items_are_cleaned_while_the_one_with_a_mount_is_kept(cache_env, tmp_path, run_vboot):
    hub = tmp_path / "hf" / "hub"
    mounted_model = make_hf(hub)
    other = make_hf(hub, "someone/else")
    where = mounted_model / "snapshots" / "mnt"
    where.mkdir()
    with mounted("tmpfs", where):
        files = precious(where)
        rc, doc = clean(run_vboot, cache_env, "--cache", "huggingface", "--yes")
        assert rc == 0 and doc["status"] == "warn", doc
        kept = {r["item_id"]: r for r in doc["data"]["refused"]}
        assert kept[MODEL]["code"] == "mount_point"
        assert not other.exists() and intact(where, files)


def test_a_mount_the_plan_did_not_see_is_refused_before_deleting(cache_env, tmp_path):
    model = make_hf(tmp_path / "hf" / "hub")
    plan = plan_clean(scan_caches(Environ(cache_env), active={}), models=[MODEL],
                      mounts=frozenset)  # planned mount-free
    where = model / "snapshots" / "late"
    where.mkdir()
    with mounted("tmpfs", where):
        files = precious(where)
        result = execute_plan(plan, active={}, env=Environ(cache_env))  # reads the mount table again
        assert [f.code for f in result.failed] == ["mount_point"] and intact(where, files)
        assert (model / "blobs").is_dir()


@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_the_delete_itself_stops_at_a_mount_it_meets(tmp_path, kind):
    """The last guard: a mount that appears after both checks (here: hidden from them) stops the delete there."""
    top = tmp_path / "item"
    precious(top / "a" / "b")
    where = top / "a" / "m"
    where.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    with bind_mounted(outside, where) if kind == "bind" else mounted("tmpfs", where):
        files = precious(where)
        # A bind mount of the same filesystem has the same device number: only the mount table tells it.
        points = frozenset({str(where)}) if kind == "bind" else frozenset()
        with pytest.raises(caches.MountCrossing, match="is a mount point"):
            _remove_tree(str(top), points)
        assert intact(where, files)
    if kind == "bind":
        assert intact(outside, files)


def test_mounts_inside_resolves_the_item_path(tmp_path):
    real = tmp_path / "real"
    (real / "m").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    points = {str(real / "m"), str(tmp_path / "elsewhere"), str(real) + "x"}
    assert mounts_inside(str(tmp_path / "link"), points) == [str(real / "m")]


def test_a_deep_tree_is_removed_without_recursion_limits(tmp_path):
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):  # deeper than Python's recursion limit (os.makedirs itself would not make it)
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(parent)
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    (top / "link").symlink_to(tmp_path / "target")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "t").write_bytes(b"t")
    _remove_tree(str(top), frozenset())
    assert not top.exists() and (tmp_path / "target" / "t").read_bytes() == b"t"


# -- a failed deletion is an error ----------------------------------------------------------------------------
def test_a_path_that_cannot_be_removed_fails_the_command(cache_env, tmp_path, run_vboot):
    filled = tmp_path / "pip-filled"
    (filled / "wheels").mkdir(parents=True)
    (filled / "wheels" / "w.whl").write_bytes(os.urandom(20_000))
    (filled / "http-v2").mkdir()
    (tmp_path / "pipc").mkdir()
    with bind_mounted(filled, tmp_path / "pipc", read_only=True):  # EROFS even for root
        rc, doc = clean(run_vboot, cache_env, "--cache", "pip", "--yes")
        assert rc == 1 and doc["status"] == "fail" and doc["exit_code"] == 1, doc
        assert doc["errors"][0]["code"] == "clean_incomplete" and "Read-only" in doc["errors"][0]["message"]
        assert {f["code"] for f in doc["data"]["failed"]} == {"os_error"}
        human = run_vboot("disk", "clean", "--cache", "pip", "--yes", env=cache_env)
        assert human.returncode == 1 and "error:" in human.stderr and "not removed" in human.stdout
    assert (filled / "wheels" / "w.whl").is_file()


# -- cache roots that are no cache of their own ---------------------------------------------------------------
@pytest.mark.parametrize("variable, where, cache", [
    ("PIP_CACHE_DIR", "home", "pip"), ("UV_CACHE_DIR", "home/..", "uv"), ("TORCH_HOME", "home/.cache", "torch"),
    ("TRITON_CACHE_DIR", "home/.local", "triton"), ("MODELSCOPE_CACHE", "home", "modelscope"),
    ("HF_HUB_CACHE", "home/../..", "huggingface"), ("TORCHINDUCTOR_CACHE_DIR", "holder", "inductor"),
])
def test_a_root_that_is_no_cache_of_its_own_is_refused_even_with_yes(cache_env, tmp_path, run_vboot, variable, where,
                                                                     cache):
    kept = Path(cache_env["HOME"])  # what the root holds that is not the cache's to lose
    if where == "holder":  # a directory holding another cache's root
        kept = tmp_path / "holder" / "vllm"
        cache_env["VLLM_CACHE_ROOT"] = str(kept)
    files = precious(kept)
    age(*kept.rglob("*"))
    home = Path(cache_env["HOME"])  # "home..." is below or above the test's HOME, "holder" in tmp_path
    cache_env[variable] = str((home / where.removeprefix("home").lstrip("/") if where.startswith("home")
                               else tmp_path / where).resolve())
    for args in (["--cache", cache, "--yes"], ["--older-than", "1d", "--yes"]):
        rc, doc = clean(run_vboot, cache_env, *args)
        assert rc == 2 and doc["errors"][0]["code"] == "unsafe_cache_root", doc
        message = doc["errors"][0]["message"] + doc["errors"][0]["hint"]
        assert variable in message and "nothing was deleted" in message
        assert intact(kept, files)
    listed = {c["name"]: c for c in json.loads(run_vboot("disk", "caches", "--json",
                                                         env=cache_env).stdout)["data"]["caches"]}
    assert listed[cache]["refused"] and listed[cache]["items"] == [] and variable in listed[cache]["refused"]


@pytest.mark.parametrize("path", ["/", "/usr", "/etc", "/var", "/var/lib", "/usr/lib/python3", "/boot/grub", "/tmp",
                                  "/opt", "/home"])
def test_system_directories_are_refused_without_being_scanned(cache_env, run_vboot, path):
    cache_env["PIP_CACHE_DIR"] = path
    start = time.monotonic()
    listed = {c["name"]: c for c in json.loads(run_vboot("disk", "caches", "--json",
                                                         env=cache_env).stdout)["data"]["caches"]}
    assert listed["pip"]["refused"] and "PIP_CACHE_DIR=" + path in listed["pip"]["refused"]
    assert time.monotonic() - start < 30  # `/` was not walked
    rc, doc = clean(run_vboot, cache_env, "--cache", "pip", "--dry-run")  # --dry-run: nothing at stake if this broke
    assert rc == 2 and doc["errors"][0]["code"] == "unsafe_cache_root"


def test_unsafe_root_rules(tmp_path):
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"me:x:1000:1000::{home}:/bin/sh\nbob:x:1001:1001::{tmp_path / 'bob'}:/bin/sh\nbroken\n")
    env = Environ({"HOME": str(home)})
    (home / "link-to-home").symlink_to(home)

    def why(path, name="pip"):
        return unsafe_root(name, path, env, passwd=str(passwd))

    assert why("/") == "it is the root directory"
    assert why(home) == "it is your home directory" == why(home / "link-to-home")
    assert why(tmp_path).startswith("it holds your home directory")
    assert why("/usr/share/doc") == "it is inside /usr/share, which belongs to the operating system"
    assert why("/var/cache") == why("/usr/local") == "it is a system directory"
    assert why(tmp_path / "bob") == "it is a user's home directory"
    assert why(home / ".cache").startswith("it is XDG_CACHE_HOME")
    assert why(home / ".local").startswith("it is ~/.local")
    assert why(home / ".cache" / "huggingface", "torch").startswith("it holds the huggingface cache")
    for fine in (home / ".cache" / "pip", "/var/cache/pip", "/data/caches/pip", tmp_path / "bob" / "pip-cache",
                 "/usr/local/cache/pip"):
        assert why(fine) is None, fine


def test_a_refused_root_outside_the_selection_does_not_block_it(cache_env, tmp_path):
    cache_env["PIP_CACHE_DIR"] = cache_env["HOME"]
    model = make_modelscope_new(Path(cache_env["MODELSCOPE_CACHE"]))
    reports = scan_caches(Environ(cache_env), active={})
    assert by_name(reports)["pip"].refused
    plan = plan_clean(reports, partial=True, busy=lambda r: False)  # partial downloads live in the hub caches
    assert [e.path for e in plan.entries] == [str(next(model.rglob("*.incomplete")))]
    with pytest.raises(UnsafeCacheRootError, match="PIP_CACHE_DIR"):
        plan_clean(reports, older_than_s=86400)  # alone, --older-than reaches every cache


def test_execution_refuses_a_root_that_became_unsafe(cache_env, tmp_path):
    """The plan is data: one whose root is (now) a home directory deletes nothing there."""
    home = Path(cache_env["HOME"])
    files = precious(home / "work")
    plan = caches.CleanPlan(entries=(caches.PlanEntry(str(home / "work"), 4096, "pip", "work", "entry"),),
                            total_bytes=4096, roots={"pip": str(home)})
    result = execute_plan(plan, active={}, env=Environ(cache_env))
    assert [f.code for f in result.failed] == ["unsafe_root"] and intact(home / "work", files)


def test_refusing_with_nothing_else_to_do_is_a_conflict(cache_env, tmp_path):
    model = make_hf(tmp_path / "hf" / "hub")
    for partial in model.rglob("*.incomplete"):
        partial.unlink()
    reports = scan_caches(Environ(cache_env), active={})
    with pytest.raises(ConflictError, match="mounted inside it"):
        plan_clean(reports, models=[MODEL], mounts=lambda: {str(model / "snapshots")})


# -- --older-than judges what is inside ------------------------------------------------------------------------
def _generic_entry(root: Path, name: str, recent_deep: bool) -> Path:
    entry = root / name
    (entry / "a" / "b").mkdir(parents=True)
    (entry / "a" / "b" / "f.bin").write_bytes(b"x" * 3000)
    (entry / "old.bin").write_bytes(b"o" * 3000)
    age(entry / "a" / "b" / "f.bin", entry / "old.bin")
    if recent_deep:
        (entry / "a" / "b" / "fresh.bin").write_bytes(b"n" * 3000)  # moves b's mtime, not the entry's
    age(entry / "a" / "b", entry / "a", entry)
    return entry


def test_older_than_judges_a_generic_entry_by_the_newest_file_inside(cache_env, tmp_path, run_vboot):
    root = tmp_path / "tritonc"
    busy = _generic_entry(root, "busy", recent_deep=True)
    stale = _generic_entry(root, "stale", recent_deep=False)
    assert os.lstat(busy).st_mtime == os.lstat(stale).st_mtime == OLD  # the top directories look alike
    found = items(by_name(scan_caches(Environ(cache_env), active={}, names=("triton",)))["triton"])
    assert found["busy"].last_used > time.time() - 60 and found["stale"].last_used < time.time() - 30 * 86400
    rc, doc = clean(run_vboot, cache_env, "--cache", "triton", "--older-than", "30d", "--yes")
    assert rc == 0, doc
    assert [e["path"] for e in doc["data"]["plan"]] == [str(stale)]
    assert busy.exists() and not stale.exists()


def test_older_than_keeps_an_entry_too_big_to_judge(cache_env, tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "LAST_USED_FILE_LIMIT", 5)
    root = tmp_path / "tritonc"
    big = _generic_entry(root, "big", recent_deep=False)
    for i in range(10):
        (big / f"n{i}").write_bytes(b"")
        age(big / f"n{i}")
    age(big)
    small = root / "small"
    small.write_bytes(b"s" * 100)
    age(small)
    reports = scan_caches(Environ(cache_env), active={}, names=("triton",))
    found = items(by_name(reports)["triton"])
    assert found["big"].last_used_complete is False and found["small"].last_used_complete is True
    plan = plan_clean(reports, older_than_s=86400)
    assert [e.path for e in plan.entries] == [str(small)]
    assert [(r.item_id, r.code) for r in plan.refused] == [("big", "not_judged")]
    assert [(r.item_id, r.code) for r in plan_clean(reports, caches=["triton"]).refused] == []  # no age asked


def test_caches_report_is_exactly_what_scan_generic_walked(cache_env, tmp_path):
    root = tmp_path / "pipc"
    _generic_entry(root, "http-v2", recent_deep=True)
    report = by_name(scan_caches(Environ(cache_env), active={}, names=("pip",)))["pip"]
    assert isinstance(report, CacheReport) and report.last_used == items(report)["http-v2"].last_used
