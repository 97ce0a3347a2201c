"""Compose v2 as a command line: the commands rollover runs are built here as plain lists (tested as
values), then run by one small runner that turns failures into rollover errors.

Replacements for a Compose service come from Compose itself, so they are exactly what
``docker compose up`` would make from the project's current files: same config hash, same labels,
same networks. That is also why a later ``docker compose up -d`` recreates nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollover.errors import PlatformError, ServiceNotFound

CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
ENV_FILES_LABEL = "com.docker.compose.project.environment_file"
# Compose records every -f file on the containers it makes, our temporary --image override too;
# files named like this are ours and are skipped when the project is read back from labels.
OVERRIDE_FILE_PREFIX = "rollover-image-override-"


@dataclass(frozen=True)
class ComposeProject:
    """Where a project's definition lives, as Compose recorded it on its containers."""

    name: str
    config_files: tuple[str, ...]
    working_dir: str
    env_files: tuple[str, ...] = ()

    @classmethod
    def from_labels(cls, name: str, labels: Mapping[str, str]) -> ComposeProject:
        files = tuple(
            path
            for path in _split(labels.get(CONFIG_FILES_LABEL, ""))
            if not Path(path).name.startswith(OVERRIDE_FILE_PREFIX)
        )
        return cls(
            name=name,
            config_files=files,
            working_dir=labels.get(WORKING_DIR_LABEL, ""),
            env_files=tuple(_split(labels.get(ENV_FILES_LABEL, ""))),
        )

    def cli_args(self, extra_files: tuple[str, ...] = ()) -> list[str]:
        """``docker compose`` arguments that name this project and its files."""
        args = ["compose", "-p", self.name]
        for path in (*self.config_files, *extra_files):
            args += ["-f", path]
        if self.working_dir:
            args += ["--project-directory", self.working_dir]
        for path in self.env_files:
            args += ["--env-file", path]
        return args


def scale_up_command(
    project: ComposeProject,
    service: str,
    count: int,
    *,
    pull: bool,
    override_file: str | None = None,
) -> list[str]:
    """``up`` that creates containers up to ``count`` and touches no existing one.

    ``--no-start``: a plain ``up -d`` would also start every stopped container of the service,
    a stop-first target between its stop and its removal included.
    """
    extra = (override_file,) if override_file else ()
    return [
        *project.cli_args(extra),
        "up",
        "--no-start",
        "--no-deps",
        "--no-recreate",
        "--pull",
        "always" if pull else "missing",
        "--scale",
        f"{service}={count}",
        service,
    ]


def config_command(project: ComposeProject) -> list[str]:
    return [*project.cli_args(), "config", "--format", "json"]


@contextmanager
def image_override_file(project: str, service: str, image: str) -> Iterator[str]:
    """A temporary compose file setting the service's image (JSON is valid YAML)."""
    override = {"services": {service: {"image": image}}}
    handle, path = tempfile.mkstemp(prefix=f"{OVERRIDE_FILE_PREFIX}{project}-{service}-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(override, file)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


def docker_cli_env(docker_host: str | None) -> dict[str, str]:
    """The environment the docker CLI runs in: ours, pointed at the backend's engine."""
    env = dict(os.environ)
    if docker_host is not None:
        env["DOCKER_HOST"] = docker_host
    return env


async def run_docker(args: list[str], *, env: Mapping[str, str], cwd: str | None = None) -> str:
    """Run ``docker ARGS``; its stdout, or PlatformError with the tail of what it said."""
    try:
        process = await asyncio.create_subprocess_exec(
            "docker",
            *args,
            env=dict(env),
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise PlatformError(f"cannot run the docker CLI (Compose v2 is `docker compose`): {exc}") from exc
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        said = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise PlatformError(f"`docker {' '.join(args)}` failed ({process.returncode}): {' | '.join(said)}")
    return stdout.decode(errors="replace")


async def resolve_project_name(cwd: str, env: Mapping[str, str]) -> str:
    """The project ``docker compose`` would act on here (same files, env and naming rules)."""
    try:
        rendered = await run_docker(["compose", "config", "--format", "json"], env=env, cwd=cwd)
        return str(json.loads(rendered)["name"])
    except (PlatformError, ValueError, KeyError) as exc:
        raise ServiceNotFound(
            f"no compose project given and none found in {cwd} (pass --project or run it where "
            f"`docker compose config` works): {exc}"
        ) from exc


async def service_definition(project: ComposeProject, service: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The service as the project's current files define it (after interpolation and merging)."""
    try:
        rendered = json.loads(await run_docker(config_command(project), env=env))
    except (PlatformError, ValueError) as exc:
        raise ServiceNotFound(f"cannot read compose project {project.name}'s files: {exc}") from exc
    services: dict[str, Any] = rendered.get("services") or {}
    if service not in services:
        files = ", ".join(project.config_files)
        raise ServiceNotFound(f"compose project {project.name} ({files}) defines no service {service}")
    return dict(services[service])


def _split(joined: str) -> list[str]:
    return [part for part in joined.split(",") if part]
