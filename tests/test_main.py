"""The entry point: which output mode it picks and when it shows tracebacks."""

from __future__ import annotations

import json


def test_json_after_double_dash_is_an_argument_not_the_output_mode(run_vboot):
    res = run_vboot("profiles", "--", "--json")
    assert res.returncode == 2 and res.stdout == ""
    assert "'--json' is not a valid profile name" in res.stderr


def test_json_before_double_dash_still_selects_json(run_vboot):
    res = run_vboot("profiles", "--json", "--", "nope")
    assert res.returncode == 2 and json.loads(res.stdout)["errors"][0]["code"] == "profile_not_found"


def test_vboot_debug_shows_the_traceback_for_an_expected_error(run_vboot):
    quiet = run_vboot("profiles", "nope")
    loud = run_vboot("profiles", "nope", env={"VBOOT_DEBUG": "yes"})
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr


def test_vboot_help_lists_the_command_table_without_the_hidden_supervisor(run_vboot):
    import re

    from bootstrap.cli.main import COMMANDS

    out = run_vboot("--help").stdout
    listed = re.findall(r"^  (\w+) ", out.split("Commands:", 1)[1], re.M)
    assert listed == [name for name, entry in COMMANDS.items() if not entry.hidden]
    assert "supervise" not in listed and COMMANDS["supervise"].hidden
    assert "List the built-in and user profiles." in out  # the table's help, without importing a command
