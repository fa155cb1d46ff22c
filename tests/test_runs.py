"""Run records: how clients reach a server, and finding a run by name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bootstrap.core.environ import Environ
from bootstrap.core.paths import runs_dir
from bootstrap.core.runs import RunRecord, client_host, find_run, run_name_ok, save_run


@pytest.mark.parametrize(("bound", "reached"), [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("", "127.0.0.1"),
    ("10.0.0.5", "10.0.0.5"), ("localhost", "localhost"), ("::1", "[::1]"), ("fe80::1", "[fe80::1]"),
    ("[::1]", "[::1]"),
])
def test_client_host_maps_wildcards_to_loopback_and_brackets_ipv6(bound, reached):
    assert client_host(bound) == reached


@pytest.mark.parametrize("bound", ["::1", "fe80::1", "0.0.0.0", "10.0.0.5"])
def test_a_scrape_target_splits_into_the_host_and_the_port(bound):
    # Prometheus splits HOST:PORT like a URL's authority; an unbracketed IPv6 address has "too many colons".
    parts = urlsplit(f"//{client_host(bound)}:8000")
    assert parts.port == 8000 and parts.hostname == ("127.0.0.1" if bound == "0.0.0.0" else bound)


def test_a_run_url_uses_the_client_host():
    rec = RunRecord(name="a", profile="tiny", run_dir="/r", pid=1, pid_create_time=1.0, pgid=1, host="::1",
                    port=8001, served_model_name="m", model_id="m", model_path="/m", started_at=0.0)
    assert rec.url == "http://[::1]:8001"


def _saved(run_dir: Path, name: str, pid: int = 2**22 + 12345) -> RunRecord:
    """A record in ``run_dir`` whose PID does not exist (a server that has stopped)."""
    run_dir.mkdir(parents=True)
    rec = RunRecord(name=name, profile="tiny", run_dir=str(run_dir), pid=pid, pid_create_time=1.0, pgid=pid,
                    host="127.0.0.1", port=8001, served_model_name="m", model_id="m", model_path="/m", started_at=0.0)
    save_run(rec)
    (run_dir / "vllm.log").write_text("a line of the log\n")
    return rec


@pytest.mark.parametrize("name", ["tiny", "qwen-7b.v2", "a_b", "A" * 64])
def test_run_names_of_letters_digits_dots_dashes_underscores_are_accepted(name):
    assert run_name_ok(name)


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".hidden", "-x", "a b", "tiny\n", "A" * 65])
def test_run_names_that_are_not_one_plain_directory_are_refused(name):
    assert not run_name_ok(name)


def test_find_run_loads_the_run_of_that_name_alive_or_not(isolated_env):
    env = Environ(isolated_env)
    saved = _saved(runs_dir(env) / "demo", "demo")
    assert find_run(env, "demo") == saved
    assert find_run(env, "other") is None


def test_find_run_never_leaves_the_runs_directory(isolated_env):
    env = Environ(isolated_env)
    _saved(runs_dir(env).parent / "escape", "escape")
    assert find_run(env, "../escape") is None


def test_logs_refuses_a_name_outside_the_runs_directory(run_vboot, isolated_env):
    _saved(runs_dir(Environ(isolated_env)).parent / "escape", "escape")
    result = run_vboot("logs", "../escape")
    assert result.returncode == 4 and "no server named '../escape'" in result.stderr
    assert "a line of the log" not in result.stdout


def test_logs_of_a_stopped_run_shows_its_log(run_vboot, isolated_env):
    _saved(runs_dir(Environ(isolated_env)) / "old", "old")
    result = run_vboot("logs", "old")
    assert result.returncode == 0 and result.stdout == "a line of the log\n"


def test_stop_of_a_stopped_run_is_not_found(run_vboot, isolated_env):
    _saved(runs_dir(Environ(isolated_env)) / "old", "old")
    result = run_vboot("stop", "old", "--json")
    doc = json.loads(result.stdout)
    assert result.returncode == 4 and doc["errors"][0]["message"] == "no running server named 'old' (none running)"


# --- malformed records: skipped with a problem naming the file, never fatal, never blocking ---------------

def _write(env: dict, name: str, payload) -> Path:
    run_dir = runs_dir(Environ(env)) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def _good(env: dict, name: str = "demo") -> dict:
    rec = _saved(runs_dir(Environ(env)) / name, name)
    return json.loads((Path(rec.run_dir) / "run.json").read_text())


def _load_within(run_dir: Path, seconds: float = 5.0):
    """load_run in a thread: a read that blocks (a FIFO) fails the test instead of hanging it."""
    import threading

    from bootstrap.core.runs import load_run

    problems: list = []
    out: list = []
    t = threading.Thread(target=lambda: out.append(load_run(run_dir, problems)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"reading {run_dir}/run.json blocked"
    return out[0], problems


def test_a_valid_record_round_trips_with_its_types(isolated_env):
    raw = _good(isolated_env)
    rec, problems = _load_within(runs_dir(Environ(isolated_env)) / "demo")
    assert problems == [] and rec.pid == raw["pid"] and isinstance(rec.pid_create_time, float)
    assert rec.argv == ()


def test_unknown_fields_of_a_newer_vboot_are_ignored(isolated_env):
    raw = _good(isolated_env) | {"cgroup": "/vboot.slice", "sleep_level": 2, "route": {"port": 1}}
    _write(isolated_env, "demo", raw)
    rec, problems = _load_within(runs_dir(Environ(isolated_env)) / "demo")
    assert rec is not None and problems == []


@pytest.mark.parametrize("change, words", [
    ({"pid": "4242"}, "field 'pid' must be an integer"),
    ({"pid": True}, "field 'pid' must be an integer"),
    ({"pid": 4242.0}, "field 'pid' must be an integer"),
    ({"pid": 1}, "field 'pid' must be a process ID"),
    ({"pid": -7}, "field 'pid' must be a process ID"),
    ({"pid": 2**40}, "field 'pid' must be a process ID"),
    ({"pgid": 0}, "field 'pgid' must be a process ID"),
    ({"pid_create_time": "yesterday"}, "field 'pid_create_time' must be a number"),
    ({"pid_create_time": 0}, "field 'pid_create_time' must be the create time of PID"),
    ({"pid_create_time": -5.0}, "field 'pid_create_time' must not be negative"),
    ({"started_at": None}, "field 'started_at' must be a number"),
    ({"supervisor_pid": 4343}, "field 'supervisor_create_time' must be the create time of PID 4343"),
    ({"supervisor_pid": 1, "supervisor_create_time": 5.0}, "field 'supervisor_pid' must be 0 or a process ID"),
    ({"prometheus_pid": 4444, "prometheus_create_time": 0.0}, "'prometheus_create_time' must be the create time"),
    ({"port": 0}, "field 'port' must be 1-65535"),
    ({"port": 70000}, "field 'port' must be 1-65535"),
    ({"prometheus_port": -1}, "field 'prometheus_port' must be 0-65535"),
    ({"detached": "no"}, "field 'detached' must be true or false"),
    ({"argv": "vllm serve"}, "field 'argv' must be a list of strings"),
    ({"argv": ["vllm", 3]}, "field 'argv' must be a list of strings"),
    ({"host": ["127.0.0.1"]}, "field 'host' must be a string"),
    ({"name": "other"}, "it names the run 'other' but lives in 'demo'"),
    ({"run_dir": "/etc"}, "its run_dir '/etc' is not the directory it lives in"),
])
def test_a_record_with_a_wrong_field_is_skipped_naming_the_field(isolated_env, change, words):
    path = _write(isolated_env, "demo", _good(isolated_env) | change)
    rec, [problem] = _load_within(path.parent)
    assert rec is None and problem.path == str(path) and words in problem.reason, problem.reason


def test_non_finite_numbers_are_refused(isolated_env):
    text = json.dumps(_good(isolated_env)).replace('"started_at": 0.0', '"started_at": NaN')
    path = _write(isolated_env, "demo", text)
    rec, [problem] = _load_within(path.parent)
    assert rec is None and "'started_at' must be a number" in problem.reason


@pytest.mark.parametrize("payload, words", [
    ('{"name": "demo", "pid": ', "not valid JSON"), ("[1, 2]", "not a JSON object"), ("null", "not a JSON object"),
    ("", "not valid JSON"), ('{"name": "demo"}', "field 'profile' is missing"),
])
def test_a_record_that_is_not_a_record_is_skipped(isolated_env, payload, words):
    path = _write(isolated_env, "demo", payload)
    rec, [problem] = _load_within(path.parent)
    assert rec is None and words in problem.reason


def test_binary_garbage_is_skipped(isolated_env):
    path = _write(isolated_env, "demo", "")
    path.write_bytes(b"\xff\xfe\x00garbage")
    rec, [problem] = _load_within(path.parent)
    assert rec is None and "not UTF-8" in problem.reason


def test_a_fifo_in_place_of_run_json_is_skipped_without_blocking(isolated_env):
    run_dir = runs_dir(Environ(isolated_env)) / "demo"
    run_dir.mkdir(parents=True)
    os.mkfifo(run_dir / "run.json")
    rec, [problem] = _load_within(run_dir)
    assert rec is None and problem.reason == "it is a FIFO, not a file"


def test_a_directory_in_place_of_run_json_is_skipped(isolated_env):
    run_dir = runs_dir(Environ(isolated_env)) / "demo"
    (run_dir / "run.json").mkdir(parents=True)
    rec, [problem] = _load_within(run_dir)
    assert rec is None and problem.reason == "it is a directory, not a file"


def test_a_symlink_in_place_of_run_json_is_not_followed(isolated_env):
    """A link to /dev/zero would be read forever; to another record, it would make that one speak for this."""
    run_dir = runs_dir(Environ(isolated_env)) / "demo"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").symlink_to("/dev/zero")
    rec, [problem] = _load_within(run_dir)
    assert rec is None and problem.reason == "it is a symbolic link, not a file"


def test_a_huge_run_json_is_not_read_whole(isolated_env):
    path = _write(isolated_env, "demo", "")
    with open(path, "wb") as fh:
        fh.truncate(64 * 2**20)  # sparse: 64 MiB of NULs
    rec, [problem] = _load_within(path.parent)
    assert rec is None and "larger than" in problem.reason


def test_listing_skips_a_fifo_and_a_stray_file_in_the_runs_directory_and_keeps_the_rest(isolated_env):
    from bootstrap.core.runs import iter_runs

    env = Environ(isolated_env)
    _saved(runs_dir(env) / "good", "good")
    os.mkfifo(runs_dir(env) / "pipe")
    (runs_dir(env) / "notes.txt").write_text("x")
    _write(isolated_env, "broken", "{")
    problems: list = []
    assert [r.name for r in iter_runs(env, problems=problems)] == ["good"]
    assert sorted(Path(p.path).name for p in problems) == ["notes.txt", "pipe", "run.json"]
    assert any(p.reason == "it is a FIFO, not a run directory" for p in problems)


def test_find_run_of_a_name_that_is_a_fifo_is_a_problem_not_a_hang(isolated_env):
    env = Environ(isolated_env)
    runs_dir(env).mkdir(parents=True)
    os.mkfifo(runs_dir(env) / "demo")
    problems: list = []
    assert find_run(env, "demo", problems=problems) is None
    assert [p.reason for p in problems] == ["it is a FIFO, not a run directory"]


def test_every_field_of_a_run_record_has_a_validator():
    """A field added to RunRecord needs a type load_run can check (str, int, float, bool, a list of strings, an
    object, or any of them | None): otherwise loading raises for every record."""
    from dataclasses import fields

    from bootstrap.core.runs import _TYPE_WORDS

    unchecked = [(f.name, str(f.type)) for f in fields(RunRecord) if str(f.type).removesuffix(" | None")
                 not in _TYPE_WORDS]
    assert unchecked == []
