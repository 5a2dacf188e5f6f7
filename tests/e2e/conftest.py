"""End-to-end world: a bare competition repo, a static web root, workers on unique queues."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import git
import pytest
import pytest_asyncio
from temporalio.client import Client

from demo.competition import DemoMiner, publish_round
from demo.static_server import StaticServer
from demo.tiny_model import build_tiny_dinov3
from models.audit import AuditPolicy, AuditResult
from models.settings import Settings
from providers.local import LocalProvider
from starter import start_audit
from tests.helpers import make_settings
from worker import running_workers


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dinov3(tmp_path_factory.mktemp("dinov3") / "tiny")


@dataclass
class World:
    """One e2e test's competition, settings and queues."""

    root: Path
    bare: Path
    www: StaticServer
    settings: Settings
    task_queue: str
    gpu_task_queue: str
    call_log: Path

    def publish(self, round_number: int, miners: list[DemoMiner], n_prompts: int) -> list[str]:
        return publish_round(
            self.bare, self.root / "www", self.www.base_url, round_number, miners, n_prompts
        )

    def policy(self, **overrides: object) -> AuditPolicy:
        base = self.settings.audit_policy().model_copy(
            update={"gpu_task_queue": self.gpu_task_queue}
        )
        return base.model_copy(update=overrides)

    def generate_calls(self) -> list[dict[str, object]]:
        if not self.call_log.exists():
            return []
        lines = [
            json.loads(line) for line in self.call_log.read_text().splitlines() if line.strip()
        ]
        return [line for line in lines if line.get("status") == "received"]

    def read_json(self, path: str) -> object:
        repo = git.Repo(self.bare)
        return json.loads(repo.git.show(f"main:{path}"))

    async def audit(
        self, client: Client, round_number: int, hotkey: str, policy: AuditPolicy
    ) -> AuditResult:
        handle = await start_audit(
            client, round_number, hotkey, task_queue=self.task_queue, policy=policy
        )
        return await handle.result()


HF_TOKEN = "hf_e2e-secret-never-in-a-history"
"""Given to every e2e pod; the honest e2e audit proves it never reaches a history."""


@pytest_asyncio.fixture(loop_scope="session")
async def world(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[World]:
    root = tmp_path
    call_log = root / "calls.jsonl"
    with StaticServer(root / "www") as www:
        settings = make_settings(
            GPU_PROVIDERS="local",
            COMPETITION_REPO=str(root / "competition.git"),
            WORK_DIR=str(root / "work"),
            ARTIFACTS_DIR=str(root / "artifacts"),
            LOCAL_PODS_DIR=str(root / "pods"),
            LOCAL_MINER_CALL_LOG=str(call_log),
            DINOV3_MODEL=str(tiny_model_dir),
            PODS_PER_MINER=2,
            INITIAL_POD_COUNT=1,
            MAX_PROMPT_ATTEMPTS=2,
            HF_TOKEN=HF_TOKEN,
            POD_START_DELAY=0,
            CHECK_POD_INTERVAL=0.5,
            POD_ACQUISITION_RETRY_INTERVAL=1,
            GENERATION_MEDIAN_LIMIT=1.0,
            GENERATION_MEDIAN_TRIM_COUNT=1,
            GENERATION_TIMEOUT=10,
            ACCEPTABLE_DISTANCE=0.005,
            POD_WARMUP_TIMEOUT=30,
        )
        w = World(
            root=root,
            bare=root / "competition.git",
            www=www,
            settings=settings,
            task_queue=f"orch-{uuid.uuid4()}",
            gpu_task_queue=f"gpu-{uuid.uuid4()}",
            call_log=call_log,
        )
        try:
            yield w
        finally:
            await LocalProvider(root / "pods").delete_all()


@pytest_asyncio.fixture(loop_scope="session")
async def workers(client: Client, world: World) -> AsyncIterator[None]:
    async with running_workers(
        client, world.settings, task_queue=world.task_queue, gpu_task_queue=world.gpu_task_queue
    ):
        yield


async def registered_pods(world: World) -> list[str]:
    """Names of local pods still registered (alive or not)."""
    return [c.name for c in await LocalProvider(world.root / "pods").list("")]
