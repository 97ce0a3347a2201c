"""Swarm tasks described as Replicas: where each is reached, the healthcheck it runs, its image.

A running task's container (inspected on its node's daemon) tells its own healthcheck and image.
Before it runs, or while its node is being lost, the task template tells the check: the spec's
own, else its image's, looked up once per image and kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from typing import Any, cast

from rollover.backends.swarm.nodes import SwarmNodes
from rollover.backends.swarm.spec import Json, fixed_host_ports, health_budget
from rollover.backends.swarm.tasks import SwarmTask, TaskContext, replica_from_task
from rollover.core.model import Replica
from rollover.engine import Engine
from rollover.errors import EngineUnavailable


def publishes_host_ports(spec_document: Mapping[str, Any]) -> bool:
    ports = ((spec_document.get("EndpointSpec") or {}).get("Ports")) or []
    return any(port.get("PublishMode") == "host" for port in ports)


class SwarmReplicas:
    """The tasks of one service, on ``nodes``, as the controller sees them."""

    def __init__(self, service: str, nodes: SwarmNodes) -> None:
        self._service = service
        self._nodes = nodes
        self.healthchecks: dict[str, Mapping[str, Any] | None] = {}  # image ref -> its check

    async def ensure_image(self, ref: str, pull: bool) -> None:
        """On every node new tasks may land on; its healthcheck is kept for tasks not running yet."""
        for node in self._nodes.schedulable:
            found = await self._nodes.image_on(node, ref, pull)
            self.healthchecks.setdefault(ref, (found.get("Config") or {}).get("Healthcheck"))

    async def replica(self, task: SwarmTask, template: Mapping[str, Any], *, spec: Json, global_mode: bool,
                      down: Collection[str], manager: Engine) -> Replica:
        """``spec``: the user's service spec; ``down``: the nodes the manager reports down."""
        container: Mapping[str, Any] | None = None
        engine = self._nodes.engines.get(task.node_id)
        if engine is not None and task.container_id and task.node_id not in down:
            with contextlib.suppress(EngineUnavailable):  # a node being lost: the spec tells the check
                container = await engine.inspect_container(task.container_id)
        if container is not None:
            healthcheck = (container.get("Config") or {}).get("Healthcheck")
        else:
            healthcheck = await self._template_healthcheck(template, manager)
        context = TaskContext(
            service=self._service, global_mode=global_mode, fixed_ports=fixed_host_ports(spec),
            node_addresses=self._nodes.addresses,
            image_id=str((container or {}).get("Image", "")), healthcheck=healthcheck,
        )
        return replica_from_task(task, context)

    async def _template_healthcheck(self, template: Mapping[str, Any], manager: Engine) -> Mapping[str, Any] | None:
        container_spec = template.get("ContainerSpec") or {}
        if container_spec.get("Healthcheck"):
            return cast(Mapping[str, Any], container_spec["Healthcheck"])
        ref = str(container_spec.get("Image", ""))
        if ref not in self.healthchecks:
            found = await manager.inspect_image(ref)
            self.healthchecks[ref] = ((found or {}).get("Config") or {}).get("Healthcheck")
        return self.healthchecks[ref]

    def replacement_budget(self, template: Mapping[str, Any]) -> float:
        """The replacement's health budget, or 50 s without a check (+ 10 s: the controller's default)."""
        ref = str((template.get("ContainerSpec") or {}).get("Image", ""))
        check = (template.get("ContainerSpec") or {}).get("Healthcheck") or self.healthchecks.get(ref)
        budget = health_budget(check)
        return 50.0 if budget is None else budget
