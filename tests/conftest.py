"""Fixtures shared by the tests that need real sockets: an event loop and local HTTP stubs; the
real engine's fixtures come as a plugin, so every suite that needs them asks for them by name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.http_stubs import StubFarm

pytest_plugins = ["tests.support.engine_fixtures", "tests.support.docker_cli"]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A real event loop for one test; tasks it leaves behind are cancelled at the end."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    leftovers = asyncio.all_tasks(event_loop)
    for task in leftovers:
        task.cancel()
    if leftovers:
        event_loop.run_until_complete(asyncio.wait(leftovers))
    event_loop.run_until_complete(event_loop.shutdown_asyncgens())
    event_loop.close()


@pytest.fixture
def stubs(loop: asyncio.AbstractEventLoop) -> Iterator[StubFarm]:
    farm = StubFarm(loop)
    yield farm
    farm.close()
