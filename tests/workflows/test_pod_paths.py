"""PodWorkflow paths driven directly, as an audit's child would be: every error branch of a
prompt, the idle pod whose audit is gone, and a stop while the pod is still warming up.

The pod talks to its parent only by signals addressed to `audit_workflow_id`; here that id is
a `RecordingAudit` that keeps what it is told (or no workflow at all). Real dev server, fake
activities (FakeWorld).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Worker

from models.audit import (
    Assignment,
    AuditPolicy,
    PodEvent,
    PodFinished,
    PodInput,
    PodReady,
    PodWorkflowResult,
    PromptResult,
    PromptResultKind,
    ProviderName,
    StopPod,
)
from models.errors import ErrorType
from tests.helpers import assert_eventually, wait_for_status
from tests.workflows.fakes import FakeWorld, round_files
from workflows.pod import HEALTH_LOST, PodWorkflow

POD = "miner-01-5fake-0"
CHAIN = "first-run-of-the-audit"
WAIT = 20.0
"""Deadline of every condition wait (seconds): generous for 2 loaded cores."""


class Recorded(BaseModel):
    """What a RecordingAudit was told, in arrival order."""

    events: list[PodEvent]


@workflow.defn(name="RecordingAudit", sandboxed=False)
class RecordingAudit:
    """Stands in for AuditWorkflow: records the pod's signals, decides nothing, never ends."""

    def __init__(self) -> None:
        self._events: list[PodEvent] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="pod_ready")
    def pod_ready(self, message: PodReady) -> None:
        self._events.append(message)

    @workflow.signal(name="pod_result")
    def pod_result(self, message: PromptResult) -> None:
        self._events.append(message)

    @workflow.signal(name="pod_finished")
    def pod_finished(self, message: PodFinished) -> None:
        self._events.append(message)

    @workflow.query(name="events")
    def events(self) -> Recorded:
        return Recorded(events=self._events)


def pod_policy(**overrides: Any) -> AuditPolicy:
    base = AuditPolicy(gpu_providers=[ProviderName.LOCAL], pod_acquisition_max_attempts=1)
    return base.model_copy(update=overrides)


def assignment(stem: str, **overrides: Any) -> Assignment:
    """The assignment an audit sends for `stem` (first attempt, submitted PNG to compare with)."""
    values: dict[str, Any] = {
        "assignment_id": f"{stem}#1",
        "stem": stem,
        "attempt": 1,
        "prompt_url": f"http://prompts/{stem}.png",
        "submitted_glb_url": f"http://sub/{stem}.glb",
        "submitted_png_url": f"http://sub/{stem}.png",
    }
    values.update(overrides)
    return Assignment(**values)


@dataclass
class Pod:
    """One pod child on its own task queue, with the audit it reports to."""

    client: Client
    world: FakeWorld
    queue: str
    audit_id: str
    audit: WorkflowHandle[Any, Any] | None = None
    handle: WorkflowHandle[Any, PodWorkflowResult] | None = None
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    async def start(self) -> WorkflowHandle[Any, PodWorkflowResult]:
        self.handle = await self.client.start_workflow(
            PodWorkflow.run,
            PodInput(
                audit_workflow_id=self.audit_id,
                audit_run_id=CHAIN,
                round=1,
                hotkey="5Fake",
                slot=0,
                attempt=0,
                pod_name=POD,
                provider=ProviderName.LOCAL,
                image="local/reference-miner",
                seed=42,
                policy=self.world.policy.model_copy(update={"gpu_task_queue": self.queue}),
                protocol=2,
            ),
            id=f"{self.audit_id}-pod-0",
            task_queue=self.queue,
        )
        self.handles.append(self.handle)
        return self.handle

    async def events(self) -> list[PodEvent]:
        assert self.audit is not None
        recorded: Recorded = await self.audit.query(RecordingAudit.events)
        return recorded.events

    async def wait_events(self, count: int) -> list[PodEvent]:
        """The first `count` events the audit received, once it has them."""

        async def enough() -> list[PodEvent]:
            events = await self.events()
            assert len(events) >= count, events
            return events[:count]

        result: list[PodEvent] = await assert_eventually(enough, timeout=WAIT)
        return result

    async def assign(self, *assignments: Assignment) -> None:
        assert self.handle is not None
        for each in assignments:
            await self.handle.signal(PodWorkflow.assign, each)

    async def stop(self, reason: str = "audit finished") -> PodWorkflowResult:
        assert self.handle is not None
        await self.handle.signal(PodWorkflow.stop, StopPod(reason=reason))
        return await self.result()

    async def result(self) -> PodWorkflowResult:
        assert self.handle is not None
        return await asyncio.wait_for(self.handle.result(), timeout=WAIT)


@asynccontextmanager
async def pod_world(
    client: Client, world: FakeWorld, with_audit: bool = True
) -> AsyncIterator[Pod]:
    """A worker for PodWorkflow + RecordingAudit; the audit started unless `with_audit` is
    False (then the pod's audit id names no workflow). Whatever is left running is terminated."""
    queue = f"q-{uuid.uuid4()}"
    pod = Pod(client=client, world=world, queue=queue, audit_id=f"audit-1-{uuid.uuid4()}")
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PodWorkflow, RecordingAudit],
        activities=world.activities(),
    ):
        if with_audit:
            pod.audit = await client.start_workflow(
                RecordingAudit.run, id=pod.audit_id, task_queue=queue
            )
            pod.handles.append(pod.audit)
        try:
            yield pod
        finally:
            for handle in pod.handles:
                if (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("test over")


def results(events: list[PodEvent]) -> dict[str, PromptResult]:
    return {e.stem: e for e in events if isinstance(e, PromptResult)}


# --- 3. an idle pod deletes itself when its audit is gone ---------------------------------------


async def test_idle_pod_of_an_audit_that_never_existed_deletes_itself(client: Client) -> None:
    """A pod whose audit id names no workflow cannot report ready; at its first idle check it
    ends "audit is gone" and deletes its pod instead of staying rented forever."""
    world = FakeWorld(files=round_files(1), policy=pod_policy(pod_idle_check_seconds=0.3))
    async with pod_world(client, world, with_audit=False) as pod:
        await pod.start()
        result = await pod.result()
    assert result.stats.termination_reason == "audit is gone"
    assert result.stats.marked_bad is False
    assert world.deployed == [POD]
    assert world.deleted == [POD]


async def test_idle_pod_deletes_itself_once_its_audit_is_terminated(client: Client) -> None:
    """While its audit runs an idle pod only pings it (pod_ready) and stays; once the audit is
    terminated (no one would ever stop the pod) the next idle check ends it and deletes it."""
    world = FakeWorld(files=round_files(1), policy=pod_policy(pod_idle_check_seconds=0.3))
    async with pod_world(client, world) as pod:
        await pod.start()
        await pod.assign(assignment("p000"))

        async def pinged_twice_after_its_result() -> None:
            kinds = [e.event for e in await pod.events()]
            assert kinds[:1] == ["pod_ready"] and "pod_result" in kinds, kinds
            assert kinds[kinds.index("pod_result") :].count("pod_ready") >= 2, kinds

        # idle pings while the audit lives: the pod stays rented and keeps asking for work
        await assert_eventually(pinged_twice_after_its_result, timeout=WAIT)
        assert world.deleted == []
        assert pod.audit is not None
        await pod.audit.terminate("operator terminated the audit")
        result = await pod.result()
    assert result.stats.termination_reason == "audit is gone"
    assert result.stats.processed == 1
    assert world.deleted == [POD]


# --- 5. every error branch of one prompt --------------------------------------------------------


async def test_render_failure_is_a_failed_result_that_keeps_the_glb(client: Client) -> None:
    """Our render of the miner's GLB fails: a FAILED result (RENDER_FAILED) that keeps the GLB,
    size and time as upstream does; the pod goes on to its next prompt."""
    world = FakeWorld(
        files=round_files(2),
        policy=pod_policy(),
        unrenderable={"file:///gen/p000.glb"},
    )
    async with pod_world(client, world) as pod:
        await pod.start()
        await pod.assign(assignment("p000"), assignment("p001"))
        got = results(await pod.wait_events(3))
        result = await pod.stop()
    failed = got["p000"]
    assert failed.outcome is PromptResultKind.FAILED
    assert failed.error_type == ErrorType.RENDER_FAILED
    assert failed.glb_uri == "file:///gen/p000.glb"
    assert (failed.size, failed.generation_time) == (100, 1.0)
    assert failed.png_uri is None and failed.distance is None
    assert failed.error is not None and failed.error.startswith("render failed:")
    assert got["p001"].outcome is PromptResultKind.GENERATED
    assert got["p001"].distance == 0.01
    assert (result.stats.marked_bad, result.stats.termination_reason) == (False, "audit finished")


@pytest.mark.parametrize(
    ("case", "overrides", "problem"),
    [
        ("submitted png unfetchable", {}, "distance unknown: http://sub/p000.png: HTTP 404"),
        (
            "submitted glb unfetchable",
            {"submitted_png_url": None},
            "distance unknown: http://sub/p000.glb: HTTP 404",
        ),
        (
            "submitted glb unrenderable",
            {"submitted_png_url": None, "submitted_glb_url": "http://sub/ok.glb"},
            "distance unknown: 2 objects in the GLB",
        ),
        (
            "no submission to compare with",
            {"submitted_png_url": None, "submitted_glb_url": None},
            "the submission has no GLB to compare with",
        ),
    ],
)
async def test_unknown_distance_is_a_generated_result_without_distance(
    client: Client, case: str, overrides: dict[str, Any], problem: str
) -> None:
    """What the submission causes (its PNG or GLB missing or unfetchable, its GLB unrenderable)
    is never the pod's failure nor a crash: the result is GENERATED with the new GLB and
    preview, distance None (the audit stores a mismatch), and the reason; the pod is not
    marked bad. (A scorer of ours that fails is an outage, not a mismatch: see below.)"""
    world = FakeWorld(files=round_files(1), policy=pod_policy())
    world.unfetchable = {"http://sub/p000.png", "http://sub/p000.glb"}
    world.unrenderable = {"file:///sub/ok.glb"}
    async with pod_world(client, world) as pod:
        await pod.start()
        await pod.assign(assignment("p000", **overrides))
        got = results(await pod.wait_events(2))["p000"]
        result = await pod.stop()
    assert got.outcome is PromptResultKind.GENERATED, got
    assert (got.glb_uri, got.png_uri) == ("file:///gen/p000.glb", "file:///gen/p000.png")
    assert got.distance is None
    assert got.error is not None and got.error.startswith(problem), got.error
    assert world.generate_calls == ["p000#1"]
    assert result.stats.marked_bad is False


async def test_our_scorer_failing_is_an_outage_not_a_mismatch(client: Client) -> None:
    """The DINOv3 scorer of ours failing is not the miner's doing: the result says our service
    is unavailable (the audit then fails without a verdict), never a distance-unknown mismatch."""
    world = FakeWorld(files=round_files(1), policy=pod_policy())
    world.scoring_down = True
    async with pod_world(client, world) as pod:
        await pod.start()
        await pod.assign(assignment("p000"))
        got = results(await pod.wait_events(2))["p000"]
        await pod.stop()
    assert got.outcome is PromptResultKind.FAILED, got
    assert got.error_type == ErrorType.SERVICE_UNAVAILABLE
    assert got.error is not None and "DINOv3" in got.error


@pytest.mark.parametrize("health", [False, None], ids=["health-false", "health-raises"])
async def test_miner_failure_on_a_pod_that_lost_health_ends_it_marked_bad(
    client: Client, health: bool | None
) -> None:
    """A MINER_FAILED generation is followed by a /health probe before the GPU slot takes the
    next request; a pod that no longer answers (False, or the probe fails) reports the failure,
    sends nothing more to the pod, deletes it and ends "stopped answering /health", marked bad."""
    world = FakeWorld(
        files=round_files(2),
        policy=pod_policy(max_concurrent_prompts_per_pod=2),
        failing={"p000": 1},
        delays={"p000": 1.0},  # p001 is queued at the GPU slot meanwhile
        pod_health=health,
    )
    async with pod_world(client, world) as pod:
        await pod.start()
        await pod.assign(assignment("p000"))
        await assert_eventually(lambda: world.generate_calls == ["p000#1"], timeout=WAIT)
        await pod.assign(assignment("p001"))
        result = await pod.result()
        events = await pod.wait_events(3)
    assert [e.event for e in events] == ["pod_ready", "pod_result", "pod_finished"]
    failed = events[1]
    assert isinstance(failed, PromptResult)
    assert (failed.outcome, failed.error_type) == (PromptResultKind.FAILED, ErrorType.MINER_FAILED)
    finished = events[2]
    assert isinstance(finished, PodFinished)
    assert (finished.marked_bad, finished.reason) == (True, HEALTH_LOST)
    assert (result.stats.marked_bad, result.stats.termination_reason) == (True, HEALTH_LOST)
    assert world.health_checks == [POD]
    assert world.generate_calls == ["p000#1"], "a request went to a pod that lost /health"
    assert world.deleted == [POD]


async def test_miner_failure_on_a_healthy_pod_keeps_it_serving(client: Client) -> None:
    """The same failure on a pod that still answers /health: the next prompt is generated and
    the pod stays until stopped, not marked bad."""
    world = FakeWorld(
        files=round_files(2),
        policy=pod_policy(max_concurrent_prompts_per_pod=2),
        failing={"p000": 1},
        delays={"p000": 1.0},
    )
    async with pod_world(client, world) as pod:
        await pod.start()
        await pod.assign(assignment("p000"))
        await assert_eventually(lambda: world.generate_calls == ["p000#1"], timeout=WAIT)
        await pod.assign(assignment("p001"))
        got = results(await pod.wait_events(3))
        result = await pod.stop()
    assert got["p000"].error_type == ErrorType.MINER_FAILED
    assert got["p001"].outcome is PromptResultKind.GENERATED
    assert world.health_checks == [POD]
    assert (result.stats.marked_bad, result.stats.termination_reason) == (False, "audit finished")


# --- 7. stopped while warming up ----------------------------------------------------------------


async def test_pod_stopped_while_warming_up_is_deleted_and_not_marked_bad(client: Client) -> None:
    """A `stop` while await_pod_healthy still runs: the wait is abandoned, the rented pod is
    deleted, the pod never reports ready and ends "stopped before the pod was healthy" - not
    a bad pod (it was never judged)."""
    world = FakeWorld(files=round_files(1), policy=pod_policy(), warming_forever={POD})
    async with pod_world(client, world) as pod:
        handle = await pod.start()
        await assert_eventually(lambda: world.warming == [POD], timeout=WAIT)
        result = await pod.stop("no work available")
        events = await pod.wait_events(1)
        description = await wait_for_status(handle, WorkflowExecutionStatus.COMPLETED)
    assert description.status is WorkflowExecutionStatus.COMPLETED
    reason = "stopped before the pod was healthy"
    assert (result.stats.termination_reason, result.stats.marked_bad) == (reason, False)
    assert len(events) == 1
    finished = events[0]
    assert isinstance(finished, PodFinished), events
    assert (finished.reason, finished.marked_bad, finished.deployed) == (reason, False, True)
    assert world.deployed == [POD]
    assert world.deleted == [POD]
    assert world.generate_calls == []
