"""`vboot setup`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bootstrap.core.envelope import key_when_set

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.builds import GpuFacts
    from bootstrap.core.setup import BuildSummary, SetupPlan, StepResult, Verified
    from bootstrap.core.vllm_env import VllmEnvRecord


@dataclass(frozen=True)
class SetupReport:
    """`vboot setup`: the build chosen and the plan (all a --dry-run reports), then, once it ran, what was
    verified and recorded. The keys after ``outcome`` appear only when something ran."""

    build: BuildSummary
    plan: SetupPlan
    commands: tuple[str, ...]
    dry_run: bool
    gpu: GpuFacts
    outcome: str  # planned | installed | reused
    verified: Verified | None = key_when_set()
    record: VllmEnvRecord | None = key_when_set()
    record_path: str | None = key_when_set()
    log_path: str | None = key_when_set()
    steps: tuple[StepResult, ...] | None = key_when_set()
    duration_s: float | None = key_when_set()
    warnings: tuple[str, ...] | None = key_when_set()

    @property
    def status(self) -> str:
        return "warn" if self.warnings else "ok"
