"""PURE: which containers on a Docker Engine are the service.

A Compose service is the containers Compose labelled with its project and service name (one-off
``compose run`` containers are no replicas); a plain service is whatever a label selector matches.
Everything the backend lists, watches, reports or locks is scoped by one of the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from rollover.backends.docker.inspect import (
    COMPOSE_NUMBER,
    COMPOSE_ONEOFF,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    container_name,
    labels_of,
)
from rollover.backends.docker.lock import lock_name
from rollover.engine import Inspect
from rollover.errors import InvalidOption


@dataclass(frozen=True)
class ServiceScope:
    """A Compose project's service, or the containers labelled with every label of ``selector``.

    ``project`` may be None until connect() resolved it the way Compose does.
    """

    service: str
    project: str | None = None
    selector: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.project is not None and self.selector is not None:
            raise InvalidOption("give either a compose project or a label selector, not both")
        if self.selector is not None and not self.selector:
            raise InvalidOption("a label selector needs at least one label=value")

    @property
    def is_compose(self) -> bool:
        return self.selector is None

    def in_project(self, project: str) -> ServiceScope:
        return replace(self, project=project)

    def labels(self) -> dict[str, str]:
        if self.selector is not None:
            return self.selector
        return {COMPOSE_PROJECT: str(self.project), COMPOSE_SERVICE: self.service, COMPOSE_ONEOFF: "False"}

    def lock_name(self) -> str:
        return lock_name(self.service, project=self.project, selector=self.selector)

    def description(self) -> str:
        if self.selector is None:
            return f"compose project {self.project}, service {self.service}"
        return f"containers labelled {_selector_text(self.selector)}"

    def nothing_running(self) -> str:
        if self.selector is None:
            return f"compose project {self.project} has no running replicas of service {self.service}"
        return f"no running container matches label {_selector_text(self.selector)}"


def replica_order(inspect: Inspect) -> tuple[int, str]:
    """Compose's container number first (``web-2`` before ``web-10``), then the name."""
    number = labels_of(inspect).get(COMPOSE_NUMBER, "")
    return (int(number) if number.isdigit() else 0, container_name(inspect))


def _selector_text(selector: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(selector.items()))
