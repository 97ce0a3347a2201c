"""PURE: the upstream file rollover owns for nginx: find ``upstream NAME { ... }``, read its servers,
write the block again with other servers.

Only the block is rewritten; every byte of the file outside it is kept. Inside it, the directives
that are not ``server`` (``keepalive 16;``, ``least_conn;``, ``zone ...;``) are kept in their order,
comments inside the block are not, and the servers follow, one a line:

    upstream web {                         upstream web {
        # the app                              keepalive 16;
        keepalive 16;                 ->       server 172.18.0.6:8080 max_fails=0;
        server 172.18.0.5:8080;                server 172.18.0.7:8080; # added by rollover
        server 172.18.0.6:8080 max_fails=0;
    }                                      }

(.5 drained, .7 admitted: a new server carries no parameters, but a mark on its line; a server
kept keeps its own parameters.) A marked server that points at none of the running replicas when
a rollout starts was admitted by a rollout that was killed, for a replacement that is gone: it is
dropped (nginx.py), where other such servers are kept.

nginx refuses an upstream without servers, so an empty list is written as one server marked
``down`` on a port nothing listens on (127.0.0.1:1): requests get 502 until a replica is
admitted, which is what "no replica in rotation" means.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

PLACEHOLDER = "server 127.0.0.1:1 down;"
MARK = "# added by rollover"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN = re.compile(r"""\s+|#[^\n]*|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[{};]|[^\s{};"'#]+""")


class UpstreamFileError(ValueError):
    """The file cannot be read as nginx configuration holding the upstream."""


def checked_upstream_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"upstream name {name!r}: expected letters, digits, '_', '.' or '-'")
    return name


@dataclass(frozen=True)
class Server:
    """One ``server ADDRESS [PARAMETERS];`` line of the upstream."""

    address: str  # as written: 172.18.0.5:8080, [::1]:80, unix:/run/app.sock, app.internal
    parameters: str = ""  # as written, e.g. "max_fails=0 weight=2"
    added: bool = False  # written by rollover for a replacement (marked so on its line)

    @property
    def host_port(self) -> tuple[str, int] | None:
        """'172.18.0.5:8080' -> ('172.18.0.5', 8080); '[::1]' -> ('::1', 80); None when the address
        is no IP literal (a name or a unix socket): such a server never matches a replica."""
        text = self.address
        port = 80
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:]) if rest[1:].isdigit() else -1
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                host = text
            elif not port_text.isdigit():
                return None
            else:
                port = int(port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return (host, port) if port > 0 else None

    def line(self) -> str:
        text = f"server {self.address} {self.parameters};" if self.parameters else f"server {self.address};"
        return f"{text} {MARK}" if self.added else text


@dataclass(frozen=True)
class UpstreamFile:
    """The file's text around the block, the block's other directives, and its servers."""

    before: str  # the text up to and including the block's "{"
    after: str  # from the block's "}" on
    directives: tuple[str, ...]
    servers: tuple[Server, ...]

    def with_servers(self, servers: Sequence[Server]) -> UpstreamFile:
        return UpstreamFile(self.before, self.after, self.directives, tuple(servers))

    def render(self) -> str:
        lines = [*self.directives, *(s.line() for s in self.servers)] or []
        if not self.servers:
            lines.append(PLACEHOLDER)
        return self.before + "\n" + "".join(f"    {line}\n" for line in lines) + self.after


def _tokens(text: str) -> list[tuple[str, int]]:
    """Tokens with their offsets, without blanks and comments."""
    found = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # an unterminated quote
            raise UpstreamFileError(f"unterminated quoted string at offset {position}")
        token = match.group()
        if not token.isspace() and not token.startswith("#"):
            found.append((token, position))
        position = match.end()
    return found


def parse_upstream_file(text: str, upstream: str) -> UpstreamFile:
    """Find ``upstream <upstream> {`` anywhere in ``text`` (braces balanced) and read its body."""
    tokens = _tokens(text)
    depth = 0
    start = None
    for index, (token, _) in enumerate(tokens):
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                raise UpstreamFileError("unbalanced '}'")
        elif (token == "upstream" and start is None and index + 2 < len(tokens)
              and tokens[index + 1][0] == upstream and tokens[index + 2][0] == "{"):
            start = index + 2
    if depth != 0:
        raise UpstreamFileError("unbalanced '{'")
    if start is None:
        raise UpstreamFileError(f"no 'upstream {upstream} {{ ... }}' block")
    directives: list[str] = []
    servers: list[Server] = []
    statement: list[str] = []
    index = start + 1
    while tokens[index][0] != "}":
        token = tokens[index][0]
        if token == "{":
            raise UpstreamFileError(f"a block inside upstream {upstream}")
        if token == ";":
            if statement[:1] == ["server"] and len(statement) >= 2:
                rest_of_line = text[tokens[index][1] + 1:].split("\n", 1)[0]
                servers.append(Server(statement[1], " ".join(statement[2:]), added=MARK in rest_of_line))
            elif statement:
                directives.append(" ".join(statement) + ";")
            statement = []
        else:
            statement.append(token)
        index += 1
    if statement:
        raise UpstreamFileError(f"'{' '.join(statement)}' in upstream {upstream} does not end with ';'")
    open_offset = tokens[start][1]
    close_offset = tokens[index][1]
    servers = [s for s in servers if s.line() != PLACEHOLDER]
    return UpstreamFile(text[: open_offset + 1], text[close_offset:], tuple(directives), tuple(servers))
