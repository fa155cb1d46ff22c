"""`vboot service`: the unit as rendered (quoting, secrets, settings), checked by systemd's own verifier."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError
from bootstrap.core.service import (
    MARKER,
    UnitSpec,
    environment_from_show,
    plan_files,
    render_command,
    render_env_file,
    render_unit,
    split_environment,
    watchdog_for,
)

HOSTILE = ["plain", "with space", 'dou"ble', "sin'gle", "back\\slash", "$HOME", "${PATH}", "%n %h %%", "semi;colon",
           "`id`", "$(id)", "é ü 中文", "-dash", "", "trailing\\", "line\nbreak", "tab\there", "esc\x1b[0m"]


def spec(**kw) -> UnitSpec:
    return UnitSpec(**{"name": "vboot-tiny", "description": "vLLM server", "exec_start": (sys.executable, "-V"), **kw})


def test_every_argument_is_quoted_with_specifiers_and_variables_doubled():
    line = render_command(["/usr/bin/x", "a b", "$HOME", "%n", 'q"', "b\\s"])
    assert line == '"/usr/bin/x" "a b" "$$HOME" "%%n" "q\\"" "b\\\\s"'


def test_control_characters_become_c_escapes_and_a_nul_is_refused():
    assert render_command(["a\nb", "t\tab", "e\x1b[0m", "bell\a"]) == '"a\\nb" "t\\tab" "e\\x1b[0m" "bell\\a"'
    for where in ({"exec_start": (sys.executable, "nul\0")}, {"environment": {"X": "nul\0"}}):
        with pytest.raises(UsageError, match="NUL"):
            render_unit(spec(**where))


@pytest.mark.parametrize("bad", ["line\nbreak", "cr\rhere", "nul\0", "esc\x1b[0m"])
def test_a_secret_that_an_environment_file_cannot_hold_is_refused_not_written(bad):
    with pytest.raises(UsageError, match="control character"):
        render_env_file({"VLLM_API_KEY": bad})


def test_the_unit_is_type_notify_with_restarts_watchdog_and_no_vllm_breaking_hardening():
    text = render_unit(spec(watchdog_s=120.0, timeout_start_s=1020.0))
    lines = text.splitlines()
    assert lines[0] == MARKER
    for want in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "KillMode=control-group",
                 "WatchdogSec=120s", "TimeoutStartSec=1020s", "TimeoutStopSec=60s", "WantedBy=multi-user.target"):
        assert want in lines, want
    for banned in ("RestrictAddressFamilies", "IPAddressDeny", "ProtectClock", "MemoryDenyWriteExecute",
                   "PrivateNetwork", "PrivateDevices"):
        assert banned not in text


def test_the_watchdog_fits_the_probes_and_is_off_without_them():
    assert watchdog_for(30.0, 20.0) == 120.0
    assert watchdog_for(60.0, 20.0) == 200.0
    assert watchdog_for(0.0, 20.0) is None
    assert "WatchdogSec" not in render_unit(spec(watchdog_s=None))


def test_secrets_go_to_a_0600_environment_file_never_into_the_unit(tmp_path):
    env = Environ({"HOME": str(tmp_path), "PATH": "/usr/bin", "VLLM_API_KEY": "s3cret-key", "XDG_CONFIG_HOME":
                   str(tmp_path / "cfg")})
    plain, secrets = split_environment(env)
    assert plain == {"HOME": str(tmp_path), "PATH": "/usr/bin", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert secrets == {"VLLM_API_KEY": "s3cret-key"}
    files = plan_files(spec(environment=plain), False, env, secrets)
    assert "s3cret-key" not in files.unit_text
    assert files.env_path == tmp_path / "cfg" / "vboot" / "vboot-tiny.env"
    assert f"EnvironmentFile={files.env_path}" in files.unit_text.splitlines()
    assert files.env_text == 'VLLM_API_KEY="s3cret-key"\n'
    assert files.unit_path == tmp_path / "cfg" / "systemd" / "user" / "vboot-tiny.service"


def test_systemd_analyze_verify_prints_nothing_for_a_unit_with_hostile_values(tmp_path):
    if shutil.which("systemd-analyze") is None:
        from tests.support.e2e import missing

        missing("systemd-analyze (Debian's systemd) is needed to verify units")
    env_file = tmp_path / "vboot-tiny.env"
    env_file.write_text(render_env_file({"VLLM_API_KEY": 'k"e\\y$x'}))
    unit = tmp_path / "vboot-tiny.service"
    unit.write_text(render_unit(spec(exec_start=(sys.executable, "-c", "pass", *HOSTILE),
                                     environment={"A": "x y", "B": '"quoted" $HOME %n', "C": "back\\slash"},
                                     environment_file=str(env_file), user="root")))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even on a bad value; it must print nothing at all (FACTS.md)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res.stderr


def test_show_environment_is_read_back_into_a_dict():
    assert environment_from_show('HOME=/root "B=x y" XDG_STATE_HOME=/s') == {"HOME": "/root", "B": "x y",
                                                                            "XDG_STATE_HOME": "/s"}


def test_dry_run_prints_the_unit_and_writes_nothing(run_vboot, isolated_env):
    res = run_vboot("service", "install", "tiny", "--user", "--dry-run", "--json", "--port", "18555")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)["data"]
    assert data["written"] is False and '"--port" "18555"' in data["unit"] and '"--restart" "no"' in data["unit"]
    assert not Path(data["unit_path"]).exists()
    human = run_vboot("service", "install", "tiny", "--user", "--dry-run")
    assert "Type=notify" in human.stdout and "systemctl --user enable vboot-tiny.service" in human.stdout


def test_install_without_systemd_writes_nothing_and_says_what_would_have_run(run_vboot, isolated_env):
    if Path("/run/systemd/system").is_dir():
        pytest.fail("this test expects a box without a running systemd (as CI); run it in the test container")
    res = run_vboot("service", "install", "tiny", "--system", "--name", "vboot-test-nosystemd")
    assert res.returncode == 4 and "Traceback" not in res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert line and "systemd is not running" in line[0] and "nothing written" in line[0]
    assert "systemctl daemon-reload" in res.stderr
    assert not Path("/etc/systemd/system/vboot-test-nosystemd.service").exists()


def test_an_exposed_host_without_a_key_is_refused_at_install(run_vboot, isolated_env):
    res = run_vboot("service", "install", "tiny", "--host", "0.0.0.0", "--dry-run")
    assert res.returncode == 2 and "exposes the server" in res.stderr
