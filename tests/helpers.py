"""Test helpers: workers on fresh task queues, polling with deadlines, ports, test settings.

Tests never sleep for luck: they poll a condition with `assert_eventually` (or the workflow
helpers built on it) and fail with the last assertion error when the deadline passes.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError
from temporalio.worker import Worker

from models.constants import pod_child_id
from models.settings import Settings

T = TypeVar("T")


def new_task_queue(prefix: str = "test") -> str:
    """A task queue name no other test uses."""
    return f"{prefix}-{uuid.uuid4()}"


def new_worker(
    client: Client,
    *workflows: type,
    activities: Sequence[Callable[..., Any]] = (),
    task_queue: str | None = None,
    **kwargs: Any,
) -> Worker:
    """A `Worker` for `workflows` and `activities` on a fresh uuid task queue by default.

    Use as `async with new_worker(client, MyWorkflow, activities=[fake]) as worker:` and start
    workflows on `worker.task_queue`. `kwargs` go to `Worker` unchanged.
    """
    return Worker(
        client,
        task_queue=task_queue or new_task_queue(),
        workflows=list(workflows),
        activities=list(activities),
        **kwargs,
    )


async def assert_eventually(
    fn: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
) -> Any:
    """Poll `fn` until it passes; return its last result.

    `fn` may be sync or async. It passes when it returns anything but `False` without raising
    `AssertionError` (so both predicates and blocks of asserts work). Other exceptions propagate.

    Args:
        fn: Predicate or assertion block.
        timeout: Seconds before giving up.
        interval: Seconds between polls.

    Raises:
        AssertionError: The deadline passed; the last assertion error is chained.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: AssertionError | None = None
    while True:
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            if result is not False:
                return result
            last = AssertionError(f"{getattr(fn, '__name__', fn)!s} returned False")
        except AssertionError as e:
            last = e
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {last}") from last
        await asyncio.sleep(interval)


async def wait_for_status(
    handle: WorkflowHandle[Any, Any],
    *statuses: WorkflowExecutionStatus,
    timeout: float = 10.0,
) -> WorkflowExecutionDescription:
    """Poll `handle.describe()` until the workflow is in one of `statuses` (default: RUNNING).

    Returns:
        The matching description (search attributes, history length, ...).
    """
    wanted = statuses or (WorkflowExecutionStatus.RUNNING,)

    async def check() -> WorkflowExecutionDescription:
        desc = await handle.describe()
        assert desc.status in wanted, f"{handle.id} is {desc.status}, want {wanted}"
        return desc

    result: WorkflowExecutionDescription = await assert_eventually(check, timeout=timeout)
    return result


async def wait_for_query(
    handle: WorkflowHandle[Any, Any],
    query: Callable[..., Awaitable[T]] | Callable[..., T] | str,
    predicate: Callable[[T], bool] = bool,
    *,
    arg: Any = None,
    result_type: type | None = None,
    timeout: float = 10.0,
) -> T:
    """Poll a workflow query until `predicate(result)` holds; return that result.

    Query failures before the workflow's first task completes (RPC or query errors) are retried
    until the deadline like a false predicate.

    Args:
        handle: The workflow.
        query: Query method (e.g. `MyWorkflow.progress`) or query name.
        predicate: Condition on the query result; truthiness by default.
        arg: Single query argument, if any.
        result_type: Result type for a query given by name (pydantic models).
        timeout: Seconds before giving up.
    """
    args = () if arg is None else (arg,)

    async def check() -> T:
        try:
            value: T = await handle.query(query, *args, result_type=result_type)  # type: ignore[arg-type]
        except (RPCError, WorkflowQueryFailedError) as e:
            raise AssertionError(f"query failed: {e}") from e
        assert predicate(value), f"query result does not satisfy the predicate: {value!r}"
        return value

    result: T = await assert_eventually(check, timeout=timeout)
    return result


async def wait_for_visibility(
    client: Client, query: str, count: int = 1, timeout: float = 10.0
) -> int:
    """Poll `client.count_workflows(query)` until it reaches `count` (visibility lags writes).

    Example: `await wait_for_visibility(client, "Round = 3 AND AuditStatus = 'passed'")`.
    """

    async def check() -> int:
        found = (await client.count_workflows(query)).count
        assert found >= count, f"{found} workflows match {query!r}, want {count}"
        return found

    result: int = await assert_eventually(check, timeout=timeout)
    return result


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on loopback a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def make_settings(**overrides: Any) -> Settings:
    """`Settings` for tests: fake secrets, loopback address, nothing read from the environment.

    `model_validate` skips pydantic-settings' environment sources, so a TEMPORAL_ADDRESS or
    GPU_PROVIDERS in the shell cannot leak into a test; defaults and validators still apply.

    Args:
        **overrides: Field values by environment variable name (e.g. `TEMPORAL_ADDRESS=...`).
    """
    values: dict[str, Any] = {
        "TEMPORAL_ADDRESS": "127.0.0.1:7233",
        "TARGON_API_KEY": "fake-targon-key",
        "VERDA_CLIENT_ID": "fake-verda-id",
        "VERDA_CLIENT_SECRET": "fake-verda-secret",
        "VERDA_GENERATION_TOKEN": "fake-verda-token",
        "GITHUB_TOKEN": "fake-github-token",
        "LOCAL_ARTIFACTS_URL": "http://127.0.0.1:0",  # each worker serves its own store
    }
    values.update(overrides)
    return Settings.model_validate(values)


async def pod_workflow_id(client: Client, audit_id: str, index: int) -> str:
    """The id of an audit's `index`-th pod child, keyed by the audit's run chain."""
    description = await client.get_workflow_handle(audit_id).describe()
    chain = description.raw_description.workflow_execution_info.first_run_id
    return pod_child_id(audit_id, index, chain or description.run_id)
