"""Replay every recorded history against today's workflow code: a non-deterministic change fails.

Histories live in tests/replay/histories/{version}/ (`{scenario}--{workflow id}--run{n}.json`,
the JSON of `temporal workflow show --output json`); record the current version's with
`python -m tests.replay.record`. Older versions' folders are append-only: an incompatible change
needs `workflow.patched` (or a new workflow version) so that their audits still replay, and a new
folder beside them. The last test proves the check can fail at all.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from models.audit import (
    AuditInput,
    AuditPolicy,
    AuditResult,
    PodHealthInput,
    PodInput,
    PodRef,
    PodWorkflowResult,
)
from tests.replay.record import HISTORIES_DIR, HISTORIES_ROOT, SCENARIOS, parse_history_path
from workflows import WORKFLOWS
from workflows.audit import AuditWorkflow
from workflows.pod import PodWorkflow

HISTORIES = sorted(HISTORIES_ROOT.glob("*/*.json"))
RELEASED_VERSIONS: dict[str, set[str]] = {
    "v1": {"AuditWorkflow", "PodWorkflow"},
    "v2": {"AuditWorkflow", "PodWorkflow"},
    "v3": {"AuditWorkflow", "PodWorkflow"},  # compare-submitted-png
    "v4": {"AuditWorkflow", "PodWorkflow"},  # run-keyed-pods, pod-watchdog
    "v5-ops": {"AuditWorkflow", "PodWorkflow"},  # ops-notify (webhook notices)
    "v5-cost": {"AuditWorkflow", "PodWorkflow"},  # pod-cost
    "v6": {"AuditWorkflow", "PodWorkflow"},  # all of the above + audit-report (HTML report)
    "v7": {
        "AuditWorkflow",
        "PodWorkflow",
    },  # + speculative-reexecution (the `speculation` scenario)
    "rounds-v1": {
        "RoundWorkflow",
        "BuildTrackingWorkflow",
        "LeaderGenerationWorkflow",
        "PodWorkflow",
    },
    "rounds-v2": {"RoundWorkflow"},  # round-end-sweep
    "rounds-v3": {"RoundWorkflow"},  # round-notify (a failed leader run's error notice)
}
"""Every workflow version ever released -> the workflow types its histories cover; they must stay
(CI fails if a folder goes)."""


def load(path: Path) -> WorkflowHistory:
    _, workflow_id, _ = parse_history_path(path)
    return WorkflowHistory.from_json(workflow_id, path.read_text())


def workflow_type(history: WorkflowHistory) -> str:
    started = history.events[0].workflow_execution_started_event_attributes
    return started.workflow_type.name


def test_every_scenario_has_recorded_histories() -> None:
    """The histories dir is not empty and holds parent and pod runs of every scenario."""
    assert HISTORIES, f"no histories in {HISTORIES_DIR}: run `python -m tests.replay.record`"
    recorded: dict[str, set[str]] = {}
    for path in sorted(HISTORIES_DIR.glob("*.json")):
        name, _, _ = parse_history_path(path)
        recorded.setdefault(name, set()).add(workflow_type(load(path)))
    for scenario in SCENARIOS:
        assert recorded.get(scenario.name) == {"AuditWorkflow", "PodWorkflow"}, scenario.name


def test_every_released_version_keeps_its_histories() -> None:
    """History folders are append-only: one per released workflow version, never emptied."""
    for version, expected in RELEASED_VERSIONS.items():
        kinds = {workflow_type(load(p)) for p in (HISTORIES_ROOT / version).glob("*.json")}
        assert kinds >= expected, version


def test_speculation_history_shows_its_marker_copies_and_revokes() -> None:
    """The recorded speculative audit carries its patch marker, and its straggler's history the
    `revoke` signals that took its copies back (so replaying it exercises that path)."""
    parent, *pods = sorted((HISTORIES_ROOT / "v7").glob("speculation--*.json"))
    markers = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in load(parent).events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert any(b'"speculative-reexecution"' in m for m in markers)
    revokes = [
        e
        for pod in pods
        for e in load(pod).events
        if e.workflow_execution_signaled_event_attributes.signal_name == "revoke"
    ]
    assert len(revokes) == 2


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_history_replays_deterministically(path: Path) -> None:
    """Today's workflow code makes exactly the commands this recorded run made."""
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(load(path))


@workflow.defn(name="PodWorkflow", sandboxed=False)
class PodWorkflowWithExtraActivity(PodWorkflow):
    """PodWorkflow plus one health check before deploying: not replay-compatible."""

    @workflow.run
    async def run(self, input: PodInput) -> PodWorkflowResult:
        await workflow.execute_activity(
            "check_pod_health",
            PodHealthInput(pod=PodRef(name=input.pod_name, provider=input.provider)),
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=30),
        )
        return await super().run(input)


async def test_replay_detects_a_non_deterministic_change() -> None:
    """One extra activity call in PodWorkflow makes every recorded pod history fail to replay."""
    pods = [path for path in HISTORIES if workflow_type(load(path)) == "PodWorkflow"]
    assert pods
    replayer = Replayer(
        workflows=[AuditWorkflow, PodWorkflowWithExtraActivity],
        data_converter=pydantic_data_converter,
    )
    result = await replayer.replay_workflow(load(pods[0]), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, workflow.NondeterminismError), result.replay_failure


@workflow.defn(name="AuditWorkflow", sandboxed=False)
class AuditWorkflowLoadingPolicyTwice(AuditWorkflow):
    """AuditWorkflow that reads its policy once more before reading the round: not compatible."""

    @workflow.run
    async def run(self, input: AuditInput) -> AuditResult:
        return await super().run(input)

    async def _prepare(self, input: AuditInput, policy: AuditPolicy) -> AuditResult | None:
        await workflow.execute_activity(
            "load_audit_policy",
            result_type=AuditPolicy,
            start_to_close_timeout=timedelta(seconds=30),
        )
        return await super()._prepare(input, policy)


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_replay_detects_a_change_to_audit_workflow(version: str) -> None:
    """An extra activity in AuditWorkflow's v2 path fails the replay of a recorded audit (so a
    change to the parent cannot slip through with only pod histories checked)."""
    audits = [
        path
        for path in sorted((HISTORIES_ROOT / version).glob("honest--*.json"))
        if workflow_type(load(path)) == "AuditWorkflow"
    ]
    assert audits, version
    replayer = Replayer(
        workflows=[AuditWorkflowLoadingPolicyTwice, PodWorkflow],
        data_converter=pydantic_data_converter,
    )
    result = await replayer.replay_workflow(load(audits[0]), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, workflow.NondeterminismError), result.replay_failure
