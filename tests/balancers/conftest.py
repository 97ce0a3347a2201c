"""A real HAProxy or Caddy per test, in the foreground, killed by its Popen handle at the end."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from tests.support.local_caddy import CADDY, CaddyLauncher
from tests.support.local_haproxy import HAPROXY, HAProxyLauncher


class _Launcher(Protocol):
    def __init__(self, workdir: Path) -> None: ...
    def stop_all(self) -> None: ...


L = TypeVar("L", bound=_Launcher)


def _launched(binary: str, package: str, launcher: type[L]) -> Iterator[L]:
    """A launcher for ``binary`` in a temporary directory of its own; what it launched is killed at the end."""
    if not Path(binary).exists():
        pytest.fail(f"{package} is not installed: apt-get install -y {package} (a skip would hide it in CI)")
    # A short directory of its own: a unix socket path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix=f"rollover-{package}-") as workdir:
        launched = launcher(Path(workdir))
        try:
            yield launched
        finally:
            launched.stop_all()


@pytest.fixture
def haproxy() -> Iterator[HAProxyLauncher]:
    yield from _launched(HAPROXY, "haproxy", HAProxyLauncher)


@pytest.fixture
def caddy() -> Iterator[CaddyLauncher]:
    yield from _launched(CADDY, "caddy", CaddyLauncher)
