"""`rollover redeploy --platform swarm` end to end: the console script against real swarms.

The swarms are the suite's own (``scripts/swarm-cluster.sh``: one dockerd per node in a network
namespace, nodes at 10.213.0.1x). Each test makes its services, runs the CLI as a subprocess with
DOCKER_HOST set to the manager and ``--swarm-nodes`` naming every node's daemon, and then checks
what a user would check: the exit code, the JSON stream, the tasks the manager lists (state,
image, node), and what each task answers on its published host port.

Waiting is on conditions only (the task list, a subprocess's exit), never on sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.swarm import (
    APP_BROKEN,
    APP_V1,
    APP_V2,
    ServiceFactory,
    SwarmCluster,
    running_tasks,
    task_endpoints,
    wait_for,
)
from tests.support.swarm_cli import (
    Outcome,
    answers,
    assert_handed_back,
    front_of,
    images_running,
    rollover,
    rollover_acting_at,
    service_spec,
)

pytestmark = pytest.mark.swarm

def replacement_ids(outcome: Outcome) -> set[str]:
    return {event["replacement_id"] for event in outcome.of_kind("acknowledged")}


def most_in_flight(outcome: Outcome) -> int:
    """The most requests out at once: sent and not yet settled (up), failed or skipped."""
    in_flight = most = 0
    for event in outcome.events:
        if event["event"] == "request_sent":
            in_flight += 1
            most = max(most, in_flight)
        elif event["event"] in ("settled", "failed", "skipped"):
            in_flight -= 1
    return most


# -- tests -----------------------------------------------------------------------------------------


class TestThreeNodeRollouts:
    @pytest.mark.parametrize(("step", "platform"), [("1", "swarm"), ("2", "swarm"), ("half", "auto")])
    def test_six_tasks_over_three_nodes_roll_to_v2(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory, step: str, platform: str
    ) -> None:
        cluster, name = three_node_swarm, make_service(replicas=6, host_port=True)
        before = running_tasks(cluster, name)
        assert len({task["NodeID"] for task in before}) == 3  # spread over every node

        outcome = rollover(cluster, name, "--image", APP_V2, "--step", step, platform=platform)

        assert outcome.code == 0, outcome
        assert outcome.plan["platform"] == "swarm"  # also what --platform auto picked
        assert outcome.plan["targets"] and len(outcome.plan["targets"]) == 6
        summary = outcome.summary
        assert (summary["result"], summary["replaced"], summary["failed"]) == ("completed", 6, 0), outcome
        # "up" came from the nodes' events; the manager's list follows a moment later.
        wait_for(lambda: images_running(cluster, name) == [APP_V2] * 6, 20, "six running v2 tasks")
        running = running_tasks(cluster, name)
        assert {task["ID"][:12] for task in running} == replacement_ids(outcome)  # exactly what it reported
        assert not {task["ID"] for task in running} & {task["ID"] for task in before}
        # Swarm picks the slot; the replica each replacement is reported (and retired) for is the
        # task it displaced, the one in its slot (replicated tasks are named SERVICE.SLOT).
        acknowledged = outcome.of_kind("acknowledged")
        assert [event["replica"] for event in acknowledged] == [event["replacement"] for event in acknowledged]
        assert answers(list(task_endpoints(cluster, name).values())) == ["v2"] * 6
        assert service_spec(cluster, name)["Spec"]["Mode"]["Replicated"]["Replicas"] == 6
        assert_handed_back(cluster, name, APP_V2)

    def test_an_image_that_never_gets_healthy_is_rolled_back(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = three_node_swarm, make_service(replicas=6, host_port=True)

        outcome = rollover(cluster, name, "--image", APP_BROKEN)

        assert outcome.code == 1, outcome
        summary = outcome.summary
        assert summary["result"] == "rolled-back", outcome
        assert summary["failed"] >= 1 and summary["reason"], outcome
        # The failure explains itself in Swarm's words: the task's error (or status message) and its
        # slot's history from the manager (the v1 task it was to replace, then itself, oldest first),
        # and from the node's own daemon the health checks that failed (wget's 404 for the file the
        # image lacks). Seen: task_error 'starting', history [running 'started', starting].
        for failed in outcome.of_kind("failed"):
            diagnosis = failed["diagnosis"]
            assert diagnosis["task_error"] and diagnosis["state"], diagnosis
            history = diagnosis["task_history"]
            assert len(history) >= 2 and all(entry["at"] and entry["state"] for entry in history), diagnosis
            assert [entry["at"] for entry in history] == sorted(entry["at"] for entry in history), diagnosis
            checks = diagnosis["health_checks"]
            assert checks and all(check["exit_code"] != 0 for check in checks), diagnosis
            assert any(check["exit_code"] == 1 and "404" in check["output"] for check in checks), diagnosis
        wait_for(lambda: images_running(cluster, name) == [APP_V1] * 6, 30, "six running v1 tasks")
        # Running means healthy for a task with a healthcheck; the tasks say so themselves too.
        assert answers(list(task_endpoints(cluster, name).values())) == ["v1"] * 6
        assert_handed_back(cluster, name, APP_V1)

    def test_a_global_service_rolls_node_by_node(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = three_node_swarm, make_service(global_mode=True)
        nodes = {task["NodeID"] for task in running_tasks(cluster, name)}
        assert len(nodes) == 3

        outcome = rollover(cluster, name, "--image", APP_V2)

        assert outcome.code == 0, outcome
        assert (outcome.summary["result"], outcome.summary["replaced"]) == ("completed", 3), outcome
        assert "(global," in outcome.plan["where"]
        # One node at a time: a global task's name is <service>.<node id>.
        replaced_on = [event["replacement"].removeprefix(f"{name}.") for event in outcome.of_kind("acknowledged")]
        assert sorted(replaced_on) == sorted(nodes), outcome
        assert most_in_flight(outcome) == 1, outcome
        wait_for(lambda: images_running(cluster, name) == [APP_V2] * 3, 20, "three running v2 tasks")
        assert sorted(task["NodeID"] for task in running_tasks(cluster, name)) == sorted(nodes)  # one per node
        assert_handed_back(cluster, name, APP_V2)

    def test_a_replacement_that_fails_its_post_start_hook_is_rolled_back(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = three_node_swarm, make_service(replicas=3, host_port=True)

        # The hook fails after 2 s: by then the manager lists the replacement as running.
        outcome = rollover(cluster, name, "--image", APP_V2, "--post-start", "sh -c 'sleep 2; exit 1'")

        assert outcome.code == 1, outcome
        assert (outcome.summary["result"], outcome.summary["replaced"]) == ("rolled-back", 0), outcome
        assert "post-start" in outcome.summary["reason"]
        assert_handed_back(cluster, name, APP_V1)  # rollover hands the spec back before it exits
        wait_for(lambda: images_running(cluster, name) == [APP_V1] * 3, 30, "three running v1 tasks")

    def test_zero_failed_requests_behind_haproxy(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = three_node_swarm, make_service(replicas=6, host_port=True)
        old = task_endpoints(cluster, name)
        assert len(old) == 6
        with front_of(cluster, name, probe_rate=200) as front:
            haproxy = front.haproxy
            assert haproxy.in_rotation() == sorted(old.values())
            outcome = rollover(cluster, name, "--image", APP_V2, "--step", "1", "--order", "start-first", *front.args)
            assert outcome.code == 0, outcome
            summary = outcome.summary
            assert (summary["result"], summary["replaced"]) == ("completed", 6), outcome
            probe = summary["probe"]
            assert probe["failed"] == 0, (probe, haproxy.backend_counters(), outcome)
            assert probe["sent"] >= 200, probe  # at least a second's worth at 200/s
            assert set(probe["answers"]) <= {"v1", "v2"}, probe
            statuses = haproxy.request_log().statuses
            assert all(status == 200 for status in statuses), statuses
            # After the end: HAProxy sends only to the v2 tasks, and they all answer v2.
            wait_for(lambda: images_running(cluster, name) == [APP_V2] * 6, 20, "six running v2 tasks")
            front.assert_routes_to_the_running_tasks(cluster, name, outcome)
            after = [urllib.request.urlopen(haproxy.url, timeout=10).read().decode().strip() for _ in range(30)]
            assert after == ["v2"] * 30


# -- a node lost in the middle of a rollout --------------------------------------------------------


@dataclass
class NodeLoss:
    outcome: Outcome
    service: str
    killed_after: dict[str, Any]  # the JSON event after which node 3's daemon was killed


def run_and_kill_node_3(cluster: SwarmCluster, service: str) -> tuple[Outcome, dict[str, Any]]:
    """Run the CLI; at its first ``up`` event SIGKILL node 3's dockerd (its containers keep
    running under their shims, but the node stops answering and the manager marks it down)."""
    def kill_node_3(_: subprocess.Popen[str]) -> None:
        os.kill(int(Path("/run/rsw-n3/docker.pid").read_text()), signal.SIGKILL)

    return rollover_acting_at(cluster, service, "--image", APP_V2, at=lambda event: event["event"] == "up",
                              act=kill_node_3)


@pytest.fixture(scope="class")
def node_loss(three_node_swarm: SwarmCluster) -> Iterator[NodeLoss]:
    """One rollout of 6 tasks (v1 -> v2, step 1) that loses node 3, shared by the class's tests."""
    factory = ServiceFactory(three_node_swarm)
    try:
        name = factory(replicas=6, host_port=True)
        outcome, killed = run_and_kill_node_3(three_node_swarm, name)
        yield NodeLoss(outcome, name, killed)
    finally:
        factory.remove_all()


class TestNodeLostMidRollout:
    """A cluster of its own (the class-scoped fixture): node 3's daemon stays dead, and the whole
    cluster goes down after the class, so no other test sees the broken node.

    What happens depends on where Swarm placed the tasks. Either the request in flight when node 3
    dies times out while its events are unreachable, the rollback waits until the manager marks
    node 3 down (about 16 s), then goes on without it, and the tasks Swarm made on the surviving
    nodes from the rollout's spec are put back too; or nothing in flight was on node 3, and the
    tasks Swarm moved to the surviving nodes (from the rollout's spec) count as replacements."""

    def test_the_rollout_ends_within_the_bound_with_the_reason(
        self, three_node_swarm: SwarmCluster, node_loss: NodeLoss
    ) -> None:
        cluster, outcome = three_node_swarm, node_loss.outcome
        assert node_loss.killed_after, f"no up event: node 3 was never killed\n{outcome}"
        # It ended by itself (no hang): within rollover's own bounds (reconnect 60 s, retire 35 s).
        assert outcome.wall_s < 120, outcome
        # Completed when Swarm moved node 3's tasks to the others from the rollout's spec and the
        # rollout took them as replacements (the summary test checks the images); failed or rolled
        # back, with the lost daemon named, when a replacement in flight went down with the node.
        assert outcome.code in (0, 1), outcome
        if outcome.code == 1:
            assert "rsw-n3" in outcome.stdout + outcome.stderr, outcome
        spec = service_spec(cluster, node_loss.service)["Spec"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 6  # rollover never scales
        nodes = {node["Description"]["Hostname"]: node["Status"]["State"] for node in cluster.client.api.nodes()}
        wait_for(lambda: cluster.client.api.inspect_node("rsw-n3")["Status"]["State"] == "down", 60,
                 f"the manager to mark rsw-n3 down (nodes: {nodes})")
        # The surviving nodes still carry the service: Swarm moved node 3's tasks over.
        wait_for(lambda: len(running_tasks(cluster, node_loss.service)) >= 6, 60, "six running tasks")

    def test_the_json_summary_matches_the_swarm(
        self, three_node_swarm: SwarmCluster, node_loss: NodeLoss
    ) -> None:
        cluster, outcome, name = three_node_swarm, node_loss.outcome, node_loss.service
        summary = outcome.summary
        assert summary["result"] in ("completed", "rolled-back", "failed", "paused"), outcome
        wait_for(lambda: cluster.client.api.inspect_node("rsw-n3")["Status"]["State"] == "down", 60, "rsw-n3 down")
        alive = {node["ID"] for node in cluster.client.api.nodes() if node["Status"]["State"] == "ready"}

        def images_on_surviving_nodes() -> list[str]:
            return [task["Spec"]["ContainerSpec"]["Image"] for task in running_tasks(cluster, name)
                    if task["NodeID"] in alive]

        # No task lost from the desired count: Swarm refilled node 3's slots on the other two.
        wait_for(lambda: len(images_on_surviving_nodes()) == 6, 60, "six tasks on the surviving nodes")
        images = images_on_surviving_nodes()
        if summary["result"] == "completed":
            # A replacement in one of node 3's slots may be deleted by Swarm as one too many there:
            # the orchestrator refilled the slot from the same (the rollout's) spec meanwhile. Its
            # target is skipped, and the summary says why.
            redundant = [event for event in outcome.of_kind("skipped")
                         if event["reason"] == "replacement removed by Swarm: another task serves its slot"]
            assert summary["skipped"] == len(redundant), outcome
            assert images.count(APP_V2) == summary["replaced"] + len(redundant) == 6, f"{images}\n{outcome}"
        elif summary["result"] == "rolled-back":
            assert set(images) == {APP_V1} and summary["reason"], f"{images}\n{outcome}"
            assert_handed_back(cluster, name, APP_V1)
        else:
            assert images.count(APP_V2) == summary["replaced"] and summary["reason"], f"{images}\n{outcome}"
