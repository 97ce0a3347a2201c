"""The nginx master rollover reloads, and what its process table says about a reload.

Open-source nginx reloads gracefully on SIGHUP: the master reads the configuration again, starts a
new generation of workers, waits 100 ms, then sends the previous workers QUIT. A worker that got
QUIT stops accepting, closes its idle keep-alive connections, finishes the requests it holds and
exits; while it does, its title reads ``nginx: worker process is shutting down``. So the process
table shows both moments rollover needs:

    the new configuration runs    a worker that was not there before the signal, and every worker
                                  that was is gone or shutting down (the master signals the old
                                  generation only once the new one is started)
    the old requests are done     every worker that was there before the signal has exited

Two masters: one on this host found by its pid file (``pid:/run/nginx.pid``; /proc read
directly), and one in a container (``container:NAME``; its process table through the Engine API's
``top``, its ``nginx -t`` through an exec, the reload as a signal to the container's PID 1, which
must be the master: ``nginx -g 'daemon off;'``, or under ``--init``, which passes signals on).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rollover.errors import BalancerUnavailable, InvalidOption, PlatformError, RolloverError

if TYPE_CHECKING:
    from rollover.engine import Engine

MASTER_TITLE = "nginx: master process"
WORKER_TITLE = "nginx: worker process"
SHUTTING_DOWN = "is shutting down"
# Options of the nginx command line that take a value (nginx -h); -s and -t are rollover's to give.
_VALUED = ("-c", "-e", "-g", "-p")
_FLAGS = (*_VALUED, "-q", "-s", "-t", "-T", "-v", "-V", "-h", "-?")


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    title: str


def workers_of(master: int, processes: Sequence[Process]) -> dict[int, bool]:
    """The master's workers: pid -> shutting down (cache manager and loader are no workers)."""
    return {p.pid: SHUTTING_DOWN in p.title for p in processes
            if p.ppid == master and p.title.startswith(WORKER_TITLE)}


def master_command(title: str) -> list[str]:
    """The command line the master was started with, from its title, for ``nginx -t`` to read the
    same configuration:

    'nginx: master process /usr/sbin/nginx -c /srv/nginx.conf -g daemon off;'
        -> ['/usr/sbin/nginx', '-c', '/srv/nginx.conf', '-g', 'daemon off;']

    The title joins the arguments with spaces, so a ``-g`` value runs to the next option after a
    word that ends with ';' (nginx requires that of every directive):
    '... -g daemon off; pid /x.pid; -c /y.conf' -> [..., '-g', 'daemon off; pid /x.pid;', '-c', '/y.conf']
    """
    words = title.removeprefix(MASTER_TITLE).split()
    if not words:
        raise ValueError(f"not an nginx master's title: {title!r}")
    command = [words[0]]
    index = 1
    while index < len(words):
        word = words[index]
        index += 1
        if word in ("-t", "-T", "-q") or word == "-s":
            index += word == "-s"
            continue
        command.append(word)
        if word == "-g":
            value: list[str] = []
            while index < len(words) and not (value and value[-1].endswith(";") and words[index] in _FLAGS):
                value.append(words[index])
                index += 1
            command.append(" ".join(value))
        elif word in _VALUED and index < len(words):
            command.append(words[index])
            index += 1
    return command


@dataclass(frozen=True)
class MasterSpec:
    """``pid:PIDFILE`` or ``container:NAME``."""

    kind: str
    where: str

    @classmethod
    def parse(cls, text: str) -> MasterSpec:
        kind, _, where = text.partition(":")
        if kind not in ("pid", "container") or not where:
            raise InvalidOption(f"nginx master {text!r}: expected pid:PIDFILE or container:NAME")
        return cls(kind, where)

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}"


class NginxMaster(Protocol):
    poll_interval: float

    async def check(self) -> None:
        """BalancerUnavailable unless the master runs."""

    async def workers(self) -> dict[int, bool]:
        """The master's workers now: pid -> shutting down."""
        ...

    async def test(self) -> str | None:
        """``nginx -t`` on the master's configuration: None when it passes, else what it said."""
        ...

    async def reload(self) -> None:
        """Send the master SIGHUP."""

    async def close(self) -> None: ...


class LocalMaster:
    """The master whose pid file is given, on this host."""

    poll_interval = 0.02  # reading /proc costs well under a millisecond per process

    def __init__(self, pid_file: str) -> None:
        self.pid_file = Path(pid_file)
        self._pid = 0

    def _read_pid(self) -> int:
        try:
            text = self.pid_file.read_text().strip()
        except OSError as exc:
            raise BalancerUnavailable(f"the nginx master is not running: pid file {self.pid_file}: "
                                      f"{exc.strerror or exc}") from exc
        if not text.isdigit():
            raise BalancerUnavailable(f"the nginx master is not running: pid file {self.pid_file} holds {text!r}")
        return int(text)

    def _title(self, pid: int) -> str:
        try:
            return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            return ""

    async def check(self) -> None:
        pid = self._read_pid()
        if not self._title(pid).startswith(MASTER_TITLE):
            raise BalancerUnavailable(f"the nginx master is not running: pid {pid} (from {self.pid_file})"
                                      " is no nginx master process")
        self._pid = pid

    def _children(self) -> list[Process]:
        """The master's children, from /proc/PID/task/PID/children (one read: the master has one
        thread), else by reading every process's stat (a kernel without CONFIG_PROC_CHILDREN)."""
        try:
            pids = [int(p) for p in Path(f"/proc/{self._pid}/task/{self._pid}/children").read_text().split()]
        except FileNotFoundError:
            pids = [pid for pid in self._all_pids() if self._parent(pid) == self._pid]
        except OSError:
            pids = []  # the master is gone: it has no workers
        return [Process(pid, self._pid, self._title(pid)) for pid in pids]

    @staticmethod
    def _all_pids() -> list[int]:
        return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]

    @staticmethod
    def _parent(pid: int) -> int:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # gone meanwhile
            return 0
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        return int(stat[stat.rfind(")") + 2:].split()[1])

    async def workers(self) -> dict[int, bool]:
        return workers_of(self._pid, await asyncio.to_thread(self._children))

    async def test(self) -> str | None:
        command = master_command(self._title(self._pid))
        try:
            command[0] = os.readlink(f"/proc/{self._pid}/exe")  # the running binary, even if relative
            process = await asyncio.create_subprocess_exec(
                *command, "-t", "-q", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise PlatformError(f"cannot run nginx -t: {exc}") from exc
        output, _ = await process.communicate()
        return None if process.returncode == 0 else output.decode(errors="replace").strip()

    async def reload(self) -> None:
        try:
            os.kill(self._pid, signal.SIGHUP)
        except OSError as exc:
            raise PlatformError(f"cannot signal the nginx master (pid {self._pid}): {exc.strerror}") from exc

    async def close(self) -> None:
        return None


class ContainerMaster:
    """The master running in a container, reached through the Engine API."""

    poll_interval = 0.1  # each look runs ps on the engine's host

    def __init__(self, container: str, docker_host: str | None = None) -> None:
        self.container = container
        self._docker_host = docker_host
        self._engine: Engine | None = None
        self._master = 0
        self._title = ""

    async def _connected(self) -> Engine:
        from rollover.engine import Engine

        if self._engine is None:
            self._engine = await Engine.connect(self._docker_host)
        return self._engine

    async def _processes(self) -> list[Process]:
        engine = await self._connected()
        return [Process(pid, ppid, title) for pid, ppid, title in await engine.top(self.container)]

    async def check(self) -> None:
        where = f"the nginx master in container {self.container}"
        try:
            processes = await self._processes()
        except RolloverError as exc:
            raise BalancerUnavailable(f"{where} is not running: {exc}") from exc
        masters = [p for p in processes if p.title.startswith(MASTER_TITLE)]
        if len(masters) != 1:
            raise BalancerUnavailable(f"{where} is not running: {len(masters)} nginx master processes in it")
        self._master, self._title = masters[0].pid, masters[0].title

    async def workers(self) -> dict[int, bool]:
        return workers_of(self._master, await self._processes())

    async def test(self) -> str | None:
        engine = await self._connected()
        code, output = await engine.exec_run(self.container, [*master_command(self._title), "-t", "-q"])
        return None if code == 0 else output.strip()

    async def reload(self) -> None:
        engine = await self._connected()
        await engine.signal(self.container, "SIGHUP")

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()


def make_master(spec: MasterSpec) -> NginxMaster:
    return LocalMaster(spec.where) if spec.kind == "pid" else ContainerMaster(spec.where)
