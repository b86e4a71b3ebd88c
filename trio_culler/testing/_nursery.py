"""A nursery for a context manager's helper tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["open_helper_nursery"]


@asynccontextmanager
async def open_helper_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for a context manager's helper tasks, which do not fail: an exception from the
    ``async with`` body then comes out as itself, not wrapped in a one-member ExceptionGroup."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
