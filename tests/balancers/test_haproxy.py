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
from tests.support.http_stubs import StubFarm, who_answers
from tests.support.local_haproxy import HAProxyLauncher, RunningHAProxy

MAINT = 0x01  # srv_admin_state: forced maintenance


def _balancer(proxy: RunningHAProxy) -> HAProxyBalancer:
    return HAProxyBalancer(str(proxy.admin_socket), "app")


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
        return await who_answers(proxy.url, 4)

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
        answers = await who_answers(proxy.url, 3)
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


def test_a_backend_named_like_its_frontend_is_drained(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    """Frontend and backend both called ``web`` (a common config): 'show stat web' answers for the
    frontend, which has no servers, and every drain ended in 'server vanished'."""
    old, new = stubs.start("old1"), stubs.start("new1")
    proxy = haproxy.launch([old], backend="web")
    balancer = HAProxyBalancer(str(proxy.admin_socket), "web")

    async def scenario() -> tuple[DrainResult, Counter[str]]:
        await balancer.attach([old.replica])
        await balancer.admit(new.replica)
        drained = await balancer.drain(old.replica, timeout=5)
        return drained, await who_answers(proxy.url, 3)

    drained, answers = loop.run_until_complete(scenario())
    assert drained.sessions_left == 0 and answers == {"new1": 3}
