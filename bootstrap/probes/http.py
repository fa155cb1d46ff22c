"""Tiny HTTP client for loopback health checks and the smoke request (urllib: no extra dependency, ~5 ms import)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from bootstrap.core.lifecycle import HealthAnswer, ProbeResult

SmokeResult = ProbeResult  # the smoke chat's result (the name its callers know)


def get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body); raises OSError when nothing answers."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def healthy(base_url: str, timeout: float = 1.0) -> bool:
    """``curl -sf BASE/health``."""
    return health(base_url, timeout).ok


def health(base_url: str, timeout: float = 2.0) -> HealthAnswer:
    """``curl -s -o /dev/null -w '%{http_code}' BASE/health``: the status, or None when nothing answered."""
    try:
        status, _ = get(f"{base_url}/health", timeout=timeout)
        return HealthAnswer(status)
    except OSError as exc:
        return HealthAnswer(None, str(getattr(exc, "reason", exc)))


def _post_json(url: str, payload: dict[str, Any], api_key: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def generate_once(base_url: str, model: str, api_key: str | None = None, timeout: float = 20.0) -> ProbeResult:
    """The liveness probe: one completion of one token (``/v1/completions``, which every generative model
    serves, chat template or not). A hung engine answers /health but never completes this."""
    payload = {"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0}
    t0 = time.perf_counter()
    try:
        body = _post_json(f"{base_url}/v1/completions", payload, api_key, timeout)
    except urllib.error.HTTPError as exc:
        return ProbeResult(False, time.perf_counter() - t0, error=f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return ProbeResult(False, time.perf_counter() - t0, error=str(getattr(exc, "reason", exc)))
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
    except urllib.error.HTTPError as exc:
        return SmokeResult(False, time.perf_counter() - t0, 0, 0.0, "", f"HTTP {exc.code}: {exc.read()[:200]!r}")
    except (OSError, ValueError) as exc:
        return SmokeResult(False, time.perf_counter() - t0, 0, 0.0, "", str(exc))
    dt = time.perf_counter() - t0
    tokens = int((body.get("usage") or {}).get("completion_tokens") or 0)
    text = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    return SmokeResult(True, dt, tokens, tokens / dt if dt > 0 else 0.0, text)


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
    req = urllib.request.Request(f"{base_url}{path}", data=b"", method="POST", headers=_headers(api_key))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sleep_server(base_url: str, api_key: str | None = None, level: int = 1, timeout: float = 300.0) -> bool:
    """``curl -X POST 'BASE/sleep?level=N'``: did vLLM put its engine to sleep?"""
    try:
        status, _ = post(base_url, f"/sleep?level={int(level)}", api_key, timeout)
    except OSError:
        return False
    return status == 200


def request_counts(base_url: str, api_key: str | None = None, timeout: float = 5.0):  # -> colocate.RequestCounts | None
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
    req = urllib.request.Request(f"{router_url}/workers", data=json.dumps({"url": url, "model_id": model}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def router_remove_worker(router_url: str, url: str, timeout: float = 5.0) -> bool:
    """``DELETE ROUTER/workers/URL`` (URL percent-encoded)."""
    from urllib.parse import quote

    req = urllib.request.Request(f"{router_url}/workers/{quote(url, safe='')}", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False
