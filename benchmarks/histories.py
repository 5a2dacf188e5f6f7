"""Walk an audit's histories: the parent's continue-as-new chain and every pod child's chain.

Runs are followed through the histories themselves (the `WorkflowExecutionContinuedAsNew` event
names the next run), never through visibility, so the answer is exact as soon as the audit closed.
Used by the long-history test, `benchmarks.long_audit` and `tests.replay.record`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowHistory


@dataclass(frozen=True)
class RunHistory:
    """One run of one workflow id."""

    workflow_id: str
    run_id: str
    events: int
    size_bytes: int
    input_bytes: int  # first event: the input, i.e. the state continue-as-new carried
    continued_as_new: bool
    suggested_at: int | None  # event id of the first task start suggesting continue-as-new
    unhandled_command_failures: int  # tasks failed because a signal came while they completed
    history: WorkflowHistory = field(repr=False, compare=False)

    def input(self) -> Any:
        """The run's (first) input decoded from its JSON payload, e.g. the carried state."""
        started = self.history.events[0].workflow_execution_started_event_attributes
        return json.loads(started.input.payloads[0].data)


@dataclass(frozen=True)
class AuditHistories:
    """Every run of an audit: the parent's chain, and each pod child's chain by workflow id."""

    parent: list[RunHistory]
    pods: dict[str, list[RunHistory]]

    @property
    def pod_runs(self) -> list[RunHistory]:
        """All pod runs, children in start order, runs in chain order."""
        return [run for runs in self.pods.values() for run in runs]

    @property
    def parent_continues(self) -> int:
        """How many times the parent continued as new."""
        return sum(run.continued_as_new for run in self.parent)

    @property
    def pod_continues(self) -> int:
        """How many times pods continued as new, all children together."""
        return sum(run.continued_as_new for run in self.pod_runs)

    @property
    def carried_messages(self) -> int:
        """Signals a run received but had not handled when it continued as new, all runs.

        The parent carries its unhandled pod events (`state.inbox`), a pod its unstarted
        assignments (`carried.pending`); a new run starts with them.
        """
        parent = sum(len((run.input().get("state") or {}).get("inbox", [])) for run in self.parent)
        pods = sum(
            len((run.input().get("carried") or {}).get("pending", [])) for run in self.pod_runs
        )
        return parent + pods

    @property
    def unhandled_command_failures(self) -> int:
        """Tasks failed (and replayed) because a signal arrived while they completed."""
        return sum(run.unhandled_command_failures for run in [*self.parent, *self.pod_runs])

    @property
    def max_parent_events(self) -> int:
        """Longest parent run, in events."""
        return max(run.events for run in self.parent)

    @property
    def max_pod_events(self) -> int:
        """Longest pod run, in events (0 without pods)."""
        return max((run.events for run in self.pod_runs), default=0)

    @property
    def max_input_bytes(self) -> int:
        """Largest run input (the parent's carries the whole audit state), in bytes."""
        return max(run.input_bytes for run in [*self.parent, *self.pod_runs])

    @property
    def max_size_bytes(self) -> int:
        """Largest run of the audit (parent or pod), in bytes of history events."""
        return max(run.size_bytes for run in [*self.parent, *self.pod_runs])


async def run_chain(client: Client, workflow_id: str, first_run_id: str) -> list[RunHistory]:
    """Every run of `workflow_id` from `first_run_id` on, following continue-as-new."""
    runs: list[RunHistory] = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        last = history.events[-1]
        next_run: str | None = None
        if last.HasField("workflow_execution_continued_as_new_event_attributes"):
            continued = last.workflow_execution_continued_as_new_event_attributes
            next_run = continued.new_execution_run_id
        runs.append(
            RunHistory(
                workflow_id=workflow_id,
                run_id=run_id,
                events=len(history.events),
                size_bytes=sum(event.ByteSize() for event in history.events),
                input_bytes=history.events[0].ByteSize(),
                continued_as_new=next_run is not None,
                suggested_at=_first_suggestion(history),
                unhandled_command_failures=_unhandled_command_failures(history),
                history=history,
            )
        )
        run_id = next_run
    return runs


def _first_suggestion(history: WorkflowHistory) -> int | None:
    """Event id of the first task start where the server suggested continue-as-new."""
    for event in history.events:
        if (
            event.HasField("workflow_task_started_event_attributes")
            and event.workflow_task_started_event_attributes.suggest_continue_as_new
        ):
            return event.event_id
    return None


def _unhandled_command_failures(history: WorkflowHistory) -> int:
    """Tasks the server failed because new events (signals) arrived while they completed."""
    unhandled = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
    return sum(
        1
        for event in history.events
        if event.HasField("workflow_task_failed_event_attributes")
        and event.workflow_task_failed_event_attributes.cause == unhandled
    )


async def audit_histories(client: Client, workflow_id: str, first_run_id: str) -> AuditHistories:
    """The parent's runs and the runs of every child any of them started."""
    parent = await run_chain(client, workflow_id, first_run_id)
    pods: dict[str, list[RunHistory]] = {}
    for run in parent:
        for event in run.history.events:
            if event.HasField("child_workflow_execution_started_event_attributes"):
                child = event.child_workflow_execution_started_event_attributes.workflow_execution
                pods[child.workflow_id] = await run_chain(client, child.workflow_id, child.run_id)
    return AuditHistories(parent=parent, pods=pods)
