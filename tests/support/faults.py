"""Helpers for the fault tests (test_faults, test_interrupts, test_daemon_restart): rollover as a
child process under a deadline, Compose projects on an engine, each behind its own HAProxy, and the
service's state as the engine has it.

Everything made here is named ``rtest-fault-...`` and removed by name afterwards, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from tests.support.engine import APP_V1, ComposeProject, compose_yaml, haproxy_servers, loopback_endpoints
from tests.support.event_schema import assert_valid_events
from tests.support.haproxy_front import HAProxy

ROLLOVER = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "rollover")
# The test app whose entrypoint exits 1 at once; a tag of this session only: another session on the
# same engine removes its own when it ends.
APP_EXITS = f"rtest-fault/app:exits-{uuid.uuid4().hex[:8]}"

# How long any one rollover run may take before the test calls it hung and kills it.
HANG_S = 90.0
PROBE_RATE = 50  # rollover's probe through HAProxy, requests/s
# Each replica publishes its port 8080 on its own random loopback port: HAProxy's servers, and no
# fixed host port, so the default order stays start-first.
LOOPBACK_PORT = "127.0.0.1::8080"


def fault_name(kind: str) -> str:
    return f"rtest-fault-{kind}-{uuid.uuid4().hex[:8]}"


# -- rollover under a deadline -----------------------------------------------------------------------


@dataclass
class Outcome:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    wall_s: float

    @property
    def summary(self) -> dict[str, Any]:
        assert self.events and self.events[-1]["event"] == "summary", (self.events[-3:], self.stderr)
        return self.events[-1]

    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events]

    def text(self) -> str:
        return "\n".join(json.dumps(event) for event in self.events) + f"\nstderr: {self.stderr}"


class Rollover:
    """``rollover redeploy SERVICE --output json`` (``web`` unless told) as a child process whose events
    are read as they come (by a thread, so a silent, hung rollover never blocks the test) and that
    never outlives its test."""

    def __init__(self, args: list[str], cwd: Path, env: Mapping[str, str], service: str = "web",
                 program: Sequence[str] = (ROLLOVER,)) -> None:
        # program: how rollover is called, e.g. ("docker", "--context", "prod", "rollover") for the plugin
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [*program, "redeploy", service, "--output", "json", *args], cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.append(self.process.stderr.read())

    def wait_for(self, kind: str, count: int = 1, deadline_s: float = 60) -> dict[str, Any]:
        """Read events until the ``count``-th one of ``kind``; fail if it does not come in time."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                event = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                self._lines.put(None)
                break
            self.events.append(event)
            if event["event"] == kind and sum(1 for seen in self.events if seen["event"] == kind) >= count:
                return event
        raise AssertionError(f"never saw {kind} #{count}; got {[e['event'] for e in self.events]} {self._stderr}")

    def finish(self, deadline_s: float = HANG_S) -> Outcome:
        """Wait for the end; a rollover still running after ``deadline_s`` is a hang: killed, failed."""
        try:
            returncode = self.process.wait(timeout=max(0.0, self.started + deadline_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"rollover hung: still running after {deadline_s:g}s; events so far: "
                                 f"{[e['event'] for e in self.drain()]}") from None
        events = self.drain()
        assert_valid_events(events)
        return Outcome(returncode, events, "".join(self._stderr), round(time.monotonic() - self.started, 1))

    def drain(self) -> list[dict[str, Any]]:
        for reader in self._readers:
            reader.join(timeout=10)
        while True:
            try:
                event = self._lines.get_nowait()
            except queue.Empty:
                break
            if event is not None:
                self.events.append(event)
        return self.events

    def interrupt(self, signal_number: int = signal.SIGINT) -> None:
        self.process.send_signal(signal_number)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # our own child, by its pid
            self.process.wait(timeout=30)


# -- the service and what it runs ----------------------------------------------------------------------


# A healthcheck that passes only once the test opened this container's gate (a file inside it):
# one definition, and still the test decides which replacement turns healthy. A rollout renders
# its Compose definition once, so a fault cannot be put into one replacement by changing the file.
HEALTH_GATE = "/tmp/health-gate-open"
GATED_HEALTHCHECK = {
    "test": json.dumps(["CMD-SHELL", f"test -f {HEALTH_GATE} && wget -q -O- http://127.0.0.1:8080/version.txt"]),
}


def fault_yaml(project: str, image: str, *, replicas: int, restart: str | None = None, volumes: bool = False,
               health_gate: bool = False) -> str:
    """tests.support.engine's service ``web`` on random loopback ports, optionally with a restart
    policy, optionally healthy only once the test opens each container's gate (``open_health_gate``)."""
    text = compose_yaml(project, image, replicas=replicas, volumes=volumes, ports=[LOOPBACK_PORT],
                        healthcheck=GATED_HEALTHCHECK if health_gate else None)
    if restart is None:
        return text
    line = f"    image: {image}\n"
    return text.replace(line, f"{line}    restart: {restart}\n", 1)


def write_service(project: ComposeProject, image: str, **options: Any) -> None:
    project.file.write_text(fault_yaml(project.name, image, **options))


def open_health_gate(project: ComposeProject, container_name: str, deadline_s: float = 60) -> None:
    """Let this replacement turn healthy: once it runs (it may be acknowledged before it starts),
    create the file its gated healthcheck looks for."""
    deadline = time.monotonic() + deadline_s
    while True:
        container = project.client.containers.get(container_name)
        if container.status == "running":
            code, output = container.exec_run(["touch", HEALTH_GATE])
            assert code == 0, output
            return
        assert time.monotonic() < deadline, f"{container_name} never ran: {container.status}"
        time.sleep(0.05)  # polling a state the engine reports only on request; bounded above


def known_images(client: Any, *tags: str) -> dict[str, str]:
    """image id -> tag, for naming what each container runs (ids shared by several tags: first wins)."""
    names: dict[str, str] = {}
    for tag in tags:
        names.setdefault(str(client.images.get(tag).id), tag)
    return names


def service_state(project: ComposeProject, images: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(status, health, image tag or '?') of every container of the service, sorted."""
    state = []
    for container in project.containers():
        container.reload()
        health = (container.attrs["State"].get("Health") or {}).get("Status", "")
        state.append((container.status, health, images.get(container.attrs["Image"], "?")))
    return sorted(state)


def wait_until_serving(project: ComposeProject, images: Mapping[str, str], replicas: int,
                       deadline_s: float = 60) -> list[tuple[str, str, str]]:
    """Poll the engine (bounded) until ``replicas`` containers run, all healthy (whatever their image);
    the last state seen either way."""
    deadline = time.monotonic() + deadline_s
    while True:
        state = service_state(project, images)
        serving = len(state) == replicas and all(entry[:2] == ("running", "healthy") for entry in state)
        if serving or time.monotonic() > deadline:
            return state
        time.sleep(0.2)  # polling the engine for the test's own end condition, bounded by the deadline


def serving_addresses(project: ComposeProject) -> list[str]:
    """``127.0.0.1:PORT`` of every running replica, as HAProxy's servers name them, sorted."""
    return loopback_endpoints(project.client, project.name)


def lock_exists(project: ComposeProject) -> bool:
    return bool(project.client.containers.list(all=True, filters={"name": f"rollover-lock-{project.name}-web"}))




@dataclass
class EngineProject(ComposeProject):
    """A ComposeProject whose Compose commands go to the engine ``env`` names (DOCKER_HOST)."""

    env: Mapping[str, str] | None = field(default_factory=lambda: dict(os.environ))


@dataclass
class Faults:
    """Compose projects ``rtest-fault-proj-...`` (torn down by name) and rollovers (killed if still
    running) on one engine: the default one, or the one ``env``'s DOCKER_HOST names.

    ``fronted``: each project gets an HAProxy in front (stopped afterwards), and every rollover
    drives it and probes through it. Off for an engine in a network namespace of its own (the
    daemon-restart tests): its loopback ports are not this one's.
    """

    client: Any
    directory: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    fronted: bool = True
    projects: list[ComposeProject] = field(default_factory=list)
    fronts: dict[str, HAProxy] = field(default_factory=dict)  # project name -> its HAProxy
    rollovers: list[Rollover] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def project(self, image: str = APP_V1, **options: Any) -> ComposeProject:
        project = EngineProject(fault_name("proj"), self.directory / f"p{len(self.projects)}", self.client,
                                env=self.env)
        project.directory.mkdir()
        self.projects.append(project)
        write_service(project, image, **options)
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        project.remember_volumes()
        if self.fronted:
            # A short directory of its own: a unix socket path must stay under 108 bytes.
            workdir = Path(tempfile.mkdtemp(prefix="rtest-fault-lb-"))
            self.fronts[project.name] = HAProxy(workdir, haproxy_servers(self.client, project.name))
        return project

    def rollover(self, project: ComposeProject, *args: str, env: Mapping[str, str] | None = None) -> Rollover:
        front = self.fronts.get(project.name)
        if front is not None:
            args = ("--balancer", front.spec, "--balancer-address", front.balancer_address,
                    "--probe", front.url, "--probe-rate", str(PROBE_RATE), *args)
        rollover = Rollover(["--project", project.name, *args], project.directory, env or self.env)
        self.rollovers.append(rollover)
        return rollover

    def assert_no_request_lost(self, outcome: Outcome) -> None:
        """rollover's probe lost no request, and HAProxy's own log agrees: every request answered
        by a server, none cut off, no retry or redispatch needed to cover for a dead server."""
        [front] = self.fronts.values()
        probe = outcome.summary["probe"]
        print(f"FAULT {os.environ.get('PYTEST_CURRENT_TEST', '?')}: probe {probe}")  # the README's figures (-s)
        assert probe["sent"] > 0 and probe["failed"] == 0, (probe, front.describe())
        front.assert_clean()

    def tag(self, source: str, kind: str) -> str:
        """A tag of our own for ``source`` (so removing it never touches an image another suite uses)."""
        tag = f"rtest-fault/app:{kind}-{uuid.uuid4().hex[:8]}"
        self.tags.append(tag)
        self.client.images.get(source).tag(tag)
        return tag

    def tear_down(self) -> None:
        for rollover in self.rollovers:
            rollover.kill()
        for front in self.fronts.values():
            front.stop()
            shutil.rmtree(front.directory, ignore_errors=True)
        for project in self.projects:
            with contextlib.suppress(AssertionError):
                project.tear_down()
        for tag in self.tags:
            with contextlib.suppress(docker.errors.APIError):
                self.client.images.remove(tag)  # untags only: the image itself is another tag's too



def assert_consistent(outcome: Outcome) -> None:
    """The exit code says what the summary says (README: 0 completed, 1 failed/rolled back/paused)."""
    expected = {"completed": 0, "interrupted": 130}.get(outcome.summary["result"], 1)
    assert outcome.returncode == expected, outcome.text()
