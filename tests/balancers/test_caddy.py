"""CaddyBalancer against a real Caddy 2.6 in front of local stub servers (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from rollover.balancers.caddy import CaddyBalancer
from rollover.core.model import Replica
from rollover.errors import BalancerUnavailable, InvalidOption
from tests.support.http_stubs import StubFarm, closed_port, who_answers
from tests.support.local_caddy import ROUTE, CaddyLauncher, RunningCaddy


def _balancer(proxy: RunningCaddy) -> CaddyBalancer:
    return CaddyBalancer(proxy.admin_url, ROUTE)


def test_an_idle_upstreams_drain_still_waits_out_the_settle_window(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, caddy: CaddyLauncher
) -> None:
    """No request in flight at the park, yet a request Caddy accepted under the config before it
    may still pick the upstream: the drain ends no sooner than ``settle_s`` after the park."""
    old, other = stubs.start("old1"), stubs.start("other")
    proxy = caddy.launch([old, other])
    balancer = CaddyBalancer(proxy.admin_url, ROUTE, settle_s=0.4)

    async def scenario() -> float:
        await balancer.attach([old.replica, other.replica])
        return (await balancer.drain(old.replica, timeout=5)).waited_s

    waited = loop.run_until_complete(scenario())
    assert 0.4 <= waited < 2.0
    assert proxy.upstreams() == [f"127.0.0.1:{other.port}"]


def test_forget_removes_an_upstream_that_was_never_drained_and_a_drained_one_can_come_back(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, caddy: CaddyLauncher
) -> None:
    old, new = stubs.start("old1"), stubs.start("new1")
    proxy = caddy.launch([old])
    balancer = _balancer(proxy)

    async def scenario() -> tuple[list[str], Counter[str]]:
        await balancer.attach([old.replica])
        await balancer.admit(new.replica)
        await balancer.forget(new.replica)  # a discarded replacement
        after_forget = proxy.upstreams()
        await balancer.admit(new.replica)
        await balancer.drain(old.replica, timeout=5)
        await balancer.admit(old.replica)  # a rollback puts the original back
        return after_forget, await who_answers(proxy.url, 4)

    after_forget, answers = loop.run_until_complete(scenario())
    assert after_forget == [f"127.0.0.1:{old.port}"]
    assert answers == {"old1": 2, "new1": 2}


def test_attach_refuses_what_it_cannot_steer(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, caddy: CaddyLauncher
) -> None:
    server, stranger = stubs.start("old1"), stubs.start("stranger")
    proxy = caddy.launch([server])
    two_networks = Replica(id="abc", name="multi", details=(("ip.a", "10.0.0.2"), ("ip.b", "10.0.1.2")))

    async def scenario() -> None:
        with pytest.raises(BalancerUnavailable, match="Caddy admin API at"):
            await CaddyBalancer(f"http://127.0.0.1:{closed_port()}", ROUTE).attach([server.replica])
        with pytest.raises(BalancerUnavailable, match="no route with @id 'nosuch'"):
            await CaddyBalancer(proxy.admin_url, "nosuch").attach([server.replica])
        with pytest.raises(BalancerUnavailable, match="points at any of stranger"):
            await _balancer(proxy).attach([stranger.replica])
        with pytest.raises(InvalidOption, match="network"):
            await _balancer(proxy).attach([two_networks])
        partly = _balancer(proxy)  # a replica no upstream points at gets no traffic here
        await partly.attach([server.replica, stranger.replica])
        assert (await partly.drain(stranger.replica, timeout=5)).waited_s == 0.0

    loop.run_until_complete(scenario())
    with pytest.raises(InvalidOption, match="route id"):
        CaddyBalancer(proxy.admin_url, "app/../../config")
    with pytest.raises(InvalidOption, match="admin URL"):
        CaddyBalancer("unix:/run/caddy.sock", ROUTE)
