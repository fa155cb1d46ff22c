"""`vboot serve`'s plan: everything decided before a process starts, as one frozen object.

The CLI resolves the settings, runs the pre-flight and finds the model; :func:`build_plan` turns those facts
into the exact command, the child's environment, the files of the run directory and the run record to write.
Nothing here touches the disk or a process: :func:`write_run_dir` writes what the plan says, once.

Secrets: the API key never reaches vLLM's command line (every local user can read it in ``ps``): vLLM gets it as
``VLLM_API_KEY``. The run directory is private (0700) and the one file that holds the key for Prometheus is
0600; everything shown or recorded goes through :func:`bootstrap.core.environ.mask`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core import alerting, prom
from bootstrap.core.alerting import PrivateFile, Receivers
from bootstrap.core.atomicwrite import write_atomic
from bootstrap.core.environ import Environ, mask
from bootstrap.core.envplan import EnvPlan, EnvVar
from bootstrap.core.gpu_exporter import GpuExporterPlan
from bootstrap.core.lifecycle import ProbeSettings, RestartPolicy
from bootstrap.core.profiles import API_KEY_VAR, Profile, ServeSettings
from bootstrap.core.runs import RunRecord, ServeInputs, client_host
from bootstrap.core.vllm_cmd import VllmInstall, build_command, redact, without_api_keys

RUN_DIR_MODE = 0o700
SECRET_FILE_MODE = 0o600
PROMETHEUS_KEY_FILE = "prometheus.key"
# Variables systemd gives vboot that belong to vboot alone: vLLM must not answer systemd in vboot's name.
SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class RunFile:
    """One file of the run directory: its name, text and permission bits."""

    name: str
    text: str = field(repr=False)  # may hold a secret (prometheus.key)
    mode: int = 0o644


@dataclass(frozen=True)
class Sidecar:
    """A helper process supervised beside vLLM (Prometheus), on 127.0.0.1."""

    name: str
    argv: tuple[str, ...]
    port: int
    log: str  # file name in the run directory

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class ServePlan:
    """Everything `vboot serve` will run and write, decided before anything starts."""

    name: str
    profile: str
    run_dir: Path
    argv: tuple[str, ...]  # exactly what runs; never holds a secret
    env: Mapping[str, str] = field(repr=False)  # the child's whole environment (may hold secrets: never shown)
    env_vars: tuple[EnvVar, ...]  # what vboot sets, with where each comes from (show through shown_env_vars)
    warnings: tuple[str, ...]
    host: str
    port: int
    served_model_name: str
    model_id: str
    model_path: str
    device: str
    api_key: str | None = field(repr=False)
    inputs: ServeInputs
    fingerprint: str
    files: tuple[RunFile, ...] = ()
    private_files: tuple[PrivateFile, ...] = field(default=(), repr=False)  # alertmanager/, 0600 in a 0700 dir
    prometheus: Sidecar | None = None
    alertmanager: Sidecar | None = None
    gpu_exporter: Sidecar | None = None
    secret_values: tuple[str, ...] = field(default=(), repr=False)  # alert receiver URLs: masked wherever shown
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    detached: bool = False
    smoke: bool = True
    vllm_python: str = ""
    vllm_distribution: str = ""
    device_reason: str = ""  # why the device: "GPU: profile qwen asks for it (device = "gpu")"
    # Several servers on one box (bootstrap.core.colocate)
    gpus: tuple[str, ...] = ()  # the GPUs it runs on (colocate.gpu_key)
    gpu_memory_utilization: float = 0.0
    cpu_kvcache_bytes: int = 0
    start_locks: tuple[str, ...] = ()
    sleep_mode: bool = False
    idle_sleep_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{client_host(self.host)}:{self.port}"

    @property
    def log(self) -> Path:
        return self.run_dir / "vllm.log"

    @property
    def shown_argv(self) -> list[str]:
        return redact(list(self.argv))

    @property
    def sidecars(self) -> tuple[Sidecar, ...]:
        """The helper processes to run beside vLLM, in start order."""
        return tuple(s for s in (self.alertmanager, self.gpu_exporter, self.prometheus) if s is not None)

    def shown_env_vars(self) -> list[tuple[str, str, str]]:
        """(name, value masked when it is a secret, origin) of each variable vboot sets, for people."""
        return [(v.name, shown_value(v.name, v.value, self.secret_values), v.origin) for v in self.env_vars]


def shown_value(name: str, value: str, secrets: Sequence[str] = ()) -> str:
    """A variable's value as it may be shown or recorded: masked when its name looks like a secret's, or when it
    holds one of ``secrets`` (an alert receiver's URL, whatever the variable is called)."""
    if any(s and s in value for s in secrets):
        return "***"
    return mask(name, value)


def child_environment(user_env: Mapping[str, str], env_plan: EnvPlan, api_key: str | None,
                      drop: Sequence[str] = ()) -> dict[str, str]:
    """vLLM's environment: the user's, updated by the plan, with the resolved key as ``VLLM_API_KEY`` and without
    the variables systemd meant for vboot or those in ``drop`` (the alert receivers' URLs: vLLM has no use for
    them)."""
    out = {k: v for k, v in user_env.items() if k not in SYSTEMD_VARS and k not in drop}
    out.update(env_plan.as_dict())
    if api_key:
        out[API_KEY_VAR] = api_key
    else:
        out.pop(API_KEY_VAR, None)  # an empty or absent key: vLLM must not pick up another
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out


def fingerprint(argv: Sequence[str], env_vars: Sequence[EnvVar], api_key_set: bool, model: str = "") -> str:
    """What the server runs, in 16 hex digits: its command, the variables vboot sets and the model (id@revision);
    a key counts by its presence only, so the record reveals nothing of it."""
    doc = {"argv": list(argv), "env": sorted((v.name, v.value) for v in env_vars if v.name != API_KEY_VAR),
           "api_key": api_key_set, "model": model}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def current_fingerprint(record: RunRecord, env: Environ) -> str | None:
    """The fingerprint of what the run's profile resolves to now (with the flags it was started with, in this
    environment), to compare with the one taken at start; None when it cannot be resolved (an old record, a
    profile since deleted or broken)."""
    from bootstrap.core.envplan import plan_environment
    from bootstrap.core.errors import VbootError
    from bootstrap.core.profiles import load_profile, resolve_serve_settings

    inputs = record.inputs
    if inputs is None or not record.vllm_python or not record.vllm_distribution:
        return None
    try:
        profile = load_profile(inputs.profile, env)
        # A picked port (`--port auto`) is the record's: resolving "auto" again would pick another one.
        settings = resolve_serve_settings(profile, env, host=inputs.host,
                                          port=record.port if inputs.port_auto else inputs.port,
                                          extra_args=inputs.extra_args, cache_dir=inputs.cache_dir,
                                          vllm_python=inputs.vllm_python, device=inputs.device)
    except VbootError:
        return None
    install = VllmInstall(record.vllm_python, record.vllm_distribution, "")
    argv = build_command(install, record.model_path, settings, record.device)
    env_plan = plan_environment(profile, settings.cache_dir, env, settings.vllm)
    return fingerprint(argv, env_plan.vars, bool(settings.api_key), _model(profile))


def _model(profile: Profile) -> str:
    return f"{profile.model.id}@{profile.model.revision}"


def prometheus_sidecar(exe: str, run_dir: Path, port: int) -> Sidecar:
    """Prometheus on 127.0.0.1:``port`` with the run's config, its data in the run directory."""
    argv = (exe, f"--config.file={run_dir / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={run_dir / 'prometheus-data'}", "--web.enable-lifecycle")
    return Sidecar("prometheus", argv, port, "prometheus.log")


@dataclass(frozen=True)
class Observability:
    """What runs beside Prometheus, decided by the CLI from what is installed: Alertmanager with the profile's
    receivers, and a GPU exporter."""

    receivers: Receivers | None = None
    alertmanager_exe: str | None = None
    alertmanager_port: int | None = None
    gpu_exporter: GpuExporterPlan | None = None


def build_plan(settings: ServeSettings, *, install: VllmInstall, device: str, env_plan: EnvPlan,
               user_env: Mapping[str, str], model_dir: str, name: str, run_dir: Path, inputs: ServeInputs,
               prometheus_exe: str | None = None, prometheus_port: int | None = None,
               restart: RestartPolicy | None = None, probes: ProbeSettings | None = None, detached: bool = False,
               smoke: bool = True, device_reason: str = "", observability: Observability | None = None,
               gpus: Sequence[str] = (), idle_sleep_s: float = 0.0) -> ServePlan:
    """The plan of one `vboot serve` from facts the caller gathered (pre-flight, model, free ports, programs;
    ``gpus``: the GPUs it will run on, as :func:`bootstrap.core.colocate.gpu_key` names them)."""
    from bootstrap.core.colocate import cpu_kvcache_bytes, lock_names
    from bootstrap.core.dashboard import DASHBOARD_FILE, render_dashboard

    obs = observability or Observability()
    receivers = obs.receivers or Receivers()
    profile = settings.profile
    argv = tuple(build_command(install, model_dir, settings, device))
    env = child_environment(user_env, env_plan, settings.api_key, drop=receivers.env_names)
    secrets = receivers.secrets
    target = f"{client_host(settings.host)}:{settings.port}"
    alertmanager = gpu = None
    private: tuple[PrivateFile, ...] = ()
    if prometheus_exe and obs.alertmanager_exe and obs.alertmanager_port:
        am_dir = run_dir / alerting.ALERTMANAGER_DIR
        private = alerting.render_alertmanager_files(receivers, am_dir)
        alertmanager = Sidecar("alertmanager", tuple(alerting.alertmanager_argv(obs.alertmanager_exe, am_dir,
                                                                                obs.alertmanager_port)),
                               obs.alertmanager_port, f"{alerting.ALERTMANAGER_DIR}/{alerting.LOG_FILE}")
    if prometheus_exe and obs.gpu_exporter is not None:
        g = obs.gpu_exporter
        gpu = Sidecar("gpu-exporter", g.argv, g.port, g.log_file)
    files = [
        RunFile("cmdline", shlex.join(redact(list(argv))) + "\n"),
        RunFile("env.json", json.dumps(
            {"set_by_vboot": {v.name: shown_value(v.name, v.value, secrets) for v in env_plan.vars},
             "full": {k: shown_value(k, v, secrets) for k, v in sorted(env.items())}}, indent=2) + "\n"),
        RunFile("prometheus.yml", prom.render_prometheus_config(
            name, target, labels={"profile": profile.name},
            api_key_file=str(run_dir / PROMETHEUS_KEY_FILE) if settings.api_key else None,
            alertmanagers=[f"127.0.0.1:{alertmanager.port}"] if alertmanager else (),
            extra_jobs=[obs.gpu_exporter.scrape_job] if gpu and obs.gpu_exporter else ())),
        RunFile(prom.RULES_FILE, prom.render_rules(gpu=obs.gpu_exporter.metrics if gpu and obs.gpu_exporter
                                                   else None)),
        RunFile(DASHBOARD_FILE, render_dashboard()),
    ]
    if settings.api_key:
        # vLLM does not guard /metrics with its key, but a proxy in front may: Prometheus reads the key from a
        # file only this user can read, never from the (shareable) config.
        files.append(RunFile(PROMETHEUS_KEY_FILE, settings.api_key, SECRET_FILE_MODE))
    sidecar = None
    if prometheus_exe and prometheus_port:
        sidecar = prometheus_sidecar(prometheus_exe, run_dir, prometheus_port)
    return ServePlan(
        name=name, profile=profile.name, run_dir=run_dir, argv=argv, env=env, env_vars=env_plan.vars,
        warnings=env_plan.warnings, host=settings.host, port=settings.port, served_model_name=profile.model.served,
        model_id=profile.model.id, model_path=model_dir, device=device, api_key=settings.api_key,
        files=tuple(files), private_files=private, inputs=inputs,
        fingerprint=fingerprint(argv, env_plan.vars, bool(settings.api_key), _model(profile)),
        vllm_python=install.python, vllm_distribution=install.distribution, device_reason=device_reason,
        prometheus=sidecar, alertmanager=alertmanager, gpu_exporter=gpu, secret_values=secrets,
        restart=restart or RestartPolicy(), probes=probes or ProbeSettings(), detached=detached, smoke=smoke,
        gpus=tuple(gpus) if device == "gpu" else (),
        gpu_memory_utilization=settings.vllm.gpu_memory_utilization if device == "gpu" else 0.0,
        cpu_kvcache_bytes=cpu_kvcache_bytes(env.get("VLLM_CPU_KVCACHE_SPACE")) if device == "cpu" else 0,
        start_locks=lock_names(device, gpus), sleep_mode=settings.vllm.enable_sleep_mode, idle_sleep_s=idle_sleep_s,
    )


def serve_inputs(profile: str, *, host: str | None, port: int | None, cache_dir: str | None,
                 vllm_python: str | None, device: str | None, extra_args: Sequence[str],
                 port_auto: bool = False) -> ServeInputs:
    """The user's request, as recorded (any --api-key among the vLLM arguments left out)."""
    return ServeInputs(profile=profile, host=host, port=port, cache_dir=cache_dir, vllm_python=vllm_python,
                       device=device, extra_args=tuple(without_api_keys(extra_args)), port_auto=port_auto)


def write_run_dir(plan: ServePlan) -> None:
    """Create the run directory (private) and write the plan's files; secret-bearing ones are created with their
    mode from the start (never world-readable, not even for a moment)."""
    plan.run_dir.mkdir(parents=True, exist_ok=True, mode=RUN_DIR_MODE)
    os.chmod(plan.run_dir, RUN_DIR_MODE)  # an existing directory from an older vboot
    for f in plan.files:
        write_atomic(plan.run_dir / f.name, f.text, f.mode)
    if plan.prometheus is not None:
        (plan.run_dir / "prometheus-data").mkdir(exist_ok=True)
    if plan.alertmanager is not None:
        alerting.write_private_files(plan.run_dir / alerting.ALERTMANAGER_DIR, plan.private_files)


def plan_to_json(plan: ServePlan) -> dict[str, object]:
    """The plan for the detached supervisor (sent through a pipe, never written: it holds the environment's
    secrets). The run directory's files are left out: they are written before the supervisor starts."""
    from dataclasses import replace

    from bootstrap.core.envelope import to_jsonable

    doc: dict[str, object] = to_jsonable(replace(plan, files=(), private_files=()))
    return doc


def plan_from_json(doc: dict[str, object]) -> ServePlan:
    """The plan :func:`plan_to_json` sent."""
    from bootstrap.core.envelope import from_jsonable

    plan: ServePlan = from_jsonable(ServePlan, doc)
    return plan
