"""The live status board (`python starter.py status [--round N] [--once]`).

Every audit of a round as one table row (progress bar, mismatches, median so far, pods and their
phases, ETA, rented GPU time), with the round loop, the build tracker and the leader run above
it. The data comes only from Temporal: the visibility store (search attributes `Round`,
`Hotkey`, `AuditStatus`, `ParentWorkflowId`), `describe` and the workflows' queries (`progress`,
`status`), never from logs. Rented GPU time is the summed lifetime of an audit's pod children
(a pod child lives from its deploy until its pod is deleted).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError

from models.audit import AuditProgress, AuditResult
from models.constants import (
    ROUND_WORKFLOW_ID,
    SEARCH_ATTRIBUTE_AUDIT_STATUS,
    SEARCH_ATTRIBUTE_HOTKEY,
    SEARCH_ATTRIBUTE_ROUND,
    build_tracking_id,
    leader_workflow_id,
)
from models.rounds import RoundStatus
from starter import estimate_remaining, format_duration

logger = logging.getLogger(__name__)

ROUND_KEY = SearchAttributeKey.for_int(SEARCH_ATTRIBUTE_ROUND)
HOTKEY_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_HOTKEY)
STATUS_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_AUDIT_STATUS)

REFRESH_SECONDS = 2.0
"""How often the live board asks the server again."""

BAR_WIDTH = 20

QUERY_WAIT_SECONDS = 5.0
"""A query waits for a worker; with none, the board says so instead of hanging."""


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class AuditRow(_Row):
    """One audit as the board shows it."""

    workflow_id: str
    hotkey: str
    execution: str = Field(description="Temporal's status: RUNNING, COMPLETED, FAILED, ...")
    audit_status: str | None = Field(None, description="the AuditStatus search attribute")
    progress: AuditProgress | None = Field(None, description="None: closed or no worker answers")
    result: AuditResult | None = Field(None, description="the verdict of a completed audit")
    elapsed_seconds: float
    gpu_seconds: float = Field(0.0, description="summed lifetime of its pod children")


class WorkflowRow(_Row):
    """The round loop, build tracker or leader run."""

    workflow_id: str
    execution: str
    detail: str = ""


class Board(_Row):
    """Everything one refresh of the board shows."""

    round: int | None
    workflows: list[WorkflowRow] = Field(default_factory=list)
    audits: list[AuditRow] = Field(default_factory=list)


async def latest_round(client: Client) -> int | None:
    """The round the loop is on, else the highest `Round` among the audits."""
    try:
        status: RoundStatus = await asyncio.wait_for(
            client.get_workflow_handle(ROUND_WORKFLOW_ID).query("status", result_type=RoundStatus),
            QUERY_WAIT_SECONDS,
        )
        if status.round is not None:
            return int(status.round)
    except (RPCError, TimeoutError, WorkflowQueryFailedError) as e:
        # no loop, a closed one, or no worker: fall back to the audits
        logger.debug("round loop status unavailable: %s", e)
    best: int | None = None
    async for execution in client.list_workflows('WorkflowType = "AuditWorkflow"', limit=200):
        value = execution.typed_search_attributes.get(ROUND_KEY)
        if value is not None and (best is None or value > best):
            best = value
    return best


async def collect(client: Client, round_number: int | None) -> Board:
    """One snapshot of the board for `round_number` (the latest round when None)."""
    if round_number is None:
        round_number = await latest_round(client)
    if round_number is None:
        return Board(round=None)
    workflows = [
        row
        for workflow_id in (
            ROUND_WORKFLOW_ID,
            build_tracking_id(round_number),
            leader_workflow_id(round_number),
        )
        if (row := await _workflow_row(client, workflow_id)) is not None
    ]
    audits: list[AuditRow] = []
    query = f'WorkflowType = "AuditWorkflow" AND {SEARCH_ATTRIBUTE_ROUND} = {round_number}'
    seen: set[str] = set()
    async for execution in client.list_workflows(query):
        if execution.id in seen:  # an older run of a re-audited id: the newest comes first
            continue
        seen.add(execution.id)
        audits.append(await _audit_row(client, execution.id))
    audits.sort(key=lambda row: row.workflow_id)
    return Board(round=round_number, workflows=workflows, audits=audits)


async def _workflow_row(client: Client, workflow_id: str) -> WorkflowRow | None:
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError:
        return None  # never started
    execution = _status_name(description.status)
    detail = ""
    if description.status == WorkflowExecutionStatus.RUNNING and workflow_id == ROUND_WORKFLOW_ID:
        try:
            status = await asyncio.wait_for(
                handle.query("status", result_type=RoundStatus), QUERY_WAIT_SECONDS
            )
            detail = f"round {status.round} stage {status.stage}: {status.phase}"
        except (RPCError, TimeoutError, WorkflowQueryFailedError):
            detail = "no worker answers"
    return WorkflowRow(workflow_id=workflow_id, execution=execution, detail=detail)


async def _audit_row(client: Client, workflow_id: str) -> AuditRow:
    handle = client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    attributes = description.typed_search_attributes
    now = datetime.now(UTC)
    end = description.close_time or now
    progress: AuditProgress | None = None
    if description.status == WorkflowExecutionStatus.RUNNING:
        try:
            progress = await asyncio.wait_for(
                handle.query("progress", result_type=AuditProgress), QUERY_WAIT_SECONDS
            )
        except (RPCError, TimeoutError, WorkflowQueryFailedError) as e:
            logger.debug("progress of %s unavailable: %s", workflow_id, e)
    result: AuditResult | None = None
    if description.status == WorkflowExecutionStatus.COMPLETED:
        result = await client.get_workflow_handle(workflow_id, result_type=AuditResult).result()
    return AuditRow(
        workflow_id=workflow_id,
        hotkey=attributes.get(HOTKEY_KEY) or workflow_id,
        execution=_status_name(description.status),
        audit_status=attributes.get(STATUS_KEY),
        progress=progress,
        result=result,
        elapsed_seconds=(end - description.start_time).total_seconds(),
        gpu_seconds=await _pod_seconds(client, workflow_id, now),
    )


async def _pod_seconds(client: Client, audit_id: str, now: datetime) -> float:
    total = 0.0
    async for pod in client.list_workflows(f'ParentWorkflowId = "{audit_id}"'):
        total += ((pod.close_time or now) - pod.start_time).total_seconds()
    return total


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name if status is not None else "UNKNOWN"


# --- rendering ----------------------------------------------------------------------------------


def render(board: Board) -> RenderableType:
    """The board as rich renderables: the round's workflows, then one row per audit."""
    if board.round is None:
        return Text("no audits yet (start one: .venv/bin/python starter.py audit ...)")
    parts: list[RenderableType] = [Text(f"Round {board.round}", style="bold")]
    if board.workflows:
        loops = Table(show_header=True, header_style="bold", box=None)
        for column in ("workflow", "state", "detail"):
            loops.add_column(column)
        for loop in board.workflows:
            loops.add_row(loop.workflow_id, loop.execution, loop.detail)
        parts.append(loops)
    table = Table(show_header=True, header_style="bold", title=f"Audits of round {board.round}")
    for column in (
        "hotkey",
        "status",
        "progress",
        "done",
        "mismatches",
        "median",
        "pods",
        "elapsed",
        "ETA",
        "GPU time",
    ):
        table.add_column(column, no_wrap=column != "progress", overflow="ellipsis")
    for row in board.audits:
        progress = row.progress
        status = row.audit_status or row.execution.lower()
        if row.execution != "RUNNING" and row.execution != "COMPLETED":
            status = f"{status} ({row.execution.lower()})"
        if progress is None and row.result is not None:
            audit = row.result.audit
            bar: RenderableType = Text(
                audit.reason or audit.outcome.value, overflow="ellipsis", no_wrap=True
            )
            done = f"{audit.checked_prompts} checked"
            mismatches = f"{audit.failed_prompts} ({audit.failed_critical}c)"
            median = f"{audit.generation_time:.1f}s" if audit.generation_time is not None else "-"
            pods = f"{row.result.pods_started} used"
            eta = ""
        elif progress is None:
            bar = Text("-" if row.execution != "RUNNING" else "no worker answers")
            done = mismatches = median = pods = eta = ""
        else:
            bar = ProgressBar(
                total=max(progress.total, 1), completed=progress.done, width=BAR_WIDTH
            )
            done = f"{progress.done}/{progress.total}"
            mismatches = f"{progress.mismatches} ({progress.critical_mismatches}c)"
            median = f"{progress.median_seconds:.1f}s" if progress.median_seconds else "-"
            phases = Counter(str(pod.phase) for pod in progress.pods)
            pods = ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items())) or "-"
            remaining = estimate_remaining(progress, row.elapsed_seconds)
            eta = "?" if remaining is None else format_duration(remaining)
        table.add_row(
            row.hotkey[:16],
            status,
            bar,
            done,
            mismatches,
            median,
            pods,
            format_duration(row.elapsed_seconds),
            eta,
            format_duration(row.gpu_seconds),
        )
    parts.append(table)
    return Group(*parts)


async def show(client: Client, round_number: int | None, *, once: bool, console: Console) -> None:
    """Print the board once, or refresh it in place every REFRESH_SECONDS until Ctrl-C."""
    board = await collect(client, round_number)
    if once:
        console.print(render(board))
        return
    with Live(render(board), console=console, refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            live.update(render(await collect(client, round_number)))
