"""Running ``rollover redeploy --platform swarm`` as a user does (the console script, JSON output)
against the suite's swarms, and reading back what the swarm shows."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from rollover.backends.swarm.lock import lock_name
from tests.support.event_schema import assert_valid_events
from tests.support.haproxy_front import HAProxy
from tests.support.swarm import SwarmCluster, running_tasks, task_endpoints, wait_for

ROLLOVER = Path(sys.executable).with_name("rollover")  # the console script of the venv running pytest
RUN_TIMEOUT_S = 180  # generous: 2 cores, other suites running; a rollout here takes 10-40 s


# -- running the CLI -------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    wall_s: float = 0.0

    @property
    def events(self) -> list[dict[str, Any]]:
        events = [json.loads(line) for line in self.stdout.splitlines() if line.strip()]
        assert_valid_events(events)
        return events

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == kind]

    @property
    def summary(self) -> dict[str, Any]:
        last = self.events[-1] if self.events else {}
        assert last.get("event") == "summary", f"the last JSON line is not the summary\n{self}"
        return last

    @property
    def plan(self) -> dict[str, Any]:
        first = self.events[0]
        assert first["event"] == "plan", str(self)
        return first

    def __str__(self) -> str:
        return f"exit {self.code} after {self.wall_s:.1f}s\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    __repr__ = __str__  # an assertion message shows it all, not a dataclass repr cut short


def cli_env(cluster: SwarmCluster) -> dict[str, str]:
    """The caller's environment without ROLLOVER_*/TUTUM_* settings, DOCKER_HOST at the manager."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ROLLOVER_", "TUTUM_"))}
    env["DOCKER_HOST"] = cluster.manager
    return env


def cli_args(cluster: SwarmCluster, service: str, *extra: str, platform: str = "swarm") -> list[str]:
    nodes = ",".join(f"{hostname}={host}" for hostname, host in sorted(cluster.hosts.items()))
    return [str(ROLLOVER), "redeploy", service, "--platform", platform, "--swarm-nodes", nodes,
            "--output", "json", *extra]


def rollover(cluster: SwarmCluster, service: str, *extra: str, platform: str = "swarm") -> Outcome:
    assert ROLLOVER.exists(), f"the console script {ROLLOVER} is not installed"
    started = time.monotonic()
    done = subprocess.run(cli_args(cluster, service, *extra, platform=platform), env=cli_env(cluster),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


# -- what the swarm shows --------------------------------------------------------------------------


def images_running(cluster: SwarmCluster, service: str) -> list[str]:
    return sorted(task["Spec"]["ContainerSpec"]["Image"] for task in running_tasks(cluster, service))


def answers(endpoints: list[tuple[str, int]]) -> list[str]:
    """What each task says it is: GET /version.txt on its published host port (at its node)."""
    said = []
    for host, port in endpoints:
        with urllib.request.urlopen(f"http://{host}:{port}/version.txt", timeout=10) as answer:
            said.append(answer.read().decode().strip())
    return sorted(said)


def service_spec(cluster: SwarmCluster, service: str) -> dict[str, Any]:
    return dict(cluster.client.api.inspect_service(service))


def assert_handed_back(cluster: SwarmCluster, service: str, image: str) -> None:
    """The spec names ``image``, no update is held, and rollover's request label is gone."""
    document = service_spec(cluster, service)
    spec = document["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == image
    assert not [key for key in spec.get("Labels") or {} if key.startswith("rollover.")], spec.get("Labels")
    assert (spec.get("UpdateConfig") or {}).get("Delay", 0) < 10**12  # not rollover's one-year hold
    # The hand-back is a spec change too: Swarm's orchestrator runs its updater for it a moment
    # later, finds every task on the spec and marks the update completed (seen 'updating' right
    # after rollover exited, on a loaded CI machine). It must get there, and by itself.
    wait_for(lambda: (service_spec(cluster, service).get("UpdateStatus") or {}).get("State") != "updating",
             30, f"Swarm to mark {service}'s update finished")


def lock_held(cluster: SwarmCluster, service: str) -> bool:
    try:
        cluster.client.api.inspect_config(lock_name(service))
    except docker.errors.NotFound:
        return False
    return True


def assert_serving(cluster: SwarmCluster, service: str, replicas: int, image: str, outcome: Outcome) -> None:
    try:
        wait_for(lambda: images_running(cluster, service) == [image] * replicas, 30, f"{replicas} tasks of {image}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; running: {images_running(cluster, service)}\n{outcome}") from None


def first(kind: str) -> Callable[[dict[str, Any]], bool]:
    """The ``at`` of ``rollover_acting_at``: the first JSON event of this kind."""
    return lambda event: event["event"] == kind


def rollover_acting_at(cluster: SwarmCluster, service: str, *extra: str,
                       at: Callable[[dict[str, Any]], bool],
                       act: Callable[[subprocess.Popen[str]], None]) -> tuple[Outcome, dict[str, Any]]:
    """Run the CLI and ``act`` on the process at the first JSON event ``at`` accepts (a signal
    to rollover, a fault in the swarm); returns the outcome and that event ({} if it never came).
    A rollover still running after RUN_TIMEOUT_S is killed and the test fails: never a hang."""
    process = subprocess.Popen(cli_args(cluster, service, *extra), env={**cli_env(cluster), "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    lines: list[str] = []
    acted_at: dict[str, Any] = {}
    errors: list[str] = []

    def read_stderr() -> None:
        assert process.stderr is not None
        errors.append(process.stderr.read())

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    timer = threading.Timer(RUN_TIMEOUT_S, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            event = json.loads(line)
            if not acted_at and at(event):
                act(process)
                acted_at = event
        code = process.wait()
    finally:
        timer.cancel()
        reader.join(10)
    wall = time.monotonic() - started
    assert wall < RUN_TIMEOUT_S, f"rollover hung: killed after {RUN_TIMEOUT_S}s\n{''.join(lines)}{''.join(errors)}"
    return Outcome(code, "".join(lines), "".join(errors), wall), acted_at


# -- HAProxy in front of a service -------------------------------------------------------------------


@dataclass(frozen=True)
class Front:
    """An HAProxy with one server per task (its node address and host-mode port), and the flags
    that have rollover drive it and probe through it."""

    haproxy: HAProxy
    probe_rate: int

    @property
    def args(self) -> tuple[str, ...]:
        return ("--balancer", self.haproxy.spec, "--balancer-address", "published",
                "--probe", self.haproxy.url, "--probe-rate", str(self.probe_rate))

    def assert_no_request_lost(self, outcome: Outcome, *, strays: bool = False) -> None:
        """rollover's probe lost no request, and HAProxy's own log agrees: no 5xx, and (unless
        ``strays``: servers in rotation that point at a task that is gone) no retry either."""
        probe = outcome.summary["probe"]
        print(f"FAULT {os.environ.get('PYTEST_CURRENT_TEST', '?')}: probe {probe}")  # the README's figures (-s)
        assert probe["sent"] > 0 and probe["failed"] == 0, (probe, self.haproxy.describe(), outcome)
        if not strays:
            self.haproxy.assert_clean()
        assert self.haproxy.request_log().server_side_clean, self.haproxy.describe()
        assert self.haproxy.backend_counters()["hrsp_5xx"] == 0, self.haproxy.describe()

    def assert_routes_to_the_running_tasks(self, cluster: SwarmCluster, service: str, outcome: Outcome,
                                           *, strays: bool = False) -> list[str]:
        """HAProxy routes to every running task and, unless ``strays``, to nothing else; the names
        of the servers in rotation that point at no running task."""
        routed, running = self.haproxy.in_rotation(), sorted(task_endpoints(cluster, service).values())
        if not strays:
            assert routed == running, (f"routed {routed}, running {running}", self.haproxy.servers(), outcome)
        assert set(running) <= set(routed), (f"routed {routed}, running {running}", self.haproxy.servers(), outcome)
        return [row.name for row in self.haproxy.servers() if row.in_rotation and (row.addr, row.port) not in running]


@contextlib.contextmanager
def front_of(cluster: SwarmCluster, service: str, probe_rate: int = 50) -> Iterator[Front]:
    """HAProxy in front of the service's running tasks (host-mode ports), stopped afterwards."""
    endpoints = sorted(task_endpoints(cluster, service).values())
    with tempfile.TemporaryDirectory(prefix="rsw-haproxy-") as workdir:
        haproxy = HAProxy(Path(workdir), [(f"s{number}", host, port) for number, (host, port) in
                                          enumerate(endpoints, 1)])
        try:
            yield Front(haproxy, probe_rate)
        finally:
            haproxy.stop()
