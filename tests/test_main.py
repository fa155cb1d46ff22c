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
