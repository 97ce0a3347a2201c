"""nginx as the balancer in front of a service: rollover owns an upstream file and reloads nginx.

Open-source nginx has no runtime API for upstreams; it has a graceful reload (see nginx_master.py).
rollover owns UPSTREAM_FILE, which the operator's configuration includes, holding
``upstream UPSTREAM { ... }`` with one ``server`` per replica. Each step rewrites the block
(a temporary file beside it, then a rename: nginx never reads half a file), checks the whole
configuration with ``nginx -t``, and reloads:

    admit   the server list with the replacement; it counts as admitted once the new generation of
            workers runs (the old one was told to quit), not after a fixed sleep
    drain   the list without the outgoing replica; then wait (bounded by the drain timeout) until
            every worker of the generations before the reload has exited: they hold the requests
            it was still serving. ``sessions_left`` is the count of those workers still running.
            A replica the file does not name may still get requests from workers that run an
            older file (a rollout killed between writing and reloading): its drain reloads once
            if nothing has yet, and waits for the workers from before rollover's first reload
    forget  the list without it, if it is still there (a discarded replacement)

Reloads are batched: changes asked for while a reload is under way go out together in the next
one, so one reload may admit one replica and drain another. A change nginx refuses (``nginx -t``,
or no new generation within ``reload_timeout``) puts the file back as it was, leaves nginx on its
previous configuration, and fails the replicas of that change alone (a batch that fails is tried
again one change at a time).

Servers that point at none of the replicas at attach are kept as they are (another application's,
as with HAProxy), except those rollover marked as its own (``# added by rollover``): a rollout
killed after admitting a replacement that the takeover then removed left them, and they go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rollover.balancers.base import DrainResult
from rollover.balancers.endpoints import AddressMode, UnreachableReplica, endpoint_for, match_servers
from rollover.balancers.nginx_conf import (
    Server,
    UpstreamFile,
    UpstreamFileError,
    checked_upstream_name,
    parse_upstream_file,
)
from rollover.balancers.nginx_master import MasterSpec, NginxMaster, make_master
from rollover.clock import Clock, loop_clock
from rollover.core.model import Replica
from rollover.errors import BalancerUnavailable, InvalidOption, PlatformError

log = logging.getLogger(__name__)

DEFAULT_MASTER = "pid:/run/nginx.pid"

# A change of the server list: replica id -> server, to another.
Change = Callable[[dict[str | None, list[Server]]], object]


def _reload_only(servers: dict[str | None, list[Server]]) -> None:
    """No change, but a reload all the same: nginx then runs what the file says."""


@dataclass(frozen=True)
class Reloaded:
    """What a reload left: the workers of the generations before it (empty when nothing changed)."""

    previous_workers: frozenset[int]


class NginxBalancer:
    def __init__(
        self,
        upstream_file: str,
        upstream: str,
        *,
        master: str = DEFAULT_MASTER,
        address_mode: str = "auto",
        network: str | None = None,
        port: int | None = None,
        clock: Clock | None = None,
        reload_timeout: float = 30.0,
        nginx_master: NginxMaster | None = None,
    ) -> None:
        try:
            self._upstream = checked_upstream_name(upstream)
            self._mode = AddressMode.parse(address_mode, network)
        except ValueError as exc:
            raise InvalidOption(f"nginx balancer: {exc}") from exc
        self._path = Path(upstream_file)
        self._master = nginx_master or make_master(MasterSpec.parse(master))
        self._container_port = port
        self._published_host: str | None = None
        self._clock = clock
        self._reload_timeout = reload_timeout
        self._file: UpstreamFile | None = None
        # Servers by the replica they carry; None: servers carrying none (kept as they are).
        self._servers: dict[str | None, list[Server]] = {}
        self._pending: list[tuple[Change, asyncio.Future[Reloaded]]] = []
        self._reload_lock = asyncio.Lock()
        # The workers that ran before rollover's first reload: they may run an older file than
        # the one attach read (see drain). None until that reload.
        self._before_first_reload: frozenset[int] | None = None

    # --- attach ---------------------------------------------------------------------------------

    async def attach(self, replicas: Sequence[Replica]) -> None:
        where = f"nginx upstream {self._upstream} in {self._path}"
        try:
            text = self._path.read_text()
            parsed = parse_upstream_file(text, self._upstream)
        except OSError as exc:
            raise BalancerUnavailable(f"{where}: {exc.strerror or exc}") from exc
        except (UpstreamFileError, UnicodeDecodeError) as exc:
            raise BalancerUnavailable(f"{where}: {exc}") from exc
        unwritable = self._unwritable()
        if unwritable is not None:
            raise BalancerUnavailable(f"{where}: {unwritable} (rollover replaces the file by a rename)")
        addressed = [(str(i), *hp) for i, s in enumerate(parsed.servers) if (hp := s.host_port) is not None]
        try:
            found = match_servers(replicas, addressed, self._mode, self._container_port)
        except UnreachableReplica as exc:
            raise InvalidOption(f"nginx balancer: {exc}") from exc
        if replicas and not found.servers:
            listed = ", ".join(s.address for s in parsed.servers) or "none"
            names = ", ".join(r.name for r in replicas)
            raise BalancerUnavailable(f"no server of {where} points at any of {names} (servers: {listed});"
                                      " check the address mode")
        await self._master.check()
        carried = {int(index): replica_id for replica_id, index in found.servers.items()}
        servers: dict[str | None, list[Server]] = {None: []}
        for index, server in enumerate(parsed.servers):
            servers.setdefault(carried.get(index), []).append(server)
        # Admitted by a rollout that was killed, for a replacement that no longer runs: dropped at
        # the next reload, so nginx's servers come back to the running replicas.
        dead = [s for s in servers[None] if s.added]
        servers[None] = [s for s in servers[None] if not s.added]
        if dead:
            log.warning("%s: dropping servers an earlier rollout added, for replicas that no longer run: %s",
                        where, ", ".join(s.address for s in dead))
        if servers[None]:
            log.warning("servers of %s carry none of the replicas: %s", where,
                        ", ".join(s.address for s in servers[None]))
        for replica in replicas:
            if replica.id not in found.servers:
                log.warning("no server of %s points at %s", where, replica.name)
        self._file = parsed
        self._servers = servers
        self._container_port = found.container_port
        self._published_host = found.published_host
        await self._check_as_rollover_writes_it(text)

    def _unwritable(self) -> str | None:
        """Why rollover could not replace the file, else None: a temporary file is really made
        beside it and removed (a permission bit says nothing to root, while a read-only mount or
        an immutable directory stops root too), and the kernel is asked about the file itself (an
        immutable or append-only file cannot be renamed over, even by root)."""
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
        except OSError as exc:
            return f"cannot create a file in {self._path.parent}: {exc.strerror or exc}"
        os.close(descriptor)
        os.unlink(temporary)
        if not os.access(self._path, os.W_OK):
            return f"{self._path} is not writable"
        return None

    async def _check_as_rollover_writes_it(self, original: str) -> None:
        """``nginx -t`` on the file as rollover will write it; the file is put back either way."""
        assert self._file is not None
        rewritten = self._rendered(self._servers)
        if rewritten != original:
            self._write(rewritten)
        try:
            refused = await self._master.test()
        finally:
            if rewritten != original:
                self._write(original)
        if refused is not None:
            raise BalancerUnavailable(f"nginx -t refuses the configuration with {self._path} as rollover"
                                      f" writes it: {refused}")

    # --- the protocol ---------------------------------------------------------------------------

    async def admit(self, replica: Replica) -> None:
        try:
            endpoint = endpoint_for(replica, self._mode, self._container_port, self._published_host)
        except UnreachableReplica as exc:
            raise PlatformError(f"nginx balancer cannot admit {replica.name}: {exc}") from exc

        def put(servers: dict[str | None, list[Server]]) -> None:
            kept = servers.get(replica.id) or [Server("", added=True)]
            servers[replica.id] = [Server(str(endpoint), kept[0].parameters, added=kept[0].added)]

        await self._submit(put, f"admit {replica.name}")

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        clock = self._clock or loop_clock()
        started = clock()
        if not self._servers.get(replica.id):
            # No server of the file carries it, but nginx may not run the file yet: a rollout
            # killed between writing it and reloading left the file ahead of nginx, whose
            # workers still send to the replica. One reload makes nginx run the file; then the
            # workers from before it are waited for, as for any drain.
            if self._before_first_reload is None:
                await self._submit(_reload_only, f"drain {replica.name}")
            assert self._before_first_reload is not None
            left = await self._wait_for_exit(self._before_first_reload, deadline=started + timeout, clock=clock)
            return DrainResult(sessions_left=left, waited_s=clock() - started)
        reloaded = await self._submit(lambda servers: servers.pop(replica.id, None), f"drain {replica.name}")
        left = await self._wait_for_exit(reloaded.previous_workers, deadline=started + timeout, clock=clock)
        return DrainResult(sessions_left=left, waited_s=clock() - started)

    async def forget(self, replica: Replica) -> None:
        if self._servers.get(replica.id):
            await self._submit(lambda servers: servers.pop(replica.id, None), f"forget {replica.name}")

    async def close(self) -> None:
        await self._master.close()

    # --- reloads --------------------------------------------------------------------------------

    async def _submit(self, change: Change, what: str) -> Reloaded:
        """Apply ``change`` in the next reload, with whatever else was asked for meanwhile."""
        done: asyncio.Future[Reloaded] = asyncio.get_running_loop().create_future()
        self._pending.append((change, done))
        await asyncio.sleep(0)  # changes asked for in the same moment (one decision's calls) go together
        async with self._reload_lock:
            if not done.done():
                batch, self._pending = self._pending, []
                await self._reload_batch(batch)
        try:
            return await done
        except PlatformError as exc:
            raise PlatformError(f"nginx balancer could not {what}: {exc}") from exc

    async def _reload_batch(self, batch: list[tuple[Change, asyncio.Future[Reloaded]]]) -> None:
        try:
            outcome = await self._reload([change for change, _ in batch])
        except asyncio.CancelledError:
            for _, done in batch:  # the others of the batch wait for it: they must not wait forever
                if not done.done():
                    done.set_exception(PlatformError("the reload was interrupted"))
            raise
        except PlatformError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for one in batch:  # which change nginx refuses: each alone
                await self._reload_batch([one])
            return
        for _, done in batch:
            done.set_result(outcome)

    async def _reload(self, changes: Sequence[Change]) -> Reloaded:
        assert self._file is not None, "attach first"
        wanted = {key: list(servers) for key, servers in self._servers.items()}
        for change in changes:
            change(wanted)
        if self._rendered(wanted) == self._rendered(self._servers) and _reload_only not in changes:
            return Reloaded(frozenset())
        original = self._path.read_text()
        self._write(self._rendered(wanted))
        signalled = False
        try:
            refused = await self._master.test()
            if refused is not None:
                raise PlatformError(f"nginx -t refuses the new server list: {refused}")
            previous = frozenset(await self._master.workers())
            await self._master.reload()
            signalled = True
            await self._wait_for_new_generation(previous)
        except asyncio.CancelledError:
            if signalled:  # nginx reads the new file whether or not we see it do so: keep it
                self._servers = wanted
            else:
                self._write(original)
            raise
        except BaseException:
            self._write(original)  # nginx stays on what the file said before (a failed reload keeps it)
            raise
        self._servers = wanted
        if self._before_first_reload is None:
            self._before_first_reload = previous
        return Reloaded(previous)

    async def _wait_for_new_generation(self, previous: frozenset[int]) -> None:
        """Until a worker not in ``previous`` runs and every one of ``previous`` is gone or shutting
        down: nginx runs the new configuration. Polled: the process table has no events."""
        clock = self._clock or loop_clock()
        deadline = clock() + self._reload_timeout
        while True:
            workers = await self._master.workers()
            started = set(workers) - previous
            if started and all(workers.get(pid, True) for pid in previous):
                return
            if clock() >= deadline:
                raise PlatformError(f"nginx started no new workers within {self._reload_timeout:g}s of the"
                                    " reload signal (its error log says why); it keeps its previous configuration")
            await asyncio.sleep(self._master.poll_interval)

    async def _wait_for_exit(self, previous: frozenset[int], deadline: float, clock: Clock) -> int:
        """Workers of ``previous`` still running when they were all gone or the deadline passed."""
        while True:
            left = len(previous & set(await self._master.workers()))
            remaining = deadline - clock()
            if left == 0 or remaining <= 0:
                return left
            await asyncio.sleep(min(self._master.poll_interval, remaining))

    # --- the file -------------------------------------------------------------------------------

    def _rendered(self, servers: dict[str | None, list[Server]]) -> str:
        assert self._file is not None
        return self._file.with_servers([s for group in servers.values() for s in group]).render()

    def _write(self, text: str) -> None:
        """Replace the file in one rename, keeping its mode and owner."""
        try:
            status = self._path.stat()
            descriptor, temporary = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
            try:
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temporary, status.st_mode & 0o7777)
                if os.geteuid() == 0:
                    os.chown(temporary, status.st_uid, status.st_gid)
                os.replace(temporary, self._path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise PlatformError(f"cannot write {self._path}: {exc.strerror or exc}") from exc
