"""Parse and validate what the user asked for: step, durations, order, failure policy.

Pure: no I/O, no clock. Every parser raises InvalidOption with a message that names the bad value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from rollover.core.model import Order, Replica
from rollover.errors import InvalidOption


class StepKind(StrEnum):
    COUNT = "count"
    PERCENT = "percent"
    HALF = "half"
    ALL = "all"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    value: int = 0  # the N of "N" or "N%"

    def __str__(self) -> str:
        if self.kind is StepKind.COUNT:
            return str(self.value)
        if self.kind is StepKind.PERCENT:
            return f"{self.value}%"
        return self.kind.value


class OrderChoice(StrEnum):
    AUTO = "auto"
    START_FIRST = "start-first"
    STOP_FIRST = "stop-first"


class FailurePolicy(StrEnum):
    ROLLBACK = "rollback"  # stop issuing, put every replaced replica back on its previous image
    PAUSE = "pause"  # stop issuing, leave everything as it is for a human to look at
    CONTINUE = "continue"  # carry on with the others; exit 1 at the end (the seed's behaviour)


@dataclass(frozen=True)
class Policy:
    step: Step = Step(StepKind.COUNT, 1)
    grace_s: float = 0.0
    order: OrderChoice = OrderChoice.AUTO
    timeout_s: float | None = None  # None: derived per replica, see replacement_timeout
    on_failure: FailurePolicy = FailurePolicy.ROLLBACK
    # Failed replacements absorbed before on_failure applies, as a fraction of the targets
    # (Compose's update_config.max_failure_ratio); see tolerated_failures.
    max_failure_ratio: float = 0.0
    # How a rollback rolls (Compose's rollback_config); None: like the rollout itself.
    rollback_step: Step | None = None
    rollback_grace_s: float | None = None

    def __post_init__(self) -> None:
        # The grace period holds back the *next* redeploy after one comes up. Step 'all' (the
        # seed's 'service') sends every replica at once, so there is no next one to hold back:
        # "the grace period doesn't apply here". 7 replicas, 10 s each, grace 5: 10 s, not 15 s.
        # Kept in the value itself, so the plan the user sees says grace 0 too.
        if self.step.kind is StepKind.ALL and self.grace_s:
            object.__setattr__(self, "grace_s", 0.0)


E = TypeVar("E", bound=StrEnum)

_STEP_ALIASES = {"half": StepKind.HALF, "all": StepKind.ALL, "service": StepKind.ALL}


def parse_step(text: str) -> Step:
    """'3' -> 3 at a time; '25%' -> a quarter of the targets; 'half'; 'all' (the seed's 'service')."""
    raw = text.strip().lower()
    if raw in _STEP_ALIASES:
        return Step(_STEP_ALIASES[raw])
    percent = re.fullmatch(r"(\d+)%", raw)
    if percent:
        value = int(percent.group(1))
        if not 1 <= value <= 100:
            raise InvalidOption(f"step {text!r}: a percentage must be between 1% and 100%")
        return Step(StepKind.PERCENT, value)
    if re.fullmatch(r"\d+", raw):
        value = int(raw)
        if value < 1:
            raise InvalidOption(f"step {text!r}: must be at least 1")
        return Step(StepKind.COUNT, value)
    raise InvalidOption(f"step {text!r}: expected a number N >= 1, N%, 'half' or 'all'")


def tolerated_failures(policy: Policy, targets: int) -> int:
    """Failed replacements a rollout absorbs before its failure policy applies.

    max_failure_ratio 0.25 of 6 targets -> floor(1.5) = 1: the second failure stops it; 0 -> 0,
    the first one does. (The epsilon keeps 0.3 x 10 at 3, not 2.9999.)
    """
    return math.floor(policy.max_failure_ratio * targets + 1e-9)


def batch_size(step: Step, targets: int) -> int:
    """How many replicas may be in redeployment at once.

    Worked examples, 7 targets: '3' -> 3; '25%' -> floor(1.75) = 1; '10%' -> floor(0.7) = 0 -> at
    least 1; 'half' -> floor(3.5) = 3; 'all' -> 7. One target, 'half' -> floor(0.5) = 0 -> 1.
    A count above the number of targets is simply everything: '10' of 7 -> 7.
    """
    if targets <= 0:
        return 0
    if step.kind is StepKind.ALL:
        return targets
    if step.kind is StepKind.HALF:
        wanted = targets // 2
    elif step.kind is StepKind.PERCENT:
        wanted = math.floor(targets * step.value / 100)
    else:
        wanted = step.value
    return max(1, min(wanted, targets))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, what: str) -> float:
    """Seconds from '10', '2.5', '500ms', '1m30s'; negative, empty or malformed values are errors."""
    raw = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        return float(raw)
    parts = _DURATION_PART.findall(raw)
    if not raw or "".join(number + unit for number, unit in parts) != raw:
        raise InvalidOption(f"{what} {text!r}: expected seconds (e.g. 10, 2.5, 500ms, 1m30s)")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_enum(enum: type[E], text: str, what: str) -> E:
    try:
        return enum(text.strip().lower())
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise InvalidOption(f"{what} {text!r}: expected one of {choices}") from None


def choose_order(choice: OrderChoice, replicas: tuple[Replica, ...]) -> tuple[Order, str]:
    """The order the rollout will use, and why (printed with the plan).

    'auto' is start-first, which keeps full capacity, unless a replica publishes a fixed host
    port: the replacement could not bind it while the old replica holds it.
    """
    if choice is OrderChoice.START_FIRST:
        return Order.START_FIRST, "asked for"
    if choice is OrderChoice.STOP_FIRST:
        return Order.STOP_FIRST, "asked for"
    fixed = sorted({port for replica in replicas for port in replica.fixed_host_ports})
    if fixed:
        return Order.STOP_FIRST, f"auto: fixed host port {', '.join(fixed)} cannot be shared"
    return Order.START_FIRST, "auto: no fixed host port, full capacity kept"


# Slack on top of the healthcheck's own budget: creating and starting a container.
_START_SLACK_S = 10.0
_DEFAULT_TIMEOUT_S = 60.0


def replacement_timeout(policy: Policy, replica: Replica) -> float:
    """Seconds a replacement may take, from its acknowledgement, to come up.

    An explicit --timeout wins. Otherwise a replica with a healthcheck gets the time that check
    needs to give up plus start-up slack: interval 0.5 s, retries 3, timeout 1 s, start period
    0 -> 0 + 0.5 x 4 + 1 = 3 s, + 10 s = 13 s. Without a healthcheck: 60 s.

    Either way the time counts from when the replacement starts: a platform that acknowledges it
    before it starts adds the wait (Swarm stop-first, a 10 s stop grace period: 13 + 10 = 23 s;
    the old task ignoring SIGTERM takes all of it).
    """
    if policy.timeout_s is not None:
        own = policy.timeout_s
    elif replica.health_budget_s is not None:
        own = replica.health_budget_s + _START_SLACK_S
    else:
        own = _DEFAULT_TIMEOUT_S
    return own + replica.start_delay_s


def lock_lease_s(policy: Policy, replicas: Sequence[Replica], batch: int, drain_timeout_s: float) -> float:
    """How long this rollout's lock may be presumed alive when its holder cannot be checked:
    twice the longest it could take. 6 replicas, step 1, 13 s timeout, 30 s drain ->
    6 waves x (13 + 30 + 60 s slack) x 2 = 1236 s; never under 10 minutes."""
    waves = -(-len(replicas) // max(1, batch))
    longest = max((replacement_timeout(policy, replica) for replica in replicas), default=60.0)
    per_wave = longest + drain_timeout_s + policy.grace_s + 60.0
    return max(600.0, 2 * waves * per_wave)
