"""A multi-service Compose project for the ``rollover up`` tests, in its own directory, named
``rup-...`` and torn down by name (containers, locks, networks, named and anonymous volumes).

The compose file is written from a dict as JSON (which is YAML), so a test states its project as
data and edits it the way a user edits the file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from tests.support.engine import APP_V1, remove_containers, remove_volumes, run
from tests.support.event_schema import assert_valid_events

ROLLOVER = Path(sys.executable).with_name("rollover")  # the console script of the venv running pytest
RUN_TIMEOUT_S = 240


def project_name() -> str:
    return f"rup-{uuid.uuid4().hex[:8]}"


def cli_env(**extra: str) -> dict[str, str]:
    """The caller's environment without ROLLOVER_*/TUTUM_*/COMPOSE_* settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ROLLOVER_", "TUTUM_", "COMPOSE_"))}
    env.update(extra)
    return env


@dataclass
class UpRun:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        events = [json.loads(line) for line in self.stdout.splitlines() if line.strip()]
        assert_valid_events(event for event in events if "event" in event)
        return events

    @property
    def plan(self) -> dict[str, dict[str, Any]]:
        """service -> its entry in the project plan."""
        [plan] = [event for event in self.events if event["event"] == "project_plan"]
        return {item["service"]: item for item in plan["services"]}

    def plan_order(self) -> list[str]:
        [plan] = [event for event in self.events if event["event"] == "project_plan"]
        return [item["service"] for item in plan["services"]]

    @property
    def summary(self) -> dict[str, Any]:
        last = self.events[-1]
        assert last["event"] == "project_summary", self
        return last

    def results(self) -> dict[str, str]:
        return {item["service"]: item["result"] for item in self.summary["services"]}

    def done_order(self) -> list[str]:
        return [event["service"] for event in self.events if event["event"] == "service_done"]

    def service_events(self, service: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("service") == service and "replica" in event]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@dataclass
class UpProject:
    """``services``: the compose file's services section; ``volumes`` its named volumes."""

    name: str
    directory: Path
    client: Any
    services: dict[str, Any]
    volumes: dict[str, Any] = field(default_factory=dict)
    seen_volumes: set[str] = field(default_factory=set)

    @property
    def file(self) -> Path:
        return self.directory / "compose.yaml"

    def write(self) -> None:
        document: dict[str, Any] = {"name": self.name, "services": self.services}
        if self.volumes:
            document["volumes"] = self.volumes
        self.file.write_text(json.dumps(document, indent=1))

    def up(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> UpRun:
        """``rollover up ARGS --output json`` in the project's directory."""
        assert ROLLOVER.exists(), f"the console script {ROLLOVER} is not installed"
        done = subprocess.run([str(ROLLOVER), "up", *args, "--output", "json"], cwd=cwd or self.directory,
                              env=env or cli_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              check=False)
        return UpRun(done.returncode, done.stdout, done.stderr)

    def up_killed_after(self, marker: str, timeout_s: float = RUN_TIMEOUT_S) -> int:
        """``rollover up --output json``, SIGKILLed as soon as a line of its output holds ``marker``;
        its exit status (negative: the signal)."""
        process = subprocess.Popen([str(ROLLOVER), "up", "--output", "json"], cwd=self.directory, env=cli_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert process.stdout is not None
        timer = threading.Timer(timeout_s, process.kill)  # bounds the wait if the marker never comes
        timer.start()
        try:
            for line in process.stdout:
                if marker in line:
                    process.send_signal(signal.SIGKILL)
                    break
        finally:
            timer.cancel()
            process.stdout.close()
        return process.wait(timeout=30)

    def compose(self, *args: str) -> str:
        return run("docker", "compose", "-p", self.name, *args, cwd=self.directory)

    def containers(self, service: str | None = None, *, running_only: bool = True) -> list[Any]:
        labels = [f"com.docker.compose.project={self.name}"]
        if service is not None:
            labels.append(f"com.docker.compose.service={service}")
        found = self.client.containers.list(all=not running_only, filters={"label": labels})
        return [container for container in found if "rollover.lock.holder" not in container.labels]

    def ids(self, service: str) -> set[str]:
        return {container.id for container in self.containers(service)}

    def all_ids(self) -> dict[str, set[str]]:
        services = {container.labels["com.docker.compose.service"] for container in self.containers()}
        return {service: self.ids(service) for service in sorted(services)}

    def engine_objects(self) -> tuple[set[str], set[str], set[str]]:
        """Every container (any state), network and volume carrying the project's label."""
        label = {"label": [f"com.docker.compose.project={self.name}"]}
        return ({container.id for container in self.client.containers.list(all=True, filters=label)},
                {network.id for network in self.client.networks.list(filters=label)},
                {volume.name for volume in self.client.volumes.list(filters=label)})

    def tear_down(self) -> None:
        for container in self.containers(running_only=False):
            with contextlib.suppress(docker.errors.NotFound):
                container.reload()
                self.seen_volumes |= {m["Name"] for m in container.attrs["Mounts"] if m.get("Type") == "volume"}
        try:
            run("docker", "compose", "-p", self.name, "down", "-v", "--remove-orphans", "-t", "1",
                cwd=self.directory)
        finally:
            leftovers = self.client.containers.list(all=True, filters={"label": [
                f"com.docker.compose.project={self.name}"]})
            remove_containers(self.client, [container.id for container in leftovers])
            locks = self.client.containers.list(all=True, filters={"name": f"rollover-lock-{self.name}-"})
            remove_containers(self.client, [container.id for container in locks])
            remove_volumes(self.client, self.seen_volumes)


# The image's healthcheck (every 0.5 s), patient with a loaded machine: a probe may take 10 s and
# 10 may fail in a row before a replica counts as unhealthy. Healthy still takes one passing probe.
PATIENT_HEALTHCHECK = {"interval": "500ms", "timeout": "10s", "retries": 10}


def four_services(db_port: int, image: str = APP_V1) -> dict[str, Any]:
    """The issue's project: a single-replica db with a named volume and a fixed host port; api (3
    replicas, healthcheck, parallelism 2 start-first) on db; web (2) on api; worker (2, no ports)."""
    quick = {"init": True, "stop_grace_period": "5s", "healthcheck": PATIENT_HEALTHCHECK}
    return {
        "db": {"image": image, **quick, "volumes": ["data:/data"], "ports": [f"127.0.0.1:{db_port}:8080"]},
        "api": {"image": image, **quick, "depends_on": {"db": {"condition": "service_started"}},
                "deploy": {"replicas": 3, "update_config": {"parallelism": 2, "order": "start-first"}}},
        "web": {"image": image, **quick, "depends_on": {"api": {"condition": "service_healthy"}},
                "deploy": {"replicas": 2}},
        "worker": {"image": image, **quick, "environment": {"MODE": "a"}, "deploy": {"replicas": 2}},
    }


@contextlib.contextmanager
def up_project(client: Any, directory: Path, services: dict[str, Any],
               volumes: dict[str, Any] | None = None) -> Iterator[UpProject]:
    directory.mkdir(parents=True, exist_ok=True)
    project = UpProject(project_name(), directory, client, services, volumes or {})
    project.write()
    try:
        yield project
    finally:
        project.tear_down()


def max_in_flight(events: list[dict[str, Any]]) -> int:
    """Most replacements of one service in flight at once, from its JSON events: a target is in
    flight from its request until it settles, fails or is skipped."""
    flying: set[str] = set()
    most = 0
    for event in events:
        if event["event"] == "request_sent" and not event.get("restore"):
            flying.add(event["replica"])
            most = max(most, len(flying))
        elif event["event"] in ("settled", "failed", "skipped"):
            flying.discard(event["replica"])
    return most
