"""The controller loop's inbox (controller/mailbox.py) on the virtual clock, and the withheld
import the engine module uses for paramiko (rollover/imports.py)."""

from __future__ import annotations

import asyncio
import importlib
import sys

import pytest

from rollover.clock import run_virtual
from rollover.controller.mailbox import Mailbox
from rollover.imports import withheld


def test_what_was_posted_is_taken_at_once_and_in_order() -> None:
    async def main() -> tuple[list[str], float]:
        box: Mailbox[str] = Mailbox()
        box.post("ack")
        box.post("up")
        taken = await box.take(wake_at=30.0)
        return taken, asyncio.get_running_loop().time()

    assert run_virtual(main()) == (["ack", "up"], 0.0)


def test_a_wait_ends_with_the_first_message_and_takes_all_of_that_instant() -> None:
    async def main() -> tuple[list[str], float]:
        box: Mailbox[str] = Mailbox()
        loop = asyncio.get_running_loop()
        loop.call_at(5.0, box.post, "ack")
        loop.call_at(5.0, box.post, "up")
        loop.call_at(6.0, box.post, "later")
        taken = await box.take(wake_at=None)
        return taken, loop.time()

    assert run_virtual(main()) == (["ack", "up"], 5.0)


def test_the_deadline_ends_a_wait_with_nothing_and_leaves_later_messages_posted() -> None:
    async def main() -> tuple[list[str], float, list[str]]:
        box: Mailbox[str] = Mailbox()
        loop = asyncio.get_running_loop()
        loop.call_at(12.0, box.post, "up")
        first = await box.take(wake_at=10.0)
        at = loop.time()
        return first, at, await box.take(wake_at=None)

    assert run_virtual(main()) == ([], 10.0, ["up"])


def test_a_deadline_already_due_comes_before_what_is_posted() -> None:
    """The loop handles time first: a grace end due now is applied before the next message."""

    async def main() -> tuple[list[str], list[str]]:
        box: Mailbox[str] = Mailbox()
        await asyncio.sleep(3.0)
        box.post("up")
        return await box.take(wake_at=3.0), await box.take(wake_at=None)

    assert run_virtual(main()) == ([], ["up"])


def test_a_withheld_module_cannot_be_imported_inside_and_imports_as_usual_after() -> None:
    name = "colorsys"  # small, in the standard library, imported by nothing here
    sys.modules.pop(name, None)
    with withheld(name), pytest.raises(ImportError):
        importlib.import_module(name)
    assert importlib.import_module(name).__name__ == name
