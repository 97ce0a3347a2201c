"""What a traffic probe saw: plain values the result, the report and the proofs read."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProbeSample:
    sent_at: float
    ok: bool
    answer: str  # the first line of the body when ok, else the failure kind
    latency_s: float | None = None  # from sending to the whole answer read; None for a failure


@dataclass(frozen=True)
class ProbeReport:
    sent: int
    ok: int
    failed: int
    failures_by_kind: Mapping[str, int]
    # Longest time without a successful answer: from the start to the first success, between
    # successes, and from the last success to the stop (or to now, while running).
    longest_gap_s: float
    answers: Mapping[str, int]  # successful answers by the first line of their body
    in_flight: int = 0
    samples: tuple[ProbeSample, ...] = field(default=(), repr=False)  # only in the final report

    def answers_sent_since(self, moment: float) -> Counter[str]:
        """Answers to the requests sent at or after ``moment``; a failure counts as "!<kind>"."""
        return Counter(s.answer if s.ok else f"!{s.answer}" for s in self.samples if s.sent_at >= moment)


SERIES_BUCKET_S = 0.1  # the report's requests panel: one bar per 100 ms
LATENCY_BUCKET_S = 1.0  # its latency panel: p50 and p99 per second


def _bucket(moment: float, start: float, width: float) -> int:
    return max(0, math.floor((moment - start) / width + 1e-9))


def request_series(samples: Sequence[ProbeSample], start: float) -> dict[str, object]:
    """Requests by the 100 ms in which they were sent (from ``start``, the plan), ok and failed by kind.

    Sent at 0.05, 0.12 (ok) and 0.15 (connect refused) -> ok [1, 1], failed {"connect": [0, 1]}.
    """
    size = max((_bucket(s.sent_at, start, SERIES_BUCKET_S) for s in samples), default=-1) + 1
    ok = [0] * size
    failed: dict[str, list[int]] = {}
    for sample in samples:
        column = _bucket(sample.sent_at, start, SERIES_BUCKET_S)
        if sample.ok:
            ok[column] += 1
        else:
            failed.setdefault(sample.answer, [0] * size)[column] += 1
    return {"bucket_s": SERIES_BUCKET_S, "start_s": 0.0, "ok": ok, "failed": failed}


def latency_series(samples: Sequence[ProbeSample], start: float) -> dict[str, object]:
    """p50 and p99 (nearest rank) of the answered requests sent in each second, in ms; null for a
    second with no answer. Latencies 1..100 ms in second 0 -> p50 50, p99 99."""
    seconds: dict[int, list[float]] = {}
    for sample in samples:
        if sample.latency_s is not None:
            seconds.setdefault(_bucket(sample.sent_at, start, LATENCY_BUCKET_S), []).append(sample.latency_s)
    size = max(seconds, default=-1) + 1
    p50: list[float | None] = [None] * size
    p99: list[float | None] = [None] * size
    for second, latencies in seconds.items():
        ordered = sorted(latencies)
        p50[second] = round(_nearest_rank(ordered, 0.50) * 1000, 2)
        p99[second] = round(_nearest_rank(ordered, 0.99) * 1000, 2)
    return {"bucket_s": LATENCY_BUCKET_S, "start_s": 0.0, "p50_ms": p50, "p99_ms": p99}


def _nearest_rank(ordered: Sequence[float], fraction: float) -> float:
    """The smallest value with at least ``fraction`` of the values at or below it."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
