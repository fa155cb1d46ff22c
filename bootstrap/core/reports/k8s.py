"""`vboot export k8s`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.k8s import Export, FileWrite, K8sOptions


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
