"""vLLM's /metrics as data: parse an exposition text into a snapshot, then rates and percentiles over a window.

Parsing uses ``prometheus_client.parser.text_string_to_metric_families`` (the reference parser), never regexes.
A window is the span between two snapshots: counters become per-second rates (a counter that went down means
the server restarted, and the newer value is the whole increase, as in PromQL's ``rate``), and histograms
become bucket deltas whose quantiles are interpolated linearly inside the bucket exactly like PromQL's
``histogram_quantile`` (so `vboot top` and the recording rules agree).

Values are summed over every label set except ``le`` (a data-parallel server exposes one series per engine).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from bootstrap.core.errors import ScrapeError

# Metric families `vboot top` reads (sample names without the _total/_bucket/_sum/_count suffix).
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"  # a 0..1 ratio despite the name
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PREEMPTIONS = "vllm:num_preemptions_total"
REQUEST_SUCCESS = "vllm:request_success_total"
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
E2E = "vllm:e2e_request_latency_seconds"
QUEUE_TIME = "vllm:request_queue_time_seconds"

TOP_FAMILIES: frozenset[str] = frozenset({
    RUNNING, WAITING, KV_CACHE, PROMPT_TOKENS, GENERATION_TOKENS, PREEMPTIONS, REQUEST_SUCCESS, TTFT, ITL, E2E,
    QUEUE_TIME,
})

_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram: ``buckets`` are (upper bound, cumulative count), ascending, ending at +Inf."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    def delta(self, older: Histogram) -> Histogram:
        """Observations made between ``older`` and this one. A reset (any count went down) keeps the newer."""
        if [b for b, _ in older.buckets] != [b for b, _ in self.buckets]:
            return self  # bucket layout changed: the server restarted with other buckets
        diffs = [(b, c - oc) for (b, c), (_, oc) in zip(self.buckets, older.buckets, strict=True)]
        if any(c < 0 for _, c in diffs) or self.count < older.count:
            return self
        return Histogram(tuple(diffs), self.count - older.count, self.sum - older.sum)

    def quantile(self, q: float) -> float | None:
        """PromQL ``histogram_quantile(q, ...)`` on these buckets; None where PromQL gives NaN (no data).

        The rank ``q * total`` falls in the first bucket whose cumulative count reaches it; the value is
        interpolated linearly between that bucket's lower and upper bound. A rank in the +Inf bucket returns
        the highest finite bound; the lowest bucket starts at 0 (unless its bound is <= 0).
        """
        if math.isnan(q):
            return None
        if q < 0:
            return -math.inf
        if q > 1:
            return math.inf
        buckets = _monotonic(self.buckets)
        if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
            return None
        observations = buckets[-1][1]
        if observations <= 0:
            return None
        rank = q * observations
        b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
        if b == len(buckets) - 1:
            return buckets[-2][0]
        if b == 0 and buckets[0][0] <= 0:
            return buckets[0][0]
        start, end, count = 0.0, buckets[b][0], buckets[b][1]
        if b > 0:
            start = buckets[b - 1][0]
            count -= buckets[b - 1][1]
            rank -= buckets[b - 1][1]
        return start + (end - start) * (rank / count)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def _monotonic(buckets: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative counts never decrease (PromQL's ensureMonotonic: scrapes are not atomic)."""
    out: list[tuple[float, float]] = []
    high = -math.inf
    for bound, count in buckets:
        high = max(high, count)
        out.append((bound, high))
    return out


@dataclass(frozen=True)
class Snapshot:
    """One scrape: sample name -> ((labels, value), ...), taken at ``taken_at_s`` (a monotonic clock)."""

    taken_at_s: float
    samples: Mapping[str, tuple[tuple[Labels, float], ...]]

    def sample_names(self) -> list[str]:
        return sorted(self.samples)

    def total(self, name: str, **match: str) -> float | None:
        """Sum of ``name`` over the label sets that carry ``match``; None when the server has no such series."""
        rows = self.samples.get(name)
        if rows is None:
            return None
        return sum(v for labels, v in rows if _matches(labels, match))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """``name`` summed per value of ``label`` (e.g. request_success_total by finished_reason)."""
        out: dict[str, float] = {}
        for labels, value in self.samples.get(name, ()):
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out

    def label_values(self, label: str) -> list[str]:
        """Every value of ``label`` on any vLLM sample (e.g. the model names served)."""
        seen: set[str] = set()
        for name, rows in self.samples.items():
            if name.startswith("vllm:"):
                seen.update(dict(labels)[label] for labels, _ in rows if label in dict(labels))
        return sorted(seen)

    def histogram(self, name: str) -> Histogram | None:
        """The histogram ``name`` (family name, without ``_bucket``) summed over engines; None when absent."""
        rows = self.samples.get(f"{name}_bucket")
        if not rows:
            return None
        per_bound: dict[float, float] = {}
        for labels, value in rows:
            le = dict(labels).get("le")
            if le is None:
                continue
            bound = float(le)
            per_bound[bound] = per_bound.get(bound, 0.0) + value
        buckets = tuple(sorted(per_bound.items()))
        return Histogram(buckets, self.total(f"{name}_count") or 0.0, self.total(f"{name}_sum") or 0.0)


def _matches(labels: Labels, match: Mapping[str, str]) -> bool:
    if not match:
        return True
    d = dict(labels)
    return all(d.get(k) == v for k, v in match.items())


def _wanted_line(line: str, wanted: Collection[str]) -> bool:
    if line.startswith("#"):
        parts = line.split(None, 3)
        return len(parts) >= 3 and _family_of(parts[2]) in wanted
    cut = len(line)
    for sep in ("{", " "):
        i = line.find(sep)
        if i != -1:
            cut = min(cut, i)
    return _family_of(line[:cut]) in wanted


def _family_of(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_created"):
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def parse_exposition(text: str, taken_at_s: float = 0.0, families: Collection[str] | None = None) -> Snapshot:
    """Parse a Prometheus text exposition (what vLLM's /metrics returns) into a :class:`Snapshot`.

    ``families`` keeps only those metric families (names as in the text, e.g. ``vllm:prompt_tokens_total``
    or ``vllm:time_to_first_token_seconds``): lines of other families are dropped before the parser sees
    them, which makes a refresh of `vboot top` ~8x cheaper. ``_created`` samples are never kept.
    """
    from prometheus_client.parser import text_string_to_metric_families

    if families is not None:
        wanted = set(families)
        text = "\n".join(line for line in text.splitlines() if _wanted_line(line, wanted)) + "\n"
    grouped: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = tuple(sorted(sample.labels.items()))
            grouped.setdefault(sample.name, []).append((labels, float(sample.value)))
    return Snapshot(taken_at_s, {k: tuple(v) for k, v in grouped.items()})


def counter_rate(older: Snapshot, newer: Snapshot, name: str, **match: str) -> float | None:
    """Per-second increase of counter ``name`` between two snapshots (a reset counts the newer value)."""
    dt = newer.taken_at_s - older.taken_at_s
    a, b = older.total(name, **match), newer.total(name, **match)
    if dt <= 0 or a is None or b is None:
        return None
    inc = b - a if b >= a else b
    return inc / dt


def window_histogram(older: Snapshot, newer: Snapshot, name: str) -> Histogram | None:
    """Observations of histogram ``name`` made between two snapshots."""
    a, b = older.histogram(name), newer.histogram(name)
    if b is None:
        return None
    return b if a is None else b.delta(a)


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles in seconds over a window; all None when nothing was observed in it."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    count: float = 0.0  # observations in the window
    mean: float | None = None

    @classmethod
    def of(cls, hist: Histogram | None) -> Percentiles:
        if hist is None or hist.count <= 0:
            return cls()
        return cls(hist.quantile(0.5), hist.quantile(0.95), hist.quantile(0.99), hist.count, hist.mean)


@dataclass(frozen=True)
class EngineStats:
    """What `vboot top` shows for one server over one window (the JSON of `vboot top --once --json`).

    Latencies are vLLM's own histograms, measured inside the engine from a request's arrival there: a client
    also sees tokenisation, HTTP and the network, so its TTFT is higher. ``queue_s`` (time waiting to be
    scheduled, part of TTFT) is there to reconcile the two."""

    window_s: float | None  # span of the window the rates and percentiles cover
    model_names: tuple[str, ...]
    requests_running: float | None
    requests_waiting: float | None
    kv_cache_usage: float | None  # 0..1
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    ttft_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles
    preemptions_total: float | None
    preemptions_per_s: float | None
    requests_finished_per_s: float | None
    finished_by_reason_per_s: Mapping[str, float] = field(default_factory=dict)
    queue_s: Percentiles = field(default_factory=Percentiles)


def engine_stats(newer: Snapshot, older: Snapshot | None = None) -> EngineStats:
    """Gauges from ``newer``; rates and percentiles over the window ``older -> newer`` (None without one)."""
    window = newer.taken_at_s - older.taken_at_s if older is not None else None
    has_window = older is not None and window is not None and window > 0

    def rate(name: str) -> float | None:
        return counter_rate(older, newer, name) if has_window and older is not None else None

    def pct(name: str) -> Percentiles:
        return Percentiles.of(window_histogram(older, newer, name)) if has_window and older is not None \
            else Percentiles()

    by_reason: dict[str, float] = {}
    if has_window and older is not None and window:
        before = older.by_label(REQUEST_SUCCESS, "finished_reason")
        for reason, value in newer.by_label(REQUEST_SUCCESS, "finished_reason").items():
            prev = before.get(reason, 0.0)
            by_reason[reason] = (value - prev if value >= prev else value) / window
    return EngineStats(
        window_s=window if has_window else None,
        model_names=tuple(newer.label_values("model_name")),
        requests_running=newer.total(RUNNING),
        requests_waiting=newer.total(WAITING),
        kv_cache_usage=_max(newer, KV_CACHE),
        prompt_tokens_per_s=rate(PROMPT_TOKENS),
        generation_tokens_per_s=rate(GENERATION_TOKENS),
        ttft_s=pct(TTFT),
        itl_s=pct(ITL),
        e2e_s=pct(E2E),
        preemptions_total=newer.total(PREEMPTIONS),
        preemptions_per_s=rate(PREEMPTIONS),
        requests_finished_per_s=sum(by_reason.values()) if by_reason else (0.0 if has_window else None),
        finished_by_reason_per_s={k: v for k, v in sorted(by_reason.items()) if v > 0},
        queue_s=pct(QUEUE_TIME),
    )


def _max(snap: Snapshot, name: str) -> float | None:
    rows = snap.samples.get(name)
    return max(v for _, v in rows) if rows else None


@dataclass(frozen=True)
class TopFrame:
    """One refresh of `vboot top`: the server's state, or why it is down, plus recent history."""

    url: str
    up: bool
    error: str | None
    down_for_s: float | None  # how long the server has been unreachable (None while up)
    stats: EngineStats | None  # the latest stats (kept from the last good scrape while down)
    history: Mapping[str, tuple[float, ...]]  # series name -> recent values, oldest first, for sparklines


HISTORY_SERIES = ("generation_tokens_per_s", "prompt_tokens_per_s", "requests_running", "requests_waiting",
                  "kv_cache_usage")


class TopSession:
    """Scrapes one server repeatedly: rates and percentiles over the last ``window_s``, and sparkline history.

    ``scrape`` returns a :class:`Snapshot` or raises :class:`~bootstrap.core.errors.ScrapeError` (production:
    :class:`bootstrap.probes.http.MetricsEndpoint`); ``clock`` is monotonic seconds.
    A failed scrape yields a frame with ``up=False`` (never an exception), so a server that goes away shows
    as down and one that comes back is picked up again.
    """

    def __init__(self, scrape: Callable[[], Snapshot], url: str, window_s: float = 10.0, history_len: int = 60,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from collections import deque

        self._scrape = scrape
        self.url = url
        self.window_s = window_s
        self._clock = clock
        self._snaps: deque[Snapshot] = deque()
        self._history: dict[str, deque[float]] = {k: deque(maxlen=history_len) for k in HISTORY_SERIES}
        self._last_stats: EngineStats | None = None
        self._down_since: float | None = None

    def poll(self) -> TopFrame:
        try:
            snap = self._scrape()
        except ScrapeError as exc:
            now = self._clock()
            if self._down_since is None:
                self._down_since = now
            self._snaps.clear()  # a restarted server starts a new window
            return TopFrame(self.url, False, str(exc), now - self._down_since, self._last_stats, self._hist())
        self._down_since = None
        previous = self._snaps[-1] if self._snaps else None
        self._snaps.append(snap)
        # Keep the newest snapshot at least window_s old as the window's start; drop older ones.
        while len(self._snaps) > 2 and snap.taken_at_s - self._snaps[1].taken_at_s >= self.window_s:
            self._snaps.popleft()
        base = self._snaps[0] if len(self._snaps) > 1 else None
        stats = engine_stats(snap, base)
        instant = engine_stats(snap, previous)  # last refresh only: what the sparklines plot
        for key in HISTORY_SERIES:
            value = getattr(instant, key)
            if value is not None:
                self._history[key].append(float(value))
        self._last_stats = stats
        return TopFrame(self.url, True, None, None, stats, self._hist())

    def _hist(self) -> dict[str, tuple[float, ...]]:
        return {k: tuple(v) for k, v in self._history.items()}
