"""HAProxyBalancer against a real HAProxy 2.6 in front of local stub servers (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from rollover.balancers.base import DrainResult
from rollover.balancers.haproxy import HAProxyBalancer, dynamic_server_name
from rollover.core.model import Replica
from rollover.errors import BalancerUnavailable, InvalidOption, PlatformError
from rollover.probe.open_loop import Probe
from tests.support.http_stubs import StubFarm, StubServer
from tests.support.local_haproxy import HAProxyLauncher, RunningHAProxy

MAINT, DRAIN = 0x01, 0x08


def _balancer(proxy: RunningHAProxy) -> HAProxyBalancer:
    return HAProxyBalancer(str(proxy.admin_socket), "app")


async def _answers(url: str, count: int) -> Counter[str]:
    """Who answers ``count`` sequential requests through the proxy (a new connection each)."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        bodies = [(await client.get(url)).text.strip() for _ in range(count)]
    return Counter(bodies)


async def _until_state(proxy: RunningHAProxy, server: str, bit: int) -> None:
    """HAProxy publishes no events: poll its state (with a deadline) until ``bit`` is set."""
    async with asyncio.timeout(5):
        while not proxy.servers()[server][1] & bit:
            await asyncio.sleep(0.01)


def test_attach_then_admit_puts_the_replacement_in_rotation(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    old, new = stubs.start("old1"), stubs.start("new1")
    proxy = haproxy.launch([old])
    balancer = HAProxyBalancer(proxy.tcp_api, "app")  # the runtime API over tcp this time

    async def scenario() -> tuple[Counter[str], Counter[str]]:
        await balancer.attach([old.replica])
        before = await _answers(proxy.url, 4)
        await balancer.admit(new.replica)
        return before, await _answers(proxy.url, 4)

    before, after = loop.run_until_complete(scenario())
    assert before == {"old1": 4}  # the replacement got nothing before it was admitted
    assert after == {"old1": 2, "new1": 2}  # roundrobin over both
    assert proxy.servers()[dynamic_server_name(new.replica)] == (new.port, 0)


def test_drain_stops_new_requests_and_waits_for_the_one_in_flight(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    first, second = stubs.start("one", slow_s=1.0), stubs.start("two", slow_s=1.0)
    proxy = haproxy.launch([first, second])
    balancer = _balancer(proxy)

    async def scenario() -> tuple[httpx.Response, DrainResult, float, StubServer, Counter[str]]:
        await balancer.attach([first.replica, second.replica])
        async with httpx.AsyncClient(timeout=5) as client:
            slow = asyncio.create_task(client.get(proxy.url + "/slow"))
            async with asyncio.timeout(5):
                await asyncio.wait(
                    [asyncio.create_task(s.slow_arrived.wait()) for s in (first, second)],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            busy = first if first.slow_arrived.is_set() else second
            drain = asyncio.create_task(balancer.drain(busy.replica, timeout=5))
            await _until_state(proxy, busy.name, DRAIN)
            during = await _answers(proxy.url, 6)
            result = await drain
            drained_at = loop.time()
            return await slow, result, drained_at, busy, during

    response, result, drained_at, busy, during = loop.run_until_complete(scenario())
    assert response.status_code == 200 and response.text.strip() == busy.name  # finished, not cut
    assert result.sessions_left == 0 and result.complete
    assert busy.slow_finished_at is not None and busy.slow_finished_at <= drained_at
    assert 0.3 <= result.waited_s <= 3  # it waited for the slow answer (1 s), and no longer
    assert busy.name not in during and sum(during.values()) == 6
    assert proxy.servers()[busy.name][1] & MAINT


def test_a_drain_that_times_out_returns_the_sessions_left(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    server = stubs.start("slow", slow_s=1.0)
    proxy = haproxy.launch([server])
    balancer = _balancer(proxy)

    async def scenario() -> tuple[DrainResult, httpx.Response]:
        await balancer.attach([server.replica])
        async with httpx.AsyncClient(timeout=5) as client:
            slow = asyncio.create_task(client.get(proxy.url + "/slow"))
            async with asyncio.timeout(5):
                await server.slow_arrived.wait()
            result = await balancer.drain(server.replica, timeout=0.2)
            return result, await slow

    result, response = loop.run_until_complete(scenario())
    assert result.sessions_left == 1 and not result.complete
    assert 0.2 <= result.waited_s < 0.9
    assert response.status_code == 200  # maintenance stops new traffic; it does not cut sessions


def test_forget_deletes_a_dynamic_server_and_keeps_a_configured_one_as_a_spare(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    old, new, newer = stubs.start("old1"), stubs.start("new1"), stubs.start("new2")
    proxy = haproxy.launch([old])
    balancer = _balancer(proxy)

    async def scenario() -> Counter[str]:
        await balancer.attach([old.replica])
        await balancer.admit(new.replica)
        await balancer.drain(old.replica, timeout=5)
        old.kill()
        await balancer.forget(old.replica)
        await balancer.admit(newer.replica)  # takes old1's freed slot
        await balancer.drain(new.replica, timeout=5)
        new.kill()
        await balancer.forget(new.replica)
        return await _answers(proxy.url, 4)

    answers = loop.run_until_complete(scenario())
    assert answers == {"new2": 4}
    assert proxy.servers() == {"old1": (newer.port, 0)}  # r-<new1> is gone, the slot carries new2


def test_without_dynamic_servers_a_spare_slot_is_used(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    old, new, newer = stubs.start("old1"), stubs.start("new1"), stubs.start("new2")
    proxy = haproxy.launch([old], balance="source", extra=["server spare1 127.0.0.1:1 disabled"])
    balancer = _balancer(proxy)

    async def scenario() -> Counter[str]:
        await balancer.attach([old.replica])
        await balancer.admit(new.replica)
        await balancer.drain(old.replica, timeout=5)
        answers = await _answers(proxy.url, 3)
        with pytest.raises(PlatformError, match="spare"):
            await balancer.admit(newer.replica)  # no spare left, and 'balance source' allows no dynamic server
        return answers

    assert loop.run_until_complete(scenario()) == {"new1": 3}
    port, admin_state = proxy.servers()["spare1"]
    assert port == new.port and not admin_state & MAINT


def test_attach_refuses_what_it_cannot_steer(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher, tmp_path: Path
) -> None:
    server, stranger = stubs.start("old1"), stubs.start("stranger")
    proxy = haproxy.launch([server])
    two_networks = Replica(id="abc", name="multi", details=(("ip.a", "10.0.0.2"), ("ip.b", "10.0.1.2")))

    async def scenario() -> None:
        with pytest.raises(BalancerUnavailable, match="No such file"):
            await HAProxyBalancer(str(tmp_path / "missing.sock"), "app").attach([server.replica])
        with pytest.raises(BalancerUnavailable, match="Can't find backend"):
            await HAProxyBalancer(str(proxy.admin_socket), "nosuch").attach([server.replica])
        with pytest.raises(BalancerUnavailable, match="points at any of stranger"):
            await _balancer(proxy).attach([stranger.replica])
        with pytest.raises(InvalidOption, match="network"):
            await _balancer(proxy).attach([two_networks])
        partly = _balancer(proxy)  # one replica no server points at: it gets no traffic here
        await partly.attach([server.replica, stranger.replica])
        assert await partly.drain(stranger.replica, timeout=5) == DrainResult(sessions_left=0, waited_s=0.0)

    loop.run_until_complete(scenario())
    with pytest.raises(InvalidOption):
        HAProxyBalancer(str(proxy.admin_socket), "app;del server app/old1")
    with pytest.raises(InvalidOption):
        HAProxyBalancer("tcp:nohost", "app")


async def _roll(balancer: HAProxyBalancer, pairs: list[tuple[StubServer, StubServer]], probe: Probe) -> float:
    """Replace each old server by its new one the way the controller does; when the last old left."""
    for old, new in pairs:
        await balancer.admit(new.replica)
        result = await balancer.drain(old.replica, timeout=5)
        assert result.complete
        old.kill()  # the platform retires the container
        await balancer.forget(old.replica)
        ok = probe.progress().ok
        await probe.wait_for(lambda r, ok=ok: r.ok >= ok + 20, timeout=5)  # traffic flows between steps
    return asyncio.get_running_loop().time()


def test_a_rolling_swap_under_load_loses_no_request(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    olds = [stubs.start(f"old{i}") for i in (1, 2, 3)]
    news = [stubs.start(f"new{i}") for i in (1, 2, 3)]
    proxy = haproxy.launch(olds)
    balancer = _balancer(proxy)

    async def scenario() -> tuple[float, Counter[str], int, dict[str, int]]:
        await balancer.attach([s.replica for s in olds])
        async with Probe(proxy.url + "/", rate=200) as probe:
            await probe.wait_for(lambda r: r.ok >= 50, timeout=5)
            last_old_gone = await _roll(balancer, list(zip(olds, news, strict=True)), probe)
            await probe.wait_for(lambda r: r.ok >= 400, timeout=10)
            report = await probe.stop()
        return report.longest_gap_s, report.answers_sent_since(last_old_gone), report.failed, dict(report.answers)

    gap, after, failed, answers = loop.run_until_complete(scenario())
    assert failed == 0
    assert set(after) == {"new1", "new2", "new3"}  # once the last old one left, only the new version
    assert {"old1", "old2", "old3"} <= set(answers)
    assert gap < 0.5


def test_killing_a_server_in_rotation_fails_requests(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    """The control experiment: the same load without a drain does see failures."""
    olds = [stubs.start(f"old{i}") for i in (1, 2)]
    proxy = haproxy.launch(olds)

    async def scenario() -> dict[str, int]:
        async with Probe(proxy.url + "/", rate=200, timeout=0.5) as probe:
            await probe.wait_for(lambda r: r.ok >= 50, timeout=5)
            olds[0].kill()
            await probe.wait_for(lambda r: r.failed >= 10, timeout=5)
            return dict((await probe.stop()).failures_by_kind)

    failures = loop.run_until_complete(scenario())
    # HAProxy keeps picking the dead server (no health checks here) and retries its refused
    # connection with a 1 s turn-around between tries: the probe sees timeouts (then 503s).
    assert sum(failures.values()) >= 10
    assert set(failures) <= {"timeout", "status-5xx"}


def test_a_dynamic_server_with_sessions_left_is_kept_as_a_spare(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    old, new, newer = stubs.start("old1"), stubs.start("new1", slow_s=1.0), stubs.start("new2")
    proxy = haproxy.launch([old])
    balancer = HAProxyBalancer(str(proxy.admin_socket), "app", delete_budget=0.1)

    async def scenario() -> httpx.Response:
        await balancer.attach([old.replica])
        await balancer.admit(new.replica)
        await balancer.drain(old.replica, timeout=5)
        async with httpx.AsyncClient(timeout=5) as client:
            slow = asyncio.create_task(client.get(proxy.url + "/slow"))
            async with asyncio.timeout(5):
                await new.slow_arrived.wait()
            await balancer.forget(new.replica)  # HAProxy refuses to delete a server with a session
            await balancer.admit(newer.replica)  # ... so its slot is reused
            return await slow

    assert loop.run_until_complete(scenario()).status_code == 200
    port, admin_state = proxy.servers()[dynamic_server_name(new.replica)]
    assert port == newer.port and not admin_state & MAINT
