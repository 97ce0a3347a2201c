"""Keeping a costly optional import out of a library's own import."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def withheld(module: str) -> Iterator[None]:
    """While inside, ``import module`` raises ImportError, as if it were not installed (a library
    that imports it only if it can then goes without); afterwards it imports as usual. Nothing is
    withheld once it was imported already."""
    if module in sys.modules:
        yield
        return
    sys.modules[module] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        yield
    finally:
        if sys.modules.get(module, ...) is None:
            del sys.modules[module]
