"""Speculative re-execution (SPECULATIVE_REEXECUTION) on the real dev server, fake activities:
an idle pod copies what a straggler holds, the first settling result wins, the rest is revoked."""

from __future__ import annotations

import uuid

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from models.audit import AuditInput, AuditPolicy, AuditResult, GenerateInput, GenerateResult
from models.competition import AuditOutcome
from models.constants import upstream_pod_name
from models.errors import ErrorType
from tests.workflows.fakes import FakeWorld, round_files
from tests.workflows.test_audit_workflow import policy, run_audit
from workflows import WORKFLOWS

FAST, SLOW = upstream_pod_name(1, "5Fake", 0), upstream_pod_name(1, "5Fake", 1)
PROMPTS = 10


def straggler_world(speculate: bool) -> FakeWorld:
    """Two pods with two loops each; pod 1 takes 100x longer (6 s) per generation."""
    pol: AuditPolicy = policy(
        pods_per_miner=2,
        initial_pod_count=2,
        max_concurrent_prompts_per_pod=2,
        speculative_reexecution=speculate,
    )
    return FakeWorld(files=round_files(PROMPTS), policy=pol, pod_times={FAST: 0.06, SLOW: 6.0})


async def test_an_idle_pod_copies_a_stragglers_prompts_and_the_first_result_wins(
    client: Client,
) -> None:
    """The straggler holds two prompts (one generating, one queued) when the fast pod runs out
    of work. The fast pod copies both; its results settle them, the straggler's queued one is
    revoked before it reaches the miner and its running one is cancelled when the pods stop.
    What the miner is judged on is upstream's: one attempt per prompt, the winning time."""
    world = straggler_world(speculate=True)
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.checked_prompts == PROMPTS
    generated = world.writes[-1].files[0].value
    assert isinstance(generated, dict)
    assert {s: (e["attempts"], e["generation_time"]) for s, e in generated.items()} == {
        f"p{i:03d}": (1, 0.06) for i in range(PROMPTS)
    }
    copies = sorted(c for c in world.generate_calls if c.endswith("#2"))
    firsts = sorted(c for c in world.generate_calls if c.endswith("#1"))
    # Two copies (#2) of the straggler's two prompts; of those, only the one it was already
    # generating reached its miner (#1), the queued one never did.
    assert len(copies) == 2, world.generate_calls
    assert len(firsts) == PROMPTS - 1, world.generate_calls
    assert len({c.split("#")[0] for c in copies} & {c.split("#")[0] for c in firsts}) == 1
    assert sorted(world.deleted) == sorted(world.deployed)
    # The straggler's cancelled generation never finished: no span of it was recorded.
    assert all(url != f"http://{SLOW}" for kind, url, _, _ in world.spans if kind == "generate")


async def test_a_failed_copy_charges_the_miner_nothing(client: Client) -> None:
    """Every copy fails (a miner error on the fast pod): the copies are dropped, not recorded,
    so the straggler's own results stand with one attempt each, as upstream would record."""
    world = straggler_world(speculate=True)
    queue = f"q-{uuid.uuid4()}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    fakes = list(world.activities())
    original = next(a for a in fakes if getattr(a, "__name__", "") == "generate")

    @activity.defn(name="generate")
    async def generate(input: GenerateInput) -> GenerateResult:
        if input.assignment_id.endswith("#2"):
            world.generate_calls.append(input.assignment_id)
            raise ApplicationError("HTTP 500", type=ErrorType.MINER_FAILED, non_retryable=True)
        result: GenerateResult = await original(input)
        return result

    activities = [generate if a is original else a for a in fakes]
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=activities):
        result: AuditResult = await client.execute_workflow(
            "AuditWorkflow",
            AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy),
            id=f"audit-1-{uuid.uuid4()}",
            task_queue=queue,
            result_type=AuditResult,
        )
    assert result.audit.outcome is AuditOutcome.PASSED
    generated = world.writes[-1].files[0].value
    assert isinstance(generated, dict)
    copied = {c.split("#")[0] for c in world.generate_calls if c.endswith("#2")}
    assert len(copied) == 2, world.generate_calls
    assert {s: (e["attempts"], e["generation_time"]) for s, e in generated.items()} == {
        f"p{i:03d}": (1, 6.0 if f"p{i:03d}" in copied else 0.06) for i in range(PROMPTS)
    }
