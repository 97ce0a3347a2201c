"""The one place that calls the Docker SDK: blocking calls run in threads, errors leave as ours.

Every SDK or transport exception is translated here (``raise engine_error(...) from exc``):

    cannot connect / permission denied / TLS      -> EngineUnavailable
    404 for an image                              -> ImageNotFound
    anything else the engine refuses              -> PlatformError

Calls that accept "already gone" (a 404 on a container) say so explicitly; nothing else is
swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar, cast

import requests

from rollover.dialect import (
    DEFAULT_EPHEMERAL_PORTS,
    docker_shaped_event,
    docker_shaped_inspect,
    is_podman_version,
    parse_port_range,
    podman_event_filters,
)
from rollover.errors import EngineUnavailable, ImageNotFound, PlatformError, RolloverError
from rollover.imports import withheld

# The SDK imports paramiko (0.2 s of CPU, a third of the SDK's import) whenever it is installed,
# for ssh:// engines only: it is withheld here and imported by _allow_ssh when one is used.
with withheld("paramiko"):
    import docker
    import docker.constants
    import docker.errors
    import docker.utils

T = TypeVar("T")
Inspect = dict[str, Any]

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Podman's own API (beside its Docker-compatible one, on the same socket): the healthcheck run.
_LIBPOD_API = "/v4.0.0/libpod"
_LOCAL_PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
# Engine calls in flight at once, each blocking a thread (and holding a pooled connection) until the
# engine answers. asyncio's default pool has min(32, cores + 4) threads: 6 on 2 cores. A start
# blocks its thread until the engine has the process running, which takes seconds on a busy
# engine; so with 12 replacements starting (--step half of 24) the next request's create queued
# behind them: request -> acknowledgement p95 774 ms, against 215 ms for the engine's own create
# at the same load (bench/run, docs/benchmarks.md). 64 covers the starts, stops and removals of a
# step of 30 and a request; threads are made only when that many calls wait at once. Only the
# Docker backend's engine asks for them (workshop.py); the others keep asyncio's shared pool.
ENGINE_CALLS_AT_ONCE = 64


def engine_address(docker_host: str | None) -> str:
    """The address a client will use, for error messages (DOCKER_HOST is what from_env reads)."""
    return docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def engine_error(exc: Exception, what: str, address: str) -> RolloverError:
    """Translate an SDK/transport exception raised while doing ``what`` into our hierarchy."""
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound(f"{what}: {exc.explanation}")
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 503:
        # A Swarm manager that is stopping or starting (a daemon restart) answers, but "is not a
        # swarm manager" for a while: out of reach like a daemon that does not answer at all.
        return EngineUnavailable(f"the Docker daemon at {address} cannot serve Swarm now ({what}):"
                                 f" {exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        return PlatformError(f"{what}: {exc.explanation or exc}")
    if _is_unreachable(exc):
        return EngineUnavailable(f"cannot reach the Docker daemon at {address}: {_reason(exc)}")
    if isinstance(exc, requests.exceptions.Timeout):
        return PlatformError(f"{what}: the Docker daemon at {address} did not answer in time")
    return PlatformError(f"{what}: {exc}")


def _is_unreachable(exc: Exception) -> bool:
    transport_failures = (requests.exceptions.ConnectionError, ssl.SSLError, ConnectionError, PermissionError)
    if isinstance(exc, transport_failures):
        return True
    if isinstance(exc, docker.errors.TLSParameterError):
        return True
    # from_env() probes the API version at construction and wraps transport errors this way.
    return isinstance(exc, docker.errors.DockerException) and "fetching server API version" in str(exc)


def _reason(exc: BaseException) -> str:
    """The innermost message: 'Connection refused' beats three layers of urllib3 wrappers."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        inner = exc.__cause__ or exc.__context__
        assert inner is not None
        exc = inner
    return str(exc) or type(exc).__name__


def _ephemeral_ports(address: str) -> tuple[int, int]:
    """The range a local engine picks random host ports from (this host's); Linux's default for a
    remote one, whose host cannot be read from here."""
    if not address.startswith("unix://"):
        return DEFAULT_EPHEMERAL_PORTS
    try:
        with open(_LOCAL_PORT_RANGE) as text:
            return parse_port_range(text.read())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_PORTS


# ssh:// addresses that answered once in this process: the check costs a handshake.
_SSH_ANSWERED: set[str] = set()
_SSH_CHECK_TIMEOUT_S = 30.0


def ssh_command(address: str) -> list[str]:
    """'ssh://deploy@host:2222' -> ssh -o BatchMode=yes ... -l deploy -p 2222 -- host: never a prompt,
    so a refused key or an unknown host key is an error, not a question nobody answers."""
    parsed = urllib.parse.urlsplit(address)
    if not parsed.hostname:
        raise EngineUnavailable(f"{address}: no host in the ssh:// address")
    args = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if parsed.username:
        args += ["-l", parsed.username]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    return [*args, "--", parsed.hostname]


async def _check_ssh(address: str) -> None:
    """Reach the remote docker through ssh once, its errors captured: the SDK's ssh would print
    them to our stderr and then fail with a transport error that names no cause."""
    if address in _SSH_ANSWERED:
        return
    args = [*ssh_command(address), "docker", "version", "--format", "{{.Server.APIVersion}}"]
    try:
        process = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise EngineUnavailable(f"cannot reach the Docker daemon at {address}: no ssh client ({exc})") from exc
    try:
        out, err = await asyncio.wait_for(process.communicate(), _SSH_CHECK_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise EngineUnavailable(f"cannot reach the Docker daemon at {address}: ssh did not answer in"
                                f" {_SSH_CHECK_TIMEOUT_S:g} s") from None
    if process.returncode != 0:
        said = [line.strip() for line in (err or out).decode(errors="replace").splitlines() if line.strip()]
        raise EngineUnavailable(f"cannot reach the Docker daemon at {address}: ssh: "
                                f"{said[-1] if said else f'exit {process.returncode}'}")
    _SSH_ANSWERED.add(address)


class _EventStream(Iterator[dict[str, Any]]):
    """The SDK's event stream, closeable from another thread over ssh:// too. The SDK's own close()
    looks for a socket it does not find behind its ssh shell-out (docker-py 7.1, 7.2: an
    UnboundLocalError); there the ssh process is the connection, so ending it ends the stream.
    From Podman, each event is read as Docker would send it (dialect.py)."""

    def __init__(self, stream: Any, podman: bool = False) -> None:
        self._stream = stream
        self._podman = podman

    def __next__(self) -> dict[str, Any]:
        while True:
            raw = cast(dict[str, Any], next(self._stream))
            event = docker_shaped_event(raw) if self._podman else raw
            if event is not None:
                return event

    def close(self) -> None:
        raw = getattr(getattr(self._stream, "_response", None), "raw", None)
        channel = getattr(getattr(getattr(raw, "_fp", None), "fp", None), "channel", None)
        if channel is not None and hasattr(channel, "proc"):  # docker.transport.sshconn.SSHSocket
            channel.close()
            return
        self._stream.close()


def _allow_ssh() -> None:
    """What the SDK would have set up at import with paramiko at hand: its SSH adapter, found by
    the client under this name when it is given an ssh:// address."""
    import docker.api.client
    import docker.transport
    from docker.transport.sshconn import SSHHTTPAdapter

    docker.transport.SSHHTTPAdapter = SSHHTTPAdapter
    docker.api.client.SSHHTTPAdapter = SSHHTTPAdapter


class Engine:
    """A connected Docker client whose async methods never raise foreign exceptions.

    The SDK client stays private: callers ask in the domain's words (inspect a container, list a
    service's tasks, take a Swarm config), so no SDK call or exception escapes this module."""

    def __init__(self, client: Any, address: str, clock_offset_s: float, *, podman: bool = False,
                 ephemeral_ports: tuple[int, int] = DEFAULT_EPHEMERAL_PORTS, own_threads: int | None = None) -> None:
        """``own_threads``: run the SDK's calls on a pool of this many threads of the engine's own
        (None: asyncio's shared pool)."""
        self._client = client
        self._api: Any = client.api
        self.address = address
        # engine wall time minus ours: event subscriptions ask "since now" in the engine's time.
        self._clock_offset_s = clock_offset_s
        # Podman behind the Docker-compatible API: what it says is read as Docker's (dialect.py).
        self.is_podman = podman
        self._ephemeral_ports = ephemeral_ports
        self._threads = (ThreadPoolExecutor(own_threads, thread_name_prefix="rollover-engine")
                         if own_threads is not None else None)

    @classmethod
    async def connect(cls, docker_host: str | None, own_threads: int | None = None) -> Engine:
        address = engine_address(docker_host)
        if address.startswith("ssh://"):
            await _check_ssh(address)
        try:
            return await asyncio.to_thread(cls._connect_blocking, docker_host, address, own_threads)
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            raise EngineUnavailable(f"cannot reach the Docker daemon at {address}: {_reason(exc)}") from exc

    @classmethod
    def _connect_blocking(cls, docker_host: str | None, address: str, own_threads: int | None) -> Engine:
        environment = dict(os.environ)
        if docker_host is not None:
            environment["DOCKER_HOST"] = docker_host  # keeps DOCKER_TLS_VERIFY/CERT_PATH in play
        # ssh://: the system's ssh, as the docker CLI does (its config, agent and known_hosts apply).
        if address.startswith("ssh://"):
            _allow_ssh()
        client = docker.from_env(environment=environment, use_ssh_client=address.startswith("ssh://"),
                                 max_pool_size=own_threads or docker.constants.DEFAULT_MAX_POOL_SIZE)
        system_time = datetime.fromisoformat(client.info()["SystemTime"]).timestamp()
        # Measured against the moment the answer arrived, the offset can only come out too small,
        # so "since now" may replay a few milliseconds but never skips any.
        offset = system_time - time.time()
        podman = is_podman_version(client.version())
        return cls(client, address, clock_offset_s=offset, podman=podman, ephemeral_ports=_ephemeral_ports(address),
                   own_threads=own_threads)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            call = functools.partial(fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            raise engine_error(exc, what, self.address) from exc

    def now_on_engine(self) -> float:
        return time.time() + self._clock_offset_s

    async def inspect_container(self, container_id: str) -> Inspect | None:
        """The container's inspect data, or None when it does not exist (any more)."""
        return await self._call(f"inspect container {container_id[:12]}", self._inspect_or_none, container_id)

    def _inspect_or_none(self, container_id: str) -> Inspect | None:
        try:
            inspect = cast(Inspect, self._api.inspect_container(container_id))
        except docker.errors.NotFound:
            return None
        return docker_shaped_inspect(inspect, self._ephemeral_ports) if self.is_podman else inspect

    async def run_healthcheck(self, container_id: str) -> str | None:
        """Podman only: run the container's healthcheck now (libpod's ``healthcheck run``); the
        health status it leaves ("starting", "healthy", "unhealthy"), or None when the container
        is gone or not running (any more)."""
        return await self._call(f"run the healthcheck of container {container_id[:12]}", self._healthcheck_blocking,
                                container_id)

    def _healthcheck_blocking(self, container_id: str) -> str | None:
        response = self._api._get(f"{self._api.base_url}{_LIBPOD_API}/containers/{container_id}/healthcheck")
        if response.status_code in (404, 409):  # gone, or stopped: nothing to check
            return None
        return str(self._api._result(response, json=True).get("Status") or "")

    async def container_log_tail(self, container_id: str, lines: int) -> str | None:
        """The last ``lines`` lines of the container's log (stdout and stderr interleaved, as the
        engine stored them), or None when the container does not exist (any more)."""
        return await self._call(f"read the log of container {container_id[:12]}", self._log_tail_or_none,
                                container_id, lines)

    def _log_tail_or_none(self, container_id: str, lines: int) -> str | None:
        try:
            raw = self._api.logs(container_id, stdout=True, stderr=True, tail=lines, timestamps=False)
        except docker.errors.NotFound:
            return None
        return bytes(raw).decode("utf-8", errors="replace")

    async def inspect_image(self, ref: str) -> Inspect | None:
        return await self._call(f"inspect image {ref}", self._inspect_image_or_none, ref)

    def _inspect_image_or_none(self, ref: str) -> Inspect | None:
        try:
            return cast(Inspect, self._api.inspect_image(ref))
        except docker.errors.NotFound:  # ImageNotFound is a NotFound
            return None

    async def list_container_ids(self, labels: dict[str, str], status: str | None = None) -> list[str]:
        """Ids of every container (running or not, or only in ``status``) carrying all ``labels``."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        if status is not None:
            filters["status"] = [status]
        found = await self._call("list containers", self._api.containers, all=True, filters=filters)
        return [str(summary["Id"]) for summary in found]

    async def stop(self, container_id: str, timeout_s: int) -> None:
        """Stop within ``timeout_s`` (then SIGKILL); a container that is already gone is fine."""
        await self._call(f"stop container {container_id[:12]}", self._stop_if_present, container_id, timeout_s)

    def _stop_if_present(self, container_id: str, timeout_s: int) -> None:
        with contextlib.suppress(docker.errors.NotFound):  # gone already: what stopping wanted
            self._api.stop(container_id, timeout=timeout_s)

    async def remove(self, container_id: str, *, force: bool, volumes: bool) -> None:
        """Remove a container; a 404 means someone (or autoremove) got there first, which is fine."""
        what = f"remove container {container_id[:12]}"
        await self._call(what, self._remove_if_present, container_id, force, volumes)

    def _remove_if_present(self, container_id: str, force: bool, volumes: bool) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._api.remove_container(container_id, force=force, v=volumes)

    async def create_container(self, body: dict[str, Any], name: str) -> str | None:
        """Create (not start) a container; its id, or None when ``name`` is already taken."""
        return await self._call(f"create container {name}", self._create_unless_taken, body, name)

    def _create_unless_taken(self, body: dict[str, Any], name: str) -> str | None:
        try:
            return str(self._api.create_container_from_config(body, name=name)["Id"])
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return None
            raise

    async def wait_removed(self, name: str, timeout_s: float) -> bool:
        """Block until the container ``name`` is removed (True; also when there is none) or
        ``timeout_s`` passed (False): the engine's own wait, ``condition=removed``, no polling."""
        return await self._call(f"wait for container {name} to go", self._wait_removed_blocking, name, timeout_s)

    def _wait_removed_blocking(self, name: str, timeout_s: float) -> bool:
        try:
            self._api.wait(name, timeout=max(timeout_s, 0.001), condition="removed")
        except docker.errors.NotFound:
            return True
        except requests.exceptions.ConnectionError as exc:  # the SDK's read timeout arrives as this
            if "timed out" in str(exc).lower():
                return False
            raise
        except requests.exceptions.Timeout:
            return False
        return True

    async def connect_network(self, container_id: str, network: str, endpoint: dict[str, Any]) -> None:
        what = f"connect container {container_id[:12]} to network {network}"
        await self._call(what, self._api.connect_container_to_network, container_id, network, **endpoint)

    async def start(self, container_id: str) -> None:
        await self._call(f"start container {container_id[:12]}", self._api.start, container_id)

    async def rename(self, container_id: str, name: str) -> None:
        await self._call(f"rename container {container_id[:12]} to {name}", self._api.rename, container_id, name)

    async def put_archive(self, container_id: str, directory: str, archive: bytes, what: str) -> None:
        """Unpack a tar ``archive`` into ``directory`` of the container (``docker cp``); ``what``
        says why, for the error (the directory must exist)."""
        await self._call(what, self._api.put_archive, container_id, directory, archive)

    async def pull(self, ref: str) -> None:
        """Pull ``ref``; errors the engine reports inside the progress stream count as failures."""
        await self._call(f"pull {ref}", self._pull_blocking, ref)

    def _pull_blocking(self, ref: str) -> None:
        repository, tag = docker.utils.parse_repository_tag(ref)
        for progress in self._api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if progress.get("error"):
                raise PlatformError(str(progress["error"]))

    def open_events(self, filters: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
        """Subscribe to the event stream (blocking until the engine answered); closeable."""
        since = f"{self.now_on_engine():.9f}"
        filters = podman_event_filters(filters) if self.is_podman else filters
        try:
            return _EventStream(self._api.events(since=since, filters=filters, decode=True), self.is_podman)
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            raise engine_error(exc, "subscribe to events", self.address) from exc

    async def past_events(self, since: float, until: float, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        """The events the engine still holds between two engine times (it keeps the last few hundred)."""
        def read() -> list[dict[str, Any]]:
            asked = podman_event_filters(filters) if self.is_podman else filters
            stream = self._api.events(since=f"{since:.9f}", until=f"{until:.9f}", filters=asked, decode=True)
            return list(_EventStream(stream, self.is_podman))

        return await self._call("read past events", read)

    # -- Swarm (on a manager) ------------------------------------------------------------------------

    async def swarm_state(self) -> Inspect:
        """The daemon's Swarm section of ``docker info`` (empty when it is in no swarm)."""
        info = await self._call("read the Swarm state", self._api.info)
        return cast(Inspect, info.get("Swarm") or {})

    async def list_nodes(self) -> list[Inspect]:
        return cast(list[Inspect], await self._call("list Swarm nodes", self._api.nodes))

    def node_state(self, node_id: str, hostname: str) -> str:
        """The node's state as the manager reports it ("ready", "down", ...). Blocking, like
        ``open_events``: it is asked while subscribing, when a node's daemon cannot be reached."""
        try:
            found = self._api.inspect_node(node_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            raise engine_error(exc, f"inspect Swarm node {hostname}", self.address) from exc
        return str(((found.get("Status")) or {}).get("State", ""))

    async def inspect_service(self, name: str) -> Inspect:
        """The service's document; a service that does not exist is a PlatformError (mid-rollout)."""
        return cast(Inspect, await self._call("inspect service", self._api.inspect_service, name))

    async def find_service(self, name: str) -> Inspect | None:
        """The document of the service named (or with the id) ``name``, or None when there is none."""
        return await self._call(f"inspect Swarm service {name}", self._service_or_none, name)

    async def manages_service(self, name: str) -> bool:
        """Whether this daemon is a Swarm manager with a service ``name``: no swarm is no service."""
        return await self._call(f"look for Swarm service {name}", self._managed_service_or_none, name) is not None

    def _service_or_none(self, name: str) -> Inspect | None:
        try:
            found = cast(Inspect, self._api.inspect_service(name))
        except docker.errors.NotFound:
            return None
        # The API also answers for an id prefix: only the exact name (or id) is this service.
        return found if name in (found.get("Spec", {}).get("Name"), found.get("ID")) else None

    def _managed_service_or_none(self, name: str) -> Inspect | None:
        try:
            return self._service_or_none(name)
        except docker.errors.APIError as exc:
            if exc.status_code == 503:  # not a swarm manager (or no swarm at all)
                return None
            raise

    async def update_service(self, document: Inspect, spec: Inspect) -> None:
        """Replace the spec of the service ``document`` describes, at the version it was read at
        (a stale version fails "out of sequence": someone else updated it meanwhile)."""
        what = f"update Swarm service {spec['Name']}"
        await self._call(what, self._update_service_blocking, document["ID"], document["Version"]["Index"], spec)

    def _update_service_blocking(self, service_id: str, version: int, spec: Inspect) -> None:
        template = dict(spec["TaskTemplate"])
        if spec.get("Networks") and not template.get("Networks"):
            template["Networks"] = spec["Networks"]  # the old top-level place; the SDK would drop it
        self._api.update_service(
            service_id, version, task_template=template, name=spec["Name"], labels=spec.get("Labels") or {},
            mode=spec["Mode"], update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
        )

    async def list_tasks(self, service_id: str) -> list[Inspect]:
        """The manager's task list for the service (every state Swarm still keeps)."""
        found = await self._call("list the service's tasks", self._api.tasks, filters={"service": service_id})
        return cast(list[Inspect], found)

    async def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> str | None:
        """Create a Swarm config; its id, or None when one of that name exists (409: an atomic
        test-and-set on the managers' replicated store)."""
        return await self._call(f"create Swarm config {name}", self._create_config_unless_taken, name, data, labels)

    def _create_config_unless_taken(self, name: str, data: bytes, labels: dict[str, str]) -> str | None:
        try:
            return str(self._api.create_config(name, data, labels=labels)["ID"])
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return None
            raise

    async def inspect_config(self, name: str) -> Inspect | None:
        return await self._call(f"inspect Swarm config {name}", self._config_or_none, name)

    def _config_or_none(self, name: str) -> Inspect | None:
        try:
            return dict(self._api.inspect_config(name))
        except docker.errors.NotFound:
            return None

    async def remove_config(self, config_id: str, what: str) -> None:
        """Remove a Swarm config by id (never a newer one of the same name); one already gone is fine."""
        await self._call(what, self._remove_config_if_present, config_id)

    def _remove_config_if_present(self, config_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._api.remove_config(config_id)

    async def top(self, container: str) -> list[tuple[int, int, str]]:
        """The container's processes as (pid, ppid, command line), pids as the engine's host sees them."""
        listing = await self._call(f"list the processes of container {container}", self._api.top, container)
        titles = [str(t) for t in listing.get("Titles") or []]
        try:
            pid, ppid, command = titles.index("PID"), titles.index("PPID"), titles.index("CMD")
        except ValueError as exc:
            raise PlatformError(f"the processes of container {container}: columns {titles}") from exc
        return [(int(row[pid]), int(row[ppid]), str(row[command])) for row in listing.get("Processes") or []]

    async def exec_run(self, container: str, command: list[str]) -> tuple[int, str]:
        """Run ``command`` in the running container; its exit code and its output (both streams)."""
        return await self._call(f"run {command[0]} in container {container}", self._exec_blocking, container, command)

    def _exec_blocking(self, container: str, command: list[str]) -> tuple[int, str]:
        exec_id = self._api.exec_create(container, command, stdout=True, stderr=True)["Id"]
        output = self._api.exec_start(exec_id)
        code = self._api.exec_inspect(exec_id).get("ExitCode")
        return int(code if code is not None else -1), bytes(output).decode(errors="replace")

    async def signal(self, container: str, signal_name: str) -> None:
        """Send a signal to the container's PID 1."""
        await self._call(f"send {signal_name} to container {container}", self._api.kill, container, signal_name)

    async def close(self) -> None:
        # The pool stays usable, as the client does after close() (it reconnects): a late call
        # (a background look finishing) must not meet a shut-down pool's RuntimeError. Its idle
        # threads end when the Engine is collected, or at exit.
        await asyncio.get_running_loop().run_in_executor(self._threads, self._client.close)
