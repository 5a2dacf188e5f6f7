"""The worker's configuration as an activity, so each audit records the policy it ran with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from models.audit import AuditPolicy


class ConfigActivities:
    """Owns the worker's AuditPolicy (from settings); nothing else."""

    def __init__(self, policy: AuditPolicy) -> None:
        self._policy = policy

    @activity.defn(name="load_audit_policy")
    async def load_audit_policy(self) -> AuditPolicy:
        """The configured policy; recorded in the audit's history (pure read, retry-safe)."""
        return self._policy

    def activities(self) -> list[Callable[..., Any]]:
        """Bound activities for worker registration."""
        return [self.load_audit_policy]
