"""The probe's transport against real sockets on 127.0.0.1 / ::1, each server scripted byte by byte:
what it sends, how it frames answers, and which httpx exception each way of failing becomes
(the probe sorts failures by those classes: connect, timeout, other)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from rollover.probe.transport import FreshConnectionTransport
from tests.support.http_stubs import closed_port

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUTS = {"connect": 1.0, "read": 0.5, "write": 1.0, "pool": 1.0}


@asynccontextmanager
async def scripted_server(script: Script, host: str = "127.0.0.1") -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server running ``script`` on each connection; yields its port and each request's head."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, host, 0)
    async with server:
        yield server.sockets[0].getsockname()[1], heads


def answer(raw: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
    return script


async def get(url: str) -> httpx.Response:
    request = httpx.Request("GET", url, headers={"Connection": "close"}, extensions={"timeout": TIMEOUTS})
    response = await FreshConnectionTransport().handle_async_request(request)
    await response.aread()
    return response


def test_a_chunked_answer_is_read_whole_and_the_request_names_its_host(loop: asyncio.AbstractEventLoop) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Replica: a\r\n\r\n"
               b"3\r\nv2\n\r\n4\r\nmore\r\n0\r\n\r\n")

    async def scenario() -> tuple[httpx.Response, bytes, int]:
        async with scripted_server(answer(chunked)) as (port, heads):
            return await get(f"http://127.0.0.1:{port}/version.txt?x=1"), heads[0], port

    response, head, port = loop.run_until_complete(scenario())
    assert (response.status_code, response.text, response.headers["x-replica"]) == (200, "v2\nmore", "a")
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /version.txt?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Connection: close" in lines


def test_an_answer_framed_by_closing_the_connection_is_read_whole(loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> httpx.Response:
        async with scripted_server(answer(b"HTTP/1.0 503 Service Unavailable\r\n\r\ndraining")) as (port, _):
            return await get(f"http://127.0.0.1:{port}/")

    response = loop.run_until_complete(scenario())
    assert (response.status_code, response.text) == (503, "draining")


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this kernel")
def test_an_ipv6_loopback_url_is_reached(loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> httpx.Response:
        async with scripted_server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nv6\n"), "::1") as (port, _):
            return await get(f"http://[::1]:{port}/")

    assert loop.run_until_complete(scenario()).text == "v6\n"


@pytest.mark.parametrize("raw", [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", b""],
                         ids=["body-cut-short", "closed-before-answering"])
def test_an_answer_cut_short_is_a_protocol_error(loop: asyncio.AbstractEventLoop, raw: bytes) -> None:
    async def scenario() -> None:
        async with scripted_server(answer(raw)) as (port, _):
            await get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.RemoteProtocolError):
        loop.run_until_complete(scenario())


def test_garbage_instead_of_an_answer_is_a_protocol_error(loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> None:
        async with scripted_server(answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as (port, _):
            await get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.RemoteProtocolError):
        loop.run_until_complete(scenario())


def test_a_server_that_never_answers_is_a_read_timeout(loop: asyncio.AbstractEventLoop) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    async def scenario() -> float:
        async with scripted_server(silent) as (port, _):
            started = loop.time()
            with pytest.raises(httpx.ReadTimeout):
                await get(f"http://127.0.0.1:{port}/")
            return loop.time() - started

    # Not before the read timeout; and given up on, not waited out (the server would wait forever):
    # the upper bound is loose on purpose, a busy machine may be slow to wake the loop.
    assert TIMEOUTS["read"] <= loop.run_until_complete(scenario()) < TIMEOUTS["read"] + 5


def test_a_closed_port_is_a_connect_error(loop: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(httpx.ConnectError):
        loop.run_until_complete(get(f"http://127.0.0.1:{closed_port()}/"))


def test_https_to_a_plain_http_server_is_a_connect_error(loop: asyncio.AbstractEventLoop) -> None:
    """The TLS handshake fails (the server answers the ClientHello in plain HTTP): an ssl.SSLError,
    which the probe must see as a failed connection, not as a crash."""
    async def scenario() -> None:
        async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        async with server:
            await get(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/")

    with pytest.raises(httpx.ConnectError):
        loop.run_until_complete(scenario())
