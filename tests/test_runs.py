"""Run records: how clients reach a server, and finding a run by name."""

from __future__ import annotations

import json
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
