"""The HAProxy runtime API ("stats socket"), spoken over asyncio streams, and its replies parsed.

One connection per command: HAProxy answers a non-interactive command and closes the
connection, so the end of the reply is the end of the stream and no prompt needs parsing.
Commands are built only from names checked by ``checked_name`` and from ``Endpoint`` values: the
CLI takes ``;`` and newlines as command separators, so an unchecked name could smuggle a second
command (``del server ...``) into one line.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from dataclasses import dataclass

from rollover.errors import PlatformError

# HAProxy's own rule for proxy and server names: letters, digits, '-', '_', '.' and ':'.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")

# srv_admin_state bits (management guide, "show servers state"): forced, inherited and resolution
# maintenance; forced and inherited drain. Not 0x04 (CMAINT, "disabled" in the configuration): it
# stays set after the server is made ready and serves (seen on 2.6), so it only tells the origin.
_MAINT_BITS = 0x01 | 0x02 | 0x20
_DRAIN_BITS = 0x08 | 0x10


def checked_name(kind: str, name: str) -> str:
    """The name itself when HAProxy would accept it; ValueError otherwise."""
    if not _SAFE_NAME.match(name):
        raise ValueError(f"{kind} name {name!r}: only letters, digits and - _ . : are allowed")
    return name


@dataclass(frozen=True)
class ServerState:
    """One line of ``show servers state``."""

    name: str
    addr: str
    port: int
    admin_state: int

    @property
    def in_maintenance(self) -> bool:
        return bool(self.admin_state & _MAINT_BITS)

    @property
    def draining(self) -> bool:
        return bool(self.admin_state & _DRAIN_BITS)


class RuntimeApi:
    """A client of one HAProxy runtime API socket: a unix path or ``tcp:HOST:PORT``."""

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address
        self._timeout = timeout
        self._tcp: tuple[str, int] | None = None
        self._path = address.removeprefix("unix:")
        if address.startswith("tcp:"):
            host, _, port = address.removeprefix("tcp:").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"runtime API address {address!r}: expected tcp:HOST:PORT or a socket path")
            self._tcp = (host.strip("[]"), int(port))
        elif not self._path:
            raise ValueError("runtime API address is empty")

    async def execute(self, command: str) -> str:
        """Send one command and return HAProxy's whole reply; PlatformError if HAProxy is unreachable."""
        if any(separator in command for separator in ";\n\r"):
            raise ValueError(f"refusing a runtime API line with a command separator: {command!r}")
        try:
            async with asyncio.timeout(self._timeout):
                return await self._exchange(command)
        except TimeoutError as exc:
            raise PlatformError(f"HAProxy at {self.address} did not answer {command!r} in time") from exc
        except OSError as exc:
            raise PlatformError(f"HAProxy runtime API at {self.address}: {exc}") from exc

    async def _exchange(self, command: str) -> str:
        if self._tcp is not None:
            reader, writer = await asyncio.open_connection(*self._tcp)
        else:
            reader, writer = await asyncio.open_unix_connection(self._path)
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()
            await writer.wait_closed()


def parse_servers_state(reply: str) -> list[ServerState]:
    """Parse ``show servers state <backend>`` (format version 1); ValueError on anything else."""
    lines = reply.splitlines()
    if not lines or lines[0].strip() != "1" or len(lines) < 2 or not lines[1].startswith("#"):
        raise ValueError(reply.strip() or "empty reply")
    header = lines[1].lstrip("# ").split()
    servers = []
    for line in lines[2:]:
        if not line.strip() or line.startswith("#"):
            continue
        row = dict(zip(header, line.split(), strict=False))
        servers.append(
            ServerState(
                name=checked_name("server", row["srv_name"]),
                addr=row["srv_addr"],
                port=int(row["srv_port"]),
                admin_state=int(row["srv_admin_state"]),
            )
        )
    return servers


def parse_sessions(reply: str, backend: str, server: str) -> int | None:
    """Sessions on ``backend``/``server`` in a ``show stat`` CSV: current (scur) plus queued (qcur).

    None when the server is not in the reply. The reply covers every proxy: ``show stat NAME``
    answers for the first proxy of that name, and a frontend may share its backend's name.
    """
    if not reply.startswith("# "):
        raise ValueError(reply.strip() or "empty reply")
    for row in csv.DictReader(io.StringIO(reply[2:])):
        if row.get("pxname") == backend and row.get("svname") == server:
            return int(row.get("scur") or 0) + int(row.get("qcur") or 0)
    return None
