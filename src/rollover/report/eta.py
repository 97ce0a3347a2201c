"""How long is left: the simulator replays the rest of the rollout with the times observed so far.

From the events seen up to ``now`` (JSON records, as the output prints them), it takes the mean time
from a request to its acknowledgement and to the replacement being up (a stop-first request's time
includes the drain before it), and the mean drain; then it runs the same controller on the
simulator, on virtual time, for every target not finished yet, at the rollout's batch and grace. What
is already in flight is counted from its start, so the oldest in-flight replacement's age is taken
off; a start-first rollout's last old replica still drains after its replacement is up, so one mean
drain is added.

Worked example: 12 targets, step 3, grace 0; 3 settled, each acknowledged 1 s and up 10 s after
its request; 3 in flight for 4 s: the simulator rolls 9 replicas 3 at a time in 32 s (it
acknowledges a wave's requests one after another, 1 s each, as the seed's charts draw them), minus
4 s -> 28 s left.
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
    """Seconds left by the simulator's account, or None until one replacement came up (nothing
    observed yet) or once a rollback began (its own rollout, not predicted)."""
    plan = next((record for record in records if record.get("event") == "plan"), None)
    if plan is None or any(record.get("event") in ("rollback", "summary") for record in records):
        return None
    to_ack, to_up, drains = observed_times(records)
    if not to_up:
        return None
    targets = [str(name) for name in plan.get("targets", [])]  # type: ignore[attr-defined]
    finished = {str(record.get("replica")) for record in records if record.get("event") in _FINISHED}
    left = [name for name in targets if name not in finished]
    if not left:
        return 0.0
    in_flight = {str(record.get("replica")): _seconds(record.get("t")) for record in records
                 if record.get("event") == "request_sent" and not record.get("restore")
                 and record.get("replica") not in finished}
    request_s = fmean(to_ack) if to_ack else 0.0
    up_s = max(fmean(to_up), request_s)
    policy = Policy(step=parse_step(str(plan.get("batch", 1))), grace_s=_seconds(plan.get("grace_s")),
                    order=OrderChoice(str(plan.get("order", "start-first"))))
    predicted = _simulate(len(left), request_s, up_s, policy)
    if policy.order is OrderChoice.START_FIRST and drains:
        predicted += fmean(drains)
    oldest = max((now - since for since in in_flight.values()), default=0.0)
    return max(0.0, predicted - oldest)


def _simulate(replicas: int, request_s: float, up_s: float, policy: Policy) -> float:
    async def rollout() -> float:
        return (await Controller(SimBackend(replicas, request_s, up_s), policy).run()).duration_s

    return run_virtual(rollout())
