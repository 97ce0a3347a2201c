"""The per-service actions of ``rollover up`` other than a roll: what Compose does itself.

- create / scale / recreate: ``docker compose up -d --no-deps --wait SERVICE`` (``--no-recreate``
  for a scale), so the containers are exactly what ``docker compose up`` makes, started and waited
  for until up (healthy where the service has a healthcheck);
- remove (an orphan, with --remove-orphans): stop and remove its containers, keeping volumes, as
  ``up --remove-orphans`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rollover.backends.docker.compose import run_docker
from rollover.core.project import Action
from rollover.engine import Engine
from rollover.project.model import ProjectArgs

# How long `up --wait` may take when the service sets no timeout: pulling aside, generous on a
# loaded machine; a service that needs longer says so with x-rollover: {timeout: ...}.
DEFAULT_WAIT_S = 120.0


def compose_up_command(args: ProjectArgs, service: str, action: Action, *, pull: bool,
                       timeout_s: float | None) -> list[str]:
    """``up`` for one service, waited for; the selected profiles stay enabled as the user gave them."""
    command = [*args.cli_args(), "up", "--detach", "--no-deps", "--wait",
               "--wait-timeout", str(math.ceil(timeout_s or DEFAULT_WAIT_S))]
    if action is Action.SCALE:
        command.append("--no-recreate")
    if action is Action.RECREATE:
        command.append("--force-recreate")
    if pull:
        command += ["--pull", "always"]
    return [*command, service]


async def compose_up(args: ProjectArgs, service: str, action: Action, env: Mapping[str, str], *, pull: bool,
                     timeout_s: float | None) -> None:
    await run_docker(compose_up_command(args, service, action, pull=pull, timeout_s=timeout_s), env=env)


async def remove_orphan(engine: Engine, container_ids: tuple[str, ...]) -> None:
    for container_id in container_ids:
        await engine.stop(container_id, 10)
        await engine.remove(container_id, force=True, volumes=False)
