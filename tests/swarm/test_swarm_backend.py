"""The Swarm backend against real swarms (their own daemons in network namespaces; no mocks).

Each test makes its own services and removes them; the cluster fixtures tear the daemons and
namespaces down even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.request
from typing import Any

import docker.errors
import pytest

from rollover.backends.lease import (
    LOCK_HOLDER_LABEL,
    LOCK_HOST_LABEL,
    LOCK_PROCESS_LABEL,
    LOCK_REPLICAS_LABEL,
    LOCK_SINCE_LABEL,
)
from rollover.backends.swarm.backend import SwarmBackend
from rollover.backends.swarm.lock import lock_name
from rollover.backends.swarm.service import is_swarm_service
from rollover.controller.loop import Controller
from rollover.core.model import Order, ProgressEvent, ReplicaDown, ReplicaUp, ServiceSnapshot, StaleLock
from rollover.core.policy import FailurePolicy, OrderChoice, Policy, parse_step
from rollover.errors import EngineUnavailable, Locked, ServiceNotFound, Unsupported
from tests.support.swarm import (
    APP_BROKEN,
    APP_V1,
    APP_V2,
    EventLog,
    ServiceFactory,
    SwarmCluster,
    backend_for,
    in_loop,
    running_tasks,
    wait_for,
)

pytestmark = pytest.mark.swarm


def task(cluster: SwarmCluster, task_id: str) -> dict[str, Any]:
    return dict(cluster.client.api.inspect_task(task_id))


def images_running(cluster: SwarmCluster, service: str) -> list[str]:
    return sorted(item["Spec"]["ContainerSpec"]["Image"] for item in running_tasks(cluster, service))


async def started(backend: SwarmBackend, image: str | None = None) -> tuple[EventLog, ServiceSnapshot]:
    """connect -> events -> snapshot -> prepare -> lock, as the controller does."""
    await backend.connect()
    log = EventLog(backend.events())
    snapshot = await backend.snapshot()
    await backend.prepare(snapshot)
    await backend.acquire_lock("swarm-test")
    return log, snapshot


async def finished(backend: SwarmBackend, log: EventLog) -> None:
    log.close()
    await backend.release_lock()
    await backend.close()


class TestSingleNodeSwarm:
    def test_snapshot_describes_tasks_and_their_published_ports(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        name = make_service(replicas=2, host_port=True)
        backend = backend_for(single_node_swarm, name, loop)

        async def look() -> ServiceSnapshot:
            await backend.connect()
            try:
                return await backend.snapshot()
            finally:
                await backend.close()

        snapshot = in_loop(loop, look())
        tasks = {item["ID"]: item for item in running_tasks(single_node_swarm, name)}
        assert {replica.id for replica in snapshot.replicas} == set(tasks)
        assert sorted(replica.name for replica in snapshot.replicas) == [f"{name}.1", f"{name}.2"]
        for replica in snapshot.replicas:
            assert replica.image_ref == APP_V1
            assert replica.image.startswith("sha256:")
            assert replica.has_healthcheck and replica.health_budget_s == 1.5  # 0.5 s x 3 retries
            assert replica.fixed_host_ports == ()  # random host ports: start-first is possible
            details = dict(replica.details)
            assert details["node"] == tasks[replica.id]["NodeID"]
            address = details["published.8080/tcp"]
            with urllib.request.urlopen(f"http://{address}/version.txt", timeout=5) as answer:
                assert answer.read().strip() == b"v1"
        assert in_loop(loop, is_swarm_service(single_node_swarm.manager, name))
        assert not in_loop(loop, is_swarm_service(single_node_swarm.manager, "rsw-no-such-service"))

    def test_start_first_redeploy_comes_up_retires_the_old_task_and_restores(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=2)
        backend = backend_for(cluster, name, loop, image=APP_V2)

        async def scenario() -> None:
            log, snapshot = await started(backend)
            target = snapshot.replicas[0]
            [new] = await backend.redeploy([target], Order.START_FIRST)
            assert new.id not in {replica.id for replica in snapshot.replicas}
            assert new.image_ref == APP_V2 and new.name.startswith(f"{name}.")
            await log.wait_for(ReplicaUp, new.id, 20)
            assert len(running_tasks(cluster, name)) >= 2  # start-first: capacity never dropped
            await backend.retire(target)
            assert sorted(images_running(cluster, name)) == [APP_V1, APP_V2]
            # Swarm chose which old task to replace: one of the two is gone, the other still up.
            observed = await backend.observe([new.id, *(replica.id for replica in snapshot.replicas)])
            assert type(observed[0]) is ReplicaUp
            assert sorted(type(event).__name__ for event in observed[1:]) == ["ReplicaDown", "ReplicaUp"]
            restored = await backend.restore(new, target, Order.START_FIRST)
            assert restored.image_ref == APP_V1
            await log.wait_for(ReplicaUp, restored.id, 20)
            await backend.retire(new)
            assert task(cluster, new.id)["Status"]["State"] in ("shutdown", "complete")
            await finished(backend, log)

        in_loop(loop, scenario())
        assert images_running(cluster, name) == [APP_V1, APP_V1]
        spec = cluster.client.api.inspect_service(name)
        assert "rollover.request" not in (spec["Spec"].get("Labels") or {})  # the user's spec is back
        assert "UpdateConfig" not in spec["Spec"] or spec["Spec"]["UpdateConfig"].get("Delay", 0) < 10**12

    def test_a_restore_cut_short_after_its_spec_change_is_not_sent_twice(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        """The controller calls ``restore`` again after an outage; the first call's spec change may
        have reached the manager already. The outage is injected where it hurts: right after the
        spec change, before the new task is seen."""
        cluster, name = single_node_swarm, make_service(replicas=2)
        backend = backend_for(cluster, name, loop, image=APP_V2)

        async def scenario() -> tuple[bool, bool, Any, Any]:
            log, snapshot = await started(backend)
            target = snapshot.replicas[0]
            [new] = await backend.redeploy([target], Order.START_FIRST)
            await log.wait_for(ReplicaUp, new.id, 20)
            await backend.retire(target)
            watch = backend._connected_watch()
            real_wait = watch.wait_until
            cut = {"done": False}

            async def cut_once(*args: Any, **options: Any) -> Any:
                if not cut["done"] and str(args[1]).startswith("Swarm to start"):
                    cut["done"] = True
                    raise EngineUnavailable("cannot reach the Docker daemon (injected)")
                return await real_wait(*args, **options)

            watch.wait_until = cut_once  # type: ignore[method-assign]
            version = cluster.client.api.inspect_service(name)["Version"]["Index"]
            with pytest.raises(EngineUnavailable):
                await backend.restore(new, target, Order.START_FIRST)
            after_first = cluster.client.api.inspect_service(name)["Version"]["Index"]
            restored = await backend.restore(new, target, Order.START_FIRST)  # the controller's retry
            after_retry = cluster.client.api.inspect_service(name)["Version"]["Index"]
            again = await backend.restore(new, target, Order.START_FIRST)
            await log.wait_for(ReplicaUp, restored.id, 20)
            await backend.retire(new)
            await finished(backend, log)
            return after_first != version, after_retry != after_first, restored, again

        first_changed, retry_changed, restored, again = in_loop(loop, scenario())
        assert first_changed and not retry_changed  # one spec change in all (the service's version tells)
        assert again == restored and restored.image_ref == APP_V1
        assert images_running(cluster, name) == [APP_V1, APP_V1]

    def test_a_broken_image_yields_replica_down_and_discard_goes_back(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=2)
        backend = backend_for(cluster, name, loop, image=APP_BROKEN)

        async def scenario() -> str:
            log, snapshot = await started(backend)
            [new] = await backend.redeploy([snapshot.replicas[0]], Order.START_FIRST)
            down = await log.wait_for(ReplicaDown, new.id, 30)
            assert isinstance(down, ReplicaDown)
            assert not any(isinstance(event, ReplicaUp) and event.replica_id == new.id for event in log.seen)
            await backend.discard(new)
            await finished(backend, log)
            return down.reason

        reason = in_loop(loop, scenario())
        assert reason  # e.g. "unhealthy" or Swarm's own words for the failed task
        wait_for(lambda: images_running(cluster, name) == [APP_V1, APP_V1], 20, "only v1 tasks to run")
        spec = cluster.client.api.inspect_service(name)["Spec"]
        assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == APP_V1  # nothing got through: spec is back

    def test_a_failure_only_swarm_sees_surfaces_with_swarms_reason(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        """The image vanishes after prepare: the task is rejected before any container exists, so no
        node reports anything. Swarm pauses its update, and that service event carries the news."""
        cluster, name = single_node_swarm, make_service(replicas=2)
        cluster.client.api.tag(APP_V2, "rollover-test/app", "gone")
        backend = backend_for(cluster, name, loop, image="rollover-test/app:gone")

        async def scenario() -> str:
            log, snapshot = await started(backend)
            cluster.client.api.remove_image("rollover-test/app:gone")
            [new] = await backend.redeploy([snapshot.replicas[0]], Order.START_FIRST)
            down = await log.wait_for(ReplicaDown, new.id, 30)
            await backend.discard(new)
            await finished(backend, log)
            return str(getattr(down, "reason", ""))

        reason = in_loop(loop, scenario())
        assert "Swarm paused" in reason and "No such image" in reason, reason
        wait_for(lambda: images_running(cluster, name) == [APP_V1, APP_V1], 20, "only v1 tasks to run")

    def test_without_a_healthcheck_a_started_task_is_up(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        cluster, name = single_node_swarm, make_service(replicas=1, healthcheck=False)
        backend = backend_for(cluster, name, loop, image=APP_V2)

        async def scenario() -> None:
            log, snapshot = await started(backend)
            assert not snapshot.replicas[0].has_healthcheck and snapshot.replicas[0].health_budget_s is None
            [new] = await backend.redeploy(list(snapshot.replicas), Order.STOP_FIRST)
            assert not new.has_healthcheck
            await log.wait_for(ReplicaUp, new.id, 20)
            await finished(backend, log)

        in_loop(loop, scenario())
        wait_for(lambda: images_running(cluster, name) == [APP_V2], 5, "the v2 task")

    def test_a_failure_half_way_is_rolled_back_to_the_original_spec(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        """The first replacement comes up, then the image vanishes: the second is rejected. The
        controller rolls back: the first is restored and the failed slot is cleared."""
        cluster, name = single_node_swarm, make_service(replicas=3)
        cluster.client.api.tag(APP_V2, "rollover-test/app", "vanishing")
        backend = backend_for(cluster, name, loop, image="rollover-test/app:vanishing")

        def remove_the_image_once_one_is_up(event: ProgressEvent) -> None:
            if event.kind == "up":
                with contextlib.suppress(docker.errors.NotFound):
                    cluster.client.api.remove_image("rollover-test/app:vanishing")

        policy = Policy(step=parse_step("1"), order=OrderChoice.START_FIRST, on_failure=FailurePolicy.ROLLBACK)
        controller = Controller(backend, policy, report=remove_the_image_once_one_is_up)
        result = in_loop(loop, controller.run(), 90)
        assert result.outcome == "rolled-back", result.reason
        assert (result.replaced, result.failed, result.rolled_back) == (1, 1, 1)
        wait_for(lambda: images_running(cluster, name) == [APP_V1] * 3, 20, "only v1 tasks to run")
        spec = cluster.client.api.inspect_service(name)["Spec"]
        assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == APP_V1
        assert "rollover.request" not in (spec.get("Labels") or {})

    def test_a_second_rollout_is_locked_out(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        name = make_service(replicas=1)
        first, second = (backend_for(single_node_swarm, name, loop) for _ in range(2))

        async def scenario() -> None:
            await first.connect()
            await second.connect()
            await first.acquire_lock("alice@ci pid 1")
            with pytest.raises(Locked, match="alice@ci pid 1"):  # alive: this very process holds it
                await second.acquire_lock("bob@laptop pid 2")
            await first.release_lock()
            await second.acquire_lock("bob@laptop pid 2")
            await second.release_lock()
            await first.close()
            await second.close()

        in_loop(loop, scenario())

    def test_a_lock_whose_holder_died_is_taken_over(
        self, single_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        name = make_service(replicas=1)
        dead = {LOCK_HOLDER_LABEL: "carol@here pid 999999", LOCK_HOST_LABEL: socket.gethostname(),
                LOCK_PROCESS_LABEL: "999999:1", LOCK_SINCE_LABEL: "2026-01-01T00:00:00+00:00",
                LOCK_REPLICAS_LABEL: "1"}
        single_node_swarm.client.api.create_config(lock_name(name), b"carol", labels=dead)
        backend = backend_for(single_node_swarm, name, loop)

        async def scenario() -> StaleLock | None:
            await backend.connect()
            try:
                return await backend.acquire_lock("dave@ci pid 4", 600.0, 1)
            finally:
                await backend.release_lock()
                await backend.close()

        stale = in_loop(loop, scenario())
        assert stale is not None and stale.holder == "carol@here pid 999999" and stale.replicas == 1
        assert "999999" in stale.reason

    def test_an_unknown_service_is_not_found(
        self, single_node_swarm: SwarmCluster, loop: asyncio.AbstractEventLoop
    ) -> None:
        backend = backend_for(single_node_swarm, "rsw-no-such-service", loop)

        async def scenario() -> None:
            await backend.connect()
            try:
                with pytest.raises(ServiceNotFound, match="rsw-no-such-service"):
                    await backend.snapshot()
            finally:
                await backend.close()

        in_loop(loop, scenario())


class TestThreeNodeSwarm:
    def test_snapshot_of_six_replicas_spread_over_three_nodes(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        name = make_service(replicas=6)
        backend = backend_for(three_node_swarm, name, loop)

        async def look() -> ServiceSnapshot:
            await backend.connect()
            try:
                snapshot = await backend.snapshot()
                await backend.prepare(snapshot)
                return snapshot
            finally:
                await backend.close()

        snapshot = in_loop(loop, look())
        assert len(snapshot.replicas) == 6
        assert len({dict(replica.details)["node"] for replica in snapshot.replicas}) == 3
        assert all(replica.image.startswith("sha256:") for replica in snapshot.replicas)  # from each node

    def test_nodes_that_cannot_be_watched_are_unsupported(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        name = make_service(replicas=3)
        backend = backend_for(three_node_swarm, name, loop, node_hosts={})

        async def scenario() -> None:
            await backend.connect()
            try:
                snapshot = await backend.snapshot()
                with pytest.raises(Unsupported, match="rsw-n2, rsw-n3"):
                    await backend.prepare(snapshot)
            finally:
                await backend.close()

        in_loop(loop, scenario())

    @pytest.mark.parametrize("order", ["start-first", "stop-first"])
    def test_the_controller_rolls_four_tasks_across_nodes(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop,
        order: str,
    ) -> None:
        cluster, name = three_node_swarm, make_service(replicas=4)
        backend = backend_for(cluster, name, loop, image=APP_V2)
        policy = Policy(step=parse_step("2"), order=OrderChoice(order), on_failure=FailurePolicy.ROLLBACK)
        result = in_loop(loop, Controller(backend, policy).run(), 120)
        assert result.outcome == "completed", result.reason
        assert result.replaced == 4
        # The controller heard "up" from the node; the manager's task list follows a moment later.
        wait_for(lambda: images_running(cluster, name) == [APP_V2] * 4, 5, "four v2 tasks")
        spec = cluster.client.api.inspect_service(name)
        assert (spec.get("UpdateStatus") or {}).get("State", "completed") == "completed"  # nothing on hold
        assert "rollover.request" not in (spec["Spec"].get("Labels") or {})

    def test_a_failing_rollout_is_rolled_back_by_the_controller(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        cluster, name = three_node_swarm, make_service(replicas=3)
        backend = backend_for(cluster, name, loop, image=APP_BROKEN)
        policy = Policy(step=parse_step("1"), order=OrderChoice.START_FIRST, on_failure=FailurePolicy.ROLLBACK)
        result = in_loop(loop, Controller(backend, policy).run(), 120)
        assert result.outcome == "rolled-back"
        wait_for(lambda: images_running(cluster, name) == [APP_V1] * 3, 20, "only v1 tasks to run")

    def test_a_global_service_rolls_node_by_node(
        self, three_node_swarm: SwarmCluster, make_service: ServiceFactory, loop: asyncio.AbstractEventLoop
    ) -> None:
        cluster, name = three_node_swarm, make_service(global_mode=True)
        backend = backend_for(cluster, name, loop, image=APP_V2)

        async def scenario() -> None:
            log, snapshot = await started(backend)
            assert len(snapshot.replicas) == 3
            [new] = await backend.redeploy([snapshot.replicas[0]], Order.STOP_FIRST)
            await log.wait_for(ReplicaUp, new.id, 20)
            node = dict(new.details)["node"]
            [displaced] = [replica for replica in snapshot.replicas if dict(replica.details)["node"] == node]
            assert task(cluster, displaced.id)["DesiredState"] == "shutdown"  # its node's old task went
            wait_for(lambda: images_running(cluster, name) == [APP_V1, APP_V1, APP_V2], 5, "one node on v2")
            nodes = sorted(item["NodeID"] for item in running_tasks(cluster, name))
            assert nodes == sorted(dict(replica.details)["node"] for replica in snapshot.replicas)  # one each
            await finished(backend, log)

        in_loop(loop, scenario())
