"""Alertmanager for one `vboot serve --prometheus`: receivers from the profile, its configuration and command line.

Pure pieces, in the order a server uses them:

1. :func:`resolve_receivers`: the profile's ``[alerts]`` table (:class:`bootstrap.core.profiles.AlertsSpec`) with
   the URLs read from the environment where the profile names a variable. The result holds secrets; its repr
   does not show them, and errors name the variable, never the value.
2. :func:`render_alertmanager_files`: ``alertmanager.yml`` plus, for Slack, a file holding only the Slack URL
   (read by Alertmanager through ``api_url_file``), all meant for :data:`ALERTMANAGER_DIR` inside the run
   directory. Debian 12's Alertmanager (0.25) has no ``url_file`` for webhooks (that came in 0.26; ``amtool
   check-config`` 0.25 refuses the field), so a webhook URL sits in ``alertmanager.yml`` itself: every file here
   is written 0600 in a 0700 directory (:func:`write_private_files`) and never printed. Alertmanager 0.25 also
   shows a webhook URL (not a Slack one) in its own log when a delivery fails and in ``/api/v2/status``: its log
   belongs in the same private directory (:data:`LOG_FILE`) and its API on loopback only.
3. :func:`alertmanager_argv`: Alertmanager on 127.0.0.1, storage in the run directory, no cluster listener
   (``--cluster.listen-address=``: a single local instance must not open a gossip port on every interface).

Prometheus sends to it through ``render_prometheus_config(..., alertmanagers=["127.0.0.1:PORT"])``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.core.atomicwrite import write_atomic
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ReceiverError
from bootstrap.core.profiles import AlertsSpec, url_problem
from bootstrap.core.prom import duration
from bootstrap.core.yamltext import to_yaml

#: Folder inside the run directory holding everything Alertmanager reads or writes (mode 0700).
ALERTMANAGER_DIR = "alertmanager"
CONFIG_FILE = "alertmanager.yml"
#: The Slack URL alone, read by Alertmanager through ``slack_configs[].api_url_file``.
SLACK_URL_FILE = "slack_api_url"
#: Alertmanager's log: 0.25 writes a failing webhook's URL into it, so it lives in the private directory.
LOG_FILE = "alertmanager.log"
DATA_DIR = "data"
#: The one receiver vboot configures (webhook and Slack are two integrations of it).
RECEIVER = "vboot"
#: Debian names the binary prometheus-alertmanager; upstream tarballs and other distributions alertmanager.
PROGRAMS: tuple[str, ...] = ("prometheus-alertmanager", "alertmanager")
DEFAULT_PORT = 9093

#: The Slack message: each alert's summary and description (the stock template shows only labels).
SLACK_TITLE = ('[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] '
               '{{ .CommonLabels.alertname }}')
SLACK_TEXT = "{{ range .Alerts }}*{{ .Annotations.summary }}*\n{{ .Annotations.description }}\n{{ end }}"


@dataclass(frozen=True)
class Receivers:
    """Where alerts go, with the URLs resolved. Holds secrets: never print it whole (its repr hides the URLs)."""

    webhook_url: str | None = field(default=None, repr=False)
    slack_api_url: str | None = field(default=None, repr=False)
    slack_channel: str = ""
    send_resolved: bool = True
    # Environment variables the URLs came from: drop them from children's environments and mask them in records.
    env_names: tuple[str, ...] = ()

    @property
    def secrets(self) -> tuple[str, ...]:
        """The URLs, for masking wherever something is recorded or printed."""
        return tuple(v for v in (self.webhook_url, self.slack_api_url) if v)

    @property
    def any(self) -> bool:
        return bool(self.webhook_url or self.slack_api_url)

    def describe(self) -> list[str]:
        """What is configured, without a URL: ``["webhook", "slack #vllm"]``."""
        out = []
        if self.webhook_url:
            out.append("webhook")
        if self.slack_api_url:
            out.append(f"slack {self.slack_channel}".rstrip())
        return out


def resolve_receivers(spec: AlertsSpec | None, env: Environ, source: str = "the profile") -> Receivers:
    """The receivers of ``spec`` (None: none) with ``*_env`` keys read from ``env``.

    Raises :class:`ReceiverError` when a named variable is unset or empty, or holds something that is not an
    http(s) URL; the message names the key and the variable, never the value."""
    if spec is None:
        return Receivers()
    names: list[str] = []

    def url(key: str, literal: str, var: str) -> str | None:
        if literal:
            return literal
        if not var:
            return None
        value = env.get(var)
        if not value:
            raise ReceiverError(f"[alerts] {key}_env in {source} names {var}, which is not set",
                                hint=f"export {var}=URL (e.g. `read -rs {var} && export {var}`), or remove "
                                     f"{key}_env from [alerts]")
        problem = url_problem(value)
        if problem:
            raise ReceiverError(f"{var} (from [alerts] {key}_env in {source}) {problem}",
                                hint=f"set {var} to the receiver's http(s) URL")
        names.append(var)
        return value

    webhook = url("webhook_url", spec.webhook_url, spec.webhook_url_env)
    slack = url("slack_webhook_url", spec.slack_webhook_url, spec.slack_webhook_url_env)
    return Receivers(webhook_url=webhook, slack_api_url=slack, slack_channel=spec.slack_channel,
                     send_resolved=spec.send_resolved, env_names=tuple(names))


@dataclass(frozen=True)
class RouteTiming:
    """Alertmanager's grouping delays, in seconds. ``group_wait`` is how long a new group waits for more alerts
    before the first notification: it adds to every alert's delivery time (Alertmanager's default is 30 s; 10 s
    keeps a server-down alert within seconds of its rule firing)."""

    group_wait_s: float = 10.0
    group_interval_s: float = 60.0
    repeat_interval_s: float = 4 * 3600.0

    def __post_init__(self) -> None:
        if self.group_wait_s < 0 or self.group_interval_s <= 0 or self.repeat_interval_s <= 0:
            raise ValueError("group_wait_s must be >= 0 and the intervals positive")


def _duration(seconds: float) -> str:
    return "0s" if seconds == 0 else duration(seconds)


def alertmanager_config(receivers: Receivers, slack_api_url_file: str | None = None,
                        timing: RouteTiming = RouteTiming()) -> dict[str, Any]:
    """The Alertmanager configuration as data: one route to the :data:`RECEIVER` receiver, grouped per alert and
    server. With Slack, ``slack_api_url_file`` is the path of the file holding its URL (required then). A receiver
    with no integration is valid: alerts then show in Alertmanager's UI (``amtool alert``) and go nowhere."""
    receiver: dict[str, Any] = {"name": RECEIVER}
    if receivers.webhook_url:
        receiver["webhook_configs"] = [{"url": receivers.webhook_url, "send_resolved": receivers.send_resolved}]
    if receivers.slack_api_url:
        if not slack_api_url_file:
            raise ValueError("Slack needs slack_api_url_file: the URL is read from that file, never inlined")
        slack: dict[str, Any] = {"api_url_file": slack_api_url_file, "send_resolved": receivers.send_resolved,
                                 "title": SLACK_TITLE, "text": SLACK_TEXT}
        if receivers.slack_channel:
            slack["channel"] = receivers.slack_channel
        receiver["slack_configs"] = [slack]
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname", "job", "instance", "model_name"],
            "group_wait": _duration(timing.group_wait_s),
            "group_interval": _duration(timing.group_interval_s),
            "repeat_interval": _duration(timing.repeat_interval_s),
        },
        "receivers": [receiver],
    }


@dataclass(frozen=True)
class PrivateFile:
    """A file for :func:`write_private_files` (mode 0600). ``text`` may hold a secret: the repr hides it."""

    name: str
    text: str = field(repr=False)


def render_alertmanager_files(receivers: Receivers, am_dir: Path,
                              timing: RouteTiming = RouteTiming()) -> tuple[PrivateFile, ...]:
    """``alertmanager.yml`` (and ``slack_api_url`` with Slack) for the private directory ``am_dir`` (the config
    names the Slack file by its absolute path there)."""
    slack_file = str(am_dir / SLACK_URL_FILE) if receivers.slack_api_url else None
    header = ("# Generated by vboot: Alertmanager for one server. Private (0600): it may hold a receiver URL.\n"
              "# The receivers come from the profile's [alerts]; change them there, not here.\n")
    files = [PrivateFile(CONFIG_FILE, header + to_yaml(alertmanager_config(receivers, slack_file, timing)))]
    if receivers.slack_api_url:
        files.append(PrivateFile(SLACK_URL_FILE, receivers.slack_api_url))
    return tuple(files)


def write_private_files(directory: Path, files: Sequence[PrivateFile]) -> list[Path]:
    """Write ``files`` into ``directory`` (created, or tightened, to 0700), each 0600 from its first byte
    (:func:`bootstrap.core.atomicwrite.write_atomic`): no reader ever sees a half-written or world-readable file."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    written = []
    for f in files:
        write_atomic(directory / f.name, f.text, 0o600)
        written.append(directory / f.name)
    return written


def alertmanager_argv(exe: str, am_dir: Path, port: int, host: str = "127.0.0.1",
                      extra: Sequence[str] = ()) -> list[str]:
    """Alertmanager's command line: the config and storage in ``am_dir``, the web/API on ``host:port``
    (loopback), and no cluster listener (0.25 otherwise binds 0.0.0.0:9094 for gossip). Its log
    (:data:`LOG_FILE`) is the caller's to open in ``am_dir``."""
    return [exe, f"--config.file={am_dir / CONFIG_FILE}", f"--storage.path={am_dir / DATA_DIR}",
            f"--web.listen-address={host}:{port}", "--cluster.listen-address=", *extra]


def amtool_check_argv(amtool: str, config_file: Path) -> list[str]:
    """``amtool check-config FILE``: exit 0 and "SUCCESS" for a valid configuration."""
    return [amtool, "check-config", str(config_file)]


def masked(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***`` (for logs and messages that might quote one)."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def alert_route_matcher(names: Sequence[str]) -> str:
    """An Alertmanager matcher for exactly these alert names (``alertname =~ "A|B"``)."""
    import re

    return f'alertname =~ "{"|".join(re.escape(n) for n in names)}"'


def redact_mapping(values: Mapping[str, str], receivers: Receivers) -> dict[str, str]:
    """``values`` (an environment) with the receivers' variables and any value holding a receiver URL masked."""
    out = {}
    for k, v in values.items():
        out[k] = "***" if k in receivers.env_names or any(s and s in v for s in receivers.secrets) else v
    return out
