"""vLLM's command line read the way vLLM's own parser reads it, so vboot agrees with what the server does.

vboot's command puts its own ``--host``/``--port``/``--api-key`` first and the profile's ``serve.args`` and the
user's ``-- EXTRA_VLLM_ARGS`` after them (:func:`bootstrap.core.vllm_cmd.build_command`). vLLM's argparse keeps
the last value of a repeated option, so those later arguments decide where the server listens and which key
it wants; :func:`bound_endpoint` says what they decide, for every consumer (pre-flight, run record, Prometheus
target, readiness and smoke requests), and refuses the options that take the server off plain HTTP on that host
and port (:data:`UNSUPPORTED_OPTIONS`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bootstrap.core.errors import UsageError

#: What vLLM binds when ``--host`` is empty or ``None`` (its ``optional_type`` reads both as no host, and the
#: server then binds every interface). Shown as the IPv4 wildcard: a client on this machine uses 127.0.0.1.
ALL_INTERFACES = "0.0.0.0"

# argparse's test for a negative number, which it takes as a value rather than an option.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def option_name(arg: str) -> str:
    """The option ``arg`` names (its part before the first ``=``), spelt as vLLM's FlexibleArgumentParser reads it.

    vLLM (``vllm/utils/argparse_utils.py``, 0.32) rewrites every argument that starts with ``--``: in the part
    before the first ``=``, underscores become dashes up to the first ``.`` (so ``--gpu_memory_utilization=0.5``
    is ``--gpu-memory-utilization``, ``--compilation_config.cudagraph_mode`` is
    ``--compilation-config.cudagraph_mode``). Values and short options (``-tp``) are left as they are.
    """
    if not arg.startswith("--"):
        return arg.partition("=")[0]
    head, dot, tail = arg.partition("=")[0][2:].partition(".")
    return "--" + head.replace("_", "-") + dot + tail


def names_option(arg: str, option: str, alias: str | None = None) -> bool:
    """Whether vLLM reads ``arg`` as the long ``option`` (e.g. ``--port``): in any spelling
    :func:`option_name` accepts, or shortened (argparse's allow_abbrev, on in vLLM, takes an unambiguous prefix
    such as ``--hos`` for ``--host``; an ambiguous one makes vLLM exit, so counting it does no harm). A dotted
    key (``--compilation-config.cudagraph_mode``) is never shortened, so it matches only exactly; ``alias``, a
    short option such as ``-tp``, only as written (``-tp``, ``-tp=4``)."""
    name = option_name(arg)
    if alias is not None and name == alias:
        return True
    if not arg.startswith("--") or len(name) <= 2:
        return False
    if "." in name or "." in option:
        return name == option
    return option.startswith(name)


def is_value(arg: str) -> bool:
    """Whether argparse takes ``arg`` as a value rather than as an option: anything not starting with ``-``,
    a lone ``-``, a negative number, or text with a space in it (argparse's own rules); never ``--``."""
    if arg == "--":
        return False
    return (not arg.startswith("-") or arg == "-" or bool(_NEGATIVE_NUMBER.match(arg)) or " " in arg)


@dataclass(frozen=True)
class OptionUse:
    """One occurrence of an option on a command line."""

    index: int  # where the option itself is in the args
    spelling: str  # the option as written, without its inline value: "--port", "--api_key", "--hos"
    values: tuple[str, ...]  # its value(s); empty when none follows (vLLM then refuses to start)


def option_uses(args: Sequence[str], option: str, many: bool = False,
                past_double_dash: bool = False, alias: str | None = None) -> list[OptionUse]:
    """Every use of the long ``option`` (or its short ``alias``) among ``args``, in order, each with its values:
    ``--opt V``, ``--opt=V`` (underscore spellings and prefixes too, see :func:`names_option`). ``many``: the
    option takes one or more values (vLLM's ``nargs='+'``, e.g. ``--api-key K1 K2``). Scanning stops at a bare
    ``--``, after which argparse reads only positionals, unless ``past_double_dash``."""
    uses = []
    for i, arg in enumerate(args):
        if arg == "--" and not past_double_dash:
            break
        if not names_option(arg, option, alias):
            continue
        spelling, eq, inline = arg.partition("=")
        if eq:
            uses.append(OptionUse(i, spelling, (inline,)))
            continue
        values: list[str] = []
        for following in args[i + 1:]:
            if not is_value(following) or (values and not many):
                break
            values.append(following)
        uses.append(OptionUse(i, spelling, tuple(values)))
    return uses


def last_flag_value(args: Sequence[str], flag: str, alias: str | None = None) -> str | None:
    """The value vLLM's argparse keeps for the one-valued option ``flag`` among ``args``: that of its last use,
    in any spelling :func:`option_uses` reads (``--flag N``, ``--flag=N``, ``--flag_name N``, a prefix such as
    ``--fl N``, the short ``alias`` as ``-a N`` / ``-a=N``). None when the flag is absent, or when its last use
    has no value (vLLM then refuses to start)."""
    uses = option_uses(args, flag, alias=alias)
    return uses[-1].values[0] if uses and uses[-1].values else None


def gives_option(args: Sequence[str], option: str) -> bool:
    """Whether ``args`` use ``option`` in any spelling :func:`names_option` reads, a dotted key of it included
    (``--kv-transfer-config.kv_connector=X`` sets ``--kv-transfer-config``). For presence only: a flag such as
    ``--enable-sleep-mode``, or an option whose value does not matter."""
    return any(names_option(option_name(arg).partition(".")[0], option) for arg in args)


def use_span(args: Sequence[str], use: OptionUse) -> range:
    """The indexes of ``args`` that ``use`` occupies: the option and, unless given inline (``--opt=V``), its
    values."""
    return range(use.index, use.index + 1 + (0 if "=" in args[use.index] else len(use.values)))


@dataclass(frozen=True)
class Unsupported:
    """Why vboot refuses a vLLM option, for the one-line usage error."""

    does: str  # what the option makes vLLM do: "serve HTTPS"
    instead: str  # the way to get it without vboot's checks breaking


_TLS = Unsupported("configures HTTPS", "terminate TLS in a reverse proxy in front of it (or run `vllm serve` yourself)")

#: vLLM options that take the server off plain HTTP on ``--host``/``--port``, which every consumer of
#: :func:`bound_endpoint` speaks: the port pre-flight, ``/health``, the smoke request, the run record's URL that
#: ``ps`` and ``top`` use, the Prometheus target, and the chart's Service, probes and ServiceMonitor in
#: ``export k8s``. vLLM 0.32 (``vllm/entrypoints/launchers/cli_args.py``, ``FrontendArgs`` and
#: ``make_arg_parser``): ``--uds`` "If set, host and port arguments are ignored"; ``--ssl-keyfile`` and
#: ``--ssl-certfile`` make uvicorn serve HTTPS (``launcher.py``: ``is_ssl = args.ssl_keyfile and
#: args.ssl_certfile``), the other TLS options only configure it; ``--grpc`` launches "the Python gRPC ...
#: server on --port instead of the HTTP OpenAI-compatible server"; ``--headless`` starts no API server. vLLM's
#: own ``snapshot create`` refuses the same set for the same reason ("requires one unauthenticated plaintext
#: HTTP server"). Refused in any use (a later ``--no-enable-ssl-refresh`` is not looked for): they have no
#: purpose under vboot, and dropping one costs nothing. ``--root-path`` is not here: FastAPI's root_path only
#: makes Starlette also accept the prefixed paths, ``/health`` and ``/v1/...`` still answer unprefixed.
UNSUPPORTED_OPTIONS: dict[str, Unsupported] = {
    "--uds": Unsupported("makes vLLM listen on a Unix socket instead",
                         "to keep the server local, bind --host 127.0.0.1 (or run `vllm serve` yourself)"),
    "--ssl-keyfile": _TLS,
    "--ssl-certfile": _TLS,
    "--ssl-ca-certs": _TLS,
    "--ssl-cert-reqs": _TLS,
    "--ssl-ciphers": _TLS,
    "--enable-ssl-refresh": _TLS,
    "--grpc": Unsupported("makes vLLM serve gRPC on the port instead", "run `vllm serve --grpc` yourself"),
    "--headless": Unsupported("makes vLLM start no API server",
                              "start a headless node with `vllm serve --headless` yourself"),
}


@dataclass(frozen=True)
class ArgSource:
    """A run of arguments vLLM gets after vboot's own options, and how to name it in messages."""

    label: str  # "the vLLM arguments after --", "profile qwen's serve.args (/path/qwen.toml)"
    args: tuple[str, ...]


@dataclass(frozen=True)
class Endpoint:
    """Where vLLM will listen and the key it will want, as its parser decides from the whole command line.

    ``origins`` names, for each of "host", "port" and "api_key" that a later argument decided, the
    :attr:`ArgSource.label` it came from (absent: vboot's own flag, profile or default stands)."""

    host: str
    port: int
    api_key: str | None
    origins: dict[str, str]
    api_keys: tuple[str, ...] = ()  # every key of the --api-key that decided (vLLM accepts any of them)


def bound_endpoint(host: str, port: int, api_key: str | None, later: Sequence[ArgSource]) -> Endpoint:
    """The host, port and API key vLLM ends up with when its command line holds vboot's ``--host host --port
    port [--api-key api_key]`` followed by the ``later`` sources, in order: the last use of each option wins,
    as in vLLM's argparse. Raises :class:`UsageError` (before anything starts) for an option of
    :data:`UNSUPPORTED_OPTIONS` (vLLM would not be on plain HTTP at host:port), for a ``--port`` that is not a
    number from 1 to 65535 (vLLM would refuse it, or bind a port vboot cannot know) and for a host, port or key
    option with no value (vLLM would refuse to start)."""
    args: list[str] = []
    owner: list[str] = []  # the label of each argument's source
    for src in later:
        args += src.args
        owner += [src.label] * len(src.args)
    origins: dict[str, str] = {}

    # The first in command-line order, so the message names what the user sees first.
    refused = sorted(((use, option) for option in UNSUPPORTED_OPTIONS for use in option_uses(args, option)),
                     key=lambda found: found[0].index)
    if refused:
        use, option = refused[0]
        why, where = UNSUPPORTED_OPTIONS[option], owner[use.index]
        shown = use.spelling if option_name(use.spelling) == option else f"{use.spelling} ({option})"
        raise UsageError(f"{shown} in {where} is not supported: it {why.does}, and vboot supervises vLLM over "
                         f"plain HTTP on --host/--port; {why.instead}", hint=f"drop {use.spelling} from {where}")

    def last(option: str, many: bool = False) -> tuple[OptionUse, str] | None:
        uses = option_uses(args, option, many)
        if not uses:
            return None
        use, where = uses[-1], owner[uses[-1].index]
        if not use.values:
            raise UsageError(f"{use.spelling} in {where} has no value",
                             hint=f"give {option} a value ({option}=VALUE when it starts with '-'), or drop it")
        return use, where

    if found := last("--host"):
        use, origins["host"] = found
        host = use.values[0] if use.values[0] not in ("", "None") else ALL_INTERFACES
    if found := last("--port"):
        use, origins["port"] = found
        raw, hint = use.values[0], "give --port a number from 1 to 65535"
        try:
            port = int(raw)  # what vLLM's type=int accepts
        except ValueError:
            raise UsageError(f"{use.spelling} {raw!r} in {origins['port']} is not a port number", hint=hint) from None
        if not 1 <= port <= 65535:
            raise UsageError(f"{use.spelling} {raw} in {origins['port']} is outside 1-65535", hint=hint)
    if found := last("--api-key", many=True):
        use, origins["api_key"] = found
        # vLLM accepts any of the keys; clients (the smoke request, Prometheus) send the first. An empty key is
        # no key as far as exposure goes.
        api_key = next((v for v in use.values if v), None)
        keys = tuple(v for v in use.values if v)
    else:
        keys = (api_key,) if api_key else ()
    return Endpoint(host=host, port=port, api_key=api_key, origins=origins, api_keys=keys)


def _key_value_count(argv: Sequence[str], use: OptionUse) -> int:
    """How many arguments after ``use`` (an --api-key) hold its keys: none for ``--api-key=K``, else its values;
    with no value by argparse's rules (a key starting with "-"), the argument that follows all the same."""
    if "=" in argv[use.index]:
        return 0
    return len(use.values) or min(1, len(argv) - use.index - 1)


def _api_key_uses(argv: Sequence[str]) -> list[OptionUse]:
    # Past a bare "--" too: vLLM would refuse such a command, but no copy of it may show the key.
    return option_uses(argv, "--api-key", many=True, past_double_dash=True)


def redact(argv: list[str]) -> list[str]:
    """The command as shown or stored: every value of every --api-key masked, in every spelling vLLM accepts
    (``--api-key K``, ``--api-key=K``, ``--api_key K``, a prefix such as ``--api-k K``, several keys
    ``--api-key K1 K2``)."""
    out = list(argv)
    for use in _api_key_uses(argv):
        if "=" in argv[use.index]:
            out[use.index] = use.spelling + "=***"
        else:
            n = _key_value_count(argv, use)
            out[use.index + 1:use.index + 1 + n] = ["***"] * n
    return out


def without_api_keys(argv: Sequence[str]) -> list[str]:
    """``argv`` less every --api-key and its keys, in every spelling :func:`redact` masks: for a command that
    gets the key another way (a Kubernetes Secret read into VLLM_API_KEY, :mod:`bootstrap.core.k8s`)."""
    drop: set[int] = set()
    for use in _api_key_uses(argv):
        drop.update(range(use.index, use.index + 1 + _key_value_count(argv, use)))
    return [a for i, a in enumerate(argv) if i not in drop]
