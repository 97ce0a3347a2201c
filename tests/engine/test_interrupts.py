"""Interrupts mid-rollout, against the real engine: the service ends serving, at full count, on a
known image, and the user is told where it stopped. The Compose services run behind HAProxy with
rollover's probe through it (tests.support.faults.Faults): an interrupt loses no request either."""

from __future__ import annotations

import contextlib
import hashlib
import json
import select
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.support.engine import APP_V1, APP_V2, remove_containers, run, unique_name
from tests.support.faults import ROLLOVER, Faults, lock_exists, service_state, serving_addresses, write_service

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_rolls_back_and_exits_130(faults: Faults, images: dict[str, str], signal_number: int) -> None:
    project = faults.project(APP_V1, replicas=4)
    write_service(project, APP_V2, replicas=4)
    rollover = faults.rollover(project, "--step", "1")
    rollover.wait_for("settled")  # one replaced, the next in flight
    rollover.interrupt(signal_number)
    outcome = rollover.finish()
    summary = outcome.summary
    assert outcome.returncode == 130, outcome.text()
    assert summary["result"] == "interrupted" and summary["reason"].startswith("interrupted by SIG")
    assert summary["not_redeployed"], "the summary says where it stopped"
    assert "interrupted" in outcome.kinds()
    # Under the default --on-failure rollback everything replaced went back: 4 healthy, all v1.
    assert service_state(project, images) == [("running", "healthy", APP_V1)] * 4
    assert not lock_exists(project)
    assert faults.fronts[project.name].routed() == serving_addresses(project)
    faults.assert_no_request_lost(outcome)


def test_an_interrupt_under_pause_leaves_a_consistent_service(faults: Faults, images: dict[str, str]) -> None:
    project = faults.project(APP_V1, replicas=4)
    write_service(project, APP_V2, replicas=4)
    rollover = faults.rollover(project, "--step", "1", "--on-failure", "pause")
    rollover.wait_for("settled")
    rollover.interrupt()
    outcome = rollover.finish()
    assert outcome.returncode == 130, outcome.text()
    state = service_state(project, images)
    assert len(state) == 4 and all(entry[:2] == ("running", "healthy") for entry in state)
    assert sum(1 for *_, tag in state if tag == APP_V2) == outcome.summary["replaced"] >= 1
    assert not lock_exists(project)
    assert faults.fronts[project.name].routed() == serving_addresses(project)
    faults.assert_no_request_lost(outcome)


def test_after_sigkill_the_next_rollout_takes_over_and_converges(faults: Faults, images: dict[str, str]) -> None:
    project = faults.project(APP_V1, replicas=4)
    write_service(project, APP_V2, replicas=4)
    rollover = faults.rollover(project, "--step", "2")
    # Kill it hard while replacements are in flight: nothing can clean up.
    rollover.wait_for("up")
    rollover.kill()
    assert lock_exists(project), "the dead rollout's lock stays behind as its record"

    outcome = faults.rollover(project, "--step", "2").finish()
    assert outcome.returncode == 0, outcome.text()
    took_over = next(event for event in outcome.events if event["event"] == "took_over_lock")
    assert "is gone" in took_over["reason"]
    # Every replica up on the target image, the count as it was before, no lock left.
    assert service_state(project, images) == [("running", "healthy", APP_V2)] * 4
    assert not lock_exists(project)
    # HAProxy routes to exactly the new replicas: the dead rollout's admissions were taken over, and
    # nothing was lost in either run (the second run's probe; HAProxy's log covers both).
    assert faults.fronts[project.name].routed() == serving_addresses(project)
    faults.assert_no_request_lost(outcome)


# -- SIGKILL between stopping an old replica and making its replacement (stop-first) ----------------


class Gate:
    """A moment to kill rollover at: something rollover runs touches ``reached``, then waits (bounded)
    until the test ``open``s the gate, and fails."""

    def __init__(self, directory: Path) -> None:
        self.reached, self.gate = directory / "reached", directory / "gate"

    def shell(self) -> str:
        """Shell code that marks the moment and waits for the gate (at most 60 s), then fails."""
        reached, gate = shlex.quote(str(self.reached)), shlex.quote(str(self.gate))
        return (f"touch {reached}; n=0; while [ ! -e {gate} ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done;"
                " exit 1")

    def wait_reached(self, process: subprocess.Popen[str], deadline_s: float = 60) -> None:
        deadline = time.monotonic() + deadline_s
        while not self.reached.exists():
            assert process.poll() is None, f"rollover ended before the moment: {process.communicate()}"
            assert time.monotonic() < deadline, "rollover never reached the moment"
            time.sleep(0.05)  # polling for the test's own marker file, bounded

    def open(self) -> None:
        self.gate.touch()


def kill_at(process: subprocess.Popen[str], gate: Gate) -> None:
    """SIGKILL rollover (our own child, by pid) once it reached the gate; then let the gate go."""
    try:
        gate.wait_reached(process)
        process.kill()
        process.communicate(timeout=30)
    finally:
        gate.open()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def kill_at_first_line(process: subprocess.Popen[str], watcher: subprocess.Popen[str], deadline_s: float = 60) -> None:
    """SIGKILL rollover (our own child, by pid) the moment ``watcher`` prints its first line."""
    assert watcher.stdout is not None
    ready, _, _ = select.select([watcher.stdout], [], [], deadline_s)
    try:
        assert ready and watcher.stdout.readline(), "the moment never came"
    finally:
        process.kill()
        process.communicate(timeout=30)


def takeover(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    again = subprocess.run([ROLLOVER, "redeploy", *args, "--output", "json"], cwd=cwd, capture_output=True,
                           text=True, timeout=180, check=False)
    return again, [json.loads(line) for line in again.stdout.splitlines()]


def assert_refilled(returncode: int, events: list[dict[str, Any]], replicas: int) -> None:
    """The next rollout took the lock over, refilled the one replica the dead one removed, and completed."""
    kinds = [event["event"] for event in events]
    assert returncode == 0, events
    assert "is gone" in events[kinds.index("took_over_lock")]["reason"]
    assert events[kinds.index("refilling")]["missing"] == 1, kinds
    refill = [event for event in events if event["event"] == "request_sent" and event["refill"]]
    assert [event["replica"] for event in refill] == ["refill-1"]
    summary = events[-1]
    assert (summary["result"], summary["refilled"], summary["replaced"]) == ("completed", 1, replicas), summary


@pytest.mark.parametrize("volumes", [False, True], ids=["no-volumes", "anonymous-volume"])
def test_after_sigkill_before_a_stop_first_replacement_exists_nothing_is_lost(
    faults: Faults, images: dict[str, str], tmp_path: Path, volumes: bool
) -> None:
    """rollover (stop-first) drained and stopped web-1 and is about to make its replacement: the
    test kills it the moment the engine reports web-1 dead (its ``die`` event), before a
    replacement runs. (Compose renders the rollout's template before the first stop, so a gate on
    ``compose up`` no longer falls between the stop and the create.) web-1 is still there,
    stopped: it goes only once a replacement runs on its volumes. The next rollout starts it
    again when it holds data (its anonymous /data, with a marker), and rolls it like the others;
    without volumes it goes, and its slot is refilled."""
    project = faults.project(APP_V1, replicas=4, volumes=volumes)
    web_1 = next(c for c in project.containers() if c.name.endswith("-web-1"))
    web_1.exec_run(["sh", "-c", "echo web-1-data > /data/marker"])
    write_service(project, APP_V2, replicas=4, volumes=volumes)
    with subprocess.Popen(["docker", "events", "--filter", f"container={web_1.id}", "--filter", "event=die",
                           "--format", "{{.Status}}"], stdout=subprocess.PIPE, text=True) as deaths:
        try:
            rollover = faults.rollover(project, "--step", "1", "--order", "stop-first")
            kill_at_first_line(rollover.process, deaths)
        finally:
            deaths.kill()
    assert lock_exists(project), "the dead rollout's lock stays behind as its record"
    web_1.reload()
    assert web_1.status == "exited", "web-1 is stopped, not removed, until its replacement runs"

    outcome = faults.rollover(project, "--step", "1", "--order", "stop-first").finish()
    if volumes:
        assert outcome.returncode == 0, outcome.text()
        assert "refilling" not in outcome.kinds() and outcome.summary["replaced"] == 4, outcome.text()
        markers = [c.exec_run(["cat", "/data/marker"]).output.decode().strip() for c in project.containers()]
        assert sorted(markers).count("web-1-data") == 1, markers
    else:
        assert_refilled(outcome.returncode, outcome.events, replicas=4)
    # Every replica up on the target image, the count as it was before, made as Compose makes them.
    assert service_state(project, images) == [("running", "healthy", APP_V2)] * 4
    assert len(project.compose("ps", "-q").split()) == 4
    said = project.compose("up", "-d")
    assert "Recreate" not in said and "Creat" not in said, said
    assert not lock_exists(project)
    # The refill is admitted like any replacement: HAProxy routes to exactly the 4 that run.
    assert faults.fronts[project.name].routed() == serving_addresses(project)
    faults.assert_no_request_lost(outcome)


@pytest.fixture
def selector_replicas(docker_client: Any, app_images: dict[str, str]) -> Iterator[str]:
    """Three `docker run` replicas labelled rtest.selector=NAME (healthchecked, each with an anonymous
    /data volume) for the service NAME; removed afterwards with their lock and volumes."""
    name = unique_name("sel")
    volumes: set[str] = set()

    def remember_volumes() -> list[Any]:
        made = docker_client.containers.list(all=True, filters={"label": f"rtest.selector={name}"})
        volumes.update(m["Name"] for c in made for m in c.attrs["Mounts"] if m.get("Type") == "volume")
        return list(made)

    try:
        for number in (1, 2, 3):
            run("docker", "run", "-d", "--name", f"{name}-{number}", "--label", f"rtest.selector={name}",
                "-v", "/data", "--stop-timeout", "3", APP_V1)
        remember_volumes()  # now: the test removes a replica, whose volume stays behind
        yield name
    finally:
        made = remember_volumes()
        lock = f"rollover-lock-sel-{hashlib.sha256(json.dumps({'rtest.selector': name}).encode()).hexdigest()[:12]}"
        remove_containers(docker_client, [str(c.id) for c in made] + [lock])
        for volume in volumes:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.volumes.get(volume).remove(force=True)


def wait_healthy(client: Any, name: str, count: int, deadline_s: float = 30) -> list[Any]:
    """The running replicas labelled rtest.selector=NAME once ``count`` of them are healthy (bounded)."""
    deadline = time.monotonic() + deadline_s
    while True:
        running = client.containers.list(filters={"label": f"rtest.selector={name}"})
        healthy = [c for c in running if c.attrs["State"].get("Health", {}).get("Status") == "healthy"]
        if len(running) == len(healthy) == count or time.monotonic() > deadline:
            return running
        time.sleep(0.2)  # polling the engine for the test's own end condition, bounded


def test_after_sigkill_a_selector_service_is_refilled_with_a_clone(
    docker_client: Any, selector_replicas: str, app_images: dict[str, str], tmp_path: Path
) -> None:
    """rollover (stop-first) is killed in the pre-stop hook of the first replica, which is then
    removed as rollover would have removed it next (for a selector the removal and the create are
    one API call apart: no gate fits between them)."""
    name = selector_replicas
    gate = Gate(tmp_path)
    args = [name, "--selector", f"rtest.selector={name}", "--image", APP_V2, "--step", "1", "--order", "stop-first"]
    process = subprocess.Popen([ROLLOVER, "redeploy", *args, "--output", "json", "--pre-stop",
                                shlex.join(["sh", "-c", gate.shell()])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    kill_at(process, gate)
    docker_client.containers.get(f"{name}-1").remove(force=True)  # its /data volume stays, as with rollover

    again, events = takeover(args, tmp_path)
    assert_refilled(again.returncode, events, replicas=3)
    running = wait_healthy(docker_client, name, 3)
    assert [(c.attrs["State"].get("Health", {}).get("Status"), c.attrs["Image"]) for c in running] == [
        ("healthy", app_images[APP_V2])] * 3, again.stdout
    # The refill is a clone of a replica, on the target image, with data of its own: three /data volumes.
    data = {next(m["Name"] for m in c.attrs["Mounts"] if m["Destination"] == "/data") for c in running}
    assert len(data) == 3, running
