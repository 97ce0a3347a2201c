"""One Swarm service's document on the manager: looked up, and changed with a retry when someone
else changed it in between (Swarm versions every update: a stale version is "out of sequence")."""

from __future__ import annotations

from collections.abc import Callable

from rollover.backends.swarm.spec import REQUEST_LABEL, Json
from rollover.engine import Engine
from rollover.errors import PlatformError, ServiceNotFound


async def is_swarm_service(docker_host: str | None, name: str) -> bool:
    """Whether the daemon at ``docker_host`` (None: DOCKER_HOST or the default socket) is a Swarm
    manager with a service ``name``."""
    engine = await Engine.connect(docker_host)
    try:
        return await engine.manages_service(name)
    finally:
        await engine.close()


class SwarmService:
    """The service ``name`` as the manager keeps it."""

    def __init__(self, manager: Engine, name: str) -> None:
        self._manager = manager
        self.name = name

    async def inspect(self) -> Json:
        found = await self._manager.find_service(self.name)
        if found is None:
            raise ServiceNotFound(f"no Swarm service named {self.name} (at {self._manager.address})")
        return found

    async def update(self, change: Callable[[Json], Json]) -> None:
        """Apply ``change`` to the current spec; retried when someone else updated it meanwhile."""
        for attempt in range(3):
            document = await self.inspect()
            try:
                await self._manager.update_service(document, change(document["Spec"]))
                return
            except PlatformError as exc:
                if "out of sequence" not in str(exc) or attempt == 2:
                    raise

    async def carries(self, label: str) -> bool:
        """Whether the spec already carries this request label (the request reached the manager)."""
        labels = (await self.inspect())["Spec"].get("Labels") or {}
        return bool(labels.get(REQUEST_LABEL) == label)
