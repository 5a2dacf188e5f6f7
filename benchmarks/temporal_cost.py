"""Benchmark: what does Temporal cost? The same fake audit through our workflows and a plain loop.

    .venv/bin/python -m benchmarks.temporal_cost     # ~3 min: 256 prompts x 8 pods, 0.05 s + 1 s
    .venv/bin/python -m benchmarks.temporal_cost --prompts 32 --pods 4 --generation 0.05 0.2

For each generation time the same audit (an honest miner, `--prompts` prompts, `--pods` pods all
started at once, `--loops` loops per pod sharing the pod's GPU slot, every result a match) runs
both ways, alternated `--repeats` times (figures are medians), each time with fresh
`testing.fakes.FakeWorld` activities whose `generate` sleeps the generation time
(`benchmarks.long_audit.timed_activities`):

(a) Temporal: AuditWorkflow + PodWorkflow children on an in-memory dev server with the project's
    dynamic config (`benchmarks.long_audit.start_dev_server` / `run_fake_audit`); one worker in
    this process runs the workflows and the fake activities. Wall time: start_workflow -> result.
    A small audit runs first, unmeasured, so the worker is warm as a long-lived one is.
(b) plain asyncio: upstream's architecture in one event loop, no Temporal. One coroutine per pod
    deploys it, waits until healthy, runs `--loops` loops and deletes it; each loop takes the next
    prompt from the shared queue with the SAME pure policy code the workflows use
    (`workflows.policy.coordinator`: seed / find / has_work / lock / record /
    next_lock_expiry / mismatch_count; `workflows.policy.pod_tracker`: accepts_retries / record /
    termination_reason / to_stats; `workflows.policy.verdict.decide`), then awaits the SAME fake
    activity functions directly, in the pod workflow's order: fetch the submitted preview
    (beside the rest) -> fetch_prompt -> generate (holding the pod's GPU lock) -> render_preview
    -> score_distance, and records the result. The audit reads the round files, prefetches the
    prompts, commits generated.json as AuditWorkflow does (first change at once, then at most
    every GENERATED_COMMIT_INTERVAL), and once no pod has work left, sweeps and writes the
    verdict. Wall time: read -> verdict.

What (b) leaves out is exactly what Temporal buys: durability (a crash of (b) loses the audit and
leaks its rented pods; (a) resumes from its history on any worker), retries and timeouts of every
call (activity retry policies, heartbeats, schedule-to-close bounds), the event history itself
(every step recorded and replayable: audit trail, `progress` query, continue-as-new), the
watchdogs (stuck or vanished pods, a gone audit, our own outages) and the replacement of bad
pods. With an honest fake miner none of those paths runs in (a) either, so the difference of the
wall times is the price of the happy path: serialization, gRPC to the server, history writes,
workflow tasks and signals between parent and pods.

Printed for each generation time (markdown tables):
- wall time of (a) and (b), and the generation makespan (first generate start -> last end);
- the ideal lower bound `ceil(prompts / pods) x generation time`: every pod generating back to
  back from t = 0 (a pod's loops share one GPU slot, so more loops do not lower it);
- wall / ideal of each, the ratio wall (a) / wall (b);
- Temporal's overhead per prompt on a pod's critical path, relative to (b):
  `(wall_a - wall_b) x pods / prompts`, and that as a share of upstream's real 60 s and 110 s
  generations (`overhead / 60 s`, `overhead / 110 s`), against the targets of issue 14: < 1 % at
  60-110 s generations, <= 30 ms per prompt on the embedded server. Reported, not asserted;
- that overhead split in two: the GPU hand-over, the mean time a pod sits idle between the end
  of one generation and the start of its next (in (a): generate completed -> pod workflow task
  -> next generate started; it is paid once per prompt), and what is left of wall_a - wall_b
  once the hand-overs are taken out, paid once per audit: the start (read, pods acquired and
  ready, first assignments) and the finish (last results, stop the pods, sweep, verdict). An
  audit of n prompts per pod pays `hand-over + start_finish / n` per prompt;
- CPU per prompt, measured the same way for both: this process (the worker and the SDK's core
  threads, or the plain loop) and the dev server process (idle during (b)), over the wall time,
  divided by the prompts (start and finish included); and history events per prompt of (a),
  parent and pod runs together.

It asserts nothing. Both ways share this machine's cores with the dev server, so compare rows of
one run; the overhead measured at a short generation is an upper bound (CPU-bound: the worker,
the server and the pods' hand-overs compete), the one at the longest generation is the figure to
extrapolate from.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client

from benchmarks.long_audit import (
    GenerateSpans,
    long_audit_world,
    run_fake_audit,
    start_dev_server,
    timed_activities,
)
from models.audit import (
    ArtifactResult,
    AwaitPodHealthyInput,
    DeletePodInput,
    DeployPodInput,
    FetchArtifactInput,
    FetchPromptInput,
    GenerateInput,
    GenerateResult,
    JsonFileWrite,
    PodRef,
    PodTracker,
    PrefetchPromptsInput,
    PrefetchPromptsResult,
    QueuedPrompt,
    ReadRoundFilesInput,
    RenderPreviewInput,
    ScoreDistanceInput,
    ScoreDistanceResult,
    SweepPodsInput,
    WriteFilesInput,
    WriteFilesResult,
)
from models.competition import CompetitionPaths, GenerationEntry, RoundFiles
from models.constants import pod_name_prefix, short_pod_id, upstream_pod_name
from testing.fakes import FakeWorld
from workflows.audit import commit_message
from workflows.policy import coordinator, pod_tracker, verdict

UPSTREAM_GENERATION_SECONDS = (60.0, 110.0)
"""Upstream's real generation times (the range the overhead is extrapolated to)."""

TARGET_SHARE = 0.01
"""Issue 14: Temporal's overhead under 1 % of a 60-110 s generation."""

TARGET_MS = 30.0
"""Issue 14: at most 30 ms per prompt on the embedded server."""


# --- (b): the plain asyncio audit ----------------------------------------------------------------


@dataclass
class _Pod:
    """One pod of the plain audit: upstream's tracker and GPU slot."""

    index: int
    name: str
    short_id: str
    ref: PodRef
    gpu: asyncio.Lock = field(default_factory=asyncio.Lock)
    tracker: PodTracker = field(default_factory=PodTracker)
    stopped: bool = False


@dataclass
class PlainOutcome:
    """What the plain audit decided (to check both ways did the same work)."""

    outcome: str
    generations: int


class PlainAudit:
    """Upstream's architecture: one coroutine per pod pulling prompts off a shared queue.

    Same queue and tracker rules as AuditWorkflow (the pure `workflows.policy` code), same
    activity functions, awaited directly; see the module docstring for what it leaves out.
    """

    def __init__(self, world: FakeWorld, activities: Sequence[Callable[..., Any]]) -> None:
        self.world = world
        self.policy = world.policy
        self.act: dict[str, Callable[..., Any]] = {a.__name__: a for a in activities}
        self.prompts: dict[str, QueuedPrompt] = {}
        self.files: RoundFiles | None = None
        self.image = ""
        self.generations = 0
        self.early_stop: str | None = None
        self.pod_stats: dict[str, Any] = {}
        self.dirty = False
        self.last_commit: float | None = None
        self.commit: asyncio.Task[WriteFilesResult] | None = None
        self.changed = asyncio.Event()

    def _files(self) -> RoundFiles:
        if self.files is None:
            raise RuntimeError("round files used before they were read")
        return self.files

    async def run(self) -> PlainOutcome:
        """Read, generate on every pod until the queue is done, write the verdict."""
        policy = self.policy
        files: RoundFiles = await self.act["read_round_files"](
            ReadRoundFilesInput(
                round=self.world.files.round,
                hotkey=self.world.files.hotkey,
                competition_repo=policy.competition_repo,
            )
        )
        self.files = files
        if files.build is None or files.build.docker_image is None:
            raise RuntimeError("the benchmark's miner has a runnable build")
        self.image = files.build.docker_image
        audited = set(files.audited_stems())
        for prompt in files.prompts:
            if prompt.stem not in audited:
                continue
            submitted = files.submitted.get(prompt.stem)
            queued = QueuedPrompt(
                stem=prompt.stem,
                url=prompt.url,
                submitted_glb_url=submitted.glb if submitted else None,
            )
            coordinator.seed(queued, files.generated.get(prompt.stem), policy)
            self.prompts[prompt.stem] = queued
        prefetch = asyncio.ensure_future(
            self.act["prefetch_prompts"](
                PrefetchPromptsInput(
                    round=files.round,
                    urls=[p.url for p in self.prompts.values() if not p.done],
                )
            )
        )
        pods = [asyncio.ensure_future(self._pod(i)) for i in range(policy.pods_per_miner)]
        prefetched: PrefetchPromptsResult = await prefetch
        for queued in self.prompts.values():
            if queued.url in prefetched.unavailable and not queued.done:
                queued.done = True
        await asyncio.gather(*pods)
        if self.commit is not None:
            await self.commit
        await self.act["sweep_pods"](
            SweepPodsInput(
                prefix=pod_name_prefix(files.round, files.hotkey),
                providers=sorted(set(policy.gpu_providers)),
            )
        )
        best = {s: p.best for s, p in self.prompts.items() if p.best is not None}
        audit = verdict.decide(
            files.hotkey, files.audited_stems(), best, files.critical_prompts, policy
        )
        writes = [
            *self._progress_files(),
            JsonFileWrite(
                path=CompetitionPaths.generation_audits(files.round),
                value=audit.model_dump(mode="json"),
                merge_key=files.hotkey,
            ),
        ]
        await self.act["write_files"](
            WriteFilesInput(
                message=commit_message(files, generated=True, stats=True, audits=True),
                files=writes,
                competition_repo=policy.competition_repo,
            )
        )
        return PlainOutcome(outcome=audit.outcome.value, generations=self.generations)

    async def _pod(self, index: int) -> None:
        """Acquire one pod, run its loops until no work is left for it, delete it."""
        files = self._files()
        policy = self.policy
        name = upstream_pod_name(files.round, files.hotkey, index)
        providers = policy.gpu_providers
        ref: PodRef = await self.act["deploy_pod"](
            DeployPodInput(name=name, provider=providers[index % len(providers)], image=self.image)
        )
        ref = await self.act["await_pod_healthy"](
            AwaitPodHealthyInput(
                pod=ref,
                timeout=timedelta(seconds=policy.pod_warmup_timeout_seconds),
                visibility_timeout=timedelta(seconds=policy.pod_visibility_timeout_seconds),
                poll_interval=timedelta(seconds=policy.check_pod_interval_seconds),
            )
        )
        pod = _Pod(index=index, name=name, short_id=short_pod_id(name), ref=ref)
        try:
            loops = max(1, policy.max_concurrent_prompts_per_pod)
            await asyncio.gather(*(self._loop(pod) for _ in range(loops)))
        finally:
            await self.act["delete_pod"](DeletePodInput(pod=ref))
            self.pod_stats[name] = pod_tracker.to_stats(pod.tracker, name).model_dump(mode="json")
            self.dirty = True

    async def _loop(self, pod: _Pod) -> None:
        """One of a pod's loops: take the next prompt, process it, record it, repeat."""
        policy = self.policy
        while not pod.stopped and self.early_stop is None:
            now = datetime.now(UTC)
            allow_retry = pod_tracker.accepts_retries(pod.tracker, policy)
            prompt, is_retry = coordinator.find(
                self.prompts, pod.short_id, allow_retry, now, policy
            )
            if prompt is None:
                if not coordinator.has_work(self.prompts, pod.short_id, allow_retry, now, policy):
                    return  # upstream: "no work available"
                # Others hold what is left: wait for a result or the next lock expiry.
                changed = self.changed
                expiry = coordinator.next_lock_expiry(self.prompts.values(), now)
                wait = (expiry - now).total_seconds() if expiry else 1.0
                try:
                    await asyncio.wait_for(changed.wait(), timeout=max(wait, 0.001))
                except TimeoutError:
                    pass
                continue
            coordinator.lock(prompt, pod.short_id, now, policy)
            prompt.issued += 1
            entry = await self._process(pod, prompt, f"{prompt.stem}#{prompt.issued}")
            if entry is None:  # skipped at the GPU slot: the pod stopped meanwhile
                coordinator.unlock(prompt)
                continue
            self._record(pod, prompt, entry, is_retry)

    async def _process(
        self, pod: _Pod, prompt: QueuedPrompt, assignment_id: str
    ) -> GenerationEntry | None:
        """PodWorkflow._process's steps, awaited directly; None when skipped."""
        files = self._files()
        policy = self.policy
        submitted_png = files.submitted[prompt.stem].png
        if submitted_png is None:
            raise RuntimeError("the benchmark's prompts all have a submitted preview")
        submitted = asyncio.ensure_future(
            self.act["fetch_artifact"](
                FetchArtifactInput(url=submitted_png, max_bytes=policy.max_glb_bytes)
            )
        )
        try:
            await self.act["fetch_prompt"](FetchPromptInput(round=files.round, url=prompt.url))
            async with pod.gpu:
                if pod.stopped or self.early_stop is not None:
                    submitted.cancel()
                    return None
                if pod.ref.url is None:
                    raise RuntimeError(f"pod {pod.name} has no URL")
                generated: GenerateResult = await self.act["generate"](
                    GenerateInput(
                        audit_id=f"plain-{files.round}-{files.hotkey}",
                        assignment_id=assignment_id,
                        round=files.round,
                        provider=pod.ref.provider,
                        pod_url=pod.ref.url,
                        prompt_url=prompt.url,
                        seed=files.seed,
                        timeout=timedelta(seconds=policy.generation_timeout_seconds),
                        download_timeout=timedelta(seconds=policy.download_timeout_seconds),
                        max_bytes=policy.max_glb_bytes,
                    )
                )
            preview: ArtifactResult = await self.act["render_preview"](
                RenderPreviewInput(glb_uri=generated.glb_uri)
            )
            reference: ArtifactResult = await submitted
            scored: ScoreDistanceResult = await self.act["score_distance"](
                ScoreDistanceInput(png_a_uri=reference.uri, png_b_uri=preview.uri)
            )
        except BaseException:
            submitted.cancel()
            raise
        return GenerationEntry(
            glb=generated.glb_uri,
            png=preview.uri,
            generation_time=generated.generation_time,
            size=generated.size,
            distance=scored.distance,
        )

    def _record(
        self, pod: _Pod, prompt: QueuedPrompt, entry: GenerationEntry, is_retry: bool
    ) -> None:
        """AuditWorkflow._on_result's bookkeeping: tracker, queue, early stop, bad pod."""
        policy = self.policy
        self.generations += 1
        previous = prompt.best
        original = (
            previous.generation_time
            if is_retry and previous is not None and not previous.is_failed()
            else None
        )
        pod_tracker.record(
            pod.tracker,
            success=not entry.is_failed(),
            generation_time=entry.generation_time,
            is_retry=is_retry,
            original_time=original,
            policy=policy,
        )
        if coordinator.record(prompt, entry, policy):
            self.dirty = True
        if self.early_stop is None:
            mismatches = coordinator.mismatch_count(self.prompts.values(), policy)
            if mismatches >= 2 * policy.max_mismatched_prompts:
                self.early_stop = pod_tracker.REASON_MISMATCH_LIMIT
        reason = pod_tracker.termination_reason(pod.tracker, policy)
        if reason is not None and not pod.stopped:
            pod_tracker.mark_bad(pod.tracker, reason)
            pod.stopped = True
        self._commit_progress()
        self.changed.set()
        self.changed = asyncio.Event()

    def _progress_files(self) -> list[JsonFileWrite]:
        """generated.json (upstream's entry shape) and pod_stats.json, as AuditWorkflow."""
        files = self._files()
        generated = {
            stem: {
                "glb": p.best.glb,
                "png": p.best.png,
                "generation_time": p.best.generation_time,
                "size": p.best.size or 0,
                "attempts": p.best.attempts,
                "distance": coordinator.distance_of(p.best),
            }
            for stem, p in self.prompts.items()
            if p.best is not None
        }
        writes = [
            JsonFileWrite(
                path=CompetitionPaths.generated(files.round, files.hotkey), value=generated
            )
        ]
        if self.pod_stats:
            writes.append(
                JsonFileWrite(
                    path=CompetitionPaths.pod_stats(files.round, files.hotkey),
                    value=dict(self.pod_stats),
                )
            )
        return writes

    def _commit_progress(self) -> None:
        """The first change at once, then at most every GENERATED_COMMIT_INTERVAL, one at a time."""
        if not self.dirty or (self.commit is not None and not self.commit.done()):
            return
        now = time.monotonic()
        interval = self.policy.generated_commit_interval_seconds
        if self.last_commit is not None and now - self.last_commit < interval:
            return
        files = self._files()
        self.commit = asyncio.ensure_future(
            self.act["write_files"](
                WriteFilesInput(
                    message=commit_message(files, generated=True, stats=bool(self.pod_stats)),
                    files=self._progress_files(),
                    competition_repo=self.policy.competition_repo,
                )
            )
        )
        self.dirty = False
        self.last_commit = now


# --- measuring ---------------------------------------------------------------------------------


def process_cpu() -> float:
    """CPU seconds used so far by this process: every thread (the worker and the SDK's core, or
    the plain loop)."""
    return time.process_time()


def server_cpu() -> float:
    """CPU seconds used so far by this process's children (the dev server). Linux's /proc;
    elsewhere 0."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 12 and fields[1] == me:  # ppid, then utime and stime in ticks
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


CPU_CLOCKS = {"process": process_cpu, "server": server_cpu}


def _world(args: argparse.Namespace, generation: float) -> FakeWorld:
    world = long_audit_world(args.prompts, args.pods, args.pods, generation)
    world.policy = world.policy.model_copy(update={"max_concurrent_prompts_per_pod": args.loops})
    return world


@dataclass(frozen=True)
class Run:
    """One audit run one way."""

    wall: float
    makespan: float
    cpu: dict[str, float]  # CPU_CLOCKS name -> seconds over the wall time
    handover: float  # mean idle seconds of a pod between two generations
    outcome: str
    generations: int
    events: int = 0  # history events, all runs of parent and pods ((a) only)


async def run_temporal(client: Client, args: argparse.Namespace, generation: float) -> Run:
    """(a): through AuditWorkflow + PodWorkflow on the dev server."""
    world = _world(args, generation)
    spans = GenerateSpans()
    run = await run_fake_audit(
        client,
        world,
        activities=timed_activities(world, generation, spans),
        cpu_clocks=CPU_CLOCKS,
    )
    histories = run.histories
    return Run(
        wall=run.wall_seconds,
        makespan=spans.makespan,
        cpu=run.cpu_seconds,
        handover=spans.handover,
        outcome=run.result.audit.outcome.value,
        generations=run.result.generations,
        events=sum(r.events for r in [*histories.parent, *histories.pod_runs]),
    )


async def run_plain(args: argparse.Namespace, generation: float) -> Run:
    """(b): the same audit in one asyncio loop."""
    world = _world(args, generation)
    spans = GenerateSpans()
    audit = PlainAudit(world, timed_activities(world, generation, spans))
    cpu = {name: clock() for name, clock in CPU_CLOCKS.items()}
    started = time.monotonic()
    outcome = await audit.run()
    wall = time.monotonic() - started
    return Run(
        wall=wall,
        makespan=spans.makespan,
        cpu={name: clock() - cpu[name] for name, clock in CPU_CLOCKS.items()},
        handover=spans.handover,
        outcome=outcome.outcome,
        generations=outcome.generations,
    )


@dataclass(frozen=True)
class Side:
    """One way's runs at one generation time; figures are medians over the repeats."""

    runs: list[Run]

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def makespan(self) -> float:
        return statistics.median(r.makespan for r in self.runs)

    @property
    def handover(self) -> float:
        return statistics.median(r.handover for r in self.runs)

    def cpu_ms_per_prompt(self, prompts: int, clock: str) -> float:
        return statistics.median(r.cpu[clock] for r in self.runs) / prompts * 1000

    def events_per_prompt(self, prompts: int) -> float:
        return statistics.median(r.events for r in self.runs) / prompts


@dataclass(frozen=True)
class Pair:
    """(a) and (b) at one generation time."""

    generation: float
    prompts: int
    pods: int
    loops: int
    temporal: Side
    plain: Side

    @property
    def ideal(self) -> float:
        """Every pod generating back to back from t = 0 (its loops share one GPU slot)."""
        return math.ceil(self.prompts / self.pods) * self.generation

    @property
    def ratio(self) -> float:
        """Wall (a) / wall (b)."""
        return self.temporal.wall / self.plain.wall

    @property
    def overhead_ms(self) -> float:
        """Temporal's cost per prompt on a pod's critical path, relative to (b)."""
        return (self.temporal.wall - self.plain.wall) * self.pods / self.prompts * 1000

    @property
    def fixed_seconds(self) -> float:
        """The part of wall_a - wall_b that does not come from the hand-overs: once per audit,
        the start (read, pods acquired and ready, first assignments) and the finish (last
        results, stop the pods, sweep, verdict)."""
        handovers = (self.prompts - self.pods) / self.pods  # per pod: all but its first prompt
        extra = self.temporal.handover - self.plain.handover
        return self.temporal.wall - self.plain.wall - extra * handovers


async def measure(client: Client, args: argparse.Namespace, generation: float) -> Pair:
    """Both ways at one generation time, alternated `--repeats` times."""
    temporal: list[Run] = []
    plain: list[Run] = []
    for repeat in range(args.repeats):
        print(f"generation {generation:g} s, run {repeat + 1}/{args.repeats}: (a) Temporal ...")
        temporal.append(await run_temporal(client, args, generation))
        print(f"  {temporal[-1].wall:.2f} s; (b) plain asyncio ...")
        plain.append(await run_plain(args, generation))
        print(f"  {plain[-1].wall:.2f} s")
    return Pair(
        generation=generation,
        prompts=args.prompts,
        pods=args.pods,
        loops=args.loops,
        temporal=Side(temporal),
        plain=Side(plain),
    )


def _seconds(values: Sequence[float]) -> str:
    """The median, and the range when there are several."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(pairs: Sequence[Pair]) -> str:
    """Two markdown tables: each way's times, then the ratios and the extrapolation."""
    lines = [
        "| generation | way | wall s | generation makespan s | ideal s | wall / ideal "
        "| CPU ms/prompt: this process + dev server | history events/prompt "
        "| verdict, generations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        for label, side in (("(a) Temporal", p.temporal), ("(b) plain asyncio", p.plain)):
            events = side.events_per_prompt(p.prompts)
            last = side.runs[-1]
            lines.append(
                f"| {p.generation:g} s | {label} | {_seconds([r.wall for r in side.runs])} "
                f"| {_seconds([r.makespan for r in side.runs])} | {p.ideal:.2f} "
                f"| {side.wall / p.ideal:.3f} "
                f"| {side.cpu_ms_per_prompt(p.prompts, 'process'):.1f} "
                f"+ {side.cpu_ms_per_prompt(p.prompts, 'server'):.1f} "
                f"| {f'{events:.1f}' if events else '-'} | {last.outcome}, {last.generations} |"
            )
    low, high = UPSTREAM_GENERATION_SECONDS
    lines += [
        "",
        "| generation | wall (a) / (b) | overhead per prompt (a) - (b) "
        "| GPU hand-over (a), (b) | start + finish (a) - (b), per audit "
        f"| at {low:.0f} s gens | at {high:.0f} s gens | <= {TARGET_MS:.0f} ms "
        f"| < {TARGET_SHARE:.0%} at {low:.0f}-{high:.0f} s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        ms = p.overhead_ms
        share_low, share_high = ms / (low * 1000), ms / (high * 1000)
        lines.append(
            f"| {p.generation:g} s | {p.ratio:.3f} | {ms:.1f} ms "
            f"| {p.temporal.handover * 1000:.1f} ms, {p.plain.handover * 1000:.1f} ms "
            f"| {p.fixed_seconds:.2f} s | {share_low:.3%} | {share_high:.3%} "
            f"| {'yes' if ms <= TARGET_MS else 'no'} "
            f"| {'yes' if share_low < TARGET_SHARE else 'no'} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: about 3 minutes on 2 cores)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--pods", type=int, default=8, help="pods_per_miner, all started at once")
    parser.add_argument(
        "--loops", type=int, default=4, help="max_concurrent_prompts_per_pod (upstream: 4)"
    )
    parser.add_argument(
        "--generation",
        type=float,
        nargs="+",
        default=[0.05, 1.0],
        help="fake generation times, seconds (the last is the one to extrapolate from)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each way per generation")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> None:
    """Measure (a) and (b) at each generation time on one dev server and print the tables."""
    args = parse_args(argv)
    env = await start_dev_server()
    pairs = []
    try:
        # A long-lived worker and server are warm (imports, caches, the namespace): measure
        # that, not this process's first audit.
        print("warm-up: (a) with 4 prompts on 2 pods ...")
        warm = argparse.Namespace(**{**vars(args), "prompts": 4, "pods": 2})
        await run_temporal(env.client, warm, 0.0)
        await run_plain(warm, 0.0)
        for generation in args.generation:
            pairs.append(await measure(env.client, args, generation))
    finally:
        await env.shutdown()
    print()
    print(
        f"{args.prompts} prompts, {args.pods} pods, {args.loops} loops/pod, fake activities; "
        f"(a) AuditWorkflow + PodWorkflow on the dev server, (b) one asyncio loop, same policy code"
    )
    print(report(pairs))


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal bridge's threads can abort CPython's finalization at random ("PyGILState_Release:
    # thread state ... must be current", temporalio/sdk-python#300): the report is printed, skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
