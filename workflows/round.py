"""RoundWorkflow: the competition loop, forever, as upstream's orchestrator process runs it
(id `competition`; `python starter.py run`). REFERENCE.md sec. 3.

    loop:
        read state.json (+ the current round's files) at the branch head
        stage miner_generation / downloading / duels and submissions present -> the round:
            start BuildTrackingWorkflow `builds-{n}` (once; it writes builds.json)
            every CHECK_AUDIT_INTERVAL, or at once when woken (a child closed, a build settled,
            an operator's `wake` signal):
                re-read; the stage left the generating stages or the round moved on ->
                    cancel the running audits and the leader run (they delete their pods and
                    write nothing; a later run resumes from generated.json), leave the round
                start LeaderGenerationWorkflow `leader-{n}` and one AuditWorkflow
                `audit-{n}-{hotkey}` per require_audit.json hotkey without a verdict, once its
                build is terminal, while fewer than MAX_CONCURRENT_MINERS of them run (the
                leader counts; a build wait does not), MINER_START_STAGGER apart
        else wait until state.json's next_stage_eta, clamped to [MIN, MAX]_CHECK_STATE_INTERVAL
        continue-as-new when the history grows long (the running ids travel along)

Running work is counted from the server's own records (`workflow_statuses`), so audits
started by an earlier run of this loop, or by hand, count too; every start uses a fixed id, so
an audit already running or finished is never started twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

# Only pure data modules pass through the sandbox; workflow and policy code is imported
# (and checked for non-determinism) inside it.
with workflow.unsafe.imports_passed_through():
    from models.audit import (
        AuditInput,
        AuditPolicy,
        NotifyInput,
        SweepPodsInput,
        SweepPodsResult,
    )
    from models.constants import (
        audit_workflow_id,
        build_tracking_id,
        leader_workflow_id,
        round_pod_prefix,
    )
    from models.rounds import (
        GENERATING_STAGES,
        BuildTrackingInput,
        LeaderInput,
        ReadRoundSnapshotInput,
        RoundCarry,
        RoundInput,
        RoundPolicy,
        RoundSnapshot,
        RoundStatus,
        WorkflowStatusesInput,
        WorkflowStatusesResult,
    )

from workflows import options
from workflows.failures import failure

STOP_GRACE = timedelta(minutes=15)
"""How long a stage change waits for cancelled audits to delete their pods."""
NO_LEADER = "<none>"
WAIT_UNLISTED_BUILD_PATCH = "wait-unlisted-build"
"""Marker of loops that, with no build tracker, wait for a submitted hotkey's builds.json entry."""
ROUND_END_SWEEP_PATCH = "round-end-sweep"
"""Marker of loops that sweep a round's pods when they leave it (histories before it do not)."""
ROUND_NOTIFY_PATCH = "round-notify"
"""Marker of loops that send upstream's "Generation Orchestrator Error" notice (RoundPolicy.notify:
a child run failed, the repo could not be read, a round's sweep failed)."""
ERROR_RED = 0xE74C3C


@workflow.defn(name="RoundWorkflow")
class RoundWorkflow:
    """The competition loop; see the module docstring."""

    @workflow.init
    def __init__(self, input: RoundInput) -> None:
        carried = input.carried or RoundCarry()
        self._round: int | None = carried.round
        self._started: list[str] = list(carried.started)
        self._running: list[str] = list(carried.running)
        self._finished: list[str] = list(carried.finished)
        self._last_start_at: datetime | None = carried.last_start_at
        self._leader_tried: str | None = carried.leader_tried
        self._builds_started = carried.builds_started
        self._wake = False
        self._watches: list[asyncio.Future[None]] = []  # one per child started by this run
        self._stage: str | None = None
        self._state_round: int | None = None  # state.json's current_round, as last read
        self._phase = "starting"
        self._waiting: list[str] = []
        self._policy: RoundPolicy | None = input.policy

    @workflow.run
    async def run(self, input: RoundInput) -> None:
        """Run rounds forever (ends only when cancelled or terminated)."""
        policy = input.policy or await workflow.execute_activity(
            "load_round_policy", result_type=RoundPolicy, **options.LOAD_POLICY
        )
        self._policy = policy
        while True:
            snapshot = await self._snapshot()
            if snapshot is not None and self._generating(snapshot):
                await self._run_round(snapshot, policy, input)
                continue  # the round ended with a stage change: read the new state at once
            self._phase = "waiting for a generating stage"
            await self._sleep(self._state_wait(snapshot, policy))
            self._maybe_continue_as_new(input, policy)

    @workflow.signal(name="wake")
    def wake(self) -> None:
        """Check the repo now (operators; the build tracker after each change)."""
        self._wake = True

    @workflow.query(name="status")
    def status(self) -> RoundStatus:
        """Round, stage, what runs, what waits for its build, what finished."""
        return RoundStatus(
            round=self._round if self._round is not None else self._state_round,
            stage=self._stage,
            phase=self._phase,
            running=list(self._running),
            waiting=list(self._waiting),
            finished=list(self._finished),
        )

    # --- one round ------------------------------------------------------------------------------

    async def _run_round(
        self, snapshot: RoundSnapshot, policy: RoundPolicy, input: RoundInput
    ) -> None:
        n = snapshot.state.current_round
        if self._round != n:
            self._round = n
            self._started, self._finished, self._running = [], [], []
            self._leader_tried, self._builds_started = None, False
            workflow.logger.info("round %d: generating (stage %s)", n, snapshot.state.stage)
        if policy.track_builds and not self._builds_started:
            await self._start_build_tracking(n, policy)
        current: RoundSnapshot | None = snapshot
        while True:
            if current is not None:
                if current.state.current_round != n or not self._generating(current):
                    reason = f"round stage change to {current.state.stage}"
                    await self._stop_round(n, reason, input)
                    return
                await self._refresh_running()
                await self._start_leader(n, current, policy, input)
                await self._start_audits(n, current, policy, input)
            self._phase = f"{len(self._running)} running, {len(self._waiting)} waiting"
            await self._sleep(timedelta(seconds=policy.check_audit_interval_seconds))
            self._maybe_continue_as_new(input, policy)
            current = await self._snapshot(n)

    async def _start_build_tracking(self, n: int, policy: RoundPolicy) -> None:
        with contextlib.suppress(WorkflowAlreadyStartedError):  # running or done: fine
            await workflow.start_child_workflow(
                "BuildTrackingWorkflow",
                BuildTrackingInput(
                    round=n, policy=policy, round_workflow_id=workflow.info().workflow_id
                ),
                id=build_tracking_id(n),
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                static_summary=f"track round {n} builds",
            )
        self._builds_started = True

    async def _start_leader(
        self, n: int, snapshot: RoundSnapshot, policy: RoundPolicy, input: RoundInput
    ) -> None:
        """Once per leader image (a new leader.json entry reruns it; an empty leader.json
        starts it once, so its failure says why in the Web UI)."""
        image = snapshot.leader_image or NO_LEADER
        if not policy.generate_leader or self._leader_tried == image:
            return
        if not await self._take_slot(policy):
            return
        self._leader_tried = image
        await self._start_child(
            "LeaderGenerationWorkflow",
            LeaderInput(round=n, policy=input.audit_policy),
            leader_workflow_id(n),
            f"leader outputs of round {n}",
        )

    async def _start_audits(
        self, n: int, snapshot: RoundSnapshot, policy: RoundPolicy, input: RoundInput
    ) -> None:
        """One audit per required hotkey without a verdict, once its build is terminal."""
        self._waiting = []
        for hotkey in snapshot.required:
            if hotkey in self._started or hotkey in snapshot.audited:
                continue
            build = snapshot.builds.get(hotkey)
            # A submitted hotkey without a builds.json entry yet gets one soon: from our tracker,
            # or (GITHUB_REPO unset) from whoever writes builds.json; auditing it now would
            # reject it for "no build".
            unlisted = build is None and hotkey in snapshot.submissions
            if unlisted and not policy.track_builds:
                unlisted = workflow.patched(WAIT_UNLISTED_BUILD_PATCH)
            if unlisted or (build is not None and not build.status.terminal):
                self._waiting.append(hotkey)  # a build wait holds no slot (upstream)
                continue
            if not await self._take_slot(policy):
                self._waiting.append(hotkey)
                continue
            self._started.append(hotkey)
            await self._start_child(
                "AuditWorkflow",
                AuditInput(round=n, hotkey=hotkey, policy=input.audit_policy),
                audit_workflow_id(n, hotkey),
                f"audit {hotkey} in round {n}",
            )

    async def _take_slot(self, policy: RoundPolicy) -> bool:
        """Whether one more run may start now; waits out the stagger when it may."""
        if len(self._running) >= policy.max_concurrent_miners:
            return False
        stagger = timedelta(seconds=policy.miner_start_stagger_seconds)
        if self._last_start_at is not None and stagger > timedelta(0):
            due = self._last_start_at + stagger
            if workflow.now() < due:
                await workflow.sleep(due - workflow.now())
        self._last_start_at = workflow.now()
        return True

    async def _start_child(self, workflow_type: str, arg: object, child_id: str, what: str) -> None:
        """Start a child by fixed id (abandoned on our close: it outlives a continue-as-new);
        one already running counts as started, one already finished is left alone."""
        try:
            handle = await workflow.start_child_workflow(
                workflow_type,
                arg,
                id=child_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                static_summary=what,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("%s already exists; counting it if it runs", child_id)
            self._running.append(child_id)
            await self._refresh_running()
            return
        self._running.append(child_id)
        workflow.logger.info("started %s", child_id)
        self._watches.append(asyncio.ensure_future(self._watch(child_id, handle)))

    async def _watch(
        self, child_id: str, handle: workflow.ChildWorkflowHandle[object, object]
    ) -> None:
        """Wake the loop when a child closes (its slot frees at once)."""
        try:
            await handle
        except Exception as e:  # failed, cancelled, terminated: the loop only needs to know
            workflow.logger.warning("%s ended without a result: %s", child_id, e)
            cause = (e.cause if isinstance(e, ChildWorkflowError) else None) or e
            if not isinstance(cause, CancelledError):  # the loop's own cancel is no error
                await self._error_notice(type(cause).__name__, f"{child_id}: {_message(cause)}")
        if child_id in self._running:
            self._running.remove(child_id)
            self._finished.append(child_id)
        self._wake = True

    async def _refresh_running(self) -> None:
        """Keep only the ids the server still reports as running."""
        if not self._running:
            return
        try:
            result: WorkflowStatusesResult = await workflow.execute_activity(
                "workflow_statuses",
                WorkflowStatusesInput(ids=list(self._running)),
                result_type=WorkflowStatusesResult,
                **options.DESCRIBE_WORKFLOWS,
            )
        except ActivityError as e:
            workflow.logger.warning("could not read workflow statuses: %s", failure(e)[0])
            return
        for child_id, status in result.statuses.items():
            if status != "RUNNING" and child_id in self._running:
                self._running.remove(child_id)
                self._finished.append(child_id)

    async def _stop_round(self, n: int, reason: str, input: RoundInput) -> None:
        """Cancel every running audit and the leader run; wait (bounded) until they are gone."""
        workflow.logger.warning("round %d: %s; cancelling %s", n, reason, self._running)
        self._phase = f"stopping ({reason})"
        for child_id in list(self._running):
            with contextlib.suppress(Exception):  # already closed
                await workflow.get_external_workflow_handle(child_id).cancel()
        deadline = workflow.now() + STOP_GRACE
        while self._running and workflow.now() < deadline:
            await self._sleep(timedelta(seconds=5))
            await self._refresh_running()
        # Cancelled runs wrote nothing: if the stage comes back they start again (and resume from
        # generated.json); a hotkey with a verdict is skipped by the snapshot's `audited`.
        self._started, self._waiting, self._leader_tried = [], [], None
        if workflow.patched(ROUND_END_SWEEP_PATCH):
            await self._sweep_round(n, input)

    async def _sweep_round(self, n: int, input: RoundInput) -> None:
        """Upstream ends each iteration deleting every pod of the round on every provider: a
        pod that outlived its run (a kill at the wrong moment) is not paid for any longer."""
        policy = input.audit_policy or await workflow.execute_activity(
            "load_audit_policy", result_type=AuditPolicy, **options.LOAD_POLICY
        )
        try:
            swept: SweepPodsResult = await workflow.execute_activity(
                "sweep_pods",
                SweepPodsInput(
                    prefix=round_pod_prefix(n), providers=sorted(set(policy.gpu_providers))
                ),
                result_type=SweepPodsResult,
                summary=f"delete every pod of round {n}",
                **options.SWEEP_PODS,
            )
        except ActivityError as e:
            workflow.logger.error("round %d: sweeping its pods failed: %s", n, failure(e)[0])
            await self._error_notice("SweepFailed", f"round {n}: {failure(e)[0]}")
            return
        if swept.deleted:
            workflow.logger.warning("round %d: deleted leftover pods %s", n, swept.deleted)

    async def _error_notice(self, kind: str, message: str) -> None:
        """Upstream's notify_cycle_error (``` {type}: {message} ```), sent by the `notify`
        activity; best effort, never fails the loop."""
        policy = self._policy
        if policy is None or not policy.notify or not workflow.patched(ROUND_NOTIFY_PATCH):
            return
        notice = NotifyInput(
            title="Generation Orchestrator Error",
            description=f"```{kind}: {message}```",
            color=ERROR_RED,
        )
        try:
            await workflow.execute_activity(
                "notify", notice, summary=f"notice: {kind}", **options.NOTIFY
            )
        except ActivityError as e:
            workflow.logger.warning("error notice not sent: %s", failure(e)[0])

    # --- reading and waiting --------------------------------------------------------------------

    async def _snapshot(self, n: int | None = None) -> RoundSnapshot | None:
        """state.json and the round's files at the branch head; None when unreadable now."""
        try:
            snapshot: RoundSnapshot = await workflow.execute_activity(
                "read_round_snapshot",
                ReadRoundSnapshotInput(round=n),
                result_type=RoundSnapshot,
                summary="read state.json and the round's files",
                **options.READ_REPO,
            )
        except ActivityError as e:
            workflow.logger.error("could not read the competition repo: %s", failure(e)[0])
            message, kind = failure(e)
            await self._error_notice(kind or "ActivityError", message)
            return None
        self._stage, self._state_round = snapshot.state.stage, snapshot.state.current_round
        return snapshot

    @staticmethod
    def _generating(snapshot: RoundSnapshot) -> bool:
        return snapshot.state.stage in GENERATING_STAGES and bool(snapshot.submissions)

    def _state_wait(self, snapshot: RoundSnapshot | None, policy: RoundPolicy) -> timedelta:
        """Upstream's sleep: until next_stage_eta, clamped; the maximum without an ETA."""
        low = timedelta(seconds=policy.min_check_state_interval_seconds)
        high = timedelta(seconds=policy.max_check_state_interval_seconds)
        eta = snapshot.state.next_stage_eta if snapshot is not None else None
        if eta is None:
            return high
        try:
            due = datetime.fromisoformat(eta.replace("Z", "+00:00"))
        except ValueError:
            workflow.logger.warning("state.json: unreadable next_stage_eta %r", eta)
            return high
        return min(max(due - workflow.now(), low), high)

    async def _sleep(self, duration: timedelta) -> None:
        """A durable wait that a `wake` (or a child closing) cuts short."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._wake, timeout=duration)
        self._wake = False

    def _maybe_continue_as_new(self, input: RoundInput, policy: RoundPolicy) -> None:
        if not workflow.info().is_continue_as_new_suggested():
            return
        workflow.continue_as_new(
            RoundInput(
                policy=policy,
                audit_policy=input.audit_policy,
                carried=RoundCarry(
                    round=self._round,
                    started=self._started,
                    running=self._running,
                    finished=self._finished,
                    last_start_at=self._last_start_at,
                    leader_tried=self._leader_tried,
                    builds_started=self._builds_started,
                ),
            )
        )


def _message(error: BaseException) -> str:
    """The innermost application message of a child's failure (what the Web UI shows first)."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return cause.message if isinstance(cause, ApplicationError) else str(error)
