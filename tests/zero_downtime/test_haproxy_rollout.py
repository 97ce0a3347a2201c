"""The zero-downtime proof: rolling 6 real replicas behind a real HAProxy under steady load.

Each test starts ``web`` (6 replicas of app:v1, random 127.0.0.1 ports) and an HAProxy whose
backend has one server per replica plus 8 spare slots, switches the compose file to v2 and runs
``rollover redeploy`` as a process, with its own probe at 200 requests/s through HAProxy. Beside
it an independent client (raw sockets, no shared code) sends its own steady stream and keeps
going after rollover exits.

With the HAProxy integration every order and step must give 0 failed requests, every replica on
v2, HAProxy's servers in rotation exactly the v2 replicas, no retry or redispatch needed by
HAProxy, and only v2 answers once the last old replica was drained. The controls run the same
rollout without the integration and must fail: proof that these tests can fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from rollover.probe.open_loop import Probe
from tests.support.haproxy_front import HAProxy
from tests.support.zero_downtime import (
    MATRIX,
    PROBE_RATE,
    REPLICAS,
    ProbeFellBehind,
    ZdProject,
    prove_rollout,
    redeploy_args,
    report,
    roll_under_load,
    roll_under_wrk,
    v2_replicas,
)

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(("order", "step"), MATRIX)
def test_rollout_through_haproxy_loses_no_request(
    order: str, step: str, service: ZdProject, haproxy_for: Callable[..., HAProxy], docker_client: Any,
    app_images: dict[str, str],
) -> None:
    prove_rollout(order, step, service, haproxy_for(service), docker_client, app_images)


def test_wrk_sees_no_error_during_a_start_first_step_2_rollout(
    service: ZdProject, haproxy_for: Callable[..., HAProxy], docker_client: Any, app_images: dict[str, str],
) -> None:
    """wrk (keep-alive, closed loop, 8 connections) hammers the frontend for the whole rollout.

    The probe runs too, at 50/s: wrk is the load here and both share two cores with the engine.
    """
    proxy = haproxy_for(service)
    args = redeploy_args(service, proxy, "--order", "start-first", "--step", "2", probe_rate=50)
    run, samples, output, figures = roll_under_wrk(service, args, proxy)
    report("wrk start-first step 2", run, samples, proxy)
    print(f"ZD wrk: {figures}")

    assert run.exit_code == 0, run.describe()
    proxy.assert_clean()
    assert figures["non_2xx"] == 0 and figures["socket_errors"] == 0, output
    # The proof needs real load, not a rate: a loaded machine lowers wrk's, and any rollout here
    # lasts seconds while wrk answers thousands of requests a second through HAProxy.
    assert figures["requests"] >= 1000, output
    assert run.probe["failed"] == 0, run.probe
    assert not [s for s in samples if not s.ok]
    assert len(v2_replicas(docker_client, service, app_images)) == REPLICAS


def test_control_without_the_balancer_loses_requests(
    service: ZdProject, haproxy_for: Callable[..., HAProxy], docker_client: Any, app_images: dict[str, str],
) -> None:
    """The same start-first step-1 rollout, but HAProxy's config stays static (the old replicas'
    ports) and rollover is not told about it: the probe must see failures."""
    proxy = haproxy_for(service)
    args = redeploy_args(service, proxy, "--order", "start-first", "--step", "1", balancer=False)

    run, samples = asyncio.run(roll_under_load(service, args, proxy))
    report("control: start-first step 1, no balancer", run, samples, proxy)

    assert run.exit_code == 0, run.describe()  # the rollout itself succeeds...
    assert len(v2_replicas(docker_client, service, app_images)) == REPLICAS
    assert run.probe["failed"] > 0, run.probe  # ...but the clients pay for it


def test_control_stop_first_with_haproxy_health_checks_loses_requests(
    service: ZdProject, haproxy_for: Callable[..., HAProxy], docker_client: Any, app_images: dict[str, str],
) -> None:
    """A more realistic operator: HAProxy health-checks every server (``check inter 500``) and
    retries/redispatches, but nobody tells it about the replacements; stop-first, step 1."""
    proxy = haproxy_for(service, check=True)
    args = redeploy_args(service, proxy, "--order", "stop-first", "--step", "1", balancer=False)

    run, samples = asyncio.run(roll_under_load(service, args, proxy))
    report("control: stop-first step 1, no balancer, health checks", run, samples, proxy)

    assert run.exit_code == 0, run.describe()
    assert len(v2_replicas(docker_client, service, app_images)) == REPLICAS
    assert run.probe["failed"] > 0, run.probe


def test_the_probe_keeps_its_rate_on_a_busy_loop() -> None:
    """rollover's Probe promises an open loop: "a late loop catches up instead of sending less".

    Here the loop is busy 20 ms at a time (as on a loaded machine, or with many requests in
    flight): at 200/s, 4 requests fall due per busy spell, and the probe must still send them.
    Only loopback: a tiny local HTTP server answers.
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nv1\n")
        await writer.drain()
        writer.close()

    async def busy_loop() -> None:
        while True:
            time.sleep(0.02)  # holds the event loop, like a slow callback would
            await asyncio.sleep(0)

    async def scenario() -> tuple[int, float]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        probe = Probe(f"http://127.0.0.1:{port}/", rate=PROBE_RATE)
        hog = asyncio.create_task(busy_loop())
        started = loop.time()
        await probe.start()
        await asyncio.sleep(2)
        sending = loop.time() - started  # the probe sends until stop() is called
        report = await probe.stop()
        hog.cancel()
        server.close()
        return report.sent, sending

    sent, duration = asyncio.run(scenario())
    print(f"\nZD probe on a busy loop: sent {sent} in {duration:.2f}s at rate {PROBE_RATE:g}")
    # A probe that sends whatever fell due at each wake-up gets ~95 % here; this one gets ~20 %.
    if sent < PROBE_RATE * duration * 0.75:
        raise ProbeFellBehind(f"sent {sent} in {duration:.2f}s, expected about {PROBE_RATE * duration:.0f}")
