"""Run records: how clients reach a server, and finding a run by name."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from bootstrap.core.runs import RunRecord, client_host


@pytest.mark.parametrize(("bound", "reached"), [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("", "127.0.0.1"),
    ("10.0.0.5", "10.0.0.5"), ("localhost", "localhost"), ("::1", "[::1]"), ("fe80::1", "[fe80::1]"),
    ("[::1]", "[::1]"),
])
def test_client_host_maps_wildcards_to_loopback_and_brackets_ipv6(bound, reached):
    assert client_host(bound) == reached


@pytest.mark.parametrize("bound", ["::1", "fe80::1", "0.0.0.0", "10.0.0.5"])
def test_a_scrape_target_splits_into_the_host_and_the_port(bound):
    # Prometheus splits HOST:PORT like a URL's authority; an unbracketed IPv6 address has "too many colons".
    parts = urlsplit(f"//{client_host(bound)}:8000")
    assert parts.port == 8000 and parts.hostname == ("127.0.0.1" if bound == "0.0.0.0" else bound)


def test_a_run_url_uses_the_client_host():
    rec = RunRecord(name="a", profile="tiny", run_dir="/r", pid=1, pid_create_time=1.0, pgid=1, host="::1",
                    port=8001, served_model_name="m", model_id="m", model_path="/m", started_at=0.0)
    assert rec.url == "http://[::1]:8001"
