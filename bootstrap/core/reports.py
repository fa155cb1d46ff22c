"""What commands report: one frozen dataclass per command result, built here from core's own records.

A command hands its report to the output layer inside a :class:`~bootstrap.core.envelope.CommandResult`; the
JSON ``data`` is the report through :func:`~bootstrap.core.envelope.to_jsonable` (fields in declaration order,
so the field order below is the JSON's key order, pinned by the commands' --json tests), and the human view
reads the same fields. Nothing here prints or probes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootstrap.core.checks import CHECKS, CheckResult, Status
from bootstrap.core.envelope import key_when_set

if TYPE_CHECKING:
    from bootstrap.core.builds import GpuFacts
    from bootstrap.core.k8s import Export, FileWrite, K8sOptions
    from bootstrap.core.setup import BuildSummary, SetupPlan, StepResult, Verified
    from bootstrap.core.vllm_env import VllmEnvRecord


# --- doctor ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckInfo:
    """One line of `vboot doctor --list-checks`: a check's id, group, title and the shell command that shows
    the same fact (its docstring)."""

    id: str
    group: str
    title: str
    shows: str


@dataclass(frozen=True)
class CheckListing:
    """`vboot doctor --list-checks`."""

    checks: tuple[CheckInfo, ...]


def check_listing() -> CheckListing:
    return CheckListing(tuple(CheckInfo(c.id, c.group, c.title, (c.fn.__doc__ or "").strip()) for c in CHECKS))


@dataclass(frozen=True)
class CheckRow:
    """One verdict of `vboot doctor`, as its JSON lists it."""

    id: str
    group: str
    status: Status
    summary: str
    hint: str
    data: Mapping[str, Any]  # the check's raw facts (bytes, versions, PIDs)


@dataclass(frozen=True)
class CheckCounts:
    """How many checks ended in each status."""

    ok: int
    warn: int
    fail: int
    skip: int


@dataclass(frozen=True)
class DoctorReport:
    """`vboot doctor`: the device serve would use and why, every verdict, and the variables vboot read."""

    profile: str
    device: str  # "gpu" | "cpu"
    device_reason: str
    checks: tuple[CheckRow, ...]
    counts: CheckCounts
    env_read: tuple[str, ...]  # sorted


def doctor_report(profile: str, device: str, device_reason: str, results: Sequence[CheckResult],
                  env_read: Iterable[str]) -> DoctorReport:
    rows = tuple(CheckRow(r.id, r.group, r.status, r.summary, r.hint, r.data) for r in results)
    counts = {s: sum(1 for r in results if r.status == s) for s in Status}
    return DoctorReport(profile, device, device_reason, rows,
                        CheckCounts(counts[Status.OK], counts[Status.WARN], counts[Status.FAIL], counts[Status.SKIP]),
                        tuple(sorted(env_read)))


# --- export k8s -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApiKeySecretToCreate:
    """The Secret the user creates for the profile's API key: where it goes and the command; never the key."""

    name: str
    namespace: str
    key: str
    origin: str
    create_command: str


@dataclass(frozen=True)
class AlertsSecretToCreate:
    """The Secret the user creates for Alertmanager's receiver URLs (key -> shell variable); never a URL."""

    name: str
    namespace: str
    keys: Mapping[str, str]
    create_command: str


@dataclass(frozen=True)
class ExportedFile:
    path: str
    name: str
    kind: str  # "helm-values" | "manifest"
    action: str  # create | unchanged | overwrite | replace (bootstrap.core.k8s.FileWrite)
    size_bytes: int


@dataclass(frozen=True)
class K8sExportReport:
    """`vboot export k8s`: what was generated for which cluster layout, the files, and how to apply them."""

    profile: str
    model: str
    served_model_name: str
    gpus_per_replica: int
    namespace: str
    monitoring_namespace: str
    release: str
    deployment: str
    min_replicas: int
    max_replicas: int
    queue_target: float
    custom_metric: str
    prometheus_url: str
    grafana_secret: str
    api_key_secret: ApiKeySecretToCreate | None  # None: the profile sets no key
    alerts_secret: AlertsSecretToCreate | None  # None: the profile has no [alerts]
    out_dir: str
    files: tuple[ExportedFile, ...]
    guide: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def status(self) -> str:
        return "warn" if self.warnings else "ok"


def k8s_export_report(export: Export, options: K8sOptions, out: Path, plan: Sequence[FileWrite]) -> K8sExportReport:
    from bootstrap.core import k8s

    key, alerts = export.api_key, export.alerts
    return K8sExportReport(
        profile=export.profile, model=export.model, served_model_name=export.served_model_name,
        gpus_per_replica=export.gpus_per_replica, namespace=options.namespace,
        monitoring_namespace=options.monitoring_namespace, release=options.release, deployment=export.deployment,
        min_replicas=options.min_replicas, max_replicas=options.max_replicas, queue_target=options.queue_target,
        custom_metric=k8s.CUSTOM_METRIC, prometheus_url=options.prometheus_url, grafana_secret=k8s.GRAFANA_SECRET,
        api_key_secret=None if key is None else ApiKeySecretToCreate(
            key.name, key.namespace, key.key, key.origin, k8s.api_key_secret_command(key)),
        alerts_secret=None if alerts is None else AlertsSecretToCreate(
            alerts.name, alerts.namespace, dict(alerts.keys), k8s.alerts_secret_command(alerts)),
        out_dir=str(out),
        files=tuple(ExportedFile(str(w.path), w.path.name, doc.kind, w.action, w.size_bytes)
                    for w, doc in zip(plan, export.documents)),
        guide=tuple(k8s.guide_commands(export, str(out))), warnings=tuple(export.warnings))


# --- setup ----------------------------------------------------------------------------------------------------

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


# --- pull -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalModel:
    """`vboot pull` of a profile that serves a local directory: nothing to download, its size on disk.
    (A pulled model reports :class:`bootstrap.core.pull.PullResult`.)"""

    model: str
    revision: str
    path: str
    bytes: int
    files: int
    downloaded_bytes: int = 0
    source: str = "local"
    verified_at: float | None = None
