"""NginxBalancer against a real nginx 1.22 (Debian's) in front of local stub servers (127.0.0.1 only):
the upstream file rewritten and nginx reloaded; a drain that waits for the workers holding an
in-flight request; one reload for an admit and a drain asked for together; attach refusing what
it cannot use (nothing touched); a reload nginx refuses leaving everything as it was."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from rollover.balancers.nginx import NginxBalancer
from rollover.core.model import Replica
from rollover.errors import BalancerUnavailable, PlatformError
from tests.support.http_stubs import StubFarm, StubServer, who_answers
from tests.support.local_nginx import NGINX, NginxFront, upstream_block


class Launcher:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[NginxFront] = []

    def launch(self, servers: Sequence[StubServer], *, keepalive: bool = False) -> NginxFront:
        front = NginxFront(self.workdir / str(len(self.started)), [f"127.0.0.1:{s.port}" for s in servers],
                           keepalive=keepalive)
        self.started.append(front)
        front.start()
        return front


@pytest.fixture
def nginx() -> Iterator[Launcher]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: scripts/setup installs it (a skip would hide it in CI)")
    with tempfile.TemporaryDirectory(prefix="rngx-") as workdir:
        launcher = Launcher(Path(workdir))
        try:
            yield launcher
        finally:
            for front in launcher.started:
                front.stop()


def _balancer(front: NginxFront) -> NginxBalancer:
    return NginxBalancer(str(front.upstream_file), "web", master=front.master)


def test_admit_then_drain_waits_for_the_request_in_flight(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, nginx: Launcher
) -> None:
    old, new = stubs.start("old", slow_s=1.5), stubs.start("new")
    front = nginx.launch([old], keepalive=True)
    balancer = _balancer(front)

    async def scenario() -> tuple[float, int, float | None]:
        await balancer.attach([old.replica])
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(client.get(f"http://127.0.0.1:{front.port}/slow"))
            await asyncio.wait_for(old.slow_arrived.wait(), 5)  # held by the first generation's worker
            await balancer.admit(new.replica)
            assert front.routed() == sorted([f"127.0.0.1:{old.port}", f"127.0.0.1:{new.port}"])
            result = await balancer.drain(old.replica, timeout=10)
            drained_at = loop.time()
            assert result.complete, result
            status = (await slow).status_code
        return drained_at, status, old.slow_finished_at

    drained_at, status, finished_at = loop.run_until_complete(scenario())
    assert status == 200
    assert finished_at is not None and drained_at >= finished_at  # the drain outlasted the request
    assert front.routed() == [f"127.0.0.1:{new.port}"]
    assert loop.run_until_complete(who_answers(front.url, 4)) == {"new": 4}
    front.assert_clean()


def test_an_admit_and_a_drain_asked_together_take_one_reload(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, nginx: Launcher
) -> None:
    old1, old2, new = stubs.start("old1"), stubs.start("old2"), stubs.start("new")
    front = nginx.launch([old1, old2])
    balancer = _balancer(front)

    async def scenario() -> None:
        await balancer.attach([old1.replica, old2.replica])
        await asyncio.gather(balancer.admit(new.replica), balancer.drain(old1.replica, timeout=5))
        assert front.reloads() == 1
        await asyncio.gather(balancer.drain(old2.replica, timeout=5), balancer.forget(old1.replica))
        assert front.reloads() == 2  # forgetting what was drained already changes nothing

    loop.run_until_complete(scenario())
    assert front.routed() == [f"127.0.0.1:{new.port}"]
    assert loop.run_until_complete(who_answers(front.url, 4)) == {"new": 4}


def _attach_error(loop: asyncio.AbstractEventLoop, balancer: NginxBalancer, replicas: list[Replica]) -> str:
    with pytest.raises(BalancerUnavailable) as caught:
        loop.run_until_complete(balancer.attach(replicas))
    return str(caught.value)


def test_attach_refuses_what_it_cannot_use_and_touches_nothing(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, nginx: Launcher
) -> None:
    old = stubs.start("old")
    front = nginx.launch([old])
    original = front.upstream_file.read_text()
    replicas = [old.replica]

    missing = NginxBalancer(str(front.upstream_file.with_name("nope.conf")), "web", master=front.master)
    assert "No such file" in _attach_error(loop, missing, replicas)
    other = NginxBalancer(str(front.upstream_file), "api", master=front.master)
    assert "no 'upstream api" in _attach_error(loop, other, replicas)
    no_master = NginxBalancer(str(front.upstream_file), "web", master=f"pid:{front.workdir}/none.pid")
    assert "master is not running" in _attach_error(loop, no_master, replicas)
    stranger = Replica(id="f" * 64, name="stranger", details=(("published.8080/tcp", "127.0.0.1:1"),))
    assert "points at any of stranger" in _attach_error(loop, _balancer(front), [stranger])

    front.upstream_file.write_text(original.replace("}", "    server 127.0.0.1:2\n}"))  # no ';'
    assert "does not end with ';'" in _attach_error(loop, _balancer(front), replicas)
    # Parsable, but nginx -t refuses it: an unknown directive inside the upstream.
    refused = original.replace("}", "    no_such_directive on;\n}")
    front.upstream_file.write_text(refused)
    assert "nginx -t refuses" in _attach_error(loop, _balancer(front), replicas)
    assert front.upstream_file.read_text() == refused  # put back as it was
    assert front.reloads() == 0


def test_a_refused_reload_leaves_nginx_and_the_file_as_they_were(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, nginx: Launcher
) -> None:
    old, new = stubs.start("old"), stubs.start("new")
    front = nginx.launch([old])
    balancer = _balancer(front)
    loop.run_until_complete(balancer.attach([old.replica]))
    before, workers = front.upstream_file.read_text(), sorted(front.workers())
    config = front.workdir / "nginx.conf"
    config.write_text(config.read_text() + "\nbroken {\n")  # the operator's config breaks meanwhile

    with pytest.raises(PlatformError, match="nginx -t refuses"):
        loop.run_until_complete(balancer.admit(new.replica))

    assert front.upstream_file.read_text() == before
    assert sorted(front.workers()) == workers and front.reloads() == 0
    assert loop.run_until_complete(who_answers(front.url, 3)) == {"old": 3}


def test_a_server_a_killed_rollout_added_for_a_replica_now_gone_is_dropped(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, nginx: Launcher
) -> None:
    """A rollout killed after admitting a replacement, which the takeover removed: its server (marked
    ``# added by rollover``) goes at the next reload; a server of someone else's stays."""
    old, new = stubs.start("old"), stubs.start("new")
    front = nginx.launch([old])
    front.upstream_file.write_text(front.upstream_file.read_text().replace(
        "}", "    server 127.0.0.1:1 max_fails=0; # added by rollover\n    server 127.0.0.1:2 max_fails=0;\n}"))
    balancer = _balancer(front)

    async def scenario() -> None:
        await balancer.attach([old.replica])
        await balancer.admit(new.replica)

    loop.run_until_complete(scenario())
    assert front.routed() == sorted(["127.0.0.1:2", f"127.0.0.1:{old.port}", f"127.0.0.1:{new.port}"])


def test_a_file_a_killed_rollout_wrote_but_never_reloaded_is_reloaded_before_the_drain_ends(
    loop: asyncio.AbstractEventLoop, stubs: StubFarm, nginx: Launcher
) -> None:
    """A rollout SIGKILLed between writing the file without ``old`` and reloading: nginx still sends
    to ``old``. The next rollout's drain of it (no server in the file) reloads once, and ends when
    the workers that ran the older file have exited: only then may ``old`` stop."""
    old, other = stubs.start("old"), stubs.start("other")
    front = nginx.launch([old, other])
    front.upstream_file.write_text(upstream_block([f"127.0.0.1:{other.port}"], keepalive=False))
    assert loop.run_until_complete(who_answers(front.url, 6))["old"] > 0  # nginx runs the older file
    balancer = _balancer(front)

    async def scenario() -> None:
        await balancer.attach([old.replica, other.replica])
        result = await balancer.drain(old.replica, timeout=10)
        assert result.complete, result

    loop.run_until_complete(scenario())
    assert front.reloads() == 1
    assert loop.run_until_complete(who_answers(front.url, 6)) == {"other": 6}
