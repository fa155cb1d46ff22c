"""vboot's one HTTP client (bootstrap.probes.http) against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bootstrap.core.errors import ScrapeError
from bootstrap.probes import http
from tests.support.e2e import free_port

EXPOSITION = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 3.0\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.connections.add(self.client_address)  # type: ignore[attr-defined]
        if self.path == "/health":
            self._send(200, b"")
        elif self.path == "/metrics":
            self._send(200, EXPOSITION.encode(), "text/plain")
        else:
            self._send(404, b"no")

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        request = json.loads(self.rfile.read(length))
        self.server.seen.append((self.path, self.headers.get("Authorization"), request))  # type: ignore[attr-defined]
        if request.get("model") != "m":
            self._send(404, b'{"error": "no such model"}')
        elif self.path == "/v1/completions":
            self._send(200, json.dumps({"usage": {"completion_tokens": 1}}).encode())
        else:
            self._send(200, json.dumps({"usage": {"completion_tokens": 4},
                                        "choices": [{"message": {"content": "hello there"}}]}).encode())


@contextmanager
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    srv.connections, srv.seen = set(), []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_health_goes_straight_to_the_server_whatever_proxy_is_set(monkeypatch):
    """The servers vboot checks are its own, on loopback: urllib sent these requests to $http_proxy (a proxy
    that is down made every server look unhealthy); the client never consults proxy variables."""
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    with server() as srv:
        assert http.health(_url(srv)).ok and http.healthy(_url(srv))


def test_nothing_listening_is_an_answer_of_none_with_the_reason():
    answer = http.health(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert answer.status is None and "Connection refused" in answer.error


def test_the_smoke_chat_and_the_liveness_completion_send_the_key_and_read_the_tokens():
    with server() as srv:
        smoke = http.smoke_chat(_url(srv), "m", api_key="k3y")
        alive = http.generate_once(_url(srv), "m")
        assert smoke.ok and smoke.completion_tokens == 4 and smoke.text == "hello there"
        assert alive.ok and alive.completion_tokens == 1
        assert [(path, auth) for path, auth, _ in srv.seen] == [("/v1/chat/completions", "Bearer k3y"),
                                                                ("/v1/completions", None)]


def test_an_http_error_is_a_failed_probe_naming_the_status():
    with server() as srv:
        smoke = http.smoke_chat(_url(srv), "other")
        alive = http.generate_once(_url(srv), "other")
    assert not smoke.ok and smoke.error == "HTTP 404: b'{\"error\": \"no such model\"}'"
    assert not alive.ok and alive.error == "HTTP 404"


def test_metrics_are_read_over_one_kept_alive_connection():
    with server() as srv:
        endpoint = http.MetricsEndpoint(_url(srv))
        snaps = [endpoint.scrape() for _ in range(3)]
        endpoint.close()
    assert len(srv.connections) == 1 and snaps[-1].samples["vllm:num_requests_running"]


def test_a_server_that_is_gone_is_a_scrape_error_saying_so():
    endpoint = http.MetricsEndpoint(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ScrapeError, match="^connection refused$") as info:
        endpoint.scrape()
    assert info.value.code == "server_down" and info.value.exit_code == 3


def test_a_kept_alive_connection_that_broke_is_reopened_once():
    with server() as srv:
        endpoint = http.MetricsEndpoint(_url(srv))
        endpoint.scrape()
        endpoint._conn._conn.sock.close()  # the kept-alive connection breaks between two scrapes
        assert endpoint.scrape().samples["vllm:num_requests_running"]
        endpoint.close()
    assert len(srv.connections) == 2
