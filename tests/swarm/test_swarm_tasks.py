"""PURE: reading Swarm task lists and computing the specs that pace Swarm's updater (no daemon)."""

from __future__ import annotations

from typing import Any

import pytest

from rollover.backends.swarm.lock import lock_name
from rollover.backends.swarm.spec import (
    HOLD_NS,
    REQUEST_LABEL,
    fixed_host_ports,
    forward_template,
    handed_back_spec,
    health_budget,
    held_template,
    request_spec,
    users_spec,
)
from rollover.backends.swarm.tasks import (
    Displacements,
    SwarmTask,
    TaskContext,
    definition_of,
    dirty_slots,
    displaced_by,
    failing_slots,
    lost_with_node,
    parse_task,
    removal_reason,
    replacements_made,
    replica_from_task,
    sortable_time,
    stalled_swaps,
    start_first_in_flight,
    unrequested_replacements,
)
from rollover.core.model import Order

V1 = ("app:v1", 0)
V2 = ("app:v2", 1)


def raw_task(task_id: str, slot: int, second: int, *, image: str = "app:v1", force: int = 0,
             desired: str = "running", state: str = "running", err: str = "") -> dict[str, Any]:
    return {
        "ID": task_id, "Slot": slot, "NodeID": "node-a", "DesiredState": desired,
        "CreatedAt": f"2026-01-01T00:00:{second:02d}.5Z",
        "Spec": {"ContainerSpec": {"Image": image}, "ForceUpdate": force},
        "Status": {"State": state, "Err": err, "ContainerStatus": {"ContainerID": f"c-{task_id}"},
                   "PortStatus": {"Ports": [
                       {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 30001, "PublishMode": "host"},
                       {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 30001, "PublishMode": "host"},
                   ]}},
    }


def task(task_id: str, slot: int, second: int, **options: Any) -> SwarmTask:
    return parse_task(raw_task(task_id, slot, second, **options))


def test_parse_task_reads_what_a_replica_needs() -> None:
    parsed = task("t1", 3, 7, image="app:v2@sha256:abc", force=2)
    assert (parsed.slot, parsed.definition, parsed.container_id) == ("3", ("app:v2@sha256:abc", 2), "c-t1")
    assert parsed.published == (("8080/tcp", 30001),)  # Docker lists host ports twice
    assert parsed.up and parsed.is_target and not parsed.ended


def test_a_global_task_lives_in_the_slot_of_its_node() -> None:
    raw = raw_task("g1", 0, 1)
    del raw["Slot"]
    assert parse_task(raw).slot == "node-a"


@pytest.mark.parametrize(
    ("stamp", "sortable"),
    [("2026-01-01T00:00:01.5Z", "2026-01-01T00:00:01.500000000Z"),
     ("2026-01-01T00:00:01.123456789Z", "2026-01-01T00:00:01.123456789Z"),
     ("2026-01-01T00:00:01Z", "2026-01-01T00:00:01.000000000Z")],
    ids=["trimmed-zeros", "nanoseconds", "whole-second"],
)
def test_creation_times_sort_as_strings(stamp: str, sortable: str) -> None:
    assert sortable_time(stamp) == sortable


@pytest.mark.parametrize(
    ("tasks", "in_flight", "failing"),
    [
        ([task("a", 1, 1)], [], {}),
        ([task("a", 1, 1), task("b", 1, 2, image="app:v2", force=1, state="starting")], ["1"], {}),
        ([task("a", 1, 1), task("b", 1, 2, image="app:v2", desired="shutdown", state="failed", err="unhealthy"),
          task("c", 1, 3, image="app:v2", desired="ready", state="pending")], ["1"], {"1": "unhealthy"}),
        # stop-first: the old task is desired shutdown at the moment the new one is created
        ([task("a", 1, 1, desired="shutdown"), task("b", 1, 2, image="app:v2", desired="ready", state="new")],
         [], {}),
        # a removed task's slot refilled twice, by Swarm's restart supervisor and by its updater
        ([task("a", 1, 1, image="app:v2", force=1), task("b", 1, 2, image="app:v2", force=1)], [], {}),
    ],
    ids=["settled", "start-first-starting", "start-first-failed-and-restarting", "stop-first", "refilled-twice"],
)
def test_slots_in_flight_and_failing(tasks: list[SwarmTask], in_flight: list[str], failing: dict[str, str]) -> None:
    assert start_first_in_flight(tasks) == in_flight
    assert failing_slots(tasks) == failing


def test_the_replacements_a_request_made_are_one_per_dirty_slot() -> None:
    before = [task("a", 1, 1), task("b", 2, 1)]
    after = [
        *before,
        task("n1", 2, 5, image="app:v2", force=1, desired="shutdown", state="rejected"),
        task("n2", 2, 7, image="app:v2", force=1, desired="ready", state="pending"),  # Swarm's restart of n1
        task("x", 3, 6, image="app:v2", force=1),  # a slot that was not dirty (scaled up meanwhile)
    ]
    made = replacements_made(after, {"a", "b"}, V2, {"1", "2"})
    assert [item.id for item in made] == ["n1"]
    assert displaced_by(made[0], after) == before[1]


def test_retire_waits_for_the_task_that_went_not_a_stale_one_from_an_earlier_trade() -> None:
    went = Displacements()
    went.record("A", "B")  # asked for A, Swarm replaced B
    assert (went.task_to_stop("A"), went.task_to_stop("B")) == ("B", "B")
    went.record("C", "A")  # later: asked for C, Swarm replaced A
    assert went.task_to_stop("A") == "A"  # not B, which stopped with the first request
    assert went.task_to_stop("C") == "A"
    went.record("A", "A")  # A asked for again and replaced itself
    assert went.task_to_stop("A") == "A"



def test_in_a_request_of_three_each_task_that_went_is_waited_for_itself() -> None:
    went = Displacements()
    for asked, gone in (("A", "B"), ("B", "D"), ("C", "C")):  # one request: Swarm replaced B, D and C
        went.record(asked, gone)
    assert [went.task_to_stop(replica) for replica in ("B", "D", "C")] == ["B", "D", "C"]


def test_a_swap_whose_replacement_is_up_beside_its_old_task_is_stalled() -> None:
    starting = [task("a", 1, 1), task("b", 1, 2, image="app:v2", force=1, state="starting")]
    stalled = [task("c", 2, 1), task("d", 2, 2, image="app:v2", force=1)]
    assert start_first_in_flight([*starting, *stalled]) == ["1", "2"]
    assert stalled_swaps([*starting, *stalled]) == ["2"]  # slot 1's replacement is still on its way up


def test_replacements_swarm_made_by_itself_are_told_from_extras_and_restarts() -> None:
    known = {"a", "b", "c", "ours"}  # the snapshot's tasks and the one our request made
    tasks = [
        task("a", 1, 1, desired="shutdown", state="shutdown"), task("ours", 1, 5, image="app:v2", force=1),
        task("b", 2, 1, desired="shutdown", state="shutdown"), task("unpaced", 2, 6, image="app:v2", force=1),
        task("c", 3, 1), task("extra", 4, 6, image="app:v2", force=1),  # a scale-up's new slot
        # a failed replacement restarted by Swarm replaces a task of its own definition
        task("f", 5, 1), task("n1", 5, 5, image="app:v2", force=1, desired="shutdown", state="failed"),
        task("n2", 5, 6, image="app:v2", force=1, state="starting"),
    ]
    assert [found.id for found in unrequested_replacements(tasks, V2, known | {"f", "n1"})] == ["unpaced"]
    assert unrequested_replacements(tasks, V1, known | {"f", "n1"}) == []


def test_dirty_slots_are_those_not_all_made_from_the_definition() -> None:
    tasks = [task("a", 1, 1), task("b", 2, 1, image="app:v2", force=1), task("c", 3, 1, desired="shutdown")]
    assert dirty_slots(tasks, V2) == ["1"]  # slot 3's only task is on its way out
    assert dirty_slots(tasks, V1) == ["2"]


def test_a_task_on_a_lost_node_counts_as_ended_whatever_the_node_last_said() -> None:
    # The manager keeps a lost node's last report: running, and desired shutdown once Swarm moved
    # the slot elsewhere. Neither would ever end; both are out of the service now.
    moved, stranded = task("a", 1, 1, desired="shutdown"), task("b", 2, 1)
    for lost in (lost_with_node(moved, "n3"), lost_with_node(stranded, "n3")):
        assert lost.ended and not lost.live and not lost.up and not lost.is_target
        assert lost.error == "its node n3 is down"
    assert dirty_slots([lost_with_node(stranded, "n3")], V2) == []  # nothing left there to replace
    finished = task("c", 3, 1, desired="shutdown", state="failed", err="exit 1")
    assert lost_with_node(finished, "n3") == finished  # what had ended keeps its own reason


def test_forward_template_changes_the_image_and_forces_a_change() -> None:
    template = {"ContainerSpec": {"Image": "app:v1"}, "ForceUpdate": 4}
    assert definition_of(forward_template(template, "app:v2")) == ("app:v2", 5)
    assert definition_of(forward_template(template, None)) == ("app:v1", 5)  # a rolling restart
    assert template["ForceUpdate"] == 4  # the original is left alone


def test_a_request_holds_swarm_after_exactly_its_slots() -> None:
    spec = {"Name": "web", "Labels": {"team": "a"}, "TaskTemplate": {}, "UpdateConfig": {"Parallelism": 9}}
    new = request_spec(spec, {"ContainerSpec": {"Image": "app:v2"}}, 2, Order.START_FIRST, "a1b2-7")
    assert new["UpdateConfig"] == {"Parallelism": 2, "Delay": HOLD_NS, "FailureAction": "pause",
                                   "Monitor": 1_000_000_000, "MaxFailureRatio": 0, "Order": "start-first"}
    assert new["Labels"]["team"] == "a" and new["Labels"][REQUEST_LABEL] == "a1b2-7"
    assert new["TaskTemplate"] == {"ContainerSpec": {"Image": "app:v2"}}
    back = handed_back_spec(new, spec)
    assert back["UpdateConfig"] == {"Parallelism": 9} and back["Labels"] == {"team": "a"}
    unset = request_spec({"Name": "web"}, {"ContainerSpec": {"Image": "app:v2"}}, 1, Order.STOP_FIRST, "a1b2-1")
    assert "UpdateConfig" not in handed_back_spec(unset, {"Name": "web"})  # the user had none: Swarm's defaults


def test_a_held_spec_tells_the_users_spec_and_the_template_to_go_on_with() -> None:
    users = {"Name": "web", "Labels": {"team": "a"}, "UpdateConfig": {"Parallelism": 9},
             "TaskTemplate": {"ContainerSpec": {"Image": "app:v1"}, "ForceUpdate": 3}}
    assert users_spec(users) == users and held_template(users, None) is None  # not held: the spec itself
    forward = forward_template(users["TaskTemplate"], "app:v2")
    first = request_spec(users, forward, 1, Order.START_FIRST, "a1b2-1")
    held = request_spec(first, forward, 1, Order.START_FIRST, "a1b2-2")  # a later request keeps the first record
    # rollover was killed here: the next rollout finds the held spec and reads the user's from it.
    assert users_spec(held) == users
    assert handed_back_spec(held, users_spec(held))["UpdateConfig"] == {"Parallelism": 9}
    # Going the same way, it goes on with the held template; another image starts afresh.
    assert held_template(held, None) == held_template(held, "app:v2@sha256:ab") == forward
    assert held_template(held, "app:v3") is None


@pytest.mark.parametrize(
    ("check", "budget"),
    [(None, None), ({"Test": ["NONE"]}, None),
     ({"Test": ["CMD", "true"], "Interval": 500_000_000, "Retries": 3}, 1.5),
     ({"Test": ["CMD", "true"], "StartPeriod": 2_000_000_000}, 92.0)],
    ids=["none", "disabled", "half-second-x3", "docker-defaults-plus-start-period"],
)
def test_health_budget(check: dict[str, Any] | None, budget: float | None) -> None:
    assert health_budget(check) == budget


def test_only_fixed_host_mode_ports_rule_out_start_first() -> None:
    spec = {"EndpointSpec": {"Ports": [
        {"TargetPort": 8080, "PublishMode": "host"},
        {"TargetPort": 9090, "PublishedPort": 9090, "PublishMode": "host", "Protocol": "tcp"},
        {"TargetPort": 80, "PublishedPort": 80, "PublishMode": "ingress"},
    ]}}
    assert fixed_host_ports(spec) == ("9090/tcp",)


def test_replica_from_task_names_the_slot_and_its_published_address() -> None:
    context = TaskContext(service="web", global_mode=False, node_addresses={"node-a": "10.0.0.5"},
                          image_id="sha256:img", healthcheck={"Test": ["CMD", "true"], "Interval": 10**9})
    replica = replica_from_task(task("t1", 3, 1, image="app:v1@sha256:d"), context)
    assert (replica.id, replica.name, replica.image, replica.image_ref) == ("t1", "web.3", "sha256:img", "app:v1")
    assert replica.has_healthcheck and replica.health_budget_s == 3.0
    assert replica.created_at == 1767225601.5  # 2026-01-01T00:00:01.5Z
    assert dict(replica.details) == {"node": "node-a", "slot": "3", "published.8080/tcp": "10.0.0.5:30001"}


def test_lock_names_fit_swarms_limit() -> None:
    assert lock_name("web") == "rollover-lock-web"
    long = lock_name("x" * 63)
    assert len(long) <= 64 and long.startswith("rollover-lock-") and long != lock_name("y" * 63)


def test_a_task_deleted_beside_another_live_one_in_its_slot_was_one_too_many_not_a_scale_down() -> None:
    deleted = task("t1", 6, 1, image="app:v2", force=1, desired="remove")
    refilled = task("t2", 6, 2, image="app:v2", force=1)  # the orchestrator's own for a lost node's slot
    assert removal_reason(deleted, [deleted, refilled]) == "removed by Swarm: another task serves its slot"
    assert removal_reason(deleted, [deleted, task("t3", 5, 2)]) == "removed by a scale-down"
