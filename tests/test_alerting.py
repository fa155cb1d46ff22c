"""Alertmanager's configuration from the profile's [alerts]: receivers from the environment, the files (private),
amtool's verdict on hostile values, and the command line."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from bootstrap.core import alerting
from bootstrap.core.alerting import (
    CONFIG_FILE,
    SLACK_URL_FILE,
    Receivers,
    RouteTiming,
    alertmanager_argv,
    render_alertmanager_files,
    resolve_receivers,
    write_private_files,
)
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ReceiverError
from bootstrap.core.profiles import AlertsSpec
from tests.support.e2e import amtool

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
# Quotes, YAML indicators, a Go template, a comment sign, a backslash: no whitespace (not a URL), the rest must
# survive the YAML emitter and reach Alertmanager byte for byte.
HOSTILE_HOOK = "http://127.0.0.1:9/hook/t0ken?a='b\"&c=#x:{{.Foo}}&d=\\n&e=[1]*!|>-%0A"




def both(env: dict[str, str] | None = None) -> Receivers:
    spec = AlertsSpec(webhook_url_env="MY_HOOK", slack_webhook_url_env="MY_SLACK", slack_channel="#vllm-alerts")
    return resolve_receivers(spec, Environ(env if env is not None else {"MY_HOOK": HOSTILE_HOOK, "MY_SLACK": SLACK}))


def written(tmp_path: Path, receivers: Receivers, timing: RouteTiming = RouteTiming()) -> Path:
    am_dir = tmp_path / "run" / alerting.ALERTMANAGER_DIR
    write_private_files(am_dir, render_alertmanager_files(receivers, am_dir, timing))
    return am_dir


# --- receivers ----------------------------------------------------------------------------------------------------

def test_receivers_come_from_the_variables_the_profile_names():
    r = both()
    assert r.webhook_url == HOSTILE_HOOK and r.slack_api_url == SLACK and r.slack_channel == "#vllm-alerts"
    assert r.env_names == ("MY_HOOK", "MY_SLACK") and set(r.secrets) == {HOSTILE_HOOK, SLACK}
    assert r.describe() == ["webhook", "slack #vllm-alerts"]


def test_a_literal_url_in_the_profile_is_used_as_is_and_no_variable_is_read():
    env = Environ({})
    r = resolve_receivers(AlertsSpec(webhook_url="http://127.0.0.1:5001/hook"), env)
    assert r.webhook_url == "http://127.0.0.1:5001/hook" and r.slack_api_url is None and r.env_names == ()
    assert env.read == frozenset()


def test_no_alerts_table_means_no_receiver():
    assert not resolve_receivers(None, Environ({})).any


def test_the_repr_of_receivers_and_files_never_shows_a_url(tmp_path):
    r = both()
    files = render_alertmanager_files(r, tmp_path)
    for text in (repr(r), str(r), repr(files)):
        assert SLACK not in text and "t0ken" not in text


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_or_empty_variable_is_an_error_naming_it(value):
    env = {"MY_HOOK": HOSTILE_HOOK} if value is None else {"MY_HOOK": HOSTILE_HOOK, "MY_SLACK": value}
    with pytest.raises(ReceiverError) as err:
        both(env)
    assert "slack_webhook_url_env" in err.value.message and "MY_SLACK" in err.value.message
    assert "export MY_SLACK" in err.value.hint and err.value.code == "alerts_receiver"


def test_a_variable_that_is_not_a_url_is_an_error_that_does_not_quote_it():
    with pytest.raises(ReceiverError) as err:
        both({"MY_HOOK": HOSTILE_HOOK, "MY_SLACK": "xoxb-secret-token"})
    assert "MY_SLACK" in err.value.message and "xoxb-secret-token" not in err.value.message + err.value.hint


# --- the files ----------------------------------------------------------------------------------------------------

def test_the_config_parses_back_with_the_hostile_webhook_url_intact(tmp_path):
    am_dir = written(tmp_path, both())
    cfg = yaml.safe_load((am_dir / CONFIG_FILE).read_text())
    [receiver] = cfg["receivers"]
    assert receiver["webhook_configs"] == [{"url": HOSTILE_HOOK, "send_resolved": True}]
    [slack] = receiver["slack_configs"]
    assert slack["api_url_file"] == str(am_dir / SLACK_URL_FILE) and slack["channel"] == "#vllm-alerts"
    assert cfg["route"]["receiver"] == receiver["name"] == alerting.RECEIVER


def test_the_slack_url_is_only_in_its_own_file_never_in_the_config(tmp_path):
    am_dir = written(tmp_path, both())
    assert (am_dir / SLACK_URL_FILE).read_text() == SLACK
    assert SLACK not in (am_dir / CONFIG_FILE).read_text()
    holders = [p.name for p in (tmp_path / "run").rglob("*") if p.is_file() and SLACK in p.read_text()]
    assert holders == [SLACK_URL_FILE]


def test_every_file_is_0600_in_a_0700_directory_even_if_the_directory_existed_open(tmp_path):
    am_dir = tmp_path / "run" / alerting.ALERTMANAGER_DIR
    am_dir.mkdir(parents=True, mode=0o755)
    os.chmod(am_dir, 0o755)
    write_private_files(am_dir, render_alertmanager_files(both(), am_dir))
    assert stat.S_IMODE(am_dir.stat().st_mode) == 0o700
    for f in am_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
    assert not [p for p in am_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_rewrite_replaces_the_files_and_keeps_them_private(tmp_path):
    am_dir = written(tmp_path, both())
    written(tmp_path, resolve_receivers(AlertsSpec(webhook_url="http://127.0.0.1:1/other"), Environ({})))
    assert "other" in (am_dir / CONFIG_FILE).read_text()
    assert stat.S_IMODE((am_dir / CONFIG_FILE).stat().st_mode) == 0o600


def test_amtool_accepts_the_config_with_hostile_values(tmp_path):
    am_dir = written(tmp_path, both())
    res = subprocess.run([amtool(), "check-config", str(am_dir / CONFIG_FILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and "1 receivers" in res.stdout


def test_amtool_check_can_fail(tmp_path):
    """The check above is real: amtool refuses webhook url_file, which Alertmanager 0.25 does not know."""
    bad = tmp_path / "bad.yml"
    bad.write_text("route:\n  receiver: r\nreceivers:\n- name: r\n  webhook_configs:\n  - url_file: /x\n")
    res = subprocess.run([amtool(), "check-config", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0


def test_amtool_accepts_a_receiver_with_nothing_configured_and_zero_group_wait(tmp_path):
    am_dir = written(tmp_path, Receivers(), RouteTiming(group_wait_s=0, group_interval_s=1, repeat_interval_s=60))
    cfg = yaml.safe_load((am_dir / CONFIG_FILE).read_text())
    assert cfg["receivers"] == [{"name": alerting.RECEIVER}] and cfg["route"]["group_wait"] == "0s"
    assert list(am_dir.iterdir()) == [am_dir / CONFIG_FILE]
    res = subprocess.run(alerting.amtool_check_argv(amtool(), am_dir / CONFIG_FILE), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_slack_without_a_url_file_is_refused():
    with pytest.raises(ValueError, match="api_url_file"):
        alerting.alertmanager_config(Receivers(slack_api_url=SLACK))


def test_negative_group_wait_is_refused():
    with pytest.raises(ValueError):
        RouteTiming(group_wait_s=-1)


# --- the command line ---------------------------------------------------------------------------------------------

def test_alertmanager_listens_on_loopback_keeps_its_state_in_the_run_dir_and_opens_no_cluster_port(tmp_path):
    am_dir = tmp_path / alerting.ALERTMANAGER_DIR
    argv = alertmanager_argv("/usr/bin/prometheus-alertmanager", am_dir, 19093)
    assert argv == ["/usr/bin/prometheus-alertmanager", f"--config.file={am_dir / CONFIG_FILE}",
                    f"--storage.path={am_dir / alerting.DATA_DIR}", "--web.listen-address=127.0.0.1:19093",
                    "--cluster.listen-address="]


def test_the_debian_binary_name_is_looked_for_first():
    assert alerting.PROGRAMS[0] == "prometheus-alertmanager"


def test_masked_replaces_every_secret():
    assert alerting.masked(f"POST {SLACK} failed; {HOSTILE_HOOK}", [SLACK, HOSTILE_HOOK]) == "POST *** failed; ***"


def test_redact_mapping_masks_receiver_variables_and_values_wherever_they_are():
    r = both()
    out = alerting.redact_mapping({"MY_SLACK": SLACK, "OTHER": f"x{SLACK}y", "PATH": "/bin"}, r)
    assert out == {"MY_SLACK": "***", "OTHER": "***", "PATH": "/bin"}


def test_the_alert_route_matcher_matches_exactly_the_names():
    assert alerting.alert_route_matcher(["VllmTargetDown", "GpuLost"]) == 'alertname =~ "VllmTargetDown|GpuLost"'
