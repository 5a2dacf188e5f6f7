"""Benchmark: how far one worker and one dev server scale (fake activities, real workflows).

    .venv/bin/python -m benchmarks.scale            # ~5 min: 128 x 4, 4 x (128 x 4), 512 x 16; 2 s
    .venv/bin/python -m benchmarks.scale --quick    # ~1 min: 32 x 4, 4 x (32 x 4), 128 x 16; 0.5 s

Three scenarios, each on a fresh in-memory dev server with the project's dynamic config
(`benchmarks.long_audit.start_dev_server`) and ONE worker in this process with worker.py's slot
defaults (`benchmarks.long_audit.fake_audit_worker`: 100 workflow tasks, 200 activities) serving
every audit on one task queue, as a single orchestrator host would:

- base:       1 audit  x `--prompts` prompts x `--pods` pods (the unit the others are compared to);
- concurrent: `--audits` audits at once, each `--prompts` x `--pods` (issue 14: 4 x 128 x 4);
- large:      1 audit x (`--scale` x prompts) x (`--scale` x pods) (issue 14: 512 x 16).

Activities are `testing.fakes.FakeWorld`'s, `generate` sleeping `--generation` seconds
(`benchmarks.long_audit.timed_activities`); every pod starts at once (initial_pod_count = pods)
and runs the policy's default loops per pod. A small audit warms each worker up first, unmeasured.

Printed per scenario (markdown): wall time (first start -> last result) over the ideal
`ceil(prompts / pods) x generation` of one audit (its pods generating back to back from t = 0),
each audit's generation makespan over the same ideal, the start (started -> first generate) and
the finish (last generate -> result), overhead per prompt on a pod's critical path
`(wall - ideal) x pods / prompts`; history events per prompt and per workflow run (parent and
pods, every continue-as-new run counted; the longest run against the server's 51,200-event hard
limit and the 4,096 at which it suggests continuing); CPU seconds of this process (worker + SDK
core) and of the dev server over the wall time, as ms per prompt and as a share of this
machine's cores, next to the whole machine's busy share (/proc/stat: other work counts); peak
RSS of both (sampled every 0.2 s); and the workflow task latency from the histories: schedule ->
start (waiting for a worker slot or for a core) and start -> complete (the worker's processing).

Then the growth from base to large (x scale prompts): each per-prompt cost large / base, 1.00 =
linear; and which limit comes first, the largest share of its limit among: CPU (the machine's
busy share), workflow task slots (workflows open at once / 100: a workflow has at most one task
in flight, so the slots cannot run short before that), one parent's tasks (the busiest audit
parent's share of the wall time with a workflow task in flight: every pod's results go through
that one workflow, one task at a time), history (longest run / hard limit) and memory (peak RSS
/ this machine's RAM). A long schedule -> start with slots to spare is the CPU.

It asserts nothing. The worker and the server share this machine's cores; compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHistory

from benchmarks.histories import AuditHistories, audit_histories
from benchmarks.long_audit import (
    HARD_EVENT_LIMIT,
    STOCK_SUGGEST_THRESHOLD,
    GenerateSpans,
    fake_audit_worker,
    long_audit_world,
    start_dev_server,
    timed_activities,
)
from benchmarks.temporal_cost import CPU_CLOCKS
from models.audit import AuditInput, AuditResult, ReadRoundFilesInput
from models.competition import RoundFiles
from models.constants import pod_name_prefix
from testing.fakes import FakeWorld

RSS_SAMPLE_SECONDS = 0.2

WORKFLOW_TASK_SLOTS = 100
"""`fake_audit_worker`'s max_concurrent_workflow_tasks (worker.py's MAX_CONCURRENT_WORKFLOW_TASKS
default). A workflow has at most one task in flight, so the slots can only run short when more
workflows than that are open at once."""


@dataclass(frozen=True)
class Scenario:
    """Audits started at once, each of `prompts` prompts on `pods` pods."""

    label: str
    audits: int
    prompts: int
    pods: int


# --- resources -----------------------------------------------------------------------------------


def _rss_bytes(pid: int | str) -> int:
    """Resident set size of one process (Linux /proc; 0 where unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children() -> list[str]:
    """Pids whose parent is this process (the dev server)."""
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == me:
            pids.append(stat.parent.name)
    return pids


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, every core and process (Linux
    /proc/stat, in ticks; (0, 0) elsewhere)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_memory_bytes() -> int:
    """Physical memory of this machine (0 where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class RssSampler:
    """Peak RSS of this process and of its children, sampled while it runs."""

    def __init__(self) -> None:
        self.worker = 0
        self.server = 0
        self._task: asyncio.Task[None] | None = None

    def _sample(self, children: Sequence[str]) -> None:
        self.worker = max(self.worker, _rss_bytes(os.getpid()))
        self.server = max(self.server, sum(_rss_bytes(pid) for pid in children))

    async def _loop(self) -> None:
        children = _children()
        while True:
            self._sample(children)
            await asyncio.sleep(RSS_SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.ensure_future(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sample(_children())


# --- workflow task latency -----------------------------------------------------------------------


def task_latencies(history: WorkflowHistory) -> tuple[list[float], list[float]]:
    """(schedule -> start, start -> complete) seconds of every workflow task of one run."""
    scheduled: dict[int, float] = {}
    started: dict[int, float] = {}
    waits: list[float] = []
    runs: list[float] = []
    for event in history.events:
        at = event.event_time.ToMicroseconds() / 1e6
        if event.HasField("workflow_task_scheduled_event_attributes"):
            scheduled[event.event_id] = at
        elif event.HasField("workflow_task_started_event_attributes"):
            attrs = event.workflow_task_started_event_attributes
            if attrs.scheduled_event_id in scheduled:
                waits.append(at - scheduled[attrs.scheduled_event_id])
            started[event.event_id] = at
        elif event.HasField("workflow_task_completed_event_attributes"):
            attrs_c = event.workflow_task_completed_event_attributes
            if attrs_c.started_event_id in started:
                runs.append(at - started[attrs_c.started_event_id])
    return waits, runs


def task_busy_seconds(history: WorkflowHistory) -> float:
    """Seconds one run had a workflow task in flight (scheduled -> completed or failed): a
    workflow runs one task at a time, so this over the wall time is how busy it was."""
    scheduled: float | None = None
    busy = 0.0
    for event in history.events:
        at = event.event_time.ToMicroseconds() / 1e6
        if event.HasField("workflow_task_scheduled_event_attributes"):
            scheduled = at if scheduled is None else scheduled
        elif scheduled is not None and (
            event.HasField("workflow_task_completed_event_attributes")
            or event.HasField("workflow_task_failed_event_attributes")
            or event.HasField("workflow_task_timed_out_event_attributes")
        ):
            busy += at - scheduled
            scheduled = None
    return busy


def _p95(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


# --- running -------------------------------------------------------------------------------------


def any_hotkey_activities(world: FakeWorld, activities: Sequence[Any]) -> list[Any]:
    """`activities` with a `read_round_files` that serves `world.files` under any hotkey, so one
    worker (one FakeWorld) serves several audits; the other fakes key on prompt stems."""

    @activity.defn(name="read_round_files")
    async def read_round_files(input: ReadRoundFilesInput) -> RoundFiles:
        return world.files.model_copy(update={"hotkey": input.hotkey})

    return [
        read_round_files if getattr(a, "__name__", "") == "read_round_files" else a
        for a in activities
    ]


@dataclass(frozen=True)
class Measured:
    """One scenario's figures."""

    scenario: Scenario
    generation: float
    wall: float
    makespans: list[float]  # per audit: first generate start -> last end
    starts: list[float]  # per audit: started -> its first generate started
    finishes: list[float]  # per audit: its last generate ended -> all results in
    machine_busy: float  # share of the machine's cores busy over the wall time, every process
    outcomes: list[str]
    generations: int
    histories: list[AuditHistories]
    cpu: dict[str, float]  # CPU_CLOCKS name -> seconds over the wall time
    rss_worker: int
    rss_server: int
    task_waits: list[float]
    task_runs: list[float]
    parent_busy: float  # the busiest audit's parent: share of the wall time with a task in flight

    @property
    def total_prompts(self) -> int:
        return self.scenario.audits * self.scenario.prompts

    @property
    def ideal(self) -> float:
        """One audit's pods generating back to back from t = 0 (audits run side by side)."""
        return math.ceil(self.scenario.prompts / self.scenario.pods) * self.generation

    @property
    def overhead_ms(self) -> float:
        """Per prompt on a pod's critical path: (wall - ideal) x pods / prompts."""
        s = self.scenario
        return (self.wall - self.ideal) * s.pods / s.prompts * 1000

    def cpu_ms_per_prompt(self, clock: str) -> float:
        return self.cpu[clock] / self.total_prompts * 1000

    @property
    def cpu_share(self) -> float:
        """Worker + server CPU over the wall time, as a share of this machine's cores (the rest
        of `machine_busy` is other work on the machine)."""
        return sum(self.cpu.values()) / self.wall / (os.cpu_count() or 1)

    @property
    def workflows(self) -> int:
        """Workflow ids open during the scenario: every audit and each of its pod children."""
        return sum(1 + len(h.pods) for h in self.histories)

    @property
    def runs(self) -> int:
        return sum(len(h.parent) + len(h.pod_runs) for h in self.histories)

    @property
    def events(self) -> int:
        return sum(r.events for h in self.histories for r in [*h.parent, *h.pod_runs])

    @property
    def max_run_events(self) -> int:
        return max(max(h.max_parent_events, h.max_pod_events) for h in self.histories)

    @property
    def continues(self) -> int:
        return sum(h.parent_continues + h.pod_continues for h in self.histories)

    def parent_events(self) -> list[int]:
        return [r.events for h in self.histories for r in h.parent]

    def pod_events(self) -> list[int]:
        return [r.events for h in self.histories for r in h.pod_runs]


async def warm_up(client: Client) -> None:
    """A small unmeasured audit: the worker's first one pays its imports."""
    world = long_audit_world(4, 2, 2, 0.0)
    queue = f"warm-{uuid.uuid4()}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    async with fake_audit_worker(client, queue, world.activities()):
        await client.execute_workflow(
            "AuditWorkflow",
            AuditInput(round=world.files.round, hotkey=world.files.hotkey, policy=world.policy),
            id=f"audit-warm-{uuid.uuid4()}",
            task_queue=queue,
            result_type=AuditResult,
        )


async def run_scenario(scenario: Scenario, generation: float) -> Measured:
    """Start the scenario's audits at once on one worker and a fresh dev server; measure."""
    env = await start_dev_server()
    try:
        client = env.client
        await warm_up(client)
        world = long_audit_world(scenario.prompts, scenario.pods, scenario.pods, generation)
        queue = f"scale-{uuid.uuid4()}"
        world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
        spans = GenerateSpans()
        activities = any_hotkey_activities(world, timed_activities(world, generation, spans))
        hotkeys = [f"5Scale{i}" for i in range(scenario.audits)]
        async with fake_audit_worker(client, queue, activities):
            with RssSampler() as rss:
                cpu_started = {name: clock() for name, clock in CPU_CLOCKS.items()}
                busy_started, total_started = machine_cpu()
                started = time.monotonic()
                handles = [
                    await client.start_workflow(
                        "AuditWorkflow",
                        AuditInput(round=world.files.round, hotkey=hotkey, policy=world.policy),
                        id=f"audit-{world.files.round}-{hotkey}-{uuid.uuid4()}",
                        task_queue=queue,
                        result_type=AuditResult,
                    )
                    for hotkey in hotkeys
                ]
                results = await asyncio.gather(*(h.result() for h in handles))
                wall = time.monotonic() - started
                cpu = {name: clock() - cpu_started[name] for name, clock in CPU_CLOCKS.items()}
                busy, total = machine_cpu()
                machine_busy = (busy - busy_started) / max(total - total_started, 1.0)
        histories = []
        for handle in handles:
            first_run = handle.first_execution_run_id
            if first_run is None:
                raise RuntimeError(f"{handle.id} started without a run id")
            histories.append(await audit_histories(client, handle.id, first_run))
    finally:
        await env.shutdown()
    waits: list[float] = []
    task_runs: list[float] = []
    for h in histories:
        for run in [*h.parent, *h.pod_runs]:
            w, r = task_latencies(run.history)
            waits += w
            task_runs += r
    makespans, starts, finishes = [], [], []
    for hotkey in hotkeys:
        prefix = f"http://{pod_name_prefix(world.files.round, hotkey)}"
        mine = [s for url, ss in spans.by_pod.items() if url.startswith(prefix) for s in ss]
        first, last = min(s for s, _ in mine), max(e for _, e in mine)
        makespans.append(last - first)
        starts.append(first - started)
        finishes.append(started + wall - last)
    return Measured(
        scenario=scenario,
        generation=generation,
        wall=wall,
        makespans=makespans,
        starts=starts,
        finishes=finishes,
        machine_busy=machine_busy,
        outcomes=sorted({r.audit.outcome.value for r in results}),
        generations=sum(r.generations for r in results),
        histories=histories,
        cpu=cpu,
        rss_worker=rss.worker,
        rss_server=rss.server,
        task_waits=waits,
        task_runs=task_runs,
        parent_busy=max(sum(task_busy_seconds(r.history) for r in h.parent) for h in histories)
        / wall,
    )


# --- report --------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def report(measured: Sequence[Measured]) -> str:
    """Per-scenario table, growth base -> large, and the limit each scenario is closest to."""
    lines = [
        "| scenario | prompts | wall s | ideal s | wall / ideal | audit makespan / ideal "
        "| start s (to first generate), finish s (last generate to result) "
        "| overhead ms/prompt | verdicts, generations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measured:
        spans = ", ".join(f"{s / m.ideal:.2f}" for s in m.makespans)
        lines.append(
            f"| {m.scenario.label} | {m.total_prompts} | {m.wall:.1f} | {m.ideal:.1f} "
            f"| {m.wall / m.ideal:.3f} | {spans} "
            f"| {max(m.starts):.1f}, {max(m.finishes):.1f} | {m.overhead_ms:.0f} "
            f"| {'/'.join(m.outcomes)}, {m.generations} |"
        )
    lines += [
        "",
        "| scenario | runs (continue-as-new) | events/prompt | parent run events "
        "| pod run events: mean, max | longest run / 51,200 hard limit "
        "| wf task schedule->start ms: mean, p95, max | start->complete ms: mean, p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in measured:
        pods = m.pod_events()
        parents = m.parent_events()
        lines.append(
            f"| {m.scenario.label} | {m.runs} ({m.continues}) "
            f"| {m.events / m.total_prompts:.1f} "
            f"| {', '.join(str(e) for e in parents[:6])}{' ...' if len(parents) > 6 else ''} "
            f"| {statistics.mean(pods):.0f}, {max(pods)} "
            f"| {m.max_run_events / HARD_EVENT_LIMIT:.1%} "
            f"(suggest at {STOCK_SUGGEST_THRESHOLD}) "
            f"| {statistics.mean(m.task_waits) * 1000:.0f}, {_p95(m.task_waits) * 1000:.0f}, "
            f"{max(m.task_waits) * 1000:.0f} "
            f"| {statistics.mean(m.task_runs) * 1000:.0f}, {_p95(m.task_runs) * 1000:.0f} |"
        )
    memory = machine_memory_bytes()
    cores = os.cpu_count() or 1
    lines += [
        "",
        f"| scenario | CPU ms/prompt: worker + server | CPU share of {cores} cores: ours, "
        "machine (every process) | peak RSS MiB: worker, server | limits (share of each) "
        "| first limit |",
        "|---|---|---|---|---|---|",
    ]
    for m in measured:
        limits = {
            "CPU": m.machine_busy,
            "workflow task slots": m.workflows / WORKFLOW_TASK_SLOTS,
            "one parent's tasks": m.parent_busy,
            "history": m.max_run_events / HARD_EVENT_LIMIT,
            "memory": (m.rss_worker + m.rss_server) / memory if memory else 0.0,
        }
        first = max(limits, key=lambda k: limits[k])
        shares = ", ".join(f"{k} {v:.0%}" for k, v in limits.items())
        lines.append(
            f"| {m.scenario.label} | {m.cpu_ms_per_prompt('process'):.0f} "
            f"+ {m.cpu_ms_per_prompt('server'):.0f} | {m.cpu_share:.0%}, {m.machine_busy:.0%} "
            f"| {_mib(m.rss_worker)}, {_mib(m.rss_server)} | {shares} | {first} |"
        )
    base = next((m for m in measured if m.scenario.label == "base"), None)
    large = next((m for m in measured if m.scenario.label == "large"), None)
    if base and large:
        factor = large.total_prompts / base.total_prompts

        def growth(name: str, b: float, g: float) -> str:
            return f"| {name} | {b:.1f} | {g:.1f} | {g / b:.2f} |" if b else f"| {name} | 0 | - |"

        lines += [
            "",
            f"Growth base -> large ({base.total_prompts} -> {large.total_prompts} prompts, "
            f"x{factor:g}); per prompt, 1.00 = linear:",
            "",
            "| per prompt | base | large | large / base |",
            "|---|---|---|---|",
            growth("overhead ms", base.overhead_ms, large.overhead_ms),
            growth(
                "CPU ms (worker + server)",
                sum(base.cpu.values()) / base.total_prompts * 1000,
                sum(large.cpu.values()) / large.total_prompts * 1000,
            ),
            growth(
                "history events",
                base.events / base.total_prompts,
                large.events / large.total_prompts,
            ),
            growth(
                "parent events (all runs)",
                sum(base.parent_events()) / base.total_prompts,
                sum(large.parent_events()) / large.total_prompts,
            ),
            growth(
                "wf task schedule->start ms (mean)",
                statistics.mean(base.task_waits) * 1000,
                statistics.mean(large.task_waits) * 1000,
            ),
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: issue 14's sizes, about 5 minutes on 2 cores)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prompts", type=int, default=128, help="prompts per audit (base)")
    parser.add_argument("--pods", type=int, default=4, help="pods per audit (base)")
    parser.add_argument("--audits", type=int, default=4, help="audits of the concurrent scenario")
    parser.add_argument("--scale", type=int, default=4, help="large = scale x prompts, x pods")
    parser.add_argument("--generation", type=float, default=2.0, help="fake generate, seconds")
    parser.add_argument(
        "--quick", action="store_true", help="32 prompts, 0.5 s generations (make bench)"
    )
    parser.add_argument(
        "--only", choices=["base", "concurrent", "large"], nargs="+", help="run only these"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.generation = 32, 0.5
    return args


async def main(argv: Sequence[str] | None = None) -> None:
    """Run the scenarios one after the other and print the tables."""
    args = parse_args(argv)
    scenarios = [
        Scenario("base", 1, args.prompts, args.pods),
        Scenario(f"concurrent ({args.audits} audits)", args.audits, args.prompts, args.pods),
        Scenario("large", 1, args.prompts * args.scale, args.pods * args.scale),
    ]
    scenarios = [s for s in scenarios if not args.only or s.label.split()[0] in args.only]
    measured = []
    for s in scenarios:
        print(
            f"{s.label}: {s.audits} x {s.prompts} prompts x {s.pods} pods, "
            f"{args.generation:g} s generations ..."
        )
        measured.append(await run_scenario(s, args.generation))
        print(f"  {measured[-1].wall:.1f} s")
    print()
    print(
        f"one worker (100 workflow task slots) + one in-memory dev server on {os.cpu_count()} "
        f"cores, fake activities, {args.generation:g} s generations, all pods at once"
    )
    print(report(measured))


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal bridge's threads can abort CPython's finalization (see temporal_cost.py).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
