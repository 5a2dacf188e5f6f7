"""BuildTrackingWorkflow for real: dev server, `running_workers`, a bare competition repo and
FakeGitHub (loopback HTTP). Each test reads what an operator reads: builds.json in the bare repo,
its commits' messages, and the workflow's history (timers, activity attempts).

Rounds are distinct per test (workflow ids are `builds-{round}` on a possibly shared server).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import git
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from demo.competition import DemoMiner, miner_commit, publish_round, read_json, round_tag
from demo.fake_github import FakeGitHub
from models.audit import AuditProgress, AuditStatus
from models.competition import CompetitionPaths
from models.constants import TASK_QUEUE
from models.rounds import BuildTrackingInput, BuildTrackingResult, RoundPolicy
from models.settings import Settings
from starter import start_audit
from tests.helpers import assert_eventually, make_settings, new_task_queue, wait_for_query
from worker import running_workers

REPO = "404-Repo/404-competition-builds-test"
UPDATE = "Update build statuses for round {n}"
IMAGE_FORMAT = "Registry.Example/Gen-456515/Active-Competition/{hotkey10}:{tag}"
"""Mixed case on purpose: the docker image is the whole format lowercased."""
INTERVAL = 0.3
"""CHECK_BUILD_INTERVAL of most tests (seconds)."""
WAIT = 20.0
"""Deadline of every condition wait (seconds): generous for 2 loaded cores."""


# --- world ---------------------------------------------------------------------------------------


@dataclass
class Track:
    """One test's bare repo, fake GitHub and worker queue."""

    root: Path
    bare: Path
    fake: FakeGitHub
    settings: Settings
    task_queue: str
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    def publish(self, n: int, hotkeys: list[str]) -> list[DemoMiner]:
        """Round `n` with these miners, no builds.json (the tracker's) and no require_audit."""
        miners = [DemoMiner(hotkey=h, label=f"miner{i}", image=None) for i, h in enumerate(hotkeys)]
        publish_round(
            self.bare,
            self.root / "www",
            "http://127.0.0.1:9",
            n,
            miners,
            1,
            builds_json=False,
            require_audit_json=False,
        )
        return miners

    async def start(
        self, client: Client, n: int, **policy: Any
    ) -> WorkflowHandle[Any, BuildTrackingResult]:
        values: dict[str, Any] = {
            "check_build_interval_seconds": INTERVAL,
            "docker_image_format": IMAGE_FORMAT,
            **policy,
        }
        handle: WorkflowHandle[Any, BuildTrackingResult] = await client.start_workflow(
            "BuildTrackingWorkflow",
            BuildTrackingInput(round=n, policy=RoundPolicy(**values)),
            id=f"builds-{n}",
            task_queue=self.task_queue,
            result_type=BuildTrackingResult,
        )
        self.handles.append(handle)
        return handle

    def builds(self, n: int) -> dict[str, Any]:
        value = read_json(self.bare, CompetitionPaths.builds(n))
        assert isinstance(value, dict), f"builds.json of round {n}: {value!r}"
        return value

    def statuses(self, n: int) -> dict[str, str]:
        value = read_json(self.bare, CompetitionPaths.builds(n))
        return {} if not isinstance(value, dict) else {h: b["status"] for h, b in value.items()}

    def commits_since_publish(self, n: int) -> list[tuple[str, dict[str, Any] | None]]:
        """(message, builds.json at that commit) of every commit after the round's publication,
        oldest first."""
        repo = git.Repo(self.bare)
        out: list[tuple[str, dict[str, Any] | None]] = []
        published = False
        for commit in repo.iter_commits("main", reverse=True):
            message = str(commit.message).strip()
            if message == f"Open demo round {n}":
                published = True
                continue
            if not published:
                continue
            try:
                blob = commit.tree / CompetitionPaths.builds(n)
            except KeyError:
                out.append((message, None))
                continue
            out.append((message, json.loads(blob.data_stream.read())))
        return out

    def tracker_commits(self, n: int) -> list[dict[str, Any]]:
        """builds.json at each commit with the tracker's message, oldest first."""
        commits = self.commits_since_publish(n)
        builds: list[dict[str, Any]] = []
        for message, value in commits:
            if message == UPDATE.format(n=n):
                assert value is not None
                builds.append(value)
        return builds

    def jobs_requests(self) -> int:
        return sum(1 for r in self.fake.requests if r.path.endswith("/jobs"))

    def runs_requests(self) -> int:
        return sum(1 for r in self.fake.requests if r.path.endswith("/actions/runs"))

    async def wait_statuses(self, n: int, expected: dict[str, str]) -> None:
        def check() -> None:
            assert self.statuses(n) == expected

        await assert_eventually(check, timeout=WAIT, interval=0.1)

    async def idle_polls(self, count: int = 2) -> None:
        """Wait until the tracker polled the jobs `count` more times (nothing changed there)."""
        start = self.jobs_requests()
        await assert_eventually(
            lambda: self.jobs_requests() >= start + count, timeout=WAIT, interval=0.05
        )


@pytest_asyncio.fixture(loop_scope="session")
async def track(client: Client, tmp_path: Path) -> AsyncIterator[Track]:
    with FakeGitHub(REPO) as fake:
        settings = make_settings(
            GPU_PROVIDERS="local",
            COMPETITION_REPO=str(tmp_path / "competition.git"),
            WORK_DIR=str(tmp_path / "work"),
            ARTIFACTS_DIR=str(tmp_path / "artifacts"),
            LOCAL_PODS_DIR=str(tmp_path / "pods"),
            GITHUB_REPO=REPO,
            GITHUB_API_URL=fake.api_url,
        )
        t = Track(
            root=tmp_path,
            bare=tmp_path / "competition.git",
            fake=fake,
            settings=settings,
            task_queue=new_task_queue("builds"),
        )
        async with running_workers(client, settings, (TASK_QUEUE,), task_queue=t.task_queue):
            try:
                yield t
            finally:
                for handle in t.handles:  # a failed test leaves no tracker polling forever
                    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                        await handle.terminate("test over")


def hotkeys(n: int, count: int) -> list[str]:
    """Mixed-case hotkeys, long enough that hotkey10 is a real prefix."""
    return [f"5Hk{chr(ord('A') + i)}{n}GxQwErTyUiOpZz" for i in range(count)]


def tag_of(miner: DemoMiner, n: int) -> str:
    return f"{miner_commit(miner)[:7]}-{round_tag(n)}"


def message(n: int) -> str:
    """BUILD_COMMIT_MESSAGE of round `n`: what the Actions run's head commit ends with."""
    return f"submissions for round {n}"


# --- history -------------------------------------------------------------------------------------


@dataclass
class ActivityRecord:
    name: str
    scheduled: datetime
    attempt: int = 0
    started: datetime | None = None
    closed: datetime | None = None
    completed: bool = False


async def history(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    return list((await handle.fetch_history()).events)


def activities(events: list[HistoryEvent], name: str | None = None) -> list[ActivityRecord]:
    records: dict[int, ActivityRecord] = {}
    for e in events:
        t = e.event_time.ToDatetime()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = e.activity_task_scheduled_event_attributes
            records[e.event_id] = ActivityRecord(name=attrs.activity_type.name, scheduled=t)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = e.activity_task_started_event_attributes
            records[started.scheduled_event_id].attempt = started.attempt
            records[started.scheduled_event_id].started = t
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = records[e.activity_task_completed_event_attributes.scheduled_event_id]
            done.closed, done.completed = t, True
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            records[e.activity_task_failed_event_attributes.scheduled_event_id].closed = t
    ordered = [records[k] for k in sorted(records)]
    return [r for r in ordered if name is None or r.name == name]


def timers(events: list[HistoryEvent]) -> list[timedelta]:
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


def closed_at(events: list[HistoryEvent]) -> datetime:
    last = events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, last
    return last.event_time.ToDatetime()


async def result_of(handle: WorkflowHandle[Any, BuildTrackingResult]) -> BuildTrackingResult:
    async def done() -> BuildTrackingResult:
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.COMPLETED, desc.status
        return await handle.result()

    result: BuildTrackingResult = await assert_eventually(done, timeout=WAIT, interval=0.1)
    return result


# --- tests ---------------------------------------------------------------------------------------


async def test_every_status_path_one_commit_per_changing_poll(client: Client, track: Track) -> None:
    """queued -> in_progress -> success (with the image), -> failure (failure and cancelled),
    a missing job -> not_found; builds.json starts all pending; one commit per changing poll."""
    n = 801
    a, b, c, d = track.publish(n, hotkeys(n, 4))
    run_id = track.fake.add_run(message(n), [a.hotkey, b.hotkey, c.hotkey])  # d: no job
    handle = await track.start(client, n)
    order = [a.hotkey, b.hotkey, c.hotkey, d.hotkey]

    def st(*values: str) -> dict[str, str]:
        return dict(zip(order, values, strict=True))

    steps: list[tuple[Callable[[], None] | None, dict[str, str]]] = [
        (None, st("pending", "pending", "pending", "not_found")),
        (lambda: track.fake.set_job(run_id, a.hotkey, "in_progress"),
         st("in_progress", "pending", "pending", "not_found")),
        (lambda: track.fake.set_job(run_id, a.hotkey, "completed", "success"),
         st("success", "pending", "pending", "not_found")),
        (lambda: track.fake.set_job(run_id, b.hotkey, "in_progress"),
         st("success", "in_progress", "pending", "not_found")),
        (lambda: track.fake.set_job(run_id, b.hotkey, "completed", "failure"),
         st("success", "failure", "pending", "not_found")),
        (lambda: track.fake.set_job(run_id, c.hotkey, "completed", "cancelled"),
         st("success", "failure", "failure", "not_found")),
    ]  # fmt: skip
    for change, expected in steps:
        if change is not None:
            await track.idle_polls(1)  # polls that change nothing must not commit
            change()
        await track.wait_statuses(n, expected)
    result = await result_of(handle)

    # Each builds.json state is exactly one commit, with the tracker's message, seed first.
    commits = track.commits_since_publish(n)
    assert [m for m, _ in commits] == [UPDATE.format(n=n)] * (len(steps) + 1)
    seen = [{h: v["status"] for h, v in builds.items()} for _, builds in commits if builds]
    assert seen == [st("pending", "pending", "pending", "pending")] + [e for _, e in steps]

    builds = track.builds(n)
    assert list(builds) == order
    for miner in (a, b, c, d):
        entry = builds[miner.hotkey]
        assert entry["tag"] == tag_of(miner, n)
        assert entry["commit"] == miner_commit(miner)
    expected_image = IMAGE_FORMAT.format(hotkey10=a.hotkey[:10], tag=tag_of(a, n)).lower()
    assert builds[a.hotkey]["docker_image"] == expected_image
    assert expected_image.startswith("registry.example/gen-456515/active-competition/5hka801")
    assert [builds[m.hotkey]["docker_image"] for m in (b, c, d)] == [None, None, None]
    assert result.run_id == run_id
    assert {h: e.status.value for h, e in result.builds.items()} == seen[-1]

    events = await history(handle)
    writes = activities(events, "write_files")
    polls = activities(events, "poll_builds")
    assert len(writes) == len(commits)  # no write for a poll that changed nothing
    assert len(polls) >= 2 * len(steps) - 1


async def test_build_past_timeout_is_timed_out(client: Client, track: Track) -> None:
    """A job still in_progress BUILD_TIMEOUT after the run was found becomes timed_out."""
    n = 802
    a, b = track.publish(n, hotkeys(n, 2))
    run_id = track.fake.add_run(message(n), [a.hotkey, b.hotkey])
    track.fake.set_job(run_id, a.hotkey, "in_progress")
    track.fake.set_job(run_id, b.hotkey, "completed", "success")
    timeout_s = 2.0
    handle = await track.start(client, n, build_timeout_seconds=timeout_s)
    result = await result_of(handle)

    assert track.statuses(n) == {a.hotkey: "timed_out", b.hotkey: "success"}
    assert result.builds[a.hotkey].status.value == "timed_out"
    seen = [{h: v["status"] for h, v in builds.items()} for builds in track.tracker_commits(n)]
    assert seen[-2:] == [
        {a.hotkey: "in_progress", b.hotkey: "success"},
        {a.hotkey: "timed_out", b.hotkey: "success"},
    ]
    # The deadline runs from when the run was found (the first poll) and is applied on time.
    events = await history(handle)
    found = activities(events, "poll_builds")[0].closed
    assert found is not None
    last_write = activities(events, "write_files")[-1].scheduled
    elapsed = (last_write - found).total_seconds()
    assert timeout_s <= elapsed < timeout_s + 3.0, elapsed


async def test_run_not_found_yet_waits_twice_the_interval(client: Client, track: Track) -> None:
    """Polls that do not find the run wait 2 x CHECK_BUILD_INTERVAL; once it shows, the builds
    are tracked normally every CHECK_BUILD_INTERVAL."""
    n = 803
    # 1 s: the tracker never sleeps less than 1 s once the run is found (`_until_deadline`).
    interval = 1.0
    (a,) = track.publish(n, hotkeys(n, 1))
    run_id = track.fake.add_run(message(n), [a.hotkey])
    hidden = 2
    track.fake.hide_runs(hidden)
    handle = await track.start(client, n, check_build_interval_seconds=interval)
    await assert_eventually(lambda: track.jobs_requests() >= 2, timeout=WAIT)  # run found
    assert track.statuses(n) == {a.hotkey: "pending"}
    track.fake.set_job(run_id, a.hotkey, "completed", "success")
    result = await result_of(handle)

    assert result.run_id == run_id
    assert track.builds(n)[a.hotkey]["status"] == "success"
    assert (
        track.builds(n)[a.hotkey]["docker_image"]
        == IMAGE_FORMAT.format(hotkey10=a.hotkey[:10], tag=tag_of(a, n)).lower()
    )
    assert track.runs_requests() == hidden + 1  # the run is looked up until found, then kept
    waits = timers(await history(handle))
    step = timedelta(seconds=interval)
    assert waits[:hidden] == [2 * step] * hidden
    assert len(waits) > hidden
    assert set(waits[hidden:]) == {step}


@pytest.mark.parametrize(("n", "kind"), [(804, "403"), (805, "429")])
async def test_rate_limit_waits_on_a_durable_timer(
    client: Client, track: Track, n: int, kind: str
) -> None:
    """A rate-limited poll returns at once; the workflow waits on a timer until the reset
    (primary 403 with X-RateLimit-Reset, secondary 429 with Retry-After), then completes."""
    a, b = track.publish(n, hotkeys(n, 2))
    run_id = track.fake.add_run(message(n), [a.hotkey, b.hotkey])
    track.fake.set_job(run_id, a.hotkey, "completed", "success")
    track.fake.set_job(run_id, b.hotkey, "completed", "failure")
    track.fake.rate_limit(times=1, reset_in_s=2, kind="403" if kind == "403" else "429")
    handle = await track.start(client, n)
    result = await result_of(handle)

    assert track.statuses(n) == {a.hotkey: "success", b.hotkey: "failure"}
    assert result.run_id == run_id
    # The limited request, then the runs list and the jobs: no hammering while limited.
    assert len(track.fake.requests) == 3
    events = await history(handle)
    polls = activities(events, "poll_builds")
    assert len(polls) == 2
    first = polls[0]
    assert first.completed and first.attempt == 1
    assert first.started is not None and first.closed is not None
    assert (first.closed - first.started).total_seconds() < 1.0  # no sleep in the activity
    waits = [w.total_seconds() for w in timers(events)]
    assert len(waits) == 1 and 1.0 <= waits[0] <= 3.0, waits  # about the 2 s reset
    assert (polls[1].scheduled - first.closed).total_seconds() >= 1.0


async def test_5xx_is_retried_and_changes_nothing(client: Client, track: Track) -> None:
    """A 502 on the jobs fetch is retried by Temporal (attempt > 1); no build is marked
    not_found for it, and tracking completes."""
    n = 806
    a, b = track.publish(n, hotkeys(n, 2))
    run_id = track.fake.add_run(message(n), [a.hotkey, b.hotkey])
    track.fake.set_job(run_id, a.hotkey, "in_progress")
    handle = await track.start(client, n)
    await track.wait_statuses(n, {a.hotkey: "in_progress", b.hotkey: "pending"})
    before = len(track.fake.requests)
    track.fake.fail(times=2, status=502)
    # Two failed attempts and the retry that succeeds (the backoff is 1 s, then 2 s).
    await assert_eventually(lambda: len(track.fake.requests) >= before + 3, timeout=WAIT)
    assert track.statuses(n) == {a.hotkey: "in_progress", b.hotkey: "pending"}
    track.fake.set_job(run_id, a.hotkey, "completed", "success")
    track.fake.set_job(run_id, b.hotkey, "completed", "success")
    await result_of(handle)

    assert track.statuses(n) == {a.hotkey: "success", b.hotkey: "success"}
    seen = [{h: v["status"] for h, v in builds.items()} for builds in track.tracker_commits(n)]
    assert seen == [
        {a.hotkey: "pending", b.hotkey: "pending"},
        {a.hotkey: "in_progress", b.hotkey: "pending"},
        {a.hotkey: "success", b.hotkey: "success"},
    ]
    polls = activities(await history(handle), "poll_builds")
    assert max(p.attempt for p in polls) == 3
    assert all(p.completed for p in polls)


def push_file(bare: Path, path: str, value: object, commit_message: str) -> None:
    """Commit one JSON file to the bare repo's main through a throwaway clone."""
    with tempfile.TemporaryDirectory(prefix="builds-test-") as tmp:
        clone = git.Repo.clone_from(str(bare), tmp)
        with clone.config_writer() as config:
            config.set_value("user", "name", "test")
            config.set_value("user", "email", "test@localhost")
        target = Path(tmp) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value, indent=2) + "\n")
        clone.git.add(A=True)
        clone.index.commit(commit_message)
        clone.git.push("origin", "HEAD:main")


async def test_seeding_keeps_statuses_already_written(client: Client, track: Track) -> None:
    """A restarted tracker never resets a build: a success already in builds.json stays as
    written (even though GitHub's job now says failure); only the missing miner is seeded."""
    n = 807
    a, b = track.publish(n, hotkeys(n, 2))
    kept = {
        "repo": "demo/miner0",
        "commit": miner_commit(a),
        "revealed_at_block": 1000 + n,
        "tag": tag_of(a, n),
        "status": "success",
        "docker_image": "registry.example/kept/by-hand:1",
    }
    push_file(track.bare, CompetitionPaths.builds(n), {a.hotkey: kept}, "Builds by hand")
    run_id = track.fake.add_run(message(n), [a.hotkey, b.hotkey])
    track.fake.set_job(run_id, a.hotkey, "completed", "failure")
    handle = await track.start(client, n)
    await track.wait_statuses(n, {a.hotkey: "success", b.hotkey: "pending"})
    track.fake.set_job(run_id, b.hotkey, "completed", "success")
    result = await result_of(handle)

    builds = track.builds(n)
    assert builds[a.hotkey] == kept
    assert builds[b.hotkey]["status"] == "success"
    assert result.builds[a.hotkey].docker_image == kept["docker_image"]
    for state in track.tracker_commits(n):
        assert state[a.hotkey] == kept
    assert track.tracker_commits(n)[0][b.hotkey]["status"] == "pending"


async def test_audit_is_woken_by_build_settled(client: Client, track: Track) -> None:
    """An audit waiting for its build (fallback poll every 600 s) is woken by the tracker's
    `build_settled` signal and rejects with "Failed to build a docker image" at once."""
    n = 808
    a, b = track.publish(n, hotkeys(n, 2))
    run_id = track.fake.add_run(message(n), [a.hotkey, b.hotkey])
    tracker = await track.start(client, n)
    await track.wait_statuses(n, {a.hotkey: "pending", b.hotkey: "pending"})

    policy = track.settings.audit_policy().model_copy(
        update={"check_build_interval_seconds": 600.0, "gpu_task_queue": new_task_queue("gpu")}
    )
    audit = await start_audit(client, n, a.hotkey, task_queue=track.task_queue, policy=policy)
    track.handles.append(audit)
    await wait_for_query(
        audit,
        "progress",
        lambda p: p.status == AuditStatus.WAITING_FOR_BUILD,
        result_type=AuditProgress,
        timeout=WAIT,
    )
    track.fake.set_job(run_id, a.hotkey, "completed", "failure")
    track.fake.set_job(run_id, b.hotkey, "completed", "success")

    async def verdict() -> dict[str, Any]:
        audits = read_json(track.bare, CompetitionPaths.generation_audits(n))
        assert isinstance(audits, dict) and a.hotkey in audits, audits
        entry: dict[str, Any] = audits[a.hotkey]
        return entry

    entry = await assert_eventually(verdict, timeout=WAIT, interval=0.1)
    assert entry["outcome"] == "rejected"
    assert entry["reason"] == "Failed to build a docker image"
    result = await audit.result()
    assert result.audit.reason == "Failed to build a docker image"
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in await history(audit)
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert signals == ["build_settled"]
    tracked = await result_of(tracker)
    assert tracked.builds[a.hotkey].status.value == "failure"
    assert track.statuses(n) == {a.hotkey: "failure", b.hotkey: "success"}
