"""A real HAProxy per test, in the foreground, killed by its Popen handle at the end."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_haproxy import HAPROXY, HAProxyLauncher


@pytest.fixture
def haproxy() -> Iterator[HAProxyLauncher]:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: apt-get install -y haproxy (a skip would hide it in CI)")
    # A short directory of its own: a unix socket path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="rollover-haproxy-") as workdir:
        launcher = HAProxyLauncher(Path(workdir))
        try:
            yield launcher
        finally:
            launcher.stop_all()
