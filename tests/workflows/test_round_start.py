"""Starting the round loop is idempotent: a second start attaches to the running loop."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from models.rounds import RoundPolicy
from starter import start_round_loop


async def test_second_start_attaches_to_the_running_round_loop(client: Client) -> None:
    """`starter.py run` twice (or after a restart) never makes a second competition loop."""
    workflow_id = f"competition-{uuid.uuid4()}"
    queue = f"no-worker-{uuid.uuid4()}"  # nothing runs it: only the starts are under test
    first = await start_round_loop(
        client, task_queue=queue, workflow_id=workflow_id, policy=RoundPolicy()
    )
    try:
        second = await start_round_loop(
            client, task_queue=queue, workflow_id=workflow_id, policy=RoundPolicy()
        )
        assert second.result_run_id == first.result_run_id
        runs = [e async for e in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
        assert len(runs) <= 1  # visibility may lag; never two
    finally:
        await client.get_workflow_handle(workflow_id).terminate("test over")
