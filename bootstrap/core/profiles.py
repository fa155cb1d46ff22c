"""Profiles: what to serve and how, parsed from TOML text.

A profile names a model (and where it comes from), how vLLM should serve it, the environment it needs, and
what it needs of the box. Built-ins ship inside the wheel (``bootstrap.profiles``); users add their own as
``$XDG_CONFIG_HOME/vboot/profiles/NAME.toml``, which win over built-ins of the same name.

Precedence of settings lives in :func:`resolve_serve_settings`: flags > profile > environment > defaults (the
device too: `--device` over the profile's ``serve.device``).
"""

from __future__ import annotations

import enum
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bootstrap.core.environ import Environ
from bootstrap.core.errors import ProfileError, ProfileNotFoundError, UsageError
from bootstrap.core.paths import user_profiles_dir
from bootstrap.core.repoids import model_id_problem, revision_problem
from bootstrap.core.textsafe import one_line
from bootstrap.core.units import parse_size
from bootstrap.core.vllm_args import ArgSource, bound_endpoint, gives_option, last_flag_value

SOURCES = ("modelscope", "huggingface", "local")
DEVICES = ("auto", "gpu", "cpu")
RESTART_MODES = ("no", "on-failure", "always")
DEFAULT_PROFILE = "qwen"
DEFAULT_PORT = 8000
PORT_AUTO = "auto"  # `port = "auto"` / `--port auto`: vboot picks a free port on the host it binds and records it
DEFAULT_HOST = "127.0.0.1"
API_KEY_VAR = "VLLM_API_KEY"  # vLLM's own variable for its API key (read when no --api-key is given)
BUNDLED_PREFIX = "bundled:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    source: str = "modelscope"
    revision: str = "master"
    served_name: str = ""  # defaults to the model id
    path: str = ""  # for source = "local": a directory, or "bundled:NAME" for a model shipped in the wheel

    @property
    def served(self) -> str:
        return self.served_name or self.id


@dataclass(frozen=True)
class ServeSpec:
    port: int | str = DEFAULT_PORT  # or PORT_AUTO
    host: str = DEFAULT_HOST
    device: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    enable_sleep_mode: bool = False
    kv_connector: str = ""
    dtype: str = ""
    args: tuple[str, ...] = ()
    restart: str = ""  # no | on-failure | always; "" = vboot's default (no in the foreground, on-failure detached)


@dataclass(frozen=True)
class Needs:
    weights_bytes: int = 0
    min_free_vram_bytes: int = 0
    min_free_disk_bytes: int = 0


@dataclass(frozen=True)
class AlertsSpec:
    """The profile's ``[alerts]`` table: where Alertmanager sends vboot's alerts.

    A receiver URL is given either in the profile (``webhook_url``) or, for secrets, as the name of an environment
    variable that holds it (``webhook_url_env``); never both. Values of variables are read when the server starts
    (:func:`bootstrap.core.alerting.resolve_receivers`), not here, so a profile never holds a secret it did not say.
    """

    webhook_url: str = ""
    webhook_url_env: str = ""
    slack_webhook_url: str = ""
    slack_webhook_url_env: str = ""
    slack_channel: str = ""  # "#channel" or "@user"; empty: the Slack webhook's own channel
    send_resolved: bool = True

    @property
    def webhook(self) -> bool:
        return bool(self.webhook_url or self.webhook_url_env)

    @property
    def slack(self) -> bool:
        return bool(self.slack_webhook_url or self.slack_webhook_url_env)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    model: ModelSpec
    serve: ServeSpec = field(default_factory=ServeSpec)
    env: Mapping[str, str] = field(default_factory=dict)
    needs: Needs = field(default_factory=Needs)
    cache_dir: str = ""  # overrides MODELSCOPE_CACHE for this profile when set
    source_path: str = ""  # the file it was read from ("<builtin>/qwen.toml" for built-ins)
    builtin: bool = False
    alerts: AlertsSpec | None = None  # the [alerts] table; None: no receiver (alerts show in Prometheus only)


_TOP_KEYS = {"description", "model", "serve", "env", "needs", "cache_dir", "alerts"}
_MODEL_KEYS = {"id", "source", "revision", "served_name", "path"}
_SERVE_KEYS = {
    "port", "host", "device", "max_model_len", "gpu_memory_utilization", "tensor_parallel_size",
    "enable_sleep_mode", "kv_connector", "dtype", "args", "restart",
}
_NEEDS_KEYS = {"weights", "min_free_vram", "min_free_disk"}
_ALERTS_KEYS = {"webhook_url", "webhook_url_env", "slack_webhook_url", "slack_webhook_url_env", "slack_channel",
                "send_resolved"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Slack channel names: lower-case letters, digits, '-', '_' and '.', up to 80 characters; '@' for a user.
# Alertmanager evaluates the field as a Go template, so nothing else may pass ('{{' would be code).
_SLACK_CHANNEL = re.compile(r"^[#@][a-z0-9][a-z0-9._-]{0,79}$")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a receiver URL (an http(s) URL with a host, no whitespace or control characters),
    or None. Never quotes the URL: it may hold a token."""
    from urllib.parse import urlsplit

    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL with a host"
    return None


def _parse_alerts(raw: Any, source: str, text: str) -> AlertsSpec:
    """The ``[alerts]`` table, checked: a URL or the name of the variable holding it per receiver, at least one
    receiver, a Slack channel only with Slack."""
    if not isinstance(raw, dict):
        raise _err(source, text, "'alerts' must be a table", "alerts")
    for key in raw:
        if key not in _ALERTS_KEYS:
            raise _err(source, text, f"unknown key 'alerts.{key}' (allowed: {', '.join(sorted(_ALERTS_KEYS))})",
                       key, "alerts")
    values: dict[str, Any] = {}
    for key in sorted(_ALERTS_KEYS - {"send_resolved"}):
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or not value:
                raise _err(source, text, f"'alerts.{key}' must be a non-empty string", key, "alerts")
            values[key] = value
    if "send_resolved" in raw:
        if not isinstance(raw["send_resolved"], bool):
            raise _err(source, text, "'alerts.send_resolved' must be true or false", "send_resolved", "alerts")
        values["send_resolved"] = raw["send_resolved"]
    for base in ("webhook_url", "slack_webhook_url"):
        if base in values and f"{base}_env" in values:
            raise _err(source, text, f"give 'alerts.{base}' or 'alerts.{base}_env', not both", f"{base}_env", "alerts")
        if base in values:
            problem = url_problem(values[base])
            if problem:
                raise _err(source, text, f"'alerts.{base}' {problem}", base, "alerts")
        env_key = f"{base}_env"
        if env_key in values and not _ENV_NAME.match(values[env_key]):
            raise _err(source, text, f"'alerts.{env_key}' must name an environment variable (letters, digits, '_'), "
                       f"not {values[env_key]!r}", env_key, "alerts")
    spec = AlertsSpec(**values)
    if not (spec.webhook or spec.slack):
        header = next((n for n, line in enumerate(text.splitlines(), 1) if line.strip().startswith("[alerts]")), None)
        raise ProfileError(f"{source}{f':{header}' if header else ''}: [alerts] needs a receiver: webhook_url(_env) "
                           "and/or slack_webhook_url(_env)",
                           hint=f"fix {source} (see `vboot profiles --help` for the format)", path=source)
    if spec.slack_channel:
        if not spec.slack:
            raise _err(source, text, "'alerts.slack_channel' needs slack_webhook_url or slack_webhook_url_env",
                       "slack_channel", "alerts")
        if not _SLACK_CHANNEL.match(spec.slack_channel):
            raise _err(source, text, "'alerts.slack_channel' must be '#channel' or '@user' (lower-case letters, "
                       f"digits, '-', '_', '.'), not {spec.slack_channel!r}", "slack_channel", "alerts")
    return spec


def _line_of(text: str, key: str, table: str | None = None) -> int | None:
    """Best-effort line number of ``key = ...`` (inside ``[table]`` when given) for error messages."""
    in_table = table is None
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = table is None or stripped.strip("[] ") == table
            continue
        if in_table and re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", line):
            return n
    return None


def _err(source: str, text: str, message: str, key: str | None = None, table: str | None = None) -> ProfileError:
    message, source = one_line(message), one_line(source)
    where = source
    if key is not None:
        line = _line_of(text, key.split(".")[-1], table)
        if line:
            where = f"{source}:{line}"
    return ProfileError(f"{where}: {message}", hint=f"fix {source} (see `vboot profiles --help` for the format)",
                        path=source)


def _first_nul(node: Any, key: str = "", table: str | None = None) -> tuple[str, str | None] | None:
    """(key, table) of the first string, key or list item holding a NUL character in parsed TOML, else None.

    TOML lets ``"\\u0000"`` through, but no argv entry, environment variable or path can hold one: vLLM's command
    line, the run directory and the generated files would fail half-way. Newlines and other control characters
    are legal there and are left to the emitters' quoting."""
    if isinstance(node, str):
        return (key, table) if "\0" in node else None
    if isinstance(node, dict):
        for k, v in node.items():
            sub_table = table if not key else (f"{table}.{key}" if table else key)
            if "\0" in k:
                return k, sub_table
            found = _first_nul(v, k, sub_table)
            if found is not None:
                return found
        return None
    if isinstance(node, list):
        for i, v in enumerate(node):
            found = _first_nul(v, f"{key}[{i}]", table)
            if found is not None:
                return found
    return None


def parse_profile(text: str, name: str, source: str = "<string>") -> Profile:
    """Parse one profile from TOML ``text``. Unknown keys and wrong types raise :class:`ProfileError`
    naming the file, the line where possible, and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}", hint=f"fix the syntax of {source}",
                           path=source) from None

    def unknown(table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise _err(source, text, f"unknown key '{prefix}{key}' (allowed: {', '.join(sorted(allowed))})",
                           key, prefix.rstrip(".") or None)

    def typed(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], prefix: str, default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        ok = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
        if not ok:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(k.__name__.replace("str", "string").replace("int", "integer") for k in kinds)
            raise _err(source, text, f"'{prefix}{key}' must be a {names}, not {value!r}", key,
                       prefix.rstrip(".") or None)
        return value

    nul = _first_nul(raw)
    if nul is not None:
        key, table = nul
        shown = one_line(f"{table}.{key}" if table else key)
        raise _err(source, text, f"'{shown}' contains a NUL character (\\0), which no program argument, environment "
                   "variable or path can hold", key.split("[")[0], table)
    unknown(raw, _TOP_KEYS, "")
    model_raw = raw.get("model")
    if not isinstance(model_raw, dict):
        raise _err(source, text, "missing [model] table with at least 'id'")
    unknown(model_raw, _MODEL_KEYS, "model.")
    model_id = typed(model_raw, "id", str, "model.", "")
    if not model_id:
        raise _err(source, text, "'model.id' is required (e.g. \"Qwen/Qwen2.5-1.5B-Instruct\")", "id", "model")
    src = typed(model_raw, "source", str, "model.", "modelscope")
    if src not in SOURCES:
        raise _err(source, text, f"'model.source' must be one of {', '.join(SOURCES)}, not {src!r}", "source", "model")
    path = typed(model_raw, "path", str, "model.", "")
    if src == "local" and not path:
        raise _err(source, text, "'model.path' is required when model.source = \"local\"", "source", "model")
    problem = model_id_problem(model_id, src)
    if problem:
        raise _err(source, text, f"'model.id': {problem}", "id", "model")
    revision = typed(model_raw, "revision", str, "model.", "master")
    problem = revision_problem(revision)
    if problem:
        raise _err(source, text, f"'model.revision': {problem}", "revision", "model")
    served_name = typed(model_raw, "served_name", str, "model.", "")
    if served_name.startswith("-"):
        raise _err(source, text, f"'model.served_name' {served_name!r} starts with '-': vLLM would read it as an "
                   "option", "served_name", "model")
    model = ModelSpec(id=model_id, source=src, revision=revision, served_name=served_name, path=path)

    serve_raw = raw.get("serve", {})
    if not isinstance(serve_raw, dict):
        raise _err(source, text, "'serve' must be a table", "serve")
    unknown(serve_raw, _SERVE_KEYS, "serve.")
    port = serve_raw.get("port", DEFAULT_PORT)
    if port != PORT_AUTO:
        port = typed(serve_raw, "port", int, "serve.", DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise _err(source, text, f"'serve.port' must be 1-65535 or \"auto\", not {port}", "port", "serve")
    device = typed(serve_raw, "device", str, "serve.", "auto")
    if device not in DEVICES:
        raise _err(source, text, f"'serve.device' must be one of {', '.join(DEVICES)}, not {device!r}", "device",
                   "serve")
    util = typed(serve_raw, "gpu_memory_utilization", (int, float), "serve.", None)
    if util is not None and not 0 < util <= 1:
        raise _err(source, text, f"'serve.gpu_memory_utilization' must be in (0, 1], not {util}",
                   "gpu_memory_utilization", "serve")
    tp = typed(serve_raw, "tensor_parallel_size", int, "serve.", 1)
    if tp < 1:
        raise _err(source, text, f"'serve.tensor_parallel_size' must be >= 1, not {tp}", "tensor_parallel_size",
                   "serve")
    args = typed(serve_raw, "args", list, "serve.", [])
    if not all(isinstance(a, str) for a in args):
        raise _err(source, text, "'serve.args' must be a list of strings", "args", "serve")
    try:  # a --port vLLM would refuse, a --host/--port/--api-key without a value, or --uds/--ssl-*: like serve.port
        bound_endpoint(DEFAULT_HOST, port if isinstance(port, int) else DEFAULT_PORT, None,
                       [ArgSource("'serve.args'", tuple(args))])
    except UsageError as exc:
        raise _err(source, text, exc.message, "args", "serve") from None
    restart = typed(serve_raw, "restart", str, "serve.", "")
    if restart and restart not in RESTART_MODES:
        raise _err(source, text, f"'serve.restart' must be one of {', '.join(RESTART_MODES)}, not {restart!r}",
                   "restart", "serve")
    serve = ServeSpec(
        port=port, restart=restart, host=typed(serve_raw, "host", str, "serve.", DEFAULT_HOST), device=device,
        max_model_len=typed(serve_raw, "max_model_len", int, "serve.", None),
        gpu_memory_utilization=float(util) if util is not None else None,
        tensor_parallel_size=tp,
        enable_sleep_mode=typed(serve_raw, "enable_sleep_mode", bool, "serve.", False),
        kv_connector=typed(serve_raw, "kv_connector", str, "serve.", ""),
        dtype=typed(serve_raw, "dtype", str, "serve.", ""),
        args=tuple(args),
    )

    env_raw = raw.get("env", {})
    if not isinstance(env_raw, dict):
        raise _err(source, text, "'env' must be a table of NAME = \"value\"", "env")
    env: dict[str, str] = {}
    for key, value in env_raw.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise _err(source, text, f"'env.{key}' is not a valid environment variable name", key, "env")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _err(source, text, f"'env.{key}' must be a string or number", key, "env")
        env[key] = str(value)

    needs_raw = raw.get("needs", {})
    if not isinstance(needs_raw, dict):
        raise _err(source, text, "'needs' must be a table", "needs")
    unknown(needs_raw, _NEEDS_KEYS, "needs.")
    sizes: dict[str, int] = {}
    for key in _NEEDS_KEYS:
        if key in needs_raw:
            try:
                sizes[key] = parse_size(needs_raw[key])
            except ValueError as exc:
                raise _err(source, text, f"'needs.{key}': {exc}", key, "needs") from None
    needs = Needs(
        weights_bytes=sizes.get("weights", 0),
        min_free_vram_bytes=sizes.get("min_free_vram", 0),
        min_free_disk_bytes=sizes.get("min_free_disk", sizes.get("weights", 0)),
    )
    alerts = _parse_alerts(raw["alerts"], source, text) if "alerts" in raw else None
    return Profile(
        name=name, description=typed(raw, "description", str, "", ""), model=model, serve=serve, env=env,
        needs=needs, cache_dir=typed(raw, "cache_dir", str, "", ""), source_path=source, alerts=alerts,
    )


@dataclass(frozen=True)
class ProfileRef:
    name: str
    path: str
    builtin: bool
    shadowed: bool = False  # a user profile of the same name hides this built-in


def _package_dir(name: str) -> Path:
    """A data folder shipped in the wheel as ``bootstrap/NAME``; in a source checkout, ``profiles/`` sits at the
    top (pyproject maps it into the package). Plain paths, not importlib.resources: doctor imports this module
    and every millisecond counts there."""
    here = Path(__file__).resolve().parents[1]
    installed = here / name
    if installed.is_dir():
        return installed
    return here.parent / name


def _builtin_files() -> dict[str, Path]:
    root = _package_dir("profiles")
    return {p.name[:-5]: p for p in sorted(root.iterdir()) if p.name.endswith(".toml")}


def _user_files(env: Environ) -> dict[str, Path]:
    d = user_profiles_dir(env)
    if not d.is_dir():
        return {}
    return {p.stem: p for p in sorted(d.glob("*.toml"))}


def list_profiles(env: Environ) -> list[ProfileRef]:
    """Every profile vboot can see, user profiles first-class, built-ins marked."""
    builtin = _builtin_files()
    user = _user_files(env)
    refs = [ProfileRef(name, str(path), False) for name, path in user.items()]
    refs += [ProfileRef(name, f"<builtin>/{name}.toml", True, shadowed=name in user) for name, path in builtin.items()]
    return sorted(refs, key=lambda r: (r.name, r.builtin))


def load_profile(name: str, env: Environ) -> Profile:
    """A profile by name (user dir first, then built-ins), or from a path to a ``.toml`` file."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name).expanduser()
        if not path.exists():
            raise ProfileNotFoundError(f"profile file {one_line(str(path))} does not exist",
                                       hint="check the path, or run `vboot profiles`")
        return parse_profile(_read(path), name=path.stem, source=str(path))
    if not _NAME.match(name):
        raise ProfileNotFoundError(f"{name!r} is not a valid profile name", hint="run `vboot profiles` to list them")
    user = _user_files(env)
    if name in user:
        return parse_profile(_read(user[name]), name=name, source=str(user[name]))
    builtin = _builtin_files()
    if name in builtin:
        prof = parse_profile(builtin[name].read_text(encoding="utf-8"), name=name, source=f"<builtin>/{name}.toml")
        return replace(prof, builtin=True)
    known = ", ".join(sorted(set(builtin) | set(user)))
    raise ProfileNotFoundError(
        f"no profile named {name!r} (known: {known})",
        hint=f"run `vboot profiles`, or create {user_profiles_dir(env) / (name + '.toml')}",
    )


def _read(path: Path) -> str:
    """The text of a profile file. Only a regular file is read: a FIFO named ``x.toml`` would block every
    command that lists profiles (it is opened without blocking and refused)."""
    shown = one_line(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ProfileError(f"{shown}: not a regular file", hint="a profile is a .toml file; remove or rename "
                                   "this entry", path=str(path))
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{shown}: cannot read profile: {one_line(str(exc))}",
                           hint="check the file's permissions and encoding", path=str(path)) from None


def bundled_model_dir(name: str) -> Path:
    """A model shipped inside the wheel (``bootstrap/assets/NAME``), e.g. the tiny demo model."""
    return _package_dir("assets") / name


def local_model_dir(profile: Profile) -> Path | None:
    """For source = "local": the directory to serve (bundled models resolved)."""
    if profile.model.source != "local":
        return None
    if profile.model.path.startswith(BUNDLED_PREFIX):
        return bundled_model_dir(profile.model.path[len(BUNDLED_PREFIX):])
    return Path(profile.model.path).expanduser()


@dataclass(frozen=True)
class VllmOptions:
    """vLLM's effective options for one run, read once from the profile's [serve] and the arguments vLLM gets
    after them (its serve.args, then ``vboot serve ... -- ARGS``): the last use of an option wins, as in vLLM."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9  # vLLM's default when neither the profile nor an argument sets it
    enable_sleep_mode: bool = False
    kv_connector: bool = False  # serve.kv_connector or a --kv-transfer-config
    max_model_len: int | None = None


def vllm_options(serve: ServeSpec, extra_args: Sequence[str] = ()) -> VllmOptions:
    """The options vLLM will run with for ``serve`` and ``extra_args`` (see :class:`VllmOptions`)."""
    args = [*serve.args, *extra_args]
    raw = last_flag_value(args, "--tensor-parallel-size", "-tp")
    tp = int(raw) if raw is not None and raw.isdigit() else serve.tensor_parallel_size
    util = serve.gpu_memory_utilization or 0.9
    raw = last_flag_value(args, "--gpu-memory-utilization")
    if raw is not None:
        try:
            util = float(raw)
        except ValueError:  # vLLM refuses it at start; meanwhile judge the profile's value
            pass
    max_len = serve.max_model_len
    raw = last_flag_value(args, "--max-model-len")
    if raw is not None and raw.isdigit():
        max_len = int(raw)
    return VllmOptions(
        tensor_parallel_size=max(1, tp), gpu_memory_utilization=util,
        enable_sleep_mode=serve.enable_sleep_mode or gives_option(args, "--enable-sleep-mode"),
        kv_connector=bool(serve.kv_connector) or gives_option(args, "--kv-transfer-config"),
        max_model_len=max_len,
    )


class CacheSource(str, enum.Enum):
    """What decided where `vboot serve` puts the model cache."""

    FLAG = "flag"  # --cache-dir
    PROFILE = "profile"  # the profile's cache_dir
    PROFILE_ENV = "profile_env"  # MODELSCOPE_CACHE or MS_CACHE_HOME in the profile's [env]
    ENV = "env"  # the user's MODELSCOPE_CACHE or MS_CACHE_HOME
    DEFAULT = "default"  # the ModelScope client's default, ~/.cache/modelscope


@dataclass(frozen=True)
class CacheOrigin:
    """What decided the model cache dir, and the variable when one did. Written as text ("flag",
    "env:MODELSCOPE_CACHE") where it is reported (doctor's disk check data)."""

    source: CacheSource
    variable: str | None = None  # for PROFILE_ENV and ENV: MODELSCOPE_CACHE or MS_CACHE_HOME

    def __str__(self) -> str:
        return f"{self.source.value}:{self.variable}" if self.variable else self.source.value


@dataclass(frozen=True)
class ServeSettings:
    """The resolved settings of one `vboot serve` (flags > profile > environment > defaults), with host, port
    and API key as vLLM will have them: a --host/--port/--api-key among the profile's serve.args or the extra
    vLLM arguments comes after vboot's own on the command line, and vLLM keeps the last."""

    profile: Profile
    host: str
    port: int
    api_key: str | None
    extra_args: tuple[str, ...]
    cache_dir: Path
    vllm_python: str | None  # --vllm-python only: vllm_env.choose_python ranks it over the rest
    # "host", "port", "api_key" -> where the vLLM argument that decided it was given (e.g. "the vLLM arguments
    # after --"); absent when vboot's flag, the profile, the environment or the default stands.
    from_args: Mapping[str, str] = field(default_factory=dict)
    cache_from: CacheOrigin = field(default_factory=lambda: CacheOrigin(CacheSource.DEFAULT))
    vllm: VllmOptions = field(default_factory=VllmOptions)  # vLLM's effective options, resolved once
    device: str = "auto"  # what is asked for: --device, else the profile's serve.device ("auto", "gpu", "cpu")
    device_from: str = "profile"  # "flag" (--device) or "profile"
    port_auto: bool = False  # the port was picked by vboot (`--port auto` or the profile's port = "auto")

    @property
    def device_origin(self) -> str:
        """Who asked for ``device``, for messages: "--device" or "profile NAME"."""
        return "--device" if self.device_from == "flag" else f"profile {self.profile.name}"

    def cache_hint(self) -> str:
        """How to put the model cache somewhere else, for hints."""
        source, var = self.cache_from.source, self.cache_from.variable
        where = self.profile.source_path or f"profile {self.profile.name}"
        return {CacheSource.FLAG: "pass another --cache-dir",
                CacheSource.PROFILE: f"change cache_dir in {where}",
                CacheSource.PROFILE_ENV: f"change {var} in profile {self.profile.name}'s [env]",
                CacheSource.ENV: f"point {var} elsewhere (or pass --cache-dir)"}.get(
                    source, "set MODELSCOPE_CACHE or pass --cache-dir")

    def change_hint(self, setting: str, flag: str) -> str:
        """How to change ``setting`` ("host", "port", "api_key"), for hints: vboot's ``flag`` unless a vLLM
        argument decides it, in which case that argument."""
        src = self.from_args.get(setting)
        return f"change the {flag} in {src}" if src else f"pass {flag}"


_CACHE_VARS = frozenset({"MODELSCOPE_CACHE", "MS_CACHE_HOME"})  # the ModelScope client's cache root, in order


def resolve_serve_settings(
    profile: Profile,
    env: Environ,
    *,
    host: str | None = None,
    port: int | str | None = None,
    api_key: str | None = None,
    extra_args: Sequence[str] = (),
    cache_dir: str | None = None,
    vllm_python: str | None = None,
    device: str | None = None,
    pick_port: Callable[[str], int] | None = None,
) -> ServeSettings:
    """The one place where flags, the profile, the environment and defaults meet.

    Host, port and API key then go through what vLLM will read after vboot's own options (the profile's
    serve.args, then ``extra_args``; :func:`bootstrap.core.vllm_args.bound_endpoint`), so the pre-flight, the
    run record, the Prometheus target and the readiness and smoke requests all use what vLLM binds. Raises
    :class:`UsageError` for a --port among ``extra_args`` that is not 1-65535, a host/port/key option there
    without a value, or an option that takes vLLM off plain HTTP on host:port (``--uds``, ``--ssl-*``;
    :data:`bootstrap.core.vllm_args.UNSUPPORTED_OPTIONS`) (:func:`parse_profile` already refused those in
    serve.args).

    A port of ``"auto"`` (the flag's, else the profile's) is ``pick_port(host)``: a port free on that host now
    (the default asks the kernel for one); a ``--port`` among vLLM's arguments still wins over it."""
    from bootstrap.core.paths import modelscope_cache_source

    if device is not None and device not in DEVICES:
        raise UsageError(f"--device {device!r} is not one of {', '.join(DEVICES)}", hint="pass --device gpu or cpu")
    if cache_dir:
        cache, cache_from = Path(cache_dir).expanduser(), CacheOrigin(CacheSource.FLAG)
    elif profile.cache_dir:
        cache, cache_from = Path(profile.cache_dir).expanduser(), CacheOrigin(CacheSource.PROFILE)
    else:
        # The ModelScope client gets the profile's [env] over the user's (bootstrap.core.envplan): pull where
        # the client and vLLM will look, by the client's own rule.
        seen = {name: value for name in (*_CACHE_VARS, "HOME") if (value := env.get(name)) is not None}
        cache, var = modelscope_cache_source(Environ({**seen, **profile.env}))
        cache_from = (CacheOrigin(CacheSource.DEFAULT) if var == "default" else
                      CacheOrigin(CacheSource.PROFILE_ENV if var in profile.env else CacheSource.ENV, var))
    where = profile.source_path or profile.name
    # The key, as the other settings: --api-key > the profile's [env] VLLM_API_KEY > the user's VLLM_API_KEY (vLLM
    # reads that variable too), then an --api-key among vLLM's arguments wins over all of them.
    key = api_key or profile.env.get(API_KEY_VAR) or env.get(API_KEY_VAR) or None
    chosen_host = host or profile.serve.host or DEFAULT_HOST
    wanted = port or profile.serve.port or DEFAULT_PORT
    auto = wanted == PORT_AUTO
    if auto:
        if pick_port is None:
            from bootstrap.probes.procs import free_port  # the production default

            pick_port = free_port
        wanted = pick_port(chosen_host)
    elif isinstance(wanted, str):
        raise UsageError(f"--port {wanted!r} is not a port number or \"auto\"", hint="pass --port 1-65535 or auto")
    bound = bound_endpoint(
        chosen_host,
        int(wanted),
        key,
        [ArgSource(f"profile {profile.name}'s serve.args ({where})", profile.serve.args),
         ArgSource("the vLLM arguments after --", tuple(extra_args))],
    )
    if len(bound.api_keys) > 1:
        raise UsageError(
            f"--api-key in {bound.origins['api_key']} gives {len(bound.api_keys)} keys; vboot passes vLLM its key "
            f"through {API_KEY_VAR} (a command line is readable by every user of this machine), which holds one",
            hint="give one key (clients send 'Authorization: Bearer KEY')")
    return ServeSettings(
        profile=profile,
        host=bound.host,
        port=bound.port,
        api_key=bound.api_key,
        extra_args=tuple(extra_args),
        cache_dir=cache,
        cache_from=cache_from,
        vllm_python=vllm_python or None,
        from_args=bound.origins,
        vllm=vllm_options(profile.serve, extra_args),
        device=device or profile.serve.device,
        device_from="flag" if device else "profile",
        port_auto=auto and "port" not in bound.origins,
    )


def shown(profile: Profile) -> Profile:
    """``profile`` as it may be printed or recorded: an ``--api-key`` among serve.args, the values of secret-looking
    [env] variables (``mask``) and receiver URLs written in [alerts] masked. The same masking every other
    printer uses (bootstrap.core.vllm_args.redact, bootstrap.core.environ.mask)."""
    from bootstrap.core.environ import mask
    from bootstrap.core.vllm_args import redact

    alerts = profile.alerts
    if alerts is not None:  # a receiver URL written in the profile may carry a token
        alerts = replace(alerts, webhook_url="***" if alerts.webhook_url else "",
                         slack_webhook_url="***" if alerts.slack_webhook_url else "")
    return replace(profile, serve=replace(profile.serve, args=tuple(redact(list(profile.serve.args)))),
                   env={k: mask(k, v) for k, v in profile.env.items()}, alerts=alerts)
