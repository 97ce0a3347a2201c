"""rollover as a docker CLI plugin: ``docker rollover redeploy web`` runs ``docker-rollover``.

The protocol (docker/cli ``cli-plugins``):

- ``docker-rollover docker-cli-plugin-metadata`` prints the metadata JSON; the CLI lists the
  plugin in ``docker help`` only when SchemaVersion and Vendor are there.
- A run gets the CLI's whole argv: the global flags first, then the plugin's name, then its own
  arguments: ``docker --context prod rollover redeploy web`` runs
  ``docker-rollover --context prod rollover redeploy web``. The global flags are the plugin's to
  honour; rollover takes ``--context``, ``-H/--host`` and ``--config`` and ignores the logging ones.
- ``DOCKER_CLI_PLUGIN_SOCKET`` names an abstract unix socket the CLI listens on. Without a TTY the
  CLI does not forward a Ctrl-C: it closes that socket instead (a TTY's Ctrl-C reaches the whole
  process group, the plugin too). A closed socket is therefore an interrupt: the watcher sends
  this process SIGINT, and the rollout ends exactly as for a SIGINT (exit 130, replaced ones put
  back). On the third signal the CLI kills the plugin with SIGKILL; the next run takes over the
  dead rollout's lock (docs/faults.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from rollover import __version__
from rollover.errors import InvalidOption

PLUGIN_NAME = "rollover"
METADATA_COMMAND = "docker-cli-plugin-metadata"
SOCKET_VARIABLE = "DOCKER_CLI_PLUGIN_SOCKET"

# Global flags of the docker CLI that take a value ("--flag value" or "--flag=value").
_VALUED_FLAGS = {"--context", "-c", "--host", "-H", "--config", "--log-level", "-l",
                 "--tlscacert", "--tlscert", "--tlskey"}


def metadata() -> str:
    return json.dumps({
        "SchemaVersion": "0.1.0",
        "Vendor": "rollover",
        "Version": __version__,
        "ShortDescription": "Zero-downtime rolling redeploys of Compose, container and Swarm services",
    })


@dataclass
class PluginCall:
    """What the docker CLI handed over: its global flags, then rollover's own arguments."""

    context: str | None = None
    host: str | None = None
    config: str | None = None
    args: list[str] = field(default_factory=list)


def parse_plugin_argv(argv: Sequence[str]) -> PluginCall:
    """``['--context', 'prod', 'rollover', 'redeploy', 'web']`` -> context 'prod', args ['redeploy', 'web']."""
    call = PluginCall()
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == PLUGIN_NAME:
            call.args = list(argv[index + 1:])
            return call
        name, equals, value = arg.partition("=")
        if name in _VALUED_FLAGS:
            if not equals:
                index += 1
                if index >= len(argv):
                    raise InvalidOption(f"docker flag {name} needs a value")
                value = argv[index]
            _keep(call, name, value)
        elif not arg.startswith("-"):
            raise InvalidOption(f"unexpected {arg!r} before the plugin name {PLUGIN_NAME!r}")
        index += 1  # --debug, --tls, --tlsverify...: nothing rollover needs
    raise InvalidOption(f"docker-{PLUGIN_NAME} is a docker CLI plugin: run it as `docker {PLUGIN_NAME} ...`")


def _keep(call: PluginCall, name: str, value: str) -> None:
    if name in ("--context", "-c"):
        call.context = value
    elif name in ("--host", "-H"):
        call.host = value
    elif name == "--config":
        call.config = value


def watch_cli_socket(environ: dict[str, str] | os._Environ[str]) -> threading.Thread | None:
    """Connect to the CLI's plugin socket; when the CLI closes it, interrupt this process (SIGINT).

    Without the variable (run directly, not through the CLI) there is nothing to watch."""
    name = environ.get(SOCKET_VARIABLE)
    if not name:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # "@name" is Linux's abstract namespace, spelled with a leading NUL byte.
    address = "\0" + name[1:] if name.startswith("@") else name
    try:
        connection.connect(address)
    except OSError:
        connection.close()
        return None  # an older CLI or a stale variable: Ctrl-C still arrives as a signal
    watcher = threading.Thread(target=_interrupt_on_close, args=(connection,), name="docker-cli-socket", daemon=True)
    watcher.start()
    return watcher


def _interrupt_on_close(connection: socket.socket) -> None:
    with connection:
        while True:
            try:
                if not connection.recv(4096):
                    break
            except OSError:
                break
    os.kill(os.getpid(), signal.SIGINT)
