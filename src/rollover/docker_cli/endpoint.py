"""Which Docker engine to talk to, decided the way the docker CLI decides it.

The docker CLI's order, highest first (docker/cli ``resolveContextName``):

    --context NAME          a context from the context store
    -H / --host URL         that address
    DOCKER_HOST             that address (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH)
    DOCKER_CONTEXT          a context
    currentContext          of $DOCKER_CONFIG/config.json (~/.docker/config.json)
    default                 unix:///var/run/docker.sock

The answer is written into the environment as DOCKER_HOST (plus DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH for a context's TLS material) and DOCKER_CONTEXT is dropped: the SDK client and
every ``docker compose`` rollover runs then reach the same engine without reading the store again.

The store: ``contexts/meta/<sha256 of the name>/meta.json`` holds ``Endpoints.docker.Host`` and
``SkipTLSVerify``; ``contexts/tls/<sha256>/docker/{ca,cert,key}.pem`` its TLS material, already
named as DOCKER_CERT_PATH wants them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from rollover.errors import InvalidOption

DEFAULT_CONTEXT = "default"
HOST_SCHEMES = ("unix://", "tcp://", "ssh://")
ENDPOINT_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")


@dataclass(frozen=True)
class Endpoint:
    """An engine address and the TLS material to reach it (None: what the environment says)."""

    host: str
    context: str | None = None
    cert_path: str | None = None
    tls_verify: bool = False

    def apply(self, environ: MutableMapping[str, str]) -> None:
        environ["DOCKER_HOST"] = self.host
        environ.pop("DOCKER_CONTEXT", None)
        if self.context is None:
            return  # -H: the TLS variables the user set stay as they are, as for the docker CLI
        environ.pop("DOCKER_TLS_VERIFY", None)
        environ.pop("DOCKER_CERT_PATH", None)
        if self.cert_path is not None:
            environ["DOCKER_CERT_PATH"] = self.cert_path
            if self.tls_verify:
                environ["DOCKER_TLS_VERIFY"] = "1"


def config_dir(environ: Mapping[str, str]) -> Path:
    """$DOCKER_CONFIG, else ~/.docker (HOME from ``environ``)."""
    if environ.get("DOCKER_CONFIG"):
        return Path(environ["DOCKER_CONFIG"])
    return Path(environ.get("HOME") or Path.home()) / ".docker"


def check_host(host: str, what: str) -> str:
    if not host.startswith(HOST_SCHEMES) or len(host) <= len(host.split("://")[0]) + 3:
        raise InvalidOption(f"{what} {host!r}: expected unix:///PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]")
    return host


def resolve(context: str | None, host: str | None, environ: Mapping[str, str]) -> Endpoint | None:
    """The endpoint chosen by flags and variables; None when the environment already says it
    (DOCKER_HOST set, or nothing set at all: the default socket)."""
    if context and host:
        raise InvalidOption("conflicting options: either --host or --context, not both")
    if host:
        return Endpoint(check_host(host, "--host"))
    if not context:
        if environ.get("DOCKER_HOST"):
            check_host(environ["DOCKER_HOST"], "DOCKER_HOST")
            return None
        context = environ.get("DOCKER_CONTEXT") or _current_context(environ)
    if not context or context == DEFAULT_CONTEXT:
        return None
    return read_context(context, config_dir(environ))


def _current_context(environ: Mapping[str, str]) -> str | None:
    path = config_dir(environ) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidOption(f"docker CLI config {path}: cannot be read ({exc})") from None
    current = config.get("currentContext") if isinstance(config, dict) else None
    return str(current) if current else None


def read_context(name: str, directory: Path) -> Endpoint:
    """The docker endpoint of context ``name`` in the store under ``directory``."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta_path = directory / "contexts" / "meta" / digest / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise InvalidOption(f"docker context {name!r} not found in {directory / 'contexts'}"
                            " (see `docker context ls`)") from None
    except (OSError, ValueError) as exc:
        raise InvalidOption(f"docker context {name!r}: {meta_path} cannot be read ({exc})") from None
    endpoint = (meta.get("Endpoints") or {}).get("docker") or {}
    host = endpoint.get("Host")
    if not host:
        raise InvalidOption(f"docker context {name!r} has no docker endpoint")
    tls = directory / "contexts" / "tls" / digest / "docker"
    cert_path = str(tls) if (tls / "ca.pem").exists() or (tls / "cert.pem").exists() else None
    return Endpoint(check_host(str(host), f"docker context {name!r}: host"), context=name, cert_path=cert_path,
                    tls_verify=cert_path is not None and not endpoint.get("SkipTLSVerify", False))
