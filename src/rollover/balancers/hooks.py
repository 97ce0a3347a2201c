"""User commands run around a replica's traffic: ``post-start`` once it is up, ``pre-stop`` before it goes.

``CommandHooks`` speaks the balancer protocol, so it chains with a real balancer (see
``balancers.chain``): ``admit`` runs the post-start command, ``drain`` the pre-stop command.

A command is an argument list run without a shell: ``curl -fsS http://lb/disable`` runs curl,
and a user who wants a shell writes ``sh -c '...'``. What the command needs to know about the
replica travels in the environment, never spliced into the arguments, so a replica named
``web;rm -rf /`` stays a harmless string:

    ROLLOVER_HOOK              post-start | pre-stop
    ROLLOVER_REPLICA_NAME      the container's name
    ROLLOVER_REPLICA_ID        the full container id
    ROLLOVER_REPLICA_ADDRESS   its IP on its first network ("" when it has none)
    ROLLOVER_REPLICA_PORTS     its published bindings, space-separated: 8080/tcp=127.0.0.1:32768

A command that exits non-zero, is killed, or outlives ``timeout_s`` fails the step with a
``PlatformError`` that quotes the command and the last line it wrote to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Sequence

from rollover.balancers.base import DrainResult
from rollover.clock import Clock, loop_clock
from rollover.core.model import Replica
from rollover.errors import InvalidOption, PlatformError


def parse_hook(text: str) -> list[str]:
    """Split a hook command like a shell would (quotes, escapes) without ever running one.

    "sh -c 'echo $ROLLOVER_REPLICA_NAME'" -> ["sh", "-c", "echo $ROLLOVER_REPLICA_NAME"]
    """
    try:
        words = shlex.split(text)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise InvalidOption(f"hook command {text!r}: {exc}") from None
    if not words:
        raise InvalidOption("hook command is empty")
    return words


def hook_environment(replica: Replica, hook: str) -> dict[str, str]:
    """The caller's environment plus what the hook knows about ``replica``."""
    addresses = [ip for key, ip in replica.details if key.startswith("ip.") and ip]
    ports = [f"{key.removeprefix('published.')}={value}" for key, value in replica.details
             if key.startswith("published.")]
    return {
        **os.environ,
        "ROLLOVER_HOOK": hook,
        "ROLLOVER_REPLICA_NAME": replica.name,
        "ROLLOVER_REPLICA_ID": replica.id,
        "ROLLOVER_REPLICA_ADDRESS": addresses[0] if addresses else "",
        "ROLLOVER_REPLICA_PORTS": " ".join(ports),
    }


class CommandHooks:
    def __init__(
        self,
        pre_stop: Sequence[str] | None,
        post_start: Sequence[str] | None,
        *,
        timeout_s: float = 60,
        clock: Clock | None = None,
    ) -> None:
        for what, command in (("pre-stop", pre_stop), ("post-start", post_start)):
            if command is not None and not command:
                raise InvalidOption(f"{what} hook: empty command")
        if timeout_s <= 0:
            raise InvalidOption(f"hook timeout must be positive, not {timeout_s}")
        self._pre_stop = tuple(pre_stop) if pre_stop else None
        self._post_start = tuple(post_start) if post_start else None
        self._timeout_s = timeout_s
        self._clock = clock

    async def attach(self, replicas: Sequence[Replica]) -> None:
        return None

    async def admit(self, replica: Replica) -> None:
        if self._post_start:
            await self._run("post-start", self._post_start, replica)

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        """Run pre-stop; it has its own time limit (``timeout_s``), the drain timeout is the balancers'."""
        clock = self._clock or loop_clock()
        started = clock()
        if self._pre_stop:
            await self._run("pre-stop", self._pre_stop, replica)
        return DrainResult(sessions_left=0, waited_s=clock() - started)

    async def forget(self, replica: Replica) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _run(self, hook: str, command: tuple[str, ...], replica: Replica) -> None:
        shown = f"{hook} hook `{shlex.join(command)}`"
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=hook_environment(replica, hook),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills its children too
            )
        except OSError as exc:  # not found, not executable
            raise PlatformError(f"{shown} could not start: {exc.strerror or exc}") from exc
        try:
            out, err = await asyncio.wait_for(process.communicate(), self._timeout_s)
        except TimeoutError:
            await _kill_group(process)
            raise PlatformError(f"{shown} for {replica.name} timed out after {self._timeout_s:g}s") from None
        if process.returncode != 0:
            raise PlatformError(f"{shown} {_how_it_ended(process.returncode)}: {_last_line(err, out)}")


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the hook and everything it started (``sh -c 'sleep 100'`` leaves a sleep behind
    that would hold the pipes open), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.communicate()


def _how_it_ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited {returncode}"


def _last_line(err: bytes, out: bytes) -> str:
    """The last non-blank line of stderr (of stdout when stderr is silent), for the error message."""
    for stream in (err, out):
        lines = [line.strip() for line in stream.decode(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return "no output"
