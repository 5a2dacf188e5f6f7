"""Deterministic orchestration only. `WORKFLOWS` is what worker.py and the tests register."""

from workflows.audit import AuditWorkflow
from workflows.pod import PodWorkflow

WORKFLOWS: list[type] = [AuditWorkflow, PodWorkflow]
