"""The scanner against GNU du on real trees in tmp_path: every number must be du's."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest

from bootstrap.core.disk import default_open_dir, scan
from tests.support.disk import SLOW_OPEN, du, forked_children, kill_and_expect_gone, script_running
from tests.support.e2e import mounted
from tests.support.trees import build, wide_tree


def ours(root: Path, depth: int, **kwargs) -> dict[str, int]:
    rep = scan(root, depth=depth, **kwargs)
    result = {e.path: e.bytes for e in rep.entries}
    result[rep.root] = rep.total_bytes
    return result


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_numbers_equal_du_at_every_depth(tmp_path, depth):
    root = build(tmp_path / "t")
    assert ours(root, depth) == du(root, depth)


def test_apparent_sizes_equal_du_apparent_size(tmp_path):
    root = build(tmp_path / "t")
    assert ours(root, 2, apparent=True) == du(root, 2, apparent=True)


def test_hard_links_count_once_where_du_counts_them(tmp_path):
    root = build(tmp_path / "t")
    (root / "l1").mkdir()
    (root / "l2").mkdir()
    (root / "l1" / "big").write_bytes(b"h" * 200_000)
    os.link(root / "l1" / "big", root / "l2" / "big-again")
    os.link(root / "l1" / "big", root / "l1" / "big-same-dir")
    expected = du(root, 2)
    assert ours(root, 2) == expected
    assert ours(root, 2, workers=2, split_after=1) == expected  # forked workers dedupe across processes


def test_symlinks_are_not_followed_and_a_loop_is_harmless(tmp_path):
    root = build(tmp_path / "t")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge").write_bytes(b"o" * 300_000)
    (root / "loop").symlink_to(root)
    (root / "a" / "up").symlink_to("..")
    (root / "out").symlink_to(outside)
    (root / "dangling").symlink_to(tmp_path / "nothing-here")
    result = ours(root, 2)
    assert result == du(root, 2)
    assert result[str(root / "out")] < 300_000  # the link's own size, not its target's


def test_sparse_files_count_allocated_blocks(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    with open(root / "sparse", "wb") as fh:
        fh.truncate(1 << 30)
        fh.write(b"data")
    result = ours(root, 1)
    assert result == du(root, 1)
    assert result[str(root / "sparse")] < 1 << 20
    assert ours(root, 1, apparent=True)[str(root / "sparse")] == 1 << 30


def test_deep_nesting_beyond_the_fd_level_limit(tmp_path):
    root = tmp_path / "t"
    deep = root
    for _ in range(450):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "leaf").write_bytes(b"l" * 9000)
    assert ours(root, 3) == du(root, 3)
    assert ours(root, 3, workers=2, split_after=1) == du(root, 3)


def test_odd_names_are_counted_and_shown_escaped(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    raw = os.fsencode(str(root)) + b"/bad-\xff\xfe-name"
    os.mkdir(raw)
    with open(raw + b"/f", "wb") as fh:
        fh.write(b"x" * 5000)
    for name in ("new\nline", "-dash", "sp ace", "[bold]markup", "ünïcödé"):
        (root / name).write_bytes(b"q" * 100)
    rep = scan(root, depth=1)
    assert ours(root, 1) == du(root, 1)
    assert any(w.kind == "non_utf8" for w in rep.warnings)
    json.dumps([e.path for e in rep.entries])  # every path is printable JSON


def test_an_unreadable_directory_is_a_warning_and_its_contents_are_missing(tmp_path):
    root = build(tmp_path / "t")
    locked = root / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "secret").write_bytes(b"s" * 50_000)

    def deny(path, name, dir_fd):  # root reads everything, so EACCES is injected
        if path.endswith("/locked"):
            raise PermissionError(13, "Permission denied")
        return default_open_dir(path, name, dir_fd)

    rep = scan(root, depth=1, open_dir=deny)
    full = du(root, 1)
    contents = du(locked, 0)[str(locked)] - os.lstat(locked).st_blocks * 512
    assert rep.total_bytes == full[str(root)] - contents
    assert {e.path: e.bytes for e in rep.entries}[str(locked)] == os.lstat(locked).st_blocks * 512
    assert rep.unreadable_count == 1 and rep.unreadable_paths == (str(locked),)
    assert not rep.complete


def test_a_directory_that_vanishes_mid_scan_is_skipped(tmp_path):
    root = build(tmp_path / "t")
    (root / "gone" / "sub").mkdir(parents=True)
    (root / "gone" / "sub" / "f").write_bytes(b"g" * 8000)
    sub_own = os.lstat(root / "gone" / "sub").st_blocks * 512  # listed (and counted) before it vanished

    def vanish(path, name, dir_fd):
        if path.endswith("/gone/sub"):
            (Path(path) / "f").unlink()
            Path(path).rmdir()
        return default_open_dir(path, name, dir_fd)

    rep = scan(root, depth=1, open_dir=vanish)
    assert rep.complete and not rep.warnings
    assert rep.total_bytes == du(root, 0)[str(root)] + sub_own


def test_parallel_scan_of_a_wider_tree_equals_du(tmp_path):
    root = tmp_path / "t"
    for i in range(30):
        d = root / f"top{i % 4}" / f"mid{i}"
        d.mkdir(parents=True)
        for j in range(20):
            (d / f"f{j}").write_bytes(b"w" * (i * j * 10))
    os.link(root / "top3" / "mid7" / "f5", root / "top0" / "mid4" / "hl")
    rep = scan(root, depth=2, workers=2, split_after=50)
    assert rep.workers == 2
    assert {**{e.path: e.bytes for e in rep.entries}, rep.root: rep.total_bytes} == du(root, 2)


_SLOW_SCAN = SLOW_OPEN + """
print("scanning", flush=True)
disk.scan(sys.argv[1], depth=1, workers=3, split_after=1, open_dir=slow)
"""


def test_workers_stop_when_the_scanning_process_is_killed(tmp_path):
    root = wide_tree(tmp_path / "t")
    with script_running(_SLOW_SCAN, root) as (proc, line):
        assert line == [b"scanning"]
        workers = forked_children(psutil.Process(proc.pid), 2, "the scan")
        kill_and_expect_gone(proc, workers, "the workers")


_WAITING_SCANNER = """
import os, sys, time
from bootstrap.core import disk, duwalk

def slow(path, name, dir_fd):  # the worker is 50x slower: the scanner ends its share soon, then waits
    time.sleep(0.001 if os.getpid() == scanner else 0.05)
    return disk.default_open_dir(path, name, dir_fd)

def scan_for(starter):
    duwalk.WATCH_EVERY = 1
    disk.scan(sys.argv[1], depth=1, workers=2, split_after=1, open_dir=slow, watch_parent=starter)

starter = os.getpid()
pid = os.fork()
if pid == 0:
    scanner = os.getpid()
    print("scanner", scanner, flush=True)
    try:
        scan_for(starter)
    finally:
        os._exit(0)
time.sleep(60)
"""


def test_a_scanner_waiting_for_its_workers_stops_when_its_starter_is_killed(tmp_path):
    root = tmp_path / "t"
    for c in range(8):  # long chains: the worker's one takes seconds, the scanner's are done in well under one
        deep = root / f"c{c}"
        for i in range(100):
            deep = deep / f"d{i}"
        deep.mkdir(parents=True)
    with script_running(_WAITING_SCANNER, root) as (proc, line):
        scanner = psutil.Process(int(line[1]))
        tree = [scanner, *forked_children(scanner, 1, "the scan")]
        time.sleep(1.5)  # the scanner is now waiting for the worker's result
        assert scanner.status() != psutil.STATUS_ZOMBIE and tree[1].is_running()
        kill_and_expect_gone(proc, tree, "the scan")


def test_cli_json_carries_root_total_entries_and_warnings(tmp_path, run_vboot):
    root = build(tmp_path / "t")
    proc = run_vboot("disk", str(root), "--depth", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    data = doc["data"]
    assert data["root"] == str(root)
    listed = {e["path"]: e["bytes"] for e in data["entries"]}
    listed[data["root"]] = data["total_bytes"]
    assert listed == du(root, 2)
    assert data["warnings"] == []


def test_cli_a_directory_named_caches_is_reached_as_dot_slash(tmp_path, run_vboot, monkeypatch):
    (tmp_path / "caches").mkdir()
    (tmp_path / "caches" / "f").write_bytes(b"c" * 10_000)
    monkeypatch.chdir(tmp_path)
    proc = run_vboot("disk", "./caches", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data"]["total_bytes"] == du(tmp_path / "caches", 0)[str(tmp_path / "caches")]


def test_cli_missing_path_fails_with_one_line_and_exit_4(tmp_path, run_vboot):
    proc = run_vboot("disk", str(tmp_path / "nope"))
    assert proc.returncode == 4
    assert "no such file or directory" in proc.stderr and "Traceback" not in proc.stderr


_MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:22 / /sys rw,nosuid - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
26 22 0:24 / /dev/shm rw - tmpfs tmpfs rw
27 22 0:25 / /data/my\\040disk/proc rw - proc proc rw
28 22 0:26 / /data/real rw - ext4 /dev/vdb rw
"""


def test_pseudo_mounts_below_the_root_come_from_mountinfo(tmp_path):
    from bootstrap.core.disk import mount_table, pseudo_mounts

    info = tmp_path / "mountinfo"
    info.write_text(_MOUNTINFO)
    rows = mount_table(str(info))
    assert rows[0] == ("/", os.makedev(8, 1), "ext4") and len(rows) == 7
    dev = os.makedev
    assert pseudo_mounts("/", rows) == {"/proc": dev(0, 21), "/sys": dev(0, 22), "/sys/fs/cgroup": dev(0, 23),
                                             "/data/my disk/proc": dev(0, 25)}
    assert list(pseudo_mounts("/sys", rows)) == ["/sys/fs/cgroup"]  # the root itself is scanned if asked
    assert list(pseudo_mounts("/data", rows)) == ["/data/my disk/proc"]  # tmpfs and ext4 hold real data
    assert mount_table(str(tmp_path / "missing")) == []


def test_a_skipped_directory_is_listed_with_its_own_size_but_not_entered(tmp_path):
    root = build(tmp_path / "t")
    assert scan(root, depth=1, skip_mounts={str(root / "many"): -1}).skipped_mounts == ()  # another device there
    rep = scan(root, depth=1, skip_mounts={str(root / "many"): os.lstat(root / "many").st_dev})
    assert rep.skipped_mounts == (str(root / "many"),)
    listed = {e.path: e.bytes for e in rep.entries}
    assert listed[str(root / "many")] == os.lstat(root / "many").st_blocks * 512
    expected = du(root, 1)
    assert rep.total_bytes == expected[str(root)] - (expected[str(root / "many")] - listed[str(root / "many")])


def test_a_real_proc_mount_below_the_root_is_not_entered_and_du_agrees(tmp_path):
    root = build(tmp_path / "t")
    (root / "p").mkdir()
    with mounted("proc", root / "p"):
        rep = scan(root, depth=1, workers=2, split_after=1)
        assert rep.skipped_mounts == (str(root / "p"),)
        assert ours(root, 1) == du(root, 1)  # proc holds no blocks: du's numbers, without du's walk through it
        assert rep.entry_count < 100 and not rep.warnings
        os.symlink(root, tmp_path / "link")  # through a symlinked root: reported in the spelling asked for
        assert scan(tmp_path / "link", depth=1).skipped_mounts == (str(tmp_path / "link" / "p"),)
        # A real filesystem mounted over the pseudo one is what is visible there: it is measured, like du does.
        with mounted("tmpfs", root / "p"):
            (root / "p" / "data.bin").write_bytes(os.urandom(300_000))
            rep = scan(root, depth=1)
            assert rep.skipped_mounts == ()
            assert ours(root, 1) == du(root, 1) and du(root, 1)[str(root / "p")] >= 300_000


def test_the_root_slash_slash_is_the_root():
    from bootstrap.core.disk import scan as real_scan

    assert real_scan("//", depth=0, skip_mounts={}, workers=1, open_dir=_refuse).root == "/"


def _refuse(path, name, dir_fd):
    raise PermissionError(13, "not in this test")


def _same_inode_links_in_a_large_directory(root: Path) -> None:
    """10,050 files in D, then one file hard-linked into D/s0 .. D/s5: du visits D in inode order."""
    big = root / "D"
    big.mkdir(parents=True)
    for i in range(10_050):
        (big / f"f{i:05d}").touch()
    for k in range(6):
        (big / f"s{k}").mkdir()
    data = big / "s3" / "data"
    data.write_bytes(os.urandom(50_000))
    for k in (5, 0, 4, 1, 2):
        os.link(data, big / f"s{k}" / "data")


@pytest.mark.parametrize("workers", [1, 2])
def test_hard_links_in_a_directory_du_reads_in_inode_order(tmp_path, workers):
    root = tmp_path / "t"
    _same_inode_links_in_a_large_directory(root)
    expected = du(root, 2)
    assert ours(root, 2, workers=workers, split_after=1) == expected
    counted = [k for k in range(6) if expected[str(root / "D" / f"s{k}")] > 8192]
    assert len(counted) == 1  # one of the six names carries the bytes, and it is du's


def test_on_tmpfs_du_keeps_readdir_order_and_so_do_we(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    with mounted("tmpfs", root):
        _same_inode_links_in_a_large_directory(root)
        assert ours(root, 2, workers=2, split_after=1) == du(root, 2)
