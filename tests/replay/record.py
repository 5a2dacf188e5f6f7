"""Record the histories that tests/replay/test_replay.py replays: one command, fresh servers.

    .venv/bin/python -m tests.replay.record              # every scenario
    .venv/bin/python -m tests.replay.record honest       # only the named ones (others are kept)

Each scenario runs AuditWorkflow with `tests.workflows.fakes.FakeWorld` activities on a fresh
in-memory dev server (the `continue-as-new` scenario on one that suggests continue-as-new at
`CONTINUE_AS_NEW_THRESHOLD` events), checks that it did what its name says, then saves every run
of the parent and of every pod child as the JSON that `temporal workflow show --output json`
prints (`WorkflowHistory.to_json()`), to

    tests/replay/histories/{VERSION}/{scenario}--{workflow id}--run{n}.json

One folder per released workflow version (`v1`: before upstream's rules, ..., `v5-ops`: webhook
notices, the `ops-notify` marker, ..., `v7`: the `speculation` scenario's
`speculative-reexecution` marker); folders of
older versions are never rewritten: running audits of that version must still replay.

Workflow ids are fixed per scenario, so re-recording after a workflow change rewrites the same
files (timestamps and run ids differ, the shape stays). A scenario's old files are replaced only
once all of its histories were fetched. Re-record whenever a workflow change is deliberate (and
guard running workflows with `workflow.patched` where it must replay old histories).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from benchmarks.histories import audit_histories
from benchmarks.long_audit import AuditRun, run_fake_audit, start_dev_server
from models.audit import (
    AuditInput,
    AuditPolicy,
    AuditProgress,
    AuditResult,
    GenerateInput,
    GenerateResult,
    ProviderName,
)
from models.competition import AuditOutcome
from models.constants import audit_workflow_id, upstream_pod_name
from models.errors import ErrorType
from tests.helpers import wait_for_query
from tests.workflows.fakes import FakeWorld, round_files
from workflows import WORKFLOWS

logger = logging.getLogger(__name__)

HISTORIES_ROOT = Path(__file__).parent / "histories"
VERSION = "v7"
"""The workflow version this code records; older folders under HISTORIES_ROOT are kept as is."""
HISTORIES_DIR = HISTORIES_ROOT / VERSION
ROUND = 1
CONTINUE_AS_NEW_THRESHOLD = 150
"""`limit.historyCount.suggestContinueAsNew` of the server of the `continue-as-new` scenario."""

RESTART_AFTER_RESULTS = 4
"""The `worker-restart` scenario stops its first worker once this many results are recorded."""

Generate = Callable[[GenerateInput], Awaitable[GenerateResult]]


def policy(**overrides: Any) -> AuditPolicy:
    """The scenarios' policy: local provider, small sample sizes."""
    base = AuditPolicy(
        gpu_providers=[ProviderName.LOCAL],
        pod_min_samples=4,
        pod_failure_threshold=3,
        pod_start_delay_seconds=0,
        pod_acquisition_retry_interval_seconds=0.2,
    )
    return base.model_copy(update=overrides)


def with_generate(world: FakeWorld, wrap: Callable[[Generate], Generate]) -> list[Any]:
    """`world`'s activities with `generate` replaced by `wrap(original generate)`."""
    fakes: list[Any] = list(world.activities())
    original = next(a for a in fakes if getattr(a, "__name__", "") == "generate")
    replacement = activity.defn(name="generate")(wrap(original))
    return [replacement if a is original else a for a in fakes]


@dataclass(frozen=True)
class Scenario:
    """One recorded audit: how to build its world, how to drive it, what it must show."""

    name: str
    hotkey: str
    world: Callable[[], FakeWorld]
    check: Callable[[AuditRun, FakeWorld], None]
    drive: Callable[[Client, FakeWorld, str], Awaitable[AuditRun]] | None = None
    suggest_threshold: int | None = None

    @property
    def workflow_id(self) -> str:
        """The audit's id, fixed so that re-recording rewrites the same files."""
        return audit_workflow_id(ROUND, self.hotkey)


# --- honest ---------------------------------------------------------------------------------------


def honest_world() -> FakeWorld:
    return FakeWorld(
        files=round_files(12, hotkey="5Honest"),
        policy=policy(pods_per_miner=3, initial_pod_count=1),
    )


def honest_check(run: AuditRun, world: FakeWorld) -> None:
    assert run.result.audit.outcome is AuditOutcome.PASSED, run.result.audit.reason
    assert sorted(world.generate_calls) == [f"p{i:03d}#1" for i in range(12)]
    assert len(run.histories.pods) == 3


# --- rejected -------------------------------------------------------------------------------------


def rejected_world() -> FakeWorld:
    return FakeWorld(
        files=round_files(40, hotkey="5Rejected", critical=["p000", "p001"]),
        policy=policy(pods_per_miner=2, initial_pod_count=1, pod_failure_threshold=100),
        mismatching={f"p{i:03d}" for i in range(20)},
    )


def rejected_check(run: AuditRun, world: FakeWorld) -> None:
    assert run.result.audit.outcome is AuditOutcome.REJECTED
    assert run.result.early_exit
    assert len(world.generate_calls) < 40
    assert run.result.audit.checked_prompts == 40


# --- pod replacement ------------------------------------------------------------------------------

REPLACE_HOTKEY = "5Replace"
DEPLOY_FAILS = upstream_pod_name(ROUND, REPLACE_HOTKEY, 0)
GOES_BAD = upstream_pod_name(ROUND, REPLACE_HOTKEY, 1)


def replacement_world() -> FakeWorld:
    return FakeWorld(
        files=round_files(10, hotkey=REPLACE_HOTKEY),
        policy=policy(
            pods_per_miner=2,
            initial_pod_count=2,
            max_pod_attempts=4,
            pod_min_samples=2,
            pod_failure_threshold=2,
        ),
        bad_pods={DEPLOY_FAILS},
    )


def failing_on(pod: str) -> Callable[[Generate], Generate]:
    """Every generation on `pod` fails like a miner's HTTP 500 (so the pod is marked bad)."""

    def wrap(original: Generate) -> Generate:
        async def generate(input: GenerateInput) -> GenerateResult:
            if input.pod_url == f"http://{pod}":
                raise ApplicationError("HTTP 500", type=ErrorType.MINER_FAILED, non_retryable=True)
            return await original(input)

        return generate

    return wrap


async def replacement_drive(client: Client, world: FakeWorld, workflow_id: str) -> AuditRun:
    activities = with_generate(world, failing_on(GOES_BAD))
    return await run_fake_audit(client, world, activities=activities, workflow_id=workflow_id)


def replacement_check(run: AuditRun, world: FakeWorld) -> None:
    assert run.result.audit.outcome is AuditOutcome.PASSED, run.result.audit.reason
    # 0 fails warm-up, 1 healthy -> 2 started; 1 marked bad -> 3 replaces it
    assert run.result.pods_started == 4
    assert sorted(world.deleted) == sorted(world.deployed)


# --- notify (webhook notices: pod deploy failed, pod marked bad, progress, result) --------------


def notify_world() -> FakeWorld:
    """The pod-replacement world with notices on; pod 0 gives up acquiring after 2 attempts."""
    world = replacement_world()
    world.files = round_files(10, hotkey=NOTIFY_HOTKEY)
    update = {"notify": True, "pod_acquisition_max_attempts": 2}
    world.policy = world.policy.model_copy(update=update)
    world.bad_pods = {upstream_pod_name(ROUND, NOTIFY_HOTKEY, 0)}
    return world


NOTIFY_HOTKEY = "5Notify"


async def notify_drive(client: Client, world: FakeWorld, workflow_id: str) -> AuditRun:
    bad = upstream_pod_name(ROUND, NOTIFY_HOTKEY, 1)
    activities = with_generate(world, failing_on(bad))
    return await run_fake_audit(client, world, activities=activities, workflow_id=workflow_id)


def notify_check(run: AuditRun, world: FakeWorld) -> None:
    assert run.result.audit.outcome is AuditOutcome.PASSED, run.result.audit.reason
    titles = [n.title for n in world.notices]
    assert "Pod Deploy Failed" in titles, titles
    assert "Pod Marked Bad" in titles and titles[-1] == "Miner Audit Result", titles


# --- worker restart -------------------------------------------------------------------------------


def restart_world() -> FakeWorld:
    return FakeWorld(
        files=round_files(12, hotkey="5Restart"),
        policy=policy(pods_per_miner=3, initial_pod_count=1),
    )


async def restart_drive(client: Client, world: FakeWorld, workflow_id: str) -> AuditRun:
    """Worker 1 generates a few prompts and then hangs; it is stopped, worker 2 finishes."""
    queue = f"queue-{workflow_id}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    hang = asyncio.Event()  # never set: worker 1's later generations hang until it stops
    budget = [RESTART_AFTER_RESULTS]

    def hang_after_budget(original: Generate) -> Generate:
        async def generate(input: GenerateInput) -> GenerateResult:
            if budget[0] <= 0:
                await hang.wait()
            budget[0] -= 1
            return await original(input)

        return generate

    def worker(activities: Sequence[Any]) -> Worker:
        return Worker(
            client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=list(activities),
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
        )

    async with worker(with_generate(world, hang_after_budget)):
        handle = await client.start_workflow(
            "AuditWorkflow",
            AuditInput(round=ROUND, hotkey=world.files.hotkey, policy=world.policy),
            id=workflow_id,
            task_queue=queue,
            result_type=AuditResult,
        )
        await wait_for_query(
            handle,
            "progress",
            lambda p: p.done >= RESTART_AFTER_RESULTS,
            result_type=AuditProgress,
            timeout=60,
        )
    async with worker(world.activities()):
        result = await handle.result()
    first_run = handle.first_execution_run_id
    assert first_run is not None
    histories = await audit_histories(client, workflow_id, first_run)
    return AuditRun(result=result, workflow_id=workflow_id, wall_seconds=0.0, histories=histories)


def restart_check(run: AuditRun, world: FakeWorld) -> None:
    assert run.result.audit.outcome is AuditOutcome.PASSED, run.result.audit.reason
    assert sorted(set(world.generate_calls)) == [f"p{i:03d}#1" for i in range(12)]
    retried = [
        event
        for each in run.histories.pod_runs
        for event in each.history.events
        if event.HasField("activity_task_started_event_attributes")
        and event.activity_task_started_event_attributes.attempt > 1
    ]
    assert retried, "no activity was interrupted by the worker stop"


# --- continue-as-new ------------------------------------------------------------------------------


def continue_world() -> FakeWorld:
    return FakeWorld(
        files=round_files(24, hotkey="5Continue"),
        policy=policy(pods_per_miner=2, initial_pod_count=2),
    )


def continue_check(run: AuditRun, world: FakeWorld) -> None:
    assert run.result.audit.outcome is AuditOutcome.PASSED, run.result.audit.reason
    assert sorted(world.generate_calls) == [f"p{i:03d}#1" for i in range(24)]
    assert run.histories.parent_continues >= 1
    assert run.histories.pod_continues >= 1


# --- speculation (SPECULATIVE_REEXECUTION: copies of a straggler's prompts, revokes) -----------

SPECULATE_HOTKEY = "5Speculate"
SPECULATE_FAST = upstream_pod_name(ROUND, SPECULATE_HOTKEY, 0)
SPECULATE_SLOW = upstream_pod_name(ROUND, SPECULATE_HOTKEY, 1)


def speculation_world() -> FakeWorld:
    """Two pods of two loops; pod 1 takes 100x longer, so its two prompts are copied."""
    return FakeWorld(
        files=round_files(10, hotkey=SPECULATE_HOTKEY),
        policy=policy(
            pods_per_miner=2,
            initial_pod_count=2,
            max_concurrent_prompts_per_pod=2,
            speculative_reexecution=True,
        ),
        pod_times={SPECULATE_FAST: 0.06, SPECULATE_SLOW: 6.0},
    )


def speculation_check(run: AuditRun, world: FakeWorld) -> None:
    assert run.result.audit.outcome is AuditOutcome.PASSED, run.result.audit.reason
    copies = [c for c in world.generate_calls if c.endswith("#2")]
    assert len(copies) == 2, world.generate_calls
    assert sorted(world.deleted) == sorted(world.deployed)


SCENARIOS: list[Scenario] = [
    Scenario("honest", "5Honest", honest_world, honest_check),
    Scenario("rejected", "5Rejected", rejected_world, rejected_check),
    Scenario(
        "pod-replacement", REPLACE_HOTKEY, replacement_world, replacement_check, replacement_drive
    ),
    Scenario("worker-restart", "5Restart", restart_world, restart_check, restart_drive),
    Scenario("notify", NOTIFY_HOTKEY, notify_world, notify_check, notify_drive),
    Scenario("speculation", SPECULATE_HOTKEY, speculation_world, speculation_check),
    Scenario(
        "continue-as-new",
        "5Continue",
        continue_world,
        continue_check,
        suggest_threshold=CONTINUE_AS_NEW_THRESHOLD,
    ),
]
"""Every recorded scenario; test_replay.py requires histories of each."""


def history_path(scenario: str, workflow_id: str, run: int) -> Path:
    """Where one run's history is stored."""
    return HISTORIES_DIR / f"{scenario}--{workflow_id}--run{run}.json"


def parse_history_path(path: Path) -> tuple[str, str, int]:
    """(scenario, workflow id, run number) of a stored history."""
    scenario, workflow_id, run = path.stem.split("--")
    return scenario, workflow_id, int(run.removeprefix("run"))


async def record(scenario: Scenario) -> list[Path]:
    """Run `scenario` on a fresh server, check it, and (re)write its history files."""
    env = await start_dev_server(scenario.suggest_threshold)
    try:
        world = scenario.world()
        drive = scenario.drive or (
            lambda client, world, workflow_id: run_fake_audit(
                client, world, workflow_id=workflow_id
            )
        )
        run = await drive(env.client, world, scenario.workflow_id)
    finally:
        await env.shutdown()
    scenario.check(run, world)
    files: dict[Path, str] = {}
    for runs in [run.histories.parent, *run.histories.pods.values()]:
        for number, each in enumerate(runs, start=1):
            files[history_path(scenario.name, each.workflow_id, number)] = each.history.to_json()
    HISTORIES_DIR.mkdir(parents=True, exist_ok=True)
    for stale in HISTORIES_DIR.glob(f"{scenario.name}--*.json"):
        stale.unlink()
    for path, text in files.items():
        path.write_text(text + "\n")
    return sorted(files)


async def main(argv: Sequence[str] | None = None) -> None:
    """Record the named scenarios (default: all)."""
    names = [s.name for s in SCENARIOS]
    parser = argparse.ArgumentParser(description="Record replay histories.")
    parser.add_argument("scenarios", nargs="*", help=f"some of {names} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(names))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {names}")
    logging.basicConfig(level=logging.WARNING)
    for scenario in SCENARIOS:
        if not args.scenarios or scenario.name in args.scenarios:
            paths = await record(scenario)
            print(f"{scenario.name}: {len(paths)} histories")
            for path in paths:
                print(f"  {path.name}")


if __name__ == "__main__":
    asyncio.run(main())
