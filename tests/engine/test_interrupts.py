"""Interrupts mid-rollout, against the real engine: the service ends serving, at full count, on a
known image, and the user is told where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_support import APP_V1, APP_V2, ComposeProject

ROLLOVER = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "rollover")
pytestmark = pytest.mark.engine


def start_rollover(project: ComposeProject, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ROLLOVER, "redeploy", "web", "--project", project.name, "--output", "json", *args],
        cwd=project.directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_until(process: subprocess.Popen[str], wanted: Callable[[dict[str, Any]], bool],
               deadline_s: float = 60) -> list[dict[str, Any]]:
    """JSON events from the process until one satisfies ``wanted`` (or the deadline passes)."""
    assert process.stdout is not None
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))
        if wanted(seen[-1]):
            return seen
    raise AssertionError(f"never saw the event; got {[event['event'] for event in seen]}")


def service_state(project: ComposeProject, images: dict[str, str]) -> list[tuple[str, str, str]]:
    """(status, health, image tag) of every container of the service, sorted."""
    by_id = {image_id: tag for tag, image_id in images.items()}
    state = []
    for container in project.containers():
        container.reload()
        health = container.attrs["State"].get("Health", {}).get("Status", "")
        state.append((container.status, health, by_id.get(container.attrs["Image"], "?")))
    return sorted(state)


def wait_all_healthy(project: ComposeProject, count: int, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        states = [c.attrs["State"] for c in project.containers() if c.reload() is None]
        if len(states) == count and all(s.get("Health", {}).get("Status") == "healthy" for s in states):
            return
        time.sleep(0.2)  # polling the engine for the test's own end condition, bounded
    raise AssertionError("the service did not settle")


def lock_exists(project: ComposeProject) -> bool:
    return any(c.name == f"rollover-lock-{project.name}-web" for c in project.client.containers.list(all=True))


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_rolls_back_and_exits_130(
    compose_project: Callable[..., ComposeProject], app_images: dict[str, str], signal_number: int
) -> None:
    project = compose_project(APP_V1, replicas=4)
    project.write(APP_V2, replicas=4)
    process = start_rollover(project, "--step", "1")
    read_until(process, lambda event: event["event"] == "settled")  # one replaced, the next in flight
    process.send_signal(signal_number)
    out, err = process.communicate(timeout=90)
    events = [json.loads(line) for line in out.splitlines()]
    summary = events[-1]
    assert process.returncode == 130, err
    assert summary["result"] == "interrupted" and summary["reason"].startswith("interrupted by SIG")
    assert summary["not_redeployed"], "the summary says where it stopped"
    assert "interrupted" in [event["event"] for event in events]
    # Under the default --on-failure rollback everything replaced went back: 4 healthy, all v1.
    assert service_state(project, app_images) == [("running", "healthy", APP_V1)] * 4
    assert not lock_exists(project)


def test_an_interrupt_under_pause_leaves_a_consistent_service(
    compose_project: Callable[..., ComposeProject], app_images: dict[str, str]
) -> None:
    project = compose_project(APP_V1, replicas=4)
    project.write(APP_V2, replicas=4)
    process = start_rollover(project, "--step", "1", "--on-failure", "pause")
    read_until(process, lambda event: event["event"] == "settled")
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=90)
    summary = json.loads(out.splitlines()[-1])
    assert process.returncode == 130
    state = service_state(project, app_images)
    assert len(state) == 4 and all(entry[:2] == ("running", "healthy") for entry in state)
    assert sum(1 for *_, tag in state if tag == APP_V2) == summary["replaced"] >= 1
    assert not lock_exists(project)


def test_after_sigkill_the_next_rollout_takes_over_and_converges(
    compose_project: Callable[..., ComposeProject], app_images: dict[str, str]
) -> None:
    project = compose_project(APP_V1, replicas=4)
    project.write(APP_V2, replicas=4)
    process = start_rollover(project, "--step", "2")
    # Kill it hard while replacements are in flight: nothing can clean up.
    read_until(process, lambda event: event["event"] == "up")
    process.kill()
    process.communicate(timeout=30)
    assert lock_exists(project), "the dead rollout's lock stays behind as its record"

    again = subprocess.run(
        [ROLLOVER, "redeploy", "web", "--project", project.name, "--step", "2", "--output", "json"],
        cwd=project.directory, capture_output=True, text=True, timeout=120,
    )
    events = [json.loads(line) for line in again.stdout.splitlines()]
    kinds = [event["event"] for event in events]
    assert again.returncode == 0, again.stderr
    assert "took_over_lock" in kinds
    took_over = events[kinds.index("took_over_lock")]
    assert "is gone" in took_over["reason"]
    # Every replica up on the target image, the count as it was before, no lock left.
    assert service_state(project, app_images) == [("running", "healthy", APP_V2)] * 4
    assert not lock_exists(project)
