"""Faults injected into real rollouts on the real engine: replacements that exit, crash-loop or never
turn healthy, an image that disappears, replicas removed or added by someone else, and data in
volumes across a rollback. Every test drives the real CLI (``--output json``) under a deadline and
then looks at the service itself: how many replicas run, their health, the image of each.

On the shared engine every service runs behind a real HAProxy (one server per replica's loopback
port), rollover drives it (``--balancer``) and sends its own probe through it (``--probe``, 50
requests/s): a fault rollover handles must cost no request either. HAProxy's own log is the
second witness.

Everything made here is named ``rtest-fault-...`` and removed by name afterwards, pass or fail.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.support.engine import APP_BROKEN, APP_V1, APP_V2, ComposeProject, run
from tests.support.faults import (
    APP_EXITS,
    Faults,
    assert_consistent,
    lock_exists,
    open_health_gate,
    service_state,
    serving_addresses,
    write_service,
)

pytestmark = pytest.mark.engine


def in_flight_peak(events: list[dict[str, Any]]) -> int:
    """The most forward requests in flight at once, from request_sent to settled/failed."""
    flying: set[str] = set()
    peak = 0
    for event in events:
        if event["event"] == "request_sent" and not event.get("restore"):
            flying.add(event["replica"])
            peak = max(peak, len(flying))
        elif event["event"] in ("settled", "failed", "skipped"):
            flying.discard(event.get("replica", ""))
    return peak


# -- 1, 2: replacements that exit ------------------------------------------------------------------


@pytest.mark.parametrize("restart", [None, "unless-stopped"], ids=["exits-at-once", "crash-loops"])
def test_a_replacement_that_exits_is_rolled_back(faults: Faults, images: dict[str, str], restart: str | None) -> None:
    project = faults.project(APP_V1, replicas=3, restart=restart)
    write_service(project, APP_EXITS, replicas=3, restart=restart)
    outcome = faults.rollover(project, "--step", "1", "--timeout", "6").finish()

    summary = outcome.summary
    assert outcome.returncode == 1, outcome.text()
    assert (summary["result"], summary["failed"], summary["replaced"]) == ("rolled-back", 1, 0), outcome.text()
    # "exited with code 1" is what happened. A die event that overtakes the acknowledgement is lost
    # (see tests/unit/test_rollout.py, test_an_exit_seen_before_the_acknowledgement_...), and the replacement
    # then only fails at its timeout.
    assert summary["reason"] in ("replacement exited with code 1", "replacement not up within 6s"), outcome.text()
    assert summary["not_redeployed"] == [f"{project.name}-web-2", f"{project.name}-web-3"]
    assert outcome.wall_s < 6 + 30
    # The failed replacement is gone (a crash-looping one too); the three originals serve, untouched.
    assert service_state(project, images) == [("running", "healthy", APP_V1)] * 3
    assert not lock_exists(project)
    faults.assert_no_request_lost(outcome)


# -- 3: a replacement that never becomes healthy, under --on-failure continue ------------------------


def test_a_replacement_that_never_turns_healthy_is_counted_under_continue(
    faults: Faults, images: dict[str, str]
) -> None:
    project = faults.project(APP_V1, replicas=3)
    write_service(project, APP_V2, replicas=3, health_gate=True)
    rollover = faults.rollover(project, "--step", "1", "--timeout", "5", "--on-failure", "continue")
    # The first replacement's health gate stays shut, so it never turns healthy; every later one's opens.
    for count in (2, 3):
        acknowledged = rollover.wait_for("acknowledged", count=count)
        open_health_gate(project, acknowledged["replacement"])
    outcome = rollover.finish()

    summary = outcome.summary
    assert outcome.returncode == 1, outcome.text()
    assert (summary["result"], summary["failed"], summary["replaced"]) == ("failed", 1, 2), outcome.text()
    assert summary["reason"] in ("replacement unhealthy", "replacement not up within 5s"), outcome.text()
    failed = [event for event in outcome.events if event["event"] == "failed"]
    assert [event["replica"] for event in failed] == [f"{project.name}-web-1"]
    assert "discarded" in outcome.kinds()
    # Still three replicas: the one whose replacement failed kept its old container, the others are v2.
    assert service_state(project, images) == sorted(
        [("running", "healthy", APP_V1)] + [("running", "healthy", APP_V2)] * 2)
    web_1 = project.client.containers.get(f"{project.name}-web-1")
    assert images[web_1.attrs["Image"]] == APP_V1
    assert not lock_exists(project)
    faults.assert_no_request_lost(outcome)


def test_stop_first_a_replacement_that_never_turns_healthy_is_rolled_back_behind_the_balancer(
    faults: Faults, images: dict[str, str]
) -> None:
    """Stop-first gives no second chance: the old replica is drained and removed before its
    replacement turns out broken, so the rollback must bring a v1 replica back and HAProxy must
    route to it, with the service one replica short meanwhile and no request lost."""
    project = faults.project(APP_V1, replicas=3)
    write_service(project, APP_BROKEN, replicas=3)
    outcome = faults.rollover(project, "--order", "stop-first", "--step", "1", "--timeout", "6").finish()

    summary = outcome.summary
    assert outcome.returncode == 1, outcome.text()
    assert (summary["result"], summary["failed"], summary["replaced"]) == ("rolled-back", 1, 0), outcome.text()
    assert "unhealthy" in str(summary["reason"]) or "not up within" in str(summary["reason"]), outcome.text()
    # web-1 drained before its replacement failed; the broken replacement never admitted; one
    # restore (of that replacement, back to v1), admitted once it was up.
    kinds = outcome.kinds()
    assert kinds.index("drained") < kinds.index("failed") < kinds.index("rollback") < kinds.index("admitted"), kinds
    assert kinds.count("admitted") == 1, kinds
    assert len([e for e in outcome.events if e["event"] == "request_sent" and e.get("restore")]) == 1, outcome.text()
    # Three replicas on v1 again (one of them the restored one), and nothing else left behind.
    assert service_state(project, images) == [("running", "healthy", APP_V1)] * 3
    assert_consistent(outcome)
    assert not lock_exists(project)
    assert faults.fronts[project.name].routed() == serving_addresses(project)
    faults.assert_no_request_lost(outcome)


# -- 4: the image disappears mid-rollout ---------------------------------------------------------------


def test_the_image_disappearing_mid_rollout_fails_cleanly(faults: Faults, images: dict[str, str]) -> None:
    project = faults.project(APP_V1, replicas=3)
    vanishing = faults.tag(APP_V2, "v2-gone")  # the same image as v2, under a tag only this test uses
    write_service(project, vanishing, replicas=3)
    # --grace 5: the next request goes out 5 s after the first replacement is up; the tag goes first.
    rollover = faults.rollover(project, "--step", "1", "--grace", "5")
    rollover.wait_for("up")
    untagged = run("docker", "rmi", "-f", vanishing)
    assert "Untagged" in untagged
    outcome = rollover.finish()

    summary = outcome.summary
    assert_consistent(outcome)
    state = service_state(project, images)
    assert len(state) == 3 and all(entry[:2] == ("running", "healthy") for entry in state), state
    if summary["result"] == "completed":  # the engine kept the image: what was made keeps running
        assert state == [("running", "healthy", APP_V2)] * 3
    else:
        # The engine cannot make the next replacement (the tag is gone and no registry is reachable;
        # Compose rendered the rollout's template before, so the engine's create is what fails): the
        # request fails in the engine's words, naming the image, and the replaced replica goes back.
        assert summary["result"] == "rolled-back", outcome.text()
        assert summary["failed"] == 1 and summary["replaced"] == summary["rolled_back"] >= 1, outcome.text()
        assert "No such image" in summary["reason"] and vanishing in summary["reason"], summary["reason"]
        assert state == [("running", "healthy", APP_V1)] * 3
    assert not lock_exists(project)
    faults.assert_no_request_lost(outcome)


# -- 5: a waiting target removed by someone else -----------------------------------------------------------


def test_a_waiting_target_removed_by_someone_else_is_skipped(faults: Faults, images: dict[str, str]) -> None:
    project = faults.project(APP_V1, replicas=4)
    write_service(project, APP_V2, replicas=4)
    rollover = faults.rollover(project, "--step", "1")
    rollover.wait_for("acknowledged")  # web-1 is being replaced; web-4 waits for its turn
    run("docker", "rm", "-f", f"{project.name}-web-4")
    outcome = rollover.finish()

    summary = outcome.summary
    # Skipped is not failed: the replica is gone, not broken, and there is nothing to put back. Every
    # target that still exists was replaced, so the rollout completed (exit 0), and says it skipped one.
    assert outcome.returncode == 0, outcome.text()
    assert (summary["result"], summary["replaced"], summary["skipped"], summary["failed"]) == ("completed", 3, 1, 0)
    skipped = [event for event in outcome.events if event["event"] == "skipped"]
    assert [(event["replica"], event["reason"]) for event in skipped] == [
        (f"{project.name}-web-4", "removed before its turn")]
    assert f"{project.name}-web-4" not in [e.get("replica") for e in outcome.events if e["event"] == "request_sent"]
    # N - 1: rollover does not bring back a replica someone else removed.
    assert service_state(project, images) == [("running", "healthy", APP_V2)] * 3
    # ...and takes it out of the balancer: HAProxy routes to exactly the replicas that run.
    assert faults.fronts[project.name].routed() == serving_addresses(project)
    # The removal itself is someone else's, without a drain: a request on its way to web-4 at that
    # moment may be lost (HAProxy re-sends only those whose connection was refused). Reported only.
    print(f"FAULT removed-by-someone-else probe: {outcome.summary['probe']}")


# -- 6: scaled up / down mid-rollout ------------------------------------------------------------------------


def test_an_extra_replica_scaled_up_mid_rollout_frees_a_slot(faults: Faults, images: dict[str, str]) -> None:
    project = faults.project(APP_V1, replicas=2)
    write_service(project, APP_V2, replicas=2)
    # --grace 10 keeps the first replacement in flight (settling) long after the extra is up.
    rollover = faults.rollover(project, "--step", "1", "--grace", "10")
    rollover.wait_for("acknowledged")
    before = len(rollover.events)
    # Two targets + one replacement exist: a fourth container is one extra replica.
    project.compose("up", "-d", "--no-recreate", "--scale", "web=4")
    outcome = rollover.finish()

    summary = outcome.summary
    assert outcome.returncode == 0, outcome.text()
    assert (summary["result"], summary["replaced"], summary["failed"], summary["skipped"]) == ("completed", 2, 0, 0)
    # Step 1, yet two requests in flight after the extra came up: its slot. (The second request went out
    # while the first replacement was still settling, i.e. before anything else could free a slot.)
    assert in_flight_peak(outcome.events[:before]) == 1
    assert in_flight_peak(outcome.events) == 2, outcome.text()
    second = next(e for e in outcome.events if e["event"] == "request_sent" and e["replica"].endswith("-web-2"))
    first_settled = next(e for e in outcome.events if e["event"] == "settled")
    assert second["t"] < first_settled["t"], outcome.text()
    # The extra is not a target: it stays, on what the compose file says (v2), beside the two replacements.
    assert service_state(project, images) == [("running", "healthy", APP_V2)] * 3
    faults.assert_no_request_lost(outcome)


def test_a_scale_down_mid_rollout_removes_the_newest_replicas_first(faults: Faults, images: dict[str, str]) -> None:
    """Compose (2.40, --no-recreate) removes the highest-numbered containers first, and mid-rollout the
    newest is rollover's own replacement: a scale-down never takes a waiting target alone. Here it
    stops and removes the in-flight replacement (a failed replacement) and one waiting target; the
    rollout rolls back (nothing was replaced yet) and the service ends at the count that was asked
    for, on the old image."""
    project = faults.project(APP_V1, replicas=3)
    write_service(project, APP_V2, replicas=3)
    rollover = faults.rollover(project, "--step", "1", "--grace", "10")
    rollover.wait_for("acknowledged")  # web-1..3 (targets) + web-4 (the replacement of web-1)
    # Compose itself may then fail ("container is marked for removal and cannot be started") when
    # rollover's discard of web-4 races its own removal: the user's command, not rollover's, so not checked.
    scale = subprocess.run(["docker", "compose", "-p", project.name, "-f", str(project.file), "up", "-d",
                            "--no-recreate", "--scale", "web=2"], cwd=project.directory, capture_output=True,
                           text=True, timeout=120, check=False)
    outcome = rollover.finish()

    summary = outcome.summary
    assert outcome.returncode == 1, outcome.text()
    assert (summary["result"], summary["failed"], summary["replaced"]) == ("rolled-back", 1, 0), outcome.text()
    # Compose stops before it removes: the replacement is seen exit (code 0) and then go.
    assert summary["reason"] in ("replacement exited with code 0", "replacement removed"), outcome.text()
    # web-3 is skipped when its removal arrives before the forward phase ends; a removal that arrives
    # while the failed replacement is being discarded is no longer counted (the summary then still
    # lists web-3 under not_redeployed).
    web_3 = f"{project.name}-web-3"
    assert (summary["skipped"] == 1) != (web_3 in summary["not_redeployed"]), outcome.text()
    assert service_state(project, images) == [("running", "healthy", APP_V1)] * 2, scale.stderr
    assert sorted(c.name for c in project.containers()) == [f"{project.name}-web-1", f"{project.name}-web-2"]
    # Both removed replicas were in rotation (the replacement had been admitted): the scale-down is
    # someone else's, without a drain, so requests on their way to them may be lost. Reported only.
    # What rollover owes: every replica that runs is in rotation.
    assert set(serving_addresses(project)) <= set(faults.fronts[project.name].routed())
    print(f"FAULT scale-down probe: {outcome.summary['probe']}")


# -- 8: volumes across a rollback ---------------------------------------------------------------------------


def write_markers(project: ComposeProject) -> dict[str, str]:
    """Each replica writes its name into its anonymous volume (/data); one writes the named one (/shared)."""
    markers = {}
    for container in project.containers():
        marker = f"data-of-{container.name}"
        code, _ = container.exec_run(["sh", "-c", f"echo {marker} > /data/marker && echo shared > /shared/marker"])
        assert code == 0
        markers[container.name] = marker
    return markers


def read_markers(project: ComposeProject) -> dict[str, tuple[str, str]]:
    """name -> (/data/marker, /shared/marker) of every replica."""
    found = {}
    for container in project.containers():
        _, data = container.exec_run(["cat", "/data/marker"])
        _, shared = container.exec_run(["cat", "/shared/marker"])
        found[container.name] = (data.decode().strip(), shared.decode().strip())
    return found


def test_volume_data_survives_the_rollback_of_a_failed_replacement(faults: Faults, images: dict[str, str]) -> None:
    project = faults.project(APP_V1, replicas=3, volumes=True)
    markers = write_markers(project)
    write_service(project, APP_V2, replicas=3, volumes=True, health_gate=True)
    rollover = faults.rollover(project, "--step", "1", "--grace", "1")
    # web-1 goes to v2 (taking its anonymous volume along); web-2's replacement never turns healthy
    # (its health gate stays shut): it is discarded (with the volumes it made, not web-2's it
    # mounts) and web-1 is rolled back.
    acknowledged = rollover.wait_for("acknowledged")
    open_health_gate(project, acknowledged["replacement"])
    outcome = rollover.finish()

    summary = outcome.summary
    assert outcome.returncode == 1, outcome.text()
    assert (summary["result"], summary["replaced"], summary["rolled_back"], summary["failed"]) == (
        "rolled-back", 1, 1, 1), outcome.text()
    assert service_state(project, images) == [("running", "healthy", APP_V1)] * 3
    # Each replica (web-1 restored from its v2 replacement) still has its own /data and the shared volume.
    assert read_markers(project) == {name: (marker, "shared") for name, marker in markers.items()}
    faults.assert_no_request_lost(outcome)


def test_volume_data_survives_an_interrupted_rollout(faults: Faults, images: dict[str, str]) -> None:
    project = faults.project(APP_V1, replicas=3, volumes=True)
    markers = write_markers(project)
    write_service(project, APP_V2, replicas=3, volumes=True)
    rollover = faults.rollover(project, "--step", "1")
    rollover.wait_for("settled")  # web-1 replaced, web-2's replacement in flight
    rollover.interrupt()
    outcome = rollover.finish()

    summary = outcome.summary
    assert outcome.returncode == 130, outcome.text()
    assert summary["result"] == "interrupted" and summary["rolled_back"] >= 1, outcome.text()
    assert service_state(project, images) == [("running", "healthy", APP_V1)] * 3
    assert read_markers(project) == {name: (marker, "shared") for name, marker in markers.items()}
    assert not lock_exists(project)
    faults.assert_no_request_lost(outcome)
