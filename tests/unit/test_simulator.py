"""The simulator runs the real controller on virtual time: the seed's charts, grace, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from rollover.backends.sim import SimBackend
from rollover.balancers.base import NoBalancer
from rollover.clock import run_virtual
from rollover.controller.loop import Controller
from rollover.core import rollout
from rollover.core.model import Order, ProgressEvent, Replica, StaleLock
from rollover.core.plan import decide
from rollover.core.policy import FailurePolicy, OrderChoice, Policy, parse_step
from rollover.core.result import RolloutResult
from rollover.errors import BadInput, BalancerUnavailable, PlatformError
from rollover.report.output import render_timeline

SEED_HALF = """\
-_________|
--_________|
---_________|
----_________|
-----_________|
-----------_________|
------------_________|
-------------_________|
--------------_________|
---------------_________|
|0 |25"""

SEED_ONE = "\n".join("-" * (1 + 10 * row) + "_" * 9 + "|" for row in range(10)) + "\n|0 |25 |101"
SEED_ALL = "\n".join(["-_________|"] * 10) + "\n|0 |11"


def simulate(replicas: int = 10, step: str = "1", *, request: float = 1, redeploy: float = 10,
             events: list[ProgressEvent] | None = None, **options: object) -> tuple[RolloutResult, SimBackend]:
    backend_keys = ("fail_replicas", "extra_at", "stream_gap", "stale_lock", "restore_outage", "refills_fail")
    backend_options = {key: options.pop(key) for key in backend_keys if key in options}
    policy = Policy(step=parse_step(step), **options)  # type: ignore[arg-type]
    sink = events if events is not None else []

    async def main() -> tuple[RolloutResult, SimBackend]:
        backend = SimBackend(replicas, request, redeploy, **backend_options)  # type: ignore[arg-type]
        return await Controller(backend, policy, report=sink.append).run(), backend

    return run_virtual(main())


@pytest.mark.parametrize(
    ("step", "chart", "duration", "marks"),
    [("half", SEED_HALF, 24, ()), ("1", SEED_ONE, 100, (25,)), ("all", SEED_ALL, 10, ())],
    ids=["half", "one", "all"],
)
def test_the_seeds_three_charts(step: str, chart: str, duration: float, marks: tuple[float, ...]) -> None:
    result, backend = simulate(step=step)
    assert render_timeline(result, marks) == chart
    assert result.duration_s == duration
    assert result.outcome == "completed"
    assert {replica.image for replica in backend.state.replicas.values()} == {"v2"}
    assert len(backend.state.replicas) == 10


def test_simulation_takes_no_wall_time() -> None:
    started = time.perf_counter()
    result, _ = simulate(replicas=200, step="1")
    assert result.duration_s == 200 * 10  # 200 waves of 10 s each
    assert time.perf_counter() - started < 5  # virtual time: nothing sleeps


def test_grace_period_delays_the_next_request() -> None:
    events: list[ProgressEvent] = []
    result, _ = simulate(replicas=3, step="1", grace_s=5, events=events)
    sent = [event.at for event in events if event.kind == "request_sent"]
    assert sent == [0, 15, 30]  # up at 10, +5 grace -> next at 15; up at 25, +5 -> 30
    assert result.duration_s == 45  # the last one settles too


def test_an_extra_replica_coming_up_frees_a_slot() -> None:
    events: list[ProgressEvent] = []
    simulate(replicas=3, step="1", extra_at=(4,), events=events)
    sent = [(event.replica, event.at) for event in events if event.kind == "request_sent"]
    assert sent[:2] == [("app-1", 0), ("app-2", 4)]  # the extra at 4 s lets the second go early


def test_start_first_never_drops_below_full_capacity_stop_first_below_n_minus_step() -> None:
    _, start_first = simulate(replicas=6, step="2", order=OrderChoice.START_FIRST)
    _, stop_first = simulate(replicas=6, step="2", order=OrderChoice.STOP_FIRST)
    assert start_first.state.min_ready == 6
    assert stop_first.state.min_ready == 4


def test_rollback_puts_every_replaced_replica_back() -> None:
    result, backend = simulate(replicas=6, step="2", fail_replicas=(3,))
    assert result.outcome == "rolled-back"
    assert result.exit_code == 1
    assert result.failed == 1 and result.rolled_back == result.replaced == 3
    images = sorted(replica.image for replica in backend.state.replicas.values())
    assert images == ["v1"] * 6  # every replica back on the previous image, none lost
    assert "replacement exited" in (result.reason or "")


def test_pause_stops_issuing_and_leaves_everything() -> None:
    result, backend = simulate(replicas=6, step="1", fail_replicas=(2,), on_failure=FailurePolicy.PAUSE)
    assert result.outcome == "paused" and result.exit_code == 1
    assert result.replaced == 1 and result.failed == 1
    images = sorted(replica.image for replica in backend.state.replicas.values())
    # 1 replaced (v2), the failed replacement left in place (v2, not running), old 2 kept, 4 untouched
    assert images.count("v1") == 5 and images.count("v2") == 2


def test_continue_carries_on_and_fails_at_the_end() -> None:
    result, backend = simulate(replicas=6, step="2", fail_replicas=(2, 5), on_failure=FailurePolicy.CONTINUE)
    assert result.outcome == "failed" and result.exit_code == 1
    assert result.replaced == 4 and result.failed == 2
    images = sorted(replica.image for replica in backend.state.replicas.values())
    assert images == ["v1", "v1", "v2", "v2", "v2", "v2"]  # failed ones stay on their old replica


def test_stop_first_failure_under_continue_puts_the_original_back() -> None:
    result, backend = simulate(replicas=4, step="1", fail_replicas=(2,), on_failure=FailurePolicy.CONTINUE,
                               order=OrderChoice.STOP_FIRST)
    assert result.failed == 1
    assert len(backend.state.replicas) == 4
    assert sorted(replica.image for replica in backend.state.replicas.values()) == ["v1", "v2", "v2", "v2"]


def test_timeline_marks_failures_and_rollbacks() -> None:
    result, _ = simulate(replicas=4, step="1", fail_replicas=(2,))
    rows = render_timeline(result).splitlines()
    assert rows[0].endswith("R")  # replaced, then restored
    assert rows[1].endswith("x")  # its replacement failed
    assert set(rows[2]) == {"-"}  # never touched


def test_json_summary_figures() -> None:
    events: list[ProgressEvent] = []
    simulate(step="half", events=events)
    summary = events[-1]
    assert summary.kind == "summary"
    assert summary.fields()["duration_s"] == 24
    assert summary.fields()["replaced"] == 10


def _interrupted(replicas: int, step: str, at: float, **options: object) -> tuple[RolloutResult, SimBackend]:
    policy = Policy(step=parse_step(step), **options)  # type: ignore[arg-type]

    async def main() -> tuple[RolloutResult, SimBackend]:
        backend = SimBackend(replicas, 1, 10)
        controller = Controller(backend, policy)
        asyncio.get_running_loop().call_at(at, controller.interrupt, "SIGINT")
        return await controller.run(), backend

    return run_virtual(main())


def test_an_interrupt_lets_in_flight_finish_then_rolls_back() -> None:
    result, backend = _interrupted(6, "2", at=12)  # two done at 10/11, two in flight since 10/11
    assert result.outcome == "interrupted" and result.exit_code == 130
    assert result.replaced == 4  # the two in flight were let finish ...
    assert result.rolled_back == 4  # ... and everything replaced was put back
    assert sorted(replica.image for replica in backend.state.replicas.values()) == ["v1"] * 6


def test_an_interrupt_under_pause_stops_where_it_is() -> None:
    result, backend = _interrupted(6, "2", at=12, on_failure=FailurePolicy.PAUSE)
    assert result.exit_code == 130 and result.replaced == 4
    images = sorted(replica.image for replica in backend.state.replicas.values())
    assert images == ["v1", "v1", "v2", "v2", "v2", "v2"]  # no replica lost, none half-made


def test_a_lost_event_stream_is_reopened_and_missed_events_looked_up() -> None:
    events: list[ProgressEvent] = []
    # The stream breaks at 9 s and stays down until 14 s: app-1's replacement comes up at 10 s and
    # app-2's at 13 s... only the resync after reconnecting can tell the controller.
    result, backend = simulate(replicas=3, step="2", stream_gap=(9, 14), events=events)
    kinds = [event.kind for event in events]
    assert "stream_lost" in kinds and "stream_restored" in kinds
    assert result.outcome == "completed" and result.replaced == 3
    assert sorted(replica.image for replica in backend.state.replicas.values()) == ["v2"] * 3
    restored_at = next(event.at for event in events if event.kind == "stream_restored")
    assert 14 <= restored_at < 20  # reopened within one backoff step of the platform coming back


def test_a_stream_that_never_comes_back_fails_the_rollout_without_hanging() -> None:
    # Replacements may take 1000 s, so only the reconnect bound (60 s) can end this rollout.
    result, _ = simulate(replicas=3, step="1", stream_gap=(5, 10_000), timeout_s=1000)
    assert result.outcome == "failed" and result.exit_code == 1
    assert (result.reason or "").startswith("lost the platform for 60s")


def test_a_restore_cut_short_by_an_outage_is_retried_and_makes_one_replica() -> None:
    # Stop-first: app-1 is replaced, app-2's replacement fails. Both originals are put back, and each
    # restore loses the platform after it made its replica (a daemon restart): only the retry answers.
    result, backend = simulate(replicas=4, step="1", fail_replicas=(2,), order=OrderChoice.STOP_FIRST,
                               restore_outage=2)
    assert result.outcome == "rolled-back", result.reason
    assert (result.replaced, result.failed, result.rolled_back) == (1, 1, 2)
    assert backend.restore_calls == 4  # two restores, each tried twice ...
    assert sorted(replica.image for replica in backend.state.replicas.values()) == ["v1"] * 4  # ... none doubled


def _dead_rollout(replicas: int) -> StaleLock:
    return StaleLock(holder="ci pid 7", since=0.0, replicas=replicas, reason="its holder is gone")


def test_a_takeover_refills_what_a_dead_stop_first_rollout_removed() -> None:
    events: list[ProgressEvent] = []
    # The dead rollout began with 4 and removed one without replacing it: 3 are left.
    result, backend = simulate(replicas=3, step="1", order=OrderChoice.STOP_FIRST, stale_lock=_dead_rollout(4),
                               events=events)
    assert result.outcome == "completed"
    assert sorted(replica.image for replica in backend.state.replicas.values()) == ["v2"] * 4
    refilling = next(event for event in events if event.kind == "refilling")
    assert refilling.fields() == {"missing": 1, "replicas": 4}
    sent = [(event.replica, event.fields()["refill"]) for event in events if event.kind == "request_sent"]
    assert sent == [("refill-1", True), ("app-1", False), ("app-2", False), ("app-3", False)]  # the gap first
    assert events[-1].fields()["refilled"] == 1
    assert backend.state.min_ready == 3  # never more than step (1) short of the 4 it began with


def test_step_all_refills_in_a_request_of_its_own() -> None:
    events: list[ProgressEvent] = []
    result, backend = simulate(replicas=3, step="all", stale_lock=_dead_rollout(5), events=events)
    assert result.outcome == "completed" and len(backend.state.replicas) == 5
    sent = [(event.at, event.replica) for event in events if event.kind == "request_sent"]
    assert sent == [(0, "refill-1"), (0, "refill-2"), (1, "app-1"), (1, "app-2"), (1, "app-3")]


def test_a_refill_that_fails_leaves_the_service_short_and_says_so() -> None:
    result, backend = simulate(replicas=3, step="1", order=OrderChoice.STOP_FIRST, stale_lock=_dead_rollout(4),
                               refills_fail=True)
    # The refill goes first and fails: nothing else is touched, the failed refill is removed, and
    # there is nothing to roll back (it stood in for a replica that was already gone).
    assert (result.outcome, result.failed, result.replaced, result.rolled_back) == ("rolled-back", 1, 0, 0)
    assert "the service is 1 replica(s) short" in (result.reason or "")
    assert sorted(replica.image for replica in backend.state.replicas.values()) == ["v1"] * 3


def test_a_deadline_that_passes_while_the_stream_is_lost_waits_for_the_resync() -> None:
    # app-1's replacement comes up at 11 s, within its 12 s timeout, but the stream is lost from
    # 2 s to 30 s: only the resync after the reopen can tell. Failing it at 12 s would be a guess.
    events: list[ProgressEvent] = []
    result, backend = simulate(replicas=3, step="1", stream_gap=(2, 30), timeout_s=12, events=events)
    assert result.outcome == "completed", result.reason
    assert sorted(replica.image for replica in backend.state.replicas.values()) == ["v2"] * 3
    assert not [event for event in events if event.kind == "failed"]


def test_a_replacement_still_not_up_after_the_resync_fails_then() -> None:
    # The same outage, but app-1's replacement never comes up: its deadline (12 s) passed during the
    # outage, so it fails as soon as the resync has shown it is not up - not at 12 s, not never.
    events: list[ProgressEvent] = []
    result, _ = simulate(replicas=3, step="1", stream_gap=(2, 30), timeout_s=12, fail_replicas=(1,),
                         events=events)
    assert result.outcome == "rolled-back"
    failed_at = next(event.at for event in events if event.kind == "failed")
    restored_at = next(event.at for event in events if event.kind == "stream_restored")
    assert restored_at <= failed_at < restored_at + 1


def test_an_extra_a_request_names_as_its_replacement_is_up_and_frees_no_slot() -> None:
    # Swarm's updater, restarted by someone else's spec change, replaced a slot by itself: the
    # rollout first sees that task as an extra (it frees a slot), then the next request takes it.
    targets = [Replica(id=f"app-{n}", name=f"app-{n}") for n in (1, 2)]
    state = rollout.start(targets, batch=1, grace_s=5.0)
    state = rollout.replica_up(state, "made-by-swarm", at=3.0)
    assert state.extras_up == {"made-by-swarm"}
    state = rollout.request_sent(state, ["app-1"], at=3.0)
    state = rollout.request_acknowledged(state, ["app-1"], [Replica(id="made-by-swarm", name="app-9")],
                                         at=3.5, timeouts=[10.0])
    [first, _] = state.progress
    assert (first.phase, first.up_at, first.settle_until) == ("settling", 3.5, 8.5)
    assert state.extras_up == frozenset()


def test_a_replacement_removed_with_its_slot_leaves_its_target_skipped_not_failed() -> None:
    # A Swarm scale-down removed the slot a stop-first replacement was starting in: the service now
    # wants one replica less, so nothing failed. Removed otherwise (docker rm), it is a failure.
    targets = [Replica(id="app-1", name="app-1")]
    state = rollout.start(targets, batch=1, grace_s=0.0)
    state = rollout.request_sent(state, ["app-1"], at=0.0)
    state = rollout.request_acknowledged(state, ["app-1"], [Replica(id="new-1", name="app-1")], at=0.1,
                                         timeouts=[10.0])
    scaled = rollout.replica_down(state, "new-1", "removed by a scale-down", 2.0, gone=True, slot_removed=True)
    removed = rollout.replica_down(state, "new-1", "removed", 2.0, gone=True)
    assert (scaled.progress[0].phase, removed.progress[0].phase) == ("skipped", "failed")


def test_a_replacement_that_took_another_waiting_targets_place_trades_the_two() -> None:
    # Swarm picks the slot: asked to replace app-1, it replaced app-3. app-3 is the one that goes
    # (drained, retired) and app-1 still waits for its turn.
    targets = [Replica(id=f"app-{n}", name=f"app-{n}") for n in (1, 2, 3)]
    state = rollout.start(targets, batch=1, grace_s=0.0)
    state = rollout.request_sent(state, ["app-1"], at=0.0)
    new = Replica(id="new-1", name="app-4", replaces="app-3")
    state = rollout.request_acknowledged(state, ["app-1"], [new], at=0.5, timeouts=[10.0])
    assert [(item.target.id, item.phase) for item in state.progress] == [
        ("app-3", "redeploying"), ("app-2", "waiting"), ("app-1", "waiting")]
    state = rollout.advance(rollout.replica_up(state, "new-1", at=1.0), now=1.0)
    decision = decide(state, Policy(step=parse_step("1")), Order.START_FIRST, now=1.0)
    assert [item.target.id for item in decision.retire] == ["app-3"]
    assert [item.target.id for item in decision.request] == ["app-2"]


def test_in_a_request_of_three_the_targets_that_went_are_in_flight_whatever_the_order_of_the_answer() -> None:
    # Asked for app-1..3, Swarm replaced app-2, app-4 and app-3, answered in that order: app-1 did
    # not go and trades with app-4, which did. Trading one pair at a time in answer order left
    # app-2's place waiting on a task that was gone: skipped, "removed before its turn" (CI, step half).
    targets = [Replica(id=f"app-{n}", name=f"app-{n}") for n in range(1, 7)]
    state = rollout.start(targets, batch=3, grace_s=0.0)
    state = rollout.request_sent(state, ["app-1", "app-2", "app-3"], at=0.0)
    made = [Replica(id="new-a", name="app-7", replaces="app-2"), Replica(id="new-b", name="app-8", replaces="app-4"),
            Replica(id="new-c", name="app-9", replaces="app-3")]
    state = rollout.request_acknowledged(state, ["app-1", "app-2", "app-3"], made, at=0.5, timeouts=[10.0] * 3)
    assert [(item.target.id, item.phase, item.replacement.id if item.replacement else None)
            for item in state.progress] == [
        ("app-4", "redeploying", "new-b"), ("app-2", "redeploying", "new-a"), ("app-3", "redeploying", "new-c"),
        ("app-1", "waiting", None), ("app-5", "waiting", None), ("app-6", "waiting", None)]
    for gone in ("app-2", "app-4", "app-3"):  # Swarm stops the displaced tasks: none is a waiting target
        state = rollout.replica_down(state, gone, "removed", at=1.0, gone=True)
    assert state.count(rollout.Phase.SKIPPED) == 0


class _BalancerLostAfterTheLock(NoBalancer):
    """Attaches once (before the lock), then is gone: the takeover's second look fails."""

    def __init__(self) -> None:
        self.attached = 0

    async def attach(self, replicas: Sequence[Replica]) -> None:
        self.attached += 1
        if self.attached > 1:
            raise BalancerUnavailable("HAProxy backend web at /run/haproxy.sock: Connection refused")


def test_a_balancer_lost_once_the_lock_was_taken_over_is_exit_1_not_bad_input() -> None:
    """Exit 2 says "nothing was touched"; a takeover has taken the lock and sorted the dead
    rollout's leftovers by the time it attaches the balancer again."""
    balancer = _BalancerLostAfterTheLock()

    async def main() -> None:
        backend = SimBackend(3, 1, 10, stale_lock=_dead_rollout(3))
        await Controller(backend, Policy(step=parse_step("1")), balancer=balancer).run()

    with pytest.raises(PlatformError, match="after taking the lock over: HAProxy backend web") as caught:
        run_virtual(main())
    assert not isinstance(caught.value, BadInput) and caught.value.exit_code == 1
