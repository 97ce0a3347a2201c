"""Pieces of the zero-downtime proof: a Compose service behind a balancer (HAProxy from
``haproxy_front``, shared with the Swarm tests; Caddy and Traefik from ``fronts``), an independent
load client, ``rollover redeploy`` run as a real process (its JSON read back), and the proof itself
for any balancer in front.

HAProxy lives on 127.0.0.1: it binds a free loopback port, the replicas publish their container
port 8080 on random loopback host ports. The load clients only ever talk to the balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.engine import APP_V2, ComposeProject, loopback_endpoints, service_containers
from tests.support.event_schema import assert_valid_events
from tests.support.fronts import network_addresses

_VENV_ROLLOVER = Path(sys.executable).with_name("rollover")  # the venv's console script
ROLLOVER = str(_VENV_ROLLOVER) if _VENV_ROLLOVER.exists() else shutil.which("rollover") or "rollover"

REPLICAS = 6
RANDOM_LOOPBACK_PORT = "127.0.0.1::8080"  # each replica gets its own random host port on loopback
PROBE_RATE = 200.0  # requests per second through the balancer: the "at least 200"
# The independent client is a witness, not the load (the probe's 200/s is): at 100/s on top, the
# 2-core machine ran short of CPU while 3 replacements started at once (Traefik, start-first, step
# half: the probe fell behind its schedule, "overload", while no request failed).
CLIENT_RATE = 40.0  # the independent client's own requests/s, on top of the probe's 200
AFTER_EXIT = 40  # requests the independent client must have answered that were sent after the exit (~1 s)

# The matrix: start-first and stop-first, step 1, 2 and half, for every balancer.
MATRIX = [
    pytest.param(order, step, id=f"{order}-step-{step}")
    for order in ("start-first", "stop-first") for step in ("1", "2", "half")
]
# The whole matrix runs for HAProxy in the suite; for the other balancers the suite runs the cells
# given (each proof costs 15-40 s) and ``python -m bench.balancer_matrix`` runs all six
# (ROLLOVER_FULL_MATRIX=1).
FULL_MATRIX = os.environ.get("ROLLOVER_FULL_MATRIX") == "1"


def suite_cells(ids: set[str]) -> list[Any]:
    """The matrix's cells named by ``ids`` (all six with ROLLOVER_FULL_MATRIX=1)."""
    return [cell for cell in MATRIX if FULL_MATRIX or cell.id in ids]


def zd_name(kind: str) -> str:
    """Everything this suite makes is named ``rtest-zd-...`` (other suites share the engine)."""
    return f"rtest-zd-{kind}-{uuid.uuid4().hex[:8]}"


# --- an independent load client -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    sent_at: float  # this process's monotonic clock (asyncio's loop.time())
    ok: bool
    answer: str  # the body's first line when ok, else the failure kind


class LoadClient:
    """Open-loop GETs on a fixed schedule, a new connection each, on raw asyncio streams.

    Independent of rollover's own probe (no httpx, no shared code), and cheap enough to run beside
    it on two cores. A late event loop sends every request that fell due, so the rate holds. Its
    timeout (5 s) is longer than the probe's (2 s): it counts errors and wrong answers, while
    rollover's probe stays the strict judge of slowness.
    """

    def __init__(self, port: int, path: str = "/version.txt", rate: float = 100.0, timeout: float = 5.0,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.path = path
        self.rate = rate
        self.timeout = timeout
        self.samples: list[Sample] = []
        self.sent = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._scheduler = asyncio.create_task(self._schedule())

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        due = loop.time()
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            while due <= now:  # every request that fell due, even when the loop was late
                self.sent += 1
                task = asyncio.create_task(self._one(now))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                due += interval

    async def _one(self, sent_at: float) -> None:
        request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode()
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(request)
                await writer.drain()
                reply = await reader.read()
        except TimeoutError:
            self._record(Sample(sent_at, False, "timeout"))
            return
        except ConnectionRefusedError:
            self._record(Sample(sent_at, False, "connect"))
            return
        except OSError as exc:
            self._record(Sample(sent_at, False, f"error:{type(exc).__name__}"))
            return
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        head, _, body = reply.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if status == 200:
            self._record(Sample(sent_at, True, body.decode(errors="replace").split("\n", 1)[0].strip()))
        else:
            self._record(Sample(sent_at, False, f"status-{status}" if status else "malformed"))

    def _record(self, sample: Sample) -> None:
        self.samples.append(sample)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, condition: Callable[[list[Sample]], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self.samples):
                await self._changed.wait()

    async def stop(self) -> list[Sample]:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        return sorted(self.samples, key=lambda s: s.sent_at)


def answers(samples: Iterable[Sample]) -> Counter[str]:
    return Counter(s.answer if s.ok else f"!{s.answer}" for s in samples)


# --- wrk's report ---------------------------------------------------------------------------


def wrk_figures(output: str) -> dict[str, float]:
    """Requests/s, requests, non-2xx responses and socket errors from wrk's report."""
    figures: dict[str, float] = {"non_2xx": 0, "socket_errors": 0, "read_errors": 0, "connect_write_timeout_errors": 0}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)  # "in 800.48ms", "25.51s", "1.05m"
    assert rate and total, output
    figures["rate"], figures["requests"] = float(rate.group(1)), float(total.group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        figures["non_2xx"] = float(non_2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors:
        connect, read, write, timeout = (int(n) for n in errors.groups())
        figures["socket_errors"] = float(connect + read + write + timeout)
        figures["read_errors"] = float(read)
        figures["connect_write_timeout_errors"] = float(connect + write + timeout)
    return figures


# --- rollover as a process --------------------------------------------------------------------


@dataclass
class RolloverRun:
    exit_code: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str
    started_at: float  # loop time just before the process was started
    exited_at: float  # loop time when its exit was seen (after the real exit)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def probe(self) -> dict[str, Any]:
        return dict(self.summary.get("probe") or {})

    def latest(self, *kinds: str) -> float | None:
        """Our loop time at or after which the last event of these kinds had surely happened.

        The JSON ``t`` counts from the rollout's start, which is unknown here but lies at most
        ``summary.t`` before the exit: start <= exited_at - summary.t. Adding an event's ``t`` to
        that upper bound gives a moment no earlier than the event: conservative for "after".
        """
        times = [event["t"] for event in self.events if event.get("event") in kinds]
        if not times or not self.summary:
            return None
        return self.exited_at - float(self.summary["t"]) + max(times)

    def describe(self) -> str:
        return f"exit {self.exit_code}\nstdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"


async def run_rollover(args: Sequence[str], timeout: float = 150.0) -> RolloverRun:
    loop = asyncio.get_running_loop()
    started = loop.time()
    process = await asyncio.create_subprocess_exec(
        ROLLOVER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:  # timed out or cancelled: never leave it running
            process.kill()
            await process.wait()
    exited = loop.time()
    events = []
    for line in out.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    run = RolloverRun(int(process.returncode or 0), events, out.decode(errors="replace"),
                      err.decode(errors="replace"), started, exited)
    assert_valid_events(events)
    run.summary = next((e for e in reversed(events) if e.get("event") == "summary"), {})
    return run


# --- the proof, for any balancer in front --------------------------------------------------------


class Front(Protocol):
    """The balancer in front of the service, as the proof sees it."""

    host: str  # where clients connect (127.0.0.1, or a container the test made)
    port: int
    balancer_address: str  # rollover's --balancer-address: how the balancer reaches a replica

    @property
    def url(self) -> str: ...

    @property
    def spec(self) -> str: ...

    def routed(self) -> list[str]:
        """``host:port`` of what it sends new requests to, sorted."""
        ...

    def describe(self) -> str: ...

    def assert_clean(self) -> None:
        """Its own account of the requests shows nothing lost on the server side."""


@dataclass
class ZdProject(ComposeProject):
    """A Compose project that remembers its compose options, so v2 is written as v1 was."""

    options: dict[str, Any] = field(default_factory=dict)

    def write_version(self, image: str) -> None:
        self.write(image, replicas=REPLICAS, **self.options)


class ProbeFellBehind(AssertionError):
    """rollover's probe sent fewer than 90 % of its --probe-rate: it shares rollover's event loop,
    and on a starved machine it falls behind (README: the probe's own cost)."""


def endpoints(client: Any, project: str, balancer_address: str) -> list[str]:
    """Where a balancer must send to reach the running replicas, in its address mode, sorted."""
    if balancer_address == "published":
        return loopback_endpoints(client, project)
    return network_addresses(client, project, balancer_address.removeprefix("network:"))


def redeploy_args(project: ComposeProject, front: Front, *extra: str, balancer: bool = True,
                  probe_rate: float = PROBE_RATE) -> list[str]:
    args = ["redeploy", "web", "--project", project.name, "--probe", front.url,
            "--probe-rate", f"{probe_rate:g}", "--output", "json", *extra]
    if balancer:
        args += ["--balancer", front.spec, "--balancer-address", front.balancer_address]
    return args


async def roll_under_load(project: ZdProject, args: Sequence[str], front: Front) -> tuple[RolloverRun, list[Sample]]:
    """Run rollover while the independent client sends; the client goes on after the exit until
    AFTER_EXIT requests sent after it were answered (deadline 20 s)."""
    project.write_version(APP_V2)
    client = LoadClient(front.port, rate=CLIENT_RATE, host=front.host)
    await client.start()
    try:
        run = await run_rollover(args)
        await client.wait_for(lambda samples: sum(s.sent_at >= run.exited_at for s in samples) >= AFTER_EXIT,
                              timeout=20)
    finally:
        samples = await client.stop()
    return run, samples


def report(name: str, run: RolloverRun, samples: list[Sample], front: Front) -> None:
    probe = run.probe
    duration = float(run.summary.get("duration_s") or 0)
    failed = [s for s in samples if not s.ok]
    print(
        f"\nZD {name}: exit {run.exit_code}, {duration:.1f}s, probe sent {probe.get('sent')}"
        f" ({(probe.get('sent') or 0) / max(duration, 1e-9):.0f}/s) failed {probe.get('failed')}"
        f" {probe.get('failures_by_kind')} longest gap {probe.get('longest_gap_s')}s answers {probe.get('answers')};"
        f" client sent {len(samples)} failed {len(failed)} {answers(failed)}; {front.describe()}"
    )


def v2_replicas(docker_client: Any, project: ComposeProject, images: dict[str, str]) -> list[str]:
    containers = service_containers(docker_client, project.name)
    assert all(c.status == "running" for c in containers), [(c.name, c.status) for c in containers]
    return [c.name for c in containers if c.image.id == images[APP_V2]]


def assert_only_v2_after(samples: list[Sample], moment: float | None, what: str, least: int) -> None:
    assert moment is not None, f"no moment for {what}"
    after = [s for s in samples if s.sent_at >= moment]
    assert len(after) >= least, f"only {len(after)} requests sent after {what}"
    assert answers(after) == {"v2": len(after)}, f"answers to requests sent after {what}: {answers(after)}"


def assert_no_request_lost(run: RolloverRun, samples: list[Sample], front: Front, project: ComposeProject,
                           docker_client: Any, images: dict[str, str]) -> None:
    """The issue's claim for one rollout: 0 failed requests, every replica on v2 and the balancer
    sending to exactly those, and only v2 answers once the last replacement was up."""
    assert run.exit_code == 0, run.describe()
    assert run.summary["replaced"] == REPLICAS
    front.assert_clean()  # the balancer's own account first: it does not depend on any client's CPU share
    # Every replica is the new version, and the balancer sends to exactly those replicas.
    assert len(v2_replicas(docker_client, project, images)) == REPLICAS
    assert front.routed() == endpoints(docker_client, project.name, front.balancer_address)
    # The clients' account: no failed request at all (the probe's timeout is 2 s). A request the
    # probe did not send ("overload": its own loop, starved of CPU on 2 cores, had 600 requests in
    # flight) never reached the balancer: it counts as not sent, and the rate checks below count
    # only what was sent.
    probe = run.probe
    overload = probe["failures_by_kind"].get("overload", 0)
    assert probe["failed"] == overload, f"{probe}; {front.describe()}"
    sent = probe["sent"] - overload
    client_failures = [s for s in samples if not s.ok]
    assert not client_failures, f"the independent client saw {answers(client_failures)}; {front.describe()}"
    # After the last replacement was up and the last old replica drained (mapped conservatively
    # onto our clock), and surely after rollover exited, only v2 answers.
    assert_only_v2_after(samples, run.latest("up", "drained"), "the last replacement was up and drained", 1)
    assert_only_v2_after(samples, run.exited_at, "rollover exited", AFTER_EXIT)
    # The load was the issue's: at least 200 requests/s through the balancer, the whole rollout:
    # the probe's and the independent client's requests (both only ever talk to the balancer).
    duration = float(run.summary["duration_s"])
    started = run.exited_at - float(run.summary["t"])  # an upper bound of the rollout's start
    client_during = sum(started <= s.sent_at <= started + duration for s in samples)
    assert sent + client_during >= PROBE_RATE * duration * 0.9, (
        f"only {sent} + {client_during} requests in {duration}s ({overload} not sent: overload)"
    )
    # And the probe alone, over the time it ran: it starts once rollover has attached to the
    # balancer, up to a second into the rollout (its first request's 100 ms in the summary's
    # series). Last, because on a loaded machine it may fall short.
    running = duration - probe_started_s(probe)
    if sent < PROBE_RATE * running * 0.9:
        raise ProbeFellBehind(f"the probe sent {sent} in the {running:.2f}s it ran at --probe-rate {PROBE_RATE:g}"
                              f" ({overload} not sent: overload)")


def probe_started_s(probe: dict[str, Any]) -> float:
    """When the probe sent its first request, from the plan: the first 100 ms of its series with one.
    Series ok [0, 0, 3, 20], failed {} with buckets of 0.1 s -> 0.2."""
    series = probe["series"]
    columns = [series["ok"], *series["failed"].values()]
    busy = [index for index in range(len(series["ok"])) if any(column[index] for column in columns)]
    return float(series["bucket_s"]) * (busy[0] if busy else 0)


def prove_rollout(order: str, step: str, project: ZdProject, front: Front, docker_client: Any,
                  images: dict[str, str]) -> RolloverRun:
    """Roll ``project`` to v2 through ``front`` under load, report it, and assert the proof."""
    args = redeploy_args(project, front, "--order", order, "--step", step)
    run, samples = asyncio.run(roll_under_load(project, args, front))
    report(f"{type(front).__name__} {order} step {step}", run, samples, front)
    assert_no_request_lost(run, samples, front, project, docker_client, images)
    return run


@contextlib.contextmanager
def wrk_running(url: str) -> Iterator[dict[str, Any]]:
    """wrk (keep-alive, closed loop, 8 connections, 2 s timeout) against ``url`` for the block; on
    leaving, it is interrupted (it prints its figures then) and the dict holds ``output`` and
    ``figures`` (``wrk_figures``)."""
    report: dict[str, Any] = {}
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d300s", "--timeout", "2s", url],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield report
    finally:
        wrk.send_signal(signal.SIGINT)  # wrk prints its figures when interrupted
        try:
            output, _ = wrk.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            wrk.kill()
            output, _ = wrk.communicate()
        report["output"] = output
    report["figures"] = wrk_figures(output)


def roll_under_wrk(project: ZdProject, args: Sequence[str], front: Front
                   ) -> tuple[RolloverRun, list[Sample], str, dict[str, float]]:
    """``roll_under_load`` with wrk (``wrk_running``) hammering the front for the whole rollout:
    the run, the probe's samples, wrk's output and its figures."""
    with wrk_running(front.url) as wrk:
        run, samples = asyncio.run(roll_under_load(project, args, front))
    return run, samples, wrk["output"], wrk["figures"]
