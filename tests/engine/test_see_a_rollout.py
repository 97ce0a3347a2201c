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
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import browser, console_errors
from tests.support.engine import APP_V1, ComposeProject, haproxy_servers
from tests.support.event_schema import assert_valid_events
from tests.support.faults import LOOPBACK_PORT, ROLLOVER
from tests.support.haproxy_front import HAProxy

__all__ = ["browser"]  # the fixture

pytestmark = pytest.mark.engine

SECRET = "rrep-hunter2-secret"
ROLLOVER_ENV = {**os.environ, "RREP_API_TOKEN": SECRET}
HEALTH_MESSAGE = "rrep: database unreachable"
# Screenshots the browser tests leave behind for a person to look at (CI keeps the folder).
ARTEFACTS = Path(os.environ.get("ROLLOVER_TEST_ARTEFACTS", "/tmp/rollover-test-artefacts"))

# The new definition: each start adds one to /shared/starts; from the FAIL_FROM-th start (0-based)
# on, the replica prints why it is broken and its healthcheck fails with HEALTH_MESSAGE.
_ENTRYPOINT = (
    'echo "rrep: starting with token $$RREP_SHOWN"; n=$$(cat /shared/starts 2>/dev/null || echo 0);'
    ' echo $$((n+1)) > /shared/starts;'
    ' if [ "$$n" -ge "$$FAIL_FROM" ]; then echo "rrep: start $$n: the database is gone"; touch /tmp/broken; fi;'
    ' exec httpd -f -p 8080 -h /www'
)
_HEALTH = f"if [ -e /tmp/broken ]; then echo '{HEALTH_MESSAGE}'; exit 1; fi; wget -qO- http://127.0.0.1:8080/version.txt"


def service_yaml(project: str, replicas: int, fail_from: int | None) -> str:
    """``fail_from`` None: the plain v1 service; else the counting one described above."""
    lines = [f"name: {project}", "services:", "  web:", f"    image: {APP_V1}", "    init: true",
             "    stop_grace_period: 2s", "    deploy:", f"      replicas: {replicas}",
             "    ports:", f'      - "{LOOPBACK_PORT}"',
             "    volumes:", "      - shared:/shared"]
    if fail_from is None:  # the image's own check, patient: a loaded machine can take seconds to answer
        lines += ["    healthcheck:", "      interval: 500ms", "      timeout: 10s", "      retries: 5"]
    else:
        lines += ["    environment:", f"      RREP_SHOWN: {json.dumps(SECRET)}", f"      FAIL_FROM: \"{fail_from}\"",
                  f"    entrypoint: {json.dumps(['/bin/sh', '-c', _ENTRYPOINT])}",
                  "    healthcheck:", f"      test: {json.dumps(['CMD-SHELL', _HEALTH])}",
                  "      interval: 500ms", "      timeout: 10s", "      retries: 2", "      start_period: 0s"]
    return "\n".join([*lines, "volumes:", "  shared: {}", ""])


@dataclass
class Rolled:
    project: ComposeProject
    returncode: int
    stdout: str
    stderr: str
    directory: Path


def run_plain(command: list[str], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run(command, cwd=cwd, env=ROLLOVER_ENV, capture_output=True, text=True, timeout=180,
                          check=False)
    return done.returncode, done.stdout, done.stderr


def roll(docker_client: Any, directory: Path, replicas: int, fail_from: int, *args: str,
         fronted: bool = False, run: Callable[[list[str], Path], tuple[int, str, str]] = run_plain) -> Rolled:
    """Start the v1 service (with ``fronted``, behind its own HAProxy, which rollover drives and probes
    through), switch its file to the counting definition and run rollover on it."""
    project = ComposeProject(f"rrep-{uuid.uuid4().hex[:8]}", directory, docker_client)
    directory.mkdir(parents=True, exist_ok=True)
    project.file.write_text(service_yaml(project.name, replicas, None))
    front: HAProxy | None = None
    try:
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        if fronted:
            # A short directory of its own: a unix socket path must stay under 108 bytes.
            front = HAProxy(Path(tempfile.mkdtemp(prefix="rrep-lb-")), haproxy_servers(docker_client, project.name))
            args = ("--balancer", front.spec, "--balancer-address", front.balancer_address, "--probe", front.url,
                    "--probe-rate", "50", *args)
        project.file.write_text(service_yaml(project.name, replicas, fail_from))
        returncode, stdout, stderr = run([ROLLOVER, "redeploy", "web", "--step", "1", "--timeout", "20", *args],
                                         directory)
    except BaseException:
        project.tear_down()
        raise
    finally:
        if front is not None:
            front.stop()
            shutil.rmtree(front.directory, ignore_errors=True)
    return Rolled(project, returncode, stdout, stderr, directory)


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
    assert {"plan", "request_sent", "acknowledged", "up", "admitted", "drained", "failed", "rollback",
            "summary"} <= {event["event"] for event in events}, [event["event"] for event in events]
    assert_valid_events(events)


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


def _assert_not_blank(browser: Any, screenshot: Path) -> None:
    """The control: a blank page's screenshot, same window, same browser. A PNG compresses a blank
    page to almost nothing; the report's chart and tables make it many times larger."""
    browser.get("about:blank")
    blank = len(browser.get_screenshot_as_png())
    assert screenshot.stat().st_size > 5 * blank, (screenshot.stat().st_size, blank)


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

    panel = browser.find_element("css selector", "#probe-requests")
    probe = summary["probe"]
    assert (int(panel.get_attribute("data-ok")), int(panel.get_attribute("data-failed"))) == (
        probe["ok"], probe["failed"]), probe
    assert browser.find_elements("css selector", "#probe-latency polyline.p50_ms")
    diagnosis = browser.find_element("css selector", "tr.event-failed pre.diagnosis").text
    assert f"health check exit 1: {HEALTH_MESSAGE}" in diagnosis and SECRET not in browser.page_source
    _assert_not_blank(browser, screenshot)

    # `rollover report` draws the same page from the saved JSON lines.
    saved = tmp_path / "events.jsonl"
    saved.write_text(failed_rollout.stdout)
    again = tmp_path / "again.html"
    drawn = subprocess.run([ROLLOVER, "report", str(saved), "-o", str(again)], capture_output=True, text=True,
                           check=False)
    assert drawn.returncode == 0, drawn.stderr
    assert again.read_text() == report.read_text()


# -- the live view, on a real terminal (tmux) ------------------------------------------------------


class Terminal:
    """A tmux server of our own (its own socket, named rrep-...) with one window (120x40 unless told):
    the screen a user would see, read with ``capture-pane``."""

    def __init__(self, columns: int = 120, lines: int = 40) -> None:
        self.socket = f"rrep-{uuid.uuid4().hex[:8]}"
        self.size = (str(columns), str(lines))

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def start(self, command: list[str], cwd: Path) -> None:
        environment = " ".join(f"{name}={shlex.quote(value)}" for name, value in
                               (("RREP_API_TOKEN", SECRET), ("PATH", os.environ["PATH"]),
                                ("DOCKER_HOST", os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))))
        # The shell stays (waiting on 'read') once rollover exits, so its last screen can be read.
        script = (f"cd {shlex.quote(str(cwd))} && env {environment} {shlex.join(command)}; "
                  "echo rrep-exit=$?; read never")
        self.tmux("new-session", "-d", "-x", self.size[0], "-y", self.size[1], script)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-S", "-200")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False, timeout=30)
        folder = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (folder / self.socket).unlink(missing_ok=True)  # a killed server may leave its socket behind


def run_on_a_terminal(command: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run rollover in a terminal; every distinct screen seen until it exits, joined (as stdout)."""
    terminal = Terminal()
    screens: list[str] = []
    try:
        terminal.start(command, cwd)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            screen = terminal.screen()
            if not screens or screen != screens[-1]:
                screens.append(screen)
            exited = re.search(r"rrep-exit=(\d+)", screen)
            if exited:
                return int(exited.group(1)), "\n=====\n".join(screens), ""
            time.sleep(0.1)  # the screen's next state: polled, bounded by the deadline
        raise AssertionError("rollover never exited on the terminal; last screen:\n" + (screens or [""])[-1])
    finally:
        terminal.close()


def test_the_live_view_shows_each_replica_in_flight_and_the_bar_reaches_the_end(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    rolled = roll(docker_client, tmp_path / "project", 3, 99, fronted=True, run=run_on_a_terminal)
    try:
        screens = rolled.stdout.split("\n=====\n")
        assert rolled.returncode == 0, screens[-1]
        name = rf"{rolled.project.name}-web-\d+"
        in_flight = [line for screen in screens for line in screen.splitlines()
                     if re.fullmatch(rf"\s+{name}  (requesting|starting, health checks running|health checks passed,"
                                     rf" admitting|admitted, in its grace period|drain.*|draining and stopping the old"
                                     rf" replica)  \d+\.\ds", line)]
        assert in_flight, screens
        assert any(re.search(r"replaced [12]/3 .*about \d+s left", screen) for screen in screens), screens
        assert any(re.search(r"probe: \d+ requests/s, \d+ ok, 0 failed", screen) for screen in screens), screens
        last = screens[-1]
        assert re.search(r"replaced 3/3 ", last) and "completed: 3 replaced, 0 failed" in last, last
        assert SECRET not in rolled.stdout
    finally:
        rolled.project.tear_down()
