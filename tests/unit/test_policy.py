"""Step arithmetic, durations and the order choice, as tables."""

import pytest

from rollover.core.model import Order, Replica
from rollover.core.policy import (
    OrderChoice,
    Policy,
    Step,
    StepKind,
    batch_size,
    choose_order,
    parse_duration,
    parse_step,
    replacement_timeout,
)
from rollover.errors import InvalidOption


@pytest.mark.parametrize(
    ("text", "targets", "expected"),
    [
        ("1", 10, 1),
        ("3", 7, 3),
        ("10", 7, 7),  # more than there are: everything
        ("25%", 7, 1),  # floor(1.75)
        ("10%", 7, 1),  # floor(0.7) = 0 -> at least 1
        ("50%", 10, 5),
        ("100%", 6, 6),
        ("half", 7, 3),  # floor(3.5)
        ("half", 10, 5),
        ("half", 1, 1),  # floor(0.5) = 0 -> at least 1
        ("all", 10, 10),
        ("service", 4, 4),  # the seed's word for all
        ("HALF", 4, 2),
    ],
    ids=lambda value: str(value),
)
def test_batch_size(text: str, targets: int, expected: int) -> None:
    assert batch_size(parse_step(text), targets) == expected


@pytest.mark.parametrize("text", ["0", "-1", "0%", "101%", "1.5", "half%", "", "two", "5 %", "%"])
def test_malformed_steps_are_rejected_with_the_value_named(text: str) -> None:
    with pytest.raises(InvalidOption, match="step"):
        parse_step(text)


def test_step_prints_as_written() -> None:
    assert [str(parse_step(text)) for text in ("3", "25%", "half", "service")] == ["3", "25%", "half", "all"]
    assert parse_step("service") == Step(StepKind.ALL)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("2.5", 2.5), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "grace period") == seconds


@pytest.mark.parametrize("text", ["-1", "ten", "", "1x", "5 s", "1m-3s", "nan", "inf"])
def test_malformed_durations(text: str) -> None:
    with pytest.raises(InvalidOption, match="grace period"):
        parse_duration(text, "grace period")


def test_auto_order_is_start_first_unless_a_fixed_host_port_is_published() -> None:
    plain = Replica("a", "web-1")
    pinned = Replica("b", "web-2", fixed_host_ports=("8080/tcp",))
    assert choose_order(OrderChoice.AUTO, (plain,))[0] is Order.START_FIRST
    order, why = choose_order(OrderChoice.AUTO, (plain, pinned))
    assert order is Order.STOP_FIRST
    assert "8080/tcp" in why
    assert choose_order(OrderChoice.START_FIRST, (pinned,))[0] is Order.START_FIRST


def test_timeout_defaults() -> None:
    checked = Replica("a", "web-1", has_healthcheck=True, health_budget_s=3.0)
    unchecked = Replica("b", "web-2")
    assert replacement_timeout(Policy(), checked) == 13.0
    assert replacement_timeout(Policy(), unchecked) == 60.0
    assert replacement_timeout(Policy(timeout_s=5), checked) == 5.0


def test_a_replacement_acknowledged_before_it_starts_gets_the_wait_on_top_of_its_timeout() -> None:
    # Swarm stop-first: the new task is acknowledged, then the old one takes its 10 s stop grace
    # period (+ 2 s gossip) before the new one starts; its own 13 s count from then.
    waiting = Replica(id="t2", name="web.1", has_healthcheck=True, health_budget_s=3.0, start_delay_s=12.0)
    assert replacement_timeout(Policy(), waiting) == 25.0
    assert replacement_timeout(Policy(timeout_s=5), waiting) == 17.0
