"""Losing the engine mid-rollout is a failed rollout (exit 1) that says where it stopped; exit 2
(EngineUnavailable, a bad input) stays for "nothing was touched".

Each case runs ``rollover simulate`` with the simulator behind an engine that goes away, as a
user would run it, and reads the exit code and the output.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from rollover import cli
from rollover.backends.sim import SimBackend
from rollover.cli import main
from rollover.core.model import ReplicaEvent, StaleLock
from rollover.errors import EngineLost, EngineUnavailable, PlatformError

SIM = ["simulate", "--replicas", "3", "--request-time", "1", "--redeploy-time", "10"]


class LookupsFailFrom(SimBackend):
    """The simulator behind an engine that stops answering lookups at ``lookups_fail_at`` and never
    answers one again, as a Swarm manager does while it restarts (HTTP 503)."""

    def __init__(self, *args: object, lookups_fail_at: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lookups_fail_at = lookups_fail_at

    async def observe(self, replica_ids: Sequence[str]) -> list[ReplicaEvent]:
        if asyncio.get_running_loop().time() >= self.lookups_fail_at:
            raise EngineUnavailable("the manager answered 503 Service Unavailable")
        return await super().observe(replica_ids)


def engine(monkeypatch: pytest.MonkeyPatch, lookups_fail_at: float, **options: object) -> list[LookupsFailFrom]:
    """Have ``rollover simulate`` roll on such an engine (with the simulator's ``options``); the
    engines it makes, to look at afterwards."""
    made: list[LookupsFailFrom] = []

    def make(*args: object, **kwargs: object) -> LookupsFailFrom:
        made.append(LookupsFailFrom(*args, lookups_fail_at=lookups_fail_at, **kwargs, **options))
        return made[-1]

    monkeypatch.setattr(cli, "SimBackend", make)
    return made


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*SIM, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_resync_that_cannot_reach_the_engine_fails_the_rollout_with_its_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream is lost from 9 s to 14 s (app-1's replacement comes up unseen at 10 s); once it is
    # back, the resync's lookups fail for the reconnect bound (60 s): the engine is lost.
    made = engine(monkeypatch, lookups_fail_at=9, stream_gap=(9, 14))
    code, out, err = run(capsys)
    assert code == 1, err
    assert err == ""  # a result, not an error line
    summary, not_redeployed, in_flight = out.splitlines()[-3:]
    assert summary.startswith("failed: 0 replaced, 0 failed, 0 rolled back, 0 skipped")
    assert "lost the platform for 60s: the manager answered 503" in summary
    assert not_redeployed == "  not redeployed: app-2, app-3"
    assert in_flight == "  in flight, fate unknown: app-1"
    [backend] = made
    assert backend.restore_calls == 0  # no rollback without an engine
    assert backend.state.lock_holder is None  # the lock still went back


def test_the_json_summary_lists_what_was_in_flight(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    engine(monkeypatch, lookups_fail_at=9, stream_gap=(9, 14))
    code, out, _ = run(capsys, "--output", "json")
    summary = json.loads(out.splitlines()[-1])
    assert code == 1
    assert (summary["event"], summary["result"]) == ("summary", "failed")
    assert (summary["not_redeployed"], summary["in_flight"]) == (["app-2", "app-3"], ["app-1"])


def test_an_engine_lost_during_a_recovery_fails_the_rollout_before_any_redeploy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock is a dead rollout's: looking up what it left fails for good once the lock is taken.
    dead = StaleLock(holder="ci pid 7", since=0.0, replicas=3, reason="its holder is gone")
    engine(monkeypatch, lookups_fail_at=0, stale_lock=dead)
    code, out, _ = run(capsys, "--output", "json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert "request_sent" not in [event["event"] for event in events]
    summary = events[-1]
    assert summary["result"] == "failed" and summary["reason"].startswith("lost the platform for 60s")
    assert summary["not_redeployed"] == ["app-1", "app-2", "app-3"] and "in_flight" not in summary


def test_an_engine_out_of_reach_before_anything_was_touched_is_bad_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unreachable(SimBackend):
        async def connect(self) -> None:
            raise EngineUnavailable("cannot connect to the Docker daemon")

    monkeypatch.setattr(cli, "SimBackend", Unreachable)
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert err == "error: EngineUnavailable: cannot connect to the Docker daemon\n"


def test_the_cli_maps_engine_lost_to_exit_1(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert issubclass(EngineLost, PlatformError) and not issubclass(EngineLost, EngineUnavailable)

    def lost(*args: object, **kwargs: object) -> SimBackend:
        raise EngineLost("lost the platform for 60s")

    monkeypatch.setattr(cli, "SimBackend", lost)
    code, _, err = run(capsys)
    assert (code, err) == (1, "error: EngineLost: lost the platform for 60s\n")
