"""PURE: the create request that makes a new container like an existing one.

A container is "cloned" from its inspect data for three jobs: a selector service's replacement
(same definition, fresh image), a rollback (same definition, the original image id), and a Compose
replacement that must take over its predecessor's anonymous volumes.

What comes across and what does not:
- Config and HostConfig as the engine recorded them, except what the OLD image contributed
  (env entries, cmd, entrypoint, labels, ...) when the image changes: the new image's defaults
  must apply, exactly as if the container had been created from it in the first place.
- Networks with their aliases, fixed addresses and links, minus the short-id alias the engine
  adds by itself. API 1.41 takes one network at create; the rest are connected afterwards.
- Volumes: named volumes and binds as configured. Wherever the new definition would create a
  fresh anonymous volume, the predecessor's volume at that path is mounted by name instead, so its
  data survives (this is what ``docker compose up`` does when it recreates a container). With
  start-first, old and new container share that volume until the old one is retired: software that
  cannot share its data directory (a database) must be rolled stop-first. Mounted by name, the
  volume is no longer removed by ``docker rm -v`` of the replacement (nor by ``compose down -v``),
  exactly as after Compose's own recreate.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rollover.backends.docker.inspect import IMAGE_REF_LABEL, RESTORED_FROM_LABEL

Inspect = dict[str, Any]

_OWN_LABELS = frozenset({IMAGE_REF_LABEL, RESTORED_FROM_LABEL})
# The engine names an anonymous volume with 64 random hex digits (a named one is named by its user).
_ANONYMOUS_VOLUME = re.compile(r"[0-9a-f]{64}")

# Config fields an image supplies as defaults; each is dropped from a clone when it still equals the
# old image's value, so that the new image's value takes its place.
_IMAGE_DEFAULT_FIELDS = ("Healthcheck", "WorkingDir", "User", "StopSignal", "Shell", "OnBuild")


@dataclass(frozen=True)
class CloneRequest:
    """Body for ``POST /containers/create`` plus the networks to connect before starting."""

    body: dict[str, Any]
    extra_networks: tuple[tuple[str, dict[str, Any]], ...] = ()
    inherited_volumes: tuple[str, ...] = ()  # paths where the predecessor's volume is mounted


def clone_request(
    source: Inspect,
    *,
    image: str,
    old_image_config: dict[str, Any] | None = None,
    new_image_volumes: Iterable[str] = (),
    volumes_from: Inspect | None = None,
    extra_labels: dict[str, str] | None = None,
) -> CloneRequest:
    """A container like ``source`` on ``image``.

    ``old_image_config`` (the Config of the image ``source`` runs) is given when the image changes:
    the defaults it contributed are dropped. ``volumes_from`` is the container whose volumes fill
    the clone's anonymous volume paths (``source`` itself for a rollback, the old replica for a
    replacement); None leaves them fresh.
    """
    config = copy.deepcopy(source.get("Config") or {})
    host_config = copy.deepcopy(source.get("HostConfig") or {})
    config["Image"] = image
    if old_image_config is not None:
        config = without_image_defaults(config, old_image_config, set(host_config.get("PortBindings") or {}))
    if _hostname_is_engine_made(source, config, host_config):
        config.pop("Hostname", None)
    # A rollback's labels describe the rolled-back container only; callers re-add them.
    labels = {k: v for k, v in (config.get("Labels") or {}).items() if k not in _OWN_LABELS}
    config["Labels"] = {**labels, **(extra_labels or {})} or None
    host_config["Links"] = _create_links(host_config.get("Links")) or None
    inherited: list[str] = []
    if volumes_from is not None:
        inherited = inherit_anonymous_volumes(config, host_config, volumes_from, new_image_volumes)
    primary, extra = _endpoints(source, host_config.get("NetworkMode") or "default")
    body = {**config, "HostConfig": host_config}
    if primary is not None:
        network, endpoint = primary
        if host_config.get("NetworkMode") not in ("default", network):
            host_config["NetworkMode"] = network  # it held the network's id: use the name endpoints use
        body["NetworkingConfig"] = {"EndpointsConfig": {network: endpoint}}
    return CloneRequest(body=body, extra_networks=tuple(extra), inherited_volumes=tuple(inherited))


def without_image_defaults(
    config: dict[str, Any], image_config: dict[str, Any], published_ports: set[str]
) -> dict[str, Any]:
    """``config`` minus whatever still equals the image's default, so a new image's defaults win.

    Env "APP_VERSION=v1" from image v1 goes (v2 brings its own); "DB=prod" set by the user stays.
    """
    config = dict(config)
    image_env = set(image_config.get("Env") or [])
    config["Env"] = [entry for entry in config.get("Env") or [] if entry not in image_env] or None
    if config.get("Entrypoint") == image_config.get("Entrypoint"):
        config["Entrypoint"] = None
        # With a user-set entrypoint the engine never used the image's Cmd, so an equal Cmd was
        # given explicitly and must stay.
        if config.get("Cmd") == image_config.get("Cmd"):
            config["Cmd"] = None
    config["Labels"] = _without_equal_items(config.get("Labels"), image_config.get("Labels"))
    exposed = {
        port: spec
        for port, spec in (config.get("ExposedPorts") or {}).items()
        if port not in (image_config.get("ExposedPorts") or {}) or port in published_ports
    }
    config["ExposedPorts"] = exposed or None
    image_volumes = image_config.get("Volumes") or {}
    config["Volumes"] = {p: s for p, s in (config.get("Volumes") or {}).items() if p not in image_volumes} or None
    for field in _IMAGE_DEFAULT_FIELDS:
        if field in config and config[field] == image_config.get(field):
            config.pop(field)
    return config


def inherit_anonymous_volumes(
    config: dict[str, Any], host_config: dict[str, Any], previous: Inspect, image_volumes: Iterable[str]
) -> list[str]:
    """Mount ``previous``'s volumes, by name, at the paths where a fresh anonymous volume would go.

    Mutates ``config`` and ``host_config`` (copies owned by the caller); returns those paths.
    """
    mounts: list[dict[str, Any]] = list(host_config.get("Mounts") or [])
    named = _named_destinations(host_config.get("Binds") or [], mounts)
    unnamed_mounts = {_clean(m["Target"]) for m in mounts if m.get("Type") == "volume" and not m.get("Source")}
    anonymous = {_clean(p) for p in (config.get("Volumes") or {})} | set(map(_clean, image_volumes))
    anonymous = (anonymous | unnamed_mounts) - named
    previous_volumes = {
        _clean(m["Destination"]): m for m in previous.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Name")
    }
    inherited = sorted(anonymous & set(previous_volumes))
    if not inherited:
        return []
    kept = [m for m in mounts if not (_clean(m["Target"]) in inherited and not m.get("Source"))]
    taken_over = [
        {
            "Type": "volume",
            "Source": previous_volumes[path]["Name"],
            "Target": path,
            "ReadOnly": not previous_volumes[path].get("RW", True),
        }
        for path in inherited
    ]
    host_config["Mounts"] = kept + taken_over
    volumes = {p: s for p, s in (config.get("Volumes") or {}).items() if _clean(p) not in inherited}
    config["Volumes"] = volumes or None
    return inherited


def with_fresh_anonymous_volumes(request: CloneRequest) -> CloneRequest:
    """The request with fresh anonymous volumes where the source mounted an anonymous volume by
    name (one a rollout took over from its predecessor): a new replica beside the source (a
    refill) must get data of its own, not share the source's. Named volumes and binds stay."""
    host_config = dict(request.body.get("HostConfig") or {})
    mounts = [
        {key: value for key, value in mount.items() if key != "Source"}
        if mount.get("Type") == "volume" and _ANONYMOUS_VOLUME.fullmatch(str(mount.get("Source") or ""))
        else mount
        for mount in host_config.get("Mounts") or []
    ]
    host_config["Mounts"] = mounts or None
    return CloneRequest({**request.body, "HostConfig": host_config}, request.extra_networks, ())


def endpoint_for_connect(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.connect_container_to_network`` from endpoint settings."""
    ipam = settings.get("IPAMConfig") or {}
    return {
        "aliases": settings.get("Aliases") or None,
        "links": [tuple(link.split(":", 1)) for link in settings.get("Links") or []] or None,
        "ipv4_address": ipam.get("IPv4Address") or None,
        "ipv6_address": ipam.get("IPv6Address") or None,
        "link_local_ips": ipam.get("LinkLocalIPs") or None,
        "driver_opt": settings.get("DriverOpts") or None,
    }


def _hostname_is_engine_made(source: Inspect, config: dict[str, Any], host_config: dict[str, Any]) -> bool:
    """The engine names a container's host after its short id (or borrows it in host/container
    network modes); a clone must get its own, not the predecessor's."""
    mode = str(host_config.get("NetworkMode") or "")
    borrowed = mode == "host" or mode.startswith("container:")
    return borrowed or config.get("Hostname") == str(source.get("Id", ""))[:12]


def _without_equal_items(items: dict[str, str] | None, defaults: dict[str, str] | None) -> dict[str, str] | None:
    defaults = defaults or {}
    kept = {key: value for key, value in (items or {}).items() if defaults.get(key) != value}
    return kept or None


def _create_links(links: list[str] | None) -> list[str]:
    """Inspect shows legacy links as ``/db:/web/db``; create wants ``db:db``."""
    created = []
    for link in links or []:
        target, _, alias = link.partition(":")
        created.append(f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else target.lstrip("/"))
    return created


def _named_destinations(binds: list[str], mounts: list[dict[str, Any]]) -> set[str]:
    """Paths something named (a volume name or a host path) is mounted at."""
    named = {_clean(bind.split(":")[1]) for bind in binds if len(bind.split(":")) >= 2}
    return named | {_clean(m["Target"]) for m in mounts if m.get("Source") or m.get("Type") not in ("volume", None)}


def _endpoints(
    source: Inspect, network_mode: str
) -> tuple[tuple[str, dict[str, Any]] | None, list[tuple[str, dict[str, Any]]]]:
    """(the network to create on, the networks to connect afterwards), with their settings."""
    if network_mode in ("host", "none") or network_mode.startswith("container:"):
        return None, []
    networks: dict[str, Any] = (source.get("NetworkSettings") or {}).get("Networks") or {}
    short_id = str(source.get("Id", ""))[:12]
    settings = {name: _endpoint_settings(endpoint, short_id) for name, endpoint in sorted(networks.items())}
    primary_name = "bridge" if network_mode == "default" else network_mode
    if primary_name not in settings:  # NetworkMode may hold the network's id instead of its name
        by_id = [name for name, ep in networks.items() if str(ep.get("NetworkID", "")).startswith(network_mode)]
        if not by_id:
            return None, list(settings.items())
        primary_name = by_id[0]
    extra = [(name, endpoint) for name, endpoint in settings.items() if name != primary_name]
    return (primary_name, settings[primary_name]), extra


def _endpoint_settings(endpoint: dict[str, Any], short_id: str) -> dict[str, Any]:
    settings = {
        # The engine adds the short id as an alias by itself; the clone gets its own.
        "Aliases": [alias for alias in endpoint.get("Aliases") or [] if alias != short_id],
        "IPAMConfig": endpoint.get("IPAMConfig"),
        "Links": endpoint.get("Links"),
        "DriverOpts": endpoint.get("DriverOpts"),
    }
    return {key: value for key, value in settings.items() if value}


def _clean(path: str) -> str:
    return posixpath.normpath(path)
