"""PURE: one Compose service's rollout settings, from the flags, its ``x-rollover`` extension and
its ``deploy.update_config`` / ``deploy.rollback_config``, with where each value came from.

Precedence: a flag (or its ROLLOVER_* variable) > ``x-rollover`` > ``update_config`` > rollover's
default. The two file sections do not overlap: ``update_config`` says how the rollout steps,
``x-rollover`` how traffic is handled around it (balancer, probe, hooks) and the timeout.

Defaults where the Compose specification and Swarm differ (documented in the README):
- ``failure_action``: rollover's ``rollback`` (Swarm's ``pause`` leaves a half-rolled service for
  a human; CI wants the old version back and exit 1);
- ``order``: rollover's ``auto`` (start-first unless the service cannot run twice; Swarm's and the
  specification's ``stop-first`` costs capacity for nothing);
- ``monitor``: 0 (Swarm's 5 s would add 5 s to every step of every service);
- ``parallelism`` 1, ``delay`` 0, ``max_failure_ratio`` 0: the same in all three.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rollover.core.policy import (
    FailurePolicy,
    OrderChoice,
    Policy,
    Step,
    StepKind,
    parse_duration,
    parse_enum,
    parse_step,
)
from rollover.errors import InvalidOption

if TYPE_CHECKING:
    from rollover.core.project import DefinedService

# x-rollover's keys and what each holds; anything else is a typo the user wants to hear about.
X_ROLLOVER_KEYS = {
    "balancer": "haproxy:SOCKET:BACKEND, traefik:API_URL:SERVICE, caddy:ADMIN_URL:ROUTE_ID or"
                " nginx:UPSTREAM_FILE:UPSTREAM, or a list",
    "nginx_master": "pid:PIDFILE or container:NAME (how an nginx balancer is reloaded)",
    "balancer_address": "auto, published or network:NAME",
    "balancer_port": "the container port the balancer sends to",
    "drain_timeout": "seconds",
    "probe": "a URL",
    "probe_rate": "requests per second",
    "max_probe_failures": "a count",
    "pre_stop": "a command",
    "post_start": "a command",
    "timeout": "seconds",
    "skip": "true or false",
}


@dataclass(frozen=True)
class Overrides:
    """Flags given to ``rollover up`` (None: not given); they win over the file for every service."""

    step: str | None = None
    grace: str | None = None
    order: str | None = None
    timeout: str | None = None
    on_failure: str | None = None
    drain_timeout: str | None = None
    max_probe_failures: int | None = None


@dataclass(frozen=True)
class Traffic:
    """x-rollover's traffic settings, still as text: the assembly layer builds balancers from them."""

    balancers: tuple[str, ...] = ()
    balancer_address: str = "auto"
    balancer_port: int | None = None
    drain_timeout_s: float = 30.0
    probe: str | None = None
    probe_rate: float = 50.0
    max_probe_failures: int | None = None
    pre_stop: str | None = None
    post_start: str | None = None
    nginx_master: str | None = None


@dataclass(frozen=True)
class ServiceSettings:
    policy: Policy
    sources: tuple[tuple[str, str], ...]  # (setting, where its value came from), for the plan
    traffic: Traffic = Traffic()
    order_why: str = ""
    skip: bool = False

    def source(self, setting: str) -> str:
        return dict(self.sources).get(setting, "default")


def service_settings(service: DefinedService, flags: Overrides) -> ServiceSettings:
    """Validate and merge; an invalid value is an InvalidOption naming the service and the field."""
    try:
        return _settings(service, flags)
    except InvalidOption as exc:
        raise InvalidOption(f"service {service.name}: {exc}") from None


def _settings(service: DefinedService, flags: Overrides) -> ServiceSettings:
    update, extension = service.update_config, dict(service.x_rollover)
    unknown = sorted(set(extension) - set(X_ROLLOVER_KEYS))
    if unknown:
        raise InvalidOption(f"x-rollover has no key {unknown[0]!r} (known: {', '.join(sorted(X_ROLLOVER_KEYS))})")
    sources: list[tuple[str, str]] = []

    def pick(setting: str, flag: str | None, file_value: object, file_source: str, default: str) -> str:
        if flag is not None:
            sources.append((setting, "flag"))
            return flag
        if file_value is not None:
            sources.append((setting, file_source))
            return str(file_value)
        return default

    step = _step(pick("step", flags.step, update.get("parallelism"), "update_config.parallelism", "1"))
    delay_s = parse_duration(pick("grace", flags.grace, update.get("delay"), "update_config.delay", "0"), "delay")
    monitor_s = parse_duration(str(update.get("monitor", "0")), "update_config.monitor")
    if flags.grace is None and monitor_s > delay_s:
        # A replacement that fails while it settles counts as failed: the monitor window is a
        # settling time, and the slot frees once both have passed. delay 1s, monitor 5s -> 5 s.
        delay_s = monitor_s
        sources = [item for item in sources if item[0] != "grace"] + [("grace", "update_config.monitor")]
    order, order_why = _order(service, pick("order", flags.order, update.get("order"), "update_config.order", "auto"))
    timeout_text = pick("timeout", flags.timeout, extension.get("timeout"), "x-rollover.timeout", "")
    timeout_s = parse_duration(timeout_text, "timeout") if timeout_text else None
    if timeout_s is not None and timeout_s <= 0:
        raise InvalidOption("timeout must be more than 0 seconds")
    on_failure = parse_enum(FailurePolicy, pick("on_failure", flags.on_failure, update.get("failure_action"),
                                                "update_config.failure_action", "rollback"), "failure_action")
    rollback = service.rollback_config
    policy = Policy(
        step=step, grace_s=delay_s, order=order, timeout_s=timeout_s, on_failure=on_failure,
        max_failure_ratio=_ratio(update.get("max_failure_ratio", 0)),
        rollback_step=None if rollback.get("parallelism") is None else _step(str(rollback["parallelism"])),
        rollback_grace_s=None if rollback.get("delay") is None else parse_duration(str(rollback["delay"]),
                                                                                    "rollback_config.delay"),
    )
    return ServiceSettings(
        policy=policy, sources=tuple(sources), traffic=_traffic(extension, flags, sources), order_why=order_why,
        skip=_boolean(extension.get("skip", False), "x-rollover.skip"),
    )


def _step(text: str) -> Step:
    """update_config.parallelism 0 means every replica at once, as in Swarm: rollover's 'all'."""
    return Step(StepKind.ALL) if text.strip() == "0" else parse_step(text)


def _order(service: DefinedService, asked: str) -> tuple[OrderChoice, str]:
    """Services that cannot run twice go stop-first whatever the file says; a lone replica with a
    named volume (a database) too, unless the file asks for an order itself."""
    if service.fixed_host_ports:
        return OrderChoice.STOP_FIRST, f"fixed host port {', '.join(service.fixed_host_ports)} cannot be shared"
    choice = parse_enum(OrderChoice, asked, "update_config.order")
    if choice is not OrderChoice.AUTO:
        return choice, "asked for"
    if service.replicas == 1 and service.named_volumes:
        return OrderChoice.STOP_FIRST, (f"one replica with named volume {', '.join(service.named_volumes)}:"
                                        " two copies must not share its data")
    return OrderChoice.START_FIRST, "no fixed host port, full capacity kept"


def _traffic(extension: Mapping[str, object], flags: Overrides, sources: list[tuple[str, str]]) -> Traffic:
    balancer = extension.get("balancer")
    if balancer is not None and not isinstance(balancer, str | list):
        raise InvalidOption(f"x-rollover.balancer {balancer!r}: expected {X_ROLLOVER_KEYS['balancer']}")
    balancers = (balancer,) if isinstance(balancer, str) else tuple(str(item) for item in balancer or ())
    drain_text = flags.drain_timeout if flags.drain_timeout is not None else extension.get("drain_timeout")
    max_failures = flags.max_probe_failures if flags.max_probe_failures is not None else extension.get(
        "max_probe_failures")
    if flags.max_probe_failures is not None:
        sources.append(("max_probe_failures", "flag"))
    port = extension.get("balancer_port")
    return Traffic(
        balancers=balancers,
        balancer_address=str(extension.get("balancer_address", "auto")),
        balancer_port=None if port is None else _count(port, "x-rollover.balancer_port", minimum=1),
        drain_timeout_s=30.0 if drain_text is None else parse_duration(str(drain_text), "drain_timeout"),
        probe=None if extension.get("probe") is None else str(extension["probe"]),
        probe_rate=_rate(extension.get("probe_rate", 50.0)),
        max_probe_failures=None if max_failures is None else _count(max_failures, "max_probe_failures", minimum=0),
        pre_stop=None if extension.get("pre_stop") is None else str(extension["pre_stop"]),
        post_start=None if extension.get("post_start") is None else str(extension["post_start"]),
        nginx_master=None if extension.get("nginx_master") is None else str(extension["nginx_master"]),
    )


def _count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise InvalidOption(f"{what} {value!r}: expected a whole number")
    if int(value) < minimum:
        raise InvalidOption(f"{what} {value!r}: must be at least {minimum}")
    return int(value)


def _rate(value: object) -> float:
    try:
        rate = float(str(value))
    except ValueError:
        raise InvalidOption(f"x-rollover.probe_rate {value!r}: expected requests per second") from None
    if not math.isfinite(rate) or rate <= 0:
        raise InvalidOption(f"x-rollover.probe_rate {value!r}: must be more than 0")
    return rate


def _ratio(value: object) -> float:
    """max_failure_ratio: a fraction of the service's replicas, 0 to 1."""
    try:
        ratio = float(str(value))
    except ValueError:
        raise InvalidOption(f"update_config.max_failure_ratio {value!r}: expected a number from 0 to 1") from None
    if not 0 <= ratio <= 1:
        raise InvalidOption(f"update_config.max_failure_ratio {value!r}: expected a number from 0 to 1")
    return ratio


def _boolean(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidOption(f"{what} {value!r}: expected true or false")

