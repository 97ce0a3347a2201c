"""--lock-wait on the simulator's virtual clock: a held lock is waited for (reported once) up to the
bound, then Locked with how long it waited; a signal during the wait ends it at once, nothing touched."""

from __future__ import annotations

import asyncio

import pytest

from rollover.backends.sim import SimBackend
from rollover.clock import run_virtual
from rollover.controller import Controller
from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.core.policy import Policy, parse_step
from rollover.errors import Locked, StoppedBySignal


def _held_backend() -> SimBackend:
    backend = SimBackend(3, 1, 10)
    backend.state.lock_holder = "ci-job-41@runner"
    return backend


def test_a_held_lock_is_waited_for_up_to_the_bound() -> None:
    events: list[ProgressEvent] = []

    async def main() -> float:
        controller = Controller(_held_backend(), Policy(step=parse_step("1")), report=events.append, lock_wait_s=30)
        with pytest.raises(Locked, match=r"held by ci-job-41@runner \(waited 30 s\)"):
            await controller.run()
        return asyncio.get_running_loop().time()

    ended = run_virtual(main())
    assert ended >= 30
    kinds = [event.kind for event in events]
    assert kinds == [EventKind.PLAN, EventKind.LOCK_WAIT]
    assert dict(events[1].detail)["wait_s"] == 30


def test_without_lock_wait_it_is_locked_at_once() -> None:
    async def main() -> float:
        with pytest.raises(Locked):
            await Controller(_held_backend(), Policy(step=parse_step("1"))).run()
        return asyncio.get_running_loop().time()

    assert run_virtual(main()) < 1


def test_a_signal_ends_the_wait_with_nothing_touched() -> None:
    backend = _held_backend()

    async def main() -> float:
        controller = Controller(backend, Policy(step=parse_step("1")), lock_wait_s=300)
        asyncio.get_running_loop().call_later(5, controller.interrupt, "SIGINT")
        with pytest.raises(StoppedBySignal, match="interrupted by SIGINT"):
            await controller.run()
        return asyncio.get_running_loop().time()

    assert run_virtual(main()) < 10
    assert backend.state.lock_holder == "ci-job-41@runner", "the other rollout's lock is not ours to touch"
