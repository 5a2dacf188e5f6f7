"""The embedded dev server for real: start, run a workflow, restart on the same file, find it.

Also checks the session `temporal_env` fixture and `python starter.py server`'s foreground mode.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey

from embedded_temporal import DevServer, connect, ensure_server, server_answers
from models.constants import SEARCH_ATTRIBUTES
from tests.helpers import (
    assert_eventually,
    free_port,
    make_settings,
    new_worker,
    wait_for_status,
    wait_for_visibility,
)

pytestmark = pytest.mark.e2e

ROUND = SearchAttributeKey.for_int("Round")
HOTKEY = SearchAttributeKey.for_keyword("Hotkey")
AUDIT_STATUS = SearchAttributeKey.for_keyword("AuditStatus")


@activity.defn
async def greet(name: str) -> str:
    """The one activity of the tiny workflow."""
    return f"hello {name}"


@workflow.defn
class GreetWorkflow:
    """Upserts our search attributes (fails forever if unregistered), then calls `greet`."""

    @workflow.run
    async def run(self, name: str) -> str:
        """Tag the run, greet, mark it done."""
        workflow.upsert_search_attributes([ROUND.value_set(7), HOTKEY.value_set(name)])
        greeting = await workflow.execute_activity(
            greet, name, start_to_close_timeout=timedelta(seconds=10)
        )
        workflow.upsert_search_attributes([AUDIT_STATUS.value_set("done")])
        return greeting


async def run_greeting(client: Client, name: str) -> str:
    """Run GreetWorkflow to completion on a fresh worker; return its workflow id."""
    workflow_id = f"greet-{uuid.uuid4()}"
    async with new_worker(client, GreetWorkflow, activities=[greet]) as worker:
        result = await client.execute_workflow(
            GreetWorkflow.run,
            name,
            id=workflow_id,
            task_queue=worker.task_queue,
            execution_timeout=timedelta(seconds=30),
        )
    assert result == f"hello {name}"
    return workflow_id


async def test_dev_server_survives_restart_on_same_db(tmp_path: Path) -> None:
    """A workflow run on the embedded server is still there after the server restarts."""
    address = f"127.0.0.1:{free_port()}"
    ui_port = free_port()
    settings = make_settings(TEMPORAL_ADDRESS=address, TEMPORAL_NAMESPACE="audits")
    db_file = tmp_path / "dev.db"

    server = await ensure_server(settings, db_file=db_file, ui_port=ui_port)
    assert server is not None
    try:
        assert server.startup_seconds is not None and server.startup_seconds < 30
        assert server_answers(f"127.0.0.1:{ui_port}", timeout=1.0), "Web UI should answer"
        assert server.pid_file.read_text().strip() == str(server.pid)
        client = await connect(settings)
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="audits")
        )
        registered = {
            name: IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_").title()
            for name, kind in listed.custom_attributes.items()
        }
        for name, kind in SEARCH_ATTRIBUTES.items():
            assert registered.get(name, "").lower() == kind.lower(), (name, registered)

        workflow_id = await run_greeting(client, "alice")
        await wait_for_visibility(
            client, f"WorkflowId = '{workflow_id}' AND Round = 7 AND AuditStatus = 'done'"
        )
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.running
    assert not server_answers(address, timeout=0.5)
    assert db_file.is_file() and server.log_file.is_file()
    assert not server.pid_file.exists()

    async with DevServer.from_settings(settings, db_file=db_file, ui_port=None) as again:
        client = await connect(settings)
        desc = await wait_for_status(
            client.get_workflow_handle(workflow_id), WorkflowExecutionStatus.COMPLETED
        )
        assert desc.typed_search_attributes.get(HOTKEY) == "alice"
        assert await client.get_workflow_handle(workflow_id).result() == "hello alice"
        # Attributes that already exist in the file are accepted, and still work.
        await run_greeting(client, "bob")
        assert again.running
    assert not server_answers(address, timeout=0.5)


async def test_session_environment_runs_a_workflow(client: Client) -> None:
    """The session `temporal_env` server has our search attributes and runs workflows."""
    workflow_id = await run_greeting(client, "carol")
    desc = await client.get_workflow_handle(workflow_id).describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert desc.typed_search_attributes.get(ROUND) == 7


async def test_run_foreground_serves_until_interrupted(tmp_path: Path) -> None:
    """`python starter.py server` mode: the server runs in the foreground; SIGINT stops it."""
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    code = (
        "from embedded_temporal import run_foreground\n"
        "from models.settings import load_settings\n"
        "run_foreground(load_settings(), ui_port=None)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await assert_eventually(lambda: server_answers(address, timeout=0.5), timeout=30)
        assert (tmp_path / ".temporal" / "dev.db").is_file()
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=15)
        assert b"Ctrl-C stops it" in stderr
        assert not server_answers(address, timeout=0.5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
