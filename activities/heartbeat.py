"""The one heartbeat helper of every long activity: beat while the body runs.

A heartbeat is how Temporal learns that a worker died mid-activity (the heartbeat timeout then
retries it elsewhere at once, instead of after the start-to-close timeout) and how a
cancellation reaches the activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(
    interval: float, details: Callable[[], tuple[Any, ...]] | None = None
) -> AsyncIterator[None]:
    """Heartbeat every `interval` seconds (with `details()`, if given) while the block runs."""

    async def beat() -> None:
        while True:
            activity.heartbeat(*(details() if details is not None else ()))
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        # asyncio.wait neither raises the task's CancelledError nor swallows our own.
        await asyncio.wait({task})
