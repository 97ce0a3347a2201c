"""Interrupts and faults in the middle of a Swarm rollout, on a real single-node swarm.

Each test runs the console script as a user does and acts at a chosen JSON event: a signal to
rollover, or a change someone else makes to the service. Then it checks what a user would: the
exit code and summary, and the service itself - its running tasks, their images, the spec handed
back (no hold, no rollover label) and the lock gone.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.campaign import Round, play
from tests.support.faults import Faults
from tests.support.swarm import APP_V1, APP_V2, CLUSTER_SCRIPT, ServiceFactory, SwarmCluster, running_tasks, wait_for
from tests.support.swarm_cli import (
    assert_handed_back,
    assert_serving,
    first,
    front_of,
    images_running,
    lock_held,
    rollover,
    rollover_acting_at,
    service_spec,
)

pytestmark = pytest.mark.swarm

REPLICAS = 4


def send(signal_number: int) -> Callable[[subprocess.Popen[str]], None]:
    return lambda process: process.send_signal(signal_number)


class TestSwarmFaults:
    def test_an_interrupt_rolls_back_hands_the_service_back_and_exits_130(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=REPLICAS, host_port=True)

        with front_of(cluster, name) as front:
            outcome, at = rollover_acting_at(cluster, name, "--image", APP_V2, *front.args, at=first("settled"),
                                             act=send(signal.SIGINT))

            assert at, f"no replica settled: never interrupted\n{outcome}"
            assert outcome.code == 130, outcome
            summary = outcome.summary
            assert summary["result"] == "interrupted" and summary["not_redeployed"], outcome
            # Under the default --on-failure rollback, what was replaced went back.
            assert_serving(cluster, name, REPLICAS, APP_V1, outcome)
            assert_handed_back(cluster, name, APP_V1)
            assert not lock_held(cluster, name)
            front.assert_routes_to_the_running_tasks(cluster, name, outcome)
            front.assert_no_request_lost(outcome)

    def test_after_sigkill_the_next_rollout_takes_over_and_converges(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=REPLICAS, host_port=True)
        user_update = service_spec(cluster, name)["Spec"].get("UpdateConfig")

        with front_of(cluster, name) as front:
            killed, at = rollover_acting_at(cluster, name, "--image", APP_V2, *front.args, at=first("settled"),
                                            act=send(signal.SIGKILL))

            assert at and killed.code == -signal.SIGKILL, killed
            assert lock_held(cluster, name)  # nothing could clean up: the lock and the hold stay
            assert len(running_tasks(cluster, name)) == REPLICAS  # Swarm keeps the count meanwhile

            again = rollover(cluster, name, "--image", APP_V2, *front.args)

            assert again.code == 0, again
            assert again.of_kind("took_over_lock"), again
            assert again.summary["result"] == "completed", again
            assert_serving(cluster, name, REPLICAS, APP_V2, again)
            assert_handed_back(cluster, name, APP_V2)
            # The user's update config, not the hold the killed rollout left in the spec.
            assert service_spec(cluster, name)["Spec"].get("UpdateConfig") == user_update
            assert not lock_held(cluster, name)
            # Swarm's updater finished the killed rollout's last swap by itself: it stopped the old
            # task with nobody to drain it first, and its server stays in rotation, pointing at
            # nothing. rollover leaves servers that carry none of the service's tasks alone (they
            # may be someone else's) and says so; HAProxy re-sends what they refuse, so the second
            # run's probe loses nothing, and HAProxy's log (both runs) shows no failed request.
            strays = front.assert_routes_to_the_running_tasks(cluster, name, again, strays=True)
            warned = next((line for line in again.stderr.splitlines() if "carry none of the replicas" in line), "")
            assert set(strays) <= set(warned.rsplit(": ", 1)[-1].split(", ")), (strays, again)
            front.assert_no_request_lost(again, strays=True)

    def test_a_takeover_with_nothing_left_to_request_hands_the_users_update_config_back(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        """Killed once its one service-wide request went out: Swarm's updater replaces every task
        by itself, so the takeover finds nothing to request. It must still hand the user's update
        config back, not leave rollover's pacing (a one-year delay) on the service."""
        user = {"Parallelism": 3, "Delay": 7_000_000_000, "FailureAction": "pause", "Order": "stop-first"}
        cluster, name = single_node_swarm, make_service(replicas=2, update_config=user)
        args = ("--image", APP_V2, "--step", "all", "--order", "stop-first")
        killed, at = rollover_acting_at(cluster, name, *args, at=first("acknowledged"), act=send(signal.SIGKILL))
        assert at and killed.code == -signal.SIGKILL, killed
        wait_for(lambda: images_running(cluster, name) == [APP_V2] * 2, 60, "Swarm to finish the killed request")

        again = rollover(cluster, name, *args)

        assert again.code == 0 and again.of_kind("took_over_lock"), again
        assert again.summary["result"] == "completed", again
        assert_serving(cluster, name, 2, APP_V2, again)
        assert_handed_back(cluster, name, APP_V2)
        handed_back = service_spec(cluster, name)["Spec"].get("UpdateConfig") or {}
        assert {key: handed_back.get(key) for key in user} == user
        assert not lock_held(cluster, name)

    def test_stop_first_with_an_image_that_ignores_sigterm_completes(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        """Each old task takes its whole 10 s stop grace period before Swarm starts its replacement:
        the replacement's timeout (healthcheck budget + 10 s) counts from that start, not from the
        request (it used to fail, and its rollback failed the same way)."""
        cluster = single_node_swarm
        name = make_service(replicas=2, ignores_sigterm=True, stop_grace_s=10)

        outcome = rollover(cluster, name, "--image", APP_V2, "--order", "stop-first")

        assert outcome.code == 0, outcome
        assert outcome.summary["result"] == "completed", outcome
        assert_serving(cluster, name, 2, APP_V2, outcome)
        assert_handed_back(cluster, name, APP_V2)

    def test_a_task_removed_by_someone_else_ends_consistent(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=REPLICAS, host_port=True)
        victim: dict[str, str] = {}

        def remove_a_target(_: subprocess.Popen[str]) -> None:
            # A task still on the old image (Swarm, not rollover, decides which slot goes next).
            task = next(task for task in running_tasks(cluster, name)
                        if task["Spec"]["ContainerSpec"]["Image"] == APP_V1)
            victim["container"] = task["Status"]["ContainerStatus"]["ContainerID"]
            cluster.client.api.remove_container(victim["container"], force=True)

        with front_of(cluster, name) as front:
            outcome, at = rollover_acting_at(cluster, name, "--image", APP_V2, *front.args, at=first("settled"),
                                             act=remove_a_target)
        # The removal is someone else's, without a drain: requests on their way to that task may
        # be lost. Reported only (the README's fault table).
        print(f"FAULT swarm task removed by someone else: probe {outcome.summary['probe']}")

        assert at and victim, outcome
        # Swarm refills the slot from the spec current then (the rollout's), and Swarm, not
        # rollover, picks the slot each request replaces: the rollout completes, or it finds no
        # slot left for its last target and rolls back. Either way the summary is what the swarm shows.
        assert outcome.code in (0, 1), outcome
        if outcome.summary["result"] == "completed":
            assert_serving(cluster, name, REPLICAS, APP_V2, outcome)
            assert_handed_back(cluster, name, APP_V2)
        else:
            assert outcome.summary["result"] == "rolled-back" and outcome.summary["reason"], outcome
            assert_serving(cluster, name, REPLICAS, APP_V1, outcome)
            assert_handed_back(cluster, name, APP_V1)


class TestSwarmManagerRestart:  # a class of its own: the restart may leave the swarm unsettled for a while
    def test_a_manager_daemon_restart_mid_rollout_ends_consistent(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=REPLICAS)

        def restart_the_manager(_: subprocess.Popen[str]) -> None:
            # TERM and start again, as systemd restarts docker: without live-restore (Swarm mode
            # forbids it) every task's container stops with the daemon.
            subprocess.run([str(CLUSTER_SCRIPT), "restart", "1"], check=True, capture_output=True, timeout=90)

        outcome, at = rollover_acting_at(cluster, name, "--image", APP_V2, at=first("settled"),
                                         act=restart_the_manager)

        assert at, f"no replica settled: never restarted\n{outcome}"
        assert outcome.of_kind("stream_lost"), outcome  # it did see the daemon go
        # It finishes or fails cleanly, and the summary is what the swarm shows.
        assert outcome.code in (0, 1), outcome
        image = APP_V2 if outcome.summary["result"] == "completed" else APP_V1
        assert outcome.summary["result"] in ("completed", "rolled-back"), outcome
        assert_serving(cluster, name, REPLICAS, image, outcome)
        assert_handed_back(cluster, name, image)
        assert not lock_held(cluster, name)


class TestSwarmKillCampaign:
    """The SIGKILL campaign's Swarm round, short (bench/kill_campaign.py --platform swarm runs N)."""

    @pytest.mark.parametrize("seed", [10])  # stop-first, step 2, the takeover killed too
    def test_a_killed_rollout_and_its_takeover_leave_the_service_as_the_user_had_it(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, tmp_path: Path, seed: int
    ) -> None:
        faults = Faults(single_node_swarm.client, tmp_path)
        try:
            verdict = play(faults, Round.from_seed(seed, "swarm"), (single_node_swarm, make_service))
        finally:
            faults.tear_down()
        print(verdict.line())  # the figures docs/faults.md quotes (-s)
        assert verdict.converged, verdict.line() + (f"\n{verdict.final.text()}" if verdict.final else "")
