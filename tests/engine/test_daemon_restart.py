"""The Docker daemon restarts mid-rollout. Never the shared main daemon: each test module starts
dockerds of its own (scripts/engine-netns.sh: own network namespace, data-root, exec-root and socket),
copies the test images into them, points rollover at one with DOCKER_HOST and restarts it (SIGTERM,
wait, start with the same flags) while a rollout runs.

Whatever the moment, rollover must notice (``stream_lost``), come back (``stream_restored`` before it
relies on events again), and finish or fail cleanly within its own timeouts; afterwards every replica
runs, healthy, on a known image, as many as before, and the exit code says what the summary says.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.engine import APP_V1, APP_V2
from tests.support.faults import (
    HANG_S,
    Faults,
    Outcome,
    assert_consistent,
    fault_name,
    known_images,
    lock_exists,
    wait_until_serving,
    write_service,
)

SCRIPT = str(Path(__file__).resolve().parents[2] / "scripts" / "engine-netns.sh")
pytestmark = pytest.mark.engine


@dataclass
class Daemon:
    name: str
    host: str
    client: Any

    def restart(self) -> None:
        done = subprocess.run([SCRIPT, "restart", self.name], capture_output=True, text=True, timeout=150,
                              check=False)
        assert done.returncode == 0, f"restart of {self.name} failed: {done.stdout}{done.stderr}"


def extra_daemon(kind: str, dockerd_args: str = "") -> Iterator[Daemon]:
    """A dockerd of our own with v1 and v2 loaded; torn down (namespace, data, sockets) whatever happens."""
    name = fault_name(kind)
    client = None
    try:
        done = subprocess.run([SCRIPT, "up", name], env={**os.environ, "ENGINE_NETNS_DOCKERD_ARGS": dockerd_args},
                              capture_output=True, text=True, timeout=150, check=False)
        assert done.returncode == 0, f"engine-netns.sh up {name} failed: {done.stdout}{done.stderr}"
        host = f"unix:///run/{name}/docker.sock"
        load = subprocess.run(["bash", "-o", "pipefail", "-c", f"docker save {APP_V1} {APP_V2} | "
                               f"docker -H {host} load -q"], capture_output=True, text=True, timeout=150, check=False)
        assert load.returncode == 0, load.stderr
        client = docker.DockerClient(base_url=host)
        yield Daemon(name, host, client)
    finally:
        if client is not None:
            client.close()
        subprocess.run([SCRIPT, "down", name], capture_output=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def plain_daemon(app_images: dict[str, str]) -> Iterator[Daemon]:
    """Containers are stopped when it stops; `restart: unless-stopped` brings them back."""
    yield from extra_daemon("engine")


@pytest.fixture(scope="module")
def live_restore_daemon(app_images: dict[str, str]) -> Iterator[Daemon]:
    """--live-restore: containers keep running while the daemon is away."""
    yield from extra_daemon("live", "--live-restore")


def faults_on(daemon: Daemon, tmp_path: Path) -> Iterator[Faults]:
    made = Faults(daemon.client, tmp_path, env={**os.environ, "DOCKER_HOST": daemon.host}, fronted=False)
    try:
        yield made
    finally:
        made.tear_down()


@pytest.fixture
def plain(plain_daemon: Daemon, tmp_path: Path) -> Iterator[Faults]:
    yield from faults_on(plain_daemon, tmp_path)


@pytest.fixture
def live(live_restore_daemon: Daemon, tmp_path: Path) -> Iterator[Faults]:
    yield from faults_on(live_restore_daemon, tmp_path)


def assert_rode_it_out(outcome: Outcome, faults: Faults, replicas: int,
                       order: str = "start-first") -> list[tuple[str, str, str]]:
    """The checks every daemon restart must pass; the service's final state."""
    kinds = outcome.kinds()
    assert "stream_lost" in kinds, outcome.text()
    lost = kinds.index("stream_lost")
    # Anything seen come up after the loss was seen on a stream opened again (or by the resync after it).
    if "up" in kinds[lost:]:
        assert "stream_restored" in kinds[lost:lost + kinds[lost:].index("up")], outcome.text()
    assert_consistent(outcome)
    summary = outcome.summary
    project = faults.projects[0]
    images = known_images(faults.client, APP_V1, APP_V2)
    if summary["result"] == "completed":
        expected = [("running", "healthy", APP_V2)] * replicas
        assert summary["replaced"] == replicas, outcome.text()
    else:
        assert summary["result"] == "rolled-back", outcome.text()
        # Every replaced replica went back; under stop-first so did the original of each failed
        # replacement (it was removed before its replacement failed).
        repaired = summary["failed"] if order == "stop-first" else 0
        assert summary["rolled_back"] == summary["replaced"] + repaired, outcome.text()
        expected = [("running", "healthy", APP_V1)] * replicas
    # Containers the restart policy brought back may still be starting: wait (bounded) until all serve.
    assert wait_until_serving(project, images, replicas) == expected, outcome.text()
    assert not lock_exists(project)
    return expected


@pytest.mark.parametrize("moment", ["acknowledged", "settled"],
                         ids=["replacement-starting", "between-replacements"])
def test_a_daemon_restart_mid_rollout_ends_consistent(plain: Faults, plain_daemon: Daemon, moment: str) -> None:
    project = plain.project(APP_V1, replicas=3, restart="unless-stopped")
    write_service(project, APP_V2, replicas=3, restart="unless-stopped")
    rollover = plain.rollover(project, "--step", "1")
    rollover.wait_for(moment)
    plain_daemon.restart()
    outcome = rollover.finish(HANG_S)
    # The daemon stops every container on its way down: an in-flight replacement dies (a failure), or the
    # next request finds no daemon (a failure), or everything was retried until it was back (completed).
    assert_rode_it_out(outcome, plain, replicas=3)


def test_a_daemon_restart_under_stop_first_ends_consistent(plain: Faults, plain_daemon: Daemon) -> None:
    """The daemon stops the starting replacement on its way down (a failure), and the original, removed
    before its replacement was made, must be put back while the daemon is away: the restore is tried
    again until it answers (it is idempotent: a second attempt finishes the first one's container)."""
    project = plain.project(APP_V1, replicas=3, restart="unless-stopped")
    write_service(project, APP_V2, replicas=3, restart="unless-stopped")
    rollover = plain.rollover(project, "--step", "1", "--order", "stop-first")
    rollover.wait_for("acknowledged")  # web-1 is gone, its replacement starting
    plain_daemon.restart()
    outcome = rollover.finish(HANG_S)
    assert_rode_it_out(outcome, plain, replicas=3, order="stop-first")


def test_a_live_restored_daemon_restart_is_ridden_out(live: Faults, live_restore_daemon: Daemon) -> None:
    """With --live-restore nothing stops: rollover loses the stream, opens it again, looks up what it
    missed, and completes. (Engine 20.10 does not resume the healthchecks of live-restored containers,
    moby/moby#41871, fixed in 23.0: so the restart comes while the replacement settles, already healthy;
    a replacement still starting would time out, correctly, and be rolled back.)"""
    project = live.project(APP_V1, replicas=2)
    write_service(project, APP_V2, replicas=2)
    rollover = live.rollover(project, "--step", "1", "--grace", "10")
    rollover.wait_for("up")
    live_restore_daemon.restart()
    outcome = rollover.finish(HANG_S)

    kinds = outcome.kinds()
    assert outcome.returncode == 0, outcome.text()
    assert "stream_restored" in kinds, outcome.text()
    assert kinds.index("stream_lost") < kinds.index("stream_restored"), outcome.text()
    assert outcome.summary["replaced"] == 2, outcome.text()
    assert_rode_it_out(outcome, live, replicas=2)


def test_a_kill_then_a_daemon_restart_before_the_takeover_loses_nothing(plain: Faults, plain_daemon: Daemon) -> None:
    """The SIGKILL campaign's last case: rollover (stop-first) is killed with a replacement starting,
    then the daemon restarts before anyone takes over (it stops every container; the restart policy
    brings back those it stopped, not the one rollover stopped). The takeover must still end with
    every replica on v2, each replica's data (its anonymous /data) on exactly one of them."""
    project = plain.project(APP_V1, replicas=3, restart="unless-stopped", volumes=True)
    for n, container in enumerate(sorted(project.containers(), key=lambda c: c.name), start=1):
        container.exec_run(["sh", "-c", f"echo replica-{n} > /data/marker"])
    write_service(project, APP_V2, replicas=3, restart="unless-stopped", volumes=True)
    first = plain.rollover(project, "--step", "1", "--order", "stop-first")
    first.wait_for("acknowledged")
    first.kill()
    plain_daemon.restart()

    outcome = plain.rollover(project, "--step", "1", "--order", "stop-first").finish(HANG_S)

    assert outcome.returncode == 0, outcome.text()
    assert "took_over_lock" in outcome.kinds(), outcome.text()
    images = known_images(plain.client, APP_V1, APP_V2)
    assert wait_until_serving(project, images, 3) == [("running", "healthy", APP_V2)] * 3, outcome.text()
    markers = sorted(c.exec_run(["cat", "/data/marker"]).output.decode().strip() for c in project.containers())
    assert markers == ["replica-1", "replica-2", "replica-3"], outcome.text()
    assert not lock_exists(project)
