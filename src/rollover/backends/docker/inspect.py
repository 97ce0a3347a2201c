"""PURE: what a container's inspect data says about it, as rollover's plain values.

No I/O here: every function takes the dict ``docker inspect`` returns (the Engine API's
``GET /containers/{id}/json``) and reads it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from rollover.backends.lease import LOCK_HOLDER_LABEL
from rollover.core.model import Replica

Inspect = dict[str, Any]

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"
COMPOSE_NUMBER = "com.docker.compose.container-number"
# Set on containers rollover created from an image id (a rollback) so the next rollout still knows
# which reference (repo:tag) the service runs.
IMAGE_REF_LABEL = "rollover.image-ref"
# Set on a container a rollback made, naming the container it replaced: a restore cut short by a
# daemon restart finds its own work by it when it is tried again (restore is idempotent).
RESTORED_FROM_LABEL = "rollover.restored-from"

TARGET_STATES = frozenset({"running", "restarting"})

# Docker's healthcheck defaults, applied by the engine when the definition leaves a value unset (0).
_DEFAULT_INTERVAL_S = 30.0
_DEFAULT_TIMEOUT_S = 30.0
_DEFAULT_RETRIES = 3
_DEFAULT_STOP_TIMEOUT_S = 10
_NS = 1e9


ANONYMOUS_VOLUME = re.compile(r"[0-9a-f]{64}")


def labels_of(inspect: Inspect) -> dict[str, str]:
    return dict(inspect.get("Config", {}).get("Labels") or {})


def container_name(inspect: Inspect) -> str:
    return str(inspect.get("Name", "")).lstrip("/")


def is_target(inspect: Inspect) -> bool:
    """Running or restarting (a healthcheck still 'starting' counts): the rollout replaces it."""
    return inspect.get("State", {}).get("Status") in TARGET_STATES


def is_lock(inspect: Inspect) -> bool:
    return LOCK_HOLDER_LABEL in labels_of(inspect)


def healthcheck_of(config: dict[str, Any]) -> dict[str, Any] | None:
    """The effective healthcheck, or None when there is none or it is disabled (``NONE``)."""
    check = config.get("Healthcheck") or None
    if not check or not check.get("Test") or check["Test"][0] == "NONE":
        return None
    return dict(check)


def health_budget_s(config: dict[str, Any]) -> float | None:
    """Seconds after start by which a healthy container must have said so.

    start_period + interval x (retries + 1) + timeout: interval 0.5 s, timeout 2 s, retries 3, no
    start period -> 0 + 0.5 x 4 + 2 = 4 s. Unset values (0 in the API, nanoseconds) take the
    engine's defaults: interval 30 s, timeout 30 s, retries 3, start period 0.
    """
    check = healthcheck_of(config)
    if check is None:
        return None
    interval = (check.get("Interval") or 0) / _NS or _DEFAULT_INTERVAL_S
    timeout = (check.get("Timeout") or 0) / _NS or _DEFAULT_TIMEOUT_S
    retries = check.get("Retries") or _DEFAULT_RETRIES
    start_period = (check.get("StartPeriod") or 0) / _NS
    return float(start_period + interval * (retries + 1) + timeout)


def stop_timeout_s(inspect: Inspect) -> int:
    """The container's own stop grace period (compose ``stop_grace_period``, ``--stop-timeout``)."""
    timeout = inspect.get("Config", {}).get("StopTimeout")
    return int(timeout) if timeout is not None else _DEFAULT_STOP_TIMEOUT_S


def fixed_host_ports(inspect: Inspect) -> tuple[str, ...]:
    """Container ports bound to a fixed host port, as ``docker ps`` shows them: ``"127.0.0.1:80->8080/tcp"``.

    A binding with an empty or zero HostPort asks for a random port, which two containers can
    both have, so it is not fixed.
    """
    bindings = inspect.get("HostConfig", {}).get("PortBindings") or {}
    fixed = []
    for container_port, host_bindings in sorted(bindings.items()):
        for binding in host_bindings or []:
            host_port = str(binding.get("HostPort") or "")
            if host_port not in ("", "0"):
                fixed.append(f"{binding.get('HostIp') or '0.0.0.0'}:{host_port}->{container_port}")
    return tuple(fixed)


def image_ref_of(inspect: Inspect) -> str:
    """The reference the container was made from; after a rollback, the one it used to have."""
    return labels_of(inspect).get(IMAGE_REF_LABEL) or str(inspect.get("Config", {}).get("Image", ""))


def replica_details(inspect: Inspect) -> tuple[tuple[str, str], ...]:
    """Addresses a balancer needs: each network's IP, each published port, the compose number."""
    settings = inspect.get("NetworkSettings") or {}
    details: list[tuple[str, str]] = []
    for network, endpoint in sorted((settings.get("Networks") or {}).items()):
        if endpoint.get("IPAddress"):
            details.append((f"ip.{network}", str(endpoint["IPAddress"])))
    for port, bindings in sorted((settings.get("Ports") or {}).items()):
        for binding in bindings or []:
            details.append((f"published.{port}", f"{binding.get('HostIp', '')}:{binding.get('HostPort', '')}"))
    number = labels_of(inspect).get(COMPOSE_NUMBER)
    if number is not None:
        details.append(("compose.number", number))
    return tuple(details)


def replica_from_inspect(inspect: Inspect) -> Replica:
    config = inspect.get("Config", {})
    return Replica(
        id=str(inspect["Id"]),
        name=container_name(inspect),
        image=str(inspect.get("Image", "")),
        image_ref=image_ref_of(inspect),
        running=bool(inspect.get("State", {}).get("Running", False)),
        has_healthcheck=healthcheck_of(config) is not None,
        fixed_host_ports=fixed_host_ports(inspect),
        health_budget_s=health_budget_s(config),
        created_at=created_at(inspect),
        volumes=anonymous_volumes(inspect),
        restored=RESTORED_FROM_LABEL in labels_of(inspect),
        details=replica_details(inspect),
    )


def anonymous_volumes(inspect: Inspect) -> frozenset[str]:
    """The anonymous volumes a container mounts: the data only it has. A named volume (Compose's
    ``shared:``) belongs to the project and outlives any container; an anonymous one is named by
    the engine with 64 hex digits and is found again only through a container that mounts it."""
    return frozenset(
        str(m["Name"]) for m in inspect.get("Mounts") or ()
        if m.get("Type") == "volume" and ANONYMOUS_VOLUME.fullmatch(str(m.get("Name", "")))
    )


def created_at(inspect: Inspect) -> float | None:
    return engine_time(str(inspect.get("Created") or ""))


def finished_at(inspect: Inspect) -> float | None:
    """When the container last stopped; None if it never did (the engine writes year 1 then)."""
    moment = engine_time(str(inspect.get("State", {}).get("FinishedAt") or ""))
    return moment if moment is not None and moment > 0 else None


def engine_time(text: str) -> float | None:
    """'2026-11-26T10:30:00.123456789Z' -> epoch seconds (the engine writes nanoseconds; Python
    parses at most microseconds, so the fraction is cut to six digits)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    stamp = f"{whole}.{(fraction or '0')[:6]}{'+00:00' if zone == 'Z' else zone}"
    return datetime.fromisoformat(stamp).timestamp()
