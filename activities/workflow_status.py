"""`workflow_statuses`: the Temporal server's own record of whether workflows still run.

The round loop counts running audits from it (MAX_CONCURRENT_MINERS), including audits started
by an earlier run of the loop or by hand; a pure read, retry-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from models.rounds import WorkflowStatusesInput, WorkflowStatusesResult

NOT_FOUND = "NOT_FOUND"


@activity.defn(name="workflow_statuses")
async def workflow_statuses(input: WorkflowStatusesInput) -> WorkflowStatusesResult:
    """The status of the latest run of each workflow id (NOT_FOUND when there is none)."""
    client = activity.client()
    statuses: dict[str, str] = {}
    for workflow_id in input.ids:
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
            statuses[workflow_id] = NOT_FOUND
            continue
        status = description.status
        statuses[workflow_id] = status.name if status is not None else NOT_FOUND
    return WorkflowStatusesResult(statuses=statuses)


def activities() -> list[Callable[..., Any]]:
    """This module's activities, for worker registration."""
    return [workflow_statuses]
