"""`vboot serve`'s and `vboot route`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.lifecycle import ProbeResult


@dataclass(frozen=True)
class ServeReady:
    """`vboot serve`'s readiness report: where the server answers, how it got there, and the smoke request."""

    name: str
    url: str
    pid: int
    run_dir: str
    served_model_name: str
    profile: str
    model_path: str
    device: str
    device_reason: str
    ready_s: float
    metrics_url: str
    prometheus_url: str | None
    prometheus_config: str
    detached: bool
    supervisor_pid: int | None  # the detached supervisor's, or this process's in the foreground
    restart: str  # the restart mode
    smoke: ProbeResult | None  # None: --no-smoke
    log: str
    env: Mapping[str, str]  # the variables vboot set for vLLM, secrets masked
    command: tuple[str, ...]  # vLLM's command line, secrets redacted

    @property
    def status(self) -> str:
        """warn when the smoke request failed: the server is up but did not answer a chat."""
        return "warn" if self.smoke is not None and not self.smoke.ok else "ok"


@dataclass(frozen=True)
class RouteReady:
    """`vboot route`'s readiness report: the endpoint and the servers it routes to, by served model name."""

    name: str
    url: str
    run_dir: str
    detached: bool
    supervisor_pid: int
    pid: int
    routes: Mapping[str, str]  # served model name -> server URL
    router_url: str
    log: str
