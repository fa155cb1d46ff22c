"""`vboot top`: target resolution, the JSON contract, rendering, and the real binary against a server that
replays /metrics texts recorded from vLLM 0.32 (no vLLM needed; tests/test_top_e2e.py uses the real one)."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from bootstrap.cli.top import frame_data, render, resolve_target, sparkline
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, UsageError
from bootstrap.core.metrics import TopSession, parse_exposition
from bootstrap.core.paths import runs_dir
from bootstrap.core.runs import RunRecord, save_run

DATA = Path(__file__).parent / "data"


def text(name: str) -> str:
    return (DATA / f"vllm-0.32-{name}.metrics.txt").read_text()


class ReplayServer:
    """A real HTTP server on 127.0.0.1 whose /metrics answers the given texts in turn (the last repeats)."""

    def __init__(self, texts: list[str]):
        self.texts = list(texts)
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # http.server's name
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = outer.texts[min(outer.hits, len(outer.texts) - 1)].encode()
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _record(env: dict, name: str, port: int, pid: int | None = None) -> RunRecord:
    pid = os.getpid() if pid is None else pid
    try:
        ctime = psutil.Process(pid).create_time()
    except psutil.Error:
        ctime = 1.0
    run_dir = runs_dir(Environ(env)) / name
    run_dir.mkdir(parents=True)
    rec = RunRecord(name=name, profile="tiny", run_dir=str(run_dir), pid=pid, pid_create_time=ctime, pgid=pid,
                    host="0.0.0.0", port=port, served_model_name="qwen-tiny", model_id="tiny", model_path="/m",
                    started_at=time.time())
    save_run(rec)
    return rec


# ---------------------------------------------------------------------------------------------- targets

def test_a_url_is_used_as_given(isolated_env):
    assert resolve_target("http://10.0.0.5:8000/", Environ(isolated_env)) == ("http://10.0.0.5:8000",
                                                                              "http://10.0.0.5:8000")


def test_no_argument_and_no_server_names_the_next_step(isolated_env):
    with pytest.raises(NotFoundError, match="no vboot server is running") as err:
        resolve_target(None, Environ(isolated_env))
    assert "vboot serve" in err.value.hint


def test_no_argument_picks_the_only_live_run(isolated_env):
    _record(isolated_env, "demo", 8123)
    assert resolve_target(None, Environ(isolated_env)) == ("demo", "http://127.0.0.1:8123")


def test_no_argument_with_two_live_runs_lists_them(isolated_env):
    _record(isolated_env, "a", 8001)
    _record(isolated_env, "b", 8002)
    with pytest.raises(UsageError, match=r"2 servers are running: a \(http://127.0.0.1:8001\), b"):
        resolve_target(None, Environ(isolated_env))


def test_a_run_name_resolves_to_its_url(isolated_env):
    _record(isolated_env, "a", 8001)
    _record(isolated_env, "b", 8002)
    assert resolve_target("b", Environ(isolated_env)) == ("b", "http://127.0.0.1:8002")


def test_a_stopped_run_is_not_found(isolated_env):
    _record(isolated_env, "old", 8001, pid=2**22 + 12345)  # no such process
    with pytest.raises(NotFoundError, match="'old' is not running"):
        resolve_target("old", Environ(isolated_env))


def test_an_unknown_name_lists_the_running_ones(isolated_env):
    _record(isolated_env, "a", 8001)
    with pytest.raises(NotFoundError, match=r"no running server named 'zzz' \(running: a\)"):
        resolve_target("zzz", Environ(isolated_env))


# ---------------------------------------------------------------------------------------------- data and view

def _frame(*names: str):
    snaps = iter([parse_exposition(text(n), float(i)) for i, n in enumerate(names)])
    session = TopSession(lambda: next(snaps), "http://h:1")
    frame = None
    for _ in names:
        frame = session.poll()
    return frame


def test_json_data_has_the_documented_fields_in_raw_units():
    data = json.loads(json.dumps(frame_data(_frame("load-before", "load-after"), "demo", [], "no NVML")))
    for key in ("requests_running", "requests_waiting", "kv_cache_usage", "prompt_tokens_per_s",
                "generation_tokens_per_s", "gpus"):
        assert key in data
    for key in ("ttft_s", "itl_s", "e2e_s"):
        assert set(data[key]) >= {"p50", "p95", "p99"}
    assert data["generation_tokens_per_s"] == pytest.approx(2267 - 8)
    assert data["ttft_s"]["p95"] == pytest.approx(0.0528)
    assert data["gpus"] == [] and data["up"] is True and data["model_name"] == "qwen-tiny"


def test_json_has_queue_time_beside_ttft_from_the_engines_histogram():
    from bootstrap.core.metrics import QUEUE_TIME, Percentiles, window_histogram

    before, after = (parse_exposition(text(n), float(i)) for i, n in enumerate(("load-before", "load-after")))
    data = json.loads(json.dumps(frame_data(_frame("load-before", "load-after"), "demo", [], None)))
    expected = Percentiles.of(window_histogram(before, after, QUEUE_TIME))
    assert expected.count > 0 and expected.p50 is not None
    assert data["queue_s"] == {"p50": expected.p50, "p95": expected.p95, "p99": expected.p99,
                               "count": expected.count, "mean": expected.mean}
    assert data["queue_s"]["count"] == data["ttft_s"]["count"]
    # Queue time is part of time to first token. Compare means (exact, from _sum/_count): vLLM's queue-time
    # buckets start at 0.3 s, so its percentiles here are interpolations inside that first bucket.
    assert 0 < data["queue_s"]["mean"] <= data["ttft_s"]["mean"]


def test_json_percentiles_are_null_when_nothing_finished():
    data = frame_data(_frame("idle", "idle"), "demo", [], None)
    assert data["ttft_s"]["p50"] is None and data["e2e_s"]["p99"] is None


def test_json_of_a_down_server_has_nulls_and_up_false():
    from bootstrap.core.errors import ScrapeError

    def down():
        raise ScrapeError("connection refused")

    data = frame_data(TopSession(down, "http://h:1").poll(), "demo", [], None)
    assert data["up"] is False and data["error"] == "connection refused"
    assert data["requests_running"] is None and data["ttft_s"]["p99"] is None


def test_sparkline_scales_to_the_maximum():
    assert sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([]) == ""
    assert len(sparkline(range(100), width=10)) == 10


def test_render_shows_engine_latency_and_gpus():
    from rich.console import Console

    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * 2**30,
             "memory_used_bytes": 16 * 2**30, "memory_free_bytes": 64 * 2**30, "utilization_gpu_pct": 87,
             "temperature_c": 61, "power_w": 412.5, "error": None}]
    con = Console(width=100, record=True, color_system=None)
    con.print(render(_frame("load-before", "load-during"), "demo", gpus, None, 1.0))
    screen = con.export_text()
    assert "UP" in screen and "qwen-tiny" in screen
    assert "time to first token" in screen and "inter-token" in screen and "end-to-end" in screen
    assert "of which queued" in screen and "latency inside the engine" in screen
    assert "clients also see tokenisation, HTTP" in screen
    assert "NVIDIA H100 80GB HBM3" in screen and "87 %" in screen and "61 °C" in screen and "412 W" in screen
    assert "16.0 GiB / 80.0 GiB" in screen


def test_render_of_a_down_server_says_down():
    from rich.console import Console

    from bootstrap.core.errors import ScrapeError

    def down():
        raise ScrapeError("connection refused")

    con = Console(width=100, record=True, color_system=None)
    con.print(render(TopSession(down, "http://h:1").poll(), "demo", [], "no NVML", 1.0))
    assert "DOWN connection refused" in con.export_text()


# ---------------------------------------------------------------------------------------------- the binary

def test_once_json_against_a_replayed_server_reports_throughput(run_vboot):
    with ReplayServer([text("load-before"), text("load-during")]) as server:
        result = run_vboot("top", server.url, "--once", "--json", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["command"] == "top" and doc["status"] == "ok"
    data = doc["data"]
    assert data["requests_running"] == 12
    assert data["generation_tokens_per_s"] > 0
    assert data["ttft_s"]["p50"] is not None
    assert data["gpus"] == []


def test_once_json_against_a_closed_port_is_one_error_document(run_vboot):
    from tests.support.e2e import free_port

    result = run_vboot("top", f"http://127.0.0.1:{free_port()}", "--once", "--json")
    assert result.returncode == 3
    doc = json.loads(result.stdout)
    assert doc["status"] == "error" and doc["data"]["up"] is False
    assert doc["errors"][0]["code"] == "server_down"


def test_once_human_view_prints_one_screen(run_vboot):
    with ReplayServer([text("load-before"), text("load-after")]) as server:
        result = run_vboot("top", server.url, "--once", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert "time to first token" in result.stdout and "qwen-tiny" in result.stdout


def test_json_without_once_is_a_usage_error(run_vboot):
    result = run_vboot("top", "http://127.0.0.1:9", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["errors"][0]["code"] == "usage"


def test_no_server_running_is_exit_4_with_a_hint(run_vboot):
    result = run_vboot("top")
    assert result.returncode == 4
    assert "vboot serve tiny" in result.stderr


# ---------------------------------------------------------------------------------------------- the GPU panel

def _reader(fake):
    from bootstrap.cli.top import default_gpu_reader
    from bootstrap.probes import nvml

    calls = []

    def snapshot():
        calls.append(1)
        return nvml.snapshot(fake, with_processes=False)

    return default_gpu_reader(snapshot), calls


def test_gpu_reader_gives_one_row_per_gpu_in_raw_units():
    from tests.support import fake_nvml

    read, _ = _reader(fake_nvml.one_h100(used=16 * fake_nvml.GiB))
    gpus, error = read()
    assert error is None and len(gpus) == 1
    g = gpus[0]
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["memory_used_bytes"] == 16 * fake_nvml.GiB
    assert g["utilization_gpu_pct"] == 37 and g["error"] is None


def test_gpu_reader_reports_a_lost_gpu_while_the_other_reports():
    from tests.support import fake_nvml

    gpus, error = _reader(fake_nvml.two_gpus_one_lost())[0]()
    assert error is None and gpus[0]["error"] is None and gpus[1]["error"]


def test_the_gpu_panel_initialises_nvml_once_for_the_whole_session(monkeypatch):
    """nvitop's _lazy_init: NVML is initialised by the first refresh and kept, not initialised every second."""
    from bootstrap.cli.top import default_gpu_reader
    from tests.support import fake_nvml

    fake = fake_nvml.one_h100()
    monkeypatch.setattr("bootstrap.probes.nvml._load_default", lambda: fake)
    panel = default_gpu_reader()
    for _ in range(5):
        gpus, error = panel()
        assert error is None and len(gpus) == 1
    assert (fake.inits, fake.shutdowns) == (1, 0)
    panel.close()
    assert fake.shutdowns == 1


def test_gpu_reader_without_a_driver_gives_no_gpus_and_stops_asking():
    from tests.support import fake_nvml

    read, calls = _reader(fake_nvml.driver_not_loaded())
    first, second = read(), read()
    assert first[0] == [] and first[1] and second == first
    assert len(calls) == 1
