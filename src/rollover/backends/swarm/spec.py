"""PURE: Swarm service specs as rollover changes them. No I/O, no clock.

Swarm has no API that replaces one chosen task: tasks are only ever created by the manager, from
the service's current spec, and any spec change starts Swarm's updater on every task that differs
from it. So rollover paces Swarm's own updater instead (see ``backend.py``): each request is one
spec change whose update config lets the updater replace exactly ``n`` slots and then *hold*
(a delay of a year after each slot). This module computes those specs, the one that hands the
service back, and what a spec says about its replicas (fixed host ports, the health budget).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from rollover.core.model import Order

Json = dict[str, Any]

NS = 1_000_000_000
# After each slot the updater sleeps this long before touching the next one: the hold that stops a
# request at exactly ``parallelism`` slots. Only the next spec change (the next request) ends it.
HOLD_NS = 365 * 24 * 3600 * NS
REQUEST_LABEL = "rollover.request"
# What the user's spec was before a rollout changed it (image, ForceUpdate, update config), kept on
# the service by the rollout's first request: a rollover killed before it handed the service back
# leaves it there, and the next rollout reads the user's spec from it instead of taking the held
# one for the user's.
USER_SPEC_LABEL = "rollover.user-spec"


def forward_template(template: Mapping[str, Any], image: str | None) -> Json:
    """The task template to roll to: the new image (if any) and ForceUpdate + 1, so every task
    differs from it even when the image did not change (a rolling restart)."""
    new = copy.deepcopy(dict(template))
    if image is not None:
        new.setdefault("ContainerSpec", {})["Image"] = image
    new["ForceUpdate"] = int(new.get("ForceUpdate") or 0) + 1
    return new


def request_spec(spec: Mapping[str, Any], template: Mapping[str, Any], parallelism: int, order: Order,
                 request: str) -> Json:
    """The spec that makes Swarm replace ``parallelism`` slots with tasks of ``template``, then hold.

    The request label (``request``: the rollout's own token and the request's number) changes
    every time, also from what a killed rollout left, so even a request that keeps the template is
    a spec change: it cancels the holding updater and starts a fresh one on the slots still dirty.
    Failure action pause: a replacement that fails before it is up stops Swarm's updater (and the
    pause shows up as a service event with the reason).
    """
    new = copy.deepcopy(dict(spec))
    new["TaskTemplate"] = copy.deepcopy(dict(template))
    labels = dict(new.get("Labels") or {})
    labels.setdefault(USER_SPEC_LABEL, _user_record(spec))
    new["Labels"] = {**labels, REQUEST_LABEL: request}
    new["UpdateConfig"] = {
        "Parallelism": parallelism, "Delay": HOLD_NS, "FailureAction": "pause", "Monitor": NS,
        "MaxFailureRatio": 0, "Order": order.value,
    }
    return new


def handed_back_spec(spec: Mapping[str, Any], users: Mapping[str, Any]) -> Json:
    """The current spec with the user's own update config back (from ``users``, the user's spec)
    and rollover's labels gone."""
    new = copy.deepcopy(dict(spec))
    new["Labels"] = _without_ours(new.get("Labels"))
    _put(new, "UpdateConfig", copy.deepcopy(users.get("UpdateConfig")))
    return new


def users_spec(spec: Mapping[str, Any]) -> Json:
    """The spec as the user made it: ``spec`` itself, or, when a rollout that never handed it back
    left it held, that spec with the image, ForceUpdate and update config its first request recorded."""
    new = copy.deepcopy(dict(spec))
    recorded = (new.get("Labels") or {}).get(USER_SPEC_LABEL)
    new["Labels"] = _without_ours(new.get("Labels"))
    if recorded is None:
        return new
    record = json.loads(recorded)
    template = new.setdefault("TaskTemplate", {})
    _put(template.setdefault("ContainerSpec", {}), "Image", record.get("Image"))
    _put(template, "ForceUpdate", record.get("ForceUpdate"))
    _put(new, "UpdateConfig", record.get("UpdateConfig"))
    return new


def is_held(spec: Mapping[str, Any]) -> bool:
    """The spec is one a rollout paces (its labels say so): a killed one left it, if no rollout runs."""
    return bool({REQUEST_LABEL, USER_SPEC_LABEL} & set(spec.get("Labels") or {}))


def held_template(spec: Mapping[str, Any], image: str | None) -> Json | None:
    """The template a killed rollout left the service held on, when this rollout goes the same way
    (no other image asked for): going on with it keeps the replacements the killed one finished
    (they are not dirty), so the rollout's targets - the replicas not yet replaced - are exactly
    the slots Swarm still has to update."""
    if REQUEST_LABEL not in (spec.get("Labels") or {}):
        return None
    template = copy.deepcopy(dict(spec.get("TaskTemplate") or {}))
    held_image = str((template.get("ContainerSpec") or {}).get("Image", ""))
    return template if image is None or image.partition("@")[0] == held_image.partition("@")[0] else None


def _user_record(spec: Mapping[str, Any]) -> str:
    template = spec.get("TaskTemplate") or {}
    return json.dumps({"Image": (template.get("ContainerSpec") or {}).get("Image"),
                       "ForceUpdate": template.get("ForceUpdate"), "UpdateConfig": spec.get("UpdateConfig")},
                      sort_keys=True)


def _without_ours(labels: Mapping[str, str] | None) -> dict[str, str]:
    return {key: value for key, value in (labels or {}).items() if key not in (REQUEST_LABEL, USER_SPEC_LABEL)}


def _put(document: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key``, or leave it out when the user had none (Swarm's default then)."""
    if value is None:
        document.pop(key, None)
    else:
        document[key] = value


def fixed_host_ports(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Host-mode ports with a fixed published port: one per node, so start-first would have to
    place the replacement on another node, and on a full cluster it stays pending forever."""
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return tuple(sorted({
        f"{port['PublishedPort']}/{port.get('Protocol', 'tcp')}"
        for port in ports if port.get("PublishMode") == "host" and port.get("PublishedPort")
    }))


def health_budget(healthcheck: Mapping[str, Any] | None) -> float | None:
    """start period + interval x retries (Docker's defaults for zeros); None without a check.

    interval 0.5 s, retries 3, no start period -> 1.5 s.
    """
    if not healthcheck or list(healthcheck.get("Test") or ["NONE"])[:1] == ["NONE"]:
        return None
    interval = (healthcheck.get("Interval") or 30 * NS) / NS
    retries = healthcheck.get("Retries") or 3
    start = (healthcheck.get("StartPeriod") or 0) / NS
    return float(start + interval * retries)
