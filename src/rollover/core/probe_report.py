"""What a traffic probe saw: plain values the result, the report and the proofs read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProbeSample:
    sent_at: float
    ok: bool
    answer: str  # the first line of the body when ok, else the failure kind


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
