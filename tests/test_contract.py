"""The JSON envelope every --json command prints, pinned key for key (after pipx's tests/test_result_contract.py).

The envelope and an error in it are written down as TypedDicts: a document must hold exactly their keys (an
error's ``context`` is the one optional key), each of the annotated type. New data goes inside ``data``; the
envelope's own keys never change.
"""

from __future__ import annotations

import json
import subprocess
import typing
from typing import Any, Literal, TypedDict

import pytest

from bootstrap.core.errors import EXIT_FAIL, EXIT_USAGE


class _ErrorKeys(TypedDict):
    code: str  # stable, snake_case (README's exit-code table lists every one)
    message: str  # one line for people
    hint: str  # the next thing to do ("" when there is none)


class ErrorDoc(_ErrorKeys, total=False):
    """One entry of ``errors``: the three keys above, and ``context`` where the error has one."""

    context: dict[str, Any]  # what the error is about (a path, a model, a port), JSON values only


class Envelope(TypedDict):
    """The one document on stdout of every --json command."""

    version: Literal[1]
    command: str  # the command path without "vboot" ("disk clean"), or "vboot" before one was resolved
    status: Literal["ok", "warn", "fail", "error"]
    exit_code: int
    data: dict[str, Any]
    errors: list[ErrorDoc]


def _conforms(value: Any, hint: Any, where: str) -> None:
    """``value`` is of the type ``hint`` (the subset of typing the two TypedDicts above use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        assert value in args and type(value) is type(args[0]), f"{where}: {value!r} is not one of {args}"
    elif origin is list:
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for i, item in enumerate(value):
            _conforms(item, args[0], f"{where}[{i}]")
    elif origin is dict:
        assert isinstance(value, dict) and all(isinstance(k, str) for k in value), f"{where}: {value!r}"
    elif typing.is_typeddict(hint):
        _exactly(value, hint, where)
    elif hint is Any:
        return
    else:
        assert type(value) is hint, f"{where}: {value!r} is not a {hint.__name__}"  # a bool is no int here


def _exactly(doc: Any, shape: Any, where: str) -> None:
    """``doc`` holds every required key of the TypedDict ``shape``, no key it does not name, each of its type."""
    assert isinstance(doc, dict), f"{where}: {doc!r} is not an object"
    keys = set(doc)
    assert shape.__required_keys__ <= keys, f"{where}: missing {sorted(shape.__required_keys__ - keys)}"
    extra = keys - shape.__required_keys__ - shape.__optional_keys__
    assert not extra, f"{where}: keys the contract does not know: {sorted(extra)}"
    hints = typing.get_type_hints(shape, include_extras=True)
    for key in keys:
        _conforms(doc[key], hints[key], f"{where}.{key}")


def _doc(res) -> Envelope:
    """The run's one JSON document on stdout, held to :class:`Envelope`; its exit code is the run's."""
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    _exactly(doc, Envelope, "envelope")
    assert doc["exit_code"] == res.returncode
    return doc


def test_the_contract_itself_rejects_what_it_must():
    """The checker fails on a missing key, an extra key, a wrong type, an extra error key (so the tests below
    would notice a change)."""
    good = {"version": 1, "command": "ps", "status": "ok", "exit_code": 0, "data": {}, "errors": []}
    _exactly(good, Envelope, "envelope")
    err = {"code": "usage", "message": "m", "hint": "h"}
    _exactly({**good, "status": "error", "exit_code": 2, "errors": [err, {**err, "context": {"port": 1}}]},
             Envelope, "envelope")
    for bad in ({k: v for k, v in good.items() if k != "errors"}, {**good, "extra": 1}, {**good, "version": "1"},
                {**good, "status": "fine"}, {**good, "exit_code": True}, {**good, "errors": [{**err, "more": 1}]},
                {**good, "errors": [{"code": "usage", "message": "m"}]}):
        with pytest.raises(AssertionError):
            _exactly(bad, Envelope, "envelope")


# -- errors raised during dispatch, before or inside a command: each still one envelope ------------------------

def test_a_click_usage_error_is_the_usage_envelope(run_vboot):
    res = run_vboot("doctor", "--frobnicate", "--json")
    doc = _doc(res)
    assert (doc["command"], doc["status"], doc["exit_code"]) == ("doctor", "error", EXIT_USAGE)
    assert doc["errors"][0]["code"] == "usage" and "No such option" in doc["errors"][0]["message"]
    assert res.stderr == ""


def test_an_unknown_command_is_the_usage_envelope_of_vboot_itself(run_vboot):
    doc = _doc(run_vboot("nosuch", "--json"))
    assert (doc["command"], doc["status"], doc["exit_code"]) == ("vboot", "error", EXIT_USAGE)
    assert doc["errors"][0]["code"] == "usage" and doc["data"] == {}


def test_a_vboot_error_from_a_command_is_its_code_and_context(run_vboot):
    doc = _doc(run_vboot("doctor", "--profile", "nope", "--json"))
    assert (doc["command"], doc["status"], doc["exit_code"]) == ("doctor", "error", EXIT_USAGE)
    assert doc["errors"][0]["code"] == "profile_not_found" and doc["errors"][0]["hint"]


def test_an_internal_error_is_one_envelope_without_a_traceback(run_vboot, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("bootstrap.cli.profiles_cmd.list_profiles", broken)
    res = run_vboot("profiles", "--json")
    doc = _doc(res)
    assert (doc["command"], doc["status"], doc["exit_code"]) == ("profiles", "error", EXIT_FAIL)
    assert doc["errors"] == [{"code": "internal", "message": "internal error: RuntimeError: a bug",
                              "hint": "re-run with VBOOT_DEBUG=1 for the traceback and report it"}]
    assert "Traceback" not in res.stderr


def test_doctor_envelope_and_check_shape(run_vboot):
    res = run_vboot("doctor", "--profile", "tiny", "--json")
    doc = _doc(res)
    assert doc["command"] == "doctor"
    ids = [c["id"] for c in doc["data"]["checks"]]
    assert len(ids) == len(set(ids))
    for c in doc["data"]["checks"]:
        assert {"id", "status", "summary", "hint", "data"} <= set(c)
        assert c["status"] in ("ok", "warn", "fail", "skip")
    expected = {"nvidia.driver", "nvidia.gpus", "torch", "vllm", "disk", "vram", "leftovers", "port",
                "env.alloc_conf", "env.modelscope", "env.cuda_visible_devices", "env.misc", "env.report", "system"}
    assert expected <= set(ids)


def test_doctor_exit_code_follows_failures(run_vboot):
    # No vLLM in the environment vboot runs in (the test venv): the vllm check fails -> exit 1.
    res = run_vboot("doctor", "--profile", "tiny", "--json", "--vllm-python", "/nonexistent/python")
    doc = _doc(res)
    assert res.returncode == 1 and doc["status"] == "fail"
    assert {c["id"]: c["status"] for c in doc["data"]["checks"]}["vllm"] == "fail"


def test_error_envelope_for_a_bad_profile(run_vboot):
    res = run_vboot("doctor", "--profile", "nope", "--json")
    doc = _doc(res)
    assert res.returncode == 2 and doc["status"] == "error"
    assert doc["errors"][0]["code"] == "profile_not_found" and doc["errors"][0]["hint"]


@pytest.mark.parametrize("args", [["profiles", "--json"], ["ps", "--json"], ["doctor", "--list-checks", "--json"]])
def test_other_commands_share_the_envelope(run_vboot, args):
    _doc(run_vboot(*args))


def test_usage_error_is_one_line_exit_two_and_no_traceback(run_vboot):
    res = run_vboot("doctor", "--check", "nonsense")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "unknown check id" in res.stderr and "--list-checks" in res.stderr


def test_unknown_option_is_a_usage_error(run_vboot):
    res = run_vboot("doctor", "--frobnicate")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "No such option" in res.stderr


@pytest.mark.parametrize("closed, target, rc", [("2>&-", "missing", 4), (">&- --json", "", 0)])
def test_a_closed_stdout_or_stderr_keeps_the_exit_code(tmp_path, isolated_env, closed, target, rc):
    # The error line goes to stderr, the JSON document to stdout: each with its stream closed.
    from tests.support.cli import vboot_exe

    script = f'"$@" disk {tmp_path / target} {closed}; echo "rc=$?"'
    proc = subprocess.run(["bash", "-c", script, "vboot", *vboot_exe()], capture_output=True, text=True,
                          env=isolated_env, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.stdout.strip().endswith(f"rc={rc}"), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


# -- one rule for the envelope's `command`: the command path, whatever the outcome ----------------------------
# (path, arguments that succeed or None, arguments that fail). Success, error, --help and an interrupt
# (tests/test_interrupts.py) all name the command by its path without "vboot": `disk clean`, `export k8s`.
# `logs` prints a log, not a document: it takes no --json.
COMMANDS = [
    ("disk", ["{tmp}"], ["{tmp}/missing"]),
    ("disk caches", [], ["--bogus"]),
    ("disk clean", ["--partial", "--dry-run"], []),
    ("doctor", ["--list-checks"], ["--check", "nonsense"]),
    ("profiles", [], ["nope"]),
    ("pull", ["tiny"], ["vboot/none", "--offline"]),
    ("serve", None, ["nope"]),
    ("ps", [], ["--bogus"]),
    ("stop", None, ["nope"]),
    ("top", None, ["nope", "--once"]),
    ("env", ["tiny"], ["nope"]),
    ("kernel list", [], ["--bogus"]),
    ("kernel remove", None, ["nope"]),
    ("export k8s", None, ["nope"]),
    ("setup", None, ["--bogus"]),
]


@pytest.mark.parametrize("path, ok, bad", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_envelope_names_the_command_path_for_result_error_and_help(run_vboot, tmp_path, path, ok, bad):
    def run(*args: str) -> dict:
        return _doc(run_vboot(*path.split(), *(a.format(tmp=tmp_path) for a in args), "--json", timeout=60))

    if ok is not None:
        doc = run(*ok)
        assert (doc["command"], doc["status"]) == (path, "ok"), doc
    doc = run(*bad)
    assert (doc["command"], doc["status"]) == (path, "error") and doc["exit_code"] != 0, doc
    shown = run("--help")
    assert (shown["command"], shown["status"], shown["exit_code"]) == (path, "ok", 0)
    assert shown["data"]["usage"].startswith(f"Usage: vboot {path}") and shown["data"]["help"].startswith("Usage:")


@pytest.mark.parametrize("args", [["--help", "--json"], ["--json", "--help"], ["-h", "--json"]])
def test_help_with_json_is_one_json_document_at_every_level(run_vboot, args):
    doc = _doc(run_vboot(*args))
    assert doc["command"] == "vboot" and doc["exit_code"] == 0 and "Commands:" in doc["data"]["help"]
    sub = _doc(run_vboot("disk", "clean", *args))
    assert sub["command"] == "disk clean" and "--older-than" in sub["data"]["help"]


def test_help_without_json_is_the_usual_text(run_vboot):
    res = run_vboot("disk", "clean", "--help")
    assert res.returncode == 0 and res.stdout.startswith("Usage: vboot disk clean")


def test_version_with_json(run_vboot):
    from bootstrap import __version__

    assert _doc(run_vboot("--version", "--json"))["data"] == {"version": __version__}
    assert run_vboot("--version").stdout.strip() == f"vboot, version {__version__}"


def test_an_unknown_command_is_an_error_of_vboot_itself(run_vboot):
    doc = _doc(run_vboot("nosuch", "--json"))
    assert doc["command"] == "vboot" and doc["errors"][0]["code"] == "usage"


def test_the_disk_fast_path_names_its_command_like_the_cli(tmp_path, isolated_env):
    """`vboot disk` printed without loading click (bootstrap.cli.entry) follows the same rule."""
    from tests.support.cli import vboot_exe

    for head_start in ("1", "0"):
        for target in (str(tmp_path), str(tmp_path / "missing")):
            proc = subprocess.run([*vboot_exe(), "disk", target, "--json"], capture_output=True, text=True,
                                  env={**isolated_env, "VBOOT_DISK_HEAD_START": head_start}, timeout=60)
            assert _doc(proc)["command"] == "disk"
