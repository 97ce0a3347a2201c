"""Remote engines over real SSH: an OpenSSH server on 127.0.0.1 with keys the test made
(tests/support/sshd.py) in front of this machine's own engine. rollover reaches it through
DOCKER_HOST=ssh://..., and through a docker context naming that address via the docker CLI plugin;
the `docker compose` it runs goes the same way. (DOCKER_HOST=ssh://... alone is what the context
resolves to, and what the fault cases use.) A refused key or a closed port is one line, exit 2,
nothing touched."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.docker_cli import create_context, image_id, install_plugin, rplug_name, service_images
from tests.support.engine import APP_V1, APP_V2, ComposeProject
from tests.support.faults import Rollover
from tests.support.sshd import Sshd, free_port, keygen, start_sshd

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd(tmp_path_factory.mktemp("rplug-sshd"))
    yield server
    server.stop()


def test_a_rollout_over_ssh_through_a_context_and_the_plugin(
    compose_project: Callable[..., ComposeProject], sshd: Sshd, tmp_path: Path, started: list[Rollover]
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=2)
    project.write(APP_V2, replicas=2)
    env = sshd.client_env(install_plugin(tmp_path / "docker-config"))
    context = rplug_name("ssh")
    create_context(env, context, sshd.address)
    rollover = Rollover(["--project", project.name, "--step", "2"], project.directory, env,
                        program=("docker", "--context", context, "rollover"))
    started.append(rollover)
    outcome = rollover.finish()
    assert outcome.returncode == 0, outcome.text()
    assert service_images(project) == [image_id(project, APP_V2)] * 2
    sessions = (sshd.directory / "sshd.log").read_text().count("Accepted publickey for root")
    assert sessions >= 2, "the engine and the compose commands both went through ssh"


@pytest.mark.parametrize("fault", ["refused-key", "closed-port"])
def test_ssh_faults_are_one_line_exit_2_and_touch_nothing(
    compose_project: Callable[..., ComposeProject], sshd: Sshd, tmp_path: Path, fault: str
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=1)
    project.write(APP_V2, replicas=1)
    env = sshd.client_env()
    if fault == "refused-key":
        # The same client setup but a key the server never saw.
        keygen(tmp_path / "stranger")
        config = (sshd.directory / "ssh_config").read_text().replace(str(sshd.directory / "client_key"),
                                                                     str(tmp_path / "stranger"))
        (tmp_path / "ssh_config").write_text(config)
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {tmp_path / "ssh_config"} "$@"\n')
        (tmp_path / "bin" / "ssh").chmod(0o755)
        env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
        address, named = sshd.address, "Permission denied"
    else:
        address, named = f"ssh://root@127.0.0.1:{free_port()}", "Connection refused"
    outcome = Rollover(["--project", project.name], project.directory, {**env, "DOCKER_HOST": address}).finish()
    assert outcome.returncode == 2, outcome.text()
    [line] = outcome.stderr.strip().splitlines()
    assert line.startswith(f"error: EngineUnavailable: cannot reach the Docker daemon at {address}: ssh:")
    assert named in line
    assert service_images(project) == [image_id(project, APP_V1)]
