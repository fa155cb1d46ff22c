"""Hostile and broken values in profiles and on the command line, refused where they are read (issue 17, items 14,
16 and 17): model ids and revisions that would build paths outside the cache, NUL characters that no argv or
environment can hold, [needs] sizes that are not sizes. Every refusal names the file, the line and the key; one
broken user profile never takes `vboot profiles` down with it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bootstrap.core.errors import ProfileError, UsageError
from bootstrap.core.profiles import parse_profile
from bootstrap.core.repoids import check_model_id, check_revision, model_id_problem, revision_problem
from bootstrap.core.units import MAX_SIZE_BYTES, parse_size


def _profile(model: str = 'id = "Qwen/Qwen2.5-0.5B-Instruct"', rest: str = "") -> str:
    return f'description = "d"\n[model]\n{model}\n{rest}'


def refusal(text: str) -> str:
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "bad", "/cfg/bad.toml")
    message = err.value.message
    assert "\n" not in message and "\0" not in message
    return message


# --- item 14: model ids and revisions as the hubs define them ----------------------------------------------

@pytest.mark.parametrize("revision", [
    "../..", "../../../../outside", "a/../../b", "/etc", "/abs/path", "..", ".hidden", "x/.y", "a//b", "a/", "/",
    "-rf", "--revision", "x\ny", "x\ry", "tab\there", "sp ace", "a:b", "a~1", "a^", "a?", "a*", "a[1]", "a\\b",
    "@", "a@{1}", "end.", "x.lock", "a/b.lock/c", "\x00", "\x7f", "", "x" * 256,
])
def test_revisions_that_are_no_git_name_are_refused(revision):
    assert revision_problem(revision)
    with pytest.raises(UsageError):
        check_revision(revision)


@pytest.mark.parametrize("revision", ["master", "main", "v1.0.0", "release/v1.2", "feature_x-2",
                                      "0123456789abcdef0123456789abcdef01234567", "v1.0-rc.1", "日本"])
def test_branch_tag_and_commit_names_are_revisions(revision):
    assert revision_problem(revision) is None


@pytest.mark.parametrize("model_id", [
    "noslash", "a/b/c", "/b", "a/", "../x", "a/..", "./x", "a/.", ".a/b", "-a/b", "a/-b", "a b/c", "a/b\nc",
    "a/b\u2028c", "Qwen/Qwen2.5\x00", "ünï/code", "a/" + "x" * 129, "a\\b/c", "a/b:c", "a/b%2f..",
])
def test_modelscope_ids_outside_owner_slash_name_are_refused(model_id):
    assert model_id_problem(model_id, "modelscope")
    with pytest.raises(UsageError):
        check_model_id(model_id)


@pytest.mark.parametrize("model_id", ["Qwen/Qwen2.5-1.5B-Instruct", "iic/nlp_bert_base", "LLM-Research/Meta-Llama-3-8B",
                                      "AI-ModelScope/gpt2", "_x/y.z", "a1/b"])
def test_modelscope_ids_in_use_are_accepted(model_id):
    assert model_id_problem(model_id, "modelscope") is None


@pytest.mark.parametrize("model_id,ok", [
    ("gpt2", True), ("Qwen/Qwen2.5-7B-Instruct", True), ("meta-llama/Llama-3.1-8B", True),
    ("a/b/c", False), ("a--b/c", False), ("a/b..c", False), ("a/b.git", False), ("-a/b", False), ("a/b-", False),
    ("a/" + "x" * 97, False), ("../x", False), ("a/b\n", False),
])
def test_hugging_face_ids_follow_huggingface_hubs_validate_repo_id(model_id, ok):
    assert (model_id_problem(model_id, "huggingface") is None) is ok


def test_local_models_have_a_label_for_an_id_which_is_not_checked_as_a_hub_id():
    assert model_id_problem("anything at all", "local") is None


@pytest.mark.parametrize("model,needle", [
    ('id = "../../etc"', "'model.id'"),
    ('id = "Qwen/x"\nrevision = "../../../../outside"', "'model.revision'"),
    ('id = "Qwen/x"\nrevision = "-x"', "'model.revision'"),
    ('id = "a/b/c"\nsource = "huggingface"', "'model.id'"),
    ('id = "Qwen/x"\nserved_name = "--api-key"', "'model.served_name'"),
])
def test_a_profile_with_a_hostile_id_or_revision_is_refused_with_file_line_and_key(model, needle):
    message = refusal(_profile(model))
    assert message.startswith("/cfg/bad.toml:") and needle in message


def test_pull_refuses_a_revision_before_anything_is_built_from_it(tmp_path):
    """The core entry point every pull goes through (`vboot pull`, `vboot serve`): nothing is created, no hub is
    asked (the fake hub fails the test if it is)."""
    from bootstrap.core.environ import Environ
    from bootstrap.core.pull import ensure_model

    class NoHub:
        def __getattr__(self, name):
            raise AssertionError(f"the hub was asked ({name}) for a revision that should have been refused")

    env = Environ({"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")})
    for revision in ("../../../../outside", "/abs", "a/../../b", "-x"):
        with pytest.raises(UsageError, match="revision"):
            ensure_model("Qwen/x", revision, tmp_path / "cache", env, hub=NoHub())
    with pytest.raises(UsageError, match="ModelScope model id"):
        ensure_model("../x", "master", tmp_path / "cache", env, hub=NoHub())
    assert list(tmp_path.iterdir()) == []


def test_cli_pull_revision_with_path_segments_is_a_usage_error(run_vboot, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    proc = run_vboot("pull", "Qwen/Qwen2.5-0.5B-Instruct", "--revision", "../../../../x", "--json",
                     env={"MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["errors"][0]["code"] == "usage" and "revision" in doc["errors"][0]["message"]
    assert sorted(p for p in tmp_path.rglob("*")) == before


# --- item 16: a NUL character anywhere in a profile ---------------------------------------------------------

@pytest.mark.parametrize("text,key", [
    (_profile('id = "Qwen/x\\u0000y"'), "'model.id'"),
    (_profile(rest='[env]\nHF_TOKEN = "abc\\u0000def"\n'), "'env.HF_TOKEN'"),
    (_profile(rest='[serve]\nargs = ["--max-num-seqs", "8\\u0000"]\n'), "'serve.args[1]'"),
    (_profile(rest='[serve]\nhost = "127.0.0.1\\u0000"\n'), "'serve.host'"),
    ('cache_dir = "/a\\u0000"\n' + _profile(), "'cache_dir'"),
    ('description = "a\\u0000"\n[model]\nid = "Qwen/x"\n', "'description'"),
    (_profile('id = "m/x"\nsource = "local"\npath = "/models/\\u0000x"'), "'model.path'"),
    (_profile(rest='[env]\n"A\\u0000B" = "x"\n'), "'env.A\\x00B'"),
])
def test_a_nul_character_is_refused_when_the_profile_is_read_naming_file_and_key(text, key):
    message = refusal(text)
    assert key in message and "NUL" in message and message.startswith("/cfg/bad.toml")


def test_the_nul_refusal_points_at_the_line(tmp_path):
    message = refusal('description = "ok"\n[model]\nid = "Qwen/x"\n[env]\nA = "1"\nB = "2\\u0000"\n')
    assert message.startswith("/cfg/bad.toml:6:")


def test_serve_with_a_nul_in_the_profile_fails_before_writing_a_run_directory(run_vboot, isolated_env):
    profiles = Path(isolated_env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "nul.toml").write_text(_profile(rest='[env]\nX = "a\\u0000b"\n'), encoding="utf-8")
    proc = run_vboot("serve", "nul", "--json")
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout)["errors"][0]
    assert err["code"] == "profile_invalid" and "'env.X'" in err["message"] and "nul.toml:5" in err["message"]
    state = Path(isolated_env["XDG_STATE_HOME"])
    assert not (state / "vboot" / "runs").exists() or not any((state / "vboot" / "runs").iterdir())


def test_other_control_characters_stay_legal_and_are_left_to_the_emitters():
    p = parse_profile(_profile(rest='[env]\nX = "a\\nb\\u2028c\\u001bd"\n'), "ok", "/cfg/ok.toml")
    assert p.env["X"] == "a\nb\u2028c\x1bd"


def test_error_messages_escape_line_breaks_in_hostile_keys():
    message = refusal(_profile(rest='[env]\n"A\\nB" = "x"\n'))
    assert "A\\nB" in message


# --- item 17: [needs] values are sizes ----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "[1, 2]", "-1", "-0.5", "true", "{a = 1}", '"2PiB"',
                                   '"9' + "9" * 400 + '"', '"1e400"', '"-3GB"', '"3 parsecs"', "1e300",
                                   "2000000000000000000", '"1.5"', "1979-05-27"])
def test_a_needs_value_that_is_not_a_size_is_a_profile_error(value):
    if value == '"1.5"':  # a plain number of bytes, even fractional, is a size
        assert parse_profile(_profile(rest=f"[needs]\nweights = {value}\n"), "ok").needs.weights_bytes == 1
        return
    message = refusal(_profile(rest=f"[needs]\nweights = {value}\n"))
    assert message.startswith("/cfg/bad.toml:5:") and "'needs.weights'" in message


@pytest.mark.parametrize("value", [float("inf"), float("nan"), [1], {"a": 1}, None, True, -1, "-1", 2**80,
                                   "1" * 5000, MAX_SIZE_BYTES + 1, "1.0000000001PiB", object()])
def test_parse_size_raises_only_value_error(value):
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize("text,expected", [("3.1 GB", 3_100_000_000), ("16GiB", 16 * 1024**3), ("1PiB", MAX_SIZE_BYTES),
                                           ("15.3GB", 15_300_000_000), (0, 0), (1.9, 1), ("0.1KB", 100)])
def test_sizes_are_exact(text, expected):
    assert parse_size(text) == expected


BROKEN = {
    "inf": "[needs]\nweights = inf\n",
    "list": "[needs]\nmin_free_vram = [1]\n",
    "huge": '[needs]\nmin_free_disk = "5PB"\n',
    "nul": '[env]\nX = "\\u0000"\n',
    "escape": '[model]\nid = "Qwen/x"\nrevision = "../../.."\n',
}


def _write_user_profiles(isolated_env: dict) -> Path:
    d = Path(isolated_env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    d.mkdir(parents=True)
    for name, rest in BROKEN.items():
        text = f'description = "{name}"\n{rest}' if name == "escape" else _profile(rest=rest)
        (d / f"{name}.toml").write_text(text, encoding="utf-8")
    (d / "fine.toml").write_text(_profile(rest="[serve]\nport = 8123\n"), encoding="utf-8")
    return d


def test_profiles_lists_broken_user_profiles_with_their_error_and_every_other_profile(run_vboot, isolated_env):
    _write_user_profiles(isolated_env)
    proc = run_vboot("profiles", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {r["name"]: r for r in doc["data"]["profiles"]}
    for name in BROKEN:
        assert rows[name]["valid"] is False and rows[name]["error"], rows[name]
        assert f"{name}.toml:" in rows[name]["error"]
    assert rows["fine"]["valid"] and rows["fine"]["port"] == 8123
    assert rows["qwen"]["valid"] and rows["tiny"]["valid"]  # the built-ins still list
    assert doc["status"] == "warn" and len(doc["errors"]) == len(BROKEN)
    assert {e["code"] for e in doc["errors"]} == {"profile_invalid"}


def test_profiles_human_listing_shows_the_broken_profiles_and_the_rest(run_vboot, isolated_env):
    _write_user_profiles(isolated_env)
    proc = run_vboot("profiles", env={"COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in [*BROKEN, "fine", "qwen", "tiny"]:
        assert name in proc.stdout
    assert proc.stdout.count("invalid") == len(BROKEN)


@pytest.mark.parametrize("args", [("serve", "inf"), ("env", "inf"), ("export", "k8s", "inf"), ("pull", "inf"),
                                  ("doctor", "--profile", "inf"), ("profiles", "inf")])
def test_every_command_that_reads_a_broken_profile_fails_with_one_line_and_exit_2(run_vboot, isolated_env, tmp_path,
                                                                                    args):
    _write_user_profiles(isolated_env)
    proc = run_vboot(*args, "--json", env={"MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = json.loads(proc.stdout)["errors"][0]
    assert err["code"] == "profile_invalid" and "'needs.weights'" in err["message"]
    assert "Traceback" not in proc.stderr


def test_a_fifo_named_like_a_profile_does_not_hang_the_listing(run_vboot, isolated_env):
    d = _write_user_profiles(isolated_env)
    os.mkfifo(d / "pipe.toml")
    proc = run_vboot("profiles", "--json", timeout=30)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["data"]["profiles"]}
    assert rows["pipe"]["valid"] is False and "not a regular file" in rows["pipe"]["error"]


@pytest.mark.e2e
def test_a_hub_that_serves_a_traversing_revision_gets_nothing_written_outside_the_cache(run_vboot, tmp_path):
    """The real client against the loopback hub, which *does* serve the revision `../../../../outside`: without the
    check the snapshot lands at ms-cache/models/vboot--tiny/snapshots/../../../../outside, i.e. beside the cache."""
    from tests.support.e2e import REPO, client_env
    from tests.support.hub_server import HubServer

    revision = "../../../../outside"
    with HubServer() as hub:
        hub.add_repo("vboot/tiny", REPO / "bootstrap" / "assets" / "tiny-qwen2", revision=revision)
        before = sorted(tmp_path.rglob("*"))
        proc = run_vboot("pull", "vboot/tiny", "--revision", revision, "--json", env=client_env(hub.url, tmp_path))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "revision" in json.loads(proc.stdout)["errors"][0]["message"]
        assert hub.listing_requests() == [] and hub.file_requests() == []
    assert not (tmp_path / "outside").exists()
    assert sorted(tmp_path.rglob("*")) == before
