"""An option's value that looks like an option is a usage error (issue 17, item 6), for every option of every
command: the commands are walked through the real top-level group, so an option added later is covered too."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import click
import pytest

from bootstrap.cli.main import COMMANDS, cli
from bootstrap.cli.optguard import GuardedCommand, option_like_values, takes_value
from bootstrap.core.errors import UsageError
from tests.support.cli import vboot_exe


def walk() -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    """(path, command, a parse context for it) for the top-level group and every command and subcommand it hands
    out, as `vboot PATH...` resolves them. Each context gets its command's context_settings, as click's own
    make_context gives them: click keeps the help option a context first made (with its spellings) on the command,
    and the in-process CLI runs after this must find `-h` there."""
    root = click.Context(cli, info_name="vboot", **cli.context_settings)
    yield (), cli, root

    def below(path: tuple[str, ...], group: click.Group, parent: click.Context):
        for name in group.list_commands(parent):
            cmd = group.get_command(parent, name)
            assert cmd is not None, name
            ctx = click.Context(cmd, info_name=name, parent=parent, **cmd.context_settings)
            yield (*path, name), cmd, ctx
            if isinstance(cmd, click.Group):
                yield from below((*path, name), cmd, ctx)

    yield from below((), cli, root)


def value_options() -> list[tuple[tuple[str, ...], click.Command, click.Context, click.Option, str]]:
    return [(path, cmd, ctx, p, spelling) for path, cmd, ctx in walk() for p in cmd.get_params(ctx)
            if takes_value(p) for spelling in (*p.opts, *p.secondary_opts)]


def _id(case) -> str:
    path, _cmd, _ctx, _param, spelling = case
    return " ".join((*path, spelling))


ALL = value_options()


def test_the_walk_reaches_every_command_and_the_options_the_issue_names():
    reached = {path for path, _cmd, _ctx in walk()}
    assert {(name,) for name in COMMANDS} <= reached
    assert {("disk", "clean"), ("disk", "caches"), ("kernel", "install"), ("export", "k8s")} <= reached
    spelled = {(*path, spelling) for path, _c, _x, _p, spelling in ALL}
    assert {("setup", "--venv"), ("serve", "--api-key"), ("serve", "--port"), ("logs", "-n"), ("pull", "-r"),
            ("doctor", "-p"), ("disk", "clean", "--cache"), ("export", "k8s", "--out")} <= spelled
    assert len(ALL) >= 40


@pytest.mark.parametrize("path", [path for path, _c, _x in walk()], ids=lambda p: " ".join(p) or "vboot")
def test_every_command_is_guarded(path):
    cmd = dict(((p, c) for p, c, _x in walk()))[path]
    assert isinstance(cmd, GuardedCommand)


@pytest.mark.parametrize("case", ALL, ids=_id)
@pytest.mark.parametrize("value", ["--dry-run", "-x", "--", "--json", "-h"])
def test_an_option_like_value_is_a_usage_error_for_every_value_option(case, value):
    """Through click's own entry into the command (make_context parses, it does not run the command)."""
    _path, cmd, ctx, _param, spelling = case
    with pytest.raises(UsageError, match="looks like an option") as err:
        cmd.make_context(ctx.info_name, [spelling, value], parent=ctx.parent)
    assert spelling in err.value.message and f"{spelling}" in err.value.hint


@pytest.mark.parametrize("case", ALL, ids=_id)
def test_an_attached_value_starting_with_a_dash_is_taken_as_given(case):
    _path, cmd, ctx, _param, spelling = case
    attached = f"{spelling}=--odd" if spelling.startswith("--") else f"{spelling}--odd"
    assert option_like_values(cmd, ctx, [attached]) == []


@pytest.mark.parametrize("case", [c for c in ALL if isinstance(c[3].type, (click.types.IntParamType,
                                                                            click.types.FloatParamType))], ids=_id)
def test_a_negative_number_is_a_value_where_a_number_is_expected(case):
    _path, cmd, ctx, _param, spelling = case
    assert option_like_values(cmd, ctx, [spelling, "-1"]) == []
    assert option_like_values(cmd, ctx, [spelling, "-0.5"]) == []
    assert option_like_values(cmd, ctx, [spelling, "-1e3"]) == []


def test_a_negative_number_is_no_value_for_an_option_that_takes_text():
    _path, cmd, ctx, _p, spelling = next(c for c in ALL if c[0] == ("setup",) and c[4] == "--venv")
    assert option_like_values(cmd, ctx, [spelling, "-1"]) == [("--venv", "-1")]


def test_a_single_dash_is_a_value():
    _path, cmd, ctx, _p, spelling = next(c for c in ALL if c[0] == ("setup",) and c[4] == "--venv")
    assert option_like_values(cmd, ctx, [spelling, "-"]) == []


def _cmd(*path: str) -> tuple[click.Command, click.Context]:
    for p, cmd, ctx in walk():
        if p == path:
            return cmd, ctx
    raise KeyError(path)


def test_vllm_arguments_after_double_dash_are_vllms():
    cmd, ctx = _cmd("serve")
    assert option_like_values(cmd, ctx, ["tiny", "--port", "8001", "--", "--port", "--max-model-len", "-x"]) == []
    assert option_like_values(cmd, ctx, ["tiny", "--", "--api-key", "--x"]) == []


def test_short_options_clustered_and_interspersed_with_arguments():
    cmd, ctx = _cmd("logs")
    assert option_like_values(cmd, ctx, ["name", "-fn", "--x"]) == [("-fn", "--x")]
    assert option_like_values(cmd, ctx, ["-fn5", "name"]) == []
    assert option_like_values(cmd, ctx, ["name", "-f", "-n", "-3"]) == []  # -n takes a number
    cmd, ctx = _cmd("serve")
    assert option_like_values(cmd, ctx, ["tiny", "--name", "--detach"]) == [("--name", "--detach")]


def test_an_api_key_that_begins_with_a_dash_is_given_attached():
    cmd, ctx = _cmd("serve")
    assert option_like_values(cmd, ctx, ["tiny", "--api-key", "-Xyz"]) == [("--api-key", "-Xyz")]
    assert option_like_values(cmd, ctx, ["tiny", "--api-key=-Xyz"]) == []


def test_a_group_stops_at_its_subcommand():
    cmd, ctx = _cmd("disk")
    assert option_like_values(cmd, ctx, ["clean", "--cache", "--yes"]) == []  # disk clean judges its own
    sub, sub_ctx = _cmd("disk", "clean")
    assert option_like_values(sub, sub_ctx, ["--cache", "--yes"]) == [("--cache", "--yes")]


def test_setup_with_the_directory_forgotten_installs_nothing(isolated_env, tmp_path):
    """The issue's case, through the installed binary: exit 2 with one line, nothing created anywhere."""
    work = tmp_path / "work"
    work.mkdir()
    before = sorted(tmp_path.rglob("*"))
    proc = subprocess.run([*vboot_exe(), "setup", "--venv", "--dry-run", "--json"], capture_output=True, text=True,
                          env=isolated_env, cwd=work, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout)["errors"][0]
    assert err["code"] == "usage" and "--venv" in err["message"] and "--venv=--dry-run" in err["hint"]
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv", [["disk", "clean", "--cache", "--yes"], ["pull", "qwen", "--revision", "--offline"],
                                  ["export", "k8s", "qwen", "--out", "--force"], ["serve", "tiny", "--name", "-d"],
                                  ["stop", "--timeout", "--all"], ["kernel", "install", "qwen", "--venv", "--name"]])
def test_the_binary_refuses_an_option_taken_for_a_value_before_running_anything(isolated_env, argv, tmp_path):
    work = tmp_path / "work"  # the working directory too: `--out --force` would write a directory named --force
    work.mkdir()
    before = sorted(tmp_path.rglob("*"))
    proc = subprocess.run([*vboot_exe(), *argv], capture_output=True, text=True, env=isolated_env, cwd=work,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2 and "looks like an option" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2 and "Traceback" not in proc.stderr  # the error and its hint
    assert sorted(tmp_path.rglob("*")) == before
