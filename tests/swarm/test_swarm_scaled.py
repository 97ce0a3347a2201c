"""The service scaled by someone else in the middle of a Swarm rollout (``docker service scale``).

A spec change from outside restarts Swarm's updater on random slots, outside rollover's pacing: it
can cancel the updater of a start-first slot in flight (the swap is left half done), replace a
slot by itself, and a scale-down removes slots (tasks still waiting, or a replacement starting).
Whatever it did, the rollout must end with every task of the new size on the new image, the spec
handed back and the lock gone (the seed: an extra replica frees a slot, a removed target is skipped).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.swarm import APP_V2, ServiceFactory, SwarmCluster
from tests.support.swarm_cli import Outcome, assert_handed_back, assert_serving, first, lock_held, rollover_acting_at

pytestmark = pytest.mark.swarm

REPLICAS = 4  # the service's size before someone scales it: up to 6, or down to 2


def task_table(cluster: SwarmCluster, service: str) -> str:
    """Every task the manager keeps, by slot: what a failed assertion needs to say what Swarm did."""
    rows = sorted(cluster.client.api.tasks(filters={"service": service}),
                  key=lambda task: (task.get("Slot", 0), task["CreatedAt"]))
    return "\n".join(f"slot {task.get('Slot')} {task['ID'][:10]} {task['Spec']['ContainerSpec']['Image']}"
                     f" desired={task['DesiredState']} state={task['Status']['State']}" for task in rows)


class TestScaledMidRollout:  # one single-node swarm for the class (see conftest)
    @pytest.mark.parametrize("replicas", [6, 2], ids=["up-to-6", "down-to-2"])
    @pytest.mark.parametrize("order", ["start-first", "stop-first"])
    def test_a_scale_mid_rollout_still_converges_on_the_new_image(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, replicas: int, order: str
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=REPLICAS)

        def scale(_: subprocess.Popen[str]) -> None:
            # As a user would: the CLI reads the spec and changes only the replica count, and is
            # tried again when rollover's own spec change came in between ("out of sequence").
            command = ["docker", "-H", cluster.manager, "service", "scale", "--detach", f"{name}={replicas}"]
            for _attempt in range(5):
                done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
                if done.returncode == 0 or "out of sequence" not in done.stderr:
                    break
            assert done.returncode == 0, done.stderr

        outcome, at = rollover_acting_at(cluster, name, "--image", APP_V2, "--order", order,
                                         at=first("settled"), act=scale)

        said = Outcome(outcome.code, outcome.stdout, outcome.stderr + task_table(cluster, name), outcome.wall_s)
        assert at, f"no replica settled: never scaled\n{said}"
        assert outcome.code == 0 and outcome.summary["result"] == "completed", said
        summary = outcome.summary
        # Every target was replaced, or skipped because the scale-down removed its place.
        assert summary["replaced"] + summary["skipped"] == REPLICAS and summary["failed"] == 0, said
        assert_serving(cluster, name, replicas, APP_V2, said)
        assert_handed_back(cluster, name, APP_V2)
        assert not lock_held(cluster, name)
