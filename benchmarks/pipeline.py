"""Benchmark: does the rented GPU wait for us? One real audit, pipelined and not, side by side.

    .venv/bin/python -m benchmarks.pipeline                 # 24 prompts, 2 pods, 3 s generations
    .venv/bin/python -m benchmarks.pipeline --prompts 12 --generation 2
    .venv/bin/python -m benchmarks.pipeline --loops 4 --straggler 3   # + pod 1 three times slower
    .venv/bin/python -m benchmarks.pipeline --loops 4 --dying 4       # + pod 1 dies mid-run
    .venv/bin/python -m benchmarks.pipeline --loops 4 --straggler 3 --speculate  # each also
                                                   # with SPECULATIVE_REEXECUTION on, side by side

Everything is real but the GPU: an in-memory Temporal dev server, the project's workers (real
activities), the `local` provider running the reference miner with a fixed generation delay,
a bare git competition repo, real rendering and DINOv3 scoring (the demo's tiny model). The same
audit runs once per MAX_CONCURRENT_PROMPTS_PER_POD value (1: a pod generates, renders and scores
before it takes its next prompt; 4: upstream's loops sharing one GPU slot) and prints for each:

- span: first `pod_ready` to the last `pod_result` signal in the parent's history;
- ideal: ceil(prompts / pods) x generation time (every pod generating back to back); with
  `--straggler F` (pod 1's miner F times slower, LOCAL_POD_SLOWDOWN) the same audit runs once
  more and its ideal is the fluid bound prompts x generation / (sum of the pods' speeds);
  with `--dying K` (pod 1's miner answers K generations and exits half-way through the next,
  LOCAL_POD_DIES_AFTER; the audit must notice and start a replacement pod) once more, against
  the fluid bound (prompts + 1/2) x generation / pods: the half generation the dead pod lost,
  the replacement ready at once;
- ratio span / ideal, and the per-prompt orchestration cost on a pod's critical path,
  (span - ideal) x pods / prompts;
- where that cost goes: the start (first pod ready -> its first generate started, from the
  pods' histories), the GPU gap (from the miners' own call log: the mean time a miner sat idle
  between answering one request and receiving the next; this is the hand-over of the GPU slot,
  ~50 ms: `gpu_free` signal -> pod workflow task -> next `generate` dispatched -> request sent
  and parsed), and the tail (last generate completed -> last result: the last prompt's render
  and scoring, which nothing can overlap);
- the miner's own mean generation time as the audit measured it (request sent -> headers),
  which includes HTTP and the miner's server on this loaded machine, not only its 3 s sleep;
- the parent's history events per prompt (it must stay bounded: signals, not activities);
- requests the miners received (prompts plus any copy: what speculation costs in GPU work) and
  the pods' rented seconds (AuditResult.cost: deploy -> delete, warm-up included).

`--speculate` runs every scenario once more with SPECULATIVE_REEXECUTION=true (idle pods copy
the prompts a slower pod holds at the tail; the first settling result wins, the rest is revoked).

Render and scoring run in their own `worker.py --queues gpu` process at nice 10 (production runs
them on a GPU host; `--gpu-worker inline` runs them in the orchestrator worker's process).
It asserts nothing; compare the rows of one run (the machine's cores are shared by the server,
the workers, the miners and the renderer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHistory

from benchmarks.long_audit import start_dev_server
from demo.competition import DemoMiner, publish_round
from demo.static_server import StaticServer
from demo.tiny_model import build_tiny_dinov3
from models.audit import AuditResult
from models.constants import GPU_TASK_QUEUE, TASK_QUEUE, pod_child_id
from models.settings import Settings, load_settings
from starter import start_audit
from worker import running_workers

HOTKEY = "5PipelineBench"
GPU_WORKER_NICE = 10


@dataclass(frozen=True)
class Fault:
    """What is wrong with pod 1 in one audit: nothing, a slowdown factor, or a death."""

    slowdown: float | None = None
    dies_after: int | None = None
    speculate: bool = False

    @property
    def label(self) -> str:
        spec = " +spec" if self.speculate else ""
        if self.slowdown is not None:
            return f"pod 1 x{self.slowdown:g}{spec}"
        if self.dies_after is not None:
            return f"pod 1 dies@{self.dies_after}{spec}"
        return f"healthy{spec}"

    @property
    def key(self) -> str:
        """A file-name-safe tag (each audit gets its own directories)."""
        return self.label.replace(" ", "-").replace("@", "-")

    def ideal(self, prompts: int, pods: int, generation: float) -> float:
        """The lower bound on the span this fault allows (see the module docstring)."""
        if self.slowdown is not None:
            return prompts * generation / (pods - 1 + 1 / self.slowdown)
        if self.dies_after is not None:
            return (prompts + 0.5) * generation / pods
        return math.ceil(prompts / pods) * generation


@dataclass(frozen=True)
class Row:
    """One audit's measurements."""

    loops: int
    scenario: str
    span: float
    ideal: float
    prompts: int
    pods: int
    parent_events: int
    outcome: str
    start: float
    gap: float
    tail: float
    miner: float
    pods_started: int
    sent: int
    rented: float

    @property
    def ratio(self) -> float:
        return self.span / self.ideal

    @property
    def cost_ms(self) -> float:
        """Orchestration per prompt on a pod's critical path."""
        return max(self.span - self.ideal, 0.0) * self.pods / self.prompts * 1000


def bench_settings(
    root: Path, address: str, pods: int, loops: int, fault: Fault | None = None
) -> Settings:
    """Demo-like settings for one measured audit (no start delay, fast polls)."""
    fault = fault or Fault()
    tag = f"{loops}-{fault.key}"
    slowdown = {1: fault.slowdown} if fault.slowdown is not None else {}
    dies_after = {1: fault.dies_after} if fault.dies_after is not None else {}
    values = {
        "LOCAL_POD_SLOWDOWN": json.dumps(slowdown),
        "LOCAL_POD_DIES_AFTER": json.dumps(dies_after),
        "TEMPORAL_ADDRESS": address,
        "GPU_PROVIDERS": "local",
        "COMPETITION_REPO": str(root / "competition.git"),
        "WORK_DIR": str(root / f"work-{tag}"),
        "ARTIFACTS_DIR": str(root / f"artifacts-{tag}"),
        "LOCAL_ARTIFACTS_URL": "http://127.0.0.1:0",
        "LOCAL_PODS_DIR": str(root / f"pods-{tag}"),
        "DINOV3_MODEL": str(root / "dinov3-tiny"),
        "PODS_PER_MINER": str(pods),
        "INITIAL_POD_COUNT": str(pods),
        "MAX_POD_ATTEMPTS": str(max(pods, 6)),
        "MAX_PROMPT_ATTEMPTS": "1",
        "POD_START_DELAY": "0",
        "CHECK_POD_INTERVAL": "0.05",
        "MAX_CONCURRENT_PROMPTS_PER_POD": str(loops),
        "GENERATION_TIMEOUT": "60",
        "GENERATION_MEDIAN_LIMIT": "60",
        "ACCEPTABLE_DISTANCE": "0.005",
        "LOCAL_MINER_CALL_LOG": str(root / f"calls-{tag}.jsonl"),
        "SPECULATIVE_REEXECUTION": "true" if fault.speculate else "false",
    }
    for name, value in values.items():
        os.environ[name] = value
    return load_settings()


def activity_spans(
    history: WorkflowHistory, activity_type: str, results: list[dict[str, Any]] | None = None
) -> list[tuple[float, float]]:
    """(started, completed) epoch seconds of every completed `activity_type` in a history;
    their results (decoded JSON) are appended to `results` when given."""
    scheduled: dict[int, str] = {}
    started: dict[int, float] = {}
    spans = []
    for event in history.events:
        at = event.event_time.ToDatetime().timestamp()
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.HasField("activity_task_started_event_attributes"):
            started[event.activity_task_started_event_attributes.scheduled_event_id] = at
        elif event.HasField("activity_task_completed_event_attributes"):
            sid = event.activity_task_completed_event_attributes.scheduled_event_id
            if scheduled.get(sid) == activity_type and sid in started:
                spans.append((started[sid], at))
                payloads = event.activity_task_completed_event_attributes.result.payloads
                if results is not None and payloads:
                    results.append(json.loads(payloads[0].data))
    return sorted(spans)


def signal_times(history: WorkflowHistory, name: str) -> list[float]:
    """Event times (epoch seconds) of every signal `name` the workflow received."""
    times = []
    for event in history.events:
        if event.HasField("workflow_execution_signaled_event_attributes"):
            if event.workflow_execution_signaled_event_attributes.signal_name == name:
                times.append(event.event_time.ToDatetime().timestamp())
    return times


@contextlib.contextmanager
def gpu_worker_process(gpu_queue: str, log: Path) -> Iterator[None]:
    """`worker.py --queues gpu` in its own process at a lower CPU priority, as production runs
    render and scoring on their own host: here it shares the cores, but neither the GIL nor the
    scheduler's first pick with the pipeline."""
    env = {**os.environ, "GPU_TASK_QUEUE": gpu_queue}
    command = [sys.executable, "worker.py", "--queues", GPU_TASK_QUEUE]
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.nice(GPU_WORKER_NICE),
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for_pollers(client: Client, task_queue: str, limit_s: float = 120.0) -> None:
    """Until a worker polls `task_queue` for activities (the GPU worker has loaded its model)."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    deadline = time.monotonic() + limit_s
    while not (await client.workflow_service.describe_task_queue(request)).pollers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no worker polls {task_queue} after {limit_s:.0f} s")
        await asyncio.sleep(0.2)


def miner_idle_gaps(call_log: Path) -> list[float]:
    """Seconds each miner sat idle between answering one request and receiving the next (its
    own call log: `ok`/`failed` when it answers, `received` when the next request has arrived)."""
    by_miner: dict[int, list[dict[str, Any]]] = {}
    for line in call_log.read_text().splitlines():
        call = json.loads(line)
        by_miner.setdefault(call["port"], []).append(call)
    gaps = []
    for calls in by_miner.values():
        answered: float | None = None
        for call in sorted(calls, key=lambda c: c["at"]):
            if call["status"] == "received" and answered is not None:
                gaps.append(call["at"] - answered)
            answered = call["at"] if call["status"] in ("ok", "failed") else None
    return gaps


async def measure(
    client: Client, root: Path, www: StaticServer, round_number: int, args: argparse.Namespace
) -> Row:
    """Publish a round, run one audit with `args.loops_now` loops per pod, measure it."""
    loops: int = args.loops_now
    fault: Fault = args.fault_now
    address = client.service_client.config.target_host
    settings = bench_settings(root, address, args.pods, loops, fault)
    miner = DemoMiner(
        hotkey=HOTKEY, label="honest", image=f"local/reference-miner?delay={args.generation}"
    )
    publish_round(
        root / "competition.git", root / "www", www.base_url, round_number, [miner], args.prompts
    )
    queue = f"bench-{loops}-{time.monotonic_ns()}"
    gpu_queue = f"{queue}-gpu"
    async with contextlib.AsyncExitStack() as stack:
        queues: tuple[str, ...] = (TASK_QUEUE, GPU_TASK_QUEUE)
        if args.gpu_worker == "process":
            queues = (TASK_QUEUE,)
            stack.enter_context(gpu_worker_process(gpu_queue, root / f"gpu-worker-{loops}.log"))
        await stack.enter_async_context(
            running_workers(client, settings, queues, task_queue=queue, gpu_task_queue=gpu_queue)
        )
        if args.gpu_worker == "process":
            await wait_for_pollers(client, gpu_queue)
        policy = settings.audit_policy().model_copy(update={"gpu_task_queue": gpu_queue})
        handle = await start_audit(client, round_number, HOTKEY, task_queue=queue, policy=policy)
        result: AuditResult = await handle.result()
    history = await handle.fetch_history()
    ready = signal_times(history, "pod_ready")
    results = signal_times(history, "pod_result")
    generates = []
    answers: list[dict[str, Any]] = []
    for index in range(result.pods_started):
        pod = client.get_workflow_handle(
            pod_child_id(handle.id, index, handle.first_execution_run_id)
        )
        generates.append(activity_spans(await pod.fetch_history(), "generate", answers))
    call_log = root / f"calls-{loops}-{fault.key}.jsonl"
    idle = miner_idle_gaps(call_log)
    sent = sum(1 for line in call_log.read_text().splitlines() if '"received"' in line)
    return Row(
        loops=loops,
        scenario=fault.label,
        span=max(results) - min(ready),
        ideal=fault.ideal(args.prompts, args.pods, args.generation),
        prompts=args.prompts,
        pods=args.pods,
        parent_events=len(history.events),
        outcome=result.audit.outcome.value,
        start=min(spans[0][0] for spans in generates if spans) - min(ready),
        gap=statistics.mean(idle) if idle else 0.0,
        # (a revoked copy's generation may answer after the last result: it is not the tail)
        tail=max(results)
        - max(end for spans in generates for _, end in spans if end <= max(results)),
        miner=statistics.mean(float(a["generation_time"]) for a in answers),
        pods_started=result.pods_started,
        sent=sent,
        rented=result.cost.rented_seconds if result.cost is not None else 0.0,
    )


async def main(argv: Sequence[str] | None = None) -> None:
    """Run the side-by-side measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--pods", type=int, default=2)
    parser.add_argument("--generation", type=float, default=3.0, help="seconds per generation")
    parser.add_argument("--loops", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--straggler",
        type=float,
        default=None,
        help="also run each audit with pod 1's miner this many times slower",
    )
    parser.add_argument(
        "--dying",
        type=int,
        default=None,
        metavar="K",
        help="also run each audit with pod 1's miner dying half-way through its generation K+1",
    )
    parser.add_argument(
        "--speculate",
        action="store_true",
        help="also run every scenario with SPECULATIVE_REEXECUTION on, side by side",
    )
    parser.add_argument(
        "--gpu-worker",
        choices=["process", "inline"],
        default="process",
        help="render + score in their own worker process (production's layout, default) or in "
        "the orchestrator worker's process",
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        build_tiny_dinov3(root / "dinov3-tiny")
        env = await start_dev_server()
        try:
            with StaticServer(root / "www") as www:
                scenarios = [Fault()]
                if args.straggler is not None:
                    scenarios.append(Fault(slowdown=args.straggler))
                if args.dying is not None:
                    scenarios.append(Fault(dies_after=args.dying))
                if args.speculate:
                    scenarios = [
                        variant
                        for fault in scenarios
                        for variant in (fault, dataclasses.replace(fault, speculate=True))
                    ]
                number = 0
                for loops in args.loops:
                    for fault in scenarios:
                        number += 1
                        args.loops_now, args.fault_now = loops, fault
                        rows.append(await measure(env.client, root, www, number, args))
        finally:
            await env.shutdown()
    print(
        f"\n{args.prompts} prompts, {args.pods} pods, {args.generation:g} s generations "
        f"(ideal {rows[0].ideal:.1f} s)"
    )
    print(
        "loops/pod  scenario               ideal s  span s  ratio  cost/prompt on critical path  "
        "(start  GPU gap  tail)  miner s  parent events/prompt  pods started  requests  "
        "rented s  verdict"
    )
    for row in rows:
        print(
            f"{row.loops:>9}  {row.scenario:<21} {row.ideal:7.1f}  {row.span:6.1f}  "
            f"{row.ratio:5.3f}  {row.cost_ms:24.0f} ms  "
            f"({row.start * 1000:4.0f} ms {row.gap * 1000:5.0f} ms {row.tail * 1000:5.0f} ms)"
            f"  {row.miner:7.3f}  {row.parent_events / row.prompts:20.1f}  "
            f"{row.pods_started:12}  {row.sent:8}  {row.rented:8.1f}  {row.outcome}"
        )


if __name__ == "__main__":
    asyncio.run(main())
