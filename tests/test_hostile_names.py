"""File names are untrusted text: the human views of `disk`, `disk caches` and `disk clean` show control
characters as visible escapes (one function, bootstrap.cli.output.printable), while JSON keeps the names."""

from __future__ import annotations

import json
import os
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from bootstrap.cli.output import escape, printable
from tests.support.disk import comparable, vboot_disk_spied
from tests.support.trees import HOSTILE, hostile_tree, make_hf

# Bytes a terminal acts on, in UTF-8 output: C0 but \n (the view's own line breaks), DEL, and the UTF-8 forms of
# the C1 controls, the separators and the bidi controls.
RAW = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9\xaa-\xae\x8e\x8f]|\xe2\x81[\xa6-\xa9]")


def test_printable_escapes_every_control_separator_bidi_mark_and_surrogate():
    every = "".join(chr(c) for c in range(0x110000))
    shown = printable(every)
    for ch in set(shown):
        assert unicodedata.category(ch) not in ("Cc", "Zl", "Zp", "Cs"), hex(ord(ch))
        assert ch not in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069", hex(ord(ch))
    assert printable("plain näme/日本語 [x]") == "plain näme/日本語 [x]"


@pytest.mark.parametrize("raw, shown", [
    ("a\x1b[31mb", "a\\x1b[31mb"), ("a\rb\nc\td", "a\\rb\\nc\\td"), ("\x00\x7f", "\\x00\\x7f"),
    ("\x9b\x85", "\\x9b\\x85"), ("l\u2028p\u2029", "l\\u2028p\\u2029"), ("\u202eabc", "\\u202eabc"),
    (os.fsdecode(b"bad\xff\x1b"), "bad\\xff\\x1b"), ("\ud800", "\\ud800"),
])
def test_printable_cases(raw, shown):
    assert printable(raw) == shown


def test_escape_is_printable_then_markup_safe():
    from rich.console import Console

    console = Console(record=True, width=200, color_system=None)
    console.print(escape("[bold]x[/] \x1b[2J"))
    assert console.export_text().rstrip("\n") == "[bold]x[/] \\x1b[2J"


@pytest.mark.parametrize("extra", [[], ["--depth", "2"]])
def test_disk_escapes_names_the_same_way_with_and_without_the_fast_path(tmp_path, isolated_env, extra):
    root = hostile_tree(tmp_path / "t")
    fast = vboot_disk_spied([str(root), *extra], isolated_env, True)
    cli = vboot_disk_spied([str(root), *extra], isolated_env, False)
    assert (fast.returncode, cli.returncode) == (0, 0), fast.stderr + cli.stderr
    assert "click loaded: False" in fast.stderr and "click loaded: True" in cli.stderr
    assert comparable(fast, False) == comparable(cli, False)
    out = fast.stdout.encode()
    assert not RAW.search(out), RAW.search(out)
    for shown in ("red\\x1b[31mX\\x1b[0m", "title\\x1b]0;pwned\\x07", "over\\rwrite", "csi\\x9b2J", "line\\u2028sep",
                  "rtl\\u202egnp.exe", "new\\nline", "[bold]markup[red]", "bytes\\xff\\x1b[1m"):
        assert shown in fast.stdout, shown


def test_disk_json_keeps_the_names(tmp_path, isolated_env):
    root = hostile_tree(tmp_path / "t")
    for head_start in (True, False):
        proc = vboot_disk_spied([str(root), "--json"], isolated_env, head_start)
        names = {Path(e["path"]).name for e in json.loads(proc.stdout)["data"]["entries"]}
        assert set(HOSTILE) <= names and "bytes\\xff\x1b[1m" in names  # undecodable bytes as \xNN, as before


def test_disk_caches_and_clean_escape_model_ids_and_paths(cache_env, tmp_path, run_vboot):
    hub = tmp_path / "hf" / "hub"
    make_hf(hub, "evil\x1b]0;pwned\x07/x\u2028y")
    (hub / "models--plain--one" / "snapshots" / "r").mkdir(parents=True)
    for args in (["disk", "caches"], ["disk", "clean", "--cache", "huggingface", "--dry-run"]):
        proc = run_vboot(*args, env={**cache_env, "COLUMNS": "300"})
        assert proc.returncode == 0, proc.stderr
        assert not RAW.search(proc.stdout.encode()), (args, proc.stdout)
        assert "evil\\x1b]0;pwned\\x07" in proc.stdout, proc.stdout
    doc = json.loads(run_vboot("disk", "caches", "--json", env=cache_env).stdout)
    ids = {i["id"] for c in doc["data"]["caches"] for i in c["items"]}
    assert "evil\x1b]0;pwned\x07/x\u2028y" in ids


def test_errors_naming_a_hostile_path_are_escaped_too(isolated_env, run_vboot, tmp_path):
    proc = run_vboot("disk", str(tmp_path / "missing\x1b[2J"))
    assert proc.returncode == 4 and "\x1b" not in proc.stderr and "missing\\x1b[2J" in proc.stderr
    assert sys.getdefaultencoding() == "utf-8"
