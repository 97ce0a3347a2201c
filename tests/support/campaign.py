"""The SIGKILL campaign: random rounds of rollover killed mid-rollout, then taken over, then checked.

One round, from its seed alone (a seed replays a round exactly; only the engine's own timing varies):
a 6-replica service on the test app, each replica with an anonymous ``/data`` volume holding a
marker of its own, rolled from v1 to v2 with a random step (1, 2, half) and order; the run is
SIGKILLed at a random moment between 0.3 and 6 s, in a third of the rounds its takeover is
SIGKILLed too (0.3 to 4 s in), and in a sixth of them the first run is interrupted (SIGINT) once a
replica was replaced and SIGKILLed during the rollback that starts (0 to 2 s in). A final run to
the same target must converge. Checked, as a user would check:

- the final run exits 0;
- exactly 6 running, healthy replicas, all on the target image;
- every marker intact: each replica's data is mounted by exactly one running replica;
- no stopped or created leftovers of the service, and no lock;
- Compose: ``docker compose up -d`` recreates nothing;
- Compose: behind HAProxy, the final run's probe saw no failed request.

Platforms: ``compose`` (a Compose project behind its own HAProxy) and ``selector`` (plain
containers carrying a label), drawn by the seed; ``swarm`` (a 6-task service on a single-node
swarm of the suite's own) when asked for. Everything is named ``rtest-fault-...`` (Swarm:
``rsw-...``) and removed by name.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rollover.backends.docker.lock import lock_name
from tests.support.engine import APP_V1, APP_V2, remove_containers, remove_volumes
from tests.support.faults import HANG_S, Faults, Outcome, Rollover
from tests.support.swarm import ServiceFactory, SwarmCluster, wait_for
from tests.support.swarm_cli import assert_handed_back, cli_env, images_running, lock_held, service_spec

REPLICAS = 6
PLATFORMS = ("compose", "selector")  # drawn by the seed; "swarm" only when asked for
STEPS = ("1", "2", "half")
# A Swarm user's own update config: it must be theirs again after any round.
SWARM_USER_UPDATE = {"Parallelism": 3, "Delay": 7_000_000_000, "FailureAction": "pause", "Order": "stop-first"}
ORDERS = ("start-first", "stop-first")


@dataclass(frozen=True)
class Round:
    """What one round does, all drawn from its seed."""

    seed: int
    platform: str
    step: str
    order: str
    kill_at_s: float  # when the first run is SIGKILLed
    second_kill_at_s: float | None  # when its takeover is SIGKILLed too, if it is
    during_rollback: bool  # the first run rolls to a broken image and is killed while rolling back

    @classmethod
    def from_seed(cls, seed: int, platform: str | None = None) -> Round:
        draw = random.Random(seed)
        chosen = draw.choice(PLATFORMS)
        return cls(
            seed=seed,
            platform=platform or chosen,
            step=draw.choice(STEPS),
            order=draw.choice(ORDERS),
            kill_at_s=round(draw.uniform(0.3, 6.0), 2),
            second_kill_at_s=round(draw.uniform(0.3, 4.0), 2) if draw.random() < 1 / 3 else None,
            during_rollback=draw.random() < 1 / 6,
        )

    def describe(self) -> str:
        second = f", takeover killed at {self.second_kill_at_s}s" if self.second_kill_at_s is not None else ""
        rollback = ", killed during a rollback" if self.during_rollback else ""
        return (f"seed {self.seed}: {self.platform}, step {self.step}, {self.order}, "
                f"killed at {self.kill_at_s}s{second}{rollback}")


@dataclass
class Verdict:
    round: Round
    problems: list[str] = field(default_factory=list)
    final: Outcome | None = None

    @property
    def converged(self) -> bool:
        return not self.problems

    def line(self) -> str:
        summary = self.final.summary if self.final is not None and self.final.events else {}
        said = f" final run: {summary.get('result')} in {self.final.wall_s}s" if self.final is not None else ""
        verdict = "converged, nothing lost" if self.converged else "; ".join(self.problems)
        return f"{self.round.describe()} ->{said} -> {verdict}"


class Service:
    """The service a round rolls: made on v1 with a marker per replica, checked at the end."""

    def __init__(self, faults: Faults, round_: Round) -> None:
        self.faults, self.round = faults, round_
        self.client = faults.client
        self.tag = faults.tag(APP_V1, f"campaign-{round_.seed}")  # the reference the service is defined by
        self.markers: dict[str, str] = {}  # volume name -> the marker written into it

    # -- what differs per platform ----------------------------------------------------------------

    def containers(self) -> list[Any]:
        raise NotImplementedError

    def rollover(self, *args: str) -> Rollover:
        raise NotImplementedError

    def lock(self) -> str:
        raise NotImplementedError

    def extra_checks(self, final: Outcome) -> list[str]:
        return []

    def tear_down(self) -> None:
        raise NotImplementedError

    # -- the same for every platform --------------------------------------------------------------

    def point_at(self, image: str) -> None:
        """Re-tag the service's reference: what a user's ``docker pull`` of a new release does."""
        self.client.images.get(image).tag(self.tag)

    def write_markers(self) -> None:
        for n, container in enumerate(sorted(self.containers(), key=lambda c: c.name), start=1):
            marker = f"replica-{n}-{uuid.uuid4().hex[:6]}"
            container.exec_run(["sh", "-c", f"echo {marker} > /data/marker"], user="0")
            self.markers[data_volume(container)] = marker

    def check(self, target: str, final: Outcome) -> list[str]:
        problems = []
        if final.returncode != 0:
            problems.append(f"final run exited {final.returncode}: {final.stderr.strip()[-300:]}")
        everything = self.containers()
        running = [c for c in everything if c.status == "running"]
        leftovers = sorted(f"{c.name} ({c.status})" for c in everything if c.status != "running")
        if leftovers:
            problems.append(f"leftovers: {', '.join(leftovers)}")
        target_id = self.client.images.get(target).id
        if len(running) != REPLICAS:
            problems.append(f"{len(running)} running replicas, not {REPLICAS}")
        unhealthy = [c.name for c in running if c.attrs["State"].get("Health", {}).get("Status") != "healthy"]
        stale = [c.name for c in running if c.attrs["Image"] != target_id]
        if unhealthy:
            problems.append(f"not healthy: {', '.join(sorted(unhealthy))}")
        if stale:
            problems.append(f"not on the target image: {', '.join(sorted(stale))}")
        problems += self._lost_markers(running)
        if self.client.containers.list(all=True, filters={"name": f"^{self.lock()}$"}):
            problems.append(f"lock {self.lock()} left behind")
        return problems + self.extra_checks(final)

    def _lost_markers(self, running: Sequence[Any]) -> list[str]:
        found: dict[str, list[str]] = {}
        for container in running:
            output = container.exec_run(["cat", "/data/marker"]).output.decode().strip()
            found.setdefault(output or "(empty /data)", []).append(container.name)
        lost = sorted(set(self.markers.values()) - set(found))
        doubled = sorted(marker for marker, names in found.items() if len(names) > 1)
        fresh = sorted(marker for marker in found if marker not in self.markers.values())
        return ([f"markers lost: {', '.join(lost)}"] if lost else []) + (
            [f"markers mounted twice: {', '.join(doubled)}"] if doubled else []) + (
            [f"replicas with data nobody wrote: {', '.join(fresh)}"] if fresh else [])


def data_volume(container: Any) -> str:
    container.reload()
    [name] = [m["Name"] for m in container.attrs["Mounts"] if m.get("Destination") == "/data"]
    return str(name)


class ComposeService(Service):
    def __init__(self, faults: Faults, round_: Round) -> None:
        super().__init__(faults, round_)
        self.project = faults.project(self.tag, replicas=REPLICAS, volumes=True)

    def containers(self) -> list[Any]:
        containers = self.project.containers()
        for container in containers:
            container.reload()
        self.project.remember_volumes()
        return containers

    def rollover(self, *args: str) -> Rollover:
        return self.faults.rollover(self.project, *args)

    def lock(self) -> str:
        return f"rollover-lock-{self.project.name}-web"

    def extra_checks(self, final: Outcome) -> list[str]:
        problems = []
        before = sorted(c.id for c in self.containers())
        self.project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        after = sorted(c.id for c in self.containers())
        if after != before:
            problems.append("docker compose up -d recreated or added containers")
        probe = final.summary.get("probe") if final.events else None
        if probe is not None and probe.get("failed"):
            problems.append(f"the probe saw {probe['failed']} of {probe['sent']} requests fail")
        return problems

    def tear_down(self) -> None:
        pass  # Faults tears its projects down


class SelectorService(Service):
    """Plain containers ``rtest-fault-sel-<seed>-N`` carrying one label, each on a random loopback port."""

    def __init__(self, faults: Faults, round_: Round) -> None:
        super().__init__(faults, round_)
        self.label = f"rtest-fault-campaign={round_.seed}-{uuid.uuid4().hex[:6]}"
        value = self.label.partition("=")[2]
        self.volumes: set[str] = set()
        for n in range(1, REPLICAS + 1):
            subprocess.run(["docker", "run", "-d", "--name", f"rtest-fault-sel-{value}-{n}", "--label", self.label,
                            "-p", "127.0.0.1::8080", "-v", "/data", "--stop-timeout", "5", self.tag],
                           check=True, capture_output=True)
        wait_for(lambda: all(c.attrs["State"].get("Health", {}).get("Status") == "healthy" for c in self.containers()),
                 60, "the selector service to turn healthy")

    def containers(self) -> list[Any]:
        containers = list(self.client.containers.list(all=True, filters={"label": self.label}))
        for container in containers:
            container.reload()
            self.volumes |= {m["Name"] for m in container.attrs["Mounts"] if m.get("Type") == "volume"}
        return containers

    def rollover(self, *args: str) -> Rollover:
        rollover = Rollover(["--selector", self.label, *args], self.faults.directory, self.faults.env)
        self.faults.rollovers.append(rollover)
        return rollover

    def lock(self) -> str:
        key, _, value = self.label.partition("=")
        return lock_name("web", project=None, selector={key: value})

    def tear_down(self) -> None:
        remove_containers(self.client, [c.id for c in self.containers()] + [self.lock()])  # volumes noted first
        remove_volumes(self.client, self.volumes)


class SwarmService(Service):
    """A 6-task Swarm service on a swarm of the suite's own (tests/support/swarm.py), with the user's
    own update config (parallelism 3, delay 7 s, failure action pause), rolled with ``--image``.

    Swarm gives every task fresh anonymous volumes (nothing carries them from task to task, with
    or without rollover), so there are no markers to check; what is checked is the service: every
    task on the target, the user's update config handed back, no lock."""

    def __init__(self, faults: Faults, round_: Round, cluster: SwarmCluster, factory: ServiceFactory) -> None:
        self.faults, self.round, self.cluster = faults, round_, cluster
        self.name = factory(APP_V1, replicas=REPLICAS, update_config=SWARM_USER_UPDATE)

    def point_at(self, image: str) -> None:
        pass  # rolled with --image

    def write_markers(self) -> None:
        pass

    def rollover(self, *args: str) -> Rollover:
        nodes = ",".join(f"{hostname}={host}" for hostname, host in sorted(self.cluster.hosts.items()))
        rollover = Rollover(["--platform", "swarm", "--swarm-nodes", nodes, "--image", APP_V2, *args],
                            self.faults.directory, cli_env(self.cluster), service=self.name)
        self.faults.rollovers.append(rollover)
        return rollover

    def check(self, target: str, final: Outcome) -> list[str]:
        problems = []
        if final.returncode != 0:
            problems.append(f"final run exited {final.returncode}: {final.stderr.strip()[-300:]}")
        # The manager's task list follows the nodes' events (which ended the run) a moment later.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: images_running(self.cluster, self.name) == [target] * REPLICAS, 30, "the tasks")
        images = images_running(self.cluster, self.name)
        if images != [target] * REPLICAS:
            problems.append(f"running: {images}")
        try:
            assert_handed_back(self.cluster, self.name, target)
        except AssertionError as exc:
            problems.append(f"not handed back: {exc}")
        handed = service_spec(self.cluster, self.name)["Spec"].get("UpdateConfig") or {}
        if {key: handed.get(key) for key in SWARM_USER_UPDATE} != SWARM_USER_UPDATE:
            problems.append(f"update config {handed}, not the user's")
        if lock_held(self.cluster, self.name):
            problems.append("lock left behind")
        return problems

    def tear_down(self) -> None:
        pass  # the ServiceFactory removes its services


def play(faults: Faults, round_: Round, swarm: tuple[SwarmCluster, ServiceFactory] | None = None) -> Verdict:
    """Play one round on ``faults``' engine (Swarm rounds on ``swarm``); the verdict lists every
    check that failed."""
    service: Service
    if round_.platform == "swarm":
        assert swarm is not None, "a Swarm round needs a swarm"
        service = SwarmService(faults, round_, *swarm)
    else:
        service = (ComposeService if round_.platform == "compose" else SelectorService)(faults, round_)
    verdict = Verdict(round_)
    try:
        service.write_markers()
        args = ("--step", round_.step, "--order", round_.order)
        service.point_at(APP_V2)
        first = service.rollover(*args)
        if round_.during_rollback:
            # Interrupted once a replica was replaced, it rolls back; killed while it does.
            first.wait_for("settled", deadline_s=HANG_S)
            first.interrupt(signal.SIGINT)
            first.wait_for("rollback", deadline_s=HANG_S)
            _kill_at(first, time.monotonic() - first.started + random.Random(round_.seed).uniform(0.0, 2.0))
        else:
            _kill_at(first, round_.kill_at_s)
        if round_.second_kill_at_s is not None:
            _kill_at(service.rollover(*args), round_.second_kill_at_s)
        verdict.final = service.rollover(*args).finish()
        verdict.problems = service.check(APP_V2, verdict.final)
    finally:
        service.tear_down()
    return verdict


def _kill_at(rollover: Rollover, at_s: float) -> None:
    """SIGKILL ``rollover`` ``at_s`` seconds after it started (or find it already finished)."""
    try:
        rollover.process.wait(timeout=max(0.0, rollover.started + at_s - time.monotonic()))
    except subprocess.TimeoutExpired:
        rollover.process.send_signal(signal.SIGKILL)
        rollover.process.wait(timeout=30)
