"""The bounded pool every CPU-heavy activity step runs in (GLB validation, hashing and storing
large bodies, image checks).

Why bounded: `asyncio.to_thread` uses the loop's default executor (up to 32 threads); eight
pods returning 50 MB GLBs at once would then hold the GIL in eight threads and delay the
worker's workflow tasks. One pool of CPU_WORKERS threads (a setting) queues the rest instead;
`benchmarks/cpu_pressure.py` measures workflow-task latency with and without the bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


class CpuPool:
    """At most `workers` CPU-heavy steps at once; the others wait their turn."""

    def __init__(self, workers: int) -> None:
        """A pool of `workers` threads (CPU_WORKERS)."""
        if workers < 1:
            raise ValueError(f"CPU_WORKERS must be at least 1, not {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cpu")

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """`fn(*args, **kwargs)` in the pool, awaited without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        """Stop taking work (steps already running finish)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
