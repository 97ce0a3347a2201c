"""The probe's HTTP transport: one fresh connection per request, asyncio streams and h11.

Why not httpx's own transport: the probe opens a connection for every request (see probe.py),
hundreds a second, in rollover's own event loop beside the controller. httpx's default
transport (httpcore over anyio) is built for pooled keep-alive connections; per request it
enters some 14 anyio cancel scopes and asks sniffio 28 times which loop it runs on (profiled).
Measured with ``python -m bench.probe_cost`` (200 requests/s to busybox httpd on 127.0.0.1, this
2-core machine, median of 3 runs): 1.84 ms of CPU per request over httpx's transport
(``--transport httpx``), 1.26 ms over this one; the probe as it was, an ``httpx.AsyncClient``
on httpx's transport, took 2.06 ms. At 200/s that is 41 % of a core before and 25 % now, and
on a loaded CI machine the difference decides whether the probe keeps its schedule.

This is an ``httpx.AsyncBaseTransport``: the probe still speaks httpx (requests, responses,
timeouts, the exception classes), and h11 does all of HTTP/1.1 (framing, chunked bodies,
validation); only the socket handling is ours. No pool, no keep-alive, no HTTP/2, no proxies:
the probe needs none of them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import h11
import httpx

READ_SIZE = 65536


class FreshConnectionTransport(httpx.AsyncBaseTransport):
    """Send each request on a connection of its own and close it after the answer."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context

    def _tls(self, scheme: str) -> ssl.SSLContext | None:
        if scheme != "https":
            return None
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()  # httpx's defaults: certifi, verified
        return self._ssl_context

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        host = url.raw_host.decode("ascii")  # IDNA-encoded, IPv6 without brackets: what a resolver takes
        port = url.port or (443 if url.scheme == "https" else 80)
        with _translated(request, httpx.ConnectError, httpx.ConnectTimeout):
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(host, port, ssl=self._tls(url.scheme))
        try:
            connection = h11.Connection(h11.CLIENT)
            with _translated(request, httpx.WriteError, httpx.WriteTimeout):
                async with asyncio.timeout(timeouts.get("write")):
                    writer.write(connection.send(h11.Request(
                        method=request.method, target=url.raw_path, headers=list(request.headers.raw))))
                    if body := await request.aread():
                        writer.write(connection.send(h11.Data(data=body)))
                    writer.write(connection.send(h11.EndOfMessage()))
                    await writer.drain()
            with _translated(request, httpx.ReadError, httpx.ReadTimeout):
                status, headers, body = await _read_response(connection, reader, timeouts.get("read"))
        finally:
            writer.close()
        return httpx.Response(status, headers=headers, content=body, request=request)


async def _read_response(
    connection: h11.Connection, reader: asyncio.StreamReader, read_timeout: float | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and whole body of one answer; each read waits at most ``read_timeout``."""
    status = 0
    headers: list[tuple[bytes, bytes]] = []
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            async with asyncio.timeout(read_timeout):
                connection.receive_data(await reader.read(READ_SIZE))  # b"" tells h11 the peer closed
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, headers, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("the server closed the connection before the answer ended")
        # h11.InformationalResponse (1xx): the real answer follows


@contextmanager
def _translated(request: httpx.Request, failure: type[httpx.TransportError],
                timeout: type[httpx.TimeoutException]) -> Iterator[None]:
    """Socket, TLS and protocol errors as the httpx exceptions the probe tells apart."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out", request=request) from exc
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    except OSError as exc:  # refused, reset, unreachable, TLS (ssl.SSLError is an OSError)
        raise failure(str(exc) or type(exc).__name__, request=request) from exc
