"""Workflow code runs inside Temporal's sandbox: only pure data modules (`models`) pass through,
so a clock read (or any non-deterministic call) slipped into workflow or policy code is caught at
run time by the sandbox and at lint time by workflows/ruff.toml."""

from __future__ import annotations

import ast
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from tests.unit.sandbox_probe import ProbeImportedPolicy

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = sorted((ROOT / "workflows").rglob("*.py"))


def passed_through(path: Path) -> list[str]:
    """Modules a file imports inside `workflow.unsafe.imports_passed_through()` blocks."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.With | ast.AsyncWith) and any(
            "imports_passed_through" in ast.unparse(item.context_expr) for item in node.items
        ):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    modules.append(statement.module or "")
                elif isinstance(statement, ast.Import):
                    modules.extend(alias.name for alias in statement.names)
    return modules


def test_only_data_modules_pass_through_the_sandbox() -> None:
    """Workflow and policy modules are imported inside the sandbox (checked), never passed."""
    found = {str(p.relative_to(ROOT)): passed_through(p) for p in WORKFLOW_FILES}
    assert any(found.values()), "no passthrough block found: the check looks at nothing"
    for path, modules in found.items():
        assert all(m.split(".")[0] == "models" for m in modules), (path, modules)


async def test_sandbox_catches_the_clock_in_imported_policy_code(client: Client) -> None:
    """datetime.now() in a module imported as our policy modules are: the workflow fails on it
    (the probe workflow fails on non-determinism instead of retrying its task)."""
    queue = f"sandbox-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ProbeImportedPolicy],
    ):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                "ProbeImportedPolicy", id=f"probe-{uuid.uuid4()}", task_queue=queue
            )
        assert "datetime.datetime.now" in str(caught.value.cause)


def test_lint_bans_the_clock_in_policy_code() -> None:
    """workflows/ruff.toml: a clock read in any workflows/ module fails `make lint`."""
    probe = "from datetime import UTC, datetime\n\n\ndef late() -> bool:\n"
    probe += "    return datetime.now(UTC).year > 2000\n"
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--stdin-filename", "workflows/policy/x.py", "-"],
        input=probe,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TID251" in result.stdout and "workflow.now()" in result.stdout
