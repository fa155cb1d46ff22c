"""`vboot service`: a profile as a systemd service that survives crashes and reboots.

The unit runs ``vboot serve PROFILE --restart no`` in the foreground as ``Type=notify``: vboot tells systemd
``READY=1`` only once the server answered a real generation, pings the watchdog after each liveness probe, and
exits non-zero (8) when vLLM fails, so that ``Restart=on-failure`` restarts it (vboot's own restarts are off:
one restarter is enough, and systemd's counts show in ``NRestarts``).

Everything is rendered by :func:`render_unit` (pure) with systemd's quoting rules (systemd.syntax(7),
systemd.service(5) "Command lines"): arguments double-quoted with C escapes, ``%`` doubled (specifiers) and
``$`` doubled in command lines (variable expansion). Secrets never go into the unit (``systemctl cat`` shows it
to every user): they go into an ``EnvironmentFile=`` created 0600.

Left out on purpose: hardening options that break vLLM (vLLM #12474): ``RestrictAddressFamilies=``,
``IPAddressDeny=``/``IPAddressAllow=``, ``PrivateNetwork=``, ``ProtectClock=``, ``MemoryDenyWriteExecute=`` (its
JIT compilers need W+X pages), ``PrivateDevices=`` (hides /dev/nvidia*).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core.environ import Environ, is_secret
from bootstrap.core.errors import UsageError

MARKER = "# Written by vboot (vboot service install); `vboot service uninstall NAME` removes it."
UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\-]{1,200}$")  # systemd's unit-name alphabet (before ".service")
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")  # systemd's strict user-name rule (and useradd's)
STOP_GRACE_S = 20.0  # vboot serve's SIGTERM -> SIGKILL grace; TimeoutStopSec= must be longer
# Variables that decide where vboot finds its profiles, state, vLLM and models: the service gets the values
# the installing shell had, so that it serves exactly what `vboot serve` would have served there.
PASSED_VARS = ("HOME", "PATH", "LANG", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME",
               "VBOOT_VLLM_PYTHON", "VBOOT_PULL_MARGIN", "MODELSCOPE_CACHE", "MS_CACHE_HOME", "MODELSCOPE_ENDPOINT",
               "MODELSCOPE_HOME", "MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "VLLM_CACHE_ROOT", "VLLM_CPU_KVCACHE_SPACE",
               "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
               "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "VLLM_USE_MODELSCOPE", "TORCH_HOME",
               "TRITON_CACHE_DIR", "VLLM_API_KEY")


@dataclass(frozen=True)
class UnitSpec:
    """What the unit says. Times in seconds."""

    name: str  # without ".service"
    description: str
    exec_start: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=dict)  # not secret: written into the unit
    environment_file: str | None = None  # secrets live there (0600)
    user: str | None = None  # --system only; None: root
    restart_sec: float = 5.0
    timeout_start_s: float = 1020.0
    timeout_stop_s: float = 60.0
    watchdog_s: float | None = 120.0
    start_limit_burst: int = 5
    start_limit_interval_s: float = 600.0
    wanted_by: str = "multi-user.target"  # default.target for a user unit


@dataclass(frozen=True)
class ServiceFiles:
    """The files `service install` writes: the unit, and the secrets beside it (empty: no file)."""

    unit_path: Path
    unit_text: str
    env_path: Path | None
    env_text: str  # KEY="value" lines, for EnvironmentFile= (0600)


def unit_name_ok(name: str) -> bool:
    return UNIT_NAME.fullmatch(name) is not None and not name.startswith("-")


def _refuse_control(what: str, value: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError(f"{what} holds a control character ({value!r}); systemd units hold one line per setting",
                         hint="remove the line break or control character")


_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b",
              "\f": "\\f", "\v": "\\v"}


def quote_word(value: str, *, expand_dollar: bool) -> str:
    """One double-quoted word for a unit file (systemd.syntax(7)): ``\\`` and ``"`` escaped, control characters as
    C escapes (``\\n``, ``\\x1b``), ``%`` doubled (no specifier expands) and in command lines ``$`` doubled (no
    variable expands). A NUL cannot be in an argument or a variable and is refused."""
    if "\0" in value:
        raise UsageError(f"a value for the unit holds a NUL character ({value!r})", hint="remove it")
    out = []
    for ch in value:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and expand_dollar:
            out.append("$$")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render_command(argv: Sequence[str]) -> str:
    """``ExecStart=``'s value: every argument quoted, so that systemd passes it on byte for byte."""
    return " ".join(quote_word(a, expand_dollar=True) for a in argv)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def render_unit(spec: UnitSpec) -> str:
    """The unit file's text."""
    if not unit_name_ok(spec.name):
        raise UsageError(f"{spec.name!r} is not a valid unit name", hint="use letters, digits, ':', '_', '.', '-'")
    _refuse_control("the description", spec.description)
    lines = [
        MARKER,
        "[Unit]",
        f"Description={spec.description.replace('%', '%%')}",
        "Wants=network-online.target",
        "After=network-online.target",
        f"StartLimitIntervalSec={_seconds(spec.start_limit_interval_s)}",
        f"StartLimitBurst={spec.start_limit_burst}",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",  # only vboot speaks for the service, never a vLLM process
        f"ExecStart={render_command(spec.exec_start)}",
        "Restart=on-failure",
        f"RestartSec={_seconds(spec.restart_sec)}",
        f"TimeoutStartSec={_seconds(spec.timeout_start_s)}",
        f"TimeoutStopSec={_seconds(spec.timeout_stop_s)}",
        "KillMode=control-group",
    ]
    if spec.watchdog_s:
        lines.append(f"WatchdogSec={_seconds(spec.watchdog_s)}")
    if spec.user:
        if not USER_NAME.fullmatch(spec.user):
            raise UsageError(f"{spec.user!r} is not a user name systemd accepts", hint="run as that user, or as root")
        lines.append(f"User={spec.user}")
    for key in sorted(spec.environment):
        lines.append(f"Environment={quote_word(f'{key}={spec.environment[key]}', expand_dollar=False)}")
    if spec.environment_file:
        # One path, taken whole (no quoting); only specifiers expand.
        _refuse_control("the environment file's path", spec.environment_file)
        lines.append(f"EnvironmentFile={spec.environment_file.replace('%', '%%')}")
    lines += ["", "[Install]", f"WantedBy={spec.wanted_by}", ""]
    return "\n".join(lines)


def render_env_file(values: Mapping[str, str]) -> str:
    """``EnvironmentFile=`` lines (systemd.exec(5)): ``KEY="value"`` with ``\\`` and ``"`` escaped; a value that
    holds a line break cannot be written and is refused."""
    out = []
    for key in sorted(values):
        value = values[key]
        _refuse_control(f"{key}'s value", value)
        out.append(f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "\n".join(out) + ("\n" if out else "")


def split_environment(env: Environ, names: Sequence[str] = PASSED_VARS) -> tuple[dict[str, str], dict[str, str]]:
    """The installing shell's values of ``names`` that are set: (plain, secret)."""
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name in names:
        value = env.get(name)
        if value is None:
            continue
        (secret if is_secret(name) else plain)[name] = value
    return plain, secret


def unit_dir(system: bool, env: Environ) -> Path:
    """Where units go: /etc/systemd/system, or the user's ``$XDG_CONFIG_HOME/systemd/user``."""
    if system:
        return Path("/etc/systemd/system")
    base = env.path("XDG_CONFIG_HOME") or env.home() / ".config"
    return base / "systemd" / "user"


def secrets_path(system: bool, env: Environ, name: str) -> Path:
    """Where a unit's secrets go: /etc/vboot/NAME.env (root only), or ``$XDG_CONFIG_HOME/vboot/NAME.env``."""
    if system:
        return Path("/etc/vboot") / f"{name}.env"
    base = env.path("XDG_CONFIG_HOME") or env.home() / ".config"
    return base / "vboot" / f"{name}.env"


def watchdog_for(probe_interval_s: float, probe_timeout_s: float) -> float | None:
    """A watchdog period that a healthy server always meets: vboot pings after each successful probe, and
    probes at least twice per period; off when probes are off."""
    if probe_interval_s <= 0:
        return None
    return max(120.0, 3 * probe_interval_s + probe_timeout_s)


def plan_files(spec: UnitSpec, system: bool, env: Environ, secrets: Mapping[str, str]) -> ServiceFiles:
    env_path = secrets_path(system, env, spec.name) if secrets else None
    if env_path is not None:
        spec = UnitSpec(**{**spec.__dict__, "environment_file": str(env_path)})
    return ServiceFiles(unit_dir(system, env) / f"{spec.name}.service", render_unit(spec), env_path,
                        render_env_file(secrets))


@dataclass(frozen=True)
class ServiceState:
    """systemd's view of a unit (``systemctl show``) and what vboot recorded of the server it runs."""

    name: str
    properties: Mapping[str, str]

    @property
    def active(self) -> str:
        return self.properties.get("ActiveState", "")

    def number(self, key: str) -> int | None:
        raw = self.properties.get(key, "")
        return int(raw) if raw.lstrip("-").isdigit() else None


SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "NRestarts", "ExecMainStatus", "ExecMainCode",
                   "ExecMainPID", "MainPID", "StatusText", "FragmentPath", "Environment", "Result",
                   "ActiveEnterTimestamp", "UnitFileState")


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show -p A -p B`` output (``A=value`` lines)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def environment_from_show(value: str) -> dict[str, str]:
    """``Environment=`` as ``systemctl show`` prints it (space-separated ``K=V``, quoted when needed)."""
    import shlex

    out: dict[str, str] = {}
    try:
        words = shlex.split(value)
    except ValueError:
        words = value.split()
    for word in words:
        key, sep, val = word.partition("=")
        if sep:
            out[key] = val
    return out
