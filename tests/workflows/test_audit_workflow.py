"""AuditWorkflow + PodWorkflow logic on the real dev server, with fake activities."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from models.audit import AuditInput, AuditPolicy, AuditResult, ProviderName
from models.competition import AuditOutcome, BuildStatus
from models.errors import ErrorType
from tests.workflows.fakes import FakeWorld, round_files
from workflows import WORKFLOWS
from workflows.audit import STATUS_KEY


def policy(**overrides: object) -> AuditPolicy:
    base = AuditPolicy(
        gpu_providers=[ProviderName.LOCAL], pod_min_samples=4, pod_failure_threshold=3
    )
    return base.model_copy(update=overrides)


async def run_audit(
    client: Client, world: FakeWorld, hotkey: str | None = None, workflow_id: str | None = None
) -> AuditResult:
    queue = f"q-{uuid.uuid4()}"
    pol = world.policy.model_copy(update={"gpu_task_queue": queue})
    world.policy = pol
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=world.activities()):
        result: AuditResult = await client.execute_workflow(
            "AuditWorkflow",
            AuditInput(round=1, hotkey=hotkey or world.files.hotkey, policy=pol),
            id=workflow_id or f"audit-1-{uuid.uuid4()}",
            task_queue=queue,
            result_type=AuditResult,
        )
        return result


async def test_honest_miner_passes_with_each_prompt_generated_once(client: Client) -> None:
    """Every prompt is generated exactly once, the verdict passes, every pod is deleted."""
    world = FakeWorld(files=round_files(12), policy=policy())
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.checked_prompts == 12
    assert sorted(world.generate_calls) == sorted(f"p{i:03d}#1" for i in range(12))
    assert sorted(world.deleted) == sorted(world.deployed)
    assert len(world.deployed) == 4
    assert len(world.writes) == 1
    paths = [f.path for f in world.writes[0].files]
    assert paths == [
        "rounds/1/5Fake/generated.json",
        "rounds/1/5Fake/pod_stats.json",
        "rounds/1/generation_audits.json",
    ]


async def test_mismatches_reject_and_stop_early(client: Client) -> None:
    """Mismatches over tolerance reject; generation stops once the verdict is final."""
    files = round_files(40, critical=["p000", "p001"])
    world = FakeWorld(
        files=files,
        policy=policy(pods_per_miner=2, initial_pod_count=1, pod_failure_threshold=100),
        mismatching={f"p{i:03d}" for i in range(20)},
    )
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.REJECTED
    assert result.early_exit
    assert result.audit.checked_prompts < 40
    assert "Critical mismatches (2) exceed tolerance (1)" in result.audit.reason
    assert sorted(world.deleted) == sorted(world.deployed)


async def test_failed_prompt_is_retried_on_another_pod(client: Client) -> None:
    """A model failure re-queues the prompt on a pod that has not tried it."""
    world = FakeWorld(files=round_files(6), policy=policy(pods_per_miner=2), failing={"p002": 1})
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.generate_calls.count("p002#1") == 1
    assert world.generate_calls.count("p002#2") == 1
    assert result.generations == 7


async def test_build_failure_rejects_without_pods(client: Client) -> None:
    """A failed build writes the build-failure verdict and rents nothing."""
    world = FakeWorld(files=round_files(3, build_status=BuildStatus.FAILURE), policy=policy())
    result = await run_audit(client, world)
    assert result.audit.reason == "Failed to build a docker image"
    assert world.deployed == []


async def test_no_healthy_pod_rejects_with_deploy_failure(client: Client) -> None:
    """When no pod ever becomes healthy the verdict is the deploy failure."""
    world = FakeWorld(
        files=round_files(3),
        policy=policy(pods_per_miner=1, initial_pod_count=1, max_pod_attempts=2),
    )
    world.bad_pods = {"miner-01-5fake-0-0", "miner-01-5fake-0-1"}
    result = await run_audit(client, world)
    assert result.audit.reason == "Failed to deploy a docker image"
    assert sorted(world.deleted) == sorted(world.deployed)


async def test_unknown_hotkey_fails_clearly(client: Client) -> None:
    """An unknown hotkey fails the workflow with a non-retryable error naming it."""
    world = FakeWorld(files=round_files(3), policy=policy())
    workflow_id = f"audit-1-{uuid.uuid4()}"
    with pytest.raises(WorkflowFailureError) as info:
        await run_audit(client, world, hotkey="nobody", workflow_id=workflow_id)
    assert "unknown hotkey nobody" in str(info.value.cause)
    description = await client.get_workflow_handle(workflow_id).describe()
    status = description.typed_search_attributes.get(STATUS_KEY)
    assert status == "failed"
    assert world.deployed == []


async def test_bad_miner_output_is_a_recorded_failed_prompt(client: Client) -> None:
    """Non-GLB output fails that prompt on every pod it may try, then it is recorded as failed."""
    world = FakeWorld(
        files=round_files(5),
        policy=policy(pods_per_miner=2, max_prompt_attempts=2),
        errors={"p001": ErrorType.MINER_BAD_OUTPUT},
    )
    result = await run_audit(client, world)
    assert world.generate_calls.count("p001#1") + world.generate_calls.count("p001#2") == 2
    generated = world.writes[0].files[0].value
    assert isinstance(generated, dict)
    assert generated["p001"]["glb"] is None
    assert generated["p001"]["attempts"] == 2
    assert result.audit.failed_prompts == 1
    assert result.audit.checked_prompts == 5


async def test_unavailable_prompt_fails_once_without_blaming_the_pod(client: Client) -> None:
    """A prompt image that 404s is failed at once (no retry on other pods), pods stay good."""
    world = FakeWorld(
        files=round_files(5),
        policy=policy(pods_per_miner=2),
        errors={"p003": ErrorType.PROMPT_UNAVAILABLE},
    )
    result = await run_audit(client, world)
    assert world.prompt_fetches.count("p003") == 1
    assert [c for c in world.generate_calls if c.startswith("p003")] == []
    stats = world.writes[0].files[1].value
    assert isinstance(stats, dict)
    assert sum(s["hard_failed"] for s in stats.values()) == 0
    assert result.audit.failed_prompts == 1


async def test_single_pod_retries_its_own_failures(client: Client) -> None:
    """With one pod, a failed prompt comes back to that pod instead of waiting forever."""
    world = FakeWorld(
        files=round_files(3),
        policy=policy(pods_per_miner=1, initial_pod_count=1),
        failing={"p001": 2},
    )
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert [c for c in world.generate_calls if c.startswith("p001")] == [
        "p001#1",
        "p001#2",
        "p001#3",
    ]


async def test_last_pod_that_fails_to_deploy_is_replaced(client: Client) -> None:
    """A single slot whose first pod never gets healthy is replaced, and the audit passes."""
    world = FakeWorld(
        files=round_files(3),
        policy=policy(pods_per_miner=1, initial_pod_count=1, max_pod_attempts=3),
    )
    world.bad_pods = {"miner-01-5fake-0-0"}
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.deployed == ["miner-01-5fake-0-0", "miner-01-5fake-0-1"]
    assert sorted(world.deleted) == sorted(world.deployed)
    stats = world.writes[0].files[1].value
    assert isinstance(stats, dict)
    assert stats["miner-01-5fake-0-0"]["marked_bad"] is True
    assert "deploy failed" in stats["miner-01-5fake-0-0"]["termination_reason"]


async def test_empty_submission_is_decided_without_renting_pods(client: Client) -> None:
    """Nothing submitted: rejected with a clear reason, and no pod is rented."""
    files = round_files(2).model_copy(update={"submitted": {}})
    world = FakeWorld(files=files, policy=policy())
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.REJECTED
    assert result.audit.reason == "No submitted prompts to check"
    assert world.deployed == []


async def test_prompt_server_outage_is_not_charged_to_the_miner(client: Client) -> None:
    """A prompt server that fails for a while is retried by Temporal; nothing fails."""
    world = FakeWorld(files=round_files(2), policy=policy(pods_per_miner=1, initial_pod_count=1))
    world.prompt_outages = 2
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.failed_prompts == 0
    assert sorted(world.generate_calls) == ["p000#1", "p001#1"]


async def test_pod_that_cannot_be_deleted_still_ends_and_the_verdict_is_written(
    client: Client,
) -> None:
    """A rejected delete does not hang the audit: the pod reports and the sweep is the net."""
    world = FakeWorld(files=round_files(3), policy=policy(pods_per_miner=1, initial_pod_count=1))
    world.undeletable = {"miner-01-5fake-0-0"}
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    stats = world.writes[0].files[1].value
    assert isinstance(stats, dict)
    assert "delete failed" in stats["miner-01-5fake-0-0"]["termination_reason"]
    assert world.swept


async def test_pod_stopped_while_deploying_is_deleted_after_it_exists(client: Client) -> None:
    """Stop during a slow deploy: the deploy finishes first, then that pod is deleted."""
    world = FakeWorld(files=round_files(1), policy=policy(pods_per_miner=2, initial_pod_count=1))
    world.deploy_delay = {"miner-01-5fake-1-0": 1.5}
    await run_audit(client, world)
    assert sorted(world.deleted) == sorted(world.deployed)
    for name in world.deployed:
        assert world.log.index(("deploy", name)) < world.log.index(("delete", name)), world.log


async def test_generations_are_keyed_by_this_audit_run(client: Client) -> None:
    """The generate idempotency key names the audit's run chain, so a re-audit regenerates."""
    world = FakeWorld(files=round_files(2), policy=policy(pods_per_miner=1, initial_pod_count=1))
    workflow_id = f"audit-1-{uuid.uuid4()}"
    await run_audit(client, world, workflow_id=workflow_id)
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    assert world.generate_audit_ids == [f"{workflow_id}/{run_id}"] * 2
