"""Tiny HTTP/1.1 servers on 127.0.0.1 that answer their own name: stand-ins for replicas.

Each can be slowed (``/slow`` answers after ``slow_s``), made to fail (503 for a window) and
killed abruptly (listener closed, every connection reset), like a crashed process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
from collections import Counter
from pathlib import Path

import httpx

from rollover.core.model import Replica


class StubServer:
    def __init__(self, name: str, slow_s: float = 1.0) -> None:
        self.name = name
        self.slow_s = slow_s
        self.port = 0
        self.answered: Counter[str] = Counter()  # by path
        self.slow_arrived = asyncio.Event()
        self.slow_finished_at: float | None = None
        self._failing_until = 0.0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def replica(self) -> Replica:
        """The replica this server plays: reachable at its published port on loopback."""
        return Replica(
            id=hashlib.sha256(self.name.encode()).hexdigest(),
            name=self.name,
            details=(("published.8080/tcp", f"127.0.0.1:{self.port}"),),
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def fail_for(self, seconds: float) -> None:
        self._failing_until = asyncio.get_running_loop().time() + seconds

    def kill(self) -> None:
        """Stop abruptly: no more connections, and every open one is reset."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()

    async def close(self) -> None:
        self.kill()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                status, body = await self._answer(path)
                reason = "OK" if status == 200 else "Service Unavailable"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body) + 1}\r\n\r\n{body}\n".encode()
                )
                await writer.drain()
                if path.startswith("/slow"):
                    self.slow_finished_at = asyncio.get_running_loop().time()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away, or kill() reset the connection
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _answer(self, path: str) -> tuple[int, str]:
        self.answered[path] += 1
        if path.startswith("/slow"):
            self.slow_arrived.set()
            await asyncio.sleep(self.slow_s)  # the replica's own slowness, not a wait in the test
        if asyncio.get_running_loop().time() < self._failing_until:
            return 503, "failing"
        return 200, self.name


class StubFarm:
    """Starts stub servers on a test's event loop and closes every one of them afterwards."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._servers: list[StubServer] = []

    def start(self, name: str, slow_s: float = 1.0) -> StubServer:
        server = StubServer(name, slow_s)
        self._loop.run_until_complete(server.start())
        self._servers.append(server)
        return server

    def close(self) -> None:
        for server in self._servers:
            self._loop.run_until_complete(server.close())


async def who_answers(url: str, count: int) -> Counter[str]:
    """Who answers ``count`` sequential requests through a proxy (a new connection each)."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return Counter([(await client.get(url)).text.strip() for _ in range(count)])


_handed_out: set[int] = set()


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago), for a test to start a
    listener on or to find refused, and never the same one twice in a run.

    Taken below the kernel's ephemeral range (32768-60999 here): a port from that range (what
    ``bind(("127.0.0.1", 0))`` hands out) can become any outgoing connection's source port
    before the test's listener binds it. CI saw it: Traefik's "bind: address already in use" on
    127.0.0.1:49999, in a suite that opens hundreds of connections a second. Below the range,
    only a program that asks for the port by number gets it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = [port for port in range(max(1024, low - 12_000), low) if port not in _handed_out]
    for port in random.sample(candidates, k=min(100, len(candidates))):
        with contextlib.closing(socket.socket()) as probe:
            try:
                probe.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port in TIME_WAIT is refused too
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port below {low}")
