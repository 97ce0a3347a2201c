"""One Swarm service's document on the manager: looked up, and changed with a retry when someone
else changed it in between (Swarm versions every update: a stale version is "out of sequence")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import docker.errors
import requests

from rollover.backends.swarm.tasks import REQUEST_LABEL, Json
from rollover.engine import Engine, engine_error
from rollover.errors import PlatformError, ServiceNotFound


def is_swarm_service(client: Any, name: str) -> bool:
    """Whether the daemon behind ``client`` (a docker SDK client) manages a Swarm service ``name``."""
    try:
        found = client.api.inspect_service(name)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 503:  # not a swarm manager (or no swarm at all)
            return False
        raise engine_error(exc, f"look for Swarm service {name}", str(client.api.base_url)) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise engine_error(exc, f"look for Swarm service {name}", str(client.api.base_url)) from exc
    return bool(found.get("Spec", {}).get("Name") == name or found.get("ID") == name)


class SwarmService:
    """The service ``name`` as the manager keeps it."""

    def __init__(self, manager: Engine, name: str) -> None:
        self._manager = manager
        self.name = name

    async def inspect(self) -> Json:
        found = await self._manager.call(f"inspect Swarm service {self.name}", _inspect_service_or_none,
                                         self._manager.api, self.name)
        if found is None:
            raise ServiceNotFound(f"no Swarm service named {self.name} (at {self._manager.address})")
        return found

    async def update(self, change: Callable[[Json], Json]) -> None:
        """Apply ``change`` to the current spec; retried when someone else updated it meanwhile."""
        for attempt in range(3):
            document = await self.inspect()
            spec = change(document["Spec"])
            try:
                await self._manager.call(f"update Swarm service {self.name}", _update_service, self._manager.api,
                                         document["ID"], document["Version"]["Index"], spec)
                return
            except PlatformError as exc:
                if "out of sequence" not in str(exc) or attempt == 2:
                    raise

    async def carries(self, label: str) -> bool:
        """Whether the spec already carries this request label (the request reached the manager)."""
        labels = (await self.inspect())["Spec"].get("Labels") or {}
        return bool(labels.get(REQUEST_LABEL) == label)


# -- blocking SDK calls (run in threads by Engine.call) --------------------------------------------


def _inspect_service_or_none(api: Any, name: str) -> Json | None:
    try:
        found = cast(Json, api.inspect_service(name))
    except docker.errors.NotFound:
        return None
    # The API also answers for an id prefix: only the exact name (or id) is this service.
    return found if name in (found.get("Spec", {}).get("Name"), found.get("ID")) else None


def _update_service(api: Any, service_id: str, version: int, spec: Json) -> None:
    template = dict(spec["TaskTemplate"])
    if spec.get("Networks") and not template.get("Networks"):
        template["Networks"] = spec["Networks"]  # the old top-level place; the SDK would drop it
    api.update_service(
        service_id, version, task_template=template, name=spec["Name"], labels=spec.get("Labels") or {},
        mode=spec["Mode"], update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )
