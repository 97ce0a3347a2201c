"""The traffic probe against local stub servers on 127.0.0.1: counts, failure kinds, gaps."""

from __future__ import annotations

import asyncio

import pytest

from rollover.probe import Probe, ProbeReport
from tests.support.http_stubs import StubFarm, closed_port


def _url(port: int, path: str = "/") -> str:
    return f"http://127.0.0.1:{port}{path}"


def test_every_request_is_counted_and_answered(loop: asyncio.AbstractEventLoop, stubs: StubFarm) -> None:
    server = stubs.start("v1")

    async def scenario() -> tuple[ProbeReport, float]:
        started = loop.time()
        async with Probe(_url(server.port), rate=100) as probe:
            await probe.wait_for(lambda r: r.ok >= 40, timeout=5)
            report = await probe.stop()
        return report, loop.time() - started

    report, elapsed = loop.run_until_complete(scenario())
    assert report.failed == 0 and report.failures_by_kind == {}
    assert report.sent == report.ok >= 40
    assert report.answers == {"v1": report.ok}
    assert report.sent <= 100 * elapsed + 2  # open loop: the schedule, never more
    assert len(report.samples) == report.sent
    assert report.longest_gap_s < 0.5


def test_a_503_window_is_counted_and_is_the_longest_gap(loop: asyncio.AbstractEventLoop, stubs: StubFarm) -> None:
    server = stubs.start("v1")

    async def scenario() -> ProbeReport:
        async with Probe(_url(server.port), rate=100) as probe:
            await probe.wait_for(lambda r: r.ok >= 10, timeout=5)
            server.fail_for(1.0)
            failing = await probe.wait_for(lambda r: r.failed > 0, timeout=5)
            await probe.wait_for(lambda r: r.ok >= failing.ok + 10, timeout=5)
            return await probe.stop()

    report = loop.run_until_complete(scenario())
    assert set(report.failures_by_kind) == {"status-5xx"}
    assert 50 <= report.failed <= 150  # about rate x window
    assert 0.8 <= report.longest_gap_s <= 1.6
    assert report.answers == {"v1": report.ok}


def test_a_closed_port_gives_connect_failures(loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> ProbeReport:
        async with Probe(_url(closed_port()), rate=50) as probe:
            await probe.wait_for(lambda r: r.failed >= 10, timeout=5)
            return await probe.stop()

    report = loop.run_until_complete(scenario())
    assert report.ok == 0
    assert report.failures_by_kind == {"connect": report.failed}
    assert report.longest_gap_s >= 0.15  # never answered: the whole run is one gap


def test_a_slow_answer_is_a_timeout(loop: asyncio.AbstractEventLoop, stubs: StubFarm) -> None:
    server = stubs.start("slow", slow_s=1.0)

    async def scenario() -> ProbeReport:
        async with Probe(_url(server.port, "/slow"), rate=20, timeout=0.2) as probe:
            await probe.wait_for(lambda r: r.failures_by_kind.get("timeout", 0) >= 3, timeout=5)
            return await probe.stop()

    report = loop.run_until_complete(scenario())
    assert report.ok == 0
    assert report.failures_by_kind == {"timeout": report.failed}


def test_requests_over_the_in_flight_bound_count_as_overload(loop: asyncio.AbstractEventLoop, stubs: StubFarm) -> None:
    server = stubs.start("slow", slow_s=0.3)

    async def scenario() -> ProbeReport:
        async with Probe(_url(server.port, "/slow"), rate=50, max_in_flight=2) as probe:
            await probe.wait_for(lambda r: r.failures_by_kind.get("overload", 0) >= 5, timeout=5)
            return await probe.stop()

    report = loop.run_until_complete(scenario())
    assert report.failures_by_kind["overload"] >= 5
    assert report.sent == report.ok + report.failed


def test_answers_sent_since_tells_versions_apart(loop: asyncio.AbstractEventLoop, stubs: StubFarm) -> None:
    old, new = stubs.start("v1"), stubs.start("v2")

    async def scenario() -> tuple[ProbeReport, float]:
        async with Probe(_url(old.port), rate=100) as probe:
            await probe.wait_for(lambda r: r.ok >= 5, timeout=5)
            switched_at = loop.time()
            probe.url = _url(new.port)  # the "rollout": every later request goes to v2
            await probe.wait_for(lambda r: r.answers.get("v2", 0) >= 5, timeout=5)
            return await probe.stop(), switched_at

    report, switched_at = loop.run_until_complete(scenario())
    assert set(report.answers_sent_since(switched_at)) == {"v2"}
    assert report.answers_sent_since(0.0)["v1"] >= 5


def test_a_probe_cannot_stop_before_it_starts() -> None:
    with pytest.raises(RuntimeError):
        asyncio.run(Probe("http://127.0.0.1:1/").stop())
    with pytest.raises(ValueError):
        Probe("http://127.0.0.1:1/", rate=0)
    with pytest.raises(ValueError):
        Probe("ftp://127.0.0.1:1/")
