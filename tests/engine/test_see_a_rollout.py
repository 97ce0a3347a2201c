"""Seeing a rollout (issue 15) on the real engine: a failure that explains itself, the event schema
checked on a real rollout's every event, and the HTML report opened in a real Chromium.

One Compose service ``web`` (3 replicas, start-first, step 1) rolls to a definition whose replicas
count their starts on a shared volume: the first replacement serves, every later one's healthcheck
prints "rrep: database unreachable" and fails. So the rollout has one replaced replica, one
failure and a rollback that puts the replaced one back. A secret handed to the container (and
printed in its log) must come out masked.

Everything made here is named ``rrep-...`` and removed by name afterwards, pass or fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import APP_V1, ComposeProject
from tests.support.faults import ROLLOVER

pytestmark = pytest.mark.engine

SECRET = "rrep-hunter2-secret"
ROLLOVER_ENV = {**os.environ, "RREP_API_TOKEN": SECRET}
HEALTH_MESSAGE = "rrep: database unreachable"

# The new definition: each start adds one to /shared/starts; from the FAIL_FROM-th start (0-based)
# on, the replica prints why it is broken and its healthcheck fails with HEALTH_MESSAGE.
_ENTRYPOINT = (
    'echo "rrep: starting with token $$RREP_SHOWN"; n=$$(cat /shared/starts 2>/dev/null || echo 0);'
    ' echo $$((n+1)) > /shared/starts;'
    ' if [ "$$n" -ge "$$FAIL_FROM" ]; then echo "rrep: start $$n: the database is gone"; touch /tmp/broken; fi;'
    ' exec httpd -f -p 8080 -h /www'
)
_HEALTH = f"if [ -e /tmp/broken ]; then echo '{HEALTH_MESSAGE}'; exit 1; fi; wget -qO- http://127.0.0.1:8080/version.txt"


def service_yaml(project: str, replicas: int, fail_from: int | None) -> str:
    """``fail_from`` None: the plain v1 service; else the counting one described above."""
    lines = [f"name: {project}", "services:", "  web:", f"    image: {APP_V1}", "    init: true",
             "    stop_grace_period: 2s", "    deploy:", f"      replicas: {replicas}",
             "    volumes:", "      - shared:/shared"]
    if fail_from is not None:
        lines += ["    environment:", f"      RREP_SHOWN: {json.dumps(SECRET)}", f"      FAIL_FROM: \"{fail_from}\"",
                  f"    entrypoint: {json.dumps(['/bin/sh', '-c', _ENTRYPOINT])}",
                  "    healthcheck:", f"      test: {json.dumps(['CMD-SHELL', _HEALTH])}",
                  "      interval: 500ms", "      timeout: 2s", "      retries: 2", "      start_period: 0s"]
    return "\n".join([*lines, "volumes:", "  shared: {}", ""])


@dataclass
class Rolled:
    project: ComposeProject
    returncode: int
    stdout: str
    stderr: str
    directory: Path


def roll(docker_client: Any, directory: Path, replicas: int, fail_from: int, *args: str) -> Rolled:
    """Start the v1 service, switch its file to the counting definition and run rollover on it."""
    project = ComposeProject(f"rrep-{uuid.uuid4().hex[:8]}", directory, docker_client)
    directory.mkdir(parents=True, exist_ok=True)
    project.file.write_text(service_yaml(project.name, replicas, None))
    try:
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        project.file.write_text(service_yaml(project.name, replicas, fail_from))
        done = subprocess.run([ROLLOVER, "redeploy", "web", "--step", "1", "--timeout", "20", *args],
                              cwd=directory, env=ROLLOVER_ENV, capture_output=True, text=True, timeout=180,
                              check=False)
    except BaseException:
        project.tear_down()
        raise
    return Rolled(project, done.returncode, done.stdout, done.stderr, directory)


@pytest.fixture(scope="module")
def failed_rollout(docker_client: Any, app_images: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rolled]:
    """The 3-replica rollout with a failure and a rollback, as JSON events and an HTML report."""
    directory = tmp_path_factory.mktemp("rrep-failed")
    rolled = roll(docker_client, directory / "project", 3, 1, "--output", "json",
                  "--report", str(directory / "report.html"))
    try:
        yield rolled
    finally:
        rolled.project.tear_down()


def events_of(rolled: Rolled) -> list[dict[str, Any]]:
    return [json.loads(line) for line in rolled.stdout.splitlines() if line.strip()]


def test_the_failure_event_carries_the_health_check_output_and_the_log(failed_rollout: Rolled) -> None:
    events = events_of(failed_rollout)
    assert failed_rollout.returncode == 1, failed_rollout.stdout + failed_rollout.stderr
    summary = events[-1]
    assert (summary["result"], summary["replaced"], summary["failed"], summary["rolled_back"]) == (
        "rolled-back", 0, 1, 1), summary
    [failed] = [event for event in events if event["event"] == "failed"]
    diagnosis = failed["diagnosis"]
    assert diagnosis["exit_code"] is None and diagnosis["state"] == "running", diagnosis  # unhealthy, not exited
    assert diagnosis["health_checks"], diagnosis
    assert all(check["exit_code"] == 1 and check["output"] == HEALTH_MESSAGE for check in diagnosis["health_checks"])
    assert "rrep: start 1: the database is gone" in diagnosis["log"], diagnosis["log"]
    assert "rrep: starting with token ***" in diagnosis["log"], diagnosis["log"]
    assert SECRET not in failed_rollout.stdout


def test_the_text_output_shows_why_a_replacement_failed(docker_client: Any, app_images: dict[str, str],
                                                       tmp_path: Path) -> None:
    rolled = roll(docker_client, tmp_path / "project", 1, 0)
    try:
        assert rolled.returncode == 1, rolled.stdout + rolled.stderr
        lines = rolled.stdout.splitlines()
        failed_at = next(index for index, line in enumerate(lines) if ": FAILED: " in line)
        explained = lines[failed_at + 1:failed_at + 8]
        assert explained[0].strip() == "still running (container state: running)", rolled.stdout
        assert f"    health check exit 1: {HEALTH_MESSAGE}" in explained, rolled.stdout
        assert "      | rrep: start 0: the database is gone" in lines, rolled.stdout
        assert "      | rrep: starting with token ***" in lines, rolled.stdout
        assert SECRET not in rolled.stdout
    finally:
        rolled.project.tear_down()
