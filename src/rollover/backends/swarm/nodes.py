"""The Swarm's nodes, and a connection to the daemon of each one rollover can reach.

Container events are only visible on the daemon of the node that runs the container, and Swarm
nodes use their local images: so besides the manager, rollover talks to every node's own daemon
(``node_hosts``). The manager's own node goes through the manager's connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from rollover.engine import Engine, Inspect
from rollover.errors import ImageNotFound, PlatformError, Unsupported


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    address: str
    schedulable: bool  # ready and active: new tasks may land there


class SwarmNodes:
    """The nodes the manager lists, and their daemons."""

    def __init__(self, node_hosts: Mapping[str, str] | None = None) -> None:
        """``node_hosts`` maps node hostnames (or ids) to their Docker daemons."""
        self._node_hosts = dict(node_hosts or {})
        self.nodes: dict[str, SwarmNode] = {}
        self.engines: dict[str, Engine] = {}  # node id -> its daemon
        self.down: list[str] = []  # the nodes the manager reported down

    async def connect(self, manager: Engine, manager_node_id: str | None) -> None:
        """List the nodes and connect to each one's daemon (the manager's node reuses ``manager``)."""
        for raw in await manager.list_nodes():
            if raw["Status"]["State"] == "down":
                self.down.append(str(raw["ID"]))
            node = SwarmNode(str(raw["ID"]), str(raw["Description"]["Hostname"]), str(raw["Status"].get("Addr", "")),
                             raw["Status"]["State"] == "ready" and raw["Spec"]["Availability"] == "active")
            self.nodes[node.id] = node
            host = self._node_hosts.get(node.hostname) or self._node_hosts.get(node.id)
            if node.id == manager_node_id:
                self.engines[node.id] = manager
            elif host is not None and raw["Status"]["State"] == "ready":  # a down node runs nothing new
                self.engines[node.id] = await Engine.connect(host)

    @property
    def hostnames(self) -> dict[str, str]:
        return {node.id: node.hostname for node in self.nodes.values()}

    @property
    def addresses(self) -> dict[str, str]:
        return {node.id: node.address for node in self.nodes.values()}

    @property
    def schedulable(self) -> list[SwarmNode]:
        return [node for node in self.nodes.values() if node.schedulable]

    def ensure_watched(self) -> None:
        unwatched = sorted(node.hostname for node in self.schedulable if node.id not in self.engines)
        if unwatched:
            raise Unsupported(
                f"Swarm nodes {', '.join(unwatched)} cannot be watched: their container events are only"
                " visible on their own daemons; give each node's Docker host (node_hosts)"
            )

    async def image_on(self, node: SwarmNode, ref: str, pull: bool) -> Inspect:
        """Swarm nodes use local images (and pull only from a registry): check every node."""
        engine = self.engines[node.id]
        found = await engine.inspect_image(ref)
        if found is None and pull:
            with contextlib.suppress(PlatformError):
                await engine.pull(ref)
            found = await engine.inspect_image(ref)
        if found is None:
            raise ImageNotFound(f"image {ref} is not on Swarm node {node.hostname}" +
                                ("" if pull else " (pull was not asked for)"))
        return found

    async def close(self) -> None:
        """Each daemon once: the manager's node shares the manager's connection."""
        for engine in {id(engine): engine for engine in self.engines.values()}.values():
            await engine.close()
