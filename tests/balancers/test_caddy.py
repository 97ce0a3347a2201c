"""CaddyBalancer against a real Caddy 2.6 in front of local stub servers (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollover.balancers.caddy import PARKED_SUFFIX, CaddyBalancer
from rollover.core.model import Replica
from rollover.errors import BalancerUnavailable, InvalidOption
from rollover.probe.open_loop import Probe
from tests.support.http_stubs import StubFarm, StubServer, closed_port

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
ROUTE = "app"


@dataclass
class RunningCaddy:
    admin_url: str
    url: str

    def get(self, path: str) -> Any:
        """The admin API's answer, for assertions (the code under test speaks asyncio)."""
        response = httpx.get(self.admin_url + path, timeout=5)
        return response.json() if response.status_code == 200 else None

    def upstreams(self) -> list[str]:
        return [u["dial"] for u in self.get(f"/id/{ROUTE}/handle/0/upstreams")]


class CaddyLauncher:
    """Caddy processes in the foreground, each with its own home; killed by handle at the end."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._processes: list[subprocess.Popen[bytes]] = []

    def launch(self, servers: Sequence[StubServer]) -> RunningCaddy:
        instance = self._workdir / str(len(self._processes))
        instance.mkdir()
        admin, port = closed_port(), closed_port()
        config = instance / "caddy.json"
        config.write_text(json.dumps(_config(admin, port, [f"127.0.0.1:{s.port}" for s in servers])))
        home = {"HOME": str(instance), "XDG_CONFIG_HOME": str(instance), "XDG_DATA_HOME": str(instance)}
        with (instance / "caddy.log").open("wb") as sink:
            self._processes.append(subprocess.Popen(
                [CADDY, "run", "--config", str(config)], stdout=sink, stderr=subprocess.STDOUT, env=home
            ))
        running = RunningCaddy(f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{port}")
        self._wait_until_answering(running, self._processes[-1], instance / "caddy.log")
        return running

    @staticmethod
    def _wait_until_answering(caddy: RunningCaddy, process: subprocess.Popen[bytes], log: Path) -> None:
        """Caddy announces readiness only in its log: ask the admin API (deadline 10 s)."""
        async def ready() -> None:
            async with asyncio.timeout(10), httpx.AsyncClient() as client:
                while process.poll() is None:
                    try:
                        if (await client.get(caddy.admin_url + "/config/")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.02)
            raise AssertionError(f"caddy exited: {log.read_text()}")

        asyncio.run(ready())

    def stop_all(self) -> None:
        for process in self._processes:
            process.kill()
            process.wait(timeout=10)


def _config(admin: int, port: int, dials: list[str]) -> dict[str, Any]:
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial} for dial in dials],
        "load_balancing": {"selection_policy": {"policy": "round_robin"}},
    }
    server = {"listen": [f"127.0.0.1:{port}"], "routes": [{"@id": ROUTE, "handle": [proxy]}],
              "automatic_https": {"disable": True}}
    return {"admin": {"listen": f"127.0.0.1:{admin}", "config": {"persist": False}},
            "apps": {"http": {"servers": {"web": server}}}}


@pytest.fixture
def caddy() -> Iterator[CaddyLauncher]:
    if not Path(CADDY).exists():
        pytest.fail("caddy is not installed: apt-get install -y caddy (a skip would hide it in CI)")
    with tempfile.TemporaryDirectory(prefix="rollover-caddy-") as workdir:
        launcher = CaddyLauncher(Path(workdir))
        try:
            yield launcher
        finally:
            launcher.stop_all()


def _balancer(proxy: RunningCaddy) -> CaddyBalancer:
    return CaddyBalancer(proxy.admin_url, ROUTE)


async def _answers(url: str, count: int) -> Counter[str]:
    """Who answers ``count`` sequential requests through the proxy (a new connection each)."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return Counter([(await client.get(url)).text.strip() for _ in range(count)])


async def _until(condition: Any, timeout: float = 5) -> None:
    """Caddy publishes no events: poll its admin API (with a deadline) until ``condition()``."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.01)


def test_attach_then_admit_puts_the_replacement_in_rotation(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, caddy: CaddyLauncher
) -> None:
    old, new = stubs.start("old1"), stubs.start("new1")
    proxy = caddy.launch([old])
    balancer = _balancer(proxy)

    async def scenario() -> tuple[Counter[str], Counter[str]]:
        await balancer.attach([old.replica])
        before = await _answers(proxy.url, 4)
        await balancer.admit(new.replica)
        await balancer.admit(new.replica)  # twice is once
        return before, await _answers(proxy.url, 4)

    before, after = loop.run_until_complete(scenario())
    assert before == {"old1": 4}  # the replacement got nothing before it was admitted
    assert after == {"old1": 2, "new1": 2}
    assert proxy.upstreams() == [f"127.0.0.1:{old.port}", f"127.0.0.1:{new.port}"]


def test_drain_stops_new_requests_and_waits_for_the_one_in_flight(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, caddy: CaddyLauncher
) -> None:
    first, second = stubs.start("one", slow_s=1.0), stubs.start("two", slow_s=1.0)
    proxy = caddy.launch([first, second])
    balancer = _balancer(proxy)

    async def scenario() -> tuple[httpx.Response, Any, float, StubServer, Counter[str], Any]:
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
            await _until(lambda: f"127.0.0.1:{busy.port}" not in proxy.upstreams())
            during = await _answers(proxy.url, 6)
            parked_during = proxy.get(f"/id/{ROUTE}{PARKED_SUFFIX}/upstreams")
            result = await drain
            return await slow, result, loop.time(), busy, during, parked_during

    response, result, drained_at, busy, during, parked_during = loop.run_until_complete(scenario())
    assert response.status_code == 200 and response.text.strip() == busy.name  # finished, not cut
    assert result.sessions_left == 0 and result.complete
    assert busy.slow_finished_at is not None and busy.slow_finished_at <= drained_at
    assert 0.3 <= result.waited_s <= 3  # it waited for the slow answer (1 s), and no longer
    assert busy.name not in during and sum(during.values()) == 6
    assert parked_during == [{"dial": f"127.0.0.1:{busy.port}"}]  # where Caddy kept counting it
    assert proxy.get(f"/id/{ROUTE}{PARKED_SUFFIX}") is None  # and the route is as the user wrote it
    assert len(proxy.get(f"/id/{ROUTE}/handle")) == 1


def test_a_drain_that_times_out_returns_the_requests_left(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, caddy: CaddyLauncher
) -> None:
    server, other = stubs.start("slow", slow_s=1.0), stubs.start("other")
    proxy = caddy.launch([server])
    balancer = _balancer(proxy)

    async def scenario() -> tuple[Any, httpx.Response]:
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
    assert response.status_code == 200  # taking it out of the config does not cut its requests
    assert proxy.upstreams() == [f"127.0.0.1:{other.port}"]


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
        return after_forget, await _answers(proxy.url, 4)

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


def test_a_rolling_swap_under_load_loses_no_request(tmp_path: Path) -> None:
    """Three replicas replaced one by one under 200 requests/s through Caddy.

    It runs in a network namespace of its own, where ``net.ipv4.tcp_migrate_req=1`` can be set
    without touching the host: Caddy rebinds its listener on each config change, and without
    that setting Linux resets the few connections queued on the old one (see ``caddy.py``).
    """
    # ``python -c`` imports from its working directory: the repository root, where ``tests`` is a package.
    root = Path(__file__).resolve().parents[2]
    script = f"from tests.balancers.test_caddy import swap_under_load; swap_under_load({str(tmp_path)!r})"
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
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["failed"] == 0, outcome
    assert set(outcome["after"]) == {"new1", "new2", "new3"}  # once the last old one left, only the new version
    assert {"old1", "old2", "old3"} <= set(outcome["answers"])
    assert outcome["gap"] < 0.5


def swap_under_load(workdir: str) -> None:
    """The swap itself, in the namespace; prints what the probe saw as one JSON line."""
    loop = asyncio.new_event_loop()
    stubs, launcher = StubFarm(loop), CaddyLauncher(Path(workdir))
    try:
        olds = [stubs.start(f"old{i}") for i in (1, 2, 3)]
        news = [stubs.start(f"new{i}") for i in (1, 2, 3)]
        proxy = launcher.launch(olds)
        print(json.dumps(loop.run_until_complete(_swap(_balancer(proxy), proxy, olds, news))))
    finally:
        launcher.stop_all()
        stubs.close()
        loop.close()


async def _swap(
    balancer: CaddyBalancer, proxy: RunningCaddy, olds: list[StubServer], news: list[StubServer]
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    await balancer.attach([s.replica for s in olds])
    async with Probe(proxy.url + "/", rate=200) as probe:
        await probe.wait_for(lambda r: r.ok >= 50, timeout=5)
        for old, new in zip(olds, news, strict=True):  # what the controller does, replica by replica
            await balancer.admit(new.replica)
            drained = await balancer.drain(old.replica, timeout=5)
            assert drained.complete, drained
            old.kill()  # the platform retires the container
            await balancer.forget(old.replica)
            ok = probe.progress().ok
            await probe.wait_for(lambda r, ok=ok: r.ok >= ok + 20, timeout=5)  # traffic flows between steps
        last_old_gone, ok = loop.time(), probe.progress().ok
        await probe.wait_for(lambda r: r.ok >= ok + 100, timeout=10)
        report = await probe.stop()
    await balancer.close()
    return {"failed": report.failed, "failures": dict(report.failures_by_kind), "gap": report.longest_gap_s,
            "after": dict(report.answers_sent_since(last_old_gone)), "answers": dict(report.answers)}
