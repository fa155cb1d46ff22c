"""Cache discovery and cleanup on caches laid out as the real clients lay them out, checked against du."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bootstrap.core.caches import cache_locations, execute_plan, plan_clean, scan_caches
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, UsageError
from tests.support.disk import du_s
from tests.support.trees import by_name, items, make_hf, make_modelscope_legacy, make_modelscope_new


def test_locations_follow_each_tools_env_variables(cache_env, tmp_path):
    loc = cache_locations(Environ(cache_env))
    assert loc["modelscope"] == (Path(cache_env["MODELSCOPE_CACHE"]), "MODELSCOPE_CACHE")
    assert loc["huggingface"] == (tmp_path / "hf" / "hub", "HF_HOME")
    assert loc["pip"][0] == tmp_path / "pipc" and loc["uv"][0] == tmp_path / "uvc"
    assert loc["vllm"][0] == tmp_path / "vllmc" and loc["torch"][0] == tmp_path / "torchc"
    assert loc["inductor"][0] == tmp_path / "inductor" and loc["triton"][0] == tmp_path / "tritonc"
    env2 = {k: v for k, v in cache_env.items() if k not in ("MODELSCOPE_CACHE", "HF_HOME")}
    env2.update(MS_CACHE_HOME=str(tmp_path / "legacy-ms"), HF_HUB_CACHE=str(tmp_path / "hubc"))
    loc2 = cache_locations(Environ(env2))
    assert loc2["modelscope"] == (tmp_path / "legacy-ms", "MS_CACHE_HOME")
    assert loc2["huggingface"] == (tmp_path / "hubc", "HF_HUB_CACHE")
    bare = {"HOME": cache_env["HOME"], "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    loc3 = cache_locations(Environ(bare))
    assert loc3["huggingface"][0] == tmp_path / "xdg" / "huggingface" / "hub"
    assert loc3["vllm"][0] == tmp_path / "xdg" / "vllm"
    assert loc3["modelscope"][0] == Path(cache_env["HOME"]) / ".cache" / "modelscope"  # ModelScope ignores XDG
    assert loc3["triton"][0] == Path(cache_env["HOME"]) / ".triton" / "cache"


def test_modelscope_new_layout_model_and_its_partials_are_separate_items(cache_env):
    root = Path(cache_env["MODELSCOPE_CACHE"])
    model = make_modelscope_new(root)
    ms = by_name(scan_caches(Environ(cache_env), active={}))["modelscope"]
    found = items(ms)
    partial = found["Qwen/Qwen2.5-0.5B-Instruct (partial)"]
    assert found["Qwen/Qwen2.5-0.5B-Instruct"].bytes + partial.bytes == du_s(model)
    assert partial.bytes == du_s(next(model.rglob("*.incomplete")))
    assert ms.bytes == du_s(root)
    assert found["(locks)"].kind == "lock"


def test_modelscope_legacy_layout_names_the_dotted_id_and_its_symlink(cache_env):
    root = Path(cache_env["MODELSCOPE_CACHE"])
    model, link, temp = make_modelscope_legacy(root)
    found = items(by_name(scan_caches(Environ(cache_env), active={}))["modelscope"])
    legacy = found["Qwen/Qwen2.5-1.5B-Instruct"]
    assert legacy.layout == "modelscope-legacy"
    assert legacy.bytes == du_s(model)
    assert set(legacy.paths) == {str(model), str(link)}
    assert found["Qwen/Qwen2.5-7B-Instruct (partial)"].bytes == du_s(temp)


def test_huggingface_repo_counts_blobs_once_and_partials_separately(cache_env, tmp_path):
    model = make_hf(tmp_path / "hf" / "hub")
    found = items(by_name(scan_caches(Environ(cache_env), active={}))["huggingface"])
    assert found["openai-community/gpt2"].bytes + found["openai-community/gpt2 (partial)"].bytes == du_s(model)


def test_package_caches_list_top_folders_with_du_sizes_and_their_own_cleaner(cache_env, tmp_path):
    for sub in ("http-v2", "wheels"):
        (tmp_path / "pipc" / sub).mkdir(parents=True)
        (tmp_path / "pipc" / sub / "x").write_bytes(os.urandom(30_000))
    reports = by_name(scan_caches(Environ(cache_env), active={}))
    pip = reports["pip"]
    assert pip.clean_command == "pip cache purge"
    assert {i.id: i.bytes for i in pip.items} == {s: du_s(tmp_path / "pipc" / s) for s in ("http-v2", "wheels")}
    assert pip.bytes == du_s(tmp_path / "pipc")
    assert reports["uv"].exists is False and reports["uv"].clean_command == "uv cache clean"


def test_a_model_a_live_server_uses_is_marked_and_refused(cache_env):
    model = make_modelscope_new(Path(cache_env["MODELSCOPE_CACHE"]))
    active = {str((model / "snapshots" / "master").resolve()): "qwen-1"}
    reports = scan_caches(Environ(cache_env), active=active)
    assert items(by_name(reports)["modelscope"])["Qwen/Qwen2.5-0.5B-Instruct"].in_use_by == "qwen-1"
    with pytest.raises(ConflictError):
        plan_clean(reports, models=["Qwen/Qwen2.5-0.5B-Instruct"], busy=lambda r: False)


def test_plan_is_data_every_path_with_its_bytes(cache_env, tmp_path):
    root = Path(cache_env["MODELSCOPE_CACHE"])
    make_modelscope_new(root)
    _, _, temp = make_modelscope_legacy(root)
    hf = make_hf(tmp_path / "hf" / "hub")
    plan = plan_clean(scan_caches(Environ(cache_env), active={}), partial=True, busy=lambda r: False)
    got = {e.path: e.bytes for e in plan.entries}
    incomplete = next(root.rglob("*.incomplete"))
    hf_inc = next(hf.rglob("*.incomplete"))
    assert got == {str(incomplete): du_s(incomplete), str(temp): du_s(temp), str(hf_inc): du_s(hf_inc)}
    assert plan.total_bytes == sum(got.values())
    assert incomplete.exists()  # planning deletes nothing


def test_recent_partials_are_kept_as_possibly_downloading(cache_env):
    model = make_modelscope_new(Path(cache_env["MODELSCOPE_CACHE"]))
    next(model.rglob("*.incomplete")).touch()
    plan = plan_clean(scan_caches(Environ(cache_env), active={}), partial=True, busy=lambda r: False)
    assert not plan.entries and plan.refused


def test_nothing_selected_is_a_usage_error(cache_env):
    with pytest.raises(UsageError):
        plan_clean(scan_caches(Environ(cache_env), active={}))


def test_cleaning_a_legacy_model_removes_directory_and_dotted_symlink(cache_env):
    root = Path(cache_env["MODELSCOPE_CACHE"])
    model, link, _ = make_modelscope_legacy(root)
    size = du_s(model) + os.lstat(link).st_blocks * 512  # a long symlink target takes a block on ext4
    plan = plan_clean(scan_caches(Environ(cache_env), active={}), models=["Qwen/Qwen2.5-1.5B-Instruct"])
    result = execute_plan(plan, active={})
    assert not model.exists() and not os.path.lexists(link)
    assert result.freed_bytes == size


def test_clean_never_follows_a_symlink_out_of_the_cache(cache_env, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(os.urandom(100_000))
    model = make_hf(tmp_path / "hf" / "hub")
    (model / "snapshots" / "escape").symlink_to(outside)
    (model / "blobs" / "escape-file").symlink_to(outside / "weights.bin")
    hf = by_name(scan_caches(Environ(cache_env), active={}))["huggingface"]
    assert hf.bytes == du_s(tmp_path / "hf" / "hub") < du_s(tmp_path / "hf" / "hub") + 100_000
    plan = plan_clean([hf], models=["openai-community/gpt2"])
    execute_plan(plan, active={})
    assert not model.exists()
    assert (outside / "weights.bin").stat().st_size == 100_000


def test_plan_entries_outside_their_root_are_not_touched(cache_env, tmp_path):
    from bootstrap.core.caches import CleanPlan, PlanEntry

    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * 10)
    plan = CleanPlan(entries=(PlanEntry(str(victim), 4096, "pip", "x", "entry"),), total_bytes=4096,
                     roots={"pip": str(tmp_path / "pipc")})
    result = execute_plan(plan, active={})
    assert victim.exists() and result.failed and result.freed_bytes == 0


def test_cli_clean_without_yes_and_without_a_tty_fails_fast(cache_env, run_vboot):
    make_modelscope_new(Path(cache_env["MODELSCOPE_CACHE"]))
    proc = run_vboot("disk", "clean", "--partial", "--json", env=cache_env, timeout=30)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["errors"][0]["code"] == "confirmation_required"
    assert list(Path(cache_env["MODELSCOPE_CACHE"]).rglob("*.incomplete"))


def test_cli_clean_dry_run_then_yes_frees_what_the_plan_said(cache_env, run_vboot):
    root = Path(cache_env["MODELSCOPE_CACHE"])
    make_modelscope_new(root)
    dry = json.loads(run_vboot("disk", "clean", "--partial", "--dry-run", "--json", env=cache_env).stdout)["data"]
    assert dry["freed_bytes"] == 0 and len(dry["plan"]) == 1
    proc = run_vboot("disk", "clean", "--partial", "--yes", "--json", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert data["freed_bytes"] == dry["plan"][0]["bytes"] > 0
    assert not list(root.rglob("*.incomplete"))


def test_cli_caches_json_lists_every_cache_with_items(cache_env, run_vboot):
    make_modelscope_new(Path(cache_env["MODELSCOPE_CACHE"]))
    proc = run_vboot("disk", "caches", "--json", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    caches = {c["name"]: c for c in json.loads(proc.stdout)["data"]["caches"]}
    assert set(caches) == {"modelscope", "huggingface", "pip", "uv", "torch", "inductor", "vllm", "triton"}
    ids = {i["id"] for i in caches["modelscope"]["items"]}
    assert "Qwen/Qwen2.5-0.5B-Instruct" in ids
    assert set(caches["modelscope"]["items"][0]) >= {"id", "path", "bytes", "last_used"}


def test_each_cache_root_is_scanned_once_and_the_plan_measures_nothing_again(cache_env, tmp_path, monkeypatch):
    from bootstrap.core import caches

    ms_root = Path(cache_env["MODELSCOPE_CACHE"])
    make_modelscope_new(ms_root)
    make_modelscope_legacy(ms_root)
    make_hf(tmp_path / "hf" / "hub")
    for sub in ("http-v2", "wheels"):
        (tmp_path / "pipc" / sub).mkdir(parents=True)
        (tmp_path / "pipc" / sub / "x").write_bytes(os.urandom(30_000))
    scanned: list[str] = []
    real_scan = caches.scan
    monkeypatch.setattr(caches, "scan", lambda root, *a, **k: scanned.append(str(root)) or real_scan(root, *a, **k))
    reports = scan_caches(Environ(cache_env), active={})
    assert sorted(scanned) == sorted(r.path for r in reports if r.exists)  # one du-style walk per cache root
    scanned.clear()
    plan = plan_clean(reports, models=["Qwen/Qwen2.5-1.5B-Instruct", "openai-community/gpt2"], caches=["pip"],
                      busy=lambda r: False)
    assert scanned == []  # the plan uses the sizes measured with the items
    chosen = {e.path: e.bytes for e in plan.entries}
    assert chosen[str(tmp_path / "pipc" / "wheels")] == du_s(tmp_path / "pipc" / "wheels")
    legacy = ms_root / "models" / "Qwen" / "Qwen2___5-1___5B-Instruct"
    assert chosen[str(legacy)] == du_s(legacy)
    assert chosen[str(ms_root / "models" / "Qwen" / "Qwen2.5-1.5B-Instruct")] == os.lstat(
        ms_root / "models" / "Qwen" / "Qwen2.5-1.5B-Instruct").st_blocks * 512


def test_each_model_directory_is_listed_once_for_its_partials_and_last_use(cache_env, tmp_path, monkeypatch):
    from bootstrap.core import caches

    make_modelscope_new(Path(cache_env["MODELSCOPE_CACHE"]))
    make_modelscope_legacy(Path(cache_env["MODELSCOPE_CACHE"]))
    make_hf(tmp_path / "hf" / "hub")
    listed: list[str] = []
    recording = [True]
    real_scandir, real_scan = os.scandir, caches.scan

    def scandir(path="."):
        if recording[0]:
            listed.append(os.fspath(path))
        return real_scandir(path)

    def quiet_scan(*args, **kwargs):  # the du-style scan of the root is counted by the test above
        recording[0] = False
        try:
            return real_scan(*args, **kwargs)
        finally:
            recording[0] = True

    monkeypatch.setattr(os, "scandir", scandir)  # os.walk lists through it too
    monkeypatch.setattr(caches, "scan", quiet_scan)
    scan_caches(Environ(cache_env), active={}, names=("modelscope", "huggingface"))
    assert listed and sorted({p for p in listed if listed.count(p) > 1}) == []
