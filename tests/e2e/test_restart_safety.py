"""Restart safety for real: SIGKILL the worker, the Temporal server or a miner pod mid-audit.

Every test counts the reference miner's `/generate` calls in its call log (`received` lines,
written when a request arrives, so they survive a kill) and asserts the exact number: a restart
may cost at most the one generation that was cut off, never the ones already done.

Also: `worker.py` stops cleanly on SIGTERM/SIGINT, a second start of an audit id attaches to the
first run (starter and `temporal workflow start`), and `temporal workflow cancel` deletes every
pod and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import git
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker

from demo.competition import DemoMiner
from embedded_temporal import DevServer, connect, find_temporal_binary
from models.audit import AuditPolicy, AuditResult
from models.competition import AuditOutcome
from models.constants import GPU_TASK_QUEUE, TASK_QUEUE, audit_workflow_id, unkeyed_pod_name
from models.settings import Settings
from providers.local import LocalProvider
from starter import start_audit
from tests.e2e.conftest import World, registered_pods
from tests.helpers import (
    assert_eventually,
    free_port,
    make_settings,
    pod_workflow_id,
    wait_for_status,
)
from worker import GRACEFUL_SHUTDOWN, running_workers

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DELAY = 1.5
"""Seconds the miner takes per generation: the window in which a request is in flight."""

N = 4
"""Prompts per audit in the kill tests."""

RUNNING_LINE = "worker running on"
"""What `worker.py` logs once its workers poll (signals are handled from then on)."""


# --- helpers --------------------------------------------------------------------------------------


def target_of(client: Client) -> str:
    """host:port of the server `client` talks to (for subprocesses and the CLI)."""
    return client.service_client.config.target_host


def slow_miner(hotkey: str, delay: float = DELAY) -> DemoMiner:
    """An honest miner (reproduces its submission) that takes `delay` s per generation."""
    return DemoMiner(hotkey=hotkey, label=hotkey, image=f"local/reference-miner?delay={delay}")


def passing_policy(world: World, **overrides: object) -> AuditPolicy:
    """The world's policy with a median limit a `DELAY` miner passes."""
    # A 4 s generate heartbeat (2 s beats) lets Temporal retry a dead worker's call quickly.
    return world.policy(median_limit_seconds=30.0, generation_heartbeat_seconds=4.0, **overrides)


def call_lines(world: World) -> list[dict[str, object]]:
    """Every line of the miner call log (received, ok, failed, ...)."""
    if not world.call_log.exists():
        return []
    text = world.call_log.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def wait_received(world: World, count: int, timeout: float = 60.0) -> list[dict[str, object]]:
    """Poll the call log until at least `count` requests were received; return them."""

    def check() -> list[dict[str, object]]:
        calls = world.generate_calls()
        assert len(calls) >= count, f"{len(calls)} /generate calls received, want {count}"
        return calls

    result: list[dict[str, object]] = await assert_eventually(check, timeout=timeout)
    return result


def generate_records(world: World) -> list[Path]:
    """The artifact store's idempotency records of `generate` (one per finished assignment)."""
    return sorted((world.settings.artifacts_dir / "records" / "generate").glob("*.json"))


async def generate_attempts(client: Client, workflow_id: str) -> list[int]:
    """The attempt number of every `generate` activity in a workflow's history, in order."""
    scheduled: set[int] = set()
    attempts: list[int] = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == "generate":
                scheduled.add(event.event_id)
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                attempts.append(started.attempt)
    return attempts


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as dead; reaped here if it is our child)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if raw[raw.rindex(")") + 2 :].split()[0] in ("Z", "X"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def repo_head(world: World) -> str:
    """The bare repo's main commit."""
    return git.Repo(world.bare).commit("main").hexsha


def repo_has(world: World, path: str) -> bool:
    """Whether `path` exists on the bare repo's main branch."""
    try:
        git.Repo(world.bare).git.cat_file("-e", f"main:{path}")
    except git.GitCommandError:
        return False
    return True


def log_time(output: str, text: str) -> datetime:
    """The timestamp of the first `worker.py` log line containing `text`."""
    line = next(line for line in output.splitlines() if text in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007 - local, diffed


def worker_env(world: World, address: str, **overrides: str) -> dict[str, str]:
    """Environment of a `worker.py` subprocess for `world` against the server at `address`.

    Every settings variable of the calling shell is dropped, so nothing leaks in.
    """
    aliases = {f.alias for f in Settings.model_fields.values() if f.alias}
    env = {k: v for k, v in os.environ.items() if k not in aliases}
    s = world.settings
    env.update(
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "TASK_QUEUE": world.task_queue,
            "GPU_TASK_QUEUE": world.gpu_task_queue,
            "COMPETITION_REPO": str(world.bare),
            "WORK_DIR": str(s.work_dir),
            "ARTIFACTS_DIR": str(s.artifacts_dir),
            "LOCAL_ARTIFACTS_URL": "http://127.0.0.1:0",
            "LOCAL_PODS_DIR": str(s.local_pods_dir),
            "LOCAL_MINER_CALL_LOG": str(world.call_log),
            "DINOV3_MODEL": s.dinov3_model,
            "GPU_PROVIDERS": "local",
            "PODS_PER_MINER": "1",
            "INITIAL_POD_COUNT": "1",
            "MAX_PROMPT_ATTEMPTS": "1",
            "POD_START_DELAY": "0",
            "CHECK_POD_INTERVAL": "0.5",
            "ACCEPTABLE_DISTANCE": "0.005",
            "GENERATION_TIMEOUT": "10",
            "GENERATION_MEDIAN_LIMIT": "30",
            "POD_WARMUP_TIMEOUT": "30",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class WorkerProcess:
    """One `python worker.py` subprocess; its output goes to a log file."""

    def __init__(self, env: dict[str, str], log: Path, queues: Sequence[str] = ()) -> None:
        argv = [sys.executable, str(PROJECT_ROOT / "worker.py")]
        if queues:
            argv += ["--queues", ",".join(queues)]
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_running(self, timeout: float = 60.0) -> None:
        """Until the worker logs that it polls (fails early if the process exited)."""

        def check() -> None:
            code = self.process.poll()
            assert code is None, f"worker exited with {code}:\n{self.output()[-3000:]}"
            assert RUNNING_LINE in self.output(), "worker not running yet"

        await assert_eventually(check, timeout=timeout, interval=0.1)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code, once the process ended within `timeout` seconds."""
        return await asyncio.to_thread(self.process.wait, timeout)

    def kill(self) -> None:
        """SIGKILL (no graceful anything) and reap."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def worker_processes(world: World) -> Iterator[list[WorkerProcess]]:
    """Worker subprocesses of a test; each is killed at teardown (before the world's pods)."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


@contextlib.asynccontextmanager
async def gpu_worker(client: Client, world: World) -> AsyncIterator[list[Worker]]:
    """The render + score worker in this process (it is not the one being killed)."""
    async with running_workers(
        client,
        world.settings,
        (GPU_TASK_QUEUE,),
        task_queue=world.task_queue,
        gpu_task_queue=world.gpu_task_queue,
    ) as workers:
        yield workers


async def run_cli(*args: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run the `temporal` CLI; its exit code and combined output."""
    process = await asyncio.create_subprocess_exec(
        find_temporal_binary(),
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def cli_start(
    client: Client, world: World, workflow_id: str, hotkey: str, *flags: str
) -> tuple[int, str]:
    """`temporal workflow start` of AuditWorkflow, as README shows it (plus `flags`)."""
    return await run_cli(
        "workflow",
        "start",
        "--address",
        target_of(client),
        "--namespace",
        client.namespace,
        "--task-queue",
        world.task_queue,
        "--type",
        "AuditWorkflow",
        "--workflow-id",
        workflow_id,
        "--input",
        json.dumps({"round": 1, "hotkey": hotkey}),
        *flags,
    )


def assert_passed_once_each(
    world: World, result: AuditResult, stems: list[str], hotkey: str
) -> dict[str, Any]:
    """The audit passed with every prompt checked; returns generated.json."""
    assert result.audit.outcome is AuditOutcome.PASSED, result.audit.reason
    assert result.audit.checked_prompts == len(stems)
    assert result.audit.failed_prompts == 0
    generated = world.read_json(f"rounds/1/{hotkey}/generated.json")
    assert isinstance(generated, dict)
    assert sorted(generated) == sorted(stems)
    return generated


# --- 1. the worker is killed ----------------------------------------------------------------------


async def test_worker_sigkilled_mid_generation_resumes_on_a_new_worker(
    client: Client, world: World, worker_processes: list[WorkerProcess]
) -> None:
    """SIGKILL `worker.py` while the miner is answering prompt k; a new worker finishes.

    The orchestrator worker (workflows, pods, miner calls) runs as a real subprocess and is
    killed; render + score run in this process on their own queue and are not disturbed.
    """
    miner = slow_miner("5KillWorker")
    stems = world.publish(1, [miner], N)
    k = 2
    env = worker_env(world, target_of(client))
    async with gpu_worker(client, world):
        first = WorkerProcess(env, world.root / "worker-1.log", (TASK_QUEUE,))
        worker_processes.append(first)
        await first.wait_running()
        handle = await start_audit(
            client,
            1,
            miner.hotkey,
            task_queue=world.task_queue,
            policy=passing_policy(world, pods_per_miner=1, initial_pod_count=1),
        )
        calls = await wait_received(world, k)
        # One pod, one request at a time: prompt k is in flight (the miner answers after DELAY).
        first.kill()
        assert len(world.generate_calls()) == k, "killed too late: prompt k+1 had started"
        pod_pid = int(str(calls[-1]["pid"]))
        pods = await LocalProvider(world.settings.local_pods_dir).list("")
        assert [p.container_id for p in pods] == [str(pod_pid)]
        assert pid_alive(pod_pid), "the pod died with the worker (not in its own session)"
        assert len(generate_records(world)) == k - 1

        second = WorkerProcess(env, world.root / "worker-2.log", (TASK_QUEUE,))
        worker_processes.append(second)
        # The killed attempt of prompt k is retried once its heartbeat times out (20 s).
        result = await asyncio.wait_for(handle.result(), timeout=120)

    generated = assert_passed_once_each(world, result, stems, miner.hotkey)
    calls = world.generate_calls()
    # Exactly N + 1: prompts 1..k-1 were generated and recorded before the kill and are never
    # called again; prompt k's request was cut off before its result was recorded, so Temporal
    # re-runs that activity attempt on the new worker, which calls the miner once more;
    # prompts k+1..N run once on the new worker. One pod, so no other request was in flight.
    assert len(calls) == N + 1, calls
    per_image = Counter(str(c["image_sha256"]) for c in calls)
    assert sorted(per_image.values()) == [1] * (N - 1) + [2]
    assert per_image[str(calls[k - 1]["image_sha256"])] == 2
    # The pod outlived the worker and the new worker kept using it: one pod for everything.
    assert {(c["pid"], c["port"]) for c in calls} == {(pod_pid, calls[0]["port"])}
    assert result.pods_started == 1
    # The re-run is the same assignment (attempt 2 of the same generate activity, a Temporal
    # retry), not a new audit attempt.
    pod_id = await pod_workflow_id(client, handle.id, 0)
    assert await generate_attempts(client, pod_id) == [1] * (k - 1) + [2] + [1] * (N - k)
    assert all(e["attempts"] == 1 for e in generated.values())
    assert len(generate_records(world)) == N
    # The new worker found the old worker's pod in the registry and killed it at the end.
    assert await registered_pods(world) == []
    assert not pid_alive(pod_pid)


# --- 2. the Temporal server is killed -------------------------------------------------------------


class OwnServer:
    """A dev server of one test on a free port and a SQLite file, which it SIGKILLs and restarts.

    Not the session server: killing that would break every other test.
    """

    def __init__(self, db_file: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.db_file = db_file
        self.server = DevServer(self.address, db_file=db_file, ui_port=None)

    async def client(self) -> Client:
        return await connect(make_settings(TEMPORAL_ADDRESS=self.address))

    async def sigkill(self) -> None:
        """SIGKILL the server process (no graceful anything) and reap it."""
        server = self.server
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await assert_eventually(lambda: not server.running, timeout=10)
        server.stop()  # only reaps the dead process and removes its pid file

    async def restart(self) -> None:
        """A new server process on the same port and SQLite file."""
        self.server = DevServer(self.address, db_file=self.db_file, ui_port=None)
        await self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def own_server(tmp_path: Path) -> AsyncIterator[OwnServer]:
    server = OwnServer(tmp_path / "temporal" / "dev.db")
    await server.server.start()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def kill_server_while_prompt_k_generates(
    world: World, server: OwnServer, k: int
) -> dict[str, object]:
    """SIGKILL the server right after the k-th request reached the miner, then wait until that
    generation finished while the server is down: the miner answered and the worker stored the
    GLB and the idempotency record (it cannot report the completion). Returns the k-th call."""
    calls = await wait_received(world, k)
    await server.sigkill()
    assert len(world.generate_calls()) == k, "killed too late: prompt k+1 had started"
    interrupted = calls[k - 1]

    def finished() -> None:
        ok = [
            c
            for c in call_lines(world)
            if c["status"] == "ok" and c["image_sha256"] == interrupted["image_sha256"]
        ]
        assert len(ok) == 1, "prompt k not answered yet"
        assert len(generate_records(world)) == k, "prompt k not recorded yet"

    await assert_eventually(finished, timeout=30)
    return interrupted


async def test_temporal_server_sigkilled_mid_audit_workers_reconnect(
    world: World, own_server: OwnServer
) -> None:
    """SIGKILL the dev server while prompt k is generated; restart it on the same SQLite file.

    The in-process workers are not restarted: they reconnect by themselves, and the worker
    delivers the completion of the generation that finished during the outage.
    """
    miner = slow_miner("5KillServer")
    stems = world.publish(1, [miner], N)
    client = await own_server.client()
    async with running_workers(
        client, world.settings, task_queue=world.task_queue, gpu_task_queue=world.gpu_task_queue
    ) as workers:
        handle = await start_audit(
            client,
            1,
            miner.hotkey,
            task_queue=world.task_queue,
            policy=passing_policy(world, pods_per_miner=1, initial_pod_count=1),
        )
        await kill_server_while_prompt_k_generates(world, own_server, k=2)
        await own_server.restart()
        result = await asyncio.wait_for(handle.result(), timeout=120)
        assert all(w.is_running for w in workers), "a worker gave up during the outage"

    generated = assert_passed_once_each(world, result, stems, miner.hotkey)
    calls = world.generate_calls()
    # Exactly N: nothing was lost with the server. Everything it had acknowledged (prompt 1
    # done, prompt k started) is in the SQLite file, and the worker, which kept running,
    # retries its completion of prompt k until the restarted server accepts it.
    assert len(calls) == N, calls
    assert sorted(Counter(str(c["image_sha256"]) for c in calls).values()) == [1] * N
    # That is what happened: no generate needed a second attempt (so the idempotency record was
    # not even needed here; the next test loses the completion on purpose).
    pod_id = await pod_workflow_id(client, handle.id, 0)
    assert await generate_attempts(client, pod_id) == [1] * N
    assert all(e["attempts"] == 1 for e in generated.values())
    assert result.pods_started == 1
    assert await registered_pods(world) == []


async def test_temporal_server_and_worker_sigkilled_generation_not_repeated(
    world: World, own_server: OwnServer, worker_processes: list[WorkerProcess]
) -> None:
    """SIGKILL the server while prompt k is generated, then, once the worker has stored prompt
    k's result, SIGKILL the worker too (its completion is lost for sure); restart both.

    The render/score worker runs in this process and reconnects by itself.
    """
    miner = slow_miner("5KillBoth")
    stems = world.publish(1, [miner], N)
    k = 2
    client = await own_server.client()
    env = worker_env(world, own_server.address)
    async with gpu_worker(client, world) as gpu_workers:
        first = WorkerProcess(env, world.root / "worker-1.log", (TASK_QUEUE,))
        worker_processes.append(first)
        await first.wait_running()
        handle = await start_audit(
            client,
            1,
            miner.hotkey,
            task_queue=world.task_queue,
            policy=passing_policy(world, pods_per_miner=1, initial_pod_count=1),
        )
        await kill_server_while_prompt_k_generates(world, own_server, k)
        first.kill()
        await own_server.restart()
        second = WorkerProcess(env, world.root / "worker-2.log", (TASK_QUEUE,))
        worker_processes.append(second)
        # The server re-runs prompt k's generate once its heartbeat times out (20 s).
        result = await asyncio.wait_for(handle.result(), timeout=120)
        assert all(w.is_running for w in gpu_workers), "the gpu worker gave up during the outage"

    generated = assert_passed_once_each(world, result, stems, miner.hotkey)
    calls = world.generate_calls()
    # Exactly N: the re-run of prompt k's generate (attempt 2, on the new worker) found the
    # idempotency record (audit id, assignment id) the killed worker had stored, and returned
    # it without calling the miner.
    assert len(calls) == N, calls
    assert sorted(Counter(str(c["image_sha256"]) for c in calls).values()) == [1] * N
    pod_id = await pod_workflow_id(client, handle.id, 0)
    assert await generate_attempts(client, pod_id) == [1] * (k - 1) + [2] + [1] * (N - k)
    assert "already done, not calling the miner" in second.output()
    assert all(e["attempts"] == 1 for e in generated.values())
    assert len({c["pid"] for c in calls}) == 1  # the new worker kept using the same pod
    assert result.pods_started == 1
    assert await registered_pods(world) == []


# --- 3. a miner pod is killed ---------------------------------------------------------------------


async def test_pod_sigkilled_mid_request_prompt_retried_on_another_pod(
    client: Client, world: World, workers: None
) -> None:
    """SIGKILL a miner process while it generates: that prompt is retried elsewhere, once."""
    miner = slow_miner("5KillPod")
    stems = world.publish(1, [miner], N)
    handle = await start_audit(
        client,
        1,
        miner.hotkey,
        task_queue=world.task_queue,
        policy=passing_policy(world, pods_per_miner=2, initial_pod_count=2),
    )
    calls = await wait_received(world, 1)
    victim = calls[0]
    victim_pid = int(str(victim["pid"]))
    pods = await LocalProvider(world.settings.local_pods_dir).list("")
    victim_pod = next(p.name for p in pods if p.container_id == str(victim_pid))
    os.kill(victim_pid, signal.SIGKILL)
    assert not [
        c for c in call_lines(world) if c["pid"] == victim_pid and c["status"] != "received"
    ], "killed too late: the request was already answered"

    result = await asyncio.wait_for(handle.result(), timeout=120)
    generated = assert_passed_once_each(world, result, stems, miner.hotkey)
    calls = world.generate_calls()
    # Exactly N + 1: the killed request is the only one that did not produce a result; its
    # prompt is generated once more, on a pod that has not tried it.
    assert len(calls) == N + 1, calls
    victim_image = str(victim["image_sha256"])
    per_image = Counter(str(c["image_sha256"]) for c in calls)
    assert sorted(per_image.values()) == [1] * (N - 1) + [2]
    assert per_image[victim_image] == 2
    retried_on = {c["pid"] for c in calls if c["image_sha256"] == victim_image}
    assert len(retried_on) == 2 and victim_pid in retried_on
    # One generated.json entry per stem (a stem is the prompt's sha256 prefix); the killed
    # prompt took two attempts.
    attempts = {stem: entry["attempts"] for stem, entry in generated.items()}
    victim_stem = victim_image[:16]
    assert attempts[victim_stem] == 2
    # A prompt handed to the dead pod after its failed result (it never started it) does not
    # count as an attempt: every other entry says 1, matching the miner's call log.
    others = [n for stem, n in attempts.items() if stem != victim_stem]
    assert others == [1] * (N - 1), attempts
    # The dead pod was marked bad after its /health probe failed, and replaced.
    pod_stats = world.read_json(f"rounds/1/{miner.hotkey}/pod_stats.json")
    assert isinstance(pod_stats, dict)
    dead = pod_stats[unkeyed_pod_name(victim_pod)]  # pod_stats keeps upstream's names
    assert dead["marked_bad"] is True
    assert "/health" in str(dead["termination_reason"]), dead
    assert (dead["processed"], dead["hard_failed"], dead["successful"]) == (1, 1, 0)
    assert sum(s["processed"] for s in pod_stats.values()) == N + 1
    assert result.pods_started == 3  # two pods, one replacement for the killed one
    assert await registered_pods(world) == []
    assert not [c["pid"] for c in calls if pid_alive(int(str(c["pid"])))]


# --- 4. worker.py stops on signals ----------------------------------------------------------------


async def test_worker_exits_cleanly_on_sigterm_and_sigint_when_idle(
    client: Client, world: World, worker_processes: list[WorkerProcess]
) -> None:
    """An idle `python worker.py` exits 0 soon after SIGTERM (as sent by docker/systemd; both
    queues, the default) or SIGINT (Ctrl-C; the orchestrator queue only, which starts in a few
    seconds instead of ~15 s with torch). Both start in parallel."""
    world.publish(1, [], 1)  # a readable competition repo: workers check theirs at start-up
    env = worker_env(world, target_of(client))
    by_signal = {
        signal.SIGTERM: WorkerProcess(env, world.root / "worker-term.log"),
        signal.SIGINT: WorkerProcess(env, world.root / "worker-int.log", (TASK_QUEUE,)),
    }
    worker_processes.extend(by_signal.values())
    await asyncio.gather(*(w.wait_running(timeout=90) for w in by_signal.values()))
    loop = asyncio.get_running_loop()
    for sig, worker in by_signal.items():
        started = loop.time()
        worker.process.send_signal(sig)
        code = await worker.wait_exit(timeout=30)
        elapsed = loop.time() - started
        output = worker.output()
        assert code == 0, f"{sig.name}: exit code {code}\n{output[-3000:]}"
        # An idle worker has nothing to finish: it must not sit out its graceful-shutdown
        # timeout. (The rest of `elapsed` is the interpreter's exit; torch's alone takes ~2 s.)
        stopping = log_time(output, "shutting down")
        stopped = log_time(output, "worker stopped")
        assert (stopped - stopping).total_seconds() < 3, output[-3000:]
        assert elapsed < GRACEFUL_SHUTDOWN.total_seconds(), f"{sig.name}: {elapsed:.1f} s"


# --- 5. starting an audit twice -------------------------------------------------------------------


async def test_second_start_attaches_to_the_first_run(
    client: Client, world: World, workers: None
) -> None:
    """start_audit twice and `temporal workflow start` on the same id: one run, one result."""
    miner = slow_miner("5StartTwice", delay=1.0)
    stems = world.publish(1, [miner], 2)
    policy = passing_policy(world, pods_per_miner=1, initial_pod_count=1)
    workflow_id = audit_workflow_id(1, miner.hotkey)
    first = await start_audit(client, 1, miner.hotkey, task_queue=world.task_queue, policy=policy)
    await wait_received(world, 1)  # running, mid-generation

    again = await start_audit(client, 1, miner.hotkey, task_queue=world.task_queue, policy=policy)
    assert again.id == workflow_id
    assert again.result_run_id == first.result_run_id
    code, out = await cli_start(client, world, workflow_id, miner.hotkey)
    # The CLI (1.9) defaults to attaching: it prints the running execution, starts nothing.
    assert code == 0, out
    assert first.result_run_id is not None and first.result_run_id in out, out
    assert (await first.describe()).status is WorkflowExecutionStatus.RUNNING

    result = await asyncio.wait_for(first.result(), timeout=60)
    assert await again.result() == result
    assert_passed_once_each(world, result, stems, miner.hotkey)
    # After completion a start returns the finished run's result instead of auditing again.
    after = await start_audit(client, 1, miner.hotkey, task_queue=world.task_queue, policy=policy)
    assert await after.result() == result
    # So does the CLI given start_audit's reuse policy: it shows the finished run, starts none.
    # (Without `--id-reuse-policy` the server's default, AllowDuplicate, starts a second,
    # complete audit of a finished id; the CLI must be given the flag after completion.)
    code, out = await cli_start(
        client, world, workflow_id, miner.hotkey, "--id-reuse-policy", "AllowDuplicateFailedOnly"
    )
    assert code == 0, out
    assert first.result_run_id in out, out
    runs = [run async for run in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    assert [r.run_id for r in runs] == [first.result_run_id]
    assert len(world.generate_calls()) == 2  # one generation per prompt, nothing repeated


# --- 6. cancellation ------------------------------------------------------------------------------


async def test_cli_cancel_deletes_every_pod_and_writes_nothing(
    client: Client, world: World, workers: None
) -> None:
    """`temporal workflow cancel` mid-audit: CANCELLED, no pod left, no verdict written.

    Only results committed as they arrived (generated.json, upstream's batcher) may have been
    written: they are what a new run resumes from.
    """
    miner = slow_miner("5CancelCli")
    world.publish(1, [miner], N)
    head = repo_head(world)
    handle = await start_audit(
        client,
        1,
        miner.hotkey,
        task_queue=world.task_queue,
        policy=passing_policy(world, pods_per_miner=2, initial_pod_count=2),
    )
    calls = await wait_received(world, 1)
    pods = await LocalProvider(world.settings.local_pods_dir).list("")
    assert pods, "no pod registered mid-audit"
    pids = {int(p.container_id) for p in pods if p.container_id} | {
        int(str(c["pid"])) for c in calls
    }

    code, out = await run_cli(
        "workflow",
        "cancel",
        "--address",
        target_of(client),
        "--namespace",
        client.namespace,
        "--workflow-id",
        handle.id,
    )
    assert code == 0, out
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=60)
    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED

    async def all_gone() -> None:
        assert await registered_pods(world) == []
        alive = [pid for pid in pids if pid_alive(pid)]
        assert not alive, f"pod processes still alive: {alive}"

    await assert_eventually(all_gone, timeout=30)
    for slot in range(2):
        pod = client.get_workflow_handle(await pod_workflow_id(client, handle.id, slot))
        # The cancellation reaches every pod child: none keeps running (nor waits for work).
        await wait_for_status(pod, WorkflowExecutionStatus.CANCELED, timeout=30)
    repo = git.Repo(world.bare)
    changed = {path for commit in repo.iter_commits(f"{head}..main") for path in commit.stats.files}
    assert changed <= {f"rounds/1/{miner.hotkey}/generated.json"}, changed
    assert f"rounds/1/{miner.hotkey}/pod_stats.json" not in changed
    assert not repo_has(world, "rounds/1/generation_audits.json")
    assert not repo_has(world, f"rounds/1/{miner.hotkey}/generated.json")
    assert not repo_has(world, f"rounds/1/{miner.hotkey}/pod_stats.json")
