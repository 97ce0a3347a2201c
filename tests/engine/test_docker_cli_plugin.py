"""rollover as a docker CLI plugin, through the real docker CLI, on the real engine: a rollout, the
CLI's global flags (--context), and the CLI's signal handling without a TTY (a Ctrl-C closes the
plugin socket: exit 130, everything put back; three and the CLI kills the plugin: the next run
takes over). The CLI's config folder is the test's own (tests/support/docker_cli.py)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.docker_cli import image_id, rplug_name, service_images
from tests.support.engine import APP_V1, APP_V2, ComposeProject
from tests.support.faults import Rollover

pytestmark = pytest.mark.engine


def _docker_rollover(project: ComposeProject, env: dict[str, str], *args: str, started: list[Rollover],
                     flags: tuple[str, ...] = ()) -> Rollover:
    rollover = Rollover(["--project", project.name, *args], project.directory, env,
                        program=("docker", *flags, "rollover"))
    started.append(rollover)
    return rollover


def test_an_unknown_context_is_bad_input(
    compose_project: Callable[..., ComposeProject], plugin_env: dict[str, str],
    started: list[Rollover],
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=1)
    project.write(APP_V2, replicas=1)
    for program in (("docker", "--context", "rplug-nosuch", "rollover"),):
        rollover = Rollover(["--project", project.name], project.directory, plugin_env, program=program)
        started.append(rollover)
        outcome = rollover.finish()
        assert outcome.returncode == 2
        assert outcome.stderr.strip().splitlines() == [
            outcome.stderr.strip()] and "docker context 'rplug-nosuch' not found" in outcome.stderr
    env = {**plugin_env, "DOCKER_CONTEXT": "rplug-nosuch"}
    outcome = Rollover(["--project", project.name], project.directory, env).finish()
    assert outcome.returncode == 2 and "docker context 'rplug-nosuch' not found" in outcome.stderr
    assert service_images(project) == [image_id(project, APP_V1)], "nothing touched"


def test_ctrl_c_without_a_tty_closes_the_plugin_socket_and_puts_everything_back(
    compose_project: Callable[..., ComposeProject], plugin_env: dict[str, str],
    started: list[Rollover],
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=2)
    project.write(APP_V2, replicas=2)
    rollover = _docker_rollover(project, plugin_env, "--step", "1", started=started)
    rollover.wait_for("settled")  # one replaced, the next in flight
    rollover.interrupt(signal.SIGINT)  # to the docker CLI only: it closes the plugin socket
    outcome = rollover.finish()
    assert outcome.returncode == 130, outcome.text()
    assert outcome.summary["result"] == "interrupted"
    assert service_images(project) == [image_id(project, APP_V1)] * 2, "rolled back, as for a SIGINT"
    assert not _lock_exists(project)


def test_three_signals_make_the_cli_kill_the_plugin_and_the_next_run_takes_over(
    compose_project: Callable[..., ComposeProject], plugin_env: dict[str, str],
    started: list[Rollover],
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=2)
    project.write(APP_V2, replicas=2)
    rollover = _docker_rollover(project, plugin_env, "--step", "1", started=started)
    rollover.wait_for("up")
    plugin = _plugin_pid(rollover.process.pid)
    rollover.interrupt(signal.SIGINT)
    rollover.wait_for("interrupted")  # the first one reached the plugin through its socket
    # The CLI kills its plugin at its third signal; how it counts the first one (its context's
    # cancellation, or its signal channel) differs between CLI versions, and a signal that arrives
    # while the last is pending merges with it: send them one at a time until the plugin is gone.
    for _ in range(4):
        _signal_taken(rollover, signal.SIGINT)
        if _gone_within(plugin, 2.0):
            break
    killed = rollover.finish()
    assert "forcefully exiting" in killed.stderr, killed.text()
    assert _gone(plugin), "the CLI killed its plugin"
    assert _lock_exists(project), "killed mid-rollout: its lock stays behind as its record"

    outcome = _docker_rollover(project, plugin_env, "--step", "1", started=started).finish()
    assert outcome.returncode == 0, outcome.text()
    assert "took_over_lock" in outcome.kinds()
    assert service_images(project) == [image_id(project, APP_V2)] * 2


def _signal_taken(rollover: Rollover, signal_number: int, deadline_s: float = 30) -> None:
    """Send a signal and wait until the CLI took it: the same signal sent again while one is still
    pending is merged into it (standard signals are not queued), and the CLI counts to three."""
    rollover.interrupt(signal_number)
    bit = 1 << (signal_number - 1)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = Path(f"/proc/{rollover.process.pid}/status").read_text()
        pending = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd"))]
        if not any(mask & bit for mask in pending):
            return
        time.sleep(0.01)  # the Go runtime takes a signal within milliseconds once it runs
    raise AssertionError(f"the docker CLI never took signal {signal_number}")


def _gone_within(pid: int, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)  # a killed process is reaped within milliseconds
    return _gone(pid)


def _lock_exists(project: ComposeProject) -> bool:
    return bool(project.client.containers.list(all=True, filters={"name": f"rollover-lock-{project.name}-web"}))


def _plugin_pid(cli_pid: int) -> int:
    # Go spawns from any of its threads: each thread lists its own children.
    tasks = Path(f"/proc/{cli_pid}/task").iterdir()
    children = [pid for task in tasks for pid in (task / "children").read_text().split()]
    [plugin] = [int(pid) for pid in children if "docker-rollover" in Path(f"/proc/{pid}/cmdline").read_text()]
    return plugin


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"
