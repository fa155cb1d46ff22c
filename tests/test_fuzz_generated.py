"""Bounded fuzzing of generated files over profile values (issue 17, acceptance): every file `vboot export k8s`
and `vboot env --dotenv` generate is read back by its real reader and must give exactly the intended values, or
the value is refused with a clear one-line error.

Derandomized (the same examples on every run, so CI is deterministic), no example database, no deadline; a few
seconds in all. The strategies mix arbitrary text with the pieces that break naive quoting (quotes, ``$``,
``${X}``, backslashes, every kind of line break, ``#``, ``: ``).
"""

from __future__ import annotations

import os
import string
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bootstrap.core import k8s
from bootstrap.core.errors import ProfileError, UsageError
from bootstrap.core.profiles import parse_profile
from bootstrap.core.prom import rule_groups
from bootstrap.core.shellenv import dotenv_problem, render_exports
from tests.support.text import toml_str

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: An export renders four YAML files twice per example (~30 ms of pure-Python emitting): fewer examples, same rules.
FUZZ_K8S = settings(FUZZ, max_examples=100)

PIECES = ["'", '"', "$", "${X}", "${", "}", "$(touch PWNED)", "`touch PWNED`", "\\", "\\\\", "\\n", "\\c", "\n",
          "\r", "\r\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\t", "#", "# ", ": ", "- ", "---", "...", "&a",
          "*a", "!!str", "{", "[", "%", "@", "=", " ", "a", "Z", "9", "é", "模型", "\U0001F600", "\ufeff", "\x1b",
          "1e3", "y", "null", "--port", "-x"]
# Any character a TOML file can hold in a string (all of Unicode but NUL, which the reader refuses, and surrogates).
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
VALUES = st.one_of(st.text(CHARS, max_size=24), st.lists(st.sampled_from(PIECES), max_size=8).map("".join))
# Model ids: mostly ones a ModelScope profile may hold (so the reader path reaches the emitters), some anything.
_ALNUM = string.ascii_letters + string.digits
_ID_PART = st.tuples(st.sampled_from(_ALNUM + "_"), st.text(_ALNUM + "._-", max_size=14)).map("".join)
HUB_IDS = st.tuples(_ID_PART, _ID_PART).map("/".join)
MODEL_IDS = st.sampled_from((0, 1, 2, 3)).flatmap(lambda i: VALUES if i == 3 else HUB_IDS)  # 1 in 4: anything
NAMES = st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True).map(lambda s: f"FZ_{s}")  # no shell-special names
BASE = parse_profile('[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\n', "fuzz", "/cfg/fuzz.toml")


def _header_and_body(text: str) -> tuple[list[str], str]:
    lines = text.splitlines(keepends=True)  # Python splits on every Unicode line break: the strictest reader
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return lines[:n], "".join(lines[n:])


GROUPS = rule_groups()  # the same for every profile: built once


#: Two real readers: libyaml (C, what PyYAML uses when built with it; fast) and PyYAML's own pure-Python loader.
C_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def assert_export_reads_back(profile) -> k8s.Export:
    result = k8s.build_export(profile, k8s.K8sOptions(), GROUPS)
    for doc in result.documents:
        assert yaml.load(doc.text, Loader=C_LOADER) == doc.data, doc.filename  # noqa: S506 - a safe loader
        if doc.filename != k8s.KUBE_PROM_STACK_FILE:  # the pure-Python reader too (the rules file is slow to read)
            assert yaml.safe_load(doc.text) == doc.data, doc.filename
        header, body = _header_and_body(doc.text)  # the header ends where Python sees the first non-comment line
        assert len(header) >= 4 and all(line.startswith("# ") for line in header), doc.filename
        assert body.startswith(next(iter(doc.data))), doc.filename  # ...which is the document's first key
    spec = result.documents[0].data["servingEngineSpec"]["modelSpec"][0]
    assert spec["modelURL"] == profile.model.id
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert all(env[k] == v for k, v in profile.env.items() if k != k8s.API_KEY_ENV)
    return result


# --- export k8s ------------------------------------------------------------------------------------------------

@FUZZ_K8S
@given(model_id=MODEL_IDS, served=VALUES, description=VALUES, env=st.dictionaries(NAMES, VALUES, max_size=4),
       args=st.lists(VALUES, max_size=4), source_name=VALUES)
def test_fuzz_export_k8s_files_read_back_as_the_intended_documents(model_id, served, description, env, args,
                                                                  source_name):
    # 1. The emitter alone, with values the profile reader would refuse (a line break in the model id).
    direct = replace(BASE, name=f"p{source_name}", description=description, source_path=f"/cfg/{source_name}.toml",
                     model=replace(BASE.model, id=model_id or "m", served_name=served.lstrip("-")),
                     serve=replace(BASE.serve, args=("--chat-template", *args)), env=env)
    assert_export_reads_back(direct)

    # 2. Through the profile reader, as `vboot export k8s FILE` reads the file: refused with a one-line error
    #    naming file and key, or exported and read back.
    text = (f"description = {toml_str(description)}\n[model]\nid = {toml_str(model_id)}\n"
            f"served_name = {toml_str(served)}\n[serve]\nargs = [{', '.join(toml_str(a) for a in args)}]\n[env]\n"
            + "".join(f"{k} = {toml_str(v)}\n" for k, v in env.items()))
    try:
        profile = parse_profile(text, "fuzz", "/cfg/fuzz.toml")
    except ProfileError as exc:
        assert exc.message.startswith("/cfg/fuzz.toml") and exc.message.isprintable(), exc.message
        event(f"refused by the reader: {exc.message.split(':')[2].strip()[:24]}")
        return
    event("read and exported")
    assert (profile.model.id, profile.model.served_name, profile.description, dict(profile.env)) == \
        (model_id, served, description, env)
    result = assert_export_reads_back(profile)
    with tempfile.TemporaryDirectory() as out:
        k8s.write_files(k8s.plan_writes(Path(out), result), result)
        for doc in result.documents:
            assert Path(out, doc.filename).read_bytes() == doc.text.encode("utf-8")  # read back above


# --- env --dotenv ----------------------------------------------------------------------------------------------

def bash_reads(path: Path, cwd: str) -> dict[str, str] | None:
    """What `set -a; . FILE` gives bash for the FZ_ variables (None when bash fails to source the file)."""
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", 'set -a; . "$1" && exec env -0', "bash", str(path)],
                          capture_output=True, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}, cwd=cwd,
                          timeout=30)
    if proc.returncode != 0:
        return None
    items = (item.split(b"=", 1) for item in proc.stdout.split(b"\0") if item)
    return {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in items if k.startswith(b"FZ_")}


def dotenv_reads(path: Path) -> dict[str, str | None] | None:
    import dotenv

    try:
        return {k: v for k, v in dotenv.dotenv_values(path).items() if k.startswith("FZ_")}
    except Exception:  # noqa: BLE001 - a parse failure is a disagreement like any other
        return None


def _carried_by_bash_and_dotenv(line_value: str, value: str, tmp: str) -> bool:
    path = Path(tmp, "probe.env")
    path.write_text(f"FZ_PROBE={line_value}\n", encoding="utf-8")
    return dotenv_reads(path) == {"FZ_PROBE": value} and bash_reads(path, tmp) == {"FZ_PROBE": value}


@FUZZ
@given(env=st.dictionaries(NAMES, VALUES, min_size=1, max_size=5))
def test_fuzz_dotenv_reads_back_in_bash_and_python_dotenv_or_is_refused(env):
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text = render_exports(env, dotenv=True)
        except UsageError as exc:
            name = exc.context["variable"]
            value = env[name]
            assert f"cannot write {name} to a .env file" in exc.message and exc.message.isprintable()
            assert dotenv_problem(value) is not None
            # The refusal is needed: neither quoting reads back in both real readers here. Docker compose's own
            # rules in double quotes are the reasons these two readers cannot show: it expands every $ (a lone $
            # is an error there) and decodes \c and \0.
            assert not _carried_by_bash_and_dotenv(f"'{value}'", value, tmp)
            compose_only = "$" in value or any(value[i + 1:i + 2] in ("c", "0")
                                               for i, ch in enumerate(value) if ch == "\\")
            assert compose_only or not _carried_by_bash_and_dotenv(f'"{value}"', value, tmp)
            return
        path = Path(tmp, "fuzz.env")
        path.write_bytes(text.encode("utf-8"))
        assert dotenv_reads(path) == env
        assert bash_reads(path, tmp) == env
        assert sorted(os.listdir(tmp)) == ["fuzz.env"]  # nothing in a value ran


def test_the_fuzz_settings_are_bounded_and_deterministic():
    for fuzz in (FUZZ, FUZZ_K8S):
        assert fuzz.max_examples <= 200 and fuzz.derandomize and fuzz.database is None and fuzz.deadline is None




# --- the profile reader itself ----------------------------------------------------------------------------------

SCALARS = st.one_of(VALUES, st.integers(min_value=-2**63, max_value=2**63 - 1), st.booleans(),
                    st.floats(allow_nan=True, allow_infinity=True), st.just("3.1GB"), st.just("1PiB"))
TOML_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.sampled_from(["a", "b"]), inner,
                                                                             max_size=2)), max_leaves=4)
KEYS = {
    "": ["description", "cache_dir"],
    "model": ["id", "source", "revision", "served_name", "path"],
    "serve": ["port", "host", "device", "max_model_len", "gpu_memory_utilization", "tensor_parallel_size",
              "enable_sleep_mode", "kv_connector", "dtype", "args"],
    "env": ["FZ_A", "VLLM_API_KEY", "MODELSCOPE_CACHE"],
    "needs": ["weights", "min_free_vram", "min_free_disk"],
}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if value in (float("inf"), float("-inf")) \
            else repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


# Half strings (what most keys hold, so many profiles are read and used), half any TOML value.
EDIT_VALUES = st.sampled_from((0, 1)).flatmap(lambda i: VALUES if i == 0 else TOML_VALUES)
EDITS = st.lists(st.tuples(st.sampled_from([(t, k) for t, keys in KEYS.items() for k in keys]), EDIT_VALUES),
                 min_size=1, max_size=2)


@FUZZ
@given(edits=EDITS)
def test_fuzz_the_profile_reader_refuses_with_a_profile_error_or_reads_a_usable_profile(edits):
    """A good profile with one to three keys set to anything: reading it gives a profile every command can use, or
    a ProfileError naming the file; never another exception (one of those broke every command and `vboot
    profiles`)."""
    tables: dict[str, dict] = {"": {}, "model": {"id": "Qwen/Qwen2.5-1.5B-Instruct"}, "serve": {}, "env": {},
                               "needs": {"weights": "3.1GB"}}
    for (table, key), value in edits:
        tables[table][key] = value
    text = "".join(f"{k} = {toml_value(v)}\n" for k, v in tables[""].items())
    for table in ("model", "serve", "env", "needs"):
        text += f"[{table}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in tables[table].items())
    try:
        profile = parse_profile(text, "fuzz", "/cfg/fuzz.toml")
    except ProfileError as exc:
        assert exc.message.startswith("/cfg/fuzz.toml") and exc.message.isprintable()
        event(f"refused: {exc.message.split(':')[2].strip().split(' ')[0][:30]}")
        return
    event("read")
    from bootstrap.core.environ import Environ
    from bootstrap.core.profiles import resolve_serve_settings

    n = profile.needs
    assert all(0 <= b <= 1024**5 for b in (n.weights_bytes, n.min_free_vram_bytes, n.min_free_disk_bytes))
    settings_ = resolve_serve_settings(profile, Environ({"HOME": "/nonexistent"}))  # what serve, env, doctor do
    assert 1 <= settings_.port <= 65535
    if profile.model.source != "local":  # what export does (its files are read back by the test above)
        k8s.build_export(profile, k8s.K8sOptions(), GROUPS)
    try:
        render_exports(profile.env, dotenv=True)
    except UsageError as exc:  # a value no .env reader can carry: refused, naming it
        assert exc.context["variable"] in profile.env
