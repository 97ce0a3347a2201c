"""A real Podman service for tests: ``podman system service`` on a socket of its own, and the test
app's images loaded into Podman's storage as ``rpod-test/app:{v1,v2,broken}``.

Podman never shares anything with the main dockerd: its own storage (/var/lib/containers), its own
networks (netavark), its own API socket here. Nothing in this module talks to dockerd but
``docker save`` of the images the engine fixtures built.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from tests.support.engine import APP_BROKEN, APP_V1, APP_V2

PODMAN = shutil.which("podman") or "/usr/bin/podman"
# Podman's names for the test app (its storage is its own; the prefix says whose they are).
PODMAN_IMAGES = {APP_V1: "rpod-test/app:v1", APP_V2: "rpod-test/app:v2", APP_BROKEN: "rpod-test/app:broken"}
RPOD_V1, RPOD_V2, RPOD_BROKEN = PODMAN_IMAGES[APP_V1], PODMAN_IMAGES[APP_V2], PODMAN_IMAGES[APP_BROKEN]
_START_BOUND_S = 60.0


def rpod_name(kind: str) -> str:
    return f"rpod-{kind}-{uuid.uuid4().hex[:8]}"


@dataclass
class PodmanService:
    """A running ``podman system service``: its address and a Docker SDK client on it."""

    host: str  # unix:///tmp/rpod-svc-.../podman.sock
    client: Any
    process: subprocess.Popen[bytes]
    log: Path

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The docker CLI against Podman (as a user would point it there)."""
        done = subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def env(self) -> dict[str, str]:
        """An environment whose docker CLI and Compose talk to Podman."""
        import os

        return {**os.environ, "DOCKER_HOST": self.host}

    def remove_containers(self, names_or_ids: list[str]) -> None:
        for name in names_or_ids:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(name, force=True, v=True)

    def remove_volumes(self, names: set[str]) -> None:
        for name in names:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_volume(name, force=True)


@contextlib.contextmanager
def podman_service() -> Iterator[PodmanService]:
    """Start ``podman system service`` on its own socket, wait (bounded) until it answers, and stop
    it at the end. A short directory: a unix socket path must stay under 108 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="rpod-svc-"))
    socket, log = directory / "podman.sock", directory / "service.log"
    host = f"unix://{socket}"
    with log.open("wb") as sink:
        process = subprocess.Popen([PODMAN, "system", "service", "--time=0", host], stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    client = None
    try:
        client = _wait_answering(host, process, log)
        yield PodmanService(host, client, process, log)
    finally:
        if client is not None:
            client.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_answering(host: str, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + _START_BOUND_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"podman system service exited {process.returncode}: {log.read_text()}")
        if Path(host.removeprefix("unix://")).exists():
            # The socket may be there before the service accepts on it (or made anew meanwhile).
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException, OSError):
                client = docker.DockerClient(base_url=host, version="auto")
                client.ping()
                return client
        if time.monotonic() > deadline:
            raise AssertionError(f"podman system service did not answer in {_START_BOUND_S:g} s: {log.read_text()}")
        time.sleep(0.1)


def load_app_images(service: PodmanService, docker_client: Any, app_images: dict[str, str]) -> dict[str, str]:
    """The test app's images (built into dockerd by the engine fixtures) in Podman's storage under
    their rpod names; loaded only when Podman does not have these very images yet. rpod name -> id."""
    wanted = {PODMAN_IMAGES[tag]: image_id.removeprefix("sha256:") for tag, image_id in app_images.items()}
    if all(_podman_image_id(service, name) == image_id for name, image_id in wanted.items()):
        return wanted
    saver = subprocess.Popen(["docker", "save", *app_images], stdout=subprocess.PIPE)
    loaded = subprocess.run([PODMAN, "load"], stdin=saver.stdout, capture_output=True, text=True, check=False)
    assert saver.stdout is not None
    saver.stdout.close()
    assert saver.wait() == 0 and loaded.returncode == 0, loaded.stderr
    for tag, name in PODMAN_IMAGES.items():
        subprocess.run([PODMAN, "tag", f"localhost/{tag}", name], check=True, capture_output=True)
        subprocess.run([PODMAN, "untag", f"localhost/{tag}"], check=True, capture_output=True)
    assert all(_podman_image_id(service, name) == image_id for name, image_id in wanted.items())
    return wanted


def _podman_image_id(service: PodmanService, name: str) -> str | None:
    try:
        return str(service.client.images.get(name).id).removeprefix("sha256:")
    except docker.errors.ImageNotFound:
        return None
