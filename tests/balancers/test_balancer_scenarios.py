"""The scenarios every balancer must pass, written once and run against a real HAProxy 2.6 and a real
Caddy 2.6 in front of local stub servers (127.0.0.1 only): admit, drain with a request in flight,
a drain that times out, and a rolling swap under load that loses no request.

What differs per balancer (how it is launched, how to see that a server left rotation, what it
keeps after a drain) is a small ``Front``; what a balancer alone does (HAProxy's spare slots,
Caddy's parked upstreams on forget) stays in test_haproxy.py and test_caddy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
import pytest

from rollover.balancers.base import Balancer, DrainResult
from rollover.balancers.caddy import PARKED_SUFFIX, CaddyBalancer
from rollover.balancers.haproxy import HAProxyBalancer, dynamic_server_name
from rollover.probe.open_loop import Probe
from tests.support.http_stubs import StubFarm, StubServer, who_answers
from tests.support.local_caddy import ROUTE, CaddyLauncher, RunningCaddy
from tests.support.local_haproxy import HAProxyLauncher, RunningHAProxy

MAINT, DRAIN = 0x01, 0x08  # srv_admin_state: forced maintenance, forced drain
P = TypeVar("P")  # the running proxy a launcher hands back
P_co = TypeVar("P_co", covariant=True)


class Front(Protocol):
    """One kind of balancer in front of stub servers, as the shared scenarios drive it."""

    def launch(self, servers: Sequence[StubServer]) -> Any: ...
    def balancer(self, proxy: Any) -> Balancer: ...
    def admitting_balancer(self, proxy: Any) -> Balancer: ...
    def assert_admitted(self, proxy: Any, old: StubServer, new: StubServer) -> None: ...
    async def until_out_of_rotation(self, proxy: Any, server: StubServer) -> None: ...
    def seen_while_draining(self, proxy: Any, server: StubServer) -> Any: ...
    def assert_drained(self, proxy: Any, server: StubServer, seen_while_draining: Any) -> None: ...
    def assert_routes_only_to(self, proxy: Any, server: StubServer) -> None: ...


class _Launcher(Protocol[P_co]):
    def launch(self, servers: Sequence[StubServer]) -> P_co: ...


class _Launched(Generic[P]):
    """A front launched by the test's launcher fixture (which stops it at the end)."""

    def __init__(self, launcher: _Launcher[P]) -> None:
        self._launcher = launcher

    def launch(self, servers: Sequence[StubServer]) -> P:
        return self._launcher.launch(servers)


class HAProxyFront(_Launched[RunningHAProxy]):
    def balancer(self, proxy: RunningHAProxy) -> HAProxyBalancer:
        return HAProxyBalancer(str(proxy.admin_socket), "app")

    def admitting_balancer(self, proxy: RunningHAProxy) -> HAProxyBalancer:
        return HAProxyBalancer(proxy.tcp_api, "app")  # the runtime API over tcp this time

    def assert_admitted(self, proxy: RunningHAProxy, old: StubServer, new: StubServer) -> None:
        assert proxy.servers()[dynamic_server_name(new.replica)] == (new.port, 0)

    async def until_out_of_rotation(self, proxy: RunningHAProxy, server: StubServer) -> None:
        """HAProxy publishes no events: poll its state (with a deadline) until the drain bit is set."""
        async with asyncio.timeout(5):
            while not proxy.servers()[server.name][1] & DRAIN:
                await asyncio.sleep(0.01)

    def seen_while_draining(self, proxy: RunningHAProxy, server: StubServer) -> None:
        return None

    def assert_drained(self, proxy: RunningHAProxy, server: StubServer, seen_while_draining: None) -> None:
        assert proxy.servers()[server.name][1] & MAINT

    def assert_routes_only_to(self, proxy: RunningHAProxy, server: StubServer) -> None:
        in_rotation = [port for port, admin_state in proxy.servers().values() if not admin_state & (MAINT | DRAIN)]
        assert in_rotation == [server.port]


class CaddyFront(_Launched[RunningCaddy]):
    def balancer(self, proxy: RunningCaddy) -> CaddyBalancer:
        return CaddyBalancer(proxy.admin_url, ROUTE)

    admitting_balancer = balancer

    def assert_admitted(self, proxy: RunningCaddy, old: StubServer, new: StubServer) -> None:
        assert proxy.upstreams() == [f"127.0.0.1:{old.port}", f"127.0.0.1:{new.port}"]

    async def until_out_of_rotation(self, proxy: RunningCaddy, server: StubServer) -> None:
        """Caddy publishes no events: poll its admin API (with a deadline) until the upstream left."""
        async with asyncio.timeout(5):
            while f"127.0.0.1:{server.port}" in await asyncio.to_thread(proxy.upstreams):
                await asyncio.sleep(0.01)

    def seen_while_draining(self, proxy: RunningCaddy, server: StubServer) -> Any:
        return proxy.get(f"/id/{ROUTE}{PARKED_SUFFIX}/upstreams")

    def assert_drained(self, proxy: RunningCaddy, server: StubServer, seen_while_draining: Any) -> None:
        assert seen_while_draining == [{"dial": f"127.0.0.1:{server.port}"}]  # where Caddy kept counting it
        assert proxy.get(f"/id/{ROUTE}{PARKED_SUFFIX}") is None  # and the route is as the user wrote it
        assert len(proxy.get(f"/id/{ROUTE}/handle")) == 1

    def assert_routes_only_to(self, proxy: RunningCaddy, server: StubServer) -> None:
        assert proxy.upstreams() == [f"127.0.0.1:{server.port}"]


@pytest.fixture(params=["haproxy", "caddy"])
def front(request: pytest.FixtureRequest) -> Front:
    if request.param == "haproxy":
        return HAProxyFront(request.getfixturevalue("haproxy"))
    return CaddyFront(request.getfixturevalue("caddy"))


def test_attach_then_admit_puts_the_replacement_in_rotation(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, front: Front
) -> None:
    old, new = stubs.start("old1"), stubs.start("new1")
    proxy = front.launch([old])
    balancer = front.admitting_balancer(proxy)

    async def scenario() -> tuple[Counter[str], Counter[str]]:
        await balancer.attach([old.replica])
        before = await who_answers(proxy.url, 4)
        await balancer.admit(new.replica)
        await balancer.admit(new.replica)  # twice is once
        return before, await who_answers(proxy.url, 4)

    before, after = loop.run_until_complete(scenario())
    assert before == {"old1": 4}  # the replacement got nothing before it was admitted
    assert after == {"old1": 2, "new1": 2}  # round robin over both
    front.assert_admitted(proxy, old, new)


def test_drain_stops_new_requests_and_waits_for_the_one_in_flight(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, front: Front
) -> None:
    first, second = stubs.start("one", slow_s=1.0), stubs.start("two", slow_s=1.0)
    proxy = front.launch([first, second])
    balancer = front.balancer(proxy)

    async def scenario() -> tuple[httpx.Response, DrainResult, float, StubServer, Counter[str], Any]:
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
            await front.until_out_of_rotation(proxy, busy)
            during = await who_answers(proxy.url, 6)
            seen = front.seen_while_draining(proxy, busy)
            result = await drain
            return await slow, result, loop.time(), busy, during, seen

    response, result, drained_at, busy, during, seen = loop.run_until_complete(scenario())
    assert response.status_code == 200 and response.text.strip() == busy.name  # finished, not cut
    assert result.sessions_left == 0 and result.complete
    assert busy.slow_finished_at is not None and busy.slow_finished_at <= drained_at
    assert 0.3 <= result.waited_s <= 3  # it waited for the slow answer (1 s), and no longer
    assert busy.name not in during and sum(during.values()) == 6
    front.assert_drained(proxy, busy, seen)


def test_a_drain_that_times_out_returns_the_requests_left(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, front: Front
) -> None:
    server, other = stubs.start("slow", slow_s=1.0), stubs.start("other")
    proxy = front.launch([server])
    balancer = front.balancer(proxy)

    async def scenario() -> tuple[DrainResult, httpx.Response]:
        await balancer.attach([server.replica])
        async with httpx.AsyncClient(timeout=5) as client:
            slow = asyncio.create_task(client.get(proxy.url + "/slow"))
            async with asyncio.timeout(5):
                await server.slow_arrived.wait()
            await balancer.admit(other.replica)
            result = await balancer.drain(server.replica, timeout=0.2)
            return result, await slow

    result, response = loop.run_until_complete(scenario())
    assert result.sessions_left == 1 and not result.complete
    assert 0.2 <= result.waited_s < 0.9
    assert response.status_code == 200  # out of rotation or out of the config: its requests are not cut
    front.assert_routes_only_to(proxy, other)


# -- a rolling swap under load ----------------------------------------------------------------------


async def swap(balancer: Balancer, url: str, olds: list[StubServer], news: list[StubServer]) -> dict[str, Any]:
    """Replace each old server by its new one as the controller does, under 200 requests/s; what the
    probe saw, as JSON-ready values (Caddy's swap reports it from a namespace of its own)."""
    loop = asyncio.get_running_loop()
    await balancer.attach([s.replica for s in olds])
    async with Probe(url + "/", rate=200) as probe:
        await probe.wait_for(lambda r: r.ok >= 50, timeout=5)
        for old, new in zip(olds, news, strict=True):
            await balancer.admit(new.replica)
            drained = await balancer.drain(old.replica, timeout=5)
            assert drained.complete, drained
            old.kill()  # the platform retires the container
            await balancer.forget(old.replica)
            ok = probe.progress().ok
            await probe.wait_for(lambda r, ok=ok: r.ok >= ok + 20, timeout=5)  # traffic flows between steps
        last_old_gone, ok = loop.time(), probe.progress().ok
        await probe.wait_for(lambda r: r.ok >= max(400, ok + 100), timeout=10)
        report = await probe.stop()
    await balancer.close()
    return {"failed": report.failed, "failures": dict(report.failures_by_kind), "gap": report.longest_gap_s,
            "after": dict(report.answers_sent_since(last_old_gone)), "answers": dict(report.answers)}


def _assert_no_request_lost(outcome: dict[str, Any]) -> None:
    assert outcome["failed"] == 0, outcome
    assert set(outcome["after"]) == {"new1", "new2", "new3"}  # once the last old one left, only the new version
    assert {"old1", "old2", "old3"} <= set(outcome["answers"])
    assert outcome["gap"] < 0.5


def _swap_through(front: Front, stubs: StubFarm, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    olds = [stubs.start(f"old{i}") for i in (1, 2, 3)]
    news = [stubs.start(f"new{i}") for i in (1, 2, 3)]
    proxy = front.launch(olds)
    return loop.run_until_complete(swap(front.balancer(proxy), proxy.url, olds, news))


def test_a_rolling_swap_under_load_through_haproxy_loses_no_request(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, haproxy: HAProxyLauncher
) -> None:
    _assert_no_request_lost(_swap_through(HAProxyFront(haproxy), stubs, loop))


def test_a_rolling_swap_under_load_through_caddy_loses_no_request(tmp_path: Path) -> None:
    """It runs in a network namespace of its own, where ``net.ipv4.tcp_migrate_req=1`` can be set
    without touching the host: Caddy rebinds its listener on each config change, and without
    that setting Linux resets the few connections queued on the old one (see ``caddy.py``).
    """
    # ``python -c`` imports from its working directory: the repository root, where ``tests`` is a package.
    root = Path(__file__).resolve().parents[2]
    script = f"from {__name__} import swap_through_caddy; swap_through_caddy({str(tmp_path)!r})"
    setup = 'ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && exec "$0" -c "$1"'
    # A session of its own: if it hangs, the whole group (Caddy included) is killed by its id.
    scenario = subprocess.Popen(["unshare", "--net", "sh", "-c", setup, sys.executable, script],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                cwd=root)
    try:
        out, err = scenario.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(scenario.pid, signal.SIGKILL)
        scenario.wait()
    assert scenario.returncode == 0, out + err
    _assert_no_request_lost(json.loads(out.strip().splitlines()[-1]))


def swap_through_caddy(workdir: str) -> None:
    """The swap itself, in the namespace; prints what the probe saw as one JSON line."""
    loop = asyncio.new_event_loop()
    stubs, launcher = StubFarm(loop), CaddyLauncher(Path(workdir))
    try:
        print(json.dumps(_swap_through(CaddyFront(launcher), stubs, loop)))
    finally:
        launcher.stop_all()
        stubs.close()
        loop.close()
