"""Audits and their pods never lose each other: re-runs, vanished and stuck children, gone audits.

All on the real dev server with fake activities (audits with the `run-keyed-pods` and
`pod-watchdog` markers, i.e. every audit started by this code).
"""

from __future__ import annotations

import uuid

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from models.audit import AuditInput, AuditPolicy, AuditResult, ProviderName
from models.competition import AuditOutcome
from models.constants import run_key, unkeyed_pod_name, upstream_pod_name
from tests.helpers import assert_eventually, pod_workflow_id, wait_for_status
from tests.workflows.fakes import FakeWorld, round_files
from workflows import WORKFLOWS
from workflows.audit import STUCK, VANISHED
from workflows.pod import AUDIT_GONE

POD_0 = upstream_pod_name(1, "5Fake", 0)


def policy(**overrides: object) -> AuditPolicy:
    base = AuditPolicy(
        gpu_providers=[ProviderName.LOCAL],
        pod_min_samples=4,
        pod_failure_threshold=3,
        pod_start_delay_seconds=0,
        pod_acquisition_retry_interval_seconds=0.2,
        pod_acquisition_max_attempts=2,
        pods_per_miner=2,
        initial_pod_count=2,
        pod_idle_check_seconds=1,
        pod_liveness_check_seconds=1,
        generation_heartbeat_seconds=600,
    )
    return base.model_copy(update=overrides)


def audit_input(world: FakeWorld, queue: str) -> AuditInput:
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    return AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy)


def worker(client: Client, world: FakeWorld, queue: str) -> Worker:
    return Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=world.activities())


def rented(world: FakeWorld, what: str) -> list[str]:
    return [name for kind, name in world.rented if kind == what]


async def test_rerun_after_terminate_starts_and_the_old_pods_delete_themselves(
    client: Client,
) -> None:
    """`terminate` then `start` with the same id: the new run audits (it never meets the old
    run's children), and every pod the old run rented is deleted."""
    world = FakeWorld(files=round_files(8), policy=policy(), stuck_pods={POD_0})
    queue = f"q-{uuid.uuid4()}"
    audit_id = f"audit-1-{uuid.uuid4()}"
    async with worker(client, world, queue):
        first = await client.start_workflow(
            "AuditWorkflow", audit_input(world, queue), id=audit_id, task_queue=queue
        )

        async def old_pod_busy() -> bool:
            return any(c.startswith("p") for c in world.generate_calls) and len(world.rented) >= 2

        await assert_eventually(old_pod_busy, timeout=30)
        await first.terminate("operator: re-audit")
        old_names = rented(world, "deploy")
        world.stuck_pods.clear()
        second = await client.start_workflow(
            "AuditWorkflow",
            audit_input(world, queue),
            id=audit_id,
            task_queue=queue,
            result_type=AuditResult,
        )
        result: AuditResult = await second.result()
        assert result.audit.outcome is AuditOutcome.PASSED
        assert result.audit.checked_prompts == 8

        async def old_pods_deleted() -> bool:
            return set(old_names) <= set(rented(world, "delete"))

        await assert_eventually(old_pods_deleted, timeout=30)
    new_names = [n for n in rented(world, "deploy") if n not in old_names]
    keys = {
        run_key(first.first_execution_run_id or ""),
        run_key(second.first_execution_run_id or ""),
    }
    # Upstream's name plus the run key: the runs never share a pod name; the sweep prefix holds.
    assert {n.rsplit("-", 1)[1] for n in old_names + new_names} == keys
    assert all(unkeyed_pod_name(n).startswith("miner-01-5fake-") for n in old_names + new_names)
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert set(stats) <= {upstream_pod_name(1, "5Fake", i) for i in range(result.pods_started)}


async def test_terminated_pod_child_is_noticed_and_replaced(client: Client) -> None:
    """A pod child terminated by an operator (no pod_finished ever comes) is noticed at once:
    its prompt is released, a replacement pod starts, the verdict is unchanged."""
    world = FakeWorld(files=round_files(6), policy=policy(), stuck_pods={POD_0})
    queue = f"q-{uuid.uuid4()}"
    async with worker(client, world, queue):
        handle = await client.start_workflow(
            "AuditWorkflow",
            audit_input(world, queue),
            id=f"audit-1-{uuid.uuid4()}",
            task_queue=queue,
            result_type=AuditResult,
        )
        pod_id = await pod_workflow_id(client, handle.id, 0)

        async def pod_0_busy() -> bool:
            return len(world.generate_calls) >= 2  # each pod holds one; pod 0's never answers

        await assert_eventually(pod_0_busy, timeout=30)
        await client.get_workflow_handle(pod_id).terminate("operator")
        result: AuditResult = await handle.result()
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.checked_prompts == 6
    assert result.pods_started == 3  # the replacement
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert stats[POD_0]["termination_reason"] == VANISHED


async def test_stuck_pod_is_replaced_after_its_assignment_deadline(client: Client) -> None:
    """A pod child that holds an assignment past every timeout (its workflow still runs) is
    stuck: its child is cancelled, its prompt goes to a replacement, the audit completes."""
    pol = policy(
        generation_timeout_seconds=1,
        download_timeout_seconds=1,
        assignment_overhead_seconds=2,
        pods_per_miner=1,
        initial_pod_count=1,
    )
    world = FakeWorld(files=round_files(3), policy=pol, stuck_pods={POD_0})
    queue = f"q-{uuid.uuid4()}"
    async with worker(client, world, queue):
        handle = await client.start_workflow(
            "AuditWorkflow",
            audit_input(world, queue),
            id=f"audit-1-{uuid.uuid4()}",
            task_queue=queue,
            result_type=AuditResult,
        )
        result: AuditResult = await handle.result()
        pod = client.get_workflow_handle(await pod_workflow_id(client, handle.id, 0))
        await wait_for_status(pod, WorkflowExecutionStatus.CANCELED, timeout=30)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.checked_prompts == 3
    assert result.pods_started == 2
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert stats[POD_0]["termination_reason"] == STUCK
    assert POD_0 in world.deleted  # the cancelled child still deleted its pod


async def test_busy_pod_deletes_itself_when_its_audit_is_terminated(client: Client) -> None:
    """Terminating an audit leaves its pod children running; a busy one (its generation never
    answers) notices within POD_IDLE_CHECK, stops its work and deletes its pod."""
    world = FakeWorld(files=round_files(4), policy=policy(pods_per_miner=1, initial_pod_count=1))
    world.stuck_pods = {POD_0}
    queue = f"q-{uuid.uuid4()}"
    async with worker(client, world, queue):
        handle = await client.start_workflow(
            "AuditWorkflow",
            audit_input(world, queue),
            id=f"audit-1-{uuid.uuid4()}",
            task_queue=queue,
        )
        pod = client.get_workflow_handle(await pod_workflow_id(client, handle.id, 0))

        async def generating() -> bool:
            return bool(world.generate_calls)

        await assert_eventually(generating, timeout=30)
        await handle.terminate("operator")
        await wait_for_status(pod, WorkflowExecutionStatus.COMPLETED, timeout=30)
        result = await pod.result()
    assert POD_0 in world.deleted
    assert result["stats"]["termination_reason"] == AUDIT_GONE
