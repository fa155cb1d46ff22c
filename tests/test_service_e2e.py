"""`vboot service` under a real systemd (booted in its own PID and mount namespaces, tests/systemd_ns.py) with
the real vLLM CPU build: readiness, a restart by systemd after the engine dies, a clean stop; and the unit's
quoting read back by systemd itself."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from bootstrap.core.service import UnitSpec, render_env_file, render_unit
from tests.support.cli import vboot_exe
from tests.support.e2e import REPO, chat, e2e_env, free_port, vllm_python
from tests.support.systemd_ns import booted_systemd

pytestmark = pytest.mark.e2e

HOSTILE = ["plain", "with space", 'dou"ble', "sin'gle", "back\\slash", "$HOME", "${PATH}", "%n %h %%", "semi;colon",
           "`id`", "$(id)", "é ü 中文", "-dash", "", "trailing\\", "a=b", "line\nbreak", "tab\there", "esc\x1b[0m",
           "line sep\u2028here"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("systemd")
    with booted_systemd(keep=[root, REPO]) as booted:
        booted.root = root
        yield booted


DUMP = ("import json, os, sys\n"
        "json.dump({'argv': sys.argv[2:], 'env': dict(os.environ)}, open(sys.argv[1], 'w'))\n"
        "from bootstrap.core.sdnotify import send_datagram\n"
        "send_datagram(os.environ['NOTIFY_SOCKET'], 'READY=1')\n"
        "import time; time.sleep(600)\n")


def test_systemd_reads_back_exactly_the_arguments_and_environment_vboot_wrote(sd):
    out = sd.root / "dump.json"
    env_file = sd.root / "quoting.env"
    env_file.write_text(render_env_file({"SECRET_TOKEN": 'k"e\\y $HOME %n'}))
    unit = render_unit(UnitSpec(name="vboot-quoting", description="quoting %n $HOME",
                                exec_start=(sys.executable, "-c", DUMP, str(out), *HOSTILE),
                                environment={"A": "x y", "B": '"quoted" $HOME %n', "C": "back\\slash",
                                             "D": "two\nlines",
                                             "PYTHONPATH": str(REPO)},
                                environment_file=str(env_file), watchdog_s=None))
    sd.run("sh", "-c", f"cat > /etc/systemd/system/vboot-quoting.service <<'UNIT'\n{unit}UNIT\n", check=True)
    sd.run("systemctl", "daemon-reload", check=True)
    sd.run("systemctl", "start", "vboot-quoting", check=True, timeout=60)  # Type=notify: READY=1 came
    dumped = json.loads(out.read_text())
    assert dumped["argv"] == HOSTILE
    env = dumped["env"]
    assert (env["A"], env["B"], env["C"], env["D"]) == ("x y", '"quoted" $HOME %n', "back\\slash", "two\nlines")
    assert env["SECRET_TOKEN"] == 'k"e\\y $HOME %n'
    assert sd.show("vboot-quoting", "Description")["Description"] == "quoting %n $HOME"
    sd.run("systemctl", "stop", "vboot-quoting", check=True)


def _engine(sd) -> int:
    for pid in sd.namespace_pids():
        try:
            if psutil.Process(pid).cmdline()[:1] == ["VLLM::EngineCore"]:
                return pid
        except psutil.Error:
            continue
    return 0


def _vboot_or_vllm(sd) -> list[str]:
    out = []
    for pid in sd.namespace_pids():
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if "vllm" in cmd.lower() or "vboot" in cmd or "bootstrap" in cmd:
            out.append(f"{pid} {cmd[:100]}")
    return out


def test_a_service_starts_ready_is_restarted_by_systemd_after_the_engine_dies_and_stops_clean(sd):
    env = e2e_env(sd.root / "svc", vllm_python())
    port = free_port()
    res = sd.run(*vboot_exe(), "service", "install", "tiny", "--system", "--port", str(port), "--probe-interval", "5",
                 env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    unit = Path("/etc/systemd/system/vboot-tiny.service")  # inside the namespace: read it there
    verify = sd.run("systemd-analyze", "verify", str(unit), env=env)
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")

    t0 = time.monotonic()
    res = sd.run("systemctl", "start", "vboot-tiny", timeout=900)
    assert res.returncode == 0, res.stderr + sd.run("journalctl", "-u", "vboot-tiny", "--no-pager").stdout[-3000:]
    # `systemctl start` of a Type=notify unit returns on READY=1, which vboot sends only after a chat succeeded:
    # the server answers at once.
    reply = chat(f"http://127.0.0.1:{port}", "qwen-tiny", max_tokens=4)
    assert reply["usage"]["completion_tokens"] > 0
    state = sd.show("vboot-tiny", "ActiveState", "NRestarts", "StatusText")
    assert state["ActiveState"] == "active" and state["NRestarts"] == "0" and state["StatusText"].startswith("ready")
    ready_s = time.monotonic() - t0

    engine = _engine(sd)
    assert engine, _vboot_or_vllm(sd)
    os.kill(engine, signal.SIGKILL)
    deadline = time.monotonic() + 60 + 3 * ready_s
    while time.monotonic() < deadline:
        state = sd.show("vboot-tiny", "ActiveState", "NRestarts", "StatusText", "ExecMainStatus")
        if state["NRestarts"] == "1" and state["ActiveState"] == "active" and state["StatusText"].startswith("ready"):
            break
        time.sleep(1)
    assert state["NRestarts"] == "1" and state["ActiveState"] == "active", state
    assert chat(f"http://127.0.0.1:{port}", "qwen-tiny", max_tokens=4)["usage"]["completion_tokens"] > 0
    status = sd.run(*vboot_exe(), "service", "status", "vboot-tiny", "--json", env=env)
    doc = json.loads(status.stdout)["data"]
    assert doc["systemd"]["NRestarts"] == "1" and doc["run"]["healthy"] is True

    res = sd.run("systemctl", "stop", "vboot-tiny", timeout=120)
    assert res.returncode == 0
    deadline = time.monotonic() + 30
    while _vboot_or_vllm(sd) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _vboot_or_vllm(sd) == []
    res = sd.run(*vboot_exe(), "service", "uninstall", "vboot-tiny", env=env)
    assert res.returncode == 0 and not sd.run("test", "-e", str(unit)).returncode == 0
