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

from bootstrap.core.envelope import key_when_set

if TYPE_CHECKING:  # types only: `vboot disk`'s fast path imports this module and must not load the checks
    from bootstrap.core.builds import GpuFacts
    from bootstrap.core.caches import CacheReport, PlanEntry, Refusal
    from bootstrap.core.checks import CheckResult, Status
    from bootstrap.core.disk import DiskEntry, DiskReport, ScanWarning
    from bootstrap.core.envplan import EnvVar
    from bootstrap.core.k8s import Export, FileWrite, K8sOptions
    from bootstrap.core.lifecycle import ProbeResult
    from bootstrap.core.metrics import Percentiles, TopFrame
    from bootstrap.core.profiles import Profile
    from bootstrap.core.runs import LastExit
    from bootstrap.core.setup import BuildSummary, SetupPlan, StepResult, Verified
    from bootstrap.core.shellenv import KernelInfo
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
    from bootstrap.core.checks import CHECKS

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
    from bootstrap.core.checks import Status

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
                    for w, doc in zip(plan, export.documents, strict=True)),
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


# --- profiles -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProfileRow:
    """One profile of `vboot profiles`. A profile hidden by a user profile of the same name carries ``shadowed``;
    one that does not load carries ``error`` instead of what it serves."""

    name: str
    path: str
    builtin: bool
    valid: bool
    shadowed: bool | None = key_when_set()
    error: str | None = key_when_set()
    model: str | None = key_when_set()
    source: str | None = key_when_set()
    device: str | None = key_when_set()
    port: int | str | None = key_when_set()  # the port serve binds without flags
    description: str | None = key_when_set()


@dataclass(frozen=True)
class ProfileListing:
    profiles: tuple[ProfileRow, ...]
    user_dir: str


@dataclass(frozen=True)
class ProfileShown:
    """`vboot profiles NAME`: the profile in full, secrets masked (bootstrap.core.profiles.shown)."""

    profile: Profile


# --- env, kernel ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnvExports:
    """`vboot env`: the variables and the text that sets them in the chosen format."""

    profile: str
    format: str  # a shell (bash, zsh, fish, ...) or "dotenv"
    variables: tuple[EnvVar, ...]
    warnings: tuple[str, ...]
    text: str

    @property
    def status(self) -> str:
        return "warn" if self.warnings else "ok"


@dataclass(frozen=True)
class KernelInstalled:
    name: str
    path: str
    python: str
    profile: str
    display_name: str
    env: Mapping[str, str]
    ipykernel_installed: bool  # installed into the environment now
    replaced: bool  # a kernel of that name was there before


@dataclass(frozen=True)
class KernelListing:
    kernels_dir: str
    kernels: tuple[KernelInfo, ...]


@dataclass(frozen=True)
class KernelRemoved:
    name: str
    path: str
    removed: bool = True


# --- sleep, wake ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SleepDone:
    """`vboot sleep`: what NVML saw around the sleep (bootstrap.core.colocate.SleepReport)."""

    name: str
    level: int
    took_s: float
    before_bytes: int
    after_bytes: int
    freed_bytes: int
    server_bytes: int  # what the server's processes held before
    too_little: bool  # it freed much less than the server held

    @property
    def status(self) -> str:
        return "warn" if self.too_little else "ok"


@dataclass(frozen=True)
class WakeDone:
    name: str
    took_s: float
    before_bytes: int
    after_bytes: int
    taken_bytes: int


# --- service --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceInstall:
    """`vboot service install`: the unit (written or, with --dry-run, only shown) and the commands that enable it."""

    name: str
    scope: str  # system | user
    unit_path: str
    unit: str  # the unit file's text
    env_file: str | None  # the 0600 file with the secrets (None: no secrets)
    secrets: tuple[str, ...]  # the names of the variables in it, never their values
    commands: tuple[str, ...]
    written: bool
    started: bool


@dataclass(frozen=True)
class ServiceRun:
    """vboot's run record of the server a unit runs."""

    state: str
    pid: int
    url: str
    generation: int
    restarts: int
    last_exit: LastExit | None
    run_dir: str
    healthy: bool


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    systemd: Mapping[str, str]  # systemctl show's properties
    run: ServiceRun | None  # None: the unit has no run record yet

    @property
    def status(self) -> str:
        return "ok" if self.systemd.get("ActiveState") == "active" else "warn"


@dataclass(frozen=True)
class ServiceRemoved:
    name: str
    removed: tuple[str, ...]
    stopped: bool


# --- disk -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiskView:
    """`vboot disk PATH...`: the first report's fields at the top (the JSON contract), every report under
    ``reports``, and the options the human view needs."""

    root: str
    total_bytes: int
    entries: tuple[DiskEntry, ...]
    warnings: tuple[ScanWarning, ...]
    unreadable_count: int
    unreadable_paths: tuple[str, ...]
    error_count: int
    depth: int
    apparent: bool
    entry_count: int
    fs_total_bytes: int | None
    fs_free_bytes: int | None
    elapsed_s: float
    workers: int
    skipped_mounts: tuple[str, ...]
    reports: tuple[DiskReport, ...]
    top: int  # rows per directory in the human view

    @property
    def status(self) -> str:
        return "warn" if any(not r.complete for r in self.reports) else "ok"


def disk_view(reports: Sequence[DiskReport], depth: int, apparent: bool, top: int) -> DiskView:
    first = reports[0]
    return DiskView(
        root=first.root, total_bytes=first.total_bytes, entries=first.entries, warnings=first.warnings,
        unreadable_count=first.unreadable_count, unreadable_paths=first.unreadable_paths,
        error_count=first.error_count, depth=depth, apparent=apparent, entry_count=first.entry_count,
        fs_total_bytes=first.fs_total_bytes, fs_free_bytes=first.fs_free_bytes, elapsed_s=first.elapsed_s,
        workers=first.workers, skipped_mounts=first.skipped_mounts, reports=tuple(reports), top=top)


@dataclass(frozen=True)
class CachesView:
    """`vboot disk caches`."""

    caches: tuple[CacheReport, ...]
    total_bytes: int
    warnings: tuple[str, ...] | None = key_when_set()  # run records that had to be skipped

    @property
    def status(self) -> str:
        return "warn" if self.warnings else "ok"


@dataclass(frozen=True)
class CleanReport:
    """`vboot disk clean`: the plan (all a dry run or a refusal reports), then, once confirmed, what was removed
    and the free space measured before and after."""

    plan: tuple[PlanEntry, ...]
    plan_bytes: int
    refused: tuple[Refusal, ...]
    notes: tuple[str, ...]
    dry_run: bool
    freed_bytes: int = 0
    removed: tuple[str, ...] = ()
    failed: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] | None = key_when_set()  # run records that had to be skipped
    fs_free_before_bytes: Mapping[str, int] | None = key_when_set()
    fs_free_after_bytes: Mapping[str, int] | None = key_when_set()
    confirmed: bool | None = key_when_set()  # True once it deleted

    @property
    def status(self) -> str:
        """warn when an item was kept (in use, being downloaded, a mount point inside)."""
        return "warn" if self.refused else "ok"


# --- top ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopMeasurement:
    """`vboot top --once`: one measurement of a server's engine (raw units: ratios 0..1, seconds, tokens/s; the
    engine's fields are null, the percentiles empty, while it is down) and its GPUs."""

    target: str
    url: str
    up: bool
    error: str | None
    model_name: str | None
    window_s: float | None
    requests_running: float | None
    requests_waiting: float | None
    kv_cache_usage: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    ttft_s: Percentiles
    queue_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles
    preemptions_total: float | None
    preemptions_per_s: float | None
    requests_finished_per_s: float | None
    finished_by_reason_per_s: Mapping[str, float]
    gpus: tuple[Mapping[str, Any], ...]  # the GPU panel's rows (bootstrap.cli.top.GPU_FIELDS)
    gpu_error: str | None
    warnings: tuple[str, ...] | None = key_when_set()  # run records that had to be skipped


def top_measurement(frame: TopFrame, label: str, gpus: Sequence[Mapping[str, Any]], gpu_error: str | None,
                    warnings: Sequence[str] = ()) -> TopMeasurement:
    from bootstrap.core.metrics import Percentiles

    s = frame.stats if frame.up else None  # while down, the last good stats are the screen's, not the JSON's
    names = frame.stats.model_names if frame.stats else ()
    empty = Percentiles()
    return TopMeasurement(
        target=label, url=frame.url, up=frame.up, error=frame.error, model_name=names[0] if names else None,
        window_s=s.window_s if s else None, requests_running=s.requests_running if s else None,
        requests_waiting=s.requests_waiting if s else None, kv_cache_usage=s.kv_cache_usage if s else None,
        prompt_tokens_per_s=s.prompt_tokens_per_s if s else None,
        generation_tokens_per_s=s.generation_tokens_per_s if s else None,
        ttft_s=s.ttft_s if s else empty, queue_s=s.queue_s if s else empty, itl_s=s.itl_s if s else empty,
        e2e_s=s.e2e_s if s else empty, preemptions_total=s.preemptions_total if s else None,
        preemptions_per_s=s.preemptions_per_s if s else None,
        requests_finished_per_s=s.requests_finished_per_s if s else None,
        finished_by_reason_per_s=s.finished_by_reason_per_s if s else {}, gpus=tuple(gpus), gpu_error=gpu_error,
        warnings=tuple(warnings) if warnings else None)


# --- serve, route ---------------------------------------------------------------------------------------------

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
