"""Unit tests of the pull's planning, record and orchestration (a fake hub; real files in tmp_path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bootstrap.core.environ import Environ
from bootstrap.core.errors import DiskFullError, ModelNotFoundError, NotEnoughSpaceError, UsageError
from bootstrap.core.paths import locate_model
from bootstrap.core.pull import (
    CacheHint,
    Partial,
    PullRecord,
    RemoteFile,
    ensure_model,
    find_partials,
    load_record,
    margin_for,
    not_enough_space,
    plan_pull,
    present_files,
    record_intact,
    record_path,
    remove_new_partials,
    save_record,
)

MODEL = "acme/demo-1.5B"
FILES = (RemoteFile("config.json", 100, "a" * 64), RemoteFile("model.safetensors", 10_000, "b" * 64))
MiB = 1024 * 1024


def env_for(tmp_path: Path, **extra: str) -> Environ:
    return Environ({"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state"), **extra})


class FakeHub:
    """Scripted ModelScope client: records calls; ``download`` writes the listed files (or runs ``on_download``)."""

    def __init__(self, files=FILES, on_download=None) -> None:
        self.files = tuple(files)
        self.calls: list[str] = []
        self.on_download = on_download

    def list_files(self, model_id, revision, endpoint, *, debug=False):
        self.calls.append("list")
        return self.files

    def download(self, model_id, revision, cache_dir, endpoint, files, *, on_bytes=None, max_workers=4, local_dir=None,
                 debug=False):
        self.calls.append("download")
        self.downloaded = tuple(files)
        self.local_dir = local_dir
        snap = local_dir or locate_model(cache_dir, model_id, revision).snapshot_dir
        if self.on_download is not None:
            return self.on_download(snap, on_bytes)
        snap.mkdir(parents=True, exist_ok=True)
        for f in self.files:
            (snap / f.path).write_bytes(b"x" * f.size)
            if on_bytes:
                on_bytes(f.path, f.size)
        return snap

    def cached_snapshot(self, model_id, revision, cache_dir, *, local_dir=None, debug=False):
        self.calls.append("cached")
        self.local_dir = local_dir
        raise ModelNotFoundError(f"{model_id}@{revision} is not in the local cache")


def plenty(_path: Path) -> tuple[str, int]:
    return "/fake", 10**12


# -- planning -------------------------------------------------------------------------------------------
def test_plan_subtracts_present_files_and_resumable_partials(tmp_path):
    snap = locate_model(tmp_path, MODEL, "master").snapshot_dir
    plan = plan_pull(MODEL, "master", snap, FILES, present=frozenset({"config.json"}),
                     partials=[Partial(str(snap / "model.safetensors.incomplete"), 4_000, "model.safetensors")],
                     free_bytes=10**9, filesystem_path="/", margin_bytes=0)
    assert (plan.total_bytes, plan.present_bytes, plan.resumable_bytes, plan.needed_bytes) == (
        10_100, 100, 4_000, 6_000)


def test_plan_refuses_when_needed_plus_margin_exceeds_free(tmp_path):
    plan = plan_pull(MODEL, "master", tmp_path, FILES, present=frozenset(), partials=[], free_bytes=10_100 + 99,
                     filesystem_path="/", margin_bytes=100)
    assert not plan.enough_space


def test_plan_accepts_exact_fit(tmp_path):
    plan = plan_pull(MODEL, "master", tmp_path, FILES, present=frozenset(), partials=[], free_bytes=10_200,
                     filesystem_path="/", margin_bytes=100)
    assert plan.enough_space


def test_stray_partials_are_counted_as_space_that_could_go(tmp_path):
    plan = plan_pull(MODEL, "master", tmp_path, FILES, present=frozenset(),
                     partials=[Partial("/c/models/acme--demo-1.5B/snapshots/v0/x.incomplete", 7_000, "")],
                     free_bytes=0, filesystem_path="/", margin_bytes=0)
    assert plan.stray_bytes == 7_000 and plan.needed_bytes == 10_100


def test_find_partials_marks_this_snapshot_resumable_and_other_revisions_stray(tmp_path):
    snap = locate_model(tmp_path, MODEL, "master").snapshot_dir
    other = locate_model(tmp_path, MODEL, "v1").snapshot_dir
    snap.mkdir(parents=True)
    other.mkdir(parents=True)
    (snap / "model.safetensors.incomplete").write_bytes(b"1" * 30)
    (other / "model.safetensors.incomplete").write_bytes(b"2" * 50)
    (snap / "notes_1_2").write_bytes(b"ordinary file, not a range part")
    found = {Path(p.path).relative_to(tmp_path).as_posix(): (p.bytes, p.resumes)
             for p in find_partials(locate_model(tmp_path, MODEL, "master"), FILES)}
    assert found == {
        "models/acme--demo-1.5B/snapshots/master/model.safetensors.incomplete": (30, "model.safetensors"),
        "models/acme--demo-1.5B/snapshots/v1/model.safetensors.incomplete": (50, ""),
    }


def test_legacy_layout_is_used_when_it_already_holds_files(tmp_path):
    legacy = tmp_path / "models" / "acme" / "demo-1___5B"
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_text("{}")
    assert locate_model(tmp_path, MODEL, "master").snapshot_dir == legacy


def test_present_files_require_the_listed_size(tmp_path):
    (tmp_path / "config.json").write_bytes(b"x" * 100)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 9)
    assert present_files(tmp_path, FILES) == {"config.json"}


def test_margin_defaults_to_at_least_256_mib(tmp_path):
    assert margin_for(1_000, env_for(tmp_path)) == 256 * MiB


def test_margin_grows_with_large_models(tmp_path):
    assert margin_for(100 * 10**9, env_for(tmp_path)) == 2 * 10**9


def test_margin_from_environment(tmp_path):
    assert margin_for(1_000, env_for(tmp_path, VBOOT_PULL_MARGIN="1MB")) == 10**6


def test_bad_margin_in_environment_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="VBOOT_PULL_MARGIN"):
        margin_for(1_000, env_for(tmp_path, VBOOT_PULL_MARGIN="lots"))


def test_refusal_names_both_numbers_and_the_largest_caches(tmp_path):
    plan = plan_pull(MODEL, "master", tmp_path, FILES, present=frozenset(), partials=[], free_bytes=5_000,
                     filesystem_path="/data", margin_bytes=0)
    err = not_enough_space(plan, [CacheHint("pip", "/root/.cache/pip", 2 * 10**9, "pip cache purge")])
    assert "need 10.1 kB" in err.message and "5.0 kB free" in err.message
    assert "/root/.cache/pip 2.0 GB (`pip cache purge`)" in err.message and err.exit_code == 5
    assert err.context["needed_bytes"] == 10_100 and err.context["free_bytes"] == 5_000


def test_model_id_must_be_owner_slash_name(tmp_path):
    with pytest.raises(UsageError):
        ensure_model("just-a-name", "master", tmp_path, env_for(tmp_path), hub=FakeHub())


# -- the record -------------------------------------------------------------------------------------------
def _record(tmp_path: Path) -> PullRecord:
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "config.json").write_bytes(b"x" * 100)
    return PullRecord(MODEL, "master", str(tmp_path / "cache"), str(snap), 100, {"config.json": 100},
                      {"config.json": "a" * 64}, 1.0)


def test_record_round_trips_through_the_state_dir(tmp_path):
    env = env_for(tmp_path)
    rec = _record(tmp_path)
    path = save_record(env, rec)
    assert path.parent == tmp_path / "state" / "vboot" / "pulls"
    assert load_record(env, MODEL, "master", tmp_path / "cache") == rec


def test_record_is_keyed_by_cache_dir(tmp_path):
    env = env_for(tmp_path)
    save_record(env, _record(tmp_path))
    assert load_record(env, MODEL, "master", tmp_path / "other-cache") is None


def test_unreadable_record_is_ignored(tmp_path):
    env = env_for(tmp_path)
    path = record_path(env, MODEL, "master", tmp_path / "cache")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_record(env, MODEL, "master", tmp_path / "cache") is None


def test_record_is_not_intact_when_a_file_changed_size(tmp_path):
    rec = _record(tmp_path)
    (Path(rec.path) / "config.json").write_bytes(b"short")
    assert not record_intact(rec)


# -- orchestration with a fake hub ---------------------------------------------------------------------------
def test_fresh_pull_downloads_and_records(tmp_path):
    env, hub = env_for(tmp_path), FakeHub()
    result = ensure_model(MODEL, "master", tmp_path / "cache", env, hub=hub, free_space=plenty)
    assert hub.calls == ["list", "download"]
    assert (result.bytes, result.files, result.downloaded_bytes, result.source) == (10_100, 2, 10_100, "hub")
    assert load_record(env, MODEL, "master", tmp_path / "cache") is not None


def test_download_is_given_the_files_the_plan_was_made_from(tmp_path):
    hub = FakeHub()
    ensure_model(MODEL, "master", tmp_path / "cache", env_for(tmp_path), hub=hub, free_space=plenty)
    assert hub.downloaded == FILES


def test_recorded_pull_answers_without_the_hub(tmp_path):
    env = env_for(tmp_path)
    ensure_model(MODEL, "master", tmp_path / "cache", env, hub=FakeHub(), free_space=plenty)
    hub = FakeHub()
    result = ensure_model(MODEL, "master", tmp_path / "cache", env, hub=hub, free_space=plenty)
    assert hub.calls == [] and result.source == "record" and result.downloaded_bytes == 0


def test_verify_goes_back_to_the_hub_despite_a_record(tmp_path):
    env = env_for(tmp_path)
    ensure_model(MODEL, "master", tmp_path / "cache", env, hub=FakeHub(), free_space=plenty)
    hub = FakeHub()
    ensure_model(MODEL, "master", tmp_path / "cache", env, hub=hub, free_space=plenty, verify=True)
    assert hub.calls == ["list", "download"]


def test_offline_without_record_asks_only_the_local_cache(tmp_path):
    hub = FakeHub()
    with pytest.raises(ModelNotFoundError):
        ensure_model(MODEL, "master", tmp_path / "cache", env_for(tmp_path), hub=hub, offline=True)
    assert hub.calls == ["cached"]


def test_short_space_refuses_before_downloading(tmp_path):
    hub = FakeHub()
    with pytest.raises(NotEnoughSpaceError):
        ensure_model(MODEL, "master", tmp_path / "cache", env_for(tmp_path), hub=hub,
                     free_space=lambda p: ("/fake", 5_000), margin_bytes=0, caches=lambda e: ())
    assert hub.calls == ["list"]


def test_disk_full_removes_partials_this_call_wrote_and_keeps_older_ones(tmp_path):
    cache = tmp_path / "cache"
    snap = locate_model(cache, MODEL, "master").snapshot_dir
    snap.mkdir(parents=True)
    old = snap / "config.json.incomplete"
    old.write_bytes(b"o" * 10)

    def fill_disk(snapshot, on_bytes):
        (snapshot / "model.safetensors.incomplete").write_bytes(b"p" * 4_000)
        raise DiskFullError("the disk filled up")

    with pytest.raises(DiskFullError) as info:
        ensure_model(MODEL, "master", cache, env_for(tmp_path), hub=FakeHub(on_download=fill_disk),
                     free_space=plenty, margin_bytes=0)
    assert not (snap / "model.safetensors.incomplete").exists() and old.exists()
    assert info.value.context["removed_partial_bytes"] == 4_000


def test_remove_new_partials_keeps_untouched_ones(tmp_path):
    keep = tmp_path / "a.incomplete"
    keep.write_bytes(b"1")
    st = keep.stat()
    before = {str(keep): (st.st_size, st.st_mtime_ns)}
    (tmp_path / "b.incomplete").write_bytes(b"22")
    assert remove_new_partials(before, tmp_path) == 2 and keep.exists()


def test_progress_counts_resumed_prefix_as_done_but_not_downloaded(tmp_path):
    cache = tmp_path / "cache"
    snap = locate_model(cache, MODEL, "master").snapshot_dir
    snap.mkdir(parents=True)
    (snap / "model.safetensors.incomplete").write_bytes(b"p" * 4_000)
    seen: list[tuple[int, int]] = []

    def resume(snapshot, on_bytes):
        on_bytes("model.safetensors", 4_000)  # the client reports the partial file first
        on_bytes("model.safetensors", 6_000)
        on_bytes("config.json", 100)
        for f in FILES:
            (snapshot / f.path).write_bytes(b"x" * f.size)
        return snapshot

    result = ensure_model(MODEL, "master", cache, env_for(tmp_path), hub=FakeHub(on_download=resume),
                          free_space=plenty, margin_bytes=0, progress=lambda d, t: seen.append((d, t)))
    assert result.downloaded_bytes == 6_100
    assert seen[0] == (0, 10_100) and seen[-1] == (10_100, 10_100)


def test_record_file_is_plain_json(tmp_path):
    env = env_for(tmp_path)
    ensure_model(MODEL, "master", tmp_path / "cache", env, hub=FakeHub(), free_space=plenty)
    raw = json.loads(record_path(env, MODEL, "master", tmp_path / "cache").read_text())
    assert raw["files"] == {"config.json": 100, "model.safetensors": 10_000} and raw["verified_at"] > 0
    assert not [p for p in os.listdir(record_path(env, MODEL, "master", tmp_path).parent) if p.startswith(".")]


def test_old_flat_cache_layout_is_reused_as_local_dir(tmp_path):
    old = tmp_path / "acme" / "demo-1___5B"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    assert locate_model(tmp_path, MODEL, "master").snapshot_dir == old


def test_a_partial_in_an_old_flat_layout_counts_as_resumable(tmp_path):
    old = tmp_path / "acme" / "demo-1___5B"
    old.mkdir(parents=True)
    (old / "config.json").write_bytes(b"x" * 100)
    (old / "model.safetensors.incomplete").write_bytes(b"p" * 4_000)
    plans = []
    hub = FakeHub()
    ensure_model(MODEL, "master", tmp_path, env_for(tmp_path), hub=hub, free_space=plenty, on_plan=plans.append)
    assert plans[0].snapshot_dir == str(old) and hub.local_dir == old
    assert (plans[0].present_bytes, plans[0].resumable_bytes, plans[0].needed_bytes) == (100, 4_000, 6_000)


def test_the_planned_snapshot_is_the_local_dir_the_client_is_given(tmp_path):
    # A flat layout is passed as local_dir (the client then writes there), even beside a hub/models legacy dir.
    for d in (tmp_path / "hub" / "models" / "acme" / "demo-1___5B", tmp_path / "acme" / "demo-1.5B"):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    where = locate_model(tmp_path, MODEL, "master")
    assert where.local_dir == tmp_path / "acme" / "demo-1.5B"
    assert where.snapshot_dir == where.local_dir


def test_offline_passes_the_reused_legacy_dir_to_the_client(tmp_path):
    old = tmp_path / "acme" / "demo-1___5B"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    hub = FakeHub()
    with pytest.raises(ModelNotFoundError):
        ensure_model(MODEL, "master", tmp_path, env_for(tmp_path), hub=hub, offline=True)
    assert hub.local_dir == old


def test_new_layout_wins_over_an_old_flat_layout(tmp_path):
    for d in (tmp_path / "acme" / "demo-1___5B", tmp_path / "models" / "acme--demo-1.5B" / "snapshots" / "master"):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    new = tmp_path / "models" / "acme--demo-1.5B" / "snapshots" / "master"
    assert locate_model(tmp_path, MODEL, "master").snapshot_dir == new


def test_the_model_is_located_once_and_every_directory_of_it_is_searched(tmp_path):
    """One frozen answer: the legacy dir the client reuses is the snapshot, and the partial search covers it."""
    old = tmp_path / "acme" / "demo-1___5B"
    old.mkdir(parents=True)
    (old / "model.safetensors.incomplete").write_bytes(b"p" * 10)
    where = locate_model(tmp_path, MODEL, "master")
    assert where.local_dir == where.snapshot_dir == old and old in where.dirs
    assert where.layout.new == tmp_path / "models" / "acme--demo-1.5B"
    (old / "config.json").unlink(missing_ok=True)
    old.rename(tmp_path / "moved")  # the disk changes afterwards: the answer does not
    assert where.snapshot_dir == old
    with pytest.raises(UsageError):
        locate_model(tmp_path, MODEL, "../x")  # a revision is checked before a path is built from it


def test_what_the_pre_flight_found_is_not_looked_up_or_measured_again(tmp_path):
    """`vboot serve` hands the pull the pre-flight's lookup of the model and its measurement of the disk."""
    cache = tmp_path / "cache"
    located = locate_model(cache, MODEL, "master")
    plans = []
    ensure_model(MODEL, "master", cache, env_for(tmp_path), hub=FakeHub(), on_plan=plans.append,
                 free_space=lambda p: pytest.fail("the disk was measured a second time"),
                 located=located, measured=("/measured/by/preflight", 10**12))
    assert plans[0].filesystem_path == "/measured/by/preflight" and plans[0].free_bytes == 10**12
    assert plans[0].snapshot_dir == str(located.snapshot_dir)


def test_a_lookup_of_another_model_is_not_used(tmp_path):
    other = locate_model(tmp_path / "elsewhere", "acme/other", "master")
    plans = []
    ensure_model(MODEL, "master", tmp_path / "cache", env_for(tmp_path), hub=FakeHub(), free_space=plenty,
                 on_plan=plans.append, located=other)
    assert plans[0].snapshot_dir == str(tmp_path / "cache" / "models" / "acme--demo-1.5B" / "snapshots" / "master")


def test_a_missing_modelscope_client_is_one_line_with_the_install_command():
    from bootstrap.core.errors import EXIT_USAGE, MissingDependencyError
    from bootstrap.probes.modelscope_hub import translate

    err = translate(ModuleNotFoundError("No module named 'modelscope_hub'", name="modelscope_hub"), MODEL, "master",
                    None)
    assert isinstance(err, MissingDependencyError) and err.code == "missing_dependency"
    assert err.exit_code == EXIT_USAGE
    assert "not installed" in err.message and "pip install 'modelscope>=1.38'" in err.hint


def test_an_unwritable_cache_is_its_own_disk_error(tmp_path):
    from bootstrap.core.errors import EXIT_DISK, CacheUnwritableError
    from bootstrap.probes.modelscope_hub import translate

    err = translate(PermissionError(13, "Permission denied", str(tmp_path)), MODEL, "master", None)
    assert isinstance(err, CacheUnwritableError) and err.exit_code == EXIT_DISK and "--cache-dir" in err.hint


def test_a_model_missing_from_the_local_cache_names_the_cache_searched(tmp_path):
    from bootstrap.probes.modelscope_hub import cached_snapshot

    with pytest.raises(ModelNotFoundError, match=f"is not in the local cache {tmp_path}$") as info:
        cached_snapshot(MODEL, "master", tmp_path)
    assert info.value.context["cache_dir"] == str(tmp_path) and "--cache-dir" in info.value.hint
