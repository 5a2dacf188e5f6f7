"""Continue-as-new with assignments in flight, small and fast: what each run hands to the next.

A dedicated dev server suggests continue-as-new at THRESHOLD events (the stock 4096 would need
hundreds of prompts: tests/workflows/test_long_history.py does that at scale), so a pod or an
audit of a few prompts continues several times while assignments are outstanding. Every run is
read back from its history: the carried state is the next run's input.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from benchmarks.histories import RunHistory, audit_histories, run_chain
from benchmarks.long_audit import start_dev_server
from models.audit import AuditInput, AuditResult
from models.competition import AuditOutcome
from models.constants import pod_child_id
from tests.workflows.fakes import FakeWorld, round_files
from tests.workflows.test_audit_workflow import policy
from tests.workflows.test_pod_paths import POD, assignment, pod_policy, pod_world, results
from workflows import WORKFLOWS

THRESHOLD = 40
"""Events at which the server suggests continue-as-new: about one prompt's worth of a run."""
DEADLINE = 60.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def short_history_client() -> AsyncIterator[Client]:
    """A dev server that suggests continue-as-new at THRESHOLD events."""
    env = await start_dev_server(THRESHOLD)
    try:
        yield env.client
    finally:
        await env.shutdown()


def first_run_id(handle: WorkflowHandle[Any, Any]) -> str:
    run_id = handle.first_execution_run_id or handle.run_id
    assert run_id is not None
    return run_id


def scheduled(run: RunHistory, activity: str) -> list[dict[str, Any]]:
    """Inputs of the `activity` calls this run scheduled, in order."""
    inputs = []
    for event in run.history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == activity:
                inputs.append(json.loads(attributes.input.payloads[0].data))
    return inputs


async def test_pod_carries_pending_assignments_seen_ids_and_its_pod(
    short_history_client: Client,
) -> None:
    """A pod given five prompts at once continues as new between them: each run hands the next
    its rented pod (no new deploy), the assignments not started yet (in order), the ids it has
    seen and its count; re-sent assignments are dropped, so no prompt is generated twice."""
    client = short_history_client
    stems = [f"p{i:03d}" for i in range(5)]
    world = FakeWorld(files=round_files(6), policy=pod_policy(max_concurrent_prompts_per_pod=1))
    async with pod_world(client, world) as pod:
        handle = await pod.start()
        await pod.wait_events(1)  # ready
        await pod.assign(*(assignment(s) for s in stems))
        got = results(await pod.wait_events(1 + len(stems)))
        assert sorted(got) == stems
        # a re-sent (duplicate) assignment, then a fresh one: the pod takes them in order, so
        # once p005 is done a duplicate accepted by a later run would have been generated too
        await pod.assign(assignment("p000"), assignment("p003"), assignment("p005"))
        await pod.wait_events(2 + len(stems))
        result = await asyncio.wait_for(pod.stop(), timeout=DEADLINE)
        runs = await run_chain(client, handle.id, first_run_id(handle))
    ids = [f"{s}#1" for s in [*stems, "p005"]]
    assert world.generate_calls == ids, "a prompt was generated twice or out of order"
    assert result.stats.processed == 6
    assert world.deployed == [POD], "a continued run rented its pod again"
    assert world.deleted == [POD], "a run deleted the pod it handed to the next"

    assert len(runs) >= 3, f"only {len(runs)} runs: THRESHOLD too high to test anything"
    per_run = [[call["assignment_id"] for call in scheduled(run, "generate")] for run in runs]
    assert [i for run in per_run for i in run] == ids
    carried_pending = 0
    for index, (run, successor) in enumerate(itertools.pairwise(runs)):
        assert run.continued_as_new
        carried = successor.input()["carried"]
        done = [i for earlier in per_run[: index + 1] for i in earlier]
        later = [i for following in per_run[index + 1 :] for i in following]
        rental = {"deployed_at", "healthy_at"}  # carried too: the pod's cost counts from them
        assert {k: v for k, v in carried["pod"].items() if k not in rental} == {
            "name": POD,
            "provider": "local",
            "container_id": POD,
            "url": f"http://{POD}",
        }
        assert all(carried["pod"][key] for key in rental)
        assert carried["stats"]["processed"] == len(done)
        pending = [a["assignment_id"] for a in carried["pending"]]
        assert pending == later[: len(pending)], "pending work lost or reordered"
        seen = carried["seen_assignments"]
        assert set(done) | set(pending) <= set(seen)
        assert len(seen) == len(set(seen))
        carried_pending += len(pending)
    assert carried_pending, "no run continued while assignments were waiting"


async def test_audit_carries_its_pods_outstanding_assignments(
    short_history_client: Client,
) -> None:
    """An audit that continues as new while its pod holds assignments hands the next run the
    pod (child id, phase) with those assignments outstanding and the prompts still locked to
    it; every result lands, nothing is generated twice and the verdict is exact."""
    client = short_history_client
    world = FakeWorld(
        files=round_files(6),
        policy=policy(pods_per_miner=1, initial_pod_count=1, max_concurrent_prompts_per_pod=2),
    )
    queue = f"q-{uuid.uuid4()}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    workflow_id = f"audit-1-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=world.activities()):
        handle = await client.start_workflow(
            "AuditWorkflow",
            AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy),
            id=workflow_id,
            task_queue=queue,
            result_type=AuditResult,
        )
        result: AuditResult = await asyncio.wait_for(handle.result(), timeout=DEADLINE)
        histories = await audit_histories(client, workflow_id, first_run_id(handle))
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.checked_prompts == 6
    assert result.generations == 6
    assert sorted(world.generate_calls) == [f"p{i:03d}#1" for i in range(6)]
    assert world.deployed == ["miner-01-5fake-0"]

    assert histories.parent_continues >= 1
    in_flight = 0
    first_run = histories.parent[0].run_id
    for successor in histories.parent[1:]:
        run = successor.input()["run"]
        assert run["run_chain_id"] == first_run  # side effects stay keyed by the first run
        assert [p["workflow_id"] for p in run["pods"]] == [pod_child_id(workflow_id, 0, first_run)]
        pod = run["pods"][0]
        for held in pod["outstanding"]:
            prompt = run["prompts"][held["stem"]]
            assert prompt["locked_by"] == "5fake-0" and not prompt["done"], prompt
            answered = [
                e for e in run["inbox"] if e["event"] == "pod_result" and e["stem"] == held["stem"]
            ]
            assert len(answered) <= 1
        in_flight += len(pod["outstanding"])
        issued = sum(p["issued"] for p in run["prompts"].values())
        assert issued <= 6, "an assignment was handed out twice"
    assert in_flight, "the audit never continued while its pod held assignments"
    assert not histories.parent[-1].continued_as_new
