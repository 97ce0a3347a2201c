"""PURE: a Compose replacement made through the Engine API, exactly as Compose would make it.

Compose is asked once per rollout to make one container of the service (``up --no-start --scale``,
see replacements.py): the *template*. Every further replacement is a copy of the template's create
request that differs only where two containers Compose makes by ``--scale`` differ:

- the container number (label ``com.docker.compose.container-number``) and the name built from it
  (``<project>-<service>-<n>``), and Compose's alias of that name on every network;
- the anonymous volumes: the predecessor's, mounted by name, wherever the template got fresh ones
  (what Compose's own recreate does; clone.py), or fresh ones for a refill.

Everything else (config hash, ``com.docker.compose.image``, labels, env files' values, networks and
their aliases, named volumes, binds) is the template's, so ``docker compose ps`` lists the copy and
a later ``docker compose up -d`` recreates nothing (tests/engine/test_fast_requests.py).

Worked example: template ``shop-web-25`` (number 25) of a service whose containers are numbered up
to 25 -> the next copies are ``shop-web-26``, ``shop-web-27``..., each with aliases
``[shop-web-26, web, ...]`` where the template had ``[shop-web-25, web, ...]``.
"""

from __future__ import annotations

import copy
from typing import Any

from rollover.backends.docker.clone import CloneRequest, clone_request
from rollover.backends.docker.inspect import COMPOSE_NUMBER, container_name, labels_of

Inspect = dict[str, Any]


def compose_number(inspect: Inspect) -> int:
    """The container number Compose gave it (0 when it has none)."""
    number = labels_of(inspect).get(COMPOSE_NUMBER, "")
    return int(number) if number.isdigit() else 0


def numbered_name(template: Inspect, number: int) -> str:
    """``shop-web-25`` -> ``shop-web-26`` for number 26: Compose's name with another number."""
    stem, _, _ = container_name(template).rpartition("-")
    return f"{stem}-{number}"


def copy_of_template(template: Inspect, number: int, volumes_from: Inspect | None) -> tuple[CloneRequest, str]:
    """The create request of the container Compose would number ``number``, and its name.

    ``volumes_from``: the predecessor whose anonymous volumes it takes over; None gives it fresh ones.
    """
    name = numbered_name(template, number)
    request = clone_request(template, image=str(template["Config"]["Image"]), volumes_from=volumes_from)
    body = copy.deepcopy(request.body)
    body["Labels"] = {**(body.get("Labels") or {}), COMPOSE_NUMBER: str(number)}
    old_name = container_name(template)
    primary = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for endpoint in primary.values():
        endpoint["Aliases"] = _renamed(endpoint.get("Aliases"), old_name, name)
    extra = tuple(
        (network, {**endpoint, "Aliases": _renamed(endpoint.get("Aliases"), old_name, name)})
        for network, endpoint in request.extra_networks
    )
    return CloneRequest(body, extra, request.inherited_volumes), name


def _renamed(aliases: list[str] | None, old: str, new: str) -> list[str]:
    return [new if alias == old else alias for alias in aliases or []]
