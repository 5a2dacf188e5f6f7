"""The worker's configuration as activities, so each audit and round records the policy it ran
with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from models.audit import AuditPolicy
from models.rounds import RoundPolicy


class ConfigActivities:
    """Owns the worker's AuditPolicy and RoundPolicy (from settings); nothing else."""

    def __init__(self, policy: AuditPolicy, round_policy: RoundPolicy | None = None) -> None:
        self._policy = policy
        self._round_policy = round_policy or RoundPolicy()

    @activity.defn(name="load_audit_policy")
    async def load_audit_policy(self) -> AuditPolicy:
        """The configured policy; recorded in the audit's history (pure read, retry-safe)."""
        return self._policy

    @activity.defn(name="load_round_policy")
    async def load_round_policy(self) -> RoundPolicy:
        """The configured round policy; recorded in the round's history (pure read)."""
        return self._round_policy

    def activities(self) -> list[Callable[..., Any]]:
        """Bound activities for worker registration."""
        return [self.load_audit_policy, self.load_round_policy]
