"""PURE: Podman's Docker-compatible API, read as Docker's, so nothing above the engine client
has to know which of the two it talks to.

Podman (4.3, ``podman system service``) serves the Engine API, but what it reports differs from
what its own create accepts, and from Docker's. Each difference was met on a real Podman:

- ulimits: inspect names them ``RLIMIT_NOFILE``, create wants ``nofile`` ("invalid ulimit type:
  RLIMIT_NOFILE" otherwise);
- a random host port (``-p 127.0.0.1::8080``) is picked at create time and then reported in
  ``HostConfig.PortBindings`` as if it had been asked for. Nothing in either inspect (Docker's or
  libpod's) records that it was random; Podman picks it from the host's ephemeral range
  (``/proc/sys/net/ipv4/ip_local_port_range``), so a port in that range is read as random, as
  Docker reports it: HostPort "". A fixed port deliberately chosen inside that range is read as
  random too (a limit, in the README);
- the default network: NetworkMode "bridge" on a network named ``podman``;
- the engine's own environment entries (``container=podman``, ``TERM=xterm``, ``HOSTNAME=<id>``)
  and ``StopTimeout`` 0 on a container created through this API without one (Docker: 10 s), which
  read back and cloned would stop a replica with no grace period at all;
- ``Cmd`` ``[]`` where Docker says null;
- an anonymous volume (``-v /data``, Compose's ``- /data``) reported as a bind of the volume's
  64-hex name in ``HostConfig.Binds``, where Docker reports ``Config.Volumes``: read back as it
  is, every clone would mount that one volume, so replicas made by ``--scale`` would share it;
- events: ``remove`` where Docker says ``destroy``, ``containerExitCode`` for ``exitCode``, and a
  ``health_status`` on every healthcheck run that carries the status from BEFORE the run (seen:
  "starting" on a run that found it healthy), so it is not passed on: whoever runs the check reads
  its result (backends/docker/health_runs.py).
"""

from __future__ import annotations

import re
from typing import Any

Inspect = dict[str, Any]

PODMAN_COMPONENT = "Podman Engine"
PODMAN_DEFAULT_NETWORK = "podman"
# Linux's default ephemeral range, for a Podman whose host's own range cannot be read (remote).
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)
DOCKER_DEFAULT_STOP_TIMEOUT_S = 10

_ENGINE_ENV = ("container=podman", "TERM=xterm")
# The engine names an anonymous volume with 64 random hex digits (a named one is named by its user).
_ANONYMOUS_VOLUME = re.compile(r"[0-9a-f]{64}")


def is_podman_version(version: dict[str, Any]) -> bool:
    """Whether ``GET /version`` came from Podman: its Components name "Podman Engine"."""
    return any(str(part.get("Name", "")) == PODMAN_COMPONENT for part in version.get("Components") or [])


def parse_port_range(text: str) -> tuple[int, int]:
    """'32768\\t60999\\n' (ip_local_port_range) -> (32768, 60999)."""
    low, high = text.split()
    return int(low), int(high)


def docker_shaped_inspect(inspect: Inspect, ephemeral: tuple[int, int] = DEFAULT_EPHEMERAL_PORTS) -> Inspect:
    """A Podman container's inspect data as Docker would report the same container (a new dict)."""
    config = dict(inspect.get("Config") or {})
    host_config = dict(inspect.get("HostConfig") or {})
    host_config["Ulimits"] = [_docker_ulimit(limit) for limit in host_config.get("Ulimits") or []] or None
    host_config["PortBindings"] = _asked_port_bindings(host_config.get("PortBindings") or {}, ephemeral) or None
    hostname = str(config.get("Hostname") or "")
    config["Env"] = [
        entry for entry in config.get("Env") or [] if entry not in _ENGINE_ENV and entry != f"HOSTNAME={hostname}"
    ] or None
    anonymous = _anonymous_volume_binds(inspect)
    if anonymous:
        host_config["Binds"] = [bind for bind in host_config.get("Binds") or [] if bind not in anonymous] or None
        config["Volumes"] = {**(config.get("Volumes") or {}), **{path: {} for path in anonymous.values()}}
    if config.get("Cmd") == []:
        config["Cmd"] = None
    if not config.get("StopTimeout"):
        config["StopTimeout"] = DOCKER_DEFAULT_STOP_TIMEOUT_S
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    if host_config.get("NetworkMode") == "bridge" and PODMAN_DEFAULT_NETWORK in networks and "bridge" not in networks:
        host_config["NetworkMode"] = PODMAN_DEFAULT_NETWORK
    return {**inspect, "Config": config, "HostConfig": host_config}


def docker_shaped_event(raw: dict[str, Any]) -> dict[str, Any] | None:
    """A Podman event as Docker would send it, or None for one that must not be passed on."""
    action = str(raw.get("Action") or raw.get("status") or "")
    if action == "health_status":
        return None
    actor = dict(raw.get("Actor") or {})
    attributes = dict(actor.get("Attributes") or {})
    if "containerExitCode" in attributes and "exitCode" not in attributes:
        attributes["exitCode"] = attributes["containerExitCode"]
    if action == "remove":
        action = "destroy"
    return {**raw, "Action": action, "status": action, "Actor": {**actor, "Attributes": attributes}}


def podman_event_filters(filters: dict[str, list[str]]) -> dict[str, list[str]]:
    """Docker's event filters for Podman: ``destroy`` is ``remove`` there."""
    events = filters.get("event")
    if not events or "destroy" not in events:
        return filters
    return {**filters, "event": [*events, "remove"]}


def _anonymous_volume_binds(inspect: Inspect) -> dict[str, str]:
    """Binds of an anonymous volume, each with its path: '60c7...912c:/data:rw,rprivate' -> '/data'
    (the mount list says it is a volume of that name)."""
    volumes = {
        str(mount.get("Name")): str(mount.get("Destination"))
        for mount in inspect.get("Mounts") or []
        if mount.get("Type") == "volume" and _ANONYMOUS_VOLUME.fullmatch(str(mount.get("Name", "")))
    }
    found = {}
    for bind in (inspect.get("HostConfig") or {}).get("Binds") or []:
        source, _, rest = str(bind).partition(":")
        if source in volumes and rest.partition(":")[0] == volumes[source]:
            found[bind] = volumes[source]
    return found


def _docker_ulimit(limit: dict[str, Any]) -> dict[str, Any]:
    """{'Name': 'RLIMIT_NOFILE', ...} -> {'Name': 'nofile', ...}."""
    name = str(limit.get("Name", ""))
    return {**limit, "Name": name.removeprefix("RLIMIT_").lower()}


def _asked_port_bindings(bindings: dict[str, Any], ephemeral: tuple[int, int]) -> dict[str, Any]:
    """HostPort 41234 (inside 32768-60999: Podman picked it) -> "" (any port); 8080 stays."""
    low, high = ephemeral
    asked: dict[str, Any] = {}
    for container_port, host_bindings in bindings.items():
        asked[container_port] = [
            {**binding, "HostPort": ""} if str(binding.get("HostPort") or "").isdigit()
            and low <= int(binding["HostPort"]) <= high else binding
            for binding in host_bindings or []
        ]
    return asked
