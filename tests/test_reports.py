"""Command reports are frozen dataclasses; their JSON comes from the one serializer (bootstrap.core.envelope)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bootstrap.core.checks import CheckResult, Status
from bootstrap.core.envelope import CommandResult, envelope, key_when_set, to_jsonable
from bootstrap.core.reports.doctor import DoctorReport, check_listing, doctor_report
from bootstrap.core.reports.pull import LocalModel
from bootstrap.core.reports.setup import SetupReport


@dataclass(frozen=True)
class _Measured:
    name: str
    freed_bytes: int | None = key_when_set()
    notes: tuple[str, ...] | None = key_when_set()


def test_a_key_when_set_is_left_out_until_it_is_set():
    assert to_jsonable(_Measured("a")) == {"name": "a"}
    assert to_jsonable(_Measured("a", 0, ())) == {"name": "a", "freed_bytes": 0, "notes": []}


def test_an_ordinary_none_field_stays_null():
    assert to_jsonable(LocalModel("m", "master", "/p", 1, 1)) == {
        "model": "m", "revision": "master", "path": "/p", "bytes": 1, "files": 1, "downloaded_bytes": 0,
        "source": "local", "verified_at": None}


def test_setup_reports_the_plan_keys_alone_on_a_dry_run_and_the_run_keys_after_them():
    planned = SetupReport(build="b", plan="p", commands=("c",), dry_run=True, gpu="g", outcome="planned")  # type: ignore[arg-type]
    assert list(to_jsonable(planned)) == ["build", "plan", "commands", "dry_run", "gpu", "outcome"]
    done = replace(planned, outcome="installed", verified="v", record="r", record_path="/r", log_path="/l",  # type: ignore[arg-type]
                   steps=(), duration_s=1.5, warnings=())
    assert list(to_jsonable(done)) == ["build", "plan", "commands", "dry_run", "gpu", "outcome", "verified", "record",
                                       "record_path", "log_path", "steps", "duration_s", "warnings"]
    assert (planned.status, done.status, replace(done, warnings=("w",)).status) == ("ok", "ok", "warn")


def test_doctor_counts_every_status_and_sorts_what_it_read():
    results = [CheckResult("a", Status.OK, "fine", group="g"), CheckResult("b", Status.FAIL, "bad", "fix", {"n": 1}),
               CheckResult("c", Status.OK, "fine")]
    report = doctor_report("tiny", "cpu", "no GPU", results, {"Z", "A"})
    data = envelope(CommandResult("doctor", report))["data"]
    assert data["counts"] == {"ok": 2, "warn": 0, "fail": 1, "skip": 0}
    assert data["checks"][1] == {"id": "b", "group": "", "status": "fail", "summary": "bad", "hint": "fix",
                                 "data": {"n": 1}}
    assert data["env_read"] == ["A", "Z"] and isinstance(report, DoctorReport)


def test_the_check_listing_shows_each_checks_shell_command():
    listing = check_listing()
    assert listing.checks and all(c.id and c.title for c in listing.checks)
    assert list(to_jsonable(listing.checks[0])) == ["id", "group", "title", "shows"]


def test_words_for_people_stay_out_of_the_json():
    from bootstrap.core.servers import StopReport

    report = StopReport(stopped=(1,), survivors=(), escalated=False, servers=("a",), labels=("server a",))
    assert list(to_jsonable(report)) == ["stopped", "survivors", "escalated", "servers", "refused", "spared",
                                         "warnings"]
    assert (report.status, replace(report, warnings=("w",)).status, replace(report, survivors=(2,)).status) == \
        ("ok", "warn", "fail")


def test_serve_ready_keeps_its_keys_and_reports_a_failed_smoke_as_a_warning():
    from dataclasses import asdict

    from bootstrap.core.lifecycle import ProbeResult
    from bootstrap.core.reports.serve import ServeReady

    smoke = ProbeResult(ok=False, latency_s=1.0, error="timed out")
    ready = ServeReady("s", "http://127.0.0.1:8000", 1, "/r", "m", "tiny", "/m", "cpu", "why", 1.5,
                       "http://127.0.0.1:8000/metrics", None, "/r/prometheus.yml", False, 2, "no", smoke, "/r/vllm.log",
                       {"A": "1"}, ("python", "-m", "vllm"))
    data = to_jsonable(ready)
    assert list(data) == ["name", "url", "pid", "run_dir", "served_model_name", "profile", "model_path", "device",
                          "device_reason", "ready_s", "metrics_url", "prometheus_url", "prometheus_config", "detached",
                          "supervisor_pid", "restart", "smoke", "log", "env", "command"]
    assert data["smoke"] == asdict(smoke) and data["command"] == ["python", "-m", "vllm"]
    assert (ready.status, replace(ready, smoke=None).status) == ("warn", "ok")


def test_doctors_human_view_shows_control_characters_in_a_finding_instead_of_sending_them(capsys):
    """doctor escaped rich markup with rich's own escape, which lets an ESC from a path or pip's output through
    to the terminal; it now goes through output.escape like every other renderer."""
    from bootstrap.cli.doctor import _render

    results = [CheckResult("disk", Status.WARN, "cache at /tmp/\x1b[2Jx is small", "free \x1b]0;t\x07 space",
                           group="disk")]
    _render(doctor_report("tiny", "cpu", "no GPU", results, ()))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2Jx" in out and "\\x1b]0;t\\x07" in out
