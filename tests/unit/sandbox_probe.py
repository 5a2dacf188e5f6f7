"""A workflow for test_sandbox.py that imports a policy module as ours do (inside the sandbox)."""

from __future__ import annotations

from temporalio import workflow

from tests.unit import sandbox_probe_policy as imported


@workflow.defn(name="ProbeImportedPolicy", failure_exception_types=[workflow.NondeterminismError])
class ProbeImportedPolicy:
    @workflow.run
    async def run(self) -> bool:
        return imported.deadline_passed()
