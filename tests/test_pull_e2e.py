"""End-to-end: the installed `vboot pull` drives the real `modelscope` client against tests/support/hub_server.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.cli import vboot_exe
from tests.support.e2e import REPO, TINY, client_env, free_port
from tests.support.hub_server import HubServer, read_log

pytestmark = pytest.mark.e2e

MODEL = "vboot/tiny"




@pytest.fixture
def hub():
    with HubServer() as server:
        server.add_repo(MODEL, TINY)
        yield server


@pytest.fixture
def pull(run_vboot, hub, tmp_path):
    """`vboot pull ARGS --json` against the in-process hub; returns (exit code, envelope, stderr)."""

    def _pull(*args: str, env: dict | None = None, endpoint: str | None = None):
        full = client_env(endpoint or hub.url, tmp_path)
        full.update(env or {})
        proc = run_vboot("pull", *args, "--json", env=full)
        return proc.returncode, json.loads(proc.stdout), proc.stderr

    return _pull


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partials_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (p.name.endswith((".incomplete", ".parallel_tmp")))]


def make_repo(root: Path, sizes: dict[str, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        (root / name).write_bytes(os.urandom(size))
    return root


# -- the happy path ---------------------------------------------------------------------------------------
def test_fresh_download_returns_the_snapshot_with_identical_files(pull, tmp_path):
    code, doc, _ = pull(MODEL)
    assert code == 0, doc
    data = doc["data"]
    path = Path(data["path"])
    assert path == Path(os.environ["MODELSCOPE_CACHE"]) / "models" / "vboot--tiny" / "snapshots" / "master"
    assert data["files"] == 6 and data["bytes"] == data["downloaded_bytes"] == sum(
        p.stat().st_size for p in TINY.iterdir())
    assert all(sha(path / p.name) == sha(p) for p in TINY.iterdir())


def test_a_pull_lists_the_repo_once_and_downloads_what_it_listed(pull, hub):
    code, doc, _ = pull(MODEL)
    assert code == 0, doc
    assert len(hub.listing_requests()) == 1
    assert sorted(r.file for r in hub.file_requests()) == sorted(p.name for p in TINY.iterdir())


def test_a_branch_moved_after_the_listing_fails_the_check_instead_of_swapping_files(hub, tmp_path, monkeypatch):
    """The bytes are checked against the listing the plan used, not against a second, newer listing."""
    from bootstrap.core.errors import IntegrityError
    from bootstrap.probes import modelscope_hub as client

    for key, value in client_env(hub.url, tmp_path).items():
        monkeypatch.setenv(key, value)
    listed = client.list_files(MODEL, "master", hub.url)
    moved = make_repo(tmp_path / "moved", {})
    for p in TINY.iterdir():
        (moved / p.name).write_bytes(p.read_bytes())
    (moved / "config.json").write_bytes(bytes(b ^ 1 for b in (TINY / "config.json").read_bytes()))  # same size
    hub.add_repo(MODEL, moved)
    with pytest.raises(IntegrityError, match="config.json"):
        client.download(MODEL, "master", tmp_path / "cache", hub.url, listed)
    assert len(hub.listing_requests()) == 1


def test_second_pull_downloads_no_file(pull, hub):
    pull(MODEL)
    hub.clear()
    code, doc, _ = pull(MODEL)
    assert code == 0 and doc["data"]["downloaded_bytes"] == 0
    assert hub.file_requests() == []


def test_offline_after_a_pull_contacts_no_hub(pull, hub):
    pull(MODEL)
    hub.clear()
    code, doc, _ = pull(MODEL, "--offline")
    assert code == 0 and doc["data"]["source"] == "record" and hub.requests == []


def test_offline_without_the_model_is_not_found(pull, hub):
    code, doc, _ = pull(MODEL, "--offline")
    assert code == 4 and doc["errors"][0]["code"] == "model_not_found" and hub.requests == []


def test_progress_and_logs_stay_off_stdout_with_json(pull):
    code, doc, stderr = pull(MODEL)
    assert code == 0 and "Downloading" not in stderr


# -- faults --------------------------------------------------------------------------------------------------
def test_unknown_repo_is_not_found(pull):
    code, doc, _ = pull("vboot/no-such-model")
    assert code == 4 and doc["errors"][0]["code"] == "model_not_found"
    assert "vboot/no-such-model" in doc["errors"][0]["message"]


def test_unknown_revision_is_not_found(pull):
    code, doc, _ = pull(MODEL, "--revision", "v999")
    assert code == 4 and "v999" in doc["errors"][0]["message"]


def test_hub_down_is_a_network_error(pull):
    code, doc, _ = pull(MODEL, endpoint=f"http://127.0.0.1:{free_port()}")
    assert code == 3 and doc["errors"][0]["code"] == "network"
    assert "\n" not in doc["errors"][0]["message"]


def test_a_file_corrupted_once_is_fetched_again(pull, hub, tmp_path):
    hub.faults.corrupt["model.safetensors"] = 1
    code, doc, _ = pull(MODEL)
    assert code == 0, doc
    assert len(hub.file_requests("model.safetensors")) == 2
    assert sha(Path(doc["data"]["path"]) / "model.safetensors") == sha(TINY / "model.safetensors")


def test_a_file_that_stays_corrupt_is_named_in_an_integrity_error(pull, hub):
    hub.faults.corrupt["model.safetensors"] = -1
    code, doc, _ = pull(MODEL)
    err = doc["errors"][0]
    assert code == 6 and err["code"] == "integrity" and "model.safetensors" in err["message"]
    assert "sha256" in err["message"]


def test_a_file_of_the_wrong_size_is_named_in_an_integrity_error(pull, hub, tmp_path):
    hub.faults.wrong_size["tokenizer.json"] = 100
    code, doc, _ = pull(MODEL)
    err = doc["errors"][0]
    assert code == 6 and "tokenizer.json" in err["message"] and "size" in err["message"]
    snap = Path(os.environ["MODELSCOPE_CACHE"]) / "models" / "vboot--tiny" / "snapshots" / "master"
    assert not (snap / "tokenizer.json").exists()


def test_not_enough_space_refuses_before_any_file_moves(pull, hub):
    code, doc, _ = pull(MODEL, env={"VBOOT_PULL_MARGIN": "1000TB"})
    err = doc["errors"][0]
    assert code == 5 and err["code"] == "not_enough_space"
    assert err["context"]["needed_bytes"] == sum(p.stat().st_size for p in TINY.iterdir())
    assert err["context"]["free_bytes"] > 0 and "free" in err["message"]
    assert hub.file_requests() == []


def test_not_enough_space_names_the_largest_caches_that_could_go(pull, isolated_env, tmp_path):
    pip_cache = Path(isolated_env["XDG_CACHE_HOME"]) / "pip"
    make_repo(pip_cache / "http", {"blob": 3 * 1024 * 1024})
    (tmp_path / "tmp").mkdir()
    code, doc, _ = pull(MODEL, env={"VBOOT_PULL_MARGIN": "1000TB", "TMPDIR": str(tmp_path / "tmp")})
    err = doc["errors"][0]
    assert code == 5 and f"largest caches: {pip_cache} 3." in err["message"]
    assert "MB (`pip cache purge`)" in err["message"]
    assert err["context"]["caches"][0]["name"] == "pip"


# -- interruption and resume -----------------------------------------------------------------------------------
def test_a_connection_dropped_mid_file_is_resumed_within_the_same_pull(pull, hub, tmp_path):
    repo = make_repo(tmp_path / "repo", {"weights.bin": 3 * 1024 * 1024})
    hub.add_repo("vboot/cut", repo)
    hub.faults.cut["weights.bin"] = 2 * 1024 * 1024
    code, doc, _ = pull("vboot/cut")
    assert code == 0, doc
    reqs = hub.file_requests("weights.bin")
    assert reqs[0].range is None and reqs[-1].range is not None and reqs[-1].range.startswith("bytes=")
    assert sum(r.sent_bytes for r in reqs) == 3 * 1024 * 1024
    assert sha(Path(doc["data"]["path"]) / "weights.bin") == sha(repo / "weights.bin")


def start_hub_process(port: int, repo: Path, log: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "support" / "hub_server.py"), "--port", str(port), "--repo",
         f"{MODEL}={repo}",
         "--log", str(log), *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc


def test_server_killed_mid_file_then_the_next_pull_resumes_with_range(run_vboot, tmp_path):
    repo = make_repo(tmp_path / "repo", {"config.json": 300, "weights.bin": 6 * 1024 * 1024})
    port = free_port()
    env = client_env(f"http://127.0.0.1:{port}", tmp_path)
    cut_at = 4 * 1024 * 1024 + 12345
    first = start_hub_process(port, repo, tmp_path / "log1.jsonl", "--die", f"weights.bin={cut_at}", "--slow",
                              str(8 * 1024 * 1024))
    try:
        broken = run_vboot("pull", MODEL, "--json", env=env)
        first.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
        first.wait()
    assert broken.returncode == 3, broken.stdout
    snap = Path(os.environ["MODELSCOPE_CACHE"]) / "models" / "vboot--tiny" / "snapshots" / "master"
    kept = (snap / "weights.bin.incomplete").stat().st_size
    assert 0 < kept <= cut_at

    second = start_hub_process(port, repo, tmp_path / "log2.jsonl")
    try:
        done = run_vboot("pull", MODEL, "--json", env=env)
    finally:
        second.kill()
        second.wait()
    assert done.returncode == 0, done.stdout
    weights = [r for r in read_log(tmp_path / "log2.jsonl") if r["file"] == "weights.bin"]
    assert [r["range"] for r in weights] == [f"bytes={kept}-"]
    assert weights[0]["sent_bytes"] == 6 * 1024 * 1024 - kept
    # config.json came whole the first time
    assert json.loads(done.stdout)["data"]["downloaded_bytes"] == 6 * 1024 * 1024 - kept
    assert sha(snap / "weights.bin") == sha(repo / "weights.bin") and partials_under(snap) == []


# -- a full disk during the download ----------------------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 MiB tmpfs (needs root: mount). Unmounted at teardown."""
    mnt = tmp_path / "tinyfs"
    mnt.mkdir()
    from tests.support.e2e import mounted

    with mounted("tmpfs", mnt, "size=4m"):
        yield mnt


def test_disk_full_during_download_is_its_own_error_and_leaves_no_partials(pull, hub, tmp_path, tiny_fs):
    repo = make_repo(tmp_path / "big", {"a.bin": 1024 * 1024, "b.bin": 1024 * 1024, "c.bin": 512 * 1024})
    hub.add_repo("vboot/big", repo)
    hub.faults.slow_bps = 1024 * 1024  # ~2.5 s, long enough to fill the disk after the budget check passed
    cache = tiny_fs / "cache"

    def fill_once_downloading() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not hub.file_requests():
            time.sleep(0.01)
        st = os.statvfs(tiny_fs)
        (tiny_fs / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 256 * 1024))

    filler = threading.Thread(target=fill_once_downloading)
    filler.start()
    try:
        code, doc, _ = pull("vboot/big", "--cache-dir", str(cache), env={"MODELSCOPE_DOWNLOAD_MAX_RETRIES": "0"})
    finally:
        filler.join()
    err = doc["errors"][0]
    assert code == 5 and err["code"] == "disk_full", doc
    assert partials_under(cache) == []
    assert err["context"]["removed_partial_bytes"] > 0


def test_progress_bar_is_quiet_when_stderr_is_not_a_tty(run_vboot, hub, tmp_path):
    proc = run_vboot("pull", MODEL, env=client_env(hub.url, tmp_path))
    assert proc.returncode == 0 and proc.stderr == ""
    assert "vboot/tiny@master" in proc.stdout


def test_progress_bar_shows_on_a_tty(hub, tmp_path, isolated_env):
    """Under a pseudo-terminal the whole-download bar (bytes, rate, ETA) is drawn on stderr."""
    import pty

    env = {**isolated_env, **client_env(hub.url, tmp_path), "COLUMNS": "120"}
    hub.faults.slow_bps = 2 * 1024 * 1024
    pid, fd = pty.fork()
    if pid == 0:  # child: stdout and stderr are the terminal
        os.execvpe(vboot_exe()[0], [*vboot_exe(), "pull", MODEL], env)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "pull" in text and "KiB" in text and "/s" in text, text


def test_offline_without_a_record_reports_the_cached_snapshot_unverified(pull, hub, isolated_env):
    pull(MODEL)
    for rec in (Path(isolated_env["XDG_STATE_HOME"]) / "vboot" / "pulls").glob("*.json"):
        rec.unlink()
    hub.clear()
    code, doc, _ = pull(MODEL, "--offline")
    assert code == 0 and doc["data"]["source"] == "cache" and doc["data"]["verified_at"] is None
    assert doc["data"]["files"] == 6 and hub.requests == []


def test_a_pull_with_missing_recorded_file_goes_back_to_the_hub(pull, hub):
    _, doc, _ = pull(MODEL)
    (Path(doc["data"]["path"]) / "tokenizer.json").unlink()
    hub.clear()
    code, doc, _ = pull(MODEL)
    assert code == 0 and [r.file for r in hub.file_requests()] == ["tokenizer.json"]
