"""Cache discovery and cleanup on caches laid out as the real clients lay them out, checked against du."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bootstrap.core.caches import cache_locations, execute_plan, plan_clean, scan_caches
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, UsageError

OLD = time.time() - 40 * 86400


def du_s(path: Path) -> int:
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split("\t", 1)[0])


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


@pytest.fixture
def env(isolated_env, tmp_path):
    values = dict(isolated_env)
    values["HF_HOME"] = str(tmp_path / "hf")
    values["PIP_CACHE_DIR"] = str(tmp_path / "pipc")
    values["UV_CACHE_DIR"] = str(tmp_path / "uvc")
    values["VLLM_CACHE_ROOT"] = str(tmp_path / "vllmc")
    values["TORCH_HOME"] = str(tmp_path / "torchc")
    values["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    values["TRITON_CACHE_DIR"] = str(tmp_path / "tritonc")
    return values


def by_name(reports):
    return {r.name: r for r in reports}


def items(report):
    return {i.id: i for i in report.items}


def test_locations_follow_each_tools_env_variables(env, tmp_path):
    loc = cache_locations(Environ(env))
    assert loc["modelscope"] == (Path(env["MODELSCOPE_CACHE"]), "MODELSCOPE_CACHE")
    assert loc["huggingface"] == (tmp_path / "hf" / "hub", "HF_HOME")
    assert loc["pip"][0] == tmp_path / "pipc" and loc["uv"][0] == tmp_path / "uvc"
    assert loc["vllm"][0] == tmp_path / "vllmc" and loc["torch"][0] == tmp_path / "torchc"
    assert loc["inductor"][0] == tmp_path / "inductor" and loc["triton"][0] == tmp_path / "tritonc"
    env2 = {k: v for k, v in env.items() if k not in ("MODELSCOPE_CACHE", "HF_HOME")}
    env2.update(MS_CACHE_HOME=str(tmp_path / "legacy-ms"), HF_HUB_CACHE=str(tmp_path / "hubc"))
    loc2 = cache_locations(Environ(env2))
    assert loc2["modelscope"] == (tmp_path / "legacy-ms", "MS_CACHE_HOME")
    assert loc2["huggingface"] == (tmp_path / "hubc", "HF_HUB_CACHE")
    bare = {"HOME": env["HOME"], "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    loc3 = cache_locations(Environ(bare))
    assert loc3["huggingface"][0] == tmp_path / "xdg" / "huggingface" / "hub"
    assert loc3["vllm"][0] == tmp_path / "xdg" / "vllm"
    assert loc3["modelscope"][0] == Path(env["HOME"]) / ".cache" / "modelscope"  # ModelScope ignores XDG
    assert loc3["triton"][0] == Path(env["HOME"]) / ".triton" / "cache"


def test_modelscope_new_layout_model_and_its_partials_are_separate_items(env):
    root = Path(env["MODELSCOPE_CACHE"])
    model = make_modelscope_new(root)
    ms = by_name(scan_caches(Environ(env), active={}))["modelscope"]
    found = items(ms)
    partial = found["Qwen/Qwen2.5-0.5B-Instruct (partial)"]
    assert found["Qwen/Qwen2.5-0.5B-Instruct"].bytes + partial.bytes == du_s(model)
    assert partial.bytes == du_s(next(model.rglob("*.incomplete")))
    assert ms.bytes == du_s(root)
    assert found["(locks)"].kind == "lock"


def test_modelscope_legacy_layout_names_the_dotted_id_and_its_symlink(env):
    root = Path(env["MODELSCOPE_CACHE"])
    model, link, temp = make_modelscope_legacy(root)
    found = items(by_name(scan_caches(Environ(env), active={}))["modelscope"])
    legacy = found["Qwen/Qwen2.5-1.5B-Instruct"]
    assert legacy.layout == "modelscope-legacy"
    assert legacy.bytes == du_s(model)
    assert set(legacy.paths) == {str(model), str(link)}
    assert found["Qwen/Qwen2.5-7B-Instruct (partial)"].bytes == du_s(temp)


def test_huggingface_repo_counts_blobs_once_and_partials_separately(env, tmp_path):
    model = make_hf(tmp_path / "hf" / "hub")
    found = items(by_name(scan_caches(Environ(env), active={}))["huggingface"])
    assert found["openai-community/gpt2"].bytes + found["openai-community/gpt2 (partial)"].bytes == du_s(model)


def test_package_caches_list_top_folders_with_du_sizes_and_their_own_cleaner(env, tmp_path):
    for sub in ("http-v2", "wheels"):
        (tmp_path / "pipc" / sub).mkdir(parents=True)
        (tmp_path / "pipc" / sub / "x").write_bytes(os.urandom(30_000))
    reports = by_name(scan_caches(Environ(env), active={}))
    pip = reports["pip"]
    assert pip.clean_command == "pip cache purge"
    assert {i.id: i.bytes for i in pip.items} == {s: du_s(tmp_path / "pipc" / s) for s in ("http-v2", "wheels")}
    assert pip.bytes == du_s(tmp_path / "pipc")
    assert reports["uv"].exists is False and reports["uv"].clean_command == "uv cache clean"


def test_a_model_a_live_server_uses_is_marked_and_refused(env):
    model = make_modelscope_new(Path(env["MODELSCOPE_CACHE"]))
    active = {str((model / "snapshots" / "master").resolve()): "qwen-1"}
    reports = scan_caches(Environ(env), active=active)
    assert items(by_name(reports)["modelscope"])["Qwen/Qwen2.5-0.5B-Instruct"].in_use_by == "qwen-1"
    with pytest.raises(ConflictError):
        plan_clean(reports, models=["Qwen/Qwen2.5-0.5B-Instruct"], busy=lambda r: False)


def test_plan_is_data_every_path_with_its_bytes(env, tmp_path):
    root = Path(env["MODELSCOPE_CACHE"])
    make_modelscope_new(root)
    _, _, temp = make_modelscope_legacy(root)
    hf = make_hf(tmp_path / "hf" / "hub")
    plan = plan_clean(scan_caches(Environ(env), active={}), partial=True, busy=lambda r: False)
    got = {e.path: e.bytes for e in plan.entries}
    incomplete = next(root.rglob("*.incomplete"))
    hf_inc = next(hf.rglob("*.incomplete"))
    assert got == {str(incomplete): du_s(incomplete), str(temp): du_s(temp), str(hf_inc): du_s(hf_inc)}
    assert plan.total_bytes == sum(got.values())
    assert incomplete.exists()  # planning deletes nothing


def test_recent_partials_are_kept_as_possibly_downloading(env):
    model = make_modelscope_new(Path(env["MODELSCOPE_CACHE"]))
    next(model.rglob("*.incomplete")).touch()
    plan = plan_clean(scan_caches(Environ(env), active={}), partial=True, busy=lambda r: False)
    assert not plan.entries and plan.refused


def test_nothing_selected_is_a_usage_error(env):
    with pytest.raises(UsageError):
        plan_clean(scan_caches(Environ(env), active={}))


def test_cleaning_a_legacy_model_removes_directory_and_dotted_symlink(env):
    root = Path(env["MODELSCOPE_CACHE"])
    model, link, _ = make_modelscope_legacy(root)
    size = du_s(model) + os.lstat(link).st_blocks * 512  # a long symlink target takes a block on ext4
    plan = plan_clean(scan_caches(Environ(env), active={}), models=["Qwen/Qwen2.5-1.5B-Instruct"])
    result = execute_plan(plan, active={})
    assert not model.exists() and not os.path.lexists(link)
    assert result.freed_bytes == size


def test_clean_never_follows_a_symlink_out_of_the_cache(env, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(os.urandom(100_000))
    model = make_hf(tmp_path / "hf" / "hub")
    (model / "snapshots" / "escape").symlink_to(outside)
    (model / "blobs" / "escape-file").symlink_to(outside / "weights.bin")
    hf = by_name(scan_caches(Environ(env), active={}))["huggingface"]
    assert hf.bytes == du_s(tmp_path / "hf" / "hub") < du_s(tmp_path / "hf" / "hub") + 100_000
    plan = plan_clean([hf], models=["openai-community/gpt2"])
    execute_plan(plan, active={})
    assert not model.exists()
    assert (outside / "weights.bin").stat().st_size == 100_000


def test_plan_entries_outside_their_root_are_not_touched(env, tmp_path):
    from bootstrap.core.caches import CleanPlan, PlanEntry

    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * 10)
    plan = CleanPlan(entries=(PlanEntry(str(victim), 4096, "pip", "x", "entry"),), total_bytes=4096,
                     roots={"pip": str(tmp_path / "pipc")})
    result = execute_plan(plan, active={})
    assert victim.exists() and result.failed and result.freed_bytes == 0


def test_cli_clean_without_yes_and_without_a_tty_fails_fast(env, run_vboot):
    make_modelscope_new(Path(env["MODELSCOPE_CACHE"]))
    proc = run_vboot("disk", "clean", "--partial", "--json", env=env, timeout=30)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["errors"][0]["code"] == "confirmation_required"
    assert list(Path(env["MODELSCOPE_CACHE"]).rglob("*.incomplete"))


def test_cli_clean_dry_run_then_yes_frees_what_the_plan_said(env, run_vboot):
    root = Path(env["MODELSCOPE_CACHE"])
    make_modelscope_new(root)
    dry = json.loads(run_vboot("disk", "clean", "--partial", "--dry-run", "--json", env=env).stdout)["data"]
    assert dry["freed_bytes"] == 0 and len(dry["plan"]) == 1
    proc = run_vboot("disk", "clean", "--partial", "--yes", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert data["freed_bytes"] == dry["plan"][0]["bytes"] > 0
    assert not list(root.rglob("*.incomplete"))


def test_cli_caches_json_lists_every_cache_with_items(env, run_vboot):
    make_modelscope_new(Path(env["MODELSCOPE_CACHE"]))
    proc = run_vboot("disk", "caches", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    caches = {c["name"]: c for c in json.loads(proc.stdout)["data"]["caches"]}
    assert set(caches) == {"modelscope", "huggingface", "pip", "uv", "torch", "inductor", "vllm", "triton"}
    ids = {i["id"] for i in caches["modelscope"]["items"]}
    assert "Qwen/Qwen2.5-0.5B-Instruct" in ids
    assert set(caches["modelscope"]["items"][0]) >= {"id", "path", "bytes", "last_used"}


def test_each_cache_root_is_scanned_once_and_the_plan_measures_nothing_again(env, tmp_path, monkeypatch):
    from bootstrap.core import caches

    ms_root = Path(env["MODELSCOPE_CACHE"])
    make_modelscope_new(ms_root)
    make_modelscope_legacy(ms_root)
    make_hf(tmp_path / "hf" / "hub")
    for sub in ("http-v2", "wheels"):
        (tmp_path / "pipc" / sub).mkdir(parents=True)
        (tmp_path / "pipc" / sub / "x").write_bytes(os.urandom(30_000))
    scanned: list[str] = []
    real_scan = caches.scan
    monkeypatch.setattr(caches, "scan", lambda root, *a, **k: scanned.append(str(root)) or real_scan(root, *a, **k))
    reports = scan_caches(Environ(env), active={})
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


def test_each_model_directory_is_listed_once_for_its_partials_and_last_use(env, tmp_path, monkeypatch):
    from bootstrap.core import caches

    make_modelscope_new(Path(env["MODELSCOPE_CACHE"]))
    make_modelscope_legacy(Path(env["MODELSCOPE_CACHE"]))
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
    scan_caches(Environ(env), active={}, names=("modelscope", "huggingface"))
    assert listed and sorted({p for p in listed if listed.count(p) > 1}) == []
