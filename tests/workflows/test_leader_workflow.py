"""LeaderGenerationWorkflow on the real dev server with fake activities: the leader's baseline."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from models.competition import GenerationEntry
from models.rounds import LeaderInput, LeaderResult
from tests.workflows.fakes import FakeWorld, round_files
from tests.workflows.test_audit_workflow import policy
from workflows import WORKFLOWS


async def run_leader(client: Client, world: FakeWorld) -> LeaderResult:
    queue = f"q-{uuid.uuid4()}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=world.activities()):
        result: LeaderResult = await client.execute_workflow(
            "LeaderGenerationWorkflow",
            LeaderInput(round=1, policy=world.policy),
            id=f"leader-1-{uuid.uuid4()}",
            task_queue=queue,
            result_type=LeaderResult,
        )
        return result


async def test_leader_generates_every_prompt_without_scoring(client: Client) -> None:
    """Every prompt of the round (not only submitted ones) once, no distance, upstream's files."""
    world = FakeWorld(files=round_files(8), policy=policy())
    world.files = world.files.model_copy(update={"submitted": {}})  # the leader submits nothing
    result = await run_leader(client, world)
    assert (result.generated, result.failed, result.prompts) == (8, 0, 8)
    assert result.image == world.leader_image
    assert sorted(world.generate_calls) == sorted(f"p{i:03d}#1" for i in range(8))
    assert world.scored == []  # nothing to compare with
    assert all(name.startswith("miner-01-leader-") for name in world.deployed)
    assert sorted(world.deleted) == sorted(world.deployed)
    final = world.writes[-1]
    assert [f.path for f in final.files] == [
        "rounds/1/leader/generated.json",
        "rounds/1/leader/pod_stats.json",
    ]
    assert final.message.splitlines() == [
        "Update generated for round 1, miner leader",
        "Update pod stats for round 1, miner leader",
    ]
    generated = final.files[0].value
    assert isinstance(generated, dict) and len(generated) == 8
    assert {entry["distance"] for entry in generated.values()} == {0.0}  # upstream's default


async def test_leader_resumes_and_skips_what_is_generated(client: Client) -> None:
    """A restarted leader run generates only what leader/generated.json lacks; with all done it
    rents nothing."""
    files = round_files(6)
    done = {
        s.stem: GenerationEntry(glb=f"http://cdn/{s.stem}.glb", png=f"http://cdn/{s.stem}.png")
        for s in files.prompts[:4]
    }
    world = FakeWorld(files=files, policy=policy(), leader_generated=done)
    result = await run_leader(client, world)
    assert sorted(world.generate_calls) == ["p004#1", "p005#1"]
    assert result.generated == 6

    everything = {
        s.stem: GenerationEntry(glb=f"http://cdn/{s.stem}.glb", png=f"http://cdn/{s.stem}.png")
        for s in files.prompts
    }
    idle = FakeWorld(files=files, policy=policy(), leader_generated=everything)
    result = await run_leader(client, idle)
    assert idle.generate_calls == [] and idle.deployed == []
    assert result.pods_started == 0 and result.generated == 6


async def test_empty_leader_json_fails_with_the_reason(client: Client) -> None:
    """No leader: the run fails at once, its own failure naming leader.json; nothing rented."""
    world = FakeWorld(files=round_files(3), policy=policy(), leader_image=None)
    with pytest.raises(WorkflowFailureError) as failed:
        await run_leader(client, world)
    assert "Leader docker image not found" in str(failed.value.cause)
    assert world.deployed == [] and world.writes == []
