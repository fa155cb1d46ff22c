"""`vboot top`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bootstrap.core.envelope import key_when_set

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.metrics import Percentiles, TopFrame


@dataclass(frozen=True)
class TopMeasurement:
    """`vboot top --once`: one measurement of a server's engine (raw units: ratios 0..1, seconds, tokens/s; the
    engine's fields are null, the percentiles empty, while it is down) and its GPUs."""

    target: str
    url: str
    up: bool
    error: str | None
    model_name: str | None
    window_s: float | None
    requests_running: float | None
    requests_waiting: float | None
    kv_cache_usage: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    ttft_s: Percentiles
    queue_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles
    preemptions_total: float | None
    preemptions_per_s: float | None
    requests_finished_per_s: float | None
    finished_by_reason_per_s: Mapping[str, float]
    gpus: tuple[Mapping[str, Any], ...]  # the GPU panel's rows (bootstrap.cli.top.GPU_FIELDS)
    gpu_error: str | None
    warnings: tuple[str, ...] | None = key_when_set()  # run records that had to be skipped


def top_measurement(frame: TopFrame, label: str, gpus: Sequence[Mapping[str, Any]], gpu_error: str | None,
                    warnings: Sequence[str] = ()) -> TopMeasurement:
    from bootstrap.core.metrics import Percentiles

    s = frame.stats if frame.up else None  # while down, the last good stats are the screen's, not the JSON's
    names = frame.stats.model_names if frame.stats else ()
    empty = Percentiles()
    return TopMeasurement(
        target=label, url=frame.url, up=frame.up, error=frame.error, model_name=names[0] if names else None,
        window_s=s.window_s if s else None, requests_running=s.requests_running if s else None,
        requests_waiting=s.requests_waiting if s else None, kv_cache_usage=s.kv_cache_usage if s else None,
        prompt_tokens_per_s=s.prompt_tokens_per_s if s else None,
        generation_tokens_per_s=s.generation_tokens_per_s if s else None,
        ttft_s=s.ttft_s if s else empty, queue_s=s.queue_s if s else empty, itl_s=s.itl_s if s else empty,
        e2e_s=s.e2e_s if s else empty, preemptions_total=s.preemptions_total if s else None,
        preemptions_per_s=s.preemptions_per_s if s else None,
        requests_finished_per_s=s.requests_finished_per_s if s else None,
        finished_by_reason_per_s=s.finished_by_reason_per_s if s else {}, gpus=tuple(gpus), gpu_error=gpu_error,
        warnings=tuple(warnings) if warnings else None)
