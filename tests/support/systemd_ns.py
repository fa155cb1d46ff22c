"""A real systemd for tests, booted as PID 1 of its own PID and mount namespaces (FACTS.md, "systemd, for real").

It gets private mounts before it starts, never the host's: tmpfs on /tmp, /run, /var/tmp, /var/log and
/etc/systemd/system (so its units, its runtime state and its cleaning of /tmp stay inside), and
systemd-tmpfiles' setup and cleaning masked. Paths under /tmp that the units need (a checkout installed in
editable mode, a test's directories) are bound back in at their own paths. Commands reach it with
``nsenter -t PID -m -p``; SIGKILL to that PID ends everything in the namespace.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BOOT = r"""#!/bin/bash
set -eu
mount --make-rprivate /
# /tmp as the host has it, visible at /mnt only inside this namespace, to bind back what the units need.
mount --bind /tmp /mnt
for d in /tmp /run /var/tmp /var/log /etc/systemd/system; do mount -t tmpfs tmpfs "$d"; done
for p in "$@"; do
  mkdir -p "$p"
  mount --bind "/mnt/${p#/tmp/}" "$p"
done
umount -l /mnt
exec /lib/systemd/systemd --system --unit=basic.target \
  systemd.mask=systemd-tmpfiles-setup.service systemd.mask=systemd-tmpfiles-clean.timer \
  systemd.mask=systemd-tmpfiles-clean.service
"""


class NamespacedSystemd:
    def __init__(self, proc: subprocess.Popen, pid: int, log: Path) -> None:
        self.proc = proc
        self.pid = pid  # systemd's PID as the host sees it
        self.log = log

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespaces (as root), with ``env`` (default: this process's)."""
        cmd = ["nsenter", "-t", str(self.pid), "-m", "-p", "--", *argv]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                             stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def show(self, unit: str, *props: str) -> dict[str, str]:
        res = self.run("systemctl", "show", unit, *[f"--property={p}" for p in props], check=True)
        return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)

    def namespace_pids(self) -> list[int]:
        """Every process of the namespace (host PIDs), systemd included."""
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == os.readlink(f"/proc/{self.pid}/ns/pid"):
                    out.append(int(entry))
            except OSError:
                continue
        return out


def _tmp_paths(paths: Sequence[Path]) -> list[str]:
    """Of ``paths``, those under /tmp, outermost first, none inside another."""
    tmp = [str(p.resolve()) for p in paths if str(p.resolve()).startswith("/tmp/")]
    out: list[str] = []
    for p in sorted(set(tmp), key=len):
        if not any(p == q or p.startswith(q + "/") for q in out):
            out.append(p)
    return out


@contextmanager
def booted_systemd(keep: Sequence[Path] = (), timeout: float = 60) -> Iterator[NamespacedSystemd]:
    """Boot systemd in new PID and mount namespaces; yield once ``systemctl is-system-running`` answers."""
    from tests.support.e2e import missing

    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            missing(f"booting systemd in a namespace needs {tool} (util-linux)")
    if not Path("/lib/systemd/systemd").exists():
        missing("no /lib/systemd/systemd: install Debian's systemd")
    if os.geteuid() != 0:
        missing("booting systemd in a namespace needs root")
    work = Path(tempfile.mkdtemp(prefix="vboot-systemd-", dir="/var/lib" if os.access("/var/lib", os.W_OK) else None))
    script = work / "boot.sh"
    script.write_text(BOOT)
    script.chmod(0o700)
    log = work / "systemd.out"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount", "--mount-proc", str(script),
                                 *_tmp_paths(keep)], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pid = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = _systemd_child(proc.pid)
            if pid:
                res = subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "systemctl", "is-system-running"],
                                     capture_output=True, text=True, timeout=30)
                if res.stdout.strip() in ("running", "degraded"):
                    break
            if proc.poll() is not None:
                raise AssertionError(f"systemd did not boot: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
        else:
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"systemd did not come up within {timeout}s: {tail}")
        yield NamespacedSystemd(proc, pid, log)
    finally:
        if pid:
            try:
                os.kill(pid, 9)  # PID 1 of the namespace: everything in it goes with it
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def _systemd_child(unshare_pid: int) -> int:
    """The host PID of the systemd that ``unshare --fork`` started (its child)."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return 0
    for child in children:
        try:
            exe = os.readlink(f"/proc/{child}/exe")
        except OSError:
            continue
        if exe.endswith("/systemd"):
            return int(child)
    return 0
