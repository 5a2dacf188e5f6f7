"""Deterministic orchestration only. `WORKFLOWS` is what worker.py and the tests register."""

from workflows.audit import AuditWorkflow
from workflows.builds import BuildTrackingWorkflow
from workflows.leader import LeaderGenerationWorkflow
from workflows.pod import PodWorkflow
from workflows.round import RoundWorkflow

WORKFLOWS: list[type] = [
    AuditWorkflow,
    PodWorkflow,
    BuildTrackingWorkflow,
    LeaderGenerationWorkflow,
    RoundWorkflow,
]
