"""Generated files from hostile values (issue 17, items 10, 11 and 13): every file is read back by its real reader
and must give exactly the intended values; files are written without following links.

- `vboot export k8s`: the four YAML files, parsed with ``yaml.safe_load`` and compared with the documents
  :func:`bootstrap.core.k8s.build_export` meant (``Document.data``); the header comments hold no line break.
- `vboot env --dotenv`: the file sourced by bash, dash and zsh (``set -a; . FILE``) and read by python-dotenv, byte
  for byte; values no form can carry for all of them are refused with a one-line error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from bootstrap.core import k8s
from bootstrap.core.environ import Environ
from bootstrap.core.profiles import load_profile
from bootstrap.core.yamltext import comment, to_yaml
from tests.support.text import toml_str

# Every character some reader takes for the end of a line: YAML 1.1 (PyYAML, go-yaml v2) breaks on \n, \r, NEL,
# U+2028 and U+2029; Python's splitlines also on \v, \f, \x1c-\x1e; YAML 1.2 on \n and \r only.
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
INJECTED = "\nkind: Secret\nmetadata: {name: pwned}\n#"


def hostile_strings() -> list[str]:
    out = [f"Qwen/x{br}injected: true" for br in LINE_BREAKS]
    out += [INJECTED, "a: b", "- item", "{flow: map}", "[1, 2]", "&anchor", "*alias", "!!python/object:os.system",
            "'single'", '"double"', "#not a comment", "key: value # comment", "  leading and trailing  ", "",
            "1e3", "0o17", "0x1F", "1_000", ".inf", "y", "n", "on", "off", "yes", "~", "null", "1:30", "<<", "=",
            "tab\there", "nul-free\x01\x1b[31mred", "\ufeffbom", "zero\u200bwidth", "é模型✓", "\U0001F600",
            "%TAG ! tag:x", "--- doc", "... end", "|", ">", "?", ":", "@at", "`tick`"]
    return out


def qwen():
    return load_profile("qwen", Environ({}))


def hostile_profile(value: str):
    """The qwen profile with ``value`` in every string field an export writes (the reader refuses some of these
    in a profile file, e.g. a model id with a line break: the emitter must hold on its own)."""
    p = qwen()
    return replace(
        p, name=f"n{value}", description=value, source_path=f"/cfg/{value}.toml",
        model=replace(p.model, id=value or "Qwen/x", served_name=f"s{value}", revision=f"r{value}"),
        serve=replace(p.serve, args=("--chat-template", value, f"--x={value}"), dtype=value, kv_connector=value),
        env={"HOSTILE": value, "PLAIN": "1"},
    )


def assert_reads_back_as_intended(result: k8s.Export) -> None:
    for doc in result.documents:
        assert yaml.safe_load(doc.text) == doc.data, doc.filename
        header, body = _split_header(doc.text)
        assert header and all(line.startswith("# ") for line in header), doc.filename
        assert body == to_yaml(doc.data), doc.filename  # nothing between the comments and the document


def _split_header(text: str) -> tuple[list[str], str]:
    """The leading comment lines (split as Python splits lines: on every Unicode line break) and the rest."""
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return [line.rstrip("\n") for line in lines[:n]], "".join(lines[n:])


# --- item 10: export k8s --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", hostile_strings(), ids=repr)
def test_every_k8s_file_reads_back_as_the_intended_document_whatever_the_values(value):
    result = k8s.build_export(hostile_profile(value), k8s.K8sOptions())
    assert_reads_back_as_intended(result)
    spec = result.documents[0].data["servingEngineSpec"]["modelSpec"][0]
    assert spec["modelURL"] == (value or "Qwen/x")
    assert {"name": "HOSTILE", "value": value} in spec["env"]
    assert value in spec["vllmConfig"]["extraArgs"] and f"s{value}" in spec["vllmConfig"]["extraArgs"]


@pytest.mark.parametrize("br", LINE_BREAKS, ids=repr)
def test_a_line_break_in_the_model_id_stays_inside_its_comment(br):
    result = k8s.build_export(hostile_profile(f"Qwen/x{br}injected: true"), k8s.K8sOptions())
    plain = k8s.build_export(hostile_profile("Qwen/x"), k8s.K8sOptions())
    for doc, plain_doc in zip(result.documents, plain.documents, strict=True):
        header, _ = _split_header(doc.text)
        assert len(header) == len(_split_header(plain_doc.text)[0])
        assert any("injected: true" in line for line in header)
        loaded = yaml.safe_load(doc.text)
        assert "injected" not in loaded and loaded == doc.data


def test_values_some_yaml_dialect_reads_as_numbers_or_booleans_are_quoted():
    """PyYAML would write these plain (its YAML 1.1 resolver reads them back as strings), but YAML 1.2 readers
    and Helm's go-yaml read 1e3 as a float and y/n/on as booleans."""
    for value in ("1e3", "0o17", "y", "N", "on", "1_000", ".5"):
        line = to_yaml({"k": value})
        assert line in (f"k: '{value}'\n",), line
    assert to_yaml({"k": "Qwen/Qwen2.5-1.5B-Instruct"}) == "k: Qwen/Qwen2.5-1.5B-Instruct\n"


def test_strings_with_any_line_break_or_control_character_are_double_quoted_escapes():
    for br in LINE_BREAKS + ["\t", "\x00", "\x1b", "\ufeff"]:
        text = to_yaml({"k": f"a{br}b"})
        assert text.startswith('k: "') and text.count("\n") == 1, repr(text)
        assert yaml.safe_load(text) == {"k": f"a{br}b"}


def test_comment_makes_one_line_of_any_text():
    for br in LINE_BREAKS:
        line = comment(f"model Qwen/x{br}kind: Secret")
        assert line.startswith("# ") and line.endswith("\n") and len(line.splitlines()) == 1
        assert yaml.safe_load(line + "a: 1\n") == {"a": 1}


def test_the_kv_connector_is_json_encoded_not_formatted_into_json():
    p = qwen()
    p = replace(p, serve=replace(p.serve, kv_connector='Nixl","kv_role":"kv_producer'))
    args = k8s.vllm_extra_args(p)
    config = json.loads(args[args.index("--kv-transfer-config") + 1])
    assert config == {"kv_connector": 'Nixl","kv_role":"kv_producer', "kv_role": "kv_both"}


def test_the_cli_writes_files_that_read_back_for_a_hostile_profile_file(run_vboot, tmp_path):
    """Through the real command: a profile file whose name holds a line break, and the values a profile file can
    hold (the reader refuses hostile ids and revisions, item 14)."""
    value = "x\u2028injected: true\nkind: Secret\r\u0085#"
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    path = cfg / "evil\nname: pwned.toml"
    path.write_text(
        'description = ' + json.dumps(value) + '\n[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\nserved_name = '
        + json.dumps(value) + '\n[serve]\nargs = ["--chat-template", ' + json.dumps(value) + ']\n[env]\nHOSTILE = '
        + json.dumps(value) + '\n', encoding="utf-8")
    out = tmp_path / "out"
    proc = run_vboot("export", "k8s", str(path), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    from bootstrap.core.profiles import parse_profile

    intended = k8s.build_export(parse_profile(path.read_text(encoding="utf-8"), path.stem, str(path)),
                                k8s.K8sOptions())
    for doc in intended.documents:
        text = (out / doc.filename).read_text(encoding="utf-8")
        assert text == doc.text
        assert yaml.safe_load(text) == doc.data
    spec = yaml.safe_load((out / k8s.PRODUCTION_STACK_FILE).read_text())["servingEngineSpec"]["modelSpec"][0]
    assert {"name": "HOSTILE", "value": value} in spec["env"]


# --- item 11: writing never follows a link --------------------------------------------------------------------

def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


def test_a_planted_tmp_link_is_never_written_through(run_vboot, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    victim = _victim(tmp_path)
    for name in k8s.FILES:
        (out / f".{name}.tmp").symlink_to(victim)
    proc = run_vboot("export", "k8s", "qwen", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious\n"
    assert all((out / f".{name}.tmp").is_symlink() for name in k8s.FILES)  # not ours: left alone
    assert all((out / name).read_text() == doc.text
               for name, doc in zip(k8s.FILES, k8s.build_export(qwen(), k8s.K8sOptions()).documents, strict=True))
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".tmp")) == sorted(k8s.FILES)


@pytest.mark.parametrize("force", [False, True])
def test_a_link_at_a_files_name_is_refused_with_or_without_force(run_vboot, tmp_path, force):
    out = tmp_path / "o"
    out.mkdir()
    victim = _victim(tmp_path)
    (out / k8s.HPA_FILE).symlink_to(victim)
    proc = run_vboot("export", "k8s", "qwen", "--out", str(out), "--json", *(["--force"] if force else []))
    assert proc.returncode == 7, proc.stdout
    err = json.loads(proc.stdout)["errors"][0]
    assert err["code"] == "conflict" and "symbolic link" in err["message"] and str(victim) in err["message"]
    assert victim.read_text() == "precious\n" and (out / k8s.HPA_FILE).is_symlink()
    assert sorted(p.name for p in out.iterdir()) == [k8s.HPA_FILE]  # nothing else written either


def test_a_link_with_the_same_content_is_still_refused(run_vboot, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    victim = tmp_path / "same.yaml"
    victim.write_text(k8s.build_export(qwen(), k8s.K8sOptions()).documents[-1].text)
    (out / k8s.HPA_FILE).symlink_to(victim)
    assert run_vboot("export", "k8s", "qwen", "--out", str(out)).returncode == 7


@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_a_directory_or_fifo_at_a_files_name_is_refused_without_blocking(run_vboot, tmp_path, kind):
    out = tmp_path / "o"
    out.mkdir()
    target = out / k8s.HPA_FILE
    target.mkdir() if kind == "dir" else os.mkfifo(target)
    proc = run_vboot("export", "k8s", "qwen", "--out", str(out), "--force", timeout=30)
    assert proc.returncode == 7 and ("a directory" if kind == "dir" else "a FIFO") in proc.stderr


def test_a_link_that_appears_after_the_plan_is_replaced_not_written_through(tmp_path):
    out = tmp_path / "o"
    victim = _victim(tmp_path)
    result = k8s.build_export(qwen(), k8s.K8sOptions())
    plan = k8s.plan_writes(out, result)
    out.mkdir()
    (out / k8s.HPA_FILE).symlink_to(victim)  # the race: planted between plan and write
    k8s.write_files(plan, result)
    assert victim.read_text() == "precious\n"
    assert not (out / k8s.HPA_FILE).is_symlink() and (out / k8s.HPA_FILE).read_text() == next(
        d.text for d in result.documents if d.filename == k8s.HPA_FILE)


def test_written_files_get_the_usual_permissions_and_no_temporary_file_stays(tmp_path):
    out = tmp_path / "o"
    result = k8s.build_export(qwen(), k8s.K8sOptions())
    old = os.umask(0o022)
    try:
        k8s.write_files(k8s.plan_writes(out, result), result)
    finally:
        os.umask(old)
    assert sorted(p.name for p in out.iterdir()) == sorted(k8s.FILES)
    assert {oct((out / n).stat().st_mode & 0o777) for n in k8s.FILES} == {"0o644"}


def test_a_failed_write_leaves_the_old_files_and_no_temporary_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    from bootstrap.core.errors import VbootError

    out = tmp_path / "o"
    out.mkdir()
    (out / k8s.HPA_FILE).write_text("old\n")
    result = k8s.build_export(qwen(), k8s.K8sOptions())
    plan = k8s.plan_writes(out, result, force=True)
    real, calls = tempfile.mkstemp, []

    def full_disk_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_disk_on_the_third)
    with pytest.raises(VbootError, match="No space left on device"):
        k8s.write_files(plan, result)
    assert sorted(p.name for p in out.iterdir()) == [k8s.HPA_FILE] and (out / k8s.HPA_FILE).read_text() == "old\n"


def test_out_that_is_a_file_is_refused_before_anything_is_written(run_vboot, tmp_path):
    from bootstrap.core.errors import ConflictError

    (tmp_path / "o").write_text("x")
    with pytest.raises(ConflictError, match="not a directory"):
        k8s.plan_writes(tmp_path / "o", k8s.build_export(qwen(), k8s.K8sOptions()))
    proc = run_vboot("export", "k8s", "qwen", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr


# --- item 13: env --dotenv ------------------------------------------------------------------------------------

DOTENV_SHELLS = ("bash", "dash", "zsh")

#: Values every .env reader can be given (one quoting or the other) and must read back byte for byte.
CARRIED = {
    "SUBST": "$(touch PWNED) and `touch PWNED`",
    "DOLLAR": "$HOME $ {X} ${x $ $$ $1",
    "BACKSLASH": "C:\\path\\new \\$x \\t \\\"",
    "SINGLE": "it's 'quoted'",
    "SINGLE_BACKSLASH": "it's C:\\quoted\\path\\x",
    "DOUBLE": 'say "hi"',
    "NEWLINES": "line one\nline two\n\n",
    "LEADING_NL": "\nx",
    "EMPTY": "",
    "SPACES": "  lead and trail  ",
    "HASH": "#not a comment # nor this",
    "EQUALS": "x=y==z",
    "CONTROL": "tab\there\x0bvt\x0cff\x1b[31mesc\x01",
    "UNICODE_BREAKS": "a\u2028b\u2029c\x85d",
    "UNICODE": "naïve 模型 ✓ \U0001F600",
    "GLOB": "* ? [a-z] ~ ; & | < > ! {a,b}",
    "EXPORT": "export X=1",
}

#: Values no quoting gives to every reader, with the reason the error must name.
REFUSED = {
    "CR": ("a\rb", "carriage return"),
    "CRLF": ("a\r\nb", "carriage return"),
    "BRACES": ("${PATH}", "${PATH}"),
    "DEFAULT": ("x ${A:-b} y", "${A:-b}"),
    "TRAILING": ("dir\\", "backslash at the end"),
    "DOUBLED": ("a\\\\b", "two backslashes"),
    "QUOTE_DOLLAR": ("it's $HOME", "both ' (single quotes cannot hold it) and $"),
    "QUOTE_TICK": ("it's `x`", "and `"),
    "QUOTE_BACKSLASH": ("it's a\\b", "a backslash before 'b'"),
    "QUOTE_BACKSLASH_END": ("it's a\\", "a backslash at the end"),
    "QUOTE_DOUBLE": ("it's \"x\"", "and \""),
}




def vboot_bytes(isolated_env: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Like the run_vboot fixture (in-process), but stdout as the bytes written: text would turn a carriage return
    into a newline."""
    from tests.support.cli import run_in_process

    ran = run_in_process(*args, env=env, timeout=120)
    return subprocess.CompletedProcess(ran.args, ran.returncode, ran.stdout_bytes, ran.stderr.encode())


def _dotenv_profile(isolated_env: dict, values: dict[str, str], name: str = "dotenv") -> None:
    d = Path(isolated_env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{k} = {toml_str(v)}\n" for k, v in values.items())
    (d / f"{name}.toml").write_text(f'[model]\nid = "Qwen/Qwen2.5-0.5B-Instruct"\n[env]\n{body}', encoding="utf-8")


def require(program: str) -> None:
    if not shutil.which(program):
        from tests.support.e2e import missing

        missing(f"{program} is not installed (apt-get install -y {program}; scripts/test.sh installs it)")


def sourced(shell: str, path: Path, cwd: Path) -> dict[bytes, bytes]:
    """The environment a program sees after ``set -a; . FILE`` in ``shell`` (read as raw bytes with env -0)."""
    require(shell)
    script = 'set -a; . "$1"; exec env -0'
    argv = {"bash": ["bash", "--noprofile", "--norc", "-c", script, "bash", str(path)],
            "dash": ["dash", "-c", script, "dash", str(path)],
            "zsh": ["zsh", "-f", "-c", script, "zsh", str(path)]}[shell]
    proc = subprocess.run(argv, capture_output=True, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}, cwd=cwd,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return dict(item.split(b"=", 1) for item in proc.stdout.split(b"\0") if item)


def dotenv_read(path: Path) -> dict[str, str | None]:
    import dotenv  # python-dotenv, with its defaults (interpolation on)

    return dict(dotenv.dotenv_values(path))


def test_dotenv_file_reads_back_byte_exact_in_bash_dash_zsh_and_python_dotenv(run_vboot, isolated_env, tmp_path):
    _dotenv_profile(isolated_env, CARRIED)
    cache = tmp_path / "ms cache 'q' #x"
    proc = vboot_bytes(isolated_env, "env", "dotenv", "--dotenv", env={"MODELSCOPE_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "profile.env"
    path.write_bytes(proc.stdout)
    intended = dict(CARRIED, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True", VLLM_USE_MODELSCOPE="true",
                    MODELSCOPE_CACHE=str(cache))
    assert dotenv_read(path) == intended
    work = tmp_path / "cwd"
    work.mkdir()
    for shell in DOTENV_SHELLS:
        env = sourced(shell, path, work)
        got = {k: env.get(k.encode()) for k in intended}
        assert got == {k: v.encode("utf-8") for k, v in intended.items()}, shell
    assert list(work.iterdir()) == []  # no $(...) or `...` ran


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_value_no_dotenv_reader_can_carry_is_refused_with_one_line_naming_it(run_vboot, isolated_env, name):
    value, reason = REFUSED[name]
    _dotenv_profile(isolated_env, {"FINE": "ok", name: value})
    proc = run_vboot("env", "dotenv", "--dotenv")
    assert proc.returncode == 2 and proc.stdout == ""
    first = proc.stderr.splitlines()[0]
    assert name in first and reason in first and "Traceback" not in proc.stderr


def test_the_shell_exports_still_carry_the_values_dotenv_refuses(run_vboot, isolated_env, tmp_path):
    values = {name: value for name, (value, _) in REFUSED.items()}
    _dotenv_profile(isolated_env, values)
    proc = vboot_bytes(isolated_env, "env", "dotenv", "--shell", "bash")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "exports.sh"
    path.write_bytes(proc.stdout)
    env = sourced("bash", path, tmp_path)
    assert {k: env[k.encode()] for k in values} == {k: v.encode() for k, v in values.items()}


def test_a_kernel_spec_is_not_written_through_a_planted_tmp_link_and_is_private(tmp_path):
    from bootstrap.core.shellenv import write_kernel

    victim = _victim(tmp_path)
    kdir = tmp_path / "kernels"
    (kdir / "vboot-qwen").mkdir(parents=True)
    (kdir / "vboot-qwen" / "kernel.json.tmp").symlink_to(victim)
    path = write_kernel(kdir, "vboot-qwen", {"argv": ["python"], "env": {"HF_TOKEN": "secret"}})
    assert victim.read_text() == "precious\n"
    assert json.loads((path / "kernel.json").read_text())["env"] == {"HF_TOKEN": "secret"}
    assert (path / "kernel.json").stat().st_mode & 0o077 == 0
