"""Tiny HTTP client for loopback health checks and the smoke request (urllib: no extra dependency, ~5 ms import)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


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
    try:
        status, _ = get(f"{base_url}/health", timeout=timeout)
        return status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    latency_s: float
    completion_tokens: int
    tokens_per_s: float
    text: str
    error: str = ""


def smoke_chat(base_url: str, model: str, api_key: str | None = None, max_tokens: int = 16,
               timeout: float = 120.0) -> SmokeResult:
    """One short chat completion through the OpenAI API, timed end to end."""
    payload = {"model": model, "messages": [{"role": "user", "content": "Say hello in five words."}],
               "max_tokens": max_tokens, "temperature": 0}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(f"{base_url}/v1/chat/completions", data=json.dumps(payload).encode(), headers=headers)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return SmokeResult(False, time.perf_counter() - t0, 0, 0.0, "", f"HTTP {exc.code}: {exc.read()[:200]!r}")
    except (OSError, ValueError) as exc:
        return SmokeResult(False, time.perf_counter() - t0, 0, 0.0, "", str(exc))
    dt = time.perf_counter() - t0
    tokens = int((body.get("usage") or {}).get("completion_tokens") or 0)
    text = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    return SmokeResult(True, dt, tokens, tokens / dt if dt > 0 else 0.0, text)
