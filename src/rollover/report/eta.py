"""How long is left: the simulator replays the whole rollout with the times observed so far.

From the events seen up to ``now`` (JSON records, as the output prints them) it takes the mean time
from a request to its acknowledgement, and calibrates the simulator's time to up on what really
happened: the time to up at which the simulator, rolling the replicas settled so far at the
rollout's batch and grace, finishes them when they really finished (bisection: the simulated time
grows with it). Whatever a real rollout spends that the simulator does not model (a loaded machine,
retirements holding the engine's lock, requests waiting on each other) is folded into that one
figure. The simulator then rolls every target with it; the time left is its end minus ``now``, plus
one mean drain for start-first (the last old replica still drains after its replacement is up).

Worked example: 12 targets, step 3, grace 0; 3 settled at 10 s, each acknowledged 1 s after its
request. The simulator acknowledges a wave's requests one after another (1 s each, as the seed's
charts draw them), so 3 replicas end at 10 s with 8 s to up; 12 replicas at 8 s take 34 s; at
14 s, 20 s are left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean

from rollover.backends.sim import SimBackend
from rollover.clock import run_virtual
from rollover.controller.loop import Controller
from rollover.core.policy import OrderChoice, Policy, parse_step

Record = Mapping[str, object]
_FINISHED = ("settled", "failed", "skipped")


def _seconds(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def observed_times(records: Sequence[Record]) -> tuple[list[float], list[float], list[float]]:
    """(request -> acknowledged, request -> up, drain waits) of the forward replacements so far."""
    requested: dict[str, float] = {}
    to_ack, to_up, drains = [], [], []
    for record in records:
        kind, replica, at = record.get("event"), str(record.get("replica", "")), _seconds(record.get("t"))
        if kind == "request_sent" and not record.get("restore"):
            requested[replica] = at
        elif kind == "acknowledged" and replica in requested:
            to_ack.append(at - requested[replica])
        elif kind == "up" and replica in requested:
            to_up.append(at - requested.pop(replica))
        elif kind == "drained":
            drains.append(_seconds(record.get("waited_s")))
    return to_ack, to_up, drains


def remaining_s(records: Sequence[Record], now: float) -> float | None:
    """Seconds left by the simulator's account, or None until a replacement settled (nothing
    observed yet) or once a rollback began (its own rollout, not predicted)."""
    plan = next((record for record in records if record.get("event") == "plan"), None)
    if plan is None or any(record.get("event") in ("rollback", "summary") for record in records):
        return None
    to_ack, _to_up, drains = observed_times(records)
    targets = [str(name) for name in plan.get("targets", [])]  # type: ignore[attr-defined]
    settled = [_seconds(record.get("t")) for record in records if record.get("event") in _FINISHED]
    if not settled or not targets:
        return None
    policy = Policy(step=parse_step(str(plan.get("batch", 1))), grace_s=_seconds(plan.get("grace_s")),
                    order=OrderChoice(str(plan.get("order", "start-first"))))
    request_s = fmean(to_ack) if to_ack else 0.0
    up_s = _calibrated_up_s(len(settled), max(settled), request_s, policy)
    predicted = _simulate(len(targets), request_s, up_s, policy)
    if policy.order is OrderChoice.START_FIRST and drains:
        predicted += fmean(drains)
    return max(0.0, predicted - now)


def _calibrated_up_s(done: int, done_at: float, request_s: float, policy: Policy, rounds: int = 16) -> float:
    """The time to up at which the simulator finishes ``done`` replicas at ``done_at``."""
    low, high = request_s, max(done_at, request_s)
    for _ in range(rounds):
        middle = (low + high) / 2
        if _simulate(done, request_s, middle, policy) < done_at:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _simulate(replicas: int, request_s: float, up_s: float, policy: Policy) -> float:
    async def rollout() -> float:
        return (await Controller(SimBackend(replicas, request_s, up_s), policy).run()).duration_s

    return run_virtual(rollout())
