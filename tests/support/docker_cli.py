"""The docker CLI with rollover installed as its plugin, in a docker config folder of the test's own
(DOCKER_CONFIG): the user's ~/.docker is never read or written. The Compose plugin still comes from
the system folder (/usr/local/lib/docker/cli-plugins), as for any user."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import ComposeProject
from tests.support.faults import ROLLOVER, Rollover

DOCKER_ROLLOVER = str(Path(ROLLOVER).with_name("docker-rollover"))


def rplug_name(kind: str) -> str:
    """Every container, project, context and image these tests make is named rplug-..."""
    return f"rplug-{kind}-{uuid.uuid4().hex[:8]}"


def cli_env(config: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")}
    return {**env, "DOCKER_CONFIG": str(config), **extra}


def run_cli(args: list[str], env: dict[str, str], cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def install_plugin(config: Path) -> dict[str, str]:
    """``rollover plugin install`` into ``config``/cli-plugins; the CLI's environment."""
    env = cli_env(config)
    done = run_cli([ROLLOVER, "plugin", "install"], env)
    assert done.returncode == 0, done.stderr
    return env


def create_context(env: dict[str, str], name: str, host: str) -> None:
    """A context in the test's store, made by the docker CLI itself."""
    done = run_cli(["docker", "context", "create", name, "--docker", f"host={host}"], env)
    assert done.returncode == 0, done.stderr


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


def service_images(project: ComposeProject) -> list[str]:
    """The image id of every running replica of ``web``, sorted (a rollback makes replicas from the
    recorded image id, so its containers name no tag)."""
    return sorted(container.attrs["Image"] for container in project.containers() if container.status == "running")


def image_id(project: ComposeProject, tag: str) -> str:
    return str(project.client.images.get(tag).id)


@pytest.fixture
def plugin_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The docker CLI's environment with rollover installed as a plugin in a throwaway config."""
    yield install_plugin(tmp_path / "docker-config")


@pytest.fixture
def started() -> Iterator[list[Rollover]]:
    """The docker CLIs a test started. Killing a CLI leaves its plugin running (and the plugin's
    `docker compose` children), which would go on after the project's teardown: each whole tree
    is killed, leaves first. Asked for after compose_project, so it is torn down before it."""
    made: list[Rollover] = []
    yield made
    for rollover in made:
        for pid in reversed(_descendants(rollover.process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # our own test's processes, by pid
        rollover.kill()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found
