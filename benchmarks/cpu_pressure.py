"""Do CPU-heavy activity steps starve the worker's workflow tasks?

One worker process, as the orchestrator runs it: a workflow that wakes on a timer every 100 ms
(each wake is a workflow task), while 8 "pods" keep validating and storing 50 MB GLBs (the
CPU-heavy steps of `generate`) in the same process. Workflow-task latency (scheduled -> started,
from the history) is measured with no load, with the load on `asyncio.to_thread` (the default
executor, up to 32 threads) and with the load on the bounded `CpuPool` (CPU_WORKERS threads),
side by side, against the sticky schedule-to-start timeout the worker uses.

    .venv/bin/python -m benchmarks.cpu_pressure          # ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities.cpu import CpuPool
from activities.generation import _validate_glb
from benchmarks.long_audit import start_dev_server
from storage.files import FileStore
from worker import STICKY_TIMEOUT

PODS = 8
TICKS = 40
TICK = timedelta(milliseconds=100)


@workflow.defn(name="Ticker", sandboxed=False)
class Ticker:
    """Wakes TICKS times on a timer: each wake is one workflow task to be picked up."""

    @workflow.run
    async def run(self) -> int:
        for _ in range(TICKS):
            await workflow.sleep(TICK)
        return TICKS


def big_glb(megabytes: int) -> bytes:
    """A GLB of about `megabytes` MB (random vertices, one mesh)."""
    faces = megabytes * 1024 * 1024 // 24  # 12 bytes per face + ~12 per vertex
    rng = np.random.default_rng(7)
    vertices = rng.random((faces // 2 + 3, 3), dtype=np.float32)
    triangles = rng.integers(0, len(vertices), size=(faces, 3), dtype=np.int64)
    mesh = trimesh.Trimesh(vertices=vertices, faces=triangles, process=False)
    out = io.BytesIO()
    mesh.export(out, file_type="glb")
    return out.getvalue()


Run = Callable[..., Awaitable[Any]]


async def pod_load(run: Run, store: FileStore, glb: bytes, stop: asyncio.Event) -> int:
    """What one pod's generate does on our side per prompt, until stopped: validate, store."""
    done = 0
    while not stop.is_set():
        await run(_validate_glb, glb)
        await run(store.put_bytes, glb, ".glb")
        done += 1
    return done


async def task_latencies(client: Client, queue: str) -> list[float]:
    """Scheduled -> started seconds of every workflow task of one Ticker run."""
    handle = await client.start_workflow(
        "Ticker", id=f"ticker-{uuid.uuid4()}", task_queue=queue, result_type=int
    )
    await handle.result()
    scheduled: float | None = None
    latencies = []
    async for event in handle.fetch_history_events():
        at = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            scheduled = at
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and scheduled:
            latencies.append(at - scheduled)
    return latencies


async def measure(client: Client, run: Run | None, glb: bytes, root: Path) -> dict[str, float]:
    queue = f"cpu-{uuid.uuid4()}"
    store = FileStore(root / queue)
    stop = asyncio.Event()
    async with Worker(client, task_queue=queue, workflows=[Ticker]):
        loads = [
            asyncio.create_task(pod_load(run, store, glb, stop))
            for _ in range(PODS if run is not None else 0)
            if run is not None
        ]
        started = time.monotonic()
        latencies = await task_latencies(client, queue)
        elapsed = time.monotonic() - started
        stop.set()
        validated = sum(await asyncio.gather(*loads))
    return {
        "p50": statistics.median(latencies),
        "max": max(latencies),
        "glbs_per_s": validated / elapsed,
    }


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--cpu-workers", type=int, default=2)
    args = parser.parse_args(argv)
    glb = big_glb(args.megabytes)
    pool = CpuPool(args.cpu_workers)
    env = await start_dev_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [
                ("no load", None),
                (f"{PODS} pods, asyncio.to_thread", asyncio.to_thread),
                (f"{PODS} pods, CpuPool({args.cpu_workers})", pool.run),
            ]
            sticky = STICKY_TIMEOUT.total_seconds()
            print(f"GLB {len(glb) / 1e6:.1f} MB; sticky schedule-to-start timeout {sticky:.1f} s")
            print("| load | wf task latency p50 s | max s | max / sticky timeout | GLBs/s |")
            print("|---|---|---|---|---|")
            for name, run in rows:
                m = await measure(env.client, run, glb, Path(tmp))
                print(
                    f"| {name} | {m['p50']:.3f} | {m['max']:.3f} | {m['max'] / sticky:.2f} "
                    f"| {m['glbs_per_s']:.1f} |"
                )
    finally:
        pool.close()
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
