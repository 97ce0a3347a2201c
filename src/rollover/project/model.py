"""The project model, from Compose itself: ``docker compose [ARGS] config`` resolves the files,
overrides, ``.env`` and ``--env-file``, interpolation, profiles and the ``COMPOSE_*`` variables
exactly as ``docker compose up`` would, and ``config --hash`` gives the config hash Compose puts
on the containers it makes. Nothing here interprets a compose file itself.

YAML, not JSON: Compose's JSON rendering drops a service's ``x-`` extensions (``x-rollover``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from rollover.backends.docker.compose import ComposeProject, run_docker
from rollover.core.project import DefinedService
from rollover.errors import InvalidOption, PlatformError


@dataclass(frozen=True)
class ProjectArgs:
    """Compose's own global options, passed through as given (Compose reads COMPOSE_* itself)."""

    files: tuple[str, ...] = ()
    project_name: str | None = None
    project_directory: str | None = None
    env_files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()

    def cli_args(self, *, profiles: tuple[str, ...] | None = None) -> list[str]:
        args = ["compose"]
        for path in self.files:
            args += ["-f", path]
        if self.project_name:
            args += ["-p", self.project_name]
        if self.project_directory:
            args += ["--project-directory", self.project_directory]
        for path in self.env_files:
            args += ["--env-file", path]
        for profile in self.profiles if profiles is None else profiles:
            args += ["--profile", profile]
        return args


@dataclass(frozen=True)
class LoadedProject:
    name: str
    services: dict[str, DefinedService]
    known: frozenset[str]  # every service under any profile
    args: ProjectArgs
    compose: ComposeProject  # the files as Compose resolved them: replacements are made from these

    def image_refs(self) -> dict[str, str]:
        return {name: service.image for name, service in self.services.items() if service.image}


async def load_project(args: ProjectArgs, env: Mapping[str, str]) -> LoadedProject:
    """The model Compose resolves; a file Compose refuses is bad input (exit 2, nothing touched)."""
    texts = await asyncio.gather(  # three reads of the same files: at once
        _compose(args, ["config", "--format", "yaml"], env),
        _compose(args, ["config", "--format", "yaml"], env, profiles=("*",)),
        _compose(args, ["config", "--hash", "*"], env),
    )
    rendered, everything = _parse(texts[0], "config"), _parse(texts[1], "config")
    # Profiles asked for by flag, else by COMPOSE_PROFILES (Compose's own precedence).
    asked = args.profiles or tuple(name.strip() for name in env.get("COMPOSE_PROFILES", "").split(",") if name.strip())
    _check_profiles(asked, everything)
    hashes = dict(line.split(" ", 1) for line in texts[2].split("\n") if " " in line)
    services = {name: defined_service(name, body or {}, hashes.get(name, "").strip())
                for name, body in (rendered.get("services") or {}).items()}
    name = str(rendered.get("name") or "")
    # The same global options Compose was given (relative paths stay relative to this directory,
    # COMPOSE_FILE and .env are read again by Compose): replacements are made from exactly this.
    compose = ComposeProject(name=name, config_files=args.files, working_dir=args.project_directory or "",
                             env_files=args.env_files)
    return LoadedProject(name, services, frozenset((everything.get("services") or {}).keys()), args, compose)


def defined_service(name: str, body: Mapping[str, Any], config_hash: str) -> DefinedService:
    deploy = body.get("deploy") or {}
    depends = body.get("depends_on") or {}
    ports = tuple(
        f"{port['host_ip']}:{port['published']}" if port.get("host_ip") else str(port["published"])
        for port in body.get("ports") or ()
        if isinstance(port, dict) and port.get("published")
    )
    volumes = tuple(str(mount["source"]) for mount in body.get("volumes") or ()
                    if isinstance(mount, dict) and mount.get("type") == "volume" and mount.get("source"))
    replicas = deploy.get("replicas", body.get("scale", 1))
    return DefinedService(
        name=name,
        config_hash=config_hash,
        replicas=int(1 if replicas is None else replicas),
        depends_on=tuple(sorted(depends)),
        image=body.get("image"),
        has_build="build" in body,
        container_name=body.get("container_name"),
        fixed_host_ports=ports,
        named_volumes=volumes,
        update_config=deploy.get("update_config") or {},
        rollback_config=deploy.get("rollback_config") or {},
        x_rollover=_extension(name, body.get("x-rollover")),
    )


def _extension(name: str, value: object) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidOption(f"service {name}: x-rollover must be a mapping of settings, not {value!r}")
    return value


def _check_profiles(asked: tuple[str, ...], everything: Mapping[str, Any]) -> None:
    known = {profile for body in (everything.get("services") or {}).values() for profile in body.get("profiles") or ()}
    for profile in asked:
        if profile != "*" and profile not in known:
            names = ", ".join(sorted(known)) or "none"
            raise InvalidOption(f"no service has profile {profile!r} (profiles in the project: {names})")


async def _compose(args: ProjectArgs, command: list[str], env: Mapping[str, str], *,
                   profiles: tuple[str, ...] | None = None) -> str:
    try:
        return await run_docker([*args.cli_args(profiles=profiles), *command], env=env)
    except PlatformError as exc:
        raise InvalidOption(f"compose cannot load the project: {_compose_said(str(exc))}") from None


def _compose_said(message: str) -> str:
    """run_docker's message ends with what Compose printed; that is the part naming the problem."""
    _, _, said = message.partition("): ")
    return said or message


def _parse(text: str, what: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlatformError(f"docker compose {what} printed something that is not YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise PlatformError(f"docker compose {what} printed no project")
    return loaded
