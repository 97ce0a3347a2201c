"""What runs of a Compose project on the engine, by service, as Compose labelled it; and the images
the model's references point to now (a retagged or pulled image is a change, as for Compose)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import replace

from rollover.backends.docker.inspect import (
    COMPOSE_ONEOFF,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    is_lock,
    labels_of,
)
from rollover.core.project import DefinedService, RunningService
from rollover.engine import Engine, Inspect

CONFIG_HASH = "com.docker.compose.config-hash"


async def project_containers(engine: Engine, project: str) -> list[Inspect]:
    """Every container Compose made for the project's services (no one-offs, no rollover locks)."""
    ids = await engine.list_container_ids({COMPOSE_PROJECT: project, COMPOSE_ONEOFF: "False"})
    found = await asyncio.gather(*(engine.inspect_container(container_id) for container_id in ids))
    return [inspect for inspect in found if inspect is not None and not is_lock(inspect)]


def running_services(containers: list[Inspect]) -> dict[str, RunningService]:
    running: dict[str, list[Inspect]] = defaultdict(list)
    stopped: dict[str, list[str]] = defaultdict(list)
    for inspect in containers:
        service = labels_of(inspect).get(COMPOSE_SERVICE, "")
        state = inspect.get("State") or {}
        if state.get("Running") or state.get("Restarting"):
            running[service].append(inspect)
        else:
            stopped[service].append(str(inspect["Id"]))
    return {
        name: RunningService(
            name=name,
            running=tuple(str(item["Id"]) for item in running.get(name, [])),
            stopped=tuple(stopped.get(name, [])),
            config_hashes=frozenset(labels_of(item).get(CONFIG_HASH, "") for item in running.get(name, [])),
            image_ids=frozenset(str(item.get("Image", "")) for item in running.get(name, [])),
        )
        for name in sorted(set(running) | set(stopped))
    }


async def with_image_ids(engine: Engine, services: dict[str, DefinedService]) -> dict[str, DefinedService]:
    """Each service with the id its image reference points to on the engine now (None: not there)."""
    refs = sorted({service.image for service in services.values() if service.image})
    found = await asyncio.gather(*(engine.inspect_image(ref) for ref in refs))
    ids = {ref: None if image is None else str(image["Id"]) for ref, image in zip(refs, found, strict=True)}
    return {name: replace(service, image_id=ids.get(service.image or "")) for name, service in services.items()}
