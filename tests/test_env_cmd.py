"""`vboot env`: the exports a profile implies, evaluated by real shells (bash always; zsh and fish where installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.core.shellenv import quote_single, render_exports

# Values that break naive quoting: spaces, both quotes, $, backslashes, a newline, a glob, a backtick, unicode.
NASTY = {
    "SPACES": "a value with  two  spaces",
    "SINGLE": "it's 'quoted'",
    "DOUBLE": 'say "hi"',
    "DOLLAR": "$HOME and ${PATH} and $(echo no) `echo no`",
    "BACKSLASH": "C:\\path\\n\\t \\\\ end\\",
    "NEWLINE": "line one\nline two\n",
    "GLOB": "* ? [a-z] ~ ; & | < > # !",
    "UNICODE": "naïve 模型 ✓",
    "EMPTY": "",
}

PROFILE = """
description = "test profile with hostile values"
[model]
id = "Qwen/Qwen2.5-0.5B-Instruct"
source = "modelscope"
[env]
""" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in NASTY.items())

DUMP = [sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"]


def _write_profile(isolated_env: dict, name: str = "nasty") -> None:
    d = Path(isolated_env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.toml").write_text(PROFILE, encoding="utf-8")


def _clean_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}


def _shell_argv(shell: str, script: str) -> list[str]:
    if shell == "bash":
        return ["bash", "--noprofile", "--norc", "-c", script]
    if shell == "zsh":
        return ["zsh", "-f", "-c", script]
    return ["fish", "--no-config", "-c", script]


def _env_after(shell: str, exports: Path | None, tmp_path: Path) -> dict[str, str]:
    """The environment a program sees after the shell evaluated ``exports`` (or nothing)."""
    dump = " ".join(f"'{a}'" for a in DUMP)
    if exports is None:
        script = f"exec {dump}"
    elif shell == "fish":
        script = f"eval (cat '{exports}' | string collect); exec {dump}"
    else:
        script = f'eval "$(cat \'{exports}\')"; exec {dump}'
    proc = subprocess.run(_shell_argv(shell, script), capture_output=True, text=True, env=_clean_env(tmp_path),
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _shells() -> list:
    return ["bash", "zsh", "fish"]


def require_shell(shell: str) -> None:
    if not shutil.which(shell):
        from tests.support.e2e import missing

        missing(f"{shell} is not installed (apt-get install -y zsh fish)")


@pytest.mark.parametrize("shell", _shells())
def test_evaluated_exports_set_exactly_the_profiles_variables(shell, tmp_path, isolated_env, run_vboot):
    require_shell(shell)
    _write_profile(isolated_env)
    cache = tmp_path / "ms cache 'with' \"quotes\" $HOME"
    proc = run_vboot("env", "nasty", "--shell", shell, env={"MODELSCOPE_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    exports = tmp_path / "exports.txt"
    exports.write_text(proc.stdout, encoding="utf-8")

    before = _env_after(shell, None, tmp_path)
    after = _env_after(shell, exports, tmp_path)
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    expected = dict(NASTY, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True", VLLM_USE_MODELSCOPE="true",
                    MODELSCOPE_CACHE=str(cache))
    assert changed == expected


def test_dotenv_refuses_a_value_no_dotenv_reader_can_carry_naming_the_variable(tmp_path, isolated_env, run_vboot):
    """NASTY's DOLLAR holds ${PATH}, which python-dotenv expands inside any quotes: no .env line can carry it to
    every reader (the round trips of what can be carried: tests/test_generated_text.py)."""
    _write_profile(isolated_env)
    proc = run_vboot("env", "nasty", "--dotenv", "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = json.loads(proc.stdout)["errors"][0]
    assert err["code"] == "usage" and "DOLLAR" in err["message"] and "${PATH}" in err["message"]
    assert "--shell bash" in err["hint"]


def test_default_shell_follows_SHELL_for_fish(isolated_env, run_vboot):  # noqa: N802 - names the variable
    proc = run_vboot("env", "tiny", env={"SHELL": "/usr/bin/fish"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("set -gx ")


def test_tiny_profile_exports_alloc_conf_and_kv_cache_space(isolated_env, run_vboot):
    proc = run_vboot("env", "tiny", "--shell", "bash", env={"MODELSCOPE_CACHE": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
                                        "export VLLM_CPU_KVCACHE_SPACE=1"]


def test_users_own_alloc_conf_is_kept(isolated_env, run_vboot):
    proc = run_vboot("env", "tiny", env={"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"})
    assert "export PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128" in proc.stdout.splitlines()


def test_json_lists_each_variable_with_its_origin(isolated_env, run_vboot):
    proc = run_vboot("env", "tiny", "--json", env={"MODELSCOPE_CACHE": ""})
    doc = json.loads(proc.stdout)
    assert doc["command"] == "env" and doc["exit_code"] == 0
    origins = {v["name"]: v["origin"] for v in doc["data"]["variables"]}
    assert origins == {"PYTORCH_CUDA_ALLOC_CONF": "vboot", "VLLM_CPU_KVCACHE_SPACE": "profile"}


def test_unknown_profile_is_one_line_error_with_exit_2(isolated_env, run_vboot):
    proc = run_vboot("env", "no-such-profile")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "no profile named 'no-such-profile'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_single_quoting_escapes_only_backslash_and_single_quote():
    assert quote_single("a'b\\c $d\n") == "'a\\'b\\\\c $d\n'"


def test_fish_escapes_a_single_quote_and_dotenv_double_quotes_it():
    assert render_exports({"X": "x'y"}, shell="fish") == "set -gx X 'x\\'y'\n"
    assert render_exports({"X": "x'y"}, dotenv=True) == "X=\"x'y\"\n"
    assert render_exports({"X": "$x"}, dotenv=True) == "X='$x'\n"


def test_render_rejects_an_invalid_variable_name():
    from bootstrap.core.errors import UsageError

    with pytest.raises(UsageError):
        render_exports({"NOT-VALID": "x"}, "bash")


@pytest.mark.parametrize("args", [["env", "tiny", "--shell", "bash"], ["kernel", "list"]])
def test_env_and_kernel_do_not_import_the_setup_planner(args, isolated_env):
    """They only render text and kernel specs; the setup planner (and its pip machinery) is setup's."""
    code = ("import sys\nfrom bootstrap.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nprint('EXIT', code, 'bootstrap.core.setup' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=isolated_env | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}, stdin=subprocess.DEVNULL)
    assert proc.stderr.strip().splitlines()[-1] == "EXIT 0 False", proc.stderr
