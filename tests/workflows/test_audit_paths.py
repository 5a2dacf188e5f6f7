"""AuditWorkflow paths not covered by test_audit_workflow.py: waiting for a pending build, the
shutdown grace of a pod that never reports, replacement pods on another provider, and an
unknown distance seen from the verdict.

Real dev server and fake activities (FakeWorld) as in test_audit_workflow.py; the 15-minute
POD_SHUTDOWN_GRACE is skipped on the time-skipping test server (the clock moved by hand).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from embedded_temporal import search_attribute_keys
from models.audit import (
    Assignment,
    AuditInput,
    AuditResult,
    PodInput,
    PodReady,
    PromptResult,
    PromptResultKind,
    ProviderName,
    StopPod,
)
from models.competition import AuditOutcome, BuildStatus
from models.constants import pod_name_prefix
from tests.helpers import assert_eventually, pod_workflow_id
from tests.workflows.fakes import FakeWorld, round_files
from tests.workflows.test_audit_workflow import policy, run_audit
from workflows.audit import POD_SHUTDOWN_GRACE, AuditWorkflow
from workflows.policy.coordinator import UNMEASURABLE_DISTANCE
from workflows.policy.verdict import BUILD_FAILED_REASON

AUDIT_DEADLINE = 30.0
"""Seconds any one audit of this module may take before the test fails (not hangs)."""


async def audit(client: Client, world: FakeWorld) -> AuditResult:
    """`run_audit`, bounded: a wait the workflow never ends fails the test instead of hanging."""
    return await asyncio.wait_for(run_audit(client, world), timeout=AUDIT_DEADLINE)


def assert_failed_to_build(result: AuditResult) -> None:
    assert result.audit.outcome is AuditOutcome.REJECTED
    assert result.audit.reason == BUILD_FAILED_REASON


def verdict_only(world: FakeWorld) -> None:
    """The audit wrote exactly one commit, the verdict entry alone, and rented nothing."""
    assert [[f.path for f in w.files] for w in world.writes] == [
        ["rounds/1/generation_audits.json"]
    ]
    assert world.deployed == []
    assert world.generate_calls == []


# --- 1. waiting for a pending build ----------------------------------------------------------


async def test_pending_build_that_succeeds_is_audited_with_its_image(client: Client) -> None:
    """pending -> in_progress -> success: the audit polls builds.json and then deploys the
    image the succeeded entry names (the pending entries had none)."""
    files = round_files(2)
    assert files.build is not None
    build = files.build.model_copy(update={"docker_image": "registry/miner:built"})
    world = FakeWorld(
        files=files.model_copy(update={"build": build}),
        policy=policy(check_build_interval_seconds=0.2, pods_per_miner=1, initial_pod_count=1),
        builds=[BuildStatus.PENDING, BuildStatus.IN_PROGRESS, BuildStatus.PENDING],
    )
    result = await audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.builds == [], "builds.json was not polled until the build was terminal"
    assert [d.image for d in world.deploy_requests] == ["registry/miner:built"]


async def test_pending_build_that_fails_is_rejected_without_pods(client: Client) -> None:
    """pending -> in_progress -> failure: "Failed to build a docker image", nothing rented."""
    world = FakeWorld(
        files=round_files(2),
        policy=policy(check_build_interval_seconds=0.2),
        builds=[BuildStatus.PENDING, BuildStatus.IN_PROGRESS, BuildStatus.FAILURE],
    )
    result = await audit(client, world)
    assert_failed_to_build(result)
    assert world.builds == []
    verdict_only(world)


@pytest.mark.parametrize("entry", ["missing", "not_found"])
async def test_no_build_is_a_failed_build_as_upstream(client: Client, entry: str) -> None:
    """No builds.json entry for the hotkey, or one upstream's tracker marked not_found: the
    audit does not wait for it; it writes "Failed to build a docker image" at once."""
    files = round_files(2, build_status=BuildStatus.NOT_FOUND)
    if entry == "missing":
        files = files.model_copy(update={"build": None})
    # A poll every 600 s: waiting even once would blow the deadline below.
    world = FakeWorld(files=files, policy=policy(check_build_interval_seconds=600))
    result = await audit(client, world)
    assert_failed_to_build(result)
    verdict_only(world)


async def test_build_still_pending_at_build_timeout_is_a_failed_build(client: Client) -> None:
    """A build that never leaves `pending` is given up at BUILD_TIMEOUT (counted from the
    audit's start, on workflow time): "Failed to build a docker image", nothing rented."""
    world = FakeWorld(
        files=round_files(2, build_status=BuildStatus.PENDING),
        policy=policy(build_timeout_seconds=1.5, check_build_interval_seconds=0.2),
    )
    workflow_id = f"audit-1-{uuid.uuid4()}"
    queue = f"q-{uuid.uuid4()}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    async with Worker(
        client, task_queue=queue, workflows=[AuditWorkflow], activities=world.activities()
    ):
        handle = await client.start_workflow(
            AuditWorkflow.run,
            AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy),
            id=workflow_id,
            task_queue=queue,
        )
        result = await asyncio.wait_for(handle.result(), timeout=AUDIT_DEADLINE)
        description = await handle.describe()
    assert_failed_to_build(result)
    verdict_only(world)
    assert description.close_time is not None
    waited = description.close_time - description.start_time
    assert waited >= timedelta(seconds=1.5), f"gave up after {waited}, before BUILD_TIMEOUT"


# --- 2. the shutdown grace: a pod that never reports pod_finished -------------------------------


@workflow.defn(name="PodWorkflow", sandboxed=False)
class DeafPodWorkflow:
    """A pod child that serves assignments but never ends: it ignores `stop`, so it never
    deletes its pod nor sends `pod_finished` (a stuck provider call, a wedged worker...)."""

    def __init__(self) -> None:
        self._assigned: list[Assignment] = []
        self._stops: list[StopPod] = []

    @workflow.run
    async def run(self, input: PodInput) -> None:
        parent = workflow.get_external_workflow_handle(input.audit_workflow_id)
        ready = PodReady(
            slot=input.slot, attempt=0, pod_name=input.pod_name, audit_run_id=input.audit_run_id
        )
        await parent.signal("pod_ready", ready)
        while True:
            await workflow.wait_condition(lambda: bool(self._assigned))
            assignment = self._assigned.pop(0)
            result = PromptResult(
                slot=input.slot,
                attempt=0,
                pod_name=input.pod_name,
                audit_run_id=input.audit_run_id,
                assignment_id=assignment.assignment_id,
                stem=assignment.stem,
                outcome=PromptResultKind.GENERATED,
                glb_uri=f"file:///gen/{assignment.stem}.glb",
                png_uri=f"file:///gen/{assignment.stem}.png",
                size=100,
                generation_time=1.0,
                distance=0.01,
            )
            await parent.signal("pod_result", result)

    @workflow.signal(name="assign")
    def assign(self, assignment: Assignment) -> None:
        self._assigned.append(assignment)

    @workflow.signal(name="stop")
    def stop(self, stop: StopPod) -> None:
        self._stops.append(stop)  # and carries on, deaf to it


async def register_search_attributes(client: Client) -> None:
    """The time-skipping server starts without our search attributes (AuditWorkflow upserts
    them; unregistered, its tasks would fail forever)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in search_attribute_keys()
            },
        )
    )


@dataclass
class DeafPodAudit:
    """What an audit whose only pod never finishes left behind."""

    world: FakeWorld
    result: AuditResult
    audit: WorkflowExecutionDescription
    pod: WorkflowExecutionDescription


async def audit_with_a_deaf_pod(env: WorkflowEnvironment) -> DeafPodAudit:
    """An audit of 3 prompts whose one pod serves them all, then ignores `stop`.

    The clock moves only when told (auto time skipping off: under load, skipping on its own
    jumps past timeouts while a task is still being processed): the audit runs in real time
    until it waits on its grace timer, then exactly POD_SHUTDOWN_GRACE is skipped.
    """
    client = env.client
    await register_search_attributes(client)
    world = FakeWorld(files=round_files(3), policy=policy(pods_per_miner=1, initial_pod_count=1))
    queue = f"q-{uuid.uuid4()}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    workflow_id = f"audit-1-{uuid.uuid4()}"
    with env.auto_time_skipping_disabled():
        async with Worker(
            client,
            task_queue=queue,
            workflows=[AuditWorkflow, DeafPodWorkflow],
            activities=world.activities(),
        ):
            handle = await client.start_workflow(
                AuditWorkflow.run,
                AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy),
                id=workflow_id,
                task_queue=queue,
            )

            async def in_grace() -> None:
                grace = [
                    e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
                    async for e in handle.fetch_history_events()
                    if e.HasField("timer_started_event_attributes")
                ]
                assert POD_SHUTDOWN_GRACE in grace, f"no grace timer yet: {grace}"
                described = await handle.describe()
                assert not described.raw_description.pending_activities

            await assert_eventually(in_grace, timeout=AUDIT_DEADLINE)
            assert world.swept == [], "swept before the grace was over"
            await env.sleep(POD_SHUTDOWN_GRACE)
            result = await asyncio.wait_for(handle.result(), timeout=AUDIT_DEADLINE)
            audit = await handle.describe()
            pod = await client.get_workflow_handle(
                await pod_workflow_id(client, workflow_id, 0)
            ).describe()
    return DeafPodAudit(world=world, result=result, audit=audit, pod=pod)


async def test_pod_that_never_finishes_is_cancelled_and_swept_after_the_grace(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """At the end of an audit a pod that never reports `pod_finished` is waited for
    POD_SHUTDOWN_GRACE (no longer: the audit must end), then its child is cancelled and every
    pod of the audit is swept by name prefix; the verdict is still written."""
    deaf = await audit_with_a_deaf_pod(time_skipping_env)
    world = deaf.world
    assert deaf.result.audit.outcome is AuditOutcome.PASSED
    assert deaf.result.audit.checked_prompts == 3
    assert world.writes[-1].files[-1].path == "rounds/1/generation_audits.json"
    assert deaf.pod.status is WorkflowExecutionStatus.CANCELED, "the stuck pod child still runs"
    prefix = pod_name_prefix(1, world.files.hotkey)
    # the abandon path's sweep, then the final safety-net sweep
    assert world.swept == [prefix, prefix]
    assert deaf.audit.close_time is not None
    took = deaf.audit.close_time - deaf.audit.start_time  # workflow time (skipped)
    assert POD_SHUTDOWN_GRACE <= took < POD_SHUTDOWN_GRACE + timedelta(minutes=1), took


async def test_abandoned_pod_still_has_its_pod_stats_entry(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """pod_stats.json has an entry for every pod that became healthy (upstream's rule, see
    AuditWorkflow._on_finished) - also the one the audit had to abandon, whose counts are in
    the audit's own tracker: it is the pod an operator most needs to look at."""
    deaf = await audit_with_a_deaf_pod(time_skipping_env)
    paths = {f.path: f.value for f in deaf.world.writes[-1].files}
    stats = paths.get("rounds/1/5Fake/pod_stats.json")
    assert isinstance(stats, dict), f"the verdict commit has no pod_stats.json: {sorted(paths)}"
    assert stats["miner-01-5fake-0"]["successful"] == 3


# --- 4. replacement pods go round robin over GPU_PROVIDERS --------------------------------------


async def test_replacement_of_a_bad_pod_is_rented_on_the_next_provider(client: Client) -> None:
    """GPU_PROVIDERS=targon,verda: pod i is rented on providers[i % 2], so the replacement of a
    bad targon pod goes to verda; each pod is deleted where it was rented and the final sweep
    covers both providers."""
    stems = [f"p{i:03d}" for i in range(4)]
    world = FakeWorld(
        files=round_files(4),
        policy=policy(
            gpu_providers=[ProviderName.TARGON, ProviderName.VERDA],
            pods_per_miner=1,
            initial_pod_count=1,
            max_pod_attempts=2,
            pod_min_samples=2,
            pod_failure_threshold=2,
        ),
        failing={s: 1 for s in stems},  # every prompt fails its first generation
    )
    result = await audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert [(d.name, d.provider) for d in world.deploy_requests] == [
        ("miner-01-5fake-0", ProviderName.TARGON),
        ("miner-01-5fake-1", ProviderName.VERDA),
    ]
    assert sorted((p.name, p.provider) for p in world.delete_requests) == [
        ("miner-01-5fake-0", ProviderName.TARGON),
        ("miner-01-5fake-1", ProviderName.VERDA),
    ]
    assert [s.providers for s in world.sweeps] == [[ProviderName.TARGON, ProviderName.VERDA]]
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert stats["miner-01-5fake-0"]["marked_bad"] is True


async def test_acquisition_retry_moves_to_the_next_provider(client: Client) -> None:
    """A pod not listed in time is deleted on its provider and its next acquisition attempt
    goes to the next provider (attempt a of pod i on providers[(i + a) % n])."""
    world = FakeWorld(
        files=round_files(2),
        policy=policy(
            gpu_providers=[ProviderName.TARGON, ProviderName.VERDA],
            pods_per_miner=1,
            initial_pod_count=1,
            pod_acquisition_max_attempts=3,
        ),
        not_visible={"miner-01-5fake-0": 1},
    )
    result = await audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert [(d.name, d.provider) for d in world.deploy_requests] == [
        ("miner-01-5fake-0", ProviderName.TARGON),
        ("miner-01-5fake-0", ProviderName.VERDA),
    ]
    assert [(p.name, p.provider) for p in world.delete_requests] == [
        ("miner-01-5fake-0", ProviderName.TARGON),
        ("miner-01-5fake-0", ProviderName.VERDA),
    ]


# --- 5. (audit view) an unknown distance is a mismatch, not a crash -----------------------------


async def test_unfetchable_submitted_preview_is_a_mismatch_not_a_crash(client: Client) -> None:
    """The submitted PNG of one prompt cannot be downloaded: that prompt is generated once,
    stored with the unmeasurable distance (a mismatch), and the pod is not blamed for it."""
    world = FakeWorld(
        files=round_files(4),
        policy=policy(pods_per_miner=1, initial_pod_count=1),
        unfetchable={"http://sub/p002.png"},
    )
    result = await audit(client, world)
    assert result.audit.checked_prompts == 4
    assert result.audit.failed_prompts == 1
    assert sorted(world.generate_calls) == [f"p{i:03d}#1" for i in range(4)]
    generated = world.writes[-1].files[0].value
    stats = world.writes[-1].files[1].value
    assert isinstance(generated, dict) and isinstance(stats, dict)
    assert generated["p002"]["distance"] == UNMEASURABLE_DISTANCE
    assert generated["p002"]["glb"] == "file:///gen/p002.glb"
    assert generated["p001"]["distance"] == 0.01
    assert stats["miner-01-5fake-0"]["marked_bad"] is False
    assert stats["miner-01-5fake-0"]["hard_failed"] == 0
