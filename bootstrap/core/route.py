"""`vboot route`: one OpenAI-compatible endpoint in front of vboot's running servers, routing by ``model``.

The routing is vllm-project's router (PyPI ``vllm-router``, Rust) in its multi-model mode (``enable_igw``): it
reads each request's ``model`` and sends it to a worker serving that name. vboot tells it which workers exist
(``POST /workers`` with the URL and the served name, ``DELETE /workers/URL``) from the run records of the
servers that are running, once a second, so the routes follow servers started and stopped later without a
restart of the endpoint.

In front of the router sits vboot's own small HTTP front (:mod:`bootstrap.cli.route`), for two reasons the
router cannot cover (README: "Why a front"):

- vllm-router 0.1.17's multi-model ``GET /v1/models`` answers ``{"models": [...]}``, not the OpenAI list
  (``{"object": "list", "data": [{"id": ...}]}``) that OpenAI clients parse (vllm-project/router#133; the fix,
  PR #134, is not released). The front answers that one request in the OpenAI shape, from the router's list.
- The router forwards any other POST to some worker ("transparent proxy"), and a sleep-mode server runs vLLM's
  development endpoints (``/sleep``, ``/collective_rpc``, ...), which vLLM's API key does not guard: the front
  forwards ``/v1/*`` and ``/health`` only, and checks the route's key on ``/v1/*`` as vLLM does.

Everything else (routing, retries, streaming, load balancing) is the router's; the front copies bytes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.core.runs import RunRecord

DEFAULT_PORT = 8080
# The router, started in its Python with the worker key from the environment, never on its command line.
ROUTER_LAUNCHER = (
    "import os, sys\n"
    "from vllm_router.router_args import RouterArgs\n"
    "from vllm_router.launch_router import launch_router\n"
    "launch_router(RouterArgs(host='127.0.0.1', port=int(sys.argv[1]), enable_igw=True,\n"
    "    prometheus_host='127.0.0.1', prometheus_port=int(sys.argv[2]),\n"
    "    api_key=os.environ.get('VBOOT_ROUTE_WORKER_KEY') or None, health_check_interval_secs=10,\n"
    "    log_level='info'))\n"
)
WORKER_KEY_VAR = "VBOOT_ROUTE_WORKER_KEY"
FRONT_KEY_VAR = "VBOOT_ROUTE_KEY"
ALLOWED_EXACT = ("/health", "/v1/models")
ALLOWED_PREFIX = "/v1/"


@dataclass(frozen=True)
class RoutePlan:
    """Everything `vboot route` runs, decided before anything starts."""

    name: str
    run_dir: Path
    host: str
    port: int
    router_port: int  # the router, on 127.0.0.1 only
    router_metrics_port: int
    router_python: str
    names: tuple[str, ...] = ()  # route only these servers (run names); () every running server
    api_key: str | None = field(default=None, repr=False)
    detached: bool = False

    @property
    def url(self) -> str:
        from bootstrap.core.runs import client_host

        return f"http://{client_host(self.host)}:{self.port}"

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    def router_argv(self) -> tuple[str, ...]:
        return (self.router_python, "-c", ROUTER_LAUNCHER, str(self.router_port), str(self.router_metrics_port))

    def front_argv(self, python: str) -> tuple[str, ...]:
        return (python, "-m", "bootstrap", "route-front", "--listen", f"{self.host}:{self.port}",
                "--upstream", f"127.0.0.1:{self.router_port}")


def plan_to_json(plan: RoutePlan) -> dict[str, Any]:
    from bootstrap.core.envelope import to_jsonable

    doc: dict[str, Any] = to_jsonable(plan)
    return doc


def plan_from_json(doc: dict[str, Any]) -> RoutePlan:
    from bootstrap.core.envelope import from_jsonable

    plan: RoutePlan = from_jsonable(RoutePlan, doc)
    return plan


# --- which servers to route to ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Skipped:
    name: str
    why: str


def desired_routes(runs: Sequence[RunRecord], names: Sequence[str], route_key: str | None,
                   server_key: Callable[[RunRecord], str | None] = lambda r: None,
                   ) -> tuple[dict[str, str], list[Skipped]]:
    """URL -> served model name of every server the route should reach now (run records: servers that are ready
    or asleep, of ``names`` when given), and the servers left out with why. ``server_key(record)`` is the key a
    server was started with (None: none): with a route key, a server whose key differs would refuse the clients'
    key, so it is left out; two servers of one served name are both routed (the router balances them)."""
    out: dict[str, str] = {}
    skipped: list[Skipped] = []
    for r in runs:
        if not r.is_server or (names and r.name not in names):
            continue
        if r.state not in ("ready", "sleeping"):
            skipped.append(Skipped(r.name, f"it is {r.state}"))
            continue
        key = server_key(r)
        if route_key and key and not hmac.compare_digest(key, route_key):
            skipped.append(Skipped(r.name, "it was started with another API key than the route's"))
            continue
        out[r.url] = r.served_model_name
    return out, skipped


@dataclass(frozen=True)
class Reconcile:
    add: tuple[tuple[str, str], ...]  # (url, served name)
    remove: tuple[str, ...]  # urls


def reconcile(desired: Mapping[str, str], actual: Mapping[str, str]) -> Reconcile:
    """What to tell the router so its workers (``actual``: url -> model) become ``desired``. A worker whose served
    name changed (the same port, another server) is removed and added again."""
    add = tuple(sorted((u, m) for u, m in desired.items() if actual.get(u) != m))
    remove = tuple(sorted(u for u, m in actual.items() if u not in desired or desired[u] != m))
    return Reconcile(add, remove)


# --- the front ----------------------------------------------------------------------------------------------

def allowed_path(path: str) -> bool:
    """The paths the front forwards: the OpenAI API under /v1 and /health (never vLLM's development endpoints)."""
    return path in ALLOWED_EXACT or path.startswith(ALLOWED_PREFIX)


def authorized(path: str, authorization: str | None, key: str | None) -> bool:
    """vLLM's rule, for the route's key: paths under /v1 need ``Authorization: Bearer KEY``."""
    if not key or not path.startswith("/v1"):
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), key.encode())


def openai_models(status: int, body: bytes) -> dict[str, Any]:
    """The OpenAI model list from the router's ``/v1/models`` answer: passed through when it already is one, built
    from ``{"models": [...]}`` (vllm-router <= 0.1.17) otherwise; an empty list when it has no worker (503)."""
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = {}
    if isinstance(doc, dict) and doc.get("object") == "list" and isinstance(doc.get("data"), list):
        return doc
    ids = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(ids, list):
        ids = []
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "vboot"}
                                       for m in sorted({str(m) for m in ids})]}
