"""Whole rounds end to end: the competition loop (RoundWorkflow) on the real dev server.

Each test opens a round in the world's bare repo (stage `miner_generation`, a leader.json),
runs a fake GitHub Actions API (demo/fake_github.py) that the build tracker polls, and lets the
round loop do the rest with real workers, the local provider and reference miners: builds.json,
the leader's outputs, one audit per required hotkey, every verdict. LOCAL_IMAGES maps the
docker image names the tracker writes to the local reference-miner images they stand for.

BuildTrackingWorkflow, LeaderGenerationWorkflow and AuditWorkflow ids are fixed per round
(`builds-{n}`, `leader-{n}`, `audit-{n}-{hk}`) and the dev server is shared by the session, so
every test here owns its round numbers (701...); each round loop has its own id.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from demo.competition import (
    DemoMiner,
    commit_files,
    miner_commit,
    publish_round,
    read_json,
    require_audits,
    round_tag,
    set_stage,
)
from demo.fake_github import FakeGitHub
from models.audit import AuditPolicy, AuditProgress, AuditStatus, EarlyExit
from models.competition import AuditOutcome, CompetitionPaths
from models.constants import (
    TASK_QUEUE,
    audit_workflow_id,
    build_tracking_id,
    leader_workflow_id,
    pod_name_prefix,
)
from models.rounds import LEADER_HOTKEY, RoundStatus
from models.settings import Settings
from providers.local import LocalProvider
from starter import start_round_loop
from tests.e2e.conftest import World, registered_pods
from tests.e2e.test_restart_safety import (
    WorkerProcess,
    gpu_worker,
    pid_alive,
    target_of,
    worker_env,
)
from tests.helpers import assert_eventually, wait_for_status
from tests.workflows.test_notify import Webhook, webhook
from worker import running_workers
from workflows.policy.builds import build_tag, docker_image
from workflows.policy.verdict import BUILD_FAILED_REASON

__all__ = ["webhook"]  # the fixture, shared with the notify tests

pytestmark = pytest.mark.e2e

GITHUB_REPO = "demo/competition"
IMAGE_FORMAT = "Registry.Example/Active-Competition/{hotkey10}:{tag}"
"""DOCKER_IMAGE_FORMAT with capitals: the tracker must lowercase the whole name."""
LEADER_IMAGE = "local/reference-miner?delay=0.2"
OPEN = "miner_generation"


# --- helpers --------------------------------------------------------------------------------------


def honest(hotkey: str, delay: float = 0.2) -> DemoMiner:
    """A miner whose image reproduces its submission, `delay` s per generation."""
    return DemoMiner(hotkey=hotkey, label=hotkey, image=f"local/reference-miner?delay={delay}")


def expected_image(miner: DemoMiner, n: int) -> str:
    """The docker image the tracker must write for `miner` (computed here, not by the code)."""
    tag = f"{miner_commit(miner)[:7]}-{round_tag(n)}"
    return f"registry.example/active-competition/{miner.hotkey[:10].lower()}:{tag}"


@dataclass
class RoundConfig:
    """One test's round settings: as worker.py's environment and as `Settings`."""

    env: dict[str, str]
    settings: Settings


def round_config(
    world: World, github: FakeGitHub, n: int, miners: list[DemoMiner], **overrides: str
) -> RoundConfig:
    """Fast round-loop settings, GitHub at the fake, LOCAL_IMAGES for `miners`' builds."""
    images = {
        docker_image(m.hotkey, build_tag(miner_commit(m), round_tag(n)), IMAGE_FORMAT): m.image
        for m in miners
        if m.image is not None
    }
    env = {
        "GITHUB_REPO": GITHUB_REPO,
        "GITHUB_API_URL": github.api_url,
        "LOCAL_IMAGES": json.dumps(images),
        "DOCKER_IMAGE_FORMAT": IMAGE_FORMAT,
        "CHECK_BUILD_INTERVAL": "0.5",
        "CHECK_AUDIT_INTERVAL": "1",
        "MIN_CHECK_STATE_INTERVAL": "0.5",
        "MAX_CHECK_STATE_INTERVAL": "2",
        "MINER_START_STAGGER": "0.2",
        "MAX_CONCURRENT_MINERS": "4",
        **overrides,
    }
    values = world.settings.model_dump(by_alias=True)
    values.update({**env, "LOCAL_IMAGES": images})
    return RoundConfig(env=env, settings=Settings.model_validate(values))


def audit_policy(world: World, **overrides: object) -> AuditPolicy:
    """One pod per run, one attempt per prompt, a median limit every miner here meets; a
    generate on a killed worker is retried after 4 s of silence."""
    return world.policy(
        pods_per_miner=1,
        initial_pod_count=1,
        max_prompt_attempts=1,
        median_limit_seconds=30.0,
        generation_heartbeat_seconds=4.0,
        **overrides,
    )


def open_round(
    world: World,
    n: int,
    miners: list[DemoMiner],
    n_prompts: int,
    leader_image: str | None = LEADER_IMAGE,
) -> list[str]:
    """Round `n` in a generating stage; builds.json and require_audit.json left to others."""
    return publish_round(
        world.bare,
        world.root / "www",
        world.www.base_url,
        n,
        miners,
        n_prompts,
        stage=OPEN,
        builds_json=False,
        require_audit_json=False,
        leader_image=leader_image,
    )


def builds_settled_at_once(github: FakeGitHub, n: int, miners: list[DemoMiner]) -> None:
    """GitHub Actions already finished the round's builds (failed where `image` is None)."""
    run_id = github.add_run(f"Add submissions for round {n}", [m.hotkey for m in miners])
    for miner in miners:
        conclusion = "success" if miner.image is not None else "failure"
        github.set_job(run_id, miner.hotkey, "completed", conclusion)


@contextlib.asynccontextmanager
async def round_loop(
    client: Client, world: World, config: RoundConfig, policy: AuditPolicy
) -> AsyncIterator[WorkflowHandle[object, None]]:
    """The round loop under a unique id; cancelled at the end (terminated if it lingers),
    and whatever of this test still runs on its queue is terminated."""
    handle = await start_round_loop(
        client,
        task_queue=world.task_queue,
        workflow_id=f"competition-{uuid.uuid4()}",
        policy=config.settings.round_policy(),
        audit_policy=policy,
    )
    try:
        yield handle
    finally:
        with contextlib.suppress(RPCError):
            await handle.cancel()
        try:
            await wait_for_status(
                handle,
                WorkflowExecutionStatus.CANCELED,
                WorkflowExecutionStatus.TERMINATED,
                timeout=15,
            )
        except AssertionError:
            with contextlib.suppress(RPCError):
                await handle.terminate("round e2e test over")
        query = f'TaskQueue = "{world.task_queue}" AND ExecutionStatus = "Running"'
        async for execution in client.list_workflows(query):
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(execution.id).terminate("round e2e test over")


async def status_of(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    """The latest run's status; None while the id does not exist."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
        return None
    return description.status


async def wait_closed(client: Client, ids: list[str], timeout: float) -> None:
    """Until every workflow in `ids` exists and is closed."""

    async def check() -> None:
        for workflow_id in ids:
            status = await status_of(client, workflow_id)
            assert status not in (None, WorkflowExecutionStatus.RUNNING), (workflow_id, status)

    await assert_eventually(check, timeout=timeout, interval=0.5)


async def wait_started(client: Client, workflow_id: str, timeout: float = 60) -> None:
    """Until the round loop has started `workflow_id`."""

    async def check() -> None:
        assert await status_of(client, workflow_id) is not None, f"{workflow_id} not started"

    await assert_eventually(check, timeout=timeout, interval=0.2)


async def wait_generating(client: Client, workflow_id: str, timeout: float = 60) -> None:
    """Until the audit (or leader run) reports that it generates."""

    async def check() -> None:
        try:
            progress = await client.get_workflow_handle(workflow_id).query(
                "progress", result_type=AuditProgress
            )
        except RPCError as e:
            raise AssertionError(f"{workflow_id}: {e}") from e
        assert progress.status is AuditStatus.GENERATING, progress

    await assert_eventually(check, timeout=timeout, interval=0.2)


def verdicts(world: World, n: int) -> dict[str, Any]:
    """rounds/{n}/generation_audits.json at the head ({} when absent)."""
    value = read_json(world.bare, CompetitionPaths.generation_audits(n))
    assert value is None or isinstance(value, dict), value
    return value or {}


def head_json(world: World, path: str) -> Any:
    return read_json(world.bare, path)


_LISTENING = re.compile(r"listening on [\d.]+:\d+ \(pid (\d+)\)")


def calls_by_owner(world: World, n: int, owners: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The miners' `received` lines per run (a hotkey or `leader`), from each pod's log (its
    name says whose pod it is; the miner logs its pid, which the call log records)."""
    pod_of_pid: dict[int, str] = {}
    for log in (world.settings.local_pods_dir / "logs").glob("*.log"):
        for match in _LISTENING.finditer(log.read_text(errors="replace")):
            pod_of_pid[int(match.group(1))] = log.stem
    grouped: dict[str, list[dict[str, Any]]] = {owner: [] for owner in owners}
    for call in world.generate_calls():
        pod = pod_of_pid.get(int(str(call["pid"])), "")
        owner = next((o for o in owners if pod.startswith(pod_name_prefix(n, o))), None)
        assert owner is not None, f"a call on pod {pod!r} of nobody in {owners}: {call}"
        grouped[owner].append(call)
    return grouped


def failure_messages(error: BaseException | None) -> list[str]:
    """The messages along a failure's cause chain."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or getattr(error, "cause", None)
    return messages


@dataclass
class Interval:
    workflow_id: str
    start: datetime
    close: datetime


async def run_intervals(client: Client, task_queue: str) -> list[Interval]:
    """Every audit and leader run on `task_queue` (a test's own), as the server recorded it."""
    query = (
        f'TaskQueue = "{task_queue}" AND '
        '(WorkflowType = "AuditWorkflow" OR WorkflowType = "LeaderGenerationWorkflow")'
    )
    intervals = []
    async for execution in client.list_workflows(query):
        assert execution.close_time is not None, f"{execution.id} still runs"
        intervals.append(Interval(execution.id, execution.start_time, execution.close_time))
    return intervals


def max_overlap(intervals: list[Interval]) -> int:
    """The most intervals open at one instant (a close at the same instant as a start first)."""
    events = sorted(
        [(i.start, 1) for i in intervals] + [(i.close, -1) for i in intervals],
        key=lambda e: (e[0], e[1]),
    )
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


@pytest.fixture
def worker_processes() -> Iterator[list[WorkerProcess]]:
    """Worker subprocesses of a test; each is killed at teardown (before the world's pods)."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


# --- 1. a whole round, with the orchestrator worker SIGKILLed mid-round -------------------------


async def test_whole_round_survives_a_sigkilled_worker(
    client: Client, world: World, worker_processes: list[WorkerProcess]
) -> None:
    """Submissions -> builds (queued, in_progress, success x2 / failure) -> leader outputs ->
    require_audit.json -> audits -> verdicts, with `worker.py` SIGKILLed while the miners
    generate and a new one started: everything lands, nothing is generated twice except what
    was in flight at the kill."""
    n, n_prompts = 701, 6
    good = honest("5Honest701", delay=0.3)
    copycat = DemoMiner(
        hotkey="5Copycat701", label="copycat", image="local/reference-miner?delay=0.3&variant=1"
    )
    broken = DemoMiner(hotkey="5Broken701", label="broken", image=None)
    miners = [good, copycat, broken]
    audited = [good.hotkey, copycat.hotkey]
    policy = audit_policy(
        world, max_mismatched_prompts=2, early_exit=EarlyExit.NEVER, stop_early=False
    )
    builds_path = CompetitionPaths.builds(n)

    def build_statuses() -> dict[str, str]:
        builds = head_json(world, builds_path)
        assert isinstance(builds, dict), "no builds.json yet"
        return {hotkey: str(entry["status"]) for hotkey, entry in builds.items()}

    async def builds_are(expected: dict[str, str]) -> None:
        def check() -> None:
            assert build_statuses() == expected

        await assert_eventually(check, timeout=30, interval=0.2)

    with FakeGitHub(repo=GITHUB_REPO) as github:
        config = round_config(world, github, n, miners)
        stems = open_round(world, n, miners, n_prompts)
        env = worker_env(world, target_of(client), **config.env)
        async with gpu_worker(client, world):
            first = WorkerProcess(env, world.root / "worker-1.log", (TASK_QUEUE,))
            worker_processes.append(first)
            await first.wait_running()
            async with round_loop(client, world, config, policy) as loop:
                # The tracker seeds builds.json from submissions.json: every build pending.
                await builds_are({m.hotkey: "pending" for m in miners})
                run_id = github.add_run(
                    f"Add submissions for round {n}", [m.hotkey for m in miners]
                )

                def jobs_polled() -> None:
                    assert any(f"/runs/{run_id}/jobs" in r.path for r in github.requests)

                await assert_eventually(jobs_polled, timeout=30)  # seen queued: still pending
                for miner in miners:
                    github.set_job(run_id, miner.hotkey, "in_progress")
                await builds_are({m.hotkey: "in_progress" for m in miners})
                for miner in miners:
                    conclusion = "success" if miner.image is not None else "failure"
                    github.set_job(run_id, miner.hotkey, "completed", conclusion)
                await builds_are(
                    {good.hotkey: "success", copycat.hotkey: "success", broken.hotkey: "failure"}
                )
                # judge-service requires the audits once the builds are known.
                require_audits(world.bare, n, miners, stems)

                # Kill the orchestrator worker while both audited miners generate.
                def both_generating() -> dict[str, list[dict[str, Any]]]:
                    calls = calls_by_owner(world, n, [*audited, LEADER_HOTKEY])
                    assert all(calls[h] for h in audited), {h: len(calls[h]) for h in audited}
                    return calls

                at_kill = await assert_eventually(both_generating, timeout=90, interval=0.05)
                pods_at_kill = await registered_pods(world)
                first.kill()
                assert any(len(at_kill[h]) < n_prompts for h in audited), "killed too late"
                # No worker runs: no miner is called until the next one starts.
                restart_at = time.time()
                second = WorkerProcess(env, world.root / "worker-2.log", (TASK_QUEUE,))
                worker_processes.append(second)
                await second.wait_running()

                runs = [leader_workflow_id(n), *(audit_workflow_id(n, m.hotkey) for m in miners)]
                await wait_closed(client, [build_tracking_id(n), *runs], timeout=150)
                for workflow_id in runs:
                    assert await status_of(client, workflow_id) is (
                        WorkflowExecutionStatus.COMPLETED
                    ), workflow_id
                status = await loop.query("status", result_type=RoundStatus)
                assert status.round == n and status.stage == OPEN, status

    # builds.json: every status GitHub reported, lowercased image names for the successes.
    builds = head_json(world, builds_path)
    assert isinstance(builds, dict)
    assert {h: (b["status"], b["docker_image"], b["tag"]) for h, b in builds.items()} == {
        good.hotkey: ("success", expected_image(good, n), f"{miner_commit(good)[:7]}-demo-{n}"),
        copycat.hotkey: (
            "success",
            expected_image(copycat, n),
            f"{miner_commit(copycat)[:7]}-demo-{n}",
        ),
        broken.hotkey: ("failure", None, f"{miner_commit(broken)[:7]}-demo-{n}"),
    }
    # The leader's outputs for every prompt of the round.
    leader = head_json(world, CompetitionPaths.leader_generated(n))
    assert isinstance(leader, dict) and sorted(leader) == sorted(stems)
    # Every required hotkey has its verdict.
    written = verdicts(world, n)
    assert set(written) == {m.hotkey for m in miners}
    assert written[good.hotkey]["outcome"] == AuditOutcome.PASSED, written[good.hotkey]
    assert written[good.hotkey]["checked_prompts"] == n_prompts
    assert written[copycat.hotkey]["outcome"] == AuditOutcome.REJECTED
    assert written[copycat.hotkey]["reason"].startswith(
        f"Non-critical mismatches ({n_prompts}) exceed tolerance (2)"
    ), written[copycat.hotkey]
    assert written[broken.hotkey]["outcome"] == AuditOutcome.REJECTED
    assert written[broken.hotkey]["reason"] == BUILD_FAILED_REASON
    for hotkey in audited:
        generated = head_json(world, CompetitionPaths.generated(n, hotkey))
        assert isinstance(generated, dict) and sorted(generated) == sorted(stems), hotkey
    assert head_json(world, CompetitionPaths.generated(n, broken.hotkey)) is None

    # Nothing generated twice, except what a pod was generating when its worker died: one
    # pod per run and one generate at a time per pod, so at most one prompt per run, first
    # sent by the killed worker.
    calls = calls_by_owner(world, n, [*audited, LEADER_HOTKEY, broken.hotkey])
    assert calls[broken.hotkey] == [], "a failed build was deployed"
    repeated_total = 0
    for owner in [*audited, LEADER_HOTKEY]:
        per_stem = Counter(str(c["image_sha256"])[:16] for c in calls[owner])
        assert set(per_stem) == set(stems), owner
        repeated = [stem for stem, count in per_stem.items() if count > 1]
        assert len(repeated) <= 1 and all(per_stem[s] == 2 for s in repeated), (owner, per_stem)
        for stem in repeated:
            firsts = [c for c in calls[owner] if str(c["image_sha256"]).startswith(stem)]
            assert min(float(c["at"]) for c in firsts) < restart_at, (owner, stem)
        repeated_total += len(repeated)
    assert repeated_total <= len(pods_at_kill)
    assert len(world.generate_calls()) <= 3 * n_prompts + len(pods_at_kill)
    assert any(float(str(c["at"])) > restart_at for c in world.generate_calls()), "no work after"
    assert await registered_pods(world) == []


# --- 2. MAX_CONCURRENT_MINERS -----------------------------------------------------------------


async def test_concurrent_runs_never_exceed_max_concurrent_miners(
    client: Client, world: World
) -> None:
    """4 required miners + the leader with MAX_CONCURRENT_MINERS=2: the server's own records of
    the runs never show more than 2 at once (the leader counts), and every verdict lands."""
    n, n_prompts = 702, 3
    miners = [honest(f"5Slots702{c}") for c in "ABCD"]
    with FakeGitHub(repo=GITHUB_REPO) as github:
        config = round_config(world, github, n, miners, MAX_CONCURRENT_MINERS="2")
        stems = open_round(world, n, miners, n_prompts)
        require_audits(world.bare, n, miners, stems)
        builds_settled_at_once(github, n, miners)
        async with (
            running_workers_for(client, world, config),
            round_loop(client, world, config, audit_policy(world)),
        ):
            ids = [leader_workflow_id(n), *(audit_workflow_id(n, m.hotkey) for m in miners)]
            await wait_closed(client, ids, timeout=150)

    written = verdicts(world, n)
    assert {h: v["outcome"] for h, v in written.items()} == {
        m.hotkey: AuditOutcome.PASSED for m in miners
    }

    async def all_visible() -> list[Interval]:
        intervals = await run_intervals(client, world.task_queue)
        assert sorted(i.workflow_id for i in intervals) == sorted(ids)
        return intervals

    intervals: list[Interval] = await assert_eventually(all_visible, timeout=10, interval=0.2)
    assert max_overlap(intervals) == 2, sorted((i.start, i.close, i.workflow_id) for i in intervals)


def running_workers_for(
    client: Client, world: World, config: RoundConfig
) -> contextlib.AbstractAsyncContextManager[list[Worker]]:
    """Both queues' workers in this process, with the round's settings."""
    return running_workers(
        client,
        config.settings,
        task_queue=world.task_queue,
        gpu_task_queue=world.gpu_task_queue,
    )


# --- 3. the stage moves on mid-audit ----------------------------------------------------------


async def test_stage_change_mid_audit_cancels_and_writes_nothing(
    client: Client, world: World
) -> None:
    """state.json leaves the generating stages while a slow miner is audited (and the leader
    generates): the loop cancels both, every pod is deleted (an orphan of the round by the
    loop's end-of-round sweep), no verdict is written, and the loop's `status` query shows the
    new stage."""
    n, n_prompts = 703, 6
    slow = honest("5Slow703", delay=1.0)
    with FakeGitHub(repo=GITHUB_REPO) as github:
        config = round_config(world, github, n, [slow])
        # The leader is slower still: it is mid-run too when the stage changes.
        stems = open_round(world, n, [slow], n_prompts, "local/reference-miner?delay=3.0")
        require_audits(world.bare, n, [slow], stems)
        builds_settled_at_once(github, n, [slow])
        async with (
            running_workers_for(client, world, config),
            round_loop(client, world, config, audit_policy(world)) as loop,
        ):
            audit_id, leader_id = audit_workflow_id(n, slow.hotkey), leader_workflow_id(n)
            await wait_started(client, audit_id)
            await wait_generating(client, audit_id)

            def audit_called() -> None:
                calls = calls_by_owner(world, n, [slow.hotkey, LEADER_HOTKEY])
                assert calls[slow.hotkey], "the slow miner has not been called yet"

            await assert_eventually(audit_called, timeout=60, interval=0.1)
            assert await status_of(client, leader_id) is WorkflowExecutionStatus.RUNNING
            pods = await LocalProvider(world.settings.local_pods_dir).list("")
            pids = {int(p.container_id) for p in pods if p.container_id}
            assert pids, "no pod mid-audit"
            # A pod of the round no run knows of (e.g. left by a worker killed mid-deploy): the
            # loop's end-of-round sweep must delete it too.
            orphan = await LocalProvider(world.settings.local_pods_dir).deploy(
                f"miner-{n:02d}-orphan-0", "local/reference-miner"
            )
            assert orphan.container_id
            pids.add(int(orphan.container_id))

            set_stage(world.bare, n, "finalizing")
            await loop.signal("wake")

            for workflow_id in (audit_id, leader_id):
                await wait_for_status(
                    client.get_workflow_handle(workflow_id),
                    WorkflowExecutionStatus.CANCELED,
                    timeout=60,
                )

            async def all_gone() -> None:
                assert await registered_pods(world) == []
                assert not [pid for pid in pids if pid_alive(pid)]

            await assert_eventually(all_gone, timeout=30, interval=0.2)

            def stopped(status: RoundStatus) -> bool:
                return (
                    status.round == n
                    and status.stage == "finalizing"
                    and status.running == []
                    and status.phase == "waiting for a generating stage"
                )

            async def loop_reports_the_stage() -> RoundStatus:
                status: RoundStatus = await loop.query("status", result_type=RoundStatus)
                assert stopped(status), status
                return status

            status = await assert_eventually(loop_reports_the_stage, timeout=30, interval=0.2)
            assert sorted(status.finished) == sorted([audit_id, leader_id]), status

    assert slow.hotkey not in verdicts(world, n)
    assert head_json(world, CompetitionPaths.pod_stats(n, slow.hotkey)) is None
    runs = [r async for r in client.list_workflows(f'WorkflowId = "{audit_id}"')]
    assert len(runs) == 1, "the cancelled audit was started again"


# --- 4. require_audit.json grows mid-round ----------------------------------------------------


async def test_hotkey_added_to_require_audit_mid_round_is_audited(
    client: Client, world: World
) -> None:
    """judge-service requires one miner, then (while that audit runs) a second: the loop
    re-reads require_audit.json and audits both."""
    n, n_prompts = 704, 4
    first, second = honest("5First704", delay=0.3), honest("5Second704", delay=0.3)
    with FakeGitHub(repo=GITHUB_REPO) as github:
        config = round_config(world, github, n, [first, second])
        stems = open_round(world, n, [first, second], n_prompts)
        require_audits(world.bare, n, [first], stems)
        builds_settled_at_once(github, n, [first, second])
        async with (
            running_workers_for(client, world, config),
            round_loop(client, world, config, audit_policy(world)),
        ):
            first_id, second_id = (
                audit_workflow_id(n, first.hotkey),
                audit_workflow_id(n, second.hotkey),
            )
            await wait_started(client, first_id)
            assert await status_of(client, second_id) is None, "audited before it was required"
            require_audits(world.bare, n, [first, second], stems)
            await wait_closed(client, [first_id, second_id, leader_workflow_id(n)], timeout=120)

    written = verdicts(world, n)
    assert {h: v["outcome"] for h, v in written.items()} == {
        first.hotkey: AuditOutcome.PASSED,
        second.hotkey: AuditOutcome.PASSED,
    }
    for miner in (first, second):
        generated = head_json(world, CompetitionPaths.generated(n, miner.hotkey))
        assert isinstance(generated, dict) and sorted(generated) == sorted(stems)


async def test_without_a_build_tracker_the_loop_waits_for_the_builds_entry(
    client: Client, world: World
) -> None:
    """GITHUB_REPO unset: builds.json is someone else's. A required miner whose entry is not
    written yet is not audited (that would reject it for "no build"); once the entry says
    success, it is audited and passes."""
    n, n_prompts = 706, 3
    miner = honest("5Untracked706")
    with FakeGitHub(repo=GITHUB_REPO) as github:
        tracked = round_config(world, github, n, [miner], GENERATE_LEADER="false")
        config = RoundConfig(
            env=tracked.env, settings=tracked.settings.model_copy(update={"github_repo": None})
        )
        assert config.settings.round_policy().track_builds is False
        stems = open_round(world, n, [miner], n_prompts)
        require_audits(world.bare, n, [miner], stems)
        async with (
            running_workers_for(client, world, config),
            round_loop(client, world, config, audit_policy(world)) as loop,
        ):
            audit_id = audit_workflow_id(n, miner.hotkey)
            ticks = (await loop.describe()).history_length
            await assert_eventually(
                lambda: _history_grew(loop, ticks, by=20), timeout=30, interval=0.5
            )
            assert await status_of(client, audit_id) is None, "audited before its build existed"
            status: RoundStatus = await loop.query("status", result_type=RoundStatus)
            assert miner.hotkey in status.waiting, status
            build = {
                "repo": "demo/x",
                "commit": miner_commit(miner),
                "tag": build_tag(miner_commit(miner), round_tag(n)),
                "status": "success",
                "docker_image": miner.image,
            }
            commit_files(
                world.bare,
                {CompetitionPaths.builds(n): json.dumps({miner.hotkey: build})},
                "builds from elsewhere",
            )
            await loop.signal("wake")
            await wait_closed(client, [audit_id], timeout=90)
    assert verdicts(world, n)[miner.hotkey]["outcome"] == AuditOutcome.PASSED


# --- 5. leader.json is empty ------------------------------------------------------------------


async def test_empty_leader_json_fails_the_leader_run_clearly(
    client: Client, world: World, webhook: Webhook
) -> None:
    """leader.json = []: `leader-{n}` fails once, saying why (also as upstream's "Generation
    Orchestrator Error" notice); the round's audits still run."""
    n, n_prompts = 705, 3
    miner = honest("5NoLeader705")
    with FakeGitHub(repo=GITHUB_REPO) as github:
        config = round_config(world, github, n, [miner], DISCORD_WEBHOOK_URL=webhook.url)
        stems = open_round(world, n, [miner], n_prompts, leader_image=None)
        commit_files(world.bare, {CompetitionPaths.LEADER: "[]\n"}, "No leader yet")
        require_audits(world.bare, n, [miner], stems)
        builds_settled_at_once(github, n, [miner])
        async with (
            running_workers_for(client, world, config),
            round_loop(client, world, config, audit_policy(world)) as loop,
        ):
            leader_id, audit_id = leader_workflow_id(n), audit_workflow_id(n, miner.hotkey)
            await wait_closed(client, [leader_id, audit_id], timeout=90)
            leader = client.get_workflow_handle(leader_id)
            assert (await leader.describe()).status is WorkflowExecutionStatus.FAILED
            with pytest.raises(WorkflowFailureError) as failed:
                await leader.result()
            # The workflow's own failure (what the Web UI shows first) says why.
            top = str(failed.value.cause)
            assert "leader.json" in top and "Leader docker image not found" in top, (
                failure_messages(failed.value)
            )
            # Several ticks later the loop has not started the failed leader run again.
            ticks = (await loop.describe()).history_length
            await assert_eventually(
                lambda: _history_grew(loop, ticks, by=20), timeout=30, interval=0.5
            )

    runs = [r async for r in client.list_workflows(f'WorkflowId = "{leader_id}"')]
    assert len(runs) == 1, "the failed leader run was started again"
    errors = [e for e in webhook.embeds() if e["title"] == "Generation Orchestrator Error"]
    assert len(errors) == 1, webhook.embeds()
    text = str(errors[0]["description"])
    assert text.startswith("```") and leader_id in text and "Leader docker image not found" in text
    assert errors[0]["color"] == 0xE74C3C
    written = verdicts(world, n)
    assert written[miner.hotkey]["outcome"] == AuditOutcome.PASSED, written
    assert head_json(world, CompetitionPaths.leader_generated(n)) is None


async def _history_grew(handle: WorkflowHandle[object, None], before: int, by: int) -> None:
    now = (await handle.describe()).history_length
    assert now >= before + by, f"history {now}, want {before + by}"
