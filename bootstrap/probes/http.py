"""vboot's one HTTP client, for the servers it starts and watches: /health, the smoke and liveness requests, and
/metrics for `vboot top` (``http.client``: no extra dependency, ~5 ms import).

:class:`Connection` is the one way a request is made: it keeps its connection alive between requests (top asks
every second) and reconnects once when a kept-alive connection was closed by the server. Proxy variables are not
consulted: these are the loopback servers vboot itself started, which a proxy could only get in the way of.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bootstrap.core.errors import ScrapeError
from bootstrap.core.lifecycle import HealthAnswer, ProbeResult

if TYPE_CHECKING:  # the metrics maths is loaded by the first scrape: a health check never pays for it
    from bootstrap.core.colocate import RequestCounts
    from bootstrap.core.metrics import Snapshot

SmokeResult = ProbeResult  # the smoke chat's result (the name its callers know)


class _StatusError(OSError):
    """The server answered, with a status other than 2xx (``status``, and the start of ``body``)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class Connection:
    """One kept-alive HTTP/1.1 connection to the scheme, host and port of ``base_url``."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}{path}"

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of ``METHOD base_path+path``. Raises OSError when nothing answers (refused, timed out,
        closed mid-answer). A kept-alive connection the server closed since the last request is retried once on
        a fresh one; a fresh connection is never retried (a POST is not sent twice)."""
        while True:
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, self.base_path + path, body=body, headers=dict(headers or {}))
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and not isinstance(exc, (ConnectionRefusedError, TimeoutError)):
                    continue
                if isinstance(exc, OSError):
                    raise
                raise ConnectionError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _one(url: str, method: str, body: bytes | None, headers: Mapping[str, str] | None,
         timeout: float) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = Connection(f"{parts.scheme}://{parts.netloc}", timeout)
    try:
        return conn.request(method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body, headers)
    finally:
        conn.close()


def get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of ``GET url``; raises OSError when nothing answers."""
    return _one(url, "GET", None, headers, timeout)


def healthy(base_url: str, timeout: float = 1.0) -> bool:
    """``curl -sf BASE/health``."""
    return health(base_url, timeout).ok


def health(base_url: str, timeout: float = 2.0) -> HealthAnswer:
    """``curl -s -o /dev/null -w '%{http_code}' BASE/health``: the status, or None when nothing answered."""
    try:
        status, _ = get(f"{base_url}/health", timeout=timeout)
        return HealthAnswer(status)
    except OSError as exc:
        return HealthAnswer(None, str(exc))


def _post_json(url: str, payload: dict[str, Any], api_key: str | None, timeout: float) -> dict[str, Any]:
    """The JSON answer of a POST; raises :class:`_StatusError` for a non-2xx answer, OSError when nothing
    answers, ValueError for a body that is not JSON."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    status, body = _one(url, "POST", json.dumps(payload).encode(), headers, timeout)
    if not 200 <= status < 300:
        raise _StatusError(status, body)
    answer: dict[str, Any] = json.loads(body)
    return answer


def generate_once(base_url: str, model: str, api_key: str | None = None, timeout: float = 20.0) -> ProbeResult:
    """The liveness probe: one completion of one token (``/v1/completions``, which every generative model
    serves, chat template or not). A hung engine answers /health but never completes this."""
    payload = {"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0}
    t0 = time.perf_counter()
    try:
        body = _post_json(f"{base_url}/v1/completions", payload, api_key, timeout)
    except _StatusError as exc:
        return ProbeResult(False, time.perf_counter() - t0, error=f"HTTP {exc.status}")
    except (OSError, ValueError) as exc:
        return ProbeResult(False, time.perf_counter() - t0, error=str(exc))
    dt = time.perf_counter() - t0
    tokens = int((body.get("usage") or {}).get("completion_tokens") or 0)
    return ProbeResult(tokens > 0, dt, tokens, tokens / dt if dt > 0 else 0.0,
                       error="" if tokens > 0 else "the completion held no token")


def smoke_chat(base_url: str, model: str, api_key: str | None = None, max_tokens: int = 16,
               timeout: float = 120.0) -> SmokeResult:
    """One short chat completion through the OpenAI API, timed end to end."""
    payload = {"model": model, "messages": [{"role": "user", "content": "Say hello in five words."}],
               "max_tokens": max_tokens, "temperature": 0}
    t0 = time.perf_counter()
    try:
        body = _post_json(f"{base_url}/v1/chat/completions", payload, api_key, timeout)
    except _StatusError as exc:
        return SmokeResult(False, time.perf_counter() - t0, 0, 0.0, "", f"HTTP {exc.status}: {exc.body[:200]!r}")
    except (OSError, ValueError) as exc:
        return SmokeResult(False, time.perf_counter() - t0, 0, 0.0, "", str(exc))
    dt = time.perf_counter() - t0
    tokens = int((body.get("usage") or {}).get("completion_tokens") or 0)
    text = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    return SmokeResult(True, dt, tokens, tokens / dt if dt > 0 else 0.0, text)


class MetricsEndpoint:
    """Reads ``URL/metrics`` over one kept-alive :class:`Connection` (`vboot top`, the benchmarks) and parses it,
    keeping only ``families`` (None: every family; `vboot top` passes ``bootstrap.core.metrics.TOP_FAMILIES``).

    Network I/O lives here, not in the renderer and not in the window maths (bootstrap.core.metrics), whose
    tests never need it.
    """

    def __init__(self, base_url: str, timeout_s: float = 5.0, families: Collection[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._conn = Connection(base_url, timeout_s)
        self.families = families
        self.clock = clock

    @property
    def url(self) -> str:
        return self._conn.url("/metrics")

    def fetch_text(self) -> str:
        """The raw exposition text; raises :class:`~bootstrap.core.errors.ScrapeError`."""
        try:
            status, body = self._conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        except OSError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, http.client.HTTPException) else exc
            raise ScrapeError(_describe(cause), url=self.url) from exc
        if status != 200:
            raise ScrapeError(f"HTTP {status} from {self.url}", url=self.url)
        return body.decode("utf-8", "replace")

    def scrape(self) -> Snapshot:
        """One snapshot, stamped with the clock when the response arrived."""
        from bootstrap.core.metrics import parse_exposition

        text = self.fetch_text()
        taken = self.clock()
        try:
            return parse_exposition(text, taken, self.families)
        except ValueError as exc:
            raise ScrapeError(f"{self.url} did not answer a Prometheus exposition: {exc}", url=self.url) from exc

    def close(self) -> None:
        self._conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def is_sleeping(base_url: str, api_key: str | None = None, timeout: float = 5.0) -> bool | None:
    """``curl BASE/is_sleeping`` (vLLM's development mode): True/False, or None when it does not answer so."""
    try:
        status, body = get(f"{base_url}/is_sleeping", timeout=timeout, headers=_headers(api_key))
        doc = json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None
    value = doc.get("is_sleeping") if isinstance(doc, dict) else None
    return value if isinstance(value, bool) else None


def post(base_url: str, path: str, api_key: str | None = None, timeout: float = 300.0) -> tuple[int, bytes]:
    """``curl -X POST BASE/PATH``: (status, body); raises OSError when nothing answers."""
    return _one(f"{base_url}{path}", "POST", b"", _headers(api_key), timeout)


def sleep_server(base_url: str, api_key: str | None = None, level: int = 1, timeout: float = 300.0) -> bool:
    """``curl -X POST 'BASE/sleep?level=N'``: did vLLM put its engine to sleep?"""
    try:
        status, _ = post(base_url, f"/sleep?level={int(level)}", api_key, timeout)
    except OSError:
        return False
    return status == 200


def request_counts(base_url: str, api_key: str | None = None, timeout: float = 5.0) -> RequestCounts | None:
    """Finished and in-flight requests from ``BASE/metrics`` (every ``vllm:request_success_total`` series; running
    + waiting), or None when /metrics cannot be read."""
    from bootstrap.core.colocate import RequestCounts
    from bootstrap.core.metrics import parse_exposition

    try:
        status, body = get(f"{base_url}/metrics", timeout=timeout, headers=_headers(api_key))
        if status != 200:
            return None
        snap = parse_exposition(body.decode("utf-8", "replace"), families=(
            "vllm:request_success_total", "vllm:num_requests_running", "vllm:num_requests_waiting"))
    except (OSError, ValueError):
        return None
    finished = snap.total("vllm:request_success_total")
    if finished is None:
        return None
    in_flight = (snap.total("vllm:num_requests_running") or 0.0) + (snap.total("vllm:num_requests_waiting") or 0.0)
    return RequestCounts(finished, in_flight)


# --- vllm-router's worker API (multi-model mode), used by `vboot route` ------------------------------------------

def router_workers(router_url: str, timeout: float = 2.0) -> dict[str, str] | None:
    """``curl ROUTER/workers``: worker URL -> model id, or None when the router does not answer."""
    try:
        status, body = get(f"{router_url}/workers", timeout=timeout)
        doc = json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("workers"), list):
        return None
    return {str(w.get("url")): str(w.get("model_id")) for w in doc["workers"] if isinstance(w, dict)}


def router_add_worker(router_url: str, url: str, model: str, timeout: float = 5.0) -> bool:
    """``POST ROUTER/workers {"url", "model_id"}``: the served name is given, not read from the worker (whose
    /v1/models needs its key)."""
    try:
        status, _ = _one(f"{router_url}/workers", "POST", json.dumps({"url": url, "model_id": model}).encode(),
                         {"Content-Type": "application/json"}, timeout)
    except (OSError, ValueError):
        return False
    return status == 200


def router_remove_worker(router_url: str, url: str, timeout: float = 5.0) -> bool:
    """``DELETE ROUTER/workers/URL`` (URL percent-encoded)."""
    from urllib.parse import quote

    try:
        status, _ = _one(f"{router_url}/workers/{quote(url, safe='')}", "DELETE", None, None, timeout)
    except (OSError, ValueError):
        return False
    return status == 200
