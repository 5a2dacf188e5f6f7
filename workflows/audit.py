"""AuditWorkflow: audit one miner of one round as upstream c263c11 does (`audit-{round}-{hotkey}`).

    read the round's files (unknown round/hotkey -> non-retryable failure)
    wait for the miner's docker build (builds.json); no runnable image -> "Failed to build..."
    audited set: submitted entries with glb and png; queue = those stems in prompts.txt order,
    seeded from the miner's generated.json (a new run resumes; nothing done is paid for twice)
    start INITIAL_POD_COUNT PodWorkflow children POD_START_DELAY apart; none healthy ->
    "Failed to deploy a docker image"; once one is healthy keep PODS_PER_MINER pods running,
    up to MAX_POD_ATTEMPTS starts in all
    loop: drain the inbox of pod signals, record results in the prompt queue and the pod's
          tracker (workflows/policy: upstream's coordinator and tracker), stop bad pods and
          pods with no work, hand each idle pod its next prompt, commit generated.json at most
          every GENERATED_COMMIT_INTERVAL, continue-as-new when the history grows long
    SPECULATIVE_REEXECUTION (ours, off by default; `speculative-reexecution` marker): a ready pod
          with nothing left to take copies a prompt a slower pod holds (workflows/policy/
          speculation.py); the first result that settles it wins, the other copies are revoked
    stop at all done, or at upstream's mismatch limit (2 x MAX_MISMATCHED_PROMPTS), or when no
    pod can be started any more; stop every pod, sweep leftovers by name prefix, decide the
    verdict (upstream's formula) and write generated.json + pod_stats.json + the miner's
    generation_audits.json entry in one commit.

Signal handlers only append to the inbox; `run` makes every decision, so replay is exact.
Cancelling the audit cancels the pods, sweeps them and writes no verdict.
Audits started before v2 (no `audit-v2` patch marker) run the frozen v1 code in workflows/legacy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

# Only pure data modules pass through the sandbox; workflow and policy code is imported
# (and checked for non-determinism) inside it.
with workflow.unsafe.imports_passed_through():
    from models.audit import (
        Assignment,
        AuditInput,
        AuditPod,
        AuditPolicy,
        AuditProgress,
        AuditResult,
        AuditRun,
        AuditStatus,
        EarlyExit,
        JsonFileWrite,
        NotifyInput,
        Outstanding,
        PodEvent,
        PodFinished,
        PodInput,
        PodPhase,
        PodProgress,
        PodReady,
        PodWaiting,
        PrefetchPromptsInput,
        PrefetchPromptsResult,
        PromptResult,
        PromptResultKind,
        PublishReportInput,
        PublishReportResult,
        QueuedPrompt,
        ReadRoundFilesInput,
        StopPod,
        SweepPodsInput,
        SweepPodsResult,
        WriteFilesInput,
        WriteFilesResult,
    )
    from models.competition import (
        BuildEntry,
        CompetitionPaths,
        GenerationAudit,
        GenerationEntry,
        RoundFiles,
    )
    from models.constants import (
        SEARCH_ATTRIBUTE_AUDIT_STATUS,
        SEARCH_ATTRIBUTE_HOTKEY,
        SEARCH_ATTRIBUTE_ROUND,
        pod_child_id,
        pod_name_prefix,
        rented_pod_name,
        short_pod_id,
        upstream_pod_name,
    )
    from models.errors import ErrorType
    from models.rounds import (
        BuildSettled,
        LeaderResult,
        WorkflowStatusesInput,
        WorkflowStatusesResult,
    )

from workflows import options
from workflows.failures import fail_with_cause, failure
from workflows.legacy.audit_v1 import AuditV1
from workflows.policy import coordinator, notices, pod_tracker, speculation, verdict
from workflows.policy import cost as cost_policy

ROUND_KEY = SearchAttributeKey.for_int(SEARCH_ATTRIBUTE_ROUND)
HOTKEY_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_HOTKEY)
STATUS_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_AUDIT_STATUS)
POD_SHUTDOWN_GRACE = timedelta(minutes=15)
AUDIT_V2_PATCH = "audit-v2"
"""Marker of audits run by this code; histories without it replay the frozen v1 code."""
VANISHED = "pod workflow closed unexpectedly"
SUBMITTED_PNG_PATCH = "compare-submitted-png"
"""Marker of audits whose pods compare with the submitted preview PNG (upstream c263c11)."""
RUN_KEYED_PATCH = "run-keyed-pods"
"""Marker of audits whose pod children and pods carry the run chain's key (a re-run never meets
the previous run's), whose children are watched (one that closed without `pod_finished`, or holds
an assignment past its deadline, is replaced) and which stop a foreign run's pods."""
NOTIFY_PATCH = "ops-notify"
"""Marker of audits that send webhook notices (AuditPolicy.notify; DISCORD_WEBHOOK_URL)."""
REPORT_PATCH = "audit-report"
"""Marker of audits that publish their HTML report after the verdict and link it (memo)."""
GREEN, RED, ORANGE = 0x2ECC71, 0xE74C3C, 0xE67E22
STUCK = "held an assignment past its deadline"
FOREIGN_RUN = "its audit was re-run"


@workflow.defn(name="AuditWorkflow")
class AuditWorkflow:
    """Audit one miner; see the module docstring for the algorithm and protocol."""

    @workflow.init
    def __init__(self, input: AuditInput) -> None:
        carried = input.run.inbox if input.run else input.state.inbox if input.state else []
        self._inbox: list[PodEvent] = list(carried)
        self._run: AuditRun | None = input.run
        self._v1: AuditV1 | None = AuditV1(input, self._inbox) if input.state else None
        self._status = AuditStatus.GENERATING if input.run else AuditStatus.READING
        self._commit: workflow.ActivityHandle[WriteFilesResult] | None = None
        self._prefetch: workflow.ActivityHandle[PrefetchPromptsResult] | None = None
        self._settled: BuildEntry | None = None  # from the build tracker's signal
        self._hotkey = input.hotkey
        self._keyed_memo: bool | None = None
        self._watched: set[int] = set()  # pods whose child handle this run holds
        self._foreign_stopped: set[str] = set()  # pod children of other runs told to stop
        self._next_liveness: datetime | None = None
        self._competition_repo = input.run.policy.competition_repo if input.run else None
        self._policy: AuditPolicy | None = input.run.policy if input.run else None
        self._notices: list[NotifyInput] = []  # sent by `_send_notices` from the loop
        self._report_url: str | None = None
        self._next_progress_notice: datetime | None = None
        self._speculation_memo: bool | None = None

    @workflow.run
    async def run(self, input: AuditInput) -> AuditResult:
        """Audit the miner and return its generation_audits.json entry."""
        if self._v1 is None and self._run is None and not workflow.patched(AUDIT_V2_PATCH):
            self._v1 = AuditV1(input, self._inbox)
        if self._v1 is not None:
            return await self._v1.run(input)
        result = await self._run_v2(input)
        if not isinstance(result, AuditResult):  # never: only the leader run returns otherwise
            raise TypeError("audit run produced no verdict")
        return result

    async def _run_v2(self, input: AuditInput) -> AuditResult | LeaderResult:
        """Prepare (or resume a continued run), generate until over, finish."""
        try:
            if self._run is None:
                workflow.upsert_search_attributes(
                    [ROUND_KEY.value_set(input.round), HOTKEY_KEY.value_set(input.hotkey)]
                )
                policy = input.policy or await workflow.execute_activity(
                    "load_audit_policy", result_type=AuditPolicy, **options.LOAD_POLICY
                )
                early = await self._prepare(input, policy)
                if early is not None:
                    return early
                if not self._all_done():
                    self._set_status(AuditStatus.GENERATING)
                    self._want_pods(self._require_run().policy.initial_pod_count)
                    self._start_prefetch()
            while not self._generation_over():
                self._apply_prefetch()
                await self._start_due_pods()
                await self._dispatch()
                self._commit_progress()
                await self._check_pods()
                if workflow.info().is_continue_as_new_suggested():
                    await self._continue_as_new(input)
                await self._wait_for_events()
                await self._drain_inbox()
                self._progress_notice(final=False)
                await self._send_notices()
                self._show_details()
            return await self._finish()
        except workflow.ContinueAsNewError:
            raise
        except (Exception, asyncio.CancelledError) as e:
            # Cancelled or failed: pods must not outlive the audit; no verdict is written.
            # Not BaseException: GeneratorExit and the SDK's eviction error must pass untouched.
            cancelled = isinstance(e, asyncio.CancelledError)
            self._set_status(AuditStatus.CANCELLED if cancelled else AuditStatus.FAILED)
            if self._run is not None and self._run.pods:
                await self._abandon_pods()
            raise

    async def _prepare(self, input: AuditInput, policy: AuditPolicy) -> AuditResult | None:
        """Read the round, wait for the build, set up the run; a verdict when there is nothing
        to generate with (the build failed)."""
        self._competition_repo = policy.competition_repo
        self._policy = policy
        files = await self._read_round_files(input)
        image = await self._await_build(files, policy)
        if image is None:
            return await self._write_verdict(
                files,
                verdict.rejected_without_generation(input.hotkey, verdict.BUILD_FAILED_REASON),
            )
        self._run = self._initial_run(files, policy, image, input.resume)
        return None

    # --- handlers -------------------------------------------------------------------------------

    @workflow.signal(name="pod_ready")
    def pod_ready(self, message: PodReady) -> None:
        """From PodWorkflow: the pod is healthy and wants work."""
        self._inbox.append(message)

    @workflow.signal(name="pod_result")
    def pod_result(self, message: PromptResult) -> None:
        """From PodWorkflow: one assignment's outcome (and a request for more)."""
        self._inbox.append(message)

    @workflow.signal(name="pod_finished")
    def pod_finished(self, message: PodFinished) -> None:
        """From PodWorkflow: the pod was deleted, and why it ended."""
        self._inbox.append(message)

    @workflow.signal(name="pod_waiting")
    def pod_waiting(self, message: PodWaiting) -> None:
        """From PodWorkflow: it waits for one of our services (or no longer does)."""
        self._inbox.append(message)

    @workflow.signal(name="build_settled")
    def build_settled(self, message: BuildSettled) -> None:
        """From BuildTrackingWorkflow: this miner's build is terminal (wakes the build wait)."""
        if message.hotkey == self._hotkey:
            self._settled = message.build

    @workflow.query(name="progress")
    def progress(self) -> AuditProgress:
        """What an operator wants to see while the audit runs."""
        if self._v1 is not None:
            return self._v1.progress()
        run = self._run
        if run is None:
            return AuditProgress(status=self._status)
        counts = self._mismatch_counts(run)
        return AuditProgress(
            status=self._status,
            total=len(run.prompts),
            done=sum(1 for p in run.prompts.values() if p.done),
            in_flight=sum(len(p.outstanding) for p in run.pods),
            mismatches=counts.non_critical,
            critical_mismatches=counts.critical,
            pods_active=sum(1 for p in run.pods if p.phase is not PodPhase.FINISHED),
            pods_started=run.pods_started,
            waiting_for=self._waiting_for(run),
            median_seconds=notices.median(
                [p.best.generation_time for p in run.prompts.values() if p.done and p.best]
            ),
            pods=[
                PodProgress(
                    index=p.index,
                    pod_name=p.pod_name,
                    phase=p.phase,
                    waiting_for=p.waiting_for,
                    in_flight=len(p.outstanding),
                    processed=p.tracker.processed,
                    successful=p.tracker.successful,
                    failed=p.tracker.hard_failed,
                )
                for p in run.pods
            ],
        )

    # --- reading and the build ------------------------------------------------------------------

    async def _read_round_files(self, input: AuditInput) -> RoundFiles:
        try:
            files: RoundFiles = await workflow.execute_activity(
                "read_round_files",
                ReadRoundFilesInput(
                    round=input.round,
                    hotkey=input.hotkey,
                    competition_repo=self._competition_repo,
                ),
                result_type=RoundFiles,
                summary=f"read round {input.round} files of {input.hotkey}",
                **options.READ_REPO,
            )
        except ActivityError as e:
            fail_with_cause(e)  # an operator's cancel while reading stays a cancellation
        return files

    async def _await_build(self, files: RoundFiles, policy: AuditPolicy) -> str | None:
        """The docker image to audit; None when the build ended without one or timed out."""
        deadline = workflow.now() + timedelta(seconds=policy.build_timeout_seconds)
        while True:
            build = files.build
            if build is None or build.status.terminal:
                # Upstream: no build entry, or a terminal one without an image: no runnable image.
                runnable = build is not None and not build.status.failed
                return build.docker_image if runnable and build is not None else None
            if workflow.now() >= deadline:
                return None
            self._set_status(AuditStatus.WAITING_FOR_BUILD)
            # Woken by the build tracker's signal; polling builds.json is the fallback.
            try:
                await workflow.wait_condition(
                    lambda: self._settled is not None,
                    timeout=timedelta(seconds=policy.check_build_interval_seconds),
                )
            except TimeoutError:
                pass
            if self._settled is not None:
                files = files.model_copy(update={"build": self._settled})
                continue
            files = await self._read_round_files(AuditInput(round=files.round, hotkey=files.hotkey))

    def _initial_run(
        self, files: RoundFiles, policy: AuditPolicy, image: str, resume: bool
    ) -> AuditRun:
        audited = set(self._audited_stems(files))
        prompts: dict[str, QueuedPrompt] = {}
        for prompt in files.prompts:
            if prompt.stem not in audited:
                continue
            queued = QueuedPrompt(
                stem=prompt.stem,
                url=prompt.url,
                submitted_glb_url=submitted.glb
                if (submitted := files.submitted.get(prompt.stem))
                else None,
            )
            if resume:
                coordinator.seed(queued, files.generated.get(prompt.stem), policy)
            prompts[prompt.stem] = queued
        return AuditRun(
            round_files=files,
            policy=policy,
            image=image,
            prompts=prompts,
            run_chain_id=workflow.info().first_execution_run_id,
        )

    def _audited_stems(self, files: RoundFiles) -> list[str]:
        """The stems this run regenerates (an audit: upstream's audited set)."""
        return files.audited_stems()

    # --- prompts --------------------------------------------------------------------------------

    def _start_prefetch(self) -> None:
        """Cache every prompt image while the pods warm up (upstream downloads them first)."""
        run = self._require_run()
        self._prefetch = workflow.start_activity(
            "prefetch_prompts",
            PrefetchPromptsInput(
                round=run.round_files.round,
                urls=[p.url for p in run.prompts.values() if not p.done],
            ),
            result_type=PrefetchPromptsResult,
            summary=f"fetch {len(run.prompts)} prompt images",
            **options.FETCH_PROMPT,
        )

    def _apply_prefetch(self) -> None:
        """Drop the prompts whose image can never be fetched, as upstream does."""
        if self._prefetch is None or not self._prefetch.done():
            return
        run = self._require_run()
        try:
            unavailable = self._prefetch.result().unavailable
        except ActivityError as e:
            # Not fatal: each pod's fetch_prompt still fetches (and judges) its own prompt.
            workflow.logger.warning("prefetching prompts failed: %s", failure(e)[0])
            unavailable = {}
        self._prefetch = None
        for prompt in run.prompts.values():
            if prompt.url in unavailable and not prompt.done and prompt.locked_by is None:
                workflow.logger.warning("dropped %s: %s", prompt.stem, unavailable[prompt.url])
                prompt.done = True

    # --- the loop -------------------------------------------------------------------------------

    async def _wait_for_events(self) -> None:
        """Until a signal arrives, a pod start falls due, or an idle pod's prompt lock expires."""
        run = self._require_run()
        now = workflow.now()
        wakes = []
        if run.starts_wanted and run.next_start_at is not None:
            wakes.append(run.next_start_at)
        loops = run.policy.max_concurrent_prompts_per_pod
        if any(p.phase is PodPhase.READY and len(p.outstanding) < loops for p in run.pods):
            expiry = coordinator.next_lock_expiry(run.prompts.values(), now)
            if expiry is not None:
                wakes.append(expiry)
        if (run.generated_dirty or run.stats_dirty) and run.last_commit_at is not None:
            interval = timedelta(seconds=run.policy.generated_commit_interval_seconds)
            wakes.append(run.last_commit_at + interval)
        if self._next_liveness is not None and any(
            p.phase is not PodPhase.FINISHED for p in run.pods
        ):
            wakes.append(self._next_liveness)
        if self._next_progress_notice is not None and run.policy.notify:
            wakes.append(self._next_progress_notice)
        if self._speculating():
            wake = self._next_speculation_check(run, now)
            if wake is not None:
                wakes.append(wake)
        timeout = max(min(wakes) - now, timedelta(seconds=1)) if wakes else None
        try:
            await workflow.wait_condition(lambda: bool(self._inbox), timeout=timeout)
        except TimeoutError:
            pass

    async def _drain_inbox(self) -> None:
        run = self._require_run()
        while self._inbox:
            event = self._inbox.pop(0)
            if event.audit_run_id != run.run_chain_id:
                # A pod of an earlier audit with this id (failed, re-run): not ours.
                workflow.logger.warning("ignoring %s of another run: %s", event.event, event)
                if isinstance(event, PodReady | PromptResult) and self._keyed():
                    await self._stop_foreign(event)
                continue
            pod = self._pod(event.slot)
            if pod is None:
                continue
            if isinstance(event, PodReady):
                pod.provider = event.provider
                self._on_ready(run, pod)
            elif isinstance(event, PromptResult):
                await self._on_result(run, pod, event)
            elif isinstance(event, PodWaiting):
                self._on_waiting(run, pod, event)
            else:
                self._on_finished(run, pod, event)
        self._show_waiting(run)

    def _on_ready(self, run: AuditRun, pod: AuditPod) -> None:
        if pod.phase is not PodPhase.ACQUIRING:
            return
        pod.phase = PodPhase.READY
        pod.ever_ready = True
        if not run.expanded:
            run.expanded = True
            self._top_up()

    async def _on_result(self, run: AuditRun, pod: AuditPod, event: PromptResult) -> None:
        held = [o for o in pod.outstanding if o.assignment_id == event.assignment_id]
        if not held:
            return  # stale or duplicate: that assignment was already settled
        if event.error_type == ErrorType.SERVICE_UNAVAILABLE:
            # Our outage outlasted SERVICE_OUTAGE_LIMIT: no verdict rather than a wrong one.
            raise ApplicationError(
                f"{event.stem}: {event.error}; our service stayed down past "
                f"SERVICE_OUTAGE_LIMIT, no verdict written (re-run the audit when it is back)",
                type=ErrorType.SERVICE_UNAVAILABLE,
                non_retryable=True,
            )
        pod.outstanding.remove(held[0])
        prompt = run.prompts[held[0].stem]
        if event.error_type == ErrorType.PROMPT_UNAVAILABLE:
            # Upstream drops a prompt whose image cannot be downloaded; no pod is charged.
            coordinator.unlock(prompt)
            prompt.done = True
            await self._revoke_copies(run, prompt.stem)
            return
        run.generations += 1
        pod.productive_seconds += event.generation_time or 0.0
        pod.last_result_at = workflow.now()
        entry = _entry(event)
        previous = prompt.best
        original = (
            previous.generation_time
            if held[0].is_retry and previous is not None and not previous.is_failed()
            else None
        )
        pod_tracker.record(
            pod.tracker,
            success=not entry.is_failed(),
            generation_time=entry.generation_time,
            is_retry=held[0].is_retry,
            original_time=original,
            policy=run.policy,
        )
        # A copy (SPECULATIVE_REEXECUTION) counts only when it settles the prompt on its own.
        counts = not held[0].speculative or speculation.copy_counts(prompt, entry, run.policy)
        if counts and coordinator.record(prompt, entry, run.policy):
            run.generated_dirty = True
        if prompt.done:
            await self._revoke_copies(run, prompt.stem)
        self._check_early_stop(run)
        reason = pod_tracker.termination_reason(pod.tracker, run.policy)
        if reason is not None and pod.phase is PodPhase.READY:
            pod_tracker.mark_bad(pod.tracker, reason)
            workflow.logger.warning("%s is bad: %s", short_pod_id(pod.pod_name), reason)
            self._pod_bad_notice(pod, reason)
            await self._stop_pod(pod, reason)

    def _on_waiting(self, run: AuditRun, pod: AuditPod, event: PodWaiting) -> None:
        if pod.phase is PodPhase.FINISHED:
            return
        if event.waiting:
            workflow.logger.warning("%s waits for our %s", pod.workflow_id, event.service)
            pod.waiting_for = event.service
            return
        pod.waiting_for = None
        now = workflow.now()
        for held in pod.outstanding:  # the busy-slot deadline restarts after our outage
            held.issued_at = now

    def _waiting_for(self, run: AuditRun) -> list[str]:
        live = [p for p in run.pods if p.phase is not PodPhase.FINISHED]
        return sorted({p.waiting_for for p in live if p.waiting_for is not None})

    def _show_waiting(self, run: AuditRun) -> None:
        """The status (and search attribute) says when pods wait for our services."""
        waiting = bool(self._waiting_for(run))
        if waiting and self._status is AuditStatus.GENERATING:
            self._set_status(AuditStatus.WAITING_FOR_SERVICE)
        elif not waiting and self._status is AuditStatus.WAITING_FOR_SERVICE:
            self._set_status(AuditStatus.GENERATING)

    def _on_finished(self, run: AuditRun, pod: AuditPod, event: PodFinished) -> None:
        if pod.phase is PodPhase.FINISHED:
            return
        asked_to_stop = pod.phase is PodPhase.STOPPING
        pod.phase = PodPhase.FINISHED
        pod.waiting_for = None
        for held in pod.outstanding:
            prompt = run.prompts[held.stem]
            if prompt.locked_by == short_pod_id(pod.pod_name):
                coordinator.unlock(prompt)  # its result will never come: free it at once
        pod.outstanding.clear()
        if not pod.ever_ready and not asked_to_stop:  # its deploy or warm-up failed
            hk10 = run.round_files.hotkey[:10]
            self._notice(
                "Pod Deploy Failed", f"`{hk10}` / `{pod.pod_name}` — failed to get healthy pod", RED
            )
        elif event.marked_bad and not asked_to_stop:  # the pod found itself bad (health probe)
            self._pod_bad_notice(pod, event.reason)
        pod.failed_attempts = [
            cost_policy.settle(lost, 0.0, True, run.policy) for lost in event.failed_attempts
        ]
        if event.cost is not None:
            bad = event.marked_bad or pod.tracker.marked_bad or not pod.ever_ready
            pod.cost = cost_policy.settle(event.cost, pod.productive_seconds, bad, run.policy)
            workflow.logger.info(
                "%s on %s: rented %.1fs (warm-up %.1fs, productive %.1fs, wasted %.1fs), "
                "%.1f GPU-s, estimated cost %s USD",
                short_pod_id(pod.pod_name),
                pod.cost.provider,
                pod.cost.rented_seconds,
                pod.cost.warmup_seconds,
                pod.cost.productive_seconds,
                pod.cost.wasted_seconds,
                pod.cost.gpu_seconds,
                pod.cost.estimated_cost_usd,
            )
        if pod.ever_ready:
            if event.marked_bad:
                pod_tracker.mark_bad(pod.tracker, event.reason)
            # Upstream: pod_stats has an entry for every pod that became healthy.
            run.pod_stats[pod.pod_name] = cost_policy.with_cost(
                pod_tracker.to_stats(pod.tracker, pod.pod_name), pod.cost
            )
            run.stats_dirty = True
        if run.expanded:
            self._top_up()

    def _check_early_stop(self, run: AuditRun) -> None:
        if run.early_stop is not None:
            return
        policy = run.policy
        if policy.early_exit is EarlyExit.MISMATCH_LIMIT:
            count = coordinator.mismatch_count(run.prompts.values(), policy)
            if count >= 2 * policy.max_mismatched_prompts:
                run.early_stop = pod_tracker.REASON_MISMATCH_LIMIT
        elif policy.early_exit is EarlyExit.VERDICT_FINAL:
            if verdict.verdict_is_final(self._mismatch_counts(run), policy):
                run.early_stop = pod_tracker.REASON_MISMATCH_LIMIT

    async def _dispatch(self) -> None:
        """Hand each idle pod its next prompt; a pod that can never get one leaves."""
        run = self._require_run()
        now = workflow.now()
        sends = []
        loops = run.policy.max_concurrent_prompts_per_pod
        for pod in run.pods:
            short_id = short_pod_id(pod.pod_name)
            # Up to MAX_CONCURRENT_PROMPTS_PER_POD prompts per pod (upstream's loops): the next
            # one is queued on the pod before the current generation ends.
            while pod.phase is PodPhase.READY and len(pod.outstanding) < loops:
                allow_retry = pod_tracker.accepts_retries(pod.tracker, run.policy)
                prompt, is_retry = coordinator.find(
                    run.prompts, short_id, allow_retry, now, run.policy
                )
                if prompt is None and self._speculating():
                    copied = self._pick_copy(run, pod, allow_retry, now)
                    if copied is not None:
                        sends.append(self._hand_out(pod, copied, copied.attempts > 0, now, True))
                        continue
                if prompt is None:
                    no_work = not coordinator.has_work(
                        run.prompts, short_id, allow_retry, now, run.policy
                    )
                    if no_work and not pod.outstanding:
                        pod.tracker.termination_reason = pod_tracker.REASON_NO_WORK
                        sends.append(self._stop_pod(pod, pod_tracker.REASON_NO_WORK))
                    break  # else idle until a result or a lock expiry changes the queue
                coordinator.lock(prompt, short_id, now, run.policy)
                sends.append(self._hand_out(pod, prompt, is_retry, now, False))
        if sends:
            await asyncio.gather(*sends)

    def _hand_out(
        self, pod: AuditPod, prompt: QueuedPrompt, is_retry: bool, now: datetime, copy: bool
    ) -> Coroutine[Any, Any, None]:
        """Record an assignment of `prompt` to `pod` (a copy: SPECULATIVE_REEXECUTION); the
        returned coroutine signals it."""
        prompt.issued += 1
        held = Outstanding(
            assignment_id=f"{prompt.stem}#{prompt.issued}",
            stem=prompt.stem,
            is_retry=is_retry,
            issued_at=now,
            speculative=copy,
        )
        pod.outstanding.append(held)
        return self._assign(pod, prompt, held)

    # --- speculative re-execution (SPECULATIVE_REEXECUTION; ours, off by default) --------------

    def _speculating(self) -> bool:
        """Whether idle pods copy held prompts (the policy asks and SPECULATION_PATCH is set)."""
        if self._speculation_memo is None:
            policy = self._require_run().policy
            self._speculation_memo = policy.speculative_reexecution and workflow.patched(
                speculation.SPECULATION_PATCH
            )
        return self._speculation_memo

    def _holding(self, pod: AuditPod, now: datetime, mine: bool) -> speculation.Holding:
        """What `pod` holds and how fast it generates (see speculation.seconds_per_prompt)."""
        running_for = None
        issued = [o.issued_at for o in pod.outstanding if o.issued_at is not None]
        if pod.outstanding and not mine and (pod.last_result_at or issued):
            since = pod.last_result_at or min(issued)
            running_for = (now - since).total_seconds()
        return speculation.Holding(
            short_id=short_pod_id(pod.pod_name),
            stems=[o.stem for o in pod.outstanding],
            seconds_per_prompt=speculation.seconds_per_prompt(
                pod.tracker.processed, pod.productive_seconds, running_for
            ),
        )

    def _pick_copy(
        self, run: AuditRun, pod: AuditPod, allow_retry: bool, now: datetime
    ) -> QueuedPrompt | None:
        others = [
            self._holding(p, now, False)
            for p in run.pods
            if p is not pod and p.phase is not PodPhase.FINISHED and p.outstanding
        ]
        if not others:
            return None
        copied = speculation.pick_copy(
            run.prompts, self._holding(pod, now, True), others, allow_retry
        )
        if copied is not None:
            speculation.copy(copied, short_pod_id(pod.pod_name))
            workflow.logger.info("%s copies %s", short_pod_id(pod.pod_name), copied.stem)
        return copied

    def _next_speculation_check(self, run: AuditRun, now: datetime) -> datetime | None:
        """An idle ready pod looks at the held prompts again after one of its own generations
        (a holder that is not answering grows slower in the estimate as time passes)."""
        loops = run.policy.max_concurrent_prompts_per_pod
        holding = any(p.outstanding for p in run.pods if p.phase is not PodPhase.FINISHED)
        waits = [
            speculation.seconds_per_prompt(p.tracker.processed, p.productive_seconds, None)
            for p in run.pods
            if p.phase is PodPhase.READY and len(p.outstanding) < loops
        ]
        known = [w for w in waits if w is not None]
        if not holding or not known:
            return None
        return now + timedelta(seconds=max(1.0, min(known)))

    async def _revoke_copies(self, run: AuditRun, stem: str) -> None:
        """A settled prompt: every other pod still holding it is told to drop it."""
        if not self._speculating():
            return
        revokes = []
        for pod in run.pods:
            for held in [o for o in pod.outstanding if o.stem == stem]:
                pod.outstanding.remove(held)
                revokes.append(self._revoke(pod, held.assignment_id))
        if revokes:
            await asyncio.gather(*revokes)

    async def _revoke(self, pod: AuditPod, assignment_id: str) -> None:
        workflow.logger.info("revoking %s from %s", assignment_id, short_pod_id(pod.pod_name))
        try:
            await workflow.get_external_workflow_handle(pod.workflow_id).signal(
                "revoke", assignment_id
            )
        except Exception as e:  # closed: it holds nothing any more
            workflow.logger.info("pod %s not told to revoke: %s", pod.workflow_id, e)

    async def _assign(self, pod: AuditPod, prompt: QueuedPrompt, held: Outstanding) -> None:
        """Signal the assignment; a pod that is already gone gives it back, unstarted."""
        try:
            await workflow.get_external_workflow_handle(pod.workflow_id).signal(
                "assign",
                Assignment(
                    assignment_id=held.assignment_id,
                    stem=prompt.stem,
                    attempt=prompt.attempts + 1,
                    prompt_url=prompt.url,
                    submitted_glb_url=prompt.submitted_glb_url,
                    submitted_png_url=self._submitted_png(prompt.stem),
                ),
            )
        except Exception as e:  # the child closed without telling us (e.g. terminated)
            workflow.logger.warning("pod %s is gone: %s", pod.workflow_id, e)
            self._pod_vanished(pod)

    def _submitted_png(self, stem: str) -> str | None:
        """The submitted preview URL the pod compares with (upstream: the distance service gets
        the new png and the submitted png). Audits started before this rule have no marker and
        keep comparing with our own render of the submitted GLB."""
        if not workflow.patched(SUBMITTED_PNG_PATCH):
            return None
        entry = self._require_run().round_files.submitted.get(stem)
        return entry.png if entry is not None else None

    def _pod_vanished(self, pod: AuditPod, reason: str = VANISHED) -> None:
        """A pod child closed without pod_finished (or is stuck): treat it as finished, marked
        bad; its work is released and its slot replaced as for any dead pod."""
        run = self._require_run()
        self._inbox.append(
            PodFinished(
                slot=pod.index,
                attempt=0,
                pod_name=pod.pod_name,
                stats=pod_tracker.to_stats(pod.tracker, pod.pod_name),
                marked_bad=True,
                reason=reason,
                audit_run_id=run.run_chain_id,
            )
        )

    # --- watching the pod children (audits with the run-keyed-pods marker) ---------------------

    def _keyed(self) -> bool:
        """Whether this audit keys its pods by run chain and watches them (RUN_KEYED_PATCH)."""
        if self._keyed_memo is None:
            self._keyed_memo = workflow.patched(RUN_KEYED_PATCH)
        return self._keyed_memo

    def _on_child_closed(self, pod: AuditPod, handle: Any) -> None:
        """A watched child ended. A normal end already sent pod_finished; any other (terminated,
        failed, timed out, reset away) is a vanished pod, noticed at once."""
        if handle.cancelled() or handle.exception() is not None:
            if pod.phase is not PodPhase.FINISHED:
                workflow.logger.warning("pod %s closed without finishing", pod.workflow_id)
                self._pod_vanished(pod)

    async def _check_pods(self) -> None:
        """Every POD_LIVENESS_CHECK: a pod holding an assignment past its deadline is stuck
        (replaced, its child cancelled); a pod child this run does not watch (started before a
        continue-as-new) that no longer runs has vanished."""
        if not self._keyed():
            return
        run = self._require_run()
        now = workflow.now()
        policy = run.policy
        if self._next_liveness is None or now < self._next_liveness:
            if self._next_liveness is None:
                self._next_liveness = now + timedelta(seconds=policy.pod_liveness_check_seconds)
            return
        self._next_liveness = now + timedelta(seconds=policy.pod_liveness_check_seconds)
        live = [p for p in run.pods if p.phase is not PodPhase.FINISHED]
        deadline = timedelta(
            seconds=2 * (policy.generation_timeout_seconds + policy.download_timeout_seconds)
            + policy.assignment_overhead_seconds
        )
        unwatched = []
        for pod in live:
            issued = [o.issued_at for o in pod.outstanding if o.issued_at is not None]
            if issued and pod.waiting_for is None and now - min(issued) > deadline:
                workflow.logger.warning("%s is stuck: no result in %s", pod.workflow_id, deadline)
                self._pod_vanished(pod, STUCK)
                await self._cancel_child(pod.workflow_id)
            elif pod.index not in self._watched:
                unwatched.append(pod)
        if not unwatched:
            return
        try:
            statuses = await workflow.execute_activity(
                "workflow_statuses",
                WorkflowStatusesInput(ids=[p.workflow_id for p in unwatched]),
                result_type=WorkflowStatusesResult,
                summary="are the pod children still running?",
                **options.DESCRIBE_WORKFLOWS,
            )
        except ActivityError as e:  # checked again next time
            workflow.logger.warning("could not check the pod children: %s", failure(e)[0])
            return
        for pod in unwatched:
            if statuses.statuses.get(pod.workflow_id) != "RUNNING":
                self._pod_vanished(pod)

    async def _stop_foreign(self, event: PodReady | PromptResult) -> None:
        """A pod of another run of this audit id (it was re-run) reached us: stop it, once, so it
        deletes its pod instead of waiting for work that never comes."""
        sender = event.pod_workflow_id or pod_child_id(workflow.info().workflow_id, event.slot)
        if sender in self._foreign_stopped:
            return
        self._foreign_stopped.add(sender)
        await self._signal_stop(sender, FOREIGN_RUN)

    async def _signal_stop(self, workflow_id: str, reason: str) -> bool:
        """Tell a pod child to finish and delete its pod; False if it is already gone."""
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(
                "stop", StopPod(reason=reason)
            )
        except Exception as e:  # the child closed without telling us
            workflow.logger.warning("pod %s is gone: %s", workflow_id, e)
            return False
        return True

    async def _cancel_child(self, workflow_id: str) -> None:
        try:
            await workflow.get_external_workflow_handle(workflow_id).cancel()
        except Exception as e:  # already closed
            workflow.logger.info("pod %s not cancelled: %s", workflow_id, e)

    def _all_done(self) -> bool:
        run = self._require_run()
        return coordinator.all_done(run.prompts, workflow.now(), run.policy)

    def _generation_over(self) -> bool:
        run = self._require_run()
        if run.early_stop is not None or self._all_done():
            return True
        live = [p for p in run.pods if p.phase is not PodPhase.FINISHED]
        return not live and (run.starts_wanted == 0 or not self._may_start_pod())

    # --- pods -----------------------------------------------------------------------------------

    def _may_start_pod(self) -> bool:
        run = self._require_run()
        return (
            run.pods_started < run.policy.max_pod_attempts
            and run.early_stop is None
            and not self._all_done()
        )

    def _want_pods(self, count: int) -> None:
        """Schedule `count` more pod starts, POD_START_DELAY apart (the first one now)."""
        run = self._require_run()
        if count <= 0:
            return
        if run.starts_wanted == 0:
            run.next_start_at = workflow.now()
        run.starts_wanted += count

    def _top_up(self) -> None:
        """Keep PODS_PER_MINER pods live (started or scheduled), within MAX_POD_ATTEMPTS."""
        run = self._require_run()
        live = sum(1 for p in run.pods if p.phase is not PodPhase.FINISHED)
        self._want_pods(run.policy.pods_per_miner - live - run.starts_wanted)

    async def _start_due_pods(self) -> None:
        run = self._require_run()
        while run.starts_wanted and run.next_start_at is not None:
            if not self._may_start_pod():
                run.starts_wanted = 0
                return
            if workflow.now() < run.next_start_at:
                return
            run.starts_wanted -= 1
            run.next_start_at = workflow.now() + timedelta(
                seconds=run.policy.pod_start_delay_seconds
            )
            await self._start_pod()

    async def _start_pod(self) -> None:
        run = self._require_run()
        info = workflow.info()
        files = run.round_files
        index = run.pods_started
        run.pods_started += 1
        keyed = self._keyed()
        pod = AuditPod(
            index=index,
            pod_name=upstream_pod_name(files.round, files.hotkey, index),
            workflow_id=pod_child_id(info.workflow_id, index, run.run_chain_id if keyed else None),
        )
        rented = (
            rented_pod_name(files.round, files.hotkey, index, run.run_chain_id)
            if keyed
            else pod.pod_name
        )
        run.pods.append(pod)
        try:
            handle = await self._start_pod_child(pod, rented)
        except WorkflowAlreadyStartedError:
            if not keyed:
                raise
            # Only a reset of this audit (same run chain) gets here: that child is not ours to
            # command any more. Stop it; this start counts as a pod that never became healthy.
            workflow.logger.warning("%s already runs (audit reset?); stopping it", pod.workflow_id)
            await self._signal_stop(pod.workflow_id, FOREIGN_RUN)
            pod.phase = PodPhase.FINISHED
            if run.expanded:
                self._top_up()
            return
        if keyed:
            self._watched.add(index)
            handle.add_done_callback(lambda h: self._on_child_closed(pod, h))

    async def _start_pod_child(self, pod: AuditPod, rented: str) -> Any:
        run = self._require_run()
        info = workflow.info()
        files = run.round_files
        providers = run.policy.gpu_providers
        index = pod.index
        return await workflow.start_child_workflow(
            "PodWorkflow",
            PodInput(
                audit_workflow_id=info.workflow_id,
                audit_run_id=run.run_chain_id,
                round=files.round,
                hotkey=files.hotkey,
                slot=index,
                attempt=0,
                pod_name=rented,
                provider=providers[index % len(providers)],
                image=run.image,
                seed=files.seed,
                policy=run.policy,
                protocol=2,
            ),
            id=pod.workflow_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"pod {rented}",
        )

    async def _stop_pod(self, pod: AuditPod, reason: str) -> None:
        if pod.phase in (PodPhase.STOPPING, PodPhase.FINISHED):
            return
        pod.phase = PodPhase.STOPPING
        if not await self._signal_stop(pod.workflow_id, reason):
            self._pod_vanished(pod)

    async def _stop_all_pods(self, reason: str) -> None:
        """Ask every live pod to finish; wait (bounded) until each reports it is gone.

        Results that arrive meanwhile still count, as upstream's in-flight generations do.
        """
        run = self._require_run()
        stops = []
        for pod in run.pods:
            untold = pod.tracker.termination_reason == pod_tracker.REASON_STOPPED
            if pod.phase is PodPhase.READY and not pod.tracker.marked_bad and untold:
                pod.tracker.termination_reason = reason
            stops.append(self._stop_pod(pod, reason))
        if stops:
            await asyncio.gather(*stops)
        try:
            while any(p.phase is not PodPhase.FINISHED for p in run.pods):
                await workflow.wait_condition(lambda: bool(self._inbox), timeout=POD_SHUTDOWN_GRACE)
                await self._drain_inbox()
        except TimeoutError:
            workflow.logger.warning("pods did not finish in %s; sweeping them", POD_SHUTDOWN_GRACE)
            await self._abandon_pods()

    async def _sweep(self) -> list[str]:
        run = self._require_run()
        files = run.round_files
        result = await workflow.execute_activity(
            "sweep_pods",
            SweepPodsInput(
                prefix=pod_name_prefix(files.round, files.hotkey),
                providers=sorted(set(run.policy.gpu_providers)),
            ),
            result_type=SweepPodsResult,
            summary="delete every pod of this audit",
            **options.SWEEP_PODS,
        )
        return list(result.deleted)

    async def _abandon_pods(self) -> None:
        """Cancel every pod child still running, then sweep pods by prefix."""
        run = self._require_run()
        for pod in run.pods:
            if pod.phase is not PodPhase.FINISHED:
                await self._cancel_child(pod.workflow_id)
                if pod.ever_ready and pod.pod_name not in run.pod_stats:
                    # Upstream: every pod that became healthy has a pod_stats entry.
                    run.pod_stats[pod.pod_name] = pod_tracker.to_stats(pod.tracker, pod.pod_name)
                    run.stats_dirty = True
        await self._sweep()

    async def _continue_as_new(self, input: AuditInput) -> None:
        run = self._require_run()
        await self._settle_commit()
        if self._prefetch is not None:
            await workflow.wait([self._prefetch])
            self._apply_prefetch()
        await workflow.wait_condition(workflow.all_handlers_finished)
        run.inbox = list(self._inbox)
        workflow.continue_as_new(self._next_input(input, run))

    def _next_input(self, input: AuditInput, run: AuditRun) -> object:
        """The input of the next run of this workflow (continue-as-new)."""
        return AuditInput(round=input.round, hotkey=input.hotkey, run=run)

    # --- results and the verdict ----------------------------------------------------------------

    async def _finish(self) -> AuditResult | LeaderResult:
        """Stop the pods, sweep, decide and write everything in one commit."""
        run = self._require_run()
        if run.early_stop is not None:
            reason = run.early_stop
        elif self._all_done():
            reason = pod_tracker.REASON_NO_WORK
        else:
            reason = pod_tracker.REASON_STOPPED
        await self._stop_all_pods(reason)
        await self._settle_commit()
        if run.pods:
            try:
                await self._sweep()
            except ActivityError as e:
                # Only a safety net (each pod deleted its own): the verdict is still written.
                workflow.logger.error("final sweep failed: %s", failure(e)[0])
        files = run.round_files
        if run.pods and not any(p.ever_ready for p in run.pods):
            audit = verdict.rejected_without_generation(files.hotkey, verdict.DEPLOY_FAILED_REASON)
            self._notice(
                f"Round {files.round} Pod Warmup Failed",
                f"All initial pods failed warmup for `{files.hotkey[:10]}`",
                RED,
            )
            await self._send_notices()
            return await self._notify_result(await self._write_verdict(files, audit))
        best = {s: p.best for s, p in run.prompts.items() if p.best is not None}
        audit = verdict.decide(
            files.hotkey, files.audited_stems(), best, files.critical_prompts, run.policy
        )
        self._progress_notice(final=True)
        result = await self._write_verdict(files, audit, progress=self._progress_files(run))
        return await self._notify_result(result)

    # --- notices (AuditPolicy.notify: DISCORD_WEBHOOK_URL; upstream's Discord notices) ---------

    def _notice(self, title: str, description: str, color: int) -> None:
        run = self._run
        if run is not None and run.policy.notify:
            self._notices.append(NotifyInput(title=title, description=description, color=color))

    def _pod_bad_notice(self, pod: AuditPod, reason: str) -> None:
        """Upstream's notify_pod_bad: `` `pod_id` on {provider}: {reason}``."""
        provider = pod.provider.value if pod.provider is not None else "unknown provider"
        self._notice("Pod Marked Bad", f"`{pod.pod_name}` on {provider}: {reason}", ORANGE)

    def _progress_notice(self, *, final: bool) -> None:
        """Upstream's progress notice: every DISCORD_PROGRESS_INTERVAL, and at the end."""
        run = self._run
        if run is None or not run.policy.notify:
            return
        now = workflow.now()
        interval = timedelta(seconds=run.policy.progress_notice_seconds)
        if self._next_progress_notice is None:
            self._next_progress_notice = now + interval
        if not final and now < self._next_progress_notice:
            return
        self._next_progress_notice = now + interval
        body = notices.progress_body(
            [q.best for q in run.prompts.values() if q.best is not None],
            len(run.prompts),
            run.policy,
        )
        title = f"Round {run.round_files.round} Generation — `{run.round_files.hotkey[:10]}`"
        self._notice(title, f"```\n{body}\n```", GREEN)

    async def _notify_result(self, result: AuditResult) -> AuditResult:
        audit = result.audit
        hk10 = audit.hotkey[:10]
        if audit.outcome.value == "passed":
            median = f"{audit.generation_time:.1f}s" if audit.generation_time is not None else "N/A"
            description = (
                f"Miner `{hk10}` passed — {audit.checked_prompts} prompts, median {median}"
            )
            self._notice("Miner Audit Result", description, GREEN)
        else:
            self._notice("Miner Audit Result", f"Miner `{hk10}` rejected — {audit.reason}", RED)
        await self._send_notices()
        return result

    async def _send_notices(self) -> None:
        """Send the queued notices, each as a `notify` activity (a replay never resends);
        a notice that cannot be sent is logged, never fails the audit."""
        if not self._notices or not workflow.patched(NOTIFY_PATCH):
            self._notices.clear()
            return
        notices, self._notices = self._notices, []
        for notice in notices:
            try:
                await workflow.execute_activity(
                    "notify", notice, summary=f"notice: {notice.title}", **options.NOTIFY
                )
            except ActivityError as e:
                workflow.logger.warning("notice %r not sent: %s", notice.title, failure(e)[0])

    def _progress_files(self, run: AuditRun) -> list[JsonFileWrite]:
        """generated.json (upstream's entry shape, prompts.txt order) and pod_stats.json."""
        files = run.round_files
        generated = {
            stem: _upstream_entry(prompt.best)
            for stem, prompt in run.prompts.items()
            if prompt.best is not None
        }
        writes = [
            JsonFileWrite(
                path=CompetitionPaths.generated(files.round, files.hotkey), value=generated
            )
        ]
        if run.pod_stats:
            stats = {name: s.model_dump(mode="json") for name, s in run.pod_stats.items()}
            writes.append(
                JsonFileWrite(
                    path=CompetitionPaths.pod_stats(files.round, files.hotkey), value=stats
                )
            )
        return writes

    def _commit_progress(self) -> None:
        """Commit generated.json / pod_stats.json as results arrive, batched like upstream's git
        batcher (the first change at once, then at most every GENERATED_COMMIT_INTERVAL).

        The commit runs beside the loop (a slow or retried push never holds up assignments);
        one at a time, and the final write waits for it, so files only move forward.
        """
        run = self._require_run()
        if self._commit is not None:
            if not self._commit.done():
                return
            try:
                self._commit.result()
            except ActivityError as e:
                workflow.logger.warning("progress commit failed, will retry: %s", failure(e)[0])
                run.generated_dirty = run.stats_dirty = True
            self._commit = None
        if not (run.generated_dirty or run.stats_dirty):
            return
        now = workflow.now()
        interval = timedelta(seconds=run.policy.generated_commit_interval_seconds)
        if run.last_commit_at is not None and now - run.last_commit_at < interval:
            return
        files = run.round_files
        self._commit = workflow.start_activity(
            "write_files",
            WriteFilesInput(
                message=commit_message(files, generated=True, stats=bool(run.pod_stats)),
                files=self._progress_files(run),
                competition_repo=self._competition_repo,
            ),
            result_type=WriteFilesResult,
            summary="commit results so far",
            **options.WRITE_REPO,
        )
        run.generated_dirty = run.stats_dirty = False
        run.last_commit_at = now

    async def _settle_commit(self) -> None:
        """Wait for a progress commit in flight (before the final write or continue-as-new)."""
        if self._commit is None:
            return
        try:
            await self._commit
        except ActivityError as e:
            workflow.logger.warning("progress commit failed: %s", failure(e)[0])
            self._require_run().generated_dirty = True
        self._commit = None

    def _mismatch_counts(self, run: AuditRun) -> verdict.MismatchCounts:
        """Mismatches among the settled prompts (the progress query, EARLY_EXIT=verdict_final)."""
        settled = [p.stem for p in run.prompts.values() if p.done]
        best = {s: p.best for s, p in run.prompts.items() if p.best is not None}
        return verdict.count_mismatches(settled, best, run.round_files.critical_prompts, run.policy)

    async def _write_verdict(
        self, files: RoundFiles, audit: GenerationAudit, progress: Sequence[JsonFileWrite] = ()
    ) -> AuditResult:
        self._set_status(AuditStatus.WRITING)
        writes = [
            *progress,
            JsonFileWrite(
                path=CompetitionPaths.generation_audits(files.round),
                value=audit.model_dump(mode="json"),
                merge_key=files.hotkey,
            ),
        ]
        written = await workflow.execute_activity(
            "write_files",
            WriteFilesInput(
                message=commit_message(
                    files,
                    generated=any(w.path.endswith("/generated.json") for w in progress),
                    stats=any(w.path.endswith("/pod_stats.json") for w in progress),
                    audits=True,
                ),
                files=writes,
                competition_repo=self._competition_repo,
            ),
            result_type=WriteFilesResult,
            summary="write the verdict",
            **options.WRITE_REPO,
        )
        self._set_status(AuditStatus(audit.outcome.value))
        report_url = await self._publish_report(files)
        await workflow.wait_condition(workflow.all_handlers_finished)
        run = self._run
        cost = cost_policy.total(cost_policy.of_pods(run.pods)) if run else None
        if cost is not None:
            workflow.logger.info(
                "audit cost: %d pods rented %.1fs (%.1f GPU-s; warm-up %.1fs, productive "
                "%.1fs, wasted %.1fs), estimated cost %s USD",
                cost.pods,
                cost.rented_seconds,
                cost.gpu_seconds,
                cost.warmup_seconds,
                cost.productive_seconds,
                cost.wasted_seconds,
                cost.estimated_cost_usd,
            )
        return AuditResult(
            audit=audit,
            commit=written.commit,
            generations=run.generations if run else 0,
            pods_started=run.pods_started if run else 0,
            early_exit=run.early_stop is not None if run else False,
            report_url=report_url,
            cost=cost,
        )

    async def _publish_report(self, files: RoundFiles) -> str | None:
        """Publish the HTML report and link it from the memo and the current details; a report
        that cannot be made is logged, never fails the audit."""
        if self._policy is None or not workflow.patched(REPORT_PATCH):
            return None
        try:
            report: PublishReportResult = await workflow.execute_activity(
                "publish_report",
                PublishReportInput(
                    round=files.round,
                    hotkey=files.hotkey,
                    policy=self._policy,
                    competition_repo=self._competition_repo,
                    pods_by_stem={
                        stem: list(prompt.attempted_by)
                        for stem, prompt in (self._run.prompts.items() if self._run else [])
                        if prompt.attempted_by
                    },
                ),
                result_type=PublishReportResult,
                summary="publish the HTML report",
                **options.PUBLISH_REPORT,
            )
        except ActivityError as e:
            workflow.logger.warning("no report published: %s", failure(e)[0])
            return None
        workflow.upsert_memo({"report": report.url})
        self._report_url = report.url
        self._show_details()
        return report.url

    # --- helpers --------------------------------------------------------------------------------

    def _require_run(self) -> AuditRun:
        if self._run is None:
            raise ApplicationError(
                "audit state used before the build was known", non_retryable=True
            )
        return self._run

    def _pod(self, index: int) -> AuditPod | None:
        for pod in self._require_run().pods:
            if pod.index == index:
                return pod
        return None

    def _set_status(self, status: AuditStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([STATUS_KEY.value_set(status.value)])
        self._show_details()

    def _show_details(self) -> None:
        """The Web UI's "current details" of the audit: status and progress (query-side
        metadata, not a command: replay-safe)."""
        p = self.progress()
        line = f"**{p.status.value}**"
        if p.total:
            line += (
                f" — {p.done}/{p.total} prompts done, {p.mismatches} mismatches "
                f"({p.critical_mismatches} critical), pods {p.pods_active} active"
            )
        if self._report_url is not None:
            line += f"\n\n[audit report]({self._report_url})"
        workflow.set_current_details(line)


def _entry(result: PromptResult) -> GenerationEntry:
    """The generated.json entry one pod result stands for (upstream's GenerationResult)."""
    if result.outcome is PromptResultKind.GENERATED:
        distance = result.distance
        return GenerationEntry(
            glb=result.glb_uri,
            png=result.png_uri,
            generation_time=result.generation_time or 0.0,
            size=result.size or 0,
            distance=coordinator.UNMEASURABLE_DISTANCE if distance is None else distance,
        )
    if result.glb_uri is not None:
        # Render failed: upstream keeps the GLB URL, time and size; png null makes it failed.
        return GenerationEntry(
            glb=result.glb_uri,
            generation_time=result.generation_time or 0.0,
            size=result.size or 0,
            distance=0.0,
        )
    return GenerationEntry(size=0, distance=0.0)


def _upstream_entry(entry: GenerationEntry) -> dict[str, object]:
    """Exactly upstream's fields and types, so its readers load our files."""
    return {
        "glb": entry.glb,
        "png": entry.png,
        "generation_time": entry.generation_time,
        "size": entry.size or 0,
        "attempts": entry.attempts,
        "distance": coordinator.distance_of(entry),
    }


def commit_message(
    files: RoundFiles, generated: bool = False, stats: bool = False, audits: bool = False
) -> str:
    """Upstream's messages for the files of one commit, sorted and joined as its batcher does."""
    hk10 = files.hotkey[:10]
    messages = []
    if generated:
        messages.append(f"Update generated for round {files.round}, miner {hk10}")
    if stats:
        messages.append(f"Update pod stats for round {files.round}, miner {hk10}")
    if audits:
        messages.append(f"Update generation audits for round {files.round}")
    return "\n".join(sorted(messages))
