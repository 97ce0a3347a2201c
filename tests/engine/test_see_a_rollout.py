"""Seeing a rollout (issue 15) on the real engine: a failure that explains itself, the event schema
checked on a real rollout's every event, and the HTML report opened in a real Chromium.

One Compose service ``web`` (3 replicas, start-first, step 1) rolls to a definition whose replicas
count their starts on a shared volume: the first replacement serves, every later one's healthcheck
prints "rrep: database unreachable" and fails. So the rollout has one replaced replica, one
failure and a rollback that puts the replaced one back. A secret handed to the container (and
printed in its log) must come out masked.

Everything made here is named ``rrep-...`` and removed by name afterwards, pass or fail.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import browser, console_errors
from tests.support.event_schema import assert_valid_events
from tests.support.faults import ROLLOVER
from tests.support.see_a_rollout import (
    ARTEFACTS,
    HEALTH_MESSAGE,
    SECRET,
    Rolled,
    assert_not_blank,
    roll,
    run_on_a_terminal,
)

__all__ = ["browser"]  # the fixture

pytestmark = pytest.mark.engine

@pytest.fixture(scope="module")
def failed_rollout(docker_client: Any, app_images: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rolled]:
    """The 3-replica rollout with a failure and a rollback, as JSON events and an HTML report."""
    directory = tmp_path_factory.mktemp("rrep-failed")
    rolled = roll(docker_client, directory / "project", 3, 1, "--output", "json",
                  "--report", str(directory / "project" / "report.html"), fronted=True)
    try:
        yield rolled
    finally:
        rolled.project.tear_down()


def events_of(rolled: Rolled) -> list[dict[str, Any]]:
    return [json.loads(line) for line in rolled.stdout.splitlines() if line.strip()]


def test_the_failure_event_carries_the_health_check_output_and_the_log(failed_rollout: Rolled) -> None:
    events = events_of(failed_rollout)
    assert failed_rollout.returncode == 1, failed_rollout.stdout + failed_rollout.stderr
    summary = events[-1]
    assert (summary["result"], summary["replaced"], summary["failed"], summary["rolled_back"]) == (
        "rolled-back", 1, 1, 1), summary
    [failed] = [event for event in events if event["event"] == "failed"]
    diagnosis = failed["diagnosis"]
    assert diagnosis["exit_code"] is None and diagnosis["state"] == "running", diagnosis  # unhealthy, not exited
    assert diagnosis["health_checks"], diagnosis
    assert all(check["exit_code"] == 1 and check["output"] == HEALTH_MESSAGE for check in diagnosis["health_checks"])
    assert "rrep: start 1: the database is gone" in diagnosis["log"], diagnosis["log"]
    assert "rrep: starting with token ***" in diagnosis["log"], diagnosis["log"]
    assert SECRET not in failed_rollout.stdout


def test_the_text_output_shows_why_a_replacement_failed(docker_client: Any, app_images: dict[str, str],
                                                       tmp_path: Path) -> None:
    rolled = roll(docker_client, tmp_path / "project", 1, 0)
    try:
        assert rolled.returncode == 1, rolled.stdout + rolled.stderr
        lines = rolled.stdout.splitlines()
        failed_at = next(index for index, line in enumerate(lines) if ": FAILED: " in line)
        explained = lines[failed_at + 1:failed_at + 8]
        assert explained[0].strip() == "still running (container state: running)", rolled.stdout
        assert f"    health check exit 1: {HEALTH_MESSAGE}" in explained, rolled.stdout
        assert "      | rrep: start 0: the database is gone" in lines, rolled.stdout
        assert "      | rrep: starting with token ***" in lines, rolled.stdout
        assert SECRET not in rolled.stdout
    finally:
        rolled.project.tear_down()


def test_every_event_of_a_real_rollout_follows_the_schema(failed_rollout: Rolled) -> None:
    events = events_of(failed_rollout)
    assert {"plan", "request_sent", "acknowledged", "up", "admitted", "draining", "drained", "failed", "rollback",
            "summary"} <= {event["event"] for event in events}, [event["event"] for event in events]
    assert_valid_events(events)


def test_the_events_carry_what_haproxy_said(failed_rollout: Rolled) -> None:
    """HAProxy's own view of each admission and drain: the server in its backend, the state it was
    set to and, while draining, its open sessions as 'show stat' counted them."""
    events = events_of(failed_rollout)
    assert all(event["health_checks_needed"] == 1 for event in events if event["event"] == "acknowledged"), events
    for event in (event for event in events if event["event"] in ("admitted", "draining", "drained")):
        views = event.get("balancers")
        if event["event"] == "draining" and views is None:  # the drain's start: HAProxy's count follows
            continue
        [view] = views
        assert view["balancer"] == "haproxy" and view["server"].startswith("web/"), event
        assert view["state"] == {"admitted": "ready", "draining": "drain", "drained": "maint"}[event["event"]], event
        if event["event"] != "admitted":
            assert view["sessions"] >= 0 and event.get("sessions", view["sessions"]) == view["sessions"], event
    drains = [event for event in events if event["event"] == "drained"]
    counted = [event for event in events if event["event"] == "draining" and "sessions" in event]
    assert len(counted) >= len(drains) == 2, events  # the replaced one's old replica, then its replacement


# The rows the report must draw, by the order the plan lists the targets: the first replaced (its old
# replica drained, then retired) and put back by the rollback (its replacement drained in turn), the
# second failed (its old replica serves on), the third never touched.
REPLACED_THEN_ROLLED_BACK = ["serving", "request", "starting", "up", "admitted", "draining", "restore-request",
                             "restore-starting", "restore-serving", "draining"]
FAILED = ["serving", "request", "starting"]
UNTOUCHED = ["serving"]


def _open_report(browser: Any, path: Path, screenshot: Path) -> None:
    browser.get(path.as_uri())
    browser.save_screenshot(str(screenshot))


def test_the_report_draws_the_real_rollout_in_a_browser(failed_rollout: Rolled, browser: Any,
                                                       tmp_path: Path) -> None:
    events = events_of(failed_rollout)
    plan, summary = events[0], events[-1]
    report = failed_rollout.directory / "report.html"
    screenshot = ARTEFACTS / "report-real-rollout.png"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    _open_report(browser, report, screenshot)
    assert console_errors(browser) == []

    rows = browser.find_elements("css selector", ".gantt-row")
    assert [row.get_attribute("data-replica") for row in rows] == plan["targets"]
    phases = [(row.get_attribute("data-phases") or "").split() for row in rows]
    assert phases == [REPLACED_THEN_ROLLED_BACK, FAILED, UNTOUCHED], phases
    marks = [[mark.get_attribute("data-mark") for mark in row.find_elements("css selector", ".mark")]
             for row in rows]
    assert "rolled-back" in marks[0] and "failed" in marks[1] and marks[2] == [], marks
    # HAProxy's view under each row: the replacement admitted (ready), the old replica drained (drain,
    # each count, then maint); the rollback's restore admitted and the replacement drained in turn.
    views = [[view.get_attribute("data-state") for view in row.find_elements("css selector", ".view")]
             for row in rows]
    collapsed = [[state for index, state in enumerate(row) if index == 0 or row[index - 1] != state]
                 for row in views]
    assert collapsed == [["ready", "drain", "maint", "ready", "drain", "maint"], [], []], views
    assert all(view.get_attribute("data-server").startswith("web/")
               for view in rows[0].find_elements("css selector", ".view"))
    # ... and the same as a panel, a lane per HAProxy server: the old web-1's (in rotation from the
    # start, drained, out), the replacement's (admitted, drained by the rollback, out), the restore's.
    lanes = browser.find_elements("css selector", ".balancer-view .balancer-lane")
    assert sorted((lane.get_attribute("data-states") or "").split() for lane in lanes) == [
        ["ready"], ["ready", "drain", "maint"], ["ready", "drain", "maint"]], [
        (lane.get_attribute("data-server"), lane.get_attribute("data-states")) for lane in lanes]
    assert all((lane.get_attribute("data-server") or "").startswith("haproxy web/") for lane in lanes)

    panel = browser.find_element("css selector", ".probe-requests")
    probe = summary["probe"]
    assert (int(panel.get_attribute("data-ok")), int(panel.get_attribute("data-failed"))) == (
        probe["ok"], probe["failed"]), probe
    assert browser.find_elements("css selector", ".probe-latency polyline.p50_ms")
    diagnosis = browser.find_element("css selector", "tr.event-failed pre.diagnosis").text
    assert f"health check exit 1: {HEALTH_MESSAGE}" in diagnosis and SECRET not in browser.page_source
    assert_not_blank(browser, screenshot)

    # `rollover report` draws the same page from the saved JSON lines.
    saved = tmp_path / "events.jsonl"
    saved.write_text(failed_rollout.stdout)
    again = tmp_path / "again.html"
    drawn = subprocess.run([ROLLOVER, "report", str(saved), "-o", str(again)], capture_output=True, text=True,
                           check=False)
    assert drawn.returncode == 0, drawn.stderr
    assert again.read_text() == report.read_text()


def test_the_live_view_shows_each_replica_in_flight_and_the_bar_reaches_the_end(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    rolled = roll(docker_client, tmp_path / "project", 3, 99, fronted=True, run=run_on_a_terminal)
    try:
        screens = rolled.stdout.split("\n=====\n")
        assert rolled.returncode == 0, screens[-1]
        name = rf"{rolled.project.name}-web-\d+"
        in_flight = [line for screen in screens for line in screen.splitlines()
                     if re.fullmatch(rf"\s+{name}  (requesting|starting, health checks passed 0/1|health checks passed"
                                     rf" 1/1, admitting|admitted, in its grace period|drain.*|draining and stopping"
                                     rf" the old replica)  \d+\.\ds", line)]
        assert in_flight, screens
        # Health checks passed N / expected M: 0 of the 1 Docker needs while starting (its interval is 500 ms).
        assert any(line.split("  ")[2] == "starting, health checks passed 0/1" for line in in_flight), in_flight
        assert any(re.search(r"replaced [12]/3 .*about \d+s left", screen) for screen in screens), screens
        assert any(re.search(r"probe: \d+ requests/s, \d+ ok, 0 failed", screen) for screen in screens), screens
        last = screens[-1]
        assert re.search(r"replaced 3/3 ", last) and "completed: 3 replaced, 0 failed" in last, last
        assert SECRET not in rolled.stdout
    finally:
        rolled.project.tear_down()
