"""Two hosts, simulated: the orchestrator worker and the GPU worker as separate `worker.py`
processes with different ARTIFACTS_DIR, sharing nothing but Temporal and an S3 server (moto on
loopback). An audit passes and every URL in generated.json answers over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from temporalio.client import Client

from models.competition import AuditOutcome
from models.constants import GPU_TASK_QUEUE, TASK_QUEUE, audit_workflow_id
from testing.s3_server import S3Server
from tests.e2e.conftest import World
from tests.e2e.test_restart_safety import (
    WorkerProcess,
    passing_policy,
    slow_miner,
    target_of,
    worker_env,
    worker_processes,
)
from tests.helpers import pod_workflow_id

__all__ = ["worker_processes"]  # the fixture, shared with the restart tests

pytestmark = pytest.mark.e2e


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


async def test_audit_on_two_hosts_sharing_only_temporal_and_s3(
    client: Client, world: World, worker_processes: list[WorkerProcess], s3: S3Server
) -> None:
    miner = slow_miner("5TwoHosts", delay=0.05)
    stems = world.publish(1, [miner], 4)
    address = target_of(client)
    hosts = {"orchestrator": TASK_QUEUE, "gpu": GPU_TASK_QUEUE}
    for host, queue in hosts.items():
        env = worker_env(
            world,
            address,
            ARTIFACTS_DIR=str(world.root / f"{host}-artifacts"),
            WORK_DIR=str(world.root / f"{host}-work"),
            **s3.env(),
        )
        worker = WorkerProcess(env, world.root / f"{host}.log", queues=[queue])
        worker_processes.append(worker)
    for worker in worker_processes:
        await worker.wait_running()

    result = await world.audit(client, 1, miner.hotkey, passing_policy(world))

    assert result.audit.outcome is AuditOutcome.PASSED, result.audit.reason
    generated = world.read_json(f"rounds/1/{miner.hotkey}/generated.json")
    assert isinstance(generated, dict) and sorted(generated) == sorted(stems)
    async with httpx.AsyncClient() as http:
        for stem, entry in generated.items():
            for field, magic in (("glb", b"glTF"), ("png", b"\x89PNG")):
                key = f"rounds/1/{miner.hotkey}/generated/{stem}.{field}"
                assert entry[field] == f"{s3.public_url}/{key}"
                response = await http.get(entry[field])
                assert response.status_code == 200 and response.content[:4] == magic, key
    # The GPU host fetched from the bucket the GLBs the orchestrator host stored, and rendered
    # the previews in its own cache: nothing passed through a shared disk.
    gpu_cache = world.root / "gpu-artifacts" / "blobs"
    assert len(list(gpu_cache.rglob("*.glb"))) >= len(stems)
    assert len(list(gpu_cache.rglob("*.png"))) >= len(stems)

    # The key pair stays in the workers' environment: not in a history, not in a log line.
    histories = [
        await client.get_workflow_handle(audit_workflow_id(1, miner.hotkey)).fetch_history(),
    ]
    for index in range(result.pods_started):
        pod = await pod_workflow_id(client, audit_workflow_id(1, miner.hotkey), index)
        histories.append(await client.get_workflow_handle(pod).fetch_history())
    texts = [h.to_json() for h in histories] + [w.output() for w in worker_processes]
    assert any("s3://" in text for text in texts)  # the payloads do carry store keys
    for text in texts:
        assert s3.secret_access_key not in text
