"""`rollover redeploy` end to end: the console script against the real engine and Compose v2.

Each test starts a Compose project named rtest-docker-... (the ``compose_project`` fixture tears
it down by name), edits its compose file the way a user would, runs the CLI as a subprocess and
then checks what a user would check: exit code, the JSON stream, ``docker ps``/``docker compose
ps``, what the replicas serve. Capacity during a rollout is measured from the engine's own event
stream (every health change of every container of the service), never from sleeps.
"""

from __future__ import annotations

import getpass
import json
import os
import queue
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rollover.backends.docker.lock import lock_name
from tests.support.engine import APP_BROKEN, APP_V1, APP_V2, ComposeProject, run, unique_name

pytestmark = pytest.mark.engine

MakeProject = Callable[..., ComposeProject]

ROLLOVER = Path(sys.executable).with_name("rollover")  # the console script of the venv running pytest
RUN_TIMEOUT_S = 120


# -- running the CLI -------------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """The caller's environment without ROLLOVER_*/TUTUM_* settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ROLLOVER_", "TUTUM_"))}
    env.update(extra)
    return env


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every stdout line as JSON (``--output json``): one object per line, the summary last."""
        return [json.loads(line) for line in self.stdout.splitlines()]

    @property
    def summary(self) -> dict[str, Any]:
        last = self.events[-1]
        assert last["event"] == "summary", self.stdout
        return last

    @property
    def plan(self) -> dict[str, Any]:
        first = self.events[0]
        assert first["event"] == "plan", self.stdout
        return first

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def rollover(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Outcome:
    assert ROLLOVER.exists(), f"the console script {ROLLOVER} is not installed"
    done = subprocess.run(
        [str(ROLLOVER), *args], cwd=cwd, env=env or cli_env(), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S, check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


class LiveRollout:
    """A ``rollover redeploy --output json`` running in the background, its events read as they come."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [str(ROLLOVER), *args, "--output", "json"], cwd=cwd, env=cli_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    def wait_for_event(self, kind: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind!r} event within {timeout_s}s:\n{''.join(self.stdout)}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the rollout ended without a {kind!r} event:\n{self.finish()}")
            self.stdout.append(line)
            event: dict[str, Any] = json.loads(line)
            if event["event"] == kind:
                return event

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> Outcome:
        code = self.process.wait(timeout=timeout_s)
        for reader in self._readers:
            reader.join(timeout=10)
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.stdout.append(line)
        return Outcome(code, "".join(self.stdout), "".join(self._stderr))

    def kill(self) -> None:
        """Only for a test that failed half-way: never leave our own rollout running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


# -- what the engine says --------------------------------------------------------------------------


class HealthWatch:
    """How many replicas of a Compose service are up, replayed from the engine's own events.

    Subscribed before the rollout starts, so it sees every change. A container is up from its
    ``health_status: healthy`` until it is killed (a stop's SIGTERM), dies or is removed: those
    are what rollover does to a replica. An ``unhealthy`` report of a container that had been
    healthy is the engine's verdict on a probe (on a loaded machine a probe can time out), not
    something rollover did: it is kept in ``flaps`` and shown, but does not take it out of the
    count. ``lowest`` is the fewest replicas that were ever up.
    """

    def __init__(self, client: Any, project: ComposeProject, service: str = "web") -> None:
        labels = [f"com.docker.compose.project={project.name}", f"com.docker.compose.service={service}"]
        # Returns once the engine answered: the subscription is live before the snapshot below.
        self._stream = client.events(
            decode=True,
            filters={"type": "container", "label": labels,
                     "event": ["health_status", "kill", "die", "destroy"]},
        )
        self._changed = threading.Condition()
        self.up: set[str] = set()
        for container in service_containers(project):
            if container.attrs["State"]["Running"] and _has_been_healthy(container.attrs):
                self.up.add(str(container.id))
        self.lowest = len(self.up)
        self.history: list[str] = [f"start: {len(self.up)} up"]
        self.flaps: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                actor = event.get("Actor") or {}
                name = (actor.get("Attributes") or {}).get("name", "?")
                self._apply(str(event.get("Action") or event.get("status")), str(actor.get("ID")), name)
        except Exception:  # closed under the reader by stop()
            pass

    def _apply(self, action: str, container_id: str, name: str) -> None:
        with self._changed:
            if action == "health_status: healthy":
                self.up.add(container_id)
            elif action in ("kill", "die", "destroy"):
                self.up.discard(container_id)
            elif action == "health_status: unhealthy":
                self.flaps.append(name)
            else:
                return
            self.lowest = min(self.lowest, len(self.up))
            self.history.append(f"{action} {name}: {len(self.up)} up")
            self._changed.notify_all()

    def wait_until_up_are(self, ids: set[str], timeout_s: float = 30) -> None:
        """Wait until the replayed events agree with the engine's final state."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.up == ids, timeout=timeout_s):
                raise AssertionError(f"events say up {sorted(self.up)}, the engine {sorted(ids)}")

    def stop(self) -> None:
        self._stream.close()
        self._reader.join(timeout=10)

    def __str__(self) -> str:
        return "\n".join([*self.history, f"unhealthy reports: {self.flaps}"])


def _has_been_healthy(attrs: dict[str, Any]) -> bool:
    """One passing probe makes a container healthy; the log keeps the last five."""
    health = attrs["State"].get("Health") or {}
    return health.get("Status") == "healthy" or any(p["ExitCode"] == 0 for p in health.get("Log") or [])


def _health(attrs: dict[str, Any]) -> str | None:
    return (attrs["State"].get("Health") or {}).get("Status")


def service_containers(project: ComposeProject) -> list[Any]:
    """Every container of the service, whatever its state, freshly inspected."""
    containers = project.containers()
    for container in containers:
        container.reload()
    return containers


def ids_of(containers: Iterable[Any]) -> set[str]:
    return {str(container.id) for container in containers}


def switch_image(project: ComposeProject, old: str, new: str) -> None:
    """What the user does: edit the image in compose.yaml."""
    text = project.file.read_text()
    assert f"image: {old}\n" in text
    project.file.write_text(text.replace(f"image: {old}\n", f"image: {new}\n"))


def served(container_id: str) -> str:
    return run("docker", "exec", container_id, "wget", "-q", "-O-", "http://127.0.0.1:8080/version.txt").strip()


def assert_all_healthy_on(project: ComposeProject, image_id: str, replicas: int) -> list[Any]:
    containers = service_containers(project)
    assert len(containers) == replicas, [c.name for c in containers]
    for container in containers:
        assert container.attrs["Image"] == image_id, (container.name, container.attrs["Config"]["Image"])
        assert container.attrs["State"]["Status"] == "running", container.name
        assert _health(container.attrs) == "healthy", (container.name, container.attrs["State"])
    return containers


def assert_compose_owns_exactly(project: ComposeProject, ids: set[str]) -> None:
    """`docker compose ps` lists exactly these, and `docker compose up -d` recreates none of them."""
    assert set(project.compose("ps", "--all", "-q", "--no-trunc").split()) == ids
    said = project.compose("up", "-d")
    assert "Recreate" not in said and "Creat" not in said, said
    after = service_containers(project)
    assert ids_of(after) == ids
    assert all(container.attrs["State"]["Status"] == "running" for container in after)


def max_in_flight(events: list[dict[str, Any]]) -> int:
    """The most replicas between their request_sent and their settled/failed/skipped at once."""
    in_flight: set[str] = set()
    most = 0
    for event in events:
        if event["event"] == "request_sent":
            in_flight.add(event["replica"])
            most = max(most, len(in_flight))
        elif event["event"] in ("settled", "failed", "skipped"):
            in_flight.discard(event.get("replica", ""))
    return most


def expected_batch(step: str, replicas: int) -> int:
    return {"1": 1, "2": 2, "half": replicas // 2, "all": replicas}[step]


# -- 1-3: rolled to the new image, capacity kept, at most `step` at a time -------------------------


@pytest.mark.parametrize(
    ("order", "step", "replicas"),
    [
        pytest.param("start-first", "1", 4, id="start-first-step-1"),
        pytest.param("start-first", "2", 4, id="start-first-step-2"),
        pytest.param("start-first", "half", 5, id="start-first-step-half"),
        pytest.param("start-first", "all", 4, id="start-first-step-all"),
        pytest.param("stop-first", "1", 4, id="stop-first-step-1"),
        pytest.param("stop-first", "half", 4, id="stop-first-step-half"),
    ],
)
def test_redeploy_rolls_the_service_to_the_new_image(
    compose_project: MakeProject, docker_client: Any, app_images: dict[str, str], order: str, step: str,
    replicas: int,
) -> None:
    project = compose_project(APP_V1, replicas=replicas)
    originals = ids_of(project.containers())
    switch_image(project, APP_V1, APP_V2)

    watch = HealthWatch(docker_client, project)
    try:
        outcome = rollover("redeploy", "web", "--project", project.name, "--order", order, "--step", step,
                           "--output", "json", cwd=project.directory)
        assert outcome.code == 0, str(outcome)
        containers = assert_all_healthy_on(project, app_images[APP_V2], replicas)
        final = ids_of(containers)
        watch.wait_until_up_are(final)
    finally:
        watch.stop()

    summary, plan, events = outcome.summary, outcome.plan, outcome.events
    assert (summary["replaced"], summary["failed"], summary["result"]) == (replicas, 0, "completed"), str(outcome)
    batch = expected_batch(step, replicas)
    assert (plan["order"], plan["batch"], len(plan["targets"])) == (order, batch, replicas)
    # Times are seconds from the plan, up to the summary. (Lines need not be in time order: with
    # step 'all' a replacement can be up before the one request for all of them is acknowledged.)
    times = [event["t"] for event in events]
    assert 0 <= plan["t"] <= min(times[1:]) and max(times) == summary["t"], [(e["event"], e["t"]) for e in events]
    assert summary["t"] == pytest.approx(summary["duration_s"], abs=0.01)

    # Every container is one rollover made, none of the originals is left.
    assert not final & originals
    made = {event["replacement_id"] for event in events if event["event"] == "acknowledged"}
    assert {container_id[:12] for container_id in final} == made

    # Capacity, from every health change the engine reported during the rollout.
    assert len(watch.history) > 2 * replicas  # each original went, each replacement came
    floor = replicas if order == "start-first" else replicas - batch
    assert watch.lowest >= floor, f"replicas up dropped to {watch.lowest} (floor {floor}):\n{watch}"
    if order == "start-first":
        seen = [(event["event"], event.get("replica")) for event in events]
        for name in plan["targets"]:
            assert seen.index(("up", name)) < seen.index(("retired", name))

    # At most `step` replicas in redeployment at once; 'all' sends them all at once.
    assert max_in_flight(events) <= batch
    if step == "all":
        assert max_in_flight(events) == replicas

    assert_compose_owns_exactly(project, final)
    for container in containers:
        assert served(container.id) == "v2"
        assert "APP_VERSION=v2" in container.attrs["Config"]["Env"]


# -- 4: volumes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["start-first", "stop-first"])
def test_named_and_anonymous_volume_data_survives(
    compose_project: MakeProject, app_images: dict[str, str], order: str
) -> None:
    replicas = 4
    project = compose_project(APP_V1, replicas=replicas, volumes=True)
    before = service_containers(project)
    tokens = set()
    for container in before:
        token = f"token-of-{container.name}"
        tokens.add(token)
        run("docker", "exec", container.id, "sh", "-c", f"echo {token} > /data/token")
    run("docker", "exec", before[0].id, "sh", "-c", "echo kept > /shared/note")
    volumes_before = {m["Name"] for c in before for m in c.attrs["Mounts"] if m["Type"] == "volume"}
    assert len(volumes_before) == replicas + 1  # one anonymous /data each and the named one
    switch_image(project, APP_V1, APP_V2)

    outcome = rollover("redeploy", "web", "--project", project.name, "--order", order, "--step", "2",
                       "--output", "json", cwd=project.directory)
    project.remember_volumes()

    assert outcome.code == 0, str(outcome)
    assert outcome.summary["replaced"] == replicas
    after = assert_all_healthy_on(project, app_images[APP_V2], replicas)
    assert not ids_of(after) & ids_of(before)
    # Each replacement has one predecessor's anonymous volume, the named one is shared: no new volumes.
    assert {m["Name"] for c in after for m in c.attrs["Mounts"] if m["Type"] == "volume"} == volumes_before
    found = {run("docker", "exec", c.id, "cat", "/data/token").strip() for c in after}
    assert found == tokens
    assert {run("docker", "exec", c.id, "cat", "/shared/note").strip() for c in after} == {"kept"}
    assert_compose_owns_exactly(project, ids_of(after))


# -- 5: a new image that never turns healthy -------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [
        "start-first",
        "stop-first",
    ],
)
def test_an_image_that_never_turns_healthy_is_rolled_back(
    compose_project: MakeProject, docker_client: Any, app_images: dict[str, str], order: str
) -> None:
    replicas = 4
    # A first health probe 3 s after start: a replica rollover puts back is visibly not up yet if
    # rollover returns right after starting it. The broken image turns unhealthy at its first probe.
    project = compose_project(APP_V1, replicas=replicas, healthcheck={"interval": "3s", "retries": "1"})
    originals = ids_of(project.containers())
    switch_image(project, APP_V1, APP_BROKEN)

    outcome = rollover("redeploy", "web", "--project", project.name, "--order", order, "--step", "2",
                       "--output", "json", cwd=project.directory)
    # Looked at the moment rollover returns, as a user (or the next CI step) would.
    at_exit = {c.name: (c.attrs["Image"], c.attrs["State"]["Status"], _health(c.attrs))
               for c in service_containers(project)}

    assert outcome.code == 1, str(outcome)
    summary = outcome.summary
    assert summary["result"] == "rolled-back" and summary["failed"] >= 1, summary
    assert "unhealthy" in str(summary["reason"])
    assert at_exit == {name: (app_images[APP_V1], "running", "healthy") for name in at_exit}, at_exit
    containers = assert_all_healthy_on(project, app_images[APP_V1], replicas)
    assert all(served(container.id) == "v1" for container in containers)
    if order == "start-first":
        assert ids_of(containers) == originals  # the failed replacements went, the originals never did
    assert set(project.compose("ps", "--all", "-q", "--no-trunc").split()) == ids_of(containers)


# -- 6: one rollout at a time ----------------------------------------------------------------------


def test_a_second_rollout_of_the_same_service_is_locked_out(
    compose_project: MakeProject, docker_client: Any, app_images: dict[str, str], tmp_path: Path
) -> None:
    replicas = 4
    project = compose_project(APP_V1, replicas=replicas)
    switch_image(project, APP_V1, APP_V2)
    lock = f"rollover-lock-{project.name}-web"
    # The first rollout's post-start hook holds its first replacement until the gate opens, so it
    # is still running (and holding the lock) however slow the second one is, and then completes.
    gate = tmp_path / "gate"
    hold = shlex.join(["sh", "-c", f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"])

    first = LiveRollout("redeploy", "web", "--project", project.name, "--post-start", hold, cwd=project.directory)
    try:
        first.wait_for_event("request_sent")
        assert [c for c in docker_client.containers.list(all=True, filters={"name": lock}) if c.name == lock]
        second = rollover("redeploy", "web", "--project", project.name, cwd=project.directory)
        gate.touch()
        done = first.finish()
    finally:
        gate.touch()
        first.kill()

    assert second.code == 3, str(second)
    [message] = second.stderr.strip().splitlines()
    assert message.startswith("error: Locked: rollout of web already running: held by "), message
    assert f"{getpass.getuser()}@{socket.gethostname()} pid {first.process.pid}" in message
    assert lock in message

    assert done.code == 0, str(done)
    assert (done.summary["replaced"], done.summary["result"]) == (replicas, "completed")
    assert_all_healthy_on(project, app_images[APP_V2], replicas)
    assert not [c for c in docker_client.containers.list(all=True, filters={"name": lock}) if c.name == lock]


# -- 7: bad input changes nothing ------------------------------------------------------------------


def engine_state(client: Any, project: str, lock_names: Iterable[str]) -> dict[str, Any]:
    """Every container of the project (all states) and every lock container that could be made."""
    containers = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    for container in containers:
        container.reload()
    state = {
        str(c.id): (c.name, c.attrs["Image"], c.attrs["State"]["Status"], c.attrs["State"]["StartedAt"],
                    c.attrs["State"]["FinishedAt"])
        for c in containers
    }
    wanted = set(lock_names)
    locks = sorted(c.name for c in client.containers.list(all=True, filters={"name": "rollover-lock-"})
                   if c.name in wanted)
    return {"containers": state, "locks": locks}


def check_refused(outcome: Outcome, *named: str) -> list[str]:
    """Exit 2, nothing on stdout, one `error: ...` line naming what was wrong; the problems found."""
    problems = []
    lines = outcome.stderr.strip().splitlines()
    if outcome.code != 2:
        problems.append(f"exit {outcome.code}, expected 2")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append("stderr is not one `error: ...` line")
    problems += [f"the message does not name {word!r}" for word in named if word not in outcome.stderr]
    if outcome.stdout:
        problems.append("something was printed on stdout")
    return problems


def test_bad_input_exits_2_and_changes_nothing(
    compose_project: MakeProject, docker_client: Any, app_images: dict[str, str]
) -> None:
    project = compose_project(APP_V1, replicas=4)
    switch_image(project, APP_V1, APP_V2)  # a real rollout would have something to do
    missing_project = unique_name("missing")
    selector = f"rtest.none={unique_name('sel')}"
    locks = [
        f"rollover-lock-{project.name}-web", f"rollover-lock-{project.name}-nosuch",
        f"rollover-lock-{missing_project}-web", lock_name("web", project=None, selector=dict([selector.split("=")])),
    ]
    base = ["redeploy", "web", "--project", project.name]
    cases: list[tuple[str, list[str], dict[str, str], tuple[str, ...]]] = [
        ("unknown service", ["redeploy", "nosuch", "--project", project.name], {}, ("nosuch",)),
        ("unknown project", ["redeploy", "web", "--project", missing_project], {}, (missing_project,)),
        ("missing image", [*base, "--image", "rollover-test/app:nope"], {}, ("rollover-test/app:nope",)),
        ("unreachable unix socket", base, {"DOCKER_HOST": "unix:///nonexistent.sock"}, ("/nonexistent.sock",)),
        ("unreachable tcp port", base, {"DOCKER_HOST": "tcp://127.0.0.1:1"}, ("tcp://127.0.0.1:1",)),
        ("step 0", [*base, "--step", "0"], {}, ("step '0'",)),
        ("selector matching nothing", ["redeploy", "web", "--selector", selector], {}, (selector,)),
    ]

    problems: list[str] = []

    def refuse(what: str, args: list[str], env: dict[str, str], named: tuple[str, ...]) -> None:
        before = engine_state(docker_client, project.name, locks)
        outcome = rollover(*args, cwd=project.directory, env=cli_env(**env))
        found = check_refused(outcome, *named)
        if engine_state(docker_client, project.name, locks) != before:
            found.append("the engine's state changed")
        problems.extend(f"{what}: {problem}\n{outcome}" for problem in found)

    for what, args, env, named in cases:
        refuse(what, args, env, named)
    project.compose("stop", "-t", "1")  # the service exists but has no running replica
    refuse("no running replica", base, {}, ("no running replicas",))
    assert not problems, "\n".join(problems)


def test_a_service_with_container_name_is_refused(compose_project: MakeProject, docker_client: Any) -> None:
    project = compose_project(APP_V1, replicas=1, container_name=unique_name("fixed"))
    switch_image(project, APP_V1, APP_V2)
    locks = [f"rollover-lock-{project.name}-web"]
    before = engine_state(docker_client, project.name, locks)

    outcome = rollover("redeploy", "web", "--project", project.name, cwd=project.directory)

    assert check_refused(outcome, "container_name") == [], str(outcome)
    assert engine_state(docker_client, project.name, locks) == before


# -- 8: the timeline -------------------------------------------------------------------------------


def test_timeline_draws_one_row_per_replica_and_the_axis(
    compose_project: MakeProject, app_images: dict[str, str]
) -> None:
    replicas = 4
    project = compose_project(APP_V1, replicas=replicas)
    switch_image(project, APP_V1, APP_V2)

    outcome = rollover("redeploy", "web", "--project", project.name, "--step", "2", "--timeline",
                       cwd=project.directory)

    assert outcome.code == 0, str(outcome)
    lines = outcome.stdout.splitlines()
    [summary_at] = [index for index, line in enumerate(lines) if line.startswith("completed: ")]
    assert lines[summary_at].startswith(f"completed: {replicas} replaced, 0 failed")
    *rows, axis = lines[summary_at + 1:]
    assert len(rows) == replicas, outcome.stdout
    assert all(re.fullmatch(r"-*_*\|", row) for row in rows), rows  # running/requesting, redeploying, up
    # Under 10 s the chart draws 10 columns a second and says so on the axis: "|0 |2.8  (1 column = 0.1s)".
    drawn = re.fullmatch(r"\|0( \|\d+(\.\d)?)+(  \(1 column = 0\.1s\))?", axis)
    assert drawn, axis
    columns_per_s = 10 if drawn.group(3) else 1
    last_tick_s = float(axis.split("  (")[0].rsplit("|", 1)[1])
    assert round(last_tick_s * columns_per_s) == max(len(row) for row in rows)  # the column after the last event
    assert_all_healthy_on(project, app_images[APP_V2], replicas)


# -- 9: the seed's variables -----------------------------------------------------------------------


def test_the_seed_variables_still_drive_a_rollout(compose_project: MakeProject, app_images: dict[str, str]) -> None:
    replicas = 4
    project = compose_project(APP_V1, replicas=replicas)
    switch_image(project, APP_V1, APP_V2)
    env = cli_env(TUTUM_SERVICE="web", TUTUM_REDEPLOY_STEP="half", TUTUM_GRACE_PERIOD="0", ROLLOVER_OUTPUT="json")

    outcome = rollover("redeploy", cwd=project.directory, env=env)  # no argument, no flag: the project from here

    assert outcome.code == 0, str(outcome)
    for old, new in [("TUTUM_SERVICE", "ROLLOVER_SERVICE"), ("TUTUM_REDEPLOY_STEP", "ROLLOVER_STEP"),
                     ("TUTUM_GRACE_PERIOD", "ROLLOVER_GRACE_PERIOD")]:
        assert f"notice: {old} is read as {new}" in outcome.stderr, str(outcome)
    plan = outcome.plan
    assert (plan["service"], plan["step"], plan["batch"], plan["grace_s"]) == ("web", "half", replicas // 2, 0)
    assert plan["where"] == f"compose project {project.name}, service web"
    assert max_in_flight(outcome.events) <= replicas // 2
    assert (outcome.summary["replaced"], outcome.summary["result"]) == (replicas, "completed")
    assert_all_healthy_on(project, app_images[APP_V2], replicas)



# -- the seed's 'service' step: no grace ----------------------------------------------------------


def test_step_all_takes_no_grace_period_on_the_engine(compose_project: MakeProject, app_images: dict[str, str]) -> None:
    replicas = 3
    project = compose_project(APP_V1, replicas=replicas)
    switch_image(project, APP_V1, APP_V2)

    outcome = rollover("redeploy", "web", "--project", project.name, "--step", "all", "--grace", "5",
                       "--output", "json", cwd=project.directory)

    assert outcome.code == 0, str(outcome)
    assert outcome.plan["grace_s"] == 0
    up = {event["replica"]: event["t"] for event in outcome.events if event["event"] == "up"}
    settled = {event["replica"]: event["t"] for event in outcome.events if event["event"] == "settled"}
    assert set(up) == set(settled) == set(outcome.plan["targets"])
    # A 5 s grace would put every 'settled' 5 s after its 'up' (and the summary after that).
    assert all(settled[name] - up[name] < 1 for name in up), (up, settled)
    assert outcome.summary["t"] - max(up.values()) < 5
    assert_all_healthy_on(project, app_images[APP_V2], replicas)
