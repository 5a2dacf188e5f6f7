"""PodWorkflow: one pod start of an audit - acquire a healthy pod, generate what it is given, go.

Id `audit-{round}-{hotkey}-pod-{i}`, pod name `miner-{round:02d}-{hotkey[:10]}-{i}` (upstream's),
started by AuditWorkflow with ParentClosePolicy.ABANDON; it talks to the parent only by signals
addressed to the parent's workflow id (no run id). v2 (`protocol` 2):

    acquire, as upstream's get_healthy_pod (up to POD_ACQUISITION_MAX_ATTEMPTS attempts,
    attempt a on GPU_PROVIDERS[(i + a) % n]): deploy_pod -> await_pod_healthy (listed with a URL
    within POD_VISIBILITY_TIMEOUT, then /health 200 within POD_WARMUP_TIMEOUT, polled every
    CHECK_POD_INTERVAL). Not deployed or not visible: delete, wait
    POD_ACQUISITION_RETRY_INTERVAL (a durable timer), next attempt. Warm-up timed out or the pod
    died: delete and give up (upstream: no retry).
    signal pod_ready
    loop: wait for an `assign` (or `stop`)
          fetch prompt -> generate -> render -> fetch + render the submitted GLB -> score
          signal pod_result; a failure the pod may have caused -> probe /health
    finally: delete_pod, signal pod_finished (with the rental times, `pod-cost` patch)

Every decision about the pod's health, retries and the queue is the parent's (it holds the
upstream trackers); this workflow only does the work and reports what happened. An assignment id
seen before is dropped, so a re-sent signal never generates twice. With SPECULATIVE_REEXECUTION
the parent may `revoke` an assignment another pod's copy settled: dropped if not yet sent to the
miner, its result discarded otherwise (see `revoke`). Pods of v1 audits
(`protocol` 1) run the frozen v1 code (workflows/legacy/pod_v1.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import CancelledError as TemporalCancelledError
from temporalio.workflow import ActivityCancellationType

# Only pure data modules pass through the sandbox; workflow and policy code is imported
# (and checked for non-determinism) inside it.
with workflow.unsafe.imports_passed_through():
    from models.audit import (
        ArtifactResult,
        Assignment,
        AwaitPodHealthyInput,
        DeletePodInput,
        DeployPodInput,
        FetchArtifactInput,
        FetchPromptInput,
        GenerateInput,
        GenerateResult,
        PodCarry,
        PodCost,
        PodFinished,
        PodHealthInput,
        PodInput,
        PodReady,
        PodRef,
        PodWaiting,
        PodWorkflowResult,
        PromptResult,
        PromptResultKind,
        ProviderName,
        RenderPreviewInput,
        ScoreDistanceInput,
        ScoreDistanceResult,
        StopPod,
    )
    from models.competition import PodStats
    from models.errors import ErrorType

from workflows import options
from workflows.failures import failure, raise_if_cancelled
from workflows.legacy.pod_v1 import PodV1
from workflows.policy import cost as cost_policy

_T = TypeVar("_T")
SEEN_ASSIGNMENTS_KEPT = 1000
HEALTH_LOST = "stopped answering /health"
AUDIT_GONE = "audit is gone"
WATCHDOG_PATCH = "pod-watchdog"
"""Marker of pods that check their audit exists busy or idle (after POD_IDLE_CHECK of silence)
and leave at once, cancelling the work in flight, when it is gone. Before it: idle pods only.
The same marker makes a pod tell its audit when it waits for one of our services."""
MINER_CAUSED = frozenset(
    {ErrorType.RENDER_FAILED, ErrorType.SUBMISSION_UNAVAILABLE, ErrorType.PROMPT_UNAVAILABLE}
)
"""Failures of our render/score/store/prompt calls that the submission itself caused (its GLB
or preview unreadable, its file gone, the prompt image gone); anything else is ours."""


class _OurOutage(Exception):
    """A call to one of our services failed past SERVICE_OUTAGE_LIMIT: not the miner's doing."""


_CONTINUE = "continue-as-new"
_POD_MAY_BE_DOWN = (ErrorType.MINER_FAILED, ErrorType.MINER_TIMEOUT)
"""Generate failures the pod itself may have caused: /health is probed before the next request."""


@workflow.defn(name="PodWorkflow")
class PodWorkflow:
    """One pod start of an audit. See the module docstring for the protocol."""

    @workflow.init
    def __init__(self, input: PodInput) -> None:
        self._v1 = PodV1(input) if input.protocol < 2 else None
        carried = input.carried
        self._pending: list[Assignment] = list(carried.pending) if carried else []
        self._stop: StopPod | None = carried.stop if carried else None
        self._seen: list[str] = list(carried.seen_assignments) if carried else []
        self._pod: PodRef | None = carried.pod if carried else None
        self._processed = carried.stats.processed if carried else 0
        self._end: str | None = None  # why the loops stopped taking work (besides `stop`)
        self._gpu = asyncio.Lock()  # one generation at a time on the pod's GPU
        self._gpu_free: list[str] = []  # assignments whose response headers arrived
        self._last_heard = workflow.now()  # last signal the audit accepted
        self._watched = False  # WATCHDOG_PATCH: decided when serving starts
        self._cancelling = False  # the loops are being cancelled (see _tell_parent)
        # Rentals of failed acquisition attempts (state only: reported with the pod-cost patch).
        self._failed_rentals: list[PodCost] = list(carried.failed_attempts) if carried else []
        # SPECULATIVE_REEXECUTION: assignments the audit took back (another pod's copy settled
        # them). Only ever filled by `revoke` signals, which audits without it never send.
        self._speculative = input.policy.speculative_reexecution
        self._revoked: list[str] = []

    @workflow.run
    async def run(self, input: PodInput) -> PodWorkflowResult:
        """Acquire a pod, serve assignments until stopped, always delete the pod."""
        if self._v1 is not None:
            return await self._v1.run(input)
        reason = "stopped"
        marked_bad = False
        continue_as_new = False
        evicted = False
        try:
            if self._pod is None:
                problem = await self._acquire(input)
                if problem is not None:
                    # Stopped while acquiring is not a bad pod; failing to get one is.
                    reason, marked_bad = problem, self._stop is None
                    return self._result(input, reason, marked_bad)
                await self._tell_parent(input, self._ready(input))
            await self._serve(input)
            continue_as_new = self._end == _CONTINUE
            if self._end == HEALTH_LOST:
                reason, marked_bad = HEALTH_LOST, True
            elif self._end is not None and not continue_as_new:
                reason = self._end
            elif self._stop is not None:
                reason = self._stop.reason
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException:
            # GeneratorExit / the SDK's eviction: this run is being collected off its event loop
            # (a stopped worker); cleaning up here would issue commands nowhere.
            evicted = True
            raise
        finally:
            if not continue_as_new and not evicted:
                rented = self._pod
                if rented is not None:  # None: never rented, or deleted while acquiring
                    reason += await self._delete(input)
                cost = None
                failed: list[PodCost] = []
                if workflow.patched(cost_policy.COST_PATCH):
                    failed = self._failed_rentals
                    if rented is not None:
                        cost = cost_policy.rental(rented, workflow.now(), input.policy)
                await self._tell_parent(
                    input,
                    PodFinished(
                        slot=input.slot,
                        attempt=input.attempt,
                        pod_name=input.pod_name,
                        stats=PodStats(pod_id=input.pod_name, termination_reason=reason),
                        marked_bad=marked_bad,
                        deployed=self._pod is not None,
                        reason=reason,
                        audit_run_id=input.audit_run_id,
                        pod_workflow_id=workflow.info().workflow_id,
                        cost=cost,
                        failed_attempts=failed,
                    ),
                )
        if continue_as_new:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(input.model_copy(update={"carried": self._carry(input)}))
        return self._result(input, reason, marked_bad)

    @workflow.signal(name="assign")
    def assign(self, assignment: Assignment) -> None:
        """From AuditWorkflow: generate this prompt (duplicates by assignment id are dropped)."""
        if self._v1 is not None:
            self._v1.assign(assignment)
            return
        if assignment.assignment_id in self._seen:
            return
        self._seen.append(assignment.assignment_id)
        del self._seen[:-SEEN_ASSIGNMENTS_KEPT]
        if assignment.assignment_id not in self._revoked:
            self._pending.append(assignment)

    @workflow.signal(name="revoke")
    def revoke(self, assignment_id: str) -> None:
        """From AuditWorkflow (SPECULATIVE_REEXECUTION): another pod's copy settled this prompt.

        Not sent to the miner yet: dropped. Generating: the miner cannot abort, so the request
        keeps the GPU slot until it answers (the next request must not be timed behind it) and
        its result is dropped; once the pod stops taking work it is cancelled at once.
        Rendering or scoring: finished, and not reported.
        """
        if self._v1 is not None or not self._speculative or assignment_id in self._revoked:
            return
        self._revoked.append(assignment_id)
        del self._revoked[:-SEEN_ASSIGNMENTS_KEPT]
        self._pending = [a for a in self._pending if a.assignment_id != assignment_id]

    @workflow.signal(name="gpu_free")
    def gpu_free(self, assignment_id: str) -> None:
        """From the `generate` activity: the response headers arrived; the GPU slot is free."""
        if self._v1 is None and assignment_id not in self._gpu_free:
            self._gpu_free.append(assignment_id)
            del self._gpu_free[:-SEEN_ASSIGNMENTS_KEPT]  # late ones (activity already done)

    @workflow.signal(name="stop")
    def stop(self, stop: StopPod) -> None:
        """From AuditWorkflow: finish the current prompt, delete the pod, end."""
        if self._v1 is not None:
            self._v1.stop(stop)
            return
        self._stop = stop

    @workflow.query(name="stats")
    def stats(self) -> PodStats:
        """v1: this pod's counters; v2: prompts processed (the parent keeps the trackers)."""
        if self._v1 is not None:
            return self._v1.stats()
        return PodStats(pod_id=workflow.info().workflow_id, processed=self._processed)

    # --- acquisition ----------------------------------------------------------------------------

    async def _acquire(self, input: PodInput) -> str | None:
        """Get a healthy pod as upstream does; None when healthy, else why not."""
        policy = input.policy
        providers = policy.gpu_providers
        retry = timedelta(seconds=policy.pod_acquisition_retry_interval_seconds)
        problem = "no acquisition attempt"
        for attempt in range(policy.pod_acquisition_max_attempts):
            if self._stop is not None:
                return "stopped before the pod was healthy"
            provider = providers[(input.slot + attempt) % len(providers)]
            outcome = await self._attempt(input, provider)
            if outcome is None:
                return None
            problem, give_up = outcome
            if give_up:
                return problem  # the pod is deleted on the way out
            await self._delete(input)
            if self._pod is not None and (
                lost := cost_policy.rental(self._pod, workflow.now(), policy)
            ):
                self._failed_rentals.append(lost)
            self._pod = None
            workflow.logger.warning(
                "%s: attempt %d failed (%s); retrying in %s",
                input.pod_name,
                attempt + 1,
                problem,
                retry,
            )
            if retry > timedelta(0):  # (a zero timeout would mean "no timeout")
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self._stop is not None, timeout=retry)
        return f"failed to get a healthy pod: {problem}"

    async def _attempt(self, input: PodInput, provider: ProviderName) -> tuple[str, bool] | None:
        """One deploy + visibility + warm-up; None when healthy, else (problem, give up?).

        `deploy_pod` is never abandoned half-way: a provider call still running after we gave
        up on it could rent a pod after our delete found nothing. Only the waits race `stop`.
        """
        policy = input.policy
        ref = PodRef(name=input.pod_name, provider=provider)
        self._pod = ref
        try:
            self._pod = await workflow.execute_activity(
                "deploy_pod",
                DeployPodInput(name=input.pod_name, provider=ref.provider, image=input.image),
                result_type=PodRef,
                summary=f"deploy {input.pod_name} on {provider}",
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                **options.DEPLOY_POD_ATTEMPT,
            )
        except ActivityError as e:
            raise_if_cancelled(e)
            return f"deploy failed on {provider}: {failure(e)[0]}", False
        visibility = timedelta(seconds=policy.pod_visibility_timeout_seconds)
        warmup = timedelta(seconds=policy.pod_warmup_timeout_seconds)
        poll = timedelta(seconds=policy.check_pod_interval_seconds)
        healthy = workflow.start_activity(
            "await_pod_healthy",
            AwaitPodHealthyInput(
                pod=self._pod,
                timeout=warmup,
                visibility_timeout=visibility,
                poll_interval=poll,
            ),
            result_type=PodRef,
            summary=f"wait for {input.pod_name} /health",
            # The activity's own deadlines end it; this bound only catches a runaway one.
            **options.await_pod_healthy(visibility + warmup + 2 * poll),
        )
        await workflow.wait_condition(lambda: healthy.done() or self._stop is not None)
        if not healthy.done():
            healthy.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await healthy
            return "stopped before the pod was healthy", True
        try:
            self._pod = healthy.result()
        except ActivityError as e:
            raise_if_cancelled(e)
            message, error_type = failure(e)
            # Not listed in time: a failed attempt (retried); warm-up over or dead: give up.
            return f"{provider}: {message}", error_type != ErrorType.POD_NOT_VISIBLE
        return None

    # --- work -----------------------------------------------------------------------------------

    async def _serve(self, input: PodInput) -> None:
        """Run MAX_CONCURRENT_PROMPTS_PER_POD loops until stopped, gone, bad or continuing.

        The loops share one GPU slot (only `generate` holds it), so while one prompt is
        rendered and scored the next one is already generating: the rented GPU never waits
        for our side (upstream's generation_pipeline).
        """
        count = max(1, input.policy.max_concurrent_prompts_per_pod)
        watched = self._watched = workflow.patched(WATCHDOG_PATCH)
        pings = not watched  # before the watchdog, the first loop pinged when idle
        loops = [asyncio.ensure_future(self._loop(input, pings and i == 0)) for i in range(count)]
        work = asyncio.gather(*loops)
        watchdog = asyncio.ensure_future(self._watch(input)) if watched else None
        try:
            if watchdog is None:
                await work
                return
            either: list[asyncio.Future[Any]] = [work, watchdog]
            await workflow.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                watchdog.cancel()
                await work
                return
            # The audit is gone: nobody will read what is in flight; stop now, delete the pod.
            self._end = self._end or AUDIT_GONE
            workflow.logger.warning("%s: the audit is gone; leaving now", input.pod_name)
            await self._cancel_loops(loops)
            with contextlib.suppress(asyncio.CancelledError):
                await work
        except BaseException:
            if watchdog is not None:
                watchdog.cancel()
            await self._cancel_loops(loops)
            if work.done() and not work.cancelled():
                work.exception()  # retrieved: the loops' own errors are raised below
            raise

    async def _cancel_loops(self, loops: Sequence[asyncio.Future[None]]) -> None:
        """Cancel the loops and wait until they are done. A loop cancelled while its signal was
        already sent has that cancellation erased by the SDK (the signal happened), so
        `_tell_parent` raises it again while `_cancelling` is set."""
        self._cancelling = True
        for loop in loops:
            loop.cancel()
        await workflow.wait(loops)
        self._cancelling = False

    async def _watch(self, input: PodInput) -> None:
        """Returns when the audit is gone: after POD_IDLE_CHECK without a signal the audit took,
        busy or idle, ping it (a pod_ready it ignores unless it is acquiring)."""
        interval = timedelta(seconds=input.policy.pod_idle_check_seconds)
        while True:
            due = self._last_heard + interval
            if workflow.now() < due:
                await workflow.sleep(due - workflow.now())
                continue
            if not await self._tell_parent(input, self._ready(input)):
                return

    def _taking_work(self) -> bool:
        return self._stop is None and self._end is None

    async def _loop(self, input: PodInput, pings: bool) -> None:
        """One processing loop: take an assignment, process it, report it, repeat."""
        while True:
            if not await self._wait_for_work(input, pings):
                self._end = self._end or AUDIT_GONE
            if not self._taking_work():
                return
            if workflow.info().is_continue_as_new_suggested():
                self._end = _CONTINUE  # the other loops finish what they hold, then we go
                return
            if not self._pending:
                continue  # another loop woken by the same assignment took it
            assignment = self._pending.pop(0)
            result = await self._process(input, assignment)
            revoked = assignment.assignment_id in self._revoked
            if result is None or revoked:
                # Skipped at the GPU slot (stopped, pod bad, continuing) or revoked: not sent.
                if self._end == _CONTINUE and not revoked:
                    self._pending.insert(0, assignment)  # the next run does it
                continue
            self._processed += 1
            if not await self._tell_parent(input, result):
                self._end = self._end or AUDIT_GONE
                return

    async def _wait_for_work(self, input: PodInput, pings: bool) -> bool:
        """Wait for an assignment or an end; the pinging loop checks now and then that the
        audit exists. False when the audit is gone (terminated, reset): then nobody would ever
        stop this pod, so it leaves and deletes itself rather than stay rented forever.
        """
        idle_check = timedelta(seconds=input.policy.pod_idle_check_seconds)
        while True:
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending) or not self._taking_work(),
                    timeout=idle_check if pings else None,
                )
                return True
            except TimeoutError:
                if not await self._tell_parent(input, self._ready(input)):
                    return False

    async def _process(self, input: PodInput, assignment: Assignment) -> PromptResult | None:
        """Generate, render and score one prompt; what the miner caused becomes a FAILED result.

        The submitted GLB is fetched and rendered meanwhile, so after the generation only the
        new GLB's render and the score remain.
        """
        submitted = asyncio.ensure_future(self._submitted_preview(input, assignment))
        try:
            result = await self._generate_and_score(input, assignment, submitted)
        except BaseException:
            submitted.cancel()
            raise
        if not submitted.done():
            await workflow.wait([submitted])  # a failed generation: never leave it behind
        return result

    async def _generate_and_score(
        self,
        input: PodInput,
        assignment: Assignment,
        submitted: asyncio.Future[tuple[str | None, str | None]],
    ) -> PromptResult | None:
        pod_url = self._live_pod().url
        if pod_url is None:
            raise ApplicationError(f"pod {input.pod_name} has no URL", non_retryable=True)
        base: dict[str, Any] = {
            "slot": input.slot,
            "attempt": input.attempt,
            "pod_name": input.pod_name,
            "assignment_id": assignment.assignment_id,
            "stem": assignment.stem,
            "audit_run_id": input.audit_run_id,
            "pod_workflow_id": workflow.info().workflow_id,
        }
        try:
            return await self._generate_and_score_or_wait(
                input, assignment, submitted, base, pod_url
            )
        except _OurOutage as e:
            # Not the miner's: the audit fails without a verdict (see AuditWorkflow).
            return PromptResult(
                **base,
                outcome=PromptResultKind.FAILED,
                error=str(e),
                error_type=ErrorType.SERVICE_UNAVAILABLE,
            )

    async def _generate_and_score_or_wait(
        self,
        input: PodInput,
        assignment: Assignment,
        submitted: asyncio.Future[tuple[str | None, str | None]],
        base: dict[str, Any],
        pod_url: str,
    ) -> PromptResult | None:
        policy = input.policy
        outage = self._outage_limit(input)
        try:
            await self._service(
                input,
                "prompt server",
                workflow.start_activity(
                    "fetch_prompt",
                    FetchPromptInput(round=input.round, url=assignment.prompt_url),
                    result_type=ArtifactResult,
                    summary=f"fetch prompt {assignment.stem}",
                    **options.our_service(options.FETCH_PROMPT, outage),
                ),
            )
        except ActivityError as e:
            message = self._miner_caused(e, "fetching the prompt")
            return PromptResult(
                **base,
                outcome=PromptResultKind.FAILED,
                error=message,
                error_type=ErrorType.PROMPT_UNAVAILABLE,
            )
        try:
            generated = await self._generate(input, assignment, pod_url)
            if generated is None or assignment.assignment_id in self._revoked:
                return None  # skipped, or revoked while downloading: nothing to report
        except ActivityError as e:
            raise_if_cancelled(e)
            message, error_type = failure(e)
            return PromptResult(
                **base, outcome=PromptResultKind.FAILED, error=message, error_type=error_type
            )
        try:
            preview = await self._service(
                input,
                "render",
                workflow.start_activity(
                    "render_preview",
                    RenderPreviewInput(glb_uri=generated.glb_uri, stem=assignment.stem),
                    result_type=ArtifactResult,
                    summary=f"render {assignment.stem}",
                    **options.gpu(policy.gpu_task_queue, outage),
                ),
            )
        except ActivityError as e:
            message = self._miner_caused(e, "rendering the generated GLB")
            # Upstream: a render failure keeps the GLB, time and size; the result is failed.
            return PromptResult(
                **base,
                outcome=PromptResultKind.FAILED,
                glb_uri=generated.glb_uri,
                size=generated.size,
                generation_time=generated.generation_time,
                error=f"render failed: {message}",
                error_type=ErrorType.RENDER_FAILED,
            )
        distance, problem = await self._distance(input, assignment, preview.uri, submitted)
        return PromptResult(
            **base,
            outcome=PromptResultKind.GENERATED,
            glb_uri=generated.glb_uri,
            png_uri=preview.uri,
            size=generated.size,
            generation_time=generated.generation_time,
            distance=distance,
            error=problem,
        )

    async def _generate(
        self, input: PodInput, assignment: Assignment, pod_url: str
    ) -> GenerateResult | None:
        """Call the miner once, holding the pod's GPU slot until the response headers arrive.

        The activity signals `gpu_free` at the headers; the slot is released then (or when the
        activity ends, whichever is first), so the next loop's request goes out while this GLB
        is still downloading, as upstream's generate.py does. A failure the pod may have caused
        is followed by a /health probe before the slot is released, so no other request goes to
        a dead pod. None: skipped, because the pod stopped taking work while this waited for
        the slot (upstream skips the prompt then and records nothing).
        """
        policy = input.policy
        timeout = timedelta(seconds=policy.generation_timeout_seconds)
        download = timedelta(seconds=policy.download_timeout_seconds)
        aid = assignment.assignment_id
        async with self._gpu:
            if not self._taking_work() or aid in self._revoked:
                return None
            call = workflow.start_activity(
                "generate",
                GenerateInput(
                    audit_id=f"{input.audit_workflow_id}/{input.audit_run_id}",
                    assignment_id=aid,
                    round=input.round,
                    provider=self._live_pod().provider,
                    pod_url=pod_url,
                    prompt_url=assignment.prompt_url,
                    seed=input.seed,
                    timeout=timeout,
                    download_timeout=download,
                    max_bytes=policy.max_glb_bytes,
                ),
                result_type=GenerateResult,
                summary=f"generate {aid}",
                **options.generate_v2(
                    timeout, download, timedelta(seconds=policy.generation_heartbeat_seconds)
                ),
            )
            await workflow.wait_condition(
                lambda: call.done() or aid in self._gpu_free or self._abandoned(aid)
            )
            if self._abandoned(aid) and not call.done():
                # Revoked and the pod stops: nothing will be timed behind it any more.
                call.cancel()
                with contextlib.suppress(ActivityError, asyncio.CancelledError):
                    await call
                return None
            if call.done() and call.exception() is not None:
                error = call.exception()
                if isinstance(error, ActivityError):
                    raise_if_cancelled(error)
                    _, error_type = failure(error)
                    if error_type in _POD_MAY_BE_DOWN and not await self._still_healthy():
                        self._end = HEALTH_LOST
        if aid in self._gpu_free:
            self._gpu_free.remove(aid)
        if aid in self._revoked:  # the GPU is free again; the download is not wanted
            call.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await call
            return None
        result: GenerateResult = await call
        return result

    def _abandoned(self, assignment_id: str) -> bool:
        """A revoked generation on a pod that takes no more work: cancel it, nobody waits."""
        return assignment_id in self._revoked and not self._taking_work()

    async def _submitted_preview(
        self, input: PodInput, assignment: Assignment
    ) -> tuple[str | None, str | None]:
        """The submitted preview to compare with (uri, None), or (None, why not).

        Upstream compares with the submitted PNG itself (`submitted_png_url`, fetched); pods of
        audits started before that rule render the submitted GLB instead. Independent of the
        generation, so `_process` runs it while the pod generates.
        """
        try:
            if assignment.submitted_png_url is not None:
                fetched = await self._fetch_submitted(
                    input,
                    assignment.submitted_png_url,
                    f"fetch submitted preview {assignment.stem}",
                )
                return fetched.uri, None
            if assignment.submitted_glb_url is None:
                return None, "the submission has no GLB to compare with"
            submitted = await self._fetch_submitted(
                input, assignment.submitted_glb_url, f"fetch submitted {assignment.stem}"
            )
            preview = await self._service(
                input,
                "render",
                workflow.start_activity(
                    "render_preview",
                    RenderPreviewInput(glb_uri=submitted.uri, stem=assignment.stem),
                    result_type=ArtifactResult,
                    summary=f"render submitted {assignment.stem}",
                    **options.gpu(input.policy.gpu_task_queue, self._outage_limit(input)),
                ),
            )
        except ActivityError as e:
            return None, f"distance unknown: {self._miner_caused(e, 'reading the submission')}"
        return preview.uri, None

    async def _fetch_submitted(self, input: PodInput, url: str, summary: str) -> ArtifactResult:
        """The submission's file (preview PNG or GLB) in the artifact store."""
        fetched: ArtifactResult = await self._service(
            input,
            "artifact store",
            workflow.start_activity(
                "fetch_artifact",
                FetchArtifactInput(url=url, max_bytes=input.policy.max_glb_bytes),
                result_type=ArtifactResult,
                summary=summary,
                **options.our_service(options.FETCH_ARTIFACT, self._outage_limit(input)),
            ),
        )
        return fetched

    async def _distance(
        self,
        input: PodInput,
        assignment: Assignment,
        png_uri: str,
        submitted: asyncio.Future[tuple[str | None, str | None]],
    ) -> tuple[float | None, str | None]:
        """DINOv3 distance to the submitted preview; None (a mismatch) if unknown."""
        submitted_uri, problem = await submitted
        if submitted_uri is None:
            return None, problem
        try:
            scored = await self._service(
                input,
                "score",
                workflow.start_activity(
                    "score_distance",
                    ScoreDistanceInput(
                        png_a_uri=submitted_uri, png_b_uri=png_uri, stem=assignment.stem
                    ),
                    result_type=ScoreDistanceResult,
                    summary=f"score {assignment.stem}",
                    **options.gpu(input.policy.gpu_task_queue, self._outage_limit(input)),
                ),
            )
        except ActivityError as e:
            return None, f"distance unknown: {self._miner_caused(e, 'scoring')}"
        return scored.distance, None

    # --- our own services -----------------------------------------------------------------------

    def _outage_limit(self, input: PodInput) -> timedelta:
        return timedelta(seconds=input.policy.service_outage_limit_seconds)

    def _miner_caused(self, error: ActivityError, step: str) -> str:
        """The message of a failure the submission caused; anything else is an outage of ours
        (raised as _OurOutage, so no result charges the miner for it)."""
        raise_if_cancelled(error)
        message, error_type = failure(error)
        if error_type not in MINER_CAUSED:
            raise _OurOutage(f"{step}: {message}") from error
        return message

    async def _service(
        self, input: PodInput, service: str, call: workflow.ActivityHandle[_T]
    ) -> _T:
        """Await a call to one of our services. Unanswered after SERVICE_NOTICE (GPU workers or
        store down), the audit hears that this pod waits, and again when the wait is over."""
        if not self._watched:
            return await call
        notice = timedelta(seconds=input.policy.service_notice_seconds)
        try:
            await workflow.wait_condition(call.done, timeout=notice)
        except TimeoutError:
            await self._tell_parent(input, self._waiting(input, service, True))
            await workflow.wait([call])  # (no `finally`: an evicted run must not await)
            await self._tell_parent(input, self._waiting(input, service, False))
        return await call

    def _waiting(self, input: PodInput, service: str, waiting: bool) -> PodWaiting:
        return PodWaiting(
            slot=input.slot,
            attempt=input.attempt,
            pod_name=input.pod_name,
            audit_run_id=input.audit_run_id,
            pod_workflow_id=workflow.info().workflow_id,
            service=service,
            waiting=waiting,
        )

    async def _still_healthy(self) -> bool:
        """After a failure the pod may have caused: does it still answer /health?"""
        try:
            healthy: bool = await workflow.execute_activity(
                "check_pod_health",
                PodHealthInput(pod=self._live_pod()),
                result_type=bool,
                **options.POD_HEALTH,
            )
        except ActivityError as e:
            raise_if_cancelled(e)
            return False
        return healthy

    async def _delete(self, input: PodInput) -> str:
        """Delete by name, also when a deploy failed half-way (a rented pod is never left)."""
        pod = self._live_pod()
        try:
            await workflow.execute_activity(
                "delete_pod",
                DeletePodInput(pod=pod),
                summary=f"delete {input.pod_name}",
                **options.DELETE_POD,
            )
        except ActivityError as e:
            # The parent must still hear that this pod ended; its sweep retries the delete.
            message = failure(e)[0]
            workflow.logger.error("could not delete pod %s: %s", input.pod_name, message)
            return f"; delete failed: {message}"
        return ""

    async def _tell_parent(
        self, input: PodInput, message: PodReady | PromptResult | PodFinished | PodWaiting
    ) -> bool:
        """Signal the audit by workflow id (survives its continue-as-new); False if it is gone."""
        parent = workflow.get_external_workflow_handle(input.audit_workflow_id)
        try:
            await parent.signal(message.event, message)
        except TemporalCancelledError as e:
            # This pod is being cancelled: never swallow that here (the loops must stop).
            raise asyncio.CancelledError(str(e)) from e
        except Exception as e:  # the parent closed (completed, cancelled, terminated)
            workflow.logger.warning("could not signal %s: %s", input.audit_workflow_id, e)
            return False
        self._last_heard = workflow.now()
        if self._cancelling:
            raise asyncio.CancelledError("the pod's loops are being cancelled")
        return True

    # --- bookkeeping ----------------------------------------------------------------------------

    def _result(self, input: PodInput, reason: str, marked_bad: bool) -> PodWorkflowResult:
        return PodWorkflowResult(
            stats=PodStats(
                pod_id=input.pod_name,
                processed=self._processed,
                marked_bad=marked_bad,
                termination_reason=reason,
            )
        )

    def _ready(self, input: PodInput) -> PodReady:
        return PodReady(
            slot=input.slot,
            attempt=input.attempt,
            pod_name=input.pod_name,
            audit_run_id=input.audit_run_id,
            pod_workflow_id=workflow.info().workflow_id,
            provider=self._pod.provider if self._pod is not None else None,
        )

    def _live_pod(self) -> PodRef:
        if self._pod is None:
            raise ApplicationError("pod used before it was deployed", non_retryable=True)
        return self._pod

    def _carry(self, input: PodInput) -> PodCarry:
        return PodCarry(
            pod=self._live_pod(),
            stats=PodStats(pod_id=input.pod_name, processed=self._processed),
            seen_assignments=self._seen,
            pending=self._pending,
            stop=self._stop,
            failed_attempts=self._failed_rentals,
        )
