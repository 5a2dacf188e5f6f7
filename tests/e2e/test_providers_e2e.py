"""Whole audits on the fake Targon, Verda and RunPod servers (testing/fake_providers.py): real
dev server, real workers, real provider clients over loopback HTTP, reference miners behind the
fakes' endpoints. Also: Targon without capacity falls back to Verda, and no secret reaches a
history or the worker log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import pytest
from temporalio.client import Client

from demo.competition import DemoMiner
from models.audit import ProviderName
from models.competition import AuditOutcome
from models.constants import audit_workflow_id
from models.settings import Settings
from pods_cli import find_pods, run_pods_command
from providers.registry import build_providers
from starter import build_parser, start_audit
from testing.fake_providers import FAKES, FakeProviderServer, FakeVerda
from tests.e2e.conftest import HF_TOKEN, World
from tests.helpers import assert_eventually, pod_workflow_id
from worker import running_workers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # the first one imports torch

N = 4
_FIELDS = {field.alias: name for name, field in Settings.model_fields.items() if field.alias}


def _settings(world: World, env: dict[str, str]) -> Settings:
    """The e2e world's settings with `env` (settings by alias) on top."""
    update = {_FIELDS[key]: value for key, value in env.items()}
    return Settings.model_validate({**world.settings.model_dump(), **update})


class _LogCapture(logging.Handler):
    """Every record any logger emits while installed, formatted (with tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _captured_logs() -> Iterator[_LogCapture]:
    root = logging.getLogger()
    handler, level = _LogCapture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def _fakes(
    stack: AsyncExitStack, world: World, kinds: list[ProviderName]
) -> dict[ProviderName, FakeProviderServer]:
    servers = {}
    for kind in kinds:
        servers[kind] = await stack.enter_async_context(
            FAKES[kind](world.root / f"{kind}-pods", call_log=world.call_log)
        )
    return servers


async def _histories(client: Client, audit_id: str, pods: int) -> list[str]:
    ids = [audit_id] + [await pod_workflow_id(client, audit_id, i) for i in range(pods)]
    return [(await client.get_workflow_handle(i).fetch_history()).to_json() for i in ids]


def _secrets(servers: dict[ProviderName, FakeProviderServer]) -> list[str]:
    """Every credential the worker held or obtained while talking to the fakes."""
    found = [HF_TOKEN]
    for server in servers.values():
        found += [v for k, v in server.settings().items() if not k.endswith(("_URL",))]
        if isinstance(server, FakeVerda):
            found += sorted(server.tokens)
    return found


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest.mark.parametrize("kind", [ProviderName.TARGON, ProviderName.VERDA, ProviderName.RUNPOD])
async def test_audits_on_a_fake_provider(
    client: Client, world: World, stack: AsyncExitStack, kind: ProviderName
) -> None:
    """On each provider's fake server an honest miner passes and a copycat is rejected; every
    rented pod is deleted; no secret reaches a history or the worker log."""
    servers = await _fakes(stack, world, [kind])
    settings = _settings(world, {"GPU_PROVIDERS": kind.value, **servers[kind].settings()})
    honest = DemoMiner(hotkey=f"5Honest{kind}", label="honest", image="local/reference-miner")
    copycat = DemoMiner(
        hotkey=f"5Copycat{kind}",
        label="copycat",
        image="local/reference-miner?variant=1",
        critical=2,
    )
    world.publish(1, [honest, copycat], N)
    policy = world.policy(gpu_providers=[kind], gpu_hour_prices={kind: 3.6})
    with _captured_logs() as logs:
        async with running_workers(
            client, settings, task_queue=world.task_queue, gpu_task_queue=world.gpu_task_queue
        ):
            passed, rejected = await asyncio.gather(
                world.audit(client, 1, honest.hotkey, policy),
                world.audit(client, 1, copycat.hotkey, policy),
            )

    assert passed.audit.outcome is AuditOutcome.PASSED, passed.audit.reason
    assert passed.audit.checked_prompts == N
    assert rejected.audit.outcome is AuditOutcome.REJECTED
    assert rejected.audit.failed_prompts == N - 2 and rejected.audit.failed_critical == 2
    server = servers[kind]
    assert server.pods.by_id, "no pod was rented on the fake provider"
    assert server.live_names() == []
    assert len(world.generate_calls()) >= 2 * N - 1

    # Cost: the rental of every pod, in the result, pod_stats.json and the log.
    cost = passed.cost
    assert cost is not None and cost.pods == passed.pods_started
    assert 0 < cost.productive_seconds and 0 < cost.warmup_seconds <= cost.rented_seconds
    assert cost.estimated_cost_usd is not None and cost.estimated_cost_usd > 0
    pod_stats = world.read_json(f"rounds/1/{honest.hotkey}/pod_stats.json")
    assert isinstance(pod_stats, dict) and pod_stats
    assert all(entry["provider"] == kind.value for entry in pod_stats.values())
    assert all(entry["rented_seconds"] > 0 for entry in pod_stats.values())

    histories = []
    for hotkey, result in ((honest.hotkey, passed), (copycat.hotkey, rejected)):
        audit_id = audit_workflow_id(1, hotkey)
        histories += await _histories(client, audit_id, result.pods_started)
    log = "\n".join(logs.lines)
    assert f"{kind}" in log and "deployed pod" in log and "audit cost:" in log
    for secret in _secrets(servers):
        assert all(secret not in history for history in histories), secret
        assert secret not in log, secret


async def test_targon_without_capacity_falls_back_to_verda(
    client: Client, world: World, stack: AsyncExitStack
) -> None:
    """GPU_PROVIDERS=targon,verda with Targon out of capacity: every pod comes from Verda, the
    audit passes, nothing stays rented."""
    servers = await _fakes(stack, world, [ProviderName.TARGON, ProviderName.VERDA])
    targon, verda = servers[ProviderName.TARGON], servers[ProviderName.VERDA]
    targon.faults.no_capacity = True
    env: dict[str, Any] = {"GPU_PROVIDERS": "targon,verda", **targon.settings()}
    settings = _settings(world, {**env, **verda.settings()})
    miner = DemoMiner(hotkey="5Fallback", label="honest", image="local/reference-miner")
    world.publish(1, [miner], N)
    policy = world.policy(gpu_providers=[ProviderName.TARGON, ProviderName.VERDA])
    async with running_workers(
        client, settings, task_queue=world.task_queue, gpu_task_queue=world.gpu_task_queue
    ):
        result = await world.audit(client, 1, miner.hotkey, policy)

    assert result.audit.outcome is AuditOutcome.PASSED, result.audit.reason
    assert targon.calls("POST", "/v1/serverless"), "targon was never asked"
    assert targon.pods.by_id == {}
    assert verda.pods.by_id and verda.live_names() == []
    pod_stats = world.read_json(f"rounds/1/{miner.hotkey}/pod_stats.json")
    assert isinstance(pod_stats, dict) and pod_stats
    assert sum(s["processed"] for s in pod_stats.values()) == N


async def test_leaked_pods_are_found_and_cleaned_up(
    client: Client, world: World, stack: AsyncExitStack
) -> None:
    """Workers die mid-audit and the operator terminates the audit and its pods: the pods stay
    rented on Targon and RunPod. `pods list` shows them owned while the audit runs and LEAKED
    after; `pods cleanup --dry-run` deletes nothing; `pods cleanup` deletes each one."""
    servers = await _fakes(stack, world, [ProviderName.TARGON, ProviderName.RUNPOD])
    env = {"GPU_PROVIDERS": "targon,runpod"}
    for server in servers.values():
        env.update(server.settings())
    settings = _settings(world, env)
    miner = DemoMiner(hotkey="5Leaky", label="slow", image="local/reference-miner?delay=2")
    world.publish(1, [miner], 8)
    policy = world.policy(gpu_providers=[ProviderName.TARGON, ProviderName.RUNPOD])
    providers = build_providers(settings)
    for provider in providers.values():
        stack.push_async_callback(provider.aclose)
    parser = build_parser()

    async with running_workers(
        client, settings, task_queue=world.task_queue, gpu_task_queue=world.gpu_task_queue
    ):
        handle = await start_audit(
            client, 1, miner.hotkey, task_queue=world.task_queue, policy=policy
        )

        def both_rented() -> None:
            assert [len(s.live_names()) for s in servers.values()] == [1, 1]

        await assert_eventually(both_rented, timeout=40, interval=0.2)

        async def owned() -> None:
            report = await find_pods(client, providers, round_number=1, hotkey=miner.hotkey)
            assert len(report.pods) == 2 and report.leaked() == []

        await assert_eventually(owned, timeout=20, interval=0.2)
    # The workers are gone; the operator gives up on the audit and its pod workflows.
    pods = await _pod_ids(client, handle.id)
    for workflow_id in [handle.id, *pods]:
        await client.get_workflow_handle(workflow_id).terminate("test: leak the pods")
    rented = sorted(name for s in servers.values() for name in s.live_names())

    async def leaked() -> None:
        report = await find_pods(client, providers, round_number=1)
        assert sorted(p.name for p in report.leaked()) == rented

    await assert_eventually(leaked, timeout=20, interval=0.2)

    lines: list[str] = []
    dry = parser.parse_args(["pods", "cleanup", "--round", "1", "--dry-run"])
    assert await run_pods_command(client, providers, dry, lines.append) == 0
    assert sum(line.startswith("would delete") for line in lines) == 2
    assert sorted(name for s in servers.values() for name in s.live_names()) == rented

    lines.clear()
    cleanup = parser.parse_args(["pods", "cleanup", "--hotkey", miner.hotkey])
    assert await run_pods_command(client, providers, cleanup, lines.append) == 0
    assert sorted(line.split()[-1] for line in lines if line.startswith("deleted")) == rented
    assert all(s.live_names() == [] for s in servers.values())
    lines.clear()
    listing = parser.parse_args(["pods", "list"])
    assert await run_pods_command(client, providers, listing, lines.append) == 0
    assert lines == ["0 pods, 0 leaked"]


async def _pod_ids(client: Client, audit_id: str) -> list[str]:
    """Ids of the audit's pod workflows still running."""
    query = "WorkflowType = 'PodWorkflow' AND ExecutionStatus = 'Running'"
    return [e.id async for e in client.list_workflows(query) if e.id.startswith(f"{audit_id}-pod-")]


async def test_provider_trouble_is_contained(
    client: Client, world: World, stack: AsyncExitStack
) -> None:
    """Targon answers 429 (Retry-After) and 500 before it rents anything, then one pod dies
    mid-run: the deploys are retried, the dead pod is replaced, the honest miner still passes
    and nothing stays rented."""
    servers = await _fakes(stack, world, [ProviderName.TARGON])
    targon = servers[ProviderName.TARGON]
    targon.faults.rate_limited_calls = 1
    targon.faults.retry_after_seconds = 1
    targon.faults.server_error_calls = 1
    settings = _settings(world, {"GPU_PROVIDERS": "targon", **targon.settings()})
    miner = DemoMiner(hotkey="5Sturdy", label="honest", image="local/reference-miner?delay=0.3")
    world.publish(1, [miner], 8)
    policy = world.policy(gpu_providers=[ProviderName.TARGON])
    async with running_workers(
        client, settings, task_queue=world.task_queue, gpu_task_queue=world.gpu_task_queue
    ):
        handle = await start_audit(
            client, 1, miner.hotkey, task_queue=world.task_queue, policy=policy
        )

        def generating() -> str:
            assert world.generate_calls() and targon.live_names()
            return targon.live_names()[0]

        victim = await assert_eventually(generating, timeout=40, interval=0.1)
        await targon.kill(victim)
        result = await handle.result()

    assert result.audit.outcome is AuditOutcome.PASSED, result.audit.reason
    assert result.pods_started >= 2
    # Both faults were served (to the first calls) and weathered.
    assert (targon.faults.rate_limited_calls, targon.faults.server_error_calls) == (0, 0)
    assert targon.live_names() == []
    pod_stats = world.read_json(f"rounds/1/{miner.hotkey}/pod_stats.json")
    assert isinstance(pod_stats, dict)
    dead = [s for name, s in pod_stats.items() if victim.startswith(name)]
    # The dead pod's failures are on record (as upstream, a pod that fails fast may take several
    # prompts before the bad-pod rule or the health probe stops it; their retries go elsewhere).
    assert dead and dead[0]["hard_failed"] >= 1, pod_stats
    assert dead[0]["wasted_seconds"] > 0
