"""Helpers for the engine tests: names, commands, and a Compose project torn down by name."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images" / "app"
BUSYBOX = Path("/bin/busybox")
APP_V1 = "rollover-test/app:v1"
APP_V2 = "rollover-test/app:v2"
APP_BROKEN = "rollover-test/app:broken"
# The classic builder (no BuildKit daemon to start on a bare machine) and a PATH without the venv.
BUILD_ENV = {"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"}


def app_image_context(context: Path) -> Path:
    """The test app's build context (tests/images/app) in ``context``, with the host's busybox-static:
    the only binary of the FROM-scratch image, never committed but copied at build time."""
    for source in IMAGES_DIR.iterdir():
        shutil.copy(source, context / source.name)
    shutil.copy(BUSYBOX, context / "busybox")
    return context


def build_app_images(client: Any, context: Path) -> dict[str, str]:
    """Build rollover-test/app:{v1,v2,broken} in ``context`` (made if missing); tag -> image id."""
    context.mkdir(parents=True, exist_ok=True)
    app_image_context(context)
    variants = {
        APP_V1: ["--build-arg", "VERSION=v1"],
        APP_V2: ["--build-arg", "VERSION=v2"],
        APP_BROKEN: ["--build-arg", "VERSION=broken", "--build-arg", "HEALTH_FILE=missing.txt"],
    }
    for tag, build_args in variants.items():
        run("docker", "build", "-q", *build_args, "-t", tag, str(context), env=BUILD_ENV)
    return {tag: str(client.images.get(tag).id) for tag in variants}


def unique_name(kind: str) -> str:
    return f"rtest-docker-{kind}-{uuid.uuid4().hex[:8]}"


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command and return its combined output; a failure fails the test with that output."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def compose_yaml(
    project: str,
    image: str,
    *,
    replicas: int,
    volumes: bool = False,
    container_name: str | None = None,
    ports: Sequence[str] = (),
    healthcheck: dict[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """The test service ``web``: the image's own healthcheck (every 0.5 s), quick stops.

    ``ports``: published ports as Compose writes them, e.g. ``"127.0.0.1::8080"`` (a random
    loopback host port per replica). ``healthcheck``: settings overriding the image's (e.g.
    ``{"interval": "3s"}``), each value written as YAML; the image's test command stays unless a
    ``test`` is given (a list as JSON, which is YAML: ``json.dumps(["CMD-SHELL", "..."])``).
    ``labels``: container labels of every replica (quoted as JSON strings, so any text is safe).
    """
    lines = [
        f"name: {project}",
        "services:",
        "  web:",
        f"    image: {image}",
        "    stop_grace_period: 5s",
        "    deploy:",
        f"      replicas: {replicas}",
    ]
    if container_name:
        lines.append(f"    container_name: {container_name}")
    if ports:
        lines += ["    ports:", *(f'      - "{port}"' for port in ports)]
    if labels:
        lines += ["    labels:", *(f"      {json.dumps(key)}: {json.dumps(value)}" for key, value in labels.items())]
    if healthcheck:
        lines += ["    healthcheck:", *(f"      {key}: {value}" for key, value in healthcheck.items())]
    if volumes:
        lines += ["    volumes:", "      - shared:/shared", "      - /data", "volumes:", "  shared: {}"]
    return "\n".join(lines) + "\n"


@dataclass
class ComposeProject:
    """A Compose project in its own directory, torn down by name after the test."""

    name: str
    directory: Path
    client: Any
    volumes: set[str] = field(default_factory=set)
    env: Mapping[str, str] | None = None  # Compose's environment (DOCKER_HOST for another engine); None: ours

    @property
    def file(self) -> Path:
        return self.directory / "compose.yaml"

    def write(self, image: str, **options: Any) -> None:
        self.file.write_text(compose_yaml(self.name, image, **options))

    def compose(self, *args: str) -> str:
        return run("docker", "compose", "-p", self.name, "-f", str(self.file), *args, cwd=self.directory,
                   env=dict(self.env) if self.env is not None else None)

    def containers(self, service: str = "web") -> list[Any]:
        filters = {"label": [f"com.docker.compose.project={self.name}", f"com.docker.compose.service={service}"]}
        return list(self.client.containers.list(all=True, filters=filters))

    def remember_volumes(self) -> None:
        """Record the volumes the project's containers use, anonymous ones included."""
        for container in self.containers():
            container.reload()
            self.volumes |= {m["Name"] for m in container.attrs["Mounts"] if m.get("Type") == "volume"}

    def tear_down(self) -> None:
        self.remember_volumes()
        try:
            self.compose("down", "-v", "--remove-orphans", "-t", "1")
        finally:
            remove_containers(self.client, [f"rollover-lock-{self.name}-web"])
            remove_volumes(self.client, self.volumes)


def service_containers(client: Any, project: str) -> list[Any]:
    """Every container of the project's service ``web``, running or not."""
    filters = {"label": [f"com.docker.compose.project={project}", "com.docker.compose.service=web"]}
    return list(client.containers.list(all=True, filters=filters))


def published_ports(client: Any, project: str) -> dict[str, int]:
    """Running replica name -> its host port on 127.0.0.1 for container port 8080."""
    ports = {}
    for container in service_containers(client, project):
        container.reload()
        if container.status != "running":
            continue
        [binding] = [b for b in container.attrs["NetworkSettings"]["Ports"]["8080/tcp"] if b["HostIp"] == "127.0.0.1"]
        ports[container.name] = int(binding["HostPort"])
    return ports


def loopback_endpoints(client: Any, project: str) -> list[str]:
    """``127.0.0.1:PORT`` of every running replica (how a balancer in ``published`` mode reaches it), sorted."""
    return sorted(f"127.0.0.1:{port}" for port in published_ports(client, project).values())


def haproxy_servers(client: Any, project: str) -> list[tuple[str, str, int]]:
    """One HAProxy server line per running replica: (``webN``, 127.0.0.1, its published port)."""
    return [(f"web{name.rsplit('-', 1)[-1]}", "127.0.0.1", port)
            for name, port in sorted(published_ports(client, project).items())]


def remove_containers(client: Any, names_or_ids: list[str]) -> None:
    for name in names_or_ids:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(name, force=True, v=True)


def remove_volumes(client: Any, names: set[str]) -> None:
    for name in names:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_volume(name, force=True)
