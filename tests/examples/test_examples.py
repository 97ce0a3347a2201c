"""The recipes under examples/ are run, so the docs cannot rot.

Each example's README.md is its recipe: its ```sh blocks are run verbatim, in order, in the
example's folder, with ``bash -euo pipefail`` (a failing command fails the recipe), rollover and
Traefik from this virtualenv first on PATH. The blocks after the ``## Clean up`` heading always run
at the end, pass or fail. A recipe builds the app image, starts the Compose project, starts the
balancer on the host and rolls the service to v2 with ``--probe ... --max-probe-failures 0
--output json > run/rollout.jsonl``; the test then reads that summary: the rollout completed, the
probe sent its requests, none failed, and every replica runs v2.

Caddy's recipe sets ``net.ipv4.tcp_migrate_req``, a per network-namespace sysctl the shared test
machine must keep as it is. So once its project's network exists, the rest of that recipe runs in
the network namespace of a sandbox container on that network (as tests/zero_downtime runs Caddy):
Caddy, rollover and the probe's 127.0.0.1 are the sandbox's, and the replicas are reached on the
network, as from the host.

Traffic goes only to 127.0.0.1 and to the containers the recipes make. Everything is named
``rollover-example-*`` (projects, networks, the lock, the sandbox, the images) and removed by that
name at the end; processes are stopped by the pid files the recipes write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IMAGE_REPOSITORY = "rollover-example/app"  # what the recipes' `scripts/build-images rollover-example` makes
IMAGE_TAGS = ("v1", "v2", "broken")
CLEAN_UP_HEADING = "## Clean up"
BLOCK_TIMEOUT_S = 300  # a rollout of 4 replicas takes seconds; a slow shared engine, a minute at most


@dataclass(frozen=True)
class Example:
    name: str  # the folder under examples/
    ports: tuple[int, ...]  # the 127.0.0.1 ports its balancer listens on
    own_network_namespace: bool = False

    @property
    def folder(self) -> Path:
        return EXAMPLES / self.name

    @property
    def project(self) -> str:
        return f"rollover-example-{self.name}"  # the compose file's `name:`

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    @property
    def sandbox(self) -> str:
        return f"{self.project}-netns"


EXAMPLE_LIST = (
    Example("haproxy", (8801,)),
    Example("caddy", (8802, 8812), own_network_namespace=True),
    Example("traefik", (8803, 8813)),
    Example("nginx", (8804,)),
)


def recipe(readme: Path) -> tuple[list[str], list[str]]:
    """The README's ```sh blocks: those that do the work, and those under the clean-up heading."""
    text = readme.read_text()
    work, _, clean_up = text.partition(f"\n{CLEAN_UP_HEADING}\n")
    blocks = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)
    return blocks.findall(work), blocks.findall(clean_up)


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class RecipeRun:
    """Runs one example's blocks, on the host or in the sandbox's network namespace."""

    def __init__(self, example: Example, home: Path) -> None:
        self.example = example
        bin_dir = str(Path(sys.executable).parent)  # rollover and traefik of this virtualenv
        # Caddy keeps its state under HOME/XDG dirs: a directory of the test's own, not root's.
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_DATA_HOME": str(home)}
        self.env.pop("APP_TAG", None)
        self.sandbox_pid: int | None = None
        self.sandbox_left = False

    def run(self, block: str) -> None:
        wants_sandbox = self.example.own_network_namespace and not self.sandbox_left
        if wants_sandbox and self.sandbox_pid is None and self._network_exists():
            self.sandbox_pid = self._start_sandbox()
        command = ["bash", "-euo", "pipefail", "-c", block]
        if self.sandbox_pid is not None:
            command = ["nsenter", f"--net=/proc/{self.sandbox_pid}/ns/net", *command]
        done = subprocess.run(command, cwd=self.example.folder, env=self.env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT_S)
        assert done.returncode == 0, (
            f"{self.example.name}: block failed (exit {done.returncode}):\n{block}\n"
            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}\n{self._balancer_log()}"
        )

    def leave_sandbox(self) -> None:
        """The clean-up runs on the host: the project's network goes only once the sandbox is off it."""
        docker("rm", "-f", self.example.sandbox, check=False)
        self.sandbox_pid = None
        self.sandbox_left = True

    def _network_exists(self) -> bool:
        return bool(docker("network", "ls", "-q", "--filter", f"name=^{self.example.network}$"))

    def _start_sandbox(self) -> int:
        docker("run", "-d", "--name", self.example.sandbox, "--network", self.example.network, "--no-healthcheck",
               f"{IMAGE_REPOSITORY}:v1")
        return int(docker("inspect", "-f", "{{.State.Pid}}", self.example.sandbox))

    def _balancer_log(self) -> str:
        logs = sorted((self.example.folder / "run").glob("*.log"))
        return "\n".join(f"{log.name}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs)


def stop_recorded_processes(folder: Path) -> None:
    """The balancers a recipe started and left running, by the pid files it wrote."""
    for pid_file in (folder / "run").glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def sweep(example: Example) -> None:
    """Whatever of the example is left, by name: containers (rollover's included), the lock, the
    sandbox, the network, the run folder."""
    containers = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={example.project}").split()
    leftovers = [*containers, f"rollover-lock-{example.project}-web", example.sandbox]
    docker("rm", "-f", "-v", *leftovers, check=False)
    docker("network", "rm", example.network, check=False)
    subprocess.run(["rm", "-rf", str(example.folder / "run")], check=False)


def rollout_summary(folder: Path) -> dict[str, Any]:
    lines = (folder / "run" / "rollout.jsonl").read_text().splitlines()
    summary = json.loads(lines[-1])
    assert summary["event"] == "summary", lines[-1]
    return dict(summary)


def service_images(example: Example) -> list[str]:
    ids = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={example.project}",
                 "--filter", "label=com.docker.compose.service=web").split()
    return sorted(docker("inspect", "-f", "{{.Config.Image}}", *ids).splitlines()) if ids else []


@pytest.fixture(scope="module")
def example_images() -> Iterator[None]:
    """The recipes build the app image themselves; it goes once every recipe has run."""
    yield
    docker("rmi", *(f"{IMAGE_REPOSITORY}:{tag}" for tag in IMAGE_TAGS), check=False)


@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=[example.name for example in EXAMPLE_LIST])
def test_recipe_rolls_with_no_failed_request(example: Example, example_images: None, tmp_path: Path) -> None:
    work, clean_up = recipe(example.folder / "README.md")
    assert work and clean_up, f"{example.name}: README.md has no ```sh blocks before and after {CLEAN_UP_HEADING!r}"
    sweep(example)  # what an interrupted run of this test left, by name
    busy = [port for port in example.ports if listening(port)]
    assert not busy, f"127.0.0.1 ports {busy} are taken: the {example.name} recipe needs them"
    run = RecipeRun(example, tmp_path)
    try:
        for block in work:
            run.run(block)
        summary = rollout_summary(example.folder)
        images = service_images(example)
    finally:
        try:
            run.leave_sandbox()
            for block in clean_up:
                run.run(block)
        finally:
            stop_recorded_processes(example.folder)
            sweep(example)

    probe = summary["probe"]
    assert summary["result"] == "completed", summary
    assert summary["replaced"] == 4, summary
    assert probe["failed"] == 0 and probe["sent"] >= 100, probe  # 100/s for a rollout of several seconds
    assert probe["answers"].get("v2", 0) > 0, probe
    assert images == [f"{IMAGE_REPOSITORY}:v2"] * 4, images
