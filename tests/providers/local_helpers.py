"""Helpers for tests that run reference-miner processes (miner, local provider, pod activities)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx

from models.miner_api import HEALTH_PATH
from providers.local import LocalProvider

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE = 30.0  # seconds a fresh miner process may take to answer (slow CI, 2 cores)


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = STARTUP_DEADLINE
) -> None:
    """Poll `check` until it returns True; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def health_status(http: httpx.AsyncClient, url: str) -> int | None:
    """Status of GET {url}/health, None when nothing answers."""
    try:
        return (await http.get(f"{url}{HEALTH_PATH}", timeout=2.0)).status_code
    except httpx.HTTPError:
        return None


async def wait_healthy(http: httpx.AsyncClient, url: str) -> None:
    """Wait until {url}/health answers 200."""

    async def healthy() -> bool:
        return await health_status(http, url) == 200

    await wait_until(healthy, f"{url}{HEALTH_PATH} to answer 200")


def free_port() -> int:
    """A currently free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_call_log(path: Path) -> list[dict[str, object]]:
    """All lines of a miner call log (empty if it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZXx"


class MinerProcess:
    """A `python -m miner` subprocess owned by a test; always killed at teardown."""

    def __init__(self, port: int, *args: str, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "miner", "--port", str(port), *args],
            cwd=PROJECT_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the miner (a pod dying without warning)."""
        with suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@asynccontextmanager
async def local_provider(
    state_dir: Path, call_log: Path | None = None
) -> AsyncIterator[LocalProvider]:
    """A LocalProvider whose pods are all deleted when the block exits."""
    provider = LocalProvider(state_dir, call_log=call_log)
    try:
        yield provider
    finally:
        await provider.delete_all()
        await provider.aclose()
