"""Our outages are never the miner's: the GPU workers go away mid-audit and the verdict does not
change; an outage past SERVICE_OUTAGE_LIMIT fails the audit without writing a verdict."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from models.audit import (
    AuditInput,
    AuditPolicy,
    AuditProgress,
    AuditResult,
    AuditStatus,
    ProviderName,
)
from models.competition import GenerationAudit
from models.errors import ErrorType
from tests.helpers import assert_eventually
from tests.workflows.fakes import FakeWorld, round_files
from workflows import WORKFLOWS
from workflows.audit import STATUS_KEY

GPU_ACTIVITIES = {"render_preview", "score_distance"}


def policy(gpu_queue: str, **overrides: object) -> AuditPolicy:
    base = AuditPolicy(
        gpu_providers=[ProviderName.LOCAL],
        pod_min_samples=4,
        pod_failure_threshold=3,
        pod_start_delay_seconds=0,
        pods_per_miner=2,
        initial_pod_count=2,
        gpu_task_queue=gpu_queue,
        service_notice_seconds=1,
    )
    return base.model_copy(update=overrides)


def split(world: FakeWorld) -> tuple[list[Callable[..., Any]], list[Callable[..., Any]]]:
    """(orchestrator activities, GPU activities) of the fake world."""
    fakes = world.activities()
    gpu = [a for a in fakes if a.__name__ in GPU_ACTIVITIES]
    return [a for a in fakes if a not in gpu], gpu


def new_world(gpu_queue: str, **overrides: object) -> FakeWorld:
    return FakeWorld(
        files=round_files(10, critical=["p002"]),
        policy=policy(gpu_queue, **overrides),
        mismatching={"p001", "p004"},
        times={"p003": 2.5},
    )


async def audit(client: Client, outage: bool) -> tuple[GenerationAudit, object]:
    """One audit of the same world; with `outage`, the GPU worker stops after 3 scores and comes
    back only once the audit shows that it waits."""
    queue, gpu_queue = f"q-{uuid.uuid4()}", f"gpu-{uuid.uuid4()}"
    world = new_world(gpu_queue)
    orchestrator, gpu = split(world)

    async def some_scored() -> bool:
        return len(world.scored) >= 3

    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=orchestrator):
        async with Worker(client, task_queue=gpu_queue, activities=gpu):
            handle = await client.start_workflow(
                "AuditWorkflow",
                AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy),
                id=f"audit-1-{uuid.uuid4()}",
                task_queue=queue,
                result_type=AuditResult,
            )
            if outage:
                await assert_eventually(some_scored, timeout=30)
        if outage:  # the GPU worker is gone now

            async def waiting() -> bool:
                progress = await handle.query("progress", result_type=AuditProgress)
                return progress.status is AuditStatus.WAITING_FOR_SERVICE

            await assert_eventually(waiting, timeout=30)
            progress = await handle.query("progress", result_type=AuditProgress)
            assert progress.waiting_for
            attributes = (await handle.describe()).typed_search_attributes
            assert attributes.get(STATUS_KEY) == AuditStatus.WAITING_FOR_SERVICE.value
        async with Worker(client, task_queue=gpu_queue, activities=gpu):
            result = await handle.result()
    return result.audit, world.writes[-1].files[0].value


async def test_gpu_workers_away_mid_audit_change_nothing(client: Client) -> None:
    """The same audit with and without a GPU outage in the middle: the same verdict, the same
    generated entries; meanwhile the audit shows waiting_for_service."""
    baseline, baseline_generated = await audit(client, outage=False)
    after_outage, outage_generated = await audit(client, outage=True)
    assert after_outage == baseline
    assert outage_generated == baseline_generated
    assert baseline.checked_prompts == 10


async def test_outage_past_the_limit_fails_the_audit_without_a_verdict(client: Client) -> None:
    """No GPU worker for longer than SERVICE_OUTAGE_LIMIT: the audit fails with the reason and
    writes no verdict (nothing is charged to the miner); its pods are deleted."""
    queue, gpu_queue = f"q-{uuid.uuid4()}", f"gpu-{uuid.uuid4()}"
    world = new_world(gpu_queue, service_outage_limit_seconds=2)
    orchestrator, _ = split(world)
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=orchestrator):
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                "AuditWorkflow",
                AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy),
                id=f"audit-1-{uuid.uuid4()}",
                task_queue=queue,
                result_type=AuditResult,
            )

        async def all_deleted() -> bool:  # the cancelled pod children delete their pods
            return sorted(world.deleted) == sorted(world.deployed)

        await assert_eventually(all_deleted, timeout=30)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == ErrorType.SERVICE_UNAVAILABLE
    assert "no verdict written" in cause.message
    assert not any(f.path.endswith("generation_audits.json") for w in world.writes for f in w.files)
