"""A Compose rollout to look at (issue 15's tests and bench/screenshots.py): one service ``web`` rolled
by the real rollover CLI to a definition whose replicas count their starts on a shared volume; from
the ``fail_from``-th start on, a replacement's healthcheck prints HEALTH_MESSAGE and fails. Optionally
behind its own HAProxy (driven and probed through by rollover), and optionally run on a real terminal
(tmux) to see the live view.

Everything made here is named ``rrep-...``; the caller tears the project down.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.engine import APP_V1, ComposeProject, haproxy_servers
from tests.support.faults import LOOPBACK_PORT, ROLLOVER
from tests.support.haproxy_front import HAProxy

# Screenshots the browser tests leave behind for a person to look at (CI keeps the folder).
ARTEFACTS = Path(os.environ.get("ROLLOVER_TEST_ARTEFACTS", "/tmp/rollover-test-artefacts"))
SECRET = "rrep-hunter2-secret"
ROLLOVER_ENV = {**os.environ, "RREP_API_TOKEN": SECRET}
HEALTH_MESSAGE = "rrep: database unreachable"

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


# The live view, on a real terminal (tmux).


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


def assert_not_blank(browser: Any, screenshot: Path) -> None:
    """The control: a blank page's screenshot, same window, same browser. A PNG compresses a blank
    page to almost nothing; the report's chart and tables make it many times larger."""
    browser.get("about:blank")
    blank = len(browser.get_screenshot_as_png())
    assert screenshot.stat().st_size > 5 * blank, (screenshot.stat().st_size, blank)
