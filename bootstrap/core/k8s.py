"""`vboot export k8s`: the profile that works on one box, as Helm values and a manifest for a cluster.

Four documents, built as plain data by pure functions and rendered to YAML text in memory (the CLI writes them):

- ``production-stack-values.yaml``: vLLM production-stack (chart ``vllm/vllm-stack``), one
  ``servingEngineSpec.modelSpec`` entry made from the profile, and the chart's engine ServiceMonitor enabled.
  A profile's API key is never written: ``servingEngineSpec.vllmApiKey`` names a Secret the user creates
  (:class:`ApiKeySecret`).
- ``kube-prom-stack-values.yaml``: kube-prometheus-stack with Prometheus, Alertmanager and Grafana; Prometheus
  selects every ServiceMonitor (so the engine's is picked up across namespaces), vboot's recording and alert
  rules as a PrometheusRule, and no default Grafana password (the admin login comes from a Secret the user
  creates; see :func:`guide_commands`).
- ``prom-adapter-values.yaml``: prometheus-adapter pointed at that Prometheus, exposing
  ``vllm:num_requests_waiting`` per pod as the custom metric ``vllm_num_requests_waiting``.
- ``hpa.yaml``: an ``autoscaling/v2`` HorizontalPodAutoscaler on that metric for the Deployment the chart
  creates (``{release}-{modelSpec.name}-deployment-vllm``, from the chart's deployment-vllm-multi.yaml).
- ``grafana-dashboard.yaml``: a ConfigMap holding vboot's vLLM dashboard (:mod:`bootstrap.core.dashboard`),
  labelled ``grafana_dashboard: "1"`` so kube-prometheus-stack's Grafana sidecar loads it.

kube-prometheus-stack's values also carry GPU rules for NVIDIA's dcgm-exporter (which the GPU operator runs)
and, when the profile has ``[alerts]``, Alertmanager's receiver: URLs read from files of a Secret the user
creates (:func:`alerts_secret_command`), never the URLs themselves.

Names that tie the files together (release names, namespaces, the Prometheus Service name) are computed in one
place, :class:`K8sOptions`, so a change of namespace or release flows into every file.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.core.envplan import plan_environment
from bootstrap.core.errors import ConflictError, DiskFullError, OutputUnwritableError, UsageError
from bootstrap.core.metrics import WAITING as WAITING_METRIC
from bootstrap.core.profiles import Profile, vllm_options
from bootstrap.core.prom import DCGM_EXPORTER, alert_names, gpu_rule_groups, rule_groups
from bootstrap.core.prom import WAITING_RECORD as CUSTOM_METRIC
from bootstrap.core.textsafe import one_line
from bootstrap.core.vllm_args import OptionUse, gives_option, option_uses, use_span, without_api_keys
from bootstrap.core.vllm_cmd import kv_transfer_config
from bootstrap.core.yamltext import comment, to_yaml

GIB = 1024**3

PRODUCTION_STACK_FILE = "production-stack-values.yaml"
KUBE_PROM_STACK_FILE = "kube-prom-stack-values.yaml"
PROM_ADAPTER_FILE = "prom-adapter-values.yaml"
HPA_FILE = "hpa.yaml"
DASHBOARD_FILE = "grafana-dashboard.yaml"
FILES: tuple[str, ...] = (PRODUCTION_STACK_FILE, KUBE_PROM_STACK_FILE, PROM_ADAPTER_FILE, HPA_FILE, DASHBOARD_FILE)

# The autoscaler reads WAITING_METRIC (vLLM's waiting-requests gauge, one per engine; imported above) and the adapter
# exposes it as CUSTOM_METRIC (Kubernetes metric names cannot contain ':'), the name of vboot's recording rule for
# the same sum, so dashboards and the HPA say the same thing.

#: The vLLM image production-stack runs (`vllm serve` is on its PATH). Pinned to the release whose metric names
#: the rules were checked against; change ``servingEngineSpec.modelSpec[0].tag`` to move.
DEFAULT_IMAGE_REPOSITORY = "vllm/vllm-openai"
DEFAULT_IMAGE_TAG = "v0.32.0"

#: Where production-stack mounts the model PVC in the engine pod (it also sets HF_HOME there).
POD_DATA_DIR = "/data"
POD_MODELSCOPE_CACHE = "/data/modelscope"

#: The Secret the user creates for Grafana's admin login (keys are the grafana chart's defaults).
GRAFANA_SECRET = "vboot-grafana-admin"
GRAFANA_USER_KEY = "admin-user"
GRAFANA_PASSWORD_KEY = "admin-password"

#: Name of the PrometheusRule entry in kube-prometheus-stack's additionalPrometheusRulesMap.
RULES_MAP_KEY = "vboot-vllm"
#: The GPU rules (for dcgm-exporter's metric names) get an entry of their own.
GPU_RULES_MAP_KEY = "vboot-gpu"

#: The dashboard ConfigMap, in the monitoring namespace, and the label kube-prometheus-stack's Grafana sidecar
#: watches (grafana.sidecar.dashboards.label / labelValue in the chart's values).
DASHBOARD_CONFIGMAP = "vboot-vllm-dashboard"
DASHBOARD_LABEL = "grafana_dashboard"
DASHBOARD_LABEL_VALUE = "1"

#: The Secret the user creates for Alertmanager's receiver URLs, in the monitoring namespace. The chart mounts
#: every Secret of alertmanager.alertmanagerSpec.secrets at /etc/alertmanager/secrets/NAME/ (the operator's
#: Alertmanager CRD), and the receivers read their URLs from files there (webhook url_file, Slack api_url_file;
#: the chart's Alertmanager is 0.34, which has both).
ALERTS_SECRET = "vboot-alertmanager-receivers"
ALERTS_WEBHOOK_KEY = "webhook-url"
ALERTS_SLACK_KEY = "slack-api-url"
ALERTS_SECRET_DIR = f"/etc/alertmanager/secrets/{ALERTS_SECRET}"
#: Variables the guide reads the URLs from when the profile gives a URL itself rather than a variable.
DEFAULT_WEBHOOK_ENV = "VBOOT_ALERT_WEBHOOK_URL"
DEFAULT_SLACK_ENV = "VBOOT_ALERT_SLACK_WEBHOOK_URL"

#: The variable vLLM reads its API key from when no --api-key is given; the chart sets it in the engine and
#: router pods from ``servingEngineSpec.vllmApiKey`` (deployment-vllm-multi.yaml, deployment-router.yaml).
API_KEY_ENV = "VLLM_API_KEY"
#: The key inside the Secret the user creates for it (named by :attr:`K8sOptions.api_key_secret`).
API_KEY_SECRET_KEY = "VLLM_API_KEY"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class K8sOptions:
    """Cluster-side choices that are not in the profile (flags of `vboot export k8s`)."""

    namespace: str = "default"
    release: str = "vllm"
    monitoring_namespace: str = "monitoring"
    kps_release: str = "kube-prom-stack"
    adapter_release: str = "prometheus-adapter"
    min_replicas: int = 1
    max_replicas: int = 2
    queue_target: float = 5
    image_repository: str = DEFAULT_IMAGE_REPOSITORY
    image_tag: str = DEFAULT_IMAGE_TAG

    def __post_init__(self) -> None:
        for what, value in (("namespace", self.namespace), ("release", self.release),
                            ("monitoring namespace", self.monitoring_namespace)):
            if not _DNS_LABEL.match(value) or len(value) > 53:
                raise UsageError(f"{what} {value!r} is not a valid Kubernetes name",
                                 hint="use lower-case letters, digits and '-' (at most 53 characters)")
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise UsageError(f"replicas {self.min_replicas}:{self.max_replicas} are not MIN:MAX with 1 <= MIN <= MAX",
                             hint="pass e.g. --replicas 1:4")
        if not (self.queue_target > 0 and math.isfinite(self.queue_target)):
            raise UsageError(f"--queue-target must be a positive number, not {self.queue_target}",
                             hint="pass the waiting requests per pod that should trigger a scale-up, e.g. 5")

    @property
    def api_key_secret(self) -> str:
        """The Secret, in :attr:`namespace`, that holds vLLM's API key when the profile has one."""
        return f"{self.release}-vllm-api-key"

    @property
    def prometheus_service(self) -> str:
        """The Service kube-prometheus-stack creates for Prometheus: ``{fullname}-prometheus``, where the chart
        truncates its fullname (``RELEASE-kube-prometheus-stack``, or RELEASE when it contains the chart name)
        to 26 characters (templates/_helpers.tpl)."""
        chart = "kube-prometheus-stack"
        full = self.kps_release if chart in self.kps_release else f"{self.kps_release}-{chart}"
        return f"{full[:26].rstrip('-')}-prometheus"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.prometheus_service}.{self.monitoring_namespace}.svc"


def parse_replicas(text: str) -> tuple[int, int]:
    """``"1:4" -> (1, 4)``; a single number N means N:N. Raises :class:`UsageError` for text that is not numbers;
    the bounds themselves are checked once, by :class:`K8sOptions`."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            low = high = int(parts[0])
        elif len(parts) == 2:
            low, high = int(parts[0]), int(parts[1])
        else:
            raise ValueError(text)
    except ValueError:
        raise UsageError(f"--replicas {text!r} is not MIN:MAX", hint="pass e.g. --replicas 1:4") from None
    return low, high


@dataclass(frozen=True)
class Document:
    """One generated file: its name, the data, and the rendered text."""

    filename: str
    kind: str  # "helm-values" or "manifest"
    data: Mapping[str, Any]
    text: str


@dataclass(frozen=True)
class ApiKeySecret:
    """The Secret that gives vLLM the profile's API key in the cluster. Holds where the key was found, never
    the key: the user creates the Secret (:func:`api_key_secret_command`)."""

    name: str
    namespace: str
    key: str  # the key inside the Secret
    origin: str  # where the profile gives the key: "serve.args --api_key", "[env] VLLM_API_KEY"
    keys_given: int  # vLLM takes several after --api-key; from the Secret it gets one


@dataclass(frozen=True)
class Export:
    profile: str
    model: str
    served_model_name: str
    gpus_per_replica: int
    options: K8sOptions
    deployment: str
    documents: tuple[Document, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    api_key: ApiKeySecret | None = None
    alerts: AlertsSecret | None = None


@dataclass(frozen=True)
class AlertsSecret:
    """The Secret holding Alertmanager's receiver URLs: its name, namespace, and per key the shell variable the
    guide reads the URL from (the profile's ``*_env`` name, or a default). Never a URL."""

    name: str
    namespace: str
    keys: tuple[tuple[str, str], ...]  # (key in the Secret, variable holding the value)


# ---------------------------------------------------------------------------------------------------------------
# Profile -> facts the four files share


def gpus_per_replica(profile: Profile) -> int:
    return 0 if profile.serve.device == "cpu" else vllm_options(profile.serve).tensor_parallel_size


def model_spec_name(profile: Profile) -> str:
    """``modelSpec.name``: the profile name made a DNS label (it is part of Deployment and Service names)."""
    name = re.sub(r"[^a-z0-9-]+", "-", profile.name.lower()).strip("-")
    return name or "model"


def deployment_name(profile: Profile, options: K8sOptions) -> str:
    """The Deployment production-stack creates for the model: ``{release}-{modelSpec.name}-deployment-vllm``."""
    return f"{options.release}-{model_spec_name(profile)}-deployment-vllm"


def _gib_ceil(n_bytes: int) -> int:
    return max(1, math.ceil(n_bytes / GIB))


def resources(profile: Profile) -> dict[str, Any]:
    """CPU, memory and volume sizes for one replica, from the profile's [needs].

    vLLM loads the weights through host memory, so memory is twice the weights plus 8 GiB for the runtime
    (at least 16 GiB); 4 CPUs per GPU (at least 4); the PVC holds the weights with 25% room for a newer
    revision (at least 10 GiB). These are starting points: edit the values file for your nodes."""
    weights = profile.needs.weights_bytes
    disk = max(profile.needs.min_free_disk_bytes, weights)
    gpus = gpus_per_replica(profile)
    return {
        "requestCPU": max(4, 4 * gpus),
        "requestMemory": f"{max(16, _gib_ceil(2 * weights) + 8)}Gi",
        "requestGPU": gpus,
        "pvcStorage": f"{max(10, _gib_ceil(int(disk * 1.25)))}Gi",
    }


def vllm_extra_args(profile: Profile) -> list[str]:
    """vLLM arguments the chart has no field for: served name, revision, sleep mode, KV connector, user args
    (less those the chart owns, :func:`_without_chart_fields`, and never an --api-key)."""
    s, m = profile.serve, profile.model
    args: list[str] = []
    if m.served_name and m.served_name != m.id:
        args += ["--served-model-name", m.served_name]
    default_revision = {"modelscope": "master", "huggingface": "main"}.get(m.source, "")
    if m.revision and m.revision != default_revision:
        args += ["--revision", m.revision]
    if s.enable_sleep_mode and not gives_option(s.args, "--enable-sleep-mode"):
        args.append("--enable-sleep-mode")
    if s.kv_connector and not gives_option(s.args, "--kv-transfer-config"):
        args += ["--kv-transfer-config", kv_transfer_config(s.kv_connector)]
    return args + _without_chart_fields(s.args)


def _bind_options(serve_args: Sequence[str]) -> list[OptionUse]:
    """``--host``/``--port`` among ``serve_args``, in every spelling vLLM reads (``--port=9000``, ``--por 9000``).

    The chart runs ``vllm serve MODEL --host 0.0.0.0 --port CONTAINER_PORT ... EXTRA_ARGS`` and points the
    Service, the probes and the ServiceMonitor at that port: a later --port (vLLM keeps the last) would leave the
    pod listening where nothing looks, a later --host (127.0.0.1) would make it unreachable."""
    return sorted(option_uses(serve_args, "--host") + option_uses(serve_args, "--port"), key=lambda u: u.index)


#: vLLM's prefix-caching flags: the chart sets one of them from ``vllmConfig.enablePrefixCaching``.
_PREFIX_CACHING = ("--enable-prefix-caching", "--no-enable-prefix-caching")


def chart_owned_warnings(profile: Profile) -> list[str]:
    """Warnings for the profile's serve.args left out of ``extraArgs`` because the chart owns them.

    ``--uds``/``--ssl-*``/``--grpc``/``--headless`` never get here: reading the profile refuses them
    (:data:`bootstrap.core.vllm_args.UNSUPPORTED_OPTIONS`), as `vboot serve` does. Stripping them like --host
    and --port would silently turn an HTTPS profile into a plain-HTTP deployment, and their paths (keys,
    sockets) are on this machine, not in the pod."""
    return [f"serve.args {' '.join([u.spelling, *u.values])} left out of extraArgs: in the cluster the chart binds "
            "vLLM to 0.0.0.0 and its container port, where the Service, probes and ServiceMonitor look"
            for u in _bind_options(profile.serve.args)]


def _without_chart_fields(serve_args: Sequence[str]) -> list[str]:
    """``serve_args`` less those the chart sets from its own fields: the API key in every spelling (it comes
    from a Secret, :func:`api_key_secret`), prefix caching, --host and --port (:func:`_bind_options`), and
    tensor parallel in every form :func:`bootstrap.core.profiles.vllm_options` reads (``-tp 4``, ``-tp=4``,
    ``--tensor-parallel-size[=]4``, underscores for dashes, a prefix such as ``--tensor-parallel 4``), so the GPU
    count the values request and the size vLLM gets cannot disagree."""
    serve_args = without_api_keys(serve_args)
    owned = [*_bind_options(serve_args), *option_uses(serve_args, "--tensor-parallel-size", alias="-tp")]
    drop = {i for use in owned for i in use_span(serve_args, use)}
    # Flags: the option alone, never the argument after it.
    drop.update(use.index for flag in _PREFIX_CACHING for use in option_uses(serve_args, flag))
    return [arg for i, arg in enumerate(serve_args) if i not in drop]


def pod_environment(profile: Profile) -> tuple[list[dict[str, str]], list[str]]:
    """The variables the profile implies for vLLM, as a container ``env`` list, plus warnings.

    Same plan as `vboot serve` (:func:`plan_environment`), with the ModelScope cache on the pod's PVC and
    nothing taken from this machine's environment (the cluster does not inherit it). A VLLM_API_KEY from the
    profile's [env] is left out: its value would sit in the values file, and the chart sets the variable from
    the Secret (:func:`api_key_secret`)."""
    plan = plan_environment(profile, Path(POD_MODELSCOPE_CACHE), user_env={})
    return [{"name": v.name, "value": v.value} for v in plan.vars if v.name != API_KEY_ENV], list(plan.warnings)


# ---------------------------------------------------------------------------------------------------------------
# The API key: a Secret the user creates, never a value in the files
#
# production-stack reads ``servingEngineSpec.vllmApiKey`` as either a string, which the chart stores in its own
# ``{release}-secrets`` Secret (so the key would sit in the values file), or ``{secretName, secretKey}``, an
# existing Secret (helm/values.yaml, values.schema.json). Either way the engine pods get VLLM_API_KEY from it
# (deployment-vllm-multi.yaml) and so does the router (deployment-router.yaml, while the chart runs the engines),
# which sends it to the engines as a bearer token (src/vllm_router/service_discovery.py). vboot writes the
# reference and prints the command that creates the Secret.
#
# Monitoring needs no key: vLLM 0.32's AuthenticationMiddleware (vllm/entrypoints/serve/middleware/
# authenticate.py) guards only paths under /v1, /v2, /inference and /cohere, so the chart's /health probes and
# the engine ServiceMonitor's /metrics stay open, and Prometheus, prometheus-adapter and the HPA read
# vllm:num_requests_waiting as before. None of those files gets a credential.


def api_key_secret(profile: Profile, options: K8sOptions) -> ApiKeySecret | None:
    """The Secret that carries the profile's API key, or None when vLLM would run without one.

    Decided as vLLM decides (vllm/entrypoints/serve/middleware/register.py, 0.32): the last --api-key in
    serve.args, any spelling, with at least one non-empty key; else a non-empty VLLM_API_KEY in the profile's
    [env]. An --api-key whose keys are all empty turns authentication off, whatever [env] says."""
    uses = option_uses(profile.serve.args, "--api-key", many=True)
    if uses:
        last = uses[-1]
        given = sum(1 for v in last.values if v)
        origin = f"serve.args {last.spelling}"
    else:
        given = 1 if profile.env.get(API_KEY_ENV) else 0
        origin = f"[env] {API_KEY_ENV}"
    if not given:
        return None
    return ApiKeySecret(name=options.api_key_secret, namespace=options.namespace, key=API_KEY_SECRET_KEY,
                        origin=origin, keys_given=given)


def api_key_secret_command(secret: ApiKeySecret) -> str:
    """The kubectl command that creates ``secret``, reading the key from the shell's VLLM_API_KEY (the variable
    `vboot serve --api-key` reads too) so it stays out of the guide and the shell history. ``${VAR:?}`` makes
    the shell refuse to run it while the variable is unset or empty: an empty key would switch authentication
    off without a word."""
    return (f"kubectl -n {secret.namespace} create secret generic {secret.name} "
            f"--from-literal={secret.key}=\"${{{API_KEY_ENV}:?set {API_KEY_ENV} to the API key first}}\"")


def api_key_warnings(secret: ApiKeySecret | None) -> list[str]:
    """What the user must do about the API key: the key is left out of the files, the Secret is theirs."""
    if secret is None:
        return []
    where = ("left out of extraArgs" if secret.origin.startswith("serve.args")
             else "left out of the pod's env")
    text = (f"{secret.origin} *** {where}: servingEngineSpec.vllmApiKey names Secret {secret.name} "
            f"(key {secret.key}) in namespace {secret.namespace}, which the chart passes to vLLM and the router as "
            f"{API_KEY_ENV}; create it before installing vllm-stack (see the guide), or the vLLM pods will not start")
    if secret.keys_given > 1:
        text += (f". vLLM takes one key from {API_KEY_ENV} and {secret.origin} gives {secret.keys_given}: "
                 "put the one your clients send in the Secret")
    return [text]


# ---------------------------------------------------------------------------------------------------------------
# The four documents as data


def production_stack_values(profile: Profile, options: K8sOptions) -> dict[str, Any]:
    """Values for the ``vllm/vllm-stack`` chart: one modelSpec entry and the engine ServiceMonitor."""
    s = profile.serve
    # The chart passes --no-enable-prefix-caching unless this is true; vLLM (and `vboot serve`) default to on.
    vllm_config: dict[str, Any] = {"enablePrefixCaching": not gives_option(s.args, "--no-enable-prefix-caching")}
    if s.max_model_len:
        vllm_config["maxModelLen"] = s.max_model_len
    if s.dtype:
        vllm_config["dtype"] = s.dtype
    tp = vllm_options(profile.serve).tensor_parallel_size
    if tp > 1:  # the chart adds a memory-backed /dev/shm only when this key is present; NCCL needs it
        vllm_config["tensorParallelSize"] = tp
    if s.gpu_memory_utilization is not None:
        vllm_config["gpuMemoryUtilization"] = s.gpu_memory_utilization
    extra = vllm_extra_args(profile)
    if extra:
        vllm_config["extraArgs"] = extra
    env, _ = pod_environment(profile)
    secret = api_key_secret(profile, options)
    spec: dict[str, Any] = {
        "name": model_spec_name(profile),
        "repository": options.image_repository,
        "tag": options.image_tag,
        "modelURL": profile.model.id,
        "replicaCount": options.min_replicas,
        **resources(profile),
        "vllmConfig": vllm_config,
        "env": env,
    }
    engine: dict[str, Any] = {
        "labels": {"environment": "vboot", "release": options.release, "vboot.dev/profile": profile.name},
    }
    if secret is not None:  # a reference only: a string here would be the key itself, in this file
        engine["vllmApiKey"] = {"secretName": secret.name, "secretKey": secret.key}
    engine["modelSpec"] = [spec]
    engine["serviceMonitor"] = {
        "enabled": True,
        "interval": "15s",
        "scrapeTimeout": "10s",
        "honorLabels": False,
    }
    return {"servingEngineSpec": engine}


def alerts_secret(profile: Profile, options: K8sOptions) -> AlertsSecret | None:
    """The Secret for the receivers of the profile's ``[alerts]`` (None without the table)."""
    a = profile.alerts
    if a is None:
        return None
    keys = []
    if a.webhook:
        keys.append((ALERTS_WEBHOOK_KEY, a.webhook_url_env or DEFAULT_WEBHOOK_ENV))
    if a.slack:
        keys.append((ALERTS_SLACK_KEY, a.slack_webhook_url_env or DEFAULT_SLACK_ENV))
    return AlertsSecret(name=ALERTS_SECRET, namespace=options.monitoring_namespace, keys=tuple(keys))


def alerts_secret_command(secret: AlertsSecret) -> str:
    """The kubectl command that creates the receivers' Secret, each URL read from a shell variable (so it stays
    out of the guide and the shell history), refused by the shell while a variable is unset or empty."""
    literals = " ".join(f'--from-literal={key}="${{{var}:?set {var} to the URL first}}"' for key, var in secret.keys)
    return f"kubectl -n {secret.namespace} create secret generic {secret.name} {literals}"


def alertmanager_values(profile: Profile, options: K8sOptions) -> dict[str, Any]:
    """``alertmanager:`` of kube-prometheus-stack's values. With ``[alerts]``: the receivers' Secret mounted into
    the pods and a route sending vboot's alerts (by name) to a receiver reading its URLs from that Secret's files.
    The chart's own routing is kept: the default route and Watchdog still go to its ``null`` receiver (Helm
    replaces lists, so both are written out again)."""
    from bootstrap.core.alerting import RECEIVER, SLACK_TEXT, SLACK_TITLE, alert_route_matcher

    values: dict[str, Any] = {"enabled": True}
    secret = alerts_secret(profile, options)
    a = profile.alerts
    if secret is None or a is None:
        return values
    receiver: dict[str, Any] = {"name": RECEIVER}
    if a.webhook:
        receiver["webhook_configs"] = [{"url_file": f"{ALERTS_SECRET_DIR}/{ALERTS_WEBHOOK_KEY}",
                                        "send_resolved": a.send_resolved}]
    if a.slack:
        slack: dict[str, Any] = {"api_url_file": f"{ALERTS_SECRET_DIR}/{ALERTS_SLACK_KEY}",
                                 "send_resolved": a.send_resolved, "title": SLACK_TITLE, "text": SLACK_TEXT}
        if a.slack_channel:
            slack["channel"] = a.slack_channel
        receiver["slack_configs"] = [slack]
    names = alert_names() + [n for n in alert_names(gpu=DCGM_EXPORTER) if n not in alert_names()]
    values["alertmanagerSpec"] = {"secrets": [secret.name]}
    values["config"] = {
        "route": {
            "receiver": "null",
            "routes": [
                {"receiver": "null", "matchers": ['alertname = "Watchdog"']},
                {"receiver": RECEIVER, "matchers": [alert_route_matcher(names)],
                 "group_by": ["alertname", "namespace", "model_name"]},
            ],
        },
        "receivers": [{"name": "null"}, receiver],
    }
    return values


def kube_prom_stack_values(profile: Profile, options: K8sOptions,
                           groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Values for ``prometheus-community/kube-prometheus-stack``.

    ``*SelectorNilUsesHelmValues: false`` makes Prometheus pick up ServiceMonitors and PrometheusRules from
    every release and namespace (by default it only sees its own release's), which is how the engine
    ServiceMonitor of the production-stack release gets scraped, and the GPU operator's dcgm-exporter one too.
    Grafana's admin login comes from an existing Secret: the chart's default password is never used; its
    dashboard sidecar loads the ConfigMap of :data:`DASHBOARD_FILE`. Alertmanager: :func:`alertmanager_values`."""
    return {
        "alertmanager": alertmanager_values(profile, options),
        "grafana": {
            "enabled": True,
            "admin": {
                "existingSecret": GRAFANA_SECRET,
                "userKey": GRAFANA_USER_KEY,
                "passwordKey": GRAFANA_PASSWORD_KEY,
            },
            "sidecar": {
                "dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "labelValue": DASHBOARD_LABEL_VALUE},
            },
        },
        "prometheus": {
            "enabled": True,
            "prometheusSpec": {
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "serviceMonitorSelector": {},
                "serviceMonitorNamespaceSelector": {},
                "ruleSelectorNilUsesHelmValues": False,
                "ruleSelector": {},
                "ruleNamespaceSelector": {},
            },
        },
        "additionalPrometheusRulesMap": {
            RULES_MAP_KEY: {
                "additionalLabels": {"vboot.dev/profile": profile.name},
                "groups": [dict(g) for g in groups],
            },
            # dcgm-exporter's names, recorded into the instance_gpu:* series the dashboard's GPU panels read.
            GPU_RULES_MAP_KEY: {
                "additionalLabels": {"vboot.dev/profile": profile.name},
                "groups": gpu_rule_groups(DCGM_EXPORTER),
            },
        },
    }


def dashboard_configmap(profile: Profile, options: K8sOptions) -> dict[str, Any]:
    """A ConfigMap with vboot's vLLM dashboard JSON, in the monitoring namespace, labelled for Grafana's sidecar."""
    from bootstrap.core.dashboard import DASHBOARD_FILE as JSON_KEY
    from bootstrap.core.dashboard import render_dashboard

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": DASHBOARD_CONFIGMAP,
            "namespace": options.monitoring_namespace,
            "labels": {DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE, "app.kubernetes.io/managed-by": "vboot",
                       "vboot.dev/profile": profile.name},
        },
        "data": {JSON_KEY: render_dashboard()},
    }


def adapter_series_query(namespace_label: str = "namespace", pod_label: str = "pod") -> str:
    """The adapter rule's ``seriesQuery``: the waiting-requests gauge of series that belong to a pod."""
    return f'{WAITING_METRIC}{{{namespace_label}!="",{pod_label}!=""}}'


#: The adapter rule's ``metricsQuery`` template (prometheus-adapter fills the ``<<...>>`` fields).
METRICS_QUERY_TEMPLATE = "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"


def adapter_metrics_query(
    namespace_label: str = "namespace",
    pod_label: str = "pod",
    namespace: str | None = None,
    pods: Sequence[str] = (),
    template: str = METRICS_QUERY_TEMPLATE,
) -> str:
    """The adapter's metricsQuery with its template fields filled the way prometheus-adapter fills them for
    ``GET .../namespaces/NS/pods/*/vllm_num_requests_waiting``: the series name, label matchers for the
    namespace and the pods, and ``GroupBy`` = the pod label. With other label names (``job``/``instance`` on a
    plain local Prometheus) the same query can be run outside a cluster. ``template`` is the rule's
    metricsQuery (pass the one read back from prom-adapter-values.yaml to test the file itself)."""
    matchers = []
    if namespace is not None:
        matchers.append(f'{namespace_label}="{_escape_label(namespace)}"')
    if pods:
        matchers.append(f'{pod_label}=~"{"|".join(_escape_label(_regex_literal(p)) for p in pods)}"')
    return (template
            .replace("<<.GroupBy>>", pod_label)
            .replace("<<.Series>>", WAITING_METRIC)
            .replace("<<.LabelMatchers>>", ",".join(matchers)))


def _regex_literal(value: str) -> str:
    """``value`` as an RE2 pattern matching itself (pod names are DNS names; ``.`` is the usual case)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", value)


def _escape_label(value: str) -> str:
    """A PromQL double-quoted string body."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def prom_adapter_values(profile: Profile, options: K8sOptions) -> dict[str, Any]:
    """Values for ``prometheus-community/prometheus-adapter``: the stack's Prometheus and one custom rule."""
    return {
        "prometheus": {"url": options.prometheus_url, "port": 9090, "path": ""},
        "rules": {
            # The default rules expose every container metric; this adapter exists for the vLLM autoscaler.
            "default": False,
            "custom": [
                {
                    "seriesQuery": adapter_series_query(),
                    "resources": {
                        "overrides": {
                            "namespace": {"resource": "namespace"},
                            "pod": {"resource": "pod"},
                        },
                    },
                    "name": {"matches": f"^{re.escape(WAITING_METRIC)}$", "as": CUSTOM_METRIC},
                    "metricsQuery": METRICS_QUERY_TEMPLATE,
                },
            ],
        },
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity string: ``5 -> "5"``, ``2.5 -> "2500m"``."""
    if float(value).is_integer():
        return str(int(value))
    milli = round(value * 1000)
    return f"{milli}m"


def hpa_manifest(profile: Profile, options: K8sOptions) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler scaling the model's Deployment on waiting requests per pod.

    Scale-down waits 10 minutes: a vLLM replica takes minutes to load, so flapping costs more than idling."""
    name = f"{options.release}-{model_spec_name(profile)}"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": options.namespace,
            "labels": {"app.kubernetes.io/managed-by": "vboot", "vboot.dev/profile": profile.name},
            "annotations": {
                "vboot.dev/model": profile.model.id,
                "vboot.dev/gpus-per-replica": str(gpus_per_replica(profile)),
            },
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": deployment_name(profile, options)},
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": CUSTOM_METRIC},
                        "target": {"type": "AverageValue", "averageValue": _quantity(options.queue_target)},
                    },
                },
            ],
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 600},
            },
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _header(profile: Profile, options: K8sOptions, what: str, apply: str, before: str = "") -> str:
    """The comment block on top of a file. Built line by line through :func:`comment`: a profile name, path or
    model id with a line break in it stays inside its comment line."""
    lines = [
        what,
        f"Generated by `vboot export k8s {profile.name}` from {profile.source_path or profile.name}: "
        f"model {profile.model.id}, {gpus_per_replica(profile)} GPU(s) per replica.",
        *([f"Before applying: {before}"] if before else []),
        f"Apply: {apply}",
        f"Regenerate rather than edit: the files share names (namespace {options.namespace}, "
        f"release {options.release}, monitoring namespace {options.monitoring_namespace}).",
    ]
    return "".join(comment(line) for line in lines)


def build_export(profile: Profile, options: K8sOptions, groups: Sequence[Mapping[str, Any]] | None = None) -> Export:
    """The four documents for ``profile``. ``groups`` are the Prometheus rule groups (default: vboot's own,
    :func:`bootstrap.core.prom.rule_groups`, the same rules `vboot serve` loads locally)."""
    if profile.model.source == "local":
        raise UsageError(
            f"profile {profile.name!r} serves a local directory ({profile.model.path}), which pods cannot see",
            hint="export a profile whose model comes from ModelScope or Hugging Face (e.g. `vboot export k8s qwen`)",
        )
    if groups is None:
        groups = rule_groups()
    _, env_warnings = pod_environment(profile)
    secret = api_key_secret(profile, options)
    warnings = env_warnings + chart_owned_warnings(profile) + api_key_warnings(secret)
    ns, mon = options.namespace, options.monitoring_namespace
    stack_before = (f"create Secret {secret.name} holding the API key of {secret.origin} (never written here): "
                    f"{api_key_secret_command(secret)}" if secret else "")
    receivers = alerts_secret(profile, options)
    kps_before = (f"create Secret {receivers.name} holding the alert receivers' URLs (never written here): "
                  f"{alerts_secret_command(receivers)}" if receivers else "")
    docs_data = [
        (PRODUCTION_STACK_FILE, "helm-values", production_stack_values(profile, options),
         "vLLM production-stack values (chart vllm/vllm-stack)",
         f"helm upgrade --install {options.release} vllm/vllm-stack -n {ns} --create-namespace -f "
         f"{PRODUCTION_STACK_FILE}",
         stack_before),
        (KUBE_PROM_STACK_FILE, "helm-values", kube_prom_stack_values(profile, options, groups),
         "kube-prometheus-stack values: Prometheus, Alertmanager, Grafana and vboot's vLLM rules",
         f"helm upgrade --install {options.kps_release} prometheus-community/kube-prometheus-stack -n {mon} "
         f"--create-namespace -f {KUBE_PROM_STACK_FILE}", kps_before),
        (PROM_ADAPTER_FILE, "helm-values", prom_adapter_values(profile, options),
         f"prometheus-adapter values: exposes {WAITING_METRIC} as the pod metric {CUSTOM_METRIC}",
         f"helm upgrade --install {options.adapter_release} prometheus-community/prometheus-adapter -n {mon} "
         f"-f {PROM_ADAPTER_FILE}", ""),
        (HPA_FILE, "manifest", hpa_manifest(profile, options),
         f"HorizontalPodAutoscaler for {deployment_name(profile, options)} on {CUSTOM_METRIC}",
         f"kubectl apply -n {ns} -f {HPA_FILE}", ""),
        (DASHBOARD_FILE, "manifest", dashboard_configmap(profile, options),
         f"Grafana dashboard for vLLM (ConfigMap labelled {DASHBOARD_LABEL}: \"{DASHBOARD_LABEL_VALUE}\" for "
         "kube-prometheus-stack's dashboard sidecar)",
         f"kubectl apply -n {mon} -f {DASHBOARD_FILE}", ""),
    ]
    documents = tuple(
        Document(name, kind, data, _header(profile, options, what, apply, before) + to_yaml(data))
        for name, kind, data, what, apply, before in docs_data
    )
    return Export(
        profile=profile.name, model=profile.model.id, served_model_name=profile.model.served,
        gpus_per_replica=gpus_per_replica(profile), options=options,
        deployment=deployment_name(profile, options), documents=documents, warnings=tuple(warnings),
        api_key=secret, alerts=receivers,
    )


def guide_commands(export: Export, out_dir: str) -> list[str]:
    """The commands that apply the files, in order (kube-prometheus-stack first: it installs the
    ServiceMonitor and PrometheusRule CRDs the other releases use; the API key's Secret, when there is one,
    before vllm-stack, whose pods read it)."""
    o = export.options
    d = out_dir.rstrip("/") or "."
    ns, mon = o.namespace, o.monitoring_namespace
    key_secret: list[str] = []
    if export.api_key is not None:
        if ns != mon:
            key_secret.append(f"kubectl create namespace {ns} --dry-run=client -o yaml | kubectl apply -f -")
        key_secret.append(api_key_secret_command(export.api_key))
    # Alertmanager's pods mount the receivers' Secret: it must exist before the stack is installed.
    receivers = [alerts_secret_command(export.alerts)] if export.alerts is not None else []
    return [
        "helm repo add vllm https://vllm-project.github.io/production-stack",
        "helm repo add prometheus-community https://prometheus-community.github.io/helm-charts",
        "helm repo update",
        f"kubectl create namespace {mon} --dry-run=client -o yaml | kubectl apply -f -",
        f"kubectl -n {mon} create secret generic {GRAFANA_SECRET} --from-literal={GRAFANA_USER_KEY}=admin "
        f"--from-literal={GRAFANA_PASSWORD_KEY}=\"$(openssl rand -base64 24)\"",
        *receivers,
        f"helm upgrade --install {o.kps_release} prometheus-community/kube-prometheus-stack -n {mon} "
        f"-f {d}/{KUBE_PROM_STACK_FILE} --wait",
        f"kubectl apply -n {mon} -f {d}/{DASHBOARD_FILE}",
        f"helm upgrade --install {o.adapter_release} prometheus-community/prometheus-adapter -n {mon} "
        f"-f {d}/{PROM_ADAPTER_FILE}",
        *key_secret,
        f"helm upgrade --install {o.release} vllm/vllm-stack -n {ns} --create-namespace "
        f"-f {d}/{PRODUCTION_STACK_FILE}",
        f"kubectl apply -n {ns} -f {d}/{HPA_FILE}",
        f"kubectl get --raw \"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{ns}/pods/*/{CUSTOM_METRIC}\"",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Writing: plan (what exists, what would change), then write


@dataclass(frozen=True)
class FileWrite:
    path: Path
    # "create", "unchanged", "overwrite" (differs; needs --force), "replace" (differs, forced),
    # "refuse" (something other than a regular file is there: a symbolic link, a directory, a FIFO; never replaced)
    action: str
    size_bytes: int
    reason: str = ""  # for "refuse": what is there


def plan_writes(out_dir: Path, export: Export, force: bool = False) -> list[FileWrite]:
    """What writing ``export`` into ``out_dir`` would do to each file. Nothing is written here.

    Only regular files are compared and replaced. A symbolic link at a file's name is refused, with or without
    --force: writing through it would change a file outside ``out_dir`` (its target), and replacing it would
    silently cut the link the user made; they remove it or pick another --out. The same for a directory or a
    FIFO (reading a FIFO to compare it would block)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConflictError(f"--out {out_dir} exists and is not a directory", hint="pass --out a directory",
                            path=str(out_dir))
    plan = []
    for doc in export.documents:
        path = out_dir / doc.filename
        body = doc.text.encode("utf-8")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            plan.append(FileWrite(path, "create", len(body)))
            continue
        if not stat.S_ISREG(st.st_mode):
            plan.append(FileWrite(path, "refuse", len(body), _what_is_there(path, st)))
            continue
        same = st.st_size == len(body) and path.read_bytes() == body
        action = "unchanged" if same else "replace" if force else "overwrite"
        plan.append(FileWrite(path, action, len(body)))
    return plan


def _what_is_there(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        try:
            return f"a symbolic link to {one_line(os.readlink(path))}"
        except OSError:
            return "a symbolic link"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    return "not a regular file"


def conflicts(plan: Sequence[FileWrite]) -> list[FileWrite]:
    """Files that exist with other content and may not be replaced (no --force), and names held by something
    other than a regular file (never replaced)."""
    return [w for w in plan if w.action in ("overwrite", "refuse")]


def write_files(plan: Sequence[FileWrite], export: Export) -> None:
    """Write every planned file that is new or replaced, all or none as far as the filesystem allows.

    Each text goes to a temporary file created exclusively in the target directory (``mkstemp``: a random name,
    ``O_EXCL``, so a link or file planted at a predictable ``.NAME.tmp`` is never opened), and only once all of
    them are written are they renamed into place. ``rename`` replaces whatever is at the final name without
    following it, so a link that appears there after the plan is replaced, not written through. On failure the
    temporary files are removed and the old files stay as they were."""
    texts = {doc.filename: doc.text for doc in export.documents}
    todo = [w for w in plan if w.action in ("create", "replace")]
    if not todo:
        return
    mode = 0o666 & ~_umask()  # what open() would have given: these files hold no secret
    staged: list[tuple[str, Path]] = []
    try:
        for w in todo:
            w.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=w.path.parent, prefix=f".{w.path.name}.", suffix=".tmp")
            staged.append((tmp, w.path))
            with os.fdopen(fd, "wb") as f:
                f.write(texts[w.path.name].encode("utf-8"))
                os.fchmod(f.fileno(), mode)
        for tmp, final in staged:
            os.replace(tmp, final)
    except OSError as exc:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        where = exc.filename or (todo[0].path.parent if todo else "")
        message = f"cannot write the Kubernetes files in {where}: {exc.strerror or exc}"
        if exc.errno == errno.ENOSPC:  # a full disk is not a permission problem: its own code
            raise DiskFullError(message, hint="free space (`vboot disk caches`), or pass another --out",
                                path=str(where)) from None
        raise OutputUnwritableError(message, hint="check the permissions of --out, or pass another --out",
                                    path=str(where)) from None


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current
