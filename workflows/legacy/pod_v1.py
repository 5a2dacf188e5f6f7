"""PodWorkflow v1 (frozen; see workflows/legacy/__init__.py), delegated to for `protocol` 1.

One rented pod's life - deploy, warm up, generate what the parent assigns, go.

Id `audit-{round}-{hotkey}-pod-{slot}-{attempt}`; started by AuditWorkflow with
ParentClosePolicy.ABANDON so it survives the parent's continue-as-new, and it talks to the parent
only by signals addressed to the parent's workflow id (no run id):

    deploy_pod -> await_pod_healthy -> signal pod_ready
    loop: wait for an `assign` signal (or `stop`)
          generate -> render_preview (gpu) -> fetch + render the submitted GLB -> score_distance
          signal pod_result (which also means "ready for more")
          marked bad (upstream thresholds) or stopped answering /health -> leave the loop
    finally: delete_pod, signal pod_finished (with this pod's stats)

An assignment id (`stem#attempt`) seen before is dropped, so a re-sent signal never generates twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
)
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
        PodFinished,
        PodHealthInput,
        PodInput,
        PodReady,
        PodRef,
        PodWorkflowResult,
        PromptResult,
        PromptResultKind,
        RenderPreviewInput,
        ScoreDistanceInput,
        ScoreDistanceResult,
        StopPod,
    )
    from models.competition import PodStats
    from models.errors import ErrorType

from workflows import options
from workflows.failures import failure as _failure
from workflows.failures import raise_if_cancelled as _raise_if_cancelled
from workflows.legacy.pod_health_v1 import bad_pod_reason, summarize

SEEN_ASSIGNMENTS_KEPT = 1000


def _pod_may_be_down(result: PromptResult) -> bool:
    """A failure the pod itself may have caused (worth probing /health)."""
    return (
        result.outcome is PromptResultKind.FAILED
        and result.error_type != ErrorType.PROMPT_UNAVAILABLE
    )


class PodV1:
    """One pod slot attempt of a v1 audit; PodWorkflow forwards its signals and query here."""

    def __init__(self, input: PodInput) -> None:
        carried = input.carried
        self._pending: list[Assignment] = list(carried.pending) if carried else []
        self._stop: StopPod | None = carried.stop if carried else None
        self._seen: list[str] = list(carried.seen_assignments) if carried else []
        self._stats = carried.stats if carried else PodStats(pod_id=input.pod_name)
        self._times: list[float] = list(carried.times) if carried else []
        self._mismatches = carried.mismatches if carried else 0
        self._pod: PodRef | None = carried.pod if carried else None

    async def run(self, input: PodInput) -> PodWorkflowResult:
        """Deploy, serve assignments until stopped or bad, always delete the pod."""
        reason = "stopped by the audit"
        marked_bad = False
        unfinished: str | None = None
        continue_as_new = False
        evicted = False
        try:
            if self._pod is None:
                deploy_error = await self._deploy(input)
                if deploy_error is not None:
                    # Stopped while warming up is not a bad pod; failing to get healthy is.
                    reason, marked_bad = deploy_error, self._stop is None
                    return self._result(reason, marked_bad)
                await self._tell_parent(input, self._ready(input))
            while True:
                if not await self._wait_for_work(input):
                    reason = "audit is gone"
                    break
                if self._stop is not None:
                    reason = self._stop.reason
                    break
                assignment = self._pending.pop(0)
                unfinished = assignment.assignment_id
                result = await self._process(input, assignment)
                self._record(result, input)
                if not await self._tell_parent(input, result):
                    reason = "audit is gone"
                    break
                unfinished = None
                bad = bad_pod_reason(self._stats, self._mismatches, self._times, input.policy)
                if bad is None and _pod_may_be_down(result):
                    bad = await self._health_problem()
                if bad is not None:
                    reason, marked_bad = bad, True
                    break
                if workflow.info().is_continue_as_new_suggested() and self._stop is None:
                    continue_as_new = True
                    break
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException:
            # GeneratorExit / the SDK's eviction: this run is being collected off its event loop
            # (a stopped worker); cleaning up here would issue commands nowhere. The run replays
            # elsewhere and cleans up there.
            evicted = True
            raise
        finally:
            if not continue_as_new and not evicted:
                reason += await self._delete(input)
                await self._tell_parent(
                    input,
                    PodFinished(
                        slot=input.slot,
                        attempt=input.attempt,
                        pod_name=input.pod_name,
                        stats=self._final_stats(reason, marked_bad),
                        marked_bad=marked_bad,
                        deployed=self._pod is not None,
                        reason=reason,
                        unfinished_assignment=unfinished,
                        audit_run_id=input.audit_run_id,
                    ),
                )
        if continue_as_new:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(input.model_copy(update={"carried": self._carry()}))
        return self._result(reason, marked_bad)

    def assign(self, assignment: Assignment) -> None:
        """From AuditWorkflow: generate this prompt (duplicates by assignment id are dropped)."""
        if assignment.assignment_id in self._seen:
            return
        self._seen.append(assignment.assignment_id)
        del self._seen[:-SEEN_ASSIGNMENTS_KEPT]
        self._pending.append(assignment)

    def stop(self, stop: StopPod) -> None:
        """From AuditWorkflow: finish the current prompt, delete the pod, end."""
        self._stop = stop

    def stats(self) -> PodStats:
        """This pod's counters so far."""
        return summarize(self._stats, self._times)

    # --- steps ----------------------------------------------------------------------------------

    async def _deploy(self, input: PodInput) -> str | None:
        """Rent and warm up the pod unless stopped first; the failure reason, None if healthy.

        `deploy_pod` is never abandoned half-way: a provider call still running after we gave
        up on it could rent a pod after our `finally` deleted "nothing" (it waits for the
        activity to really end, then the pod is deleted by name). Only the warm-up wait races
        the stop signal.
        """
        try:
            self._pod = await workflow.execute_activity(
                "deploy_pod",
                DeployPodInput(name=input.pod_name, provider=input.provider, image=input.image),
                result_type=PodRef,
                summary=f"deploy {input.pod_name} on {input.provider}",
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                **options.DEPLOY_POD,
            )
        except ActivityError as e:
            _raise_if_cancelled(e)
            message, _ = _failure(e)
            return f"deploy failed on {input.provider}: {message}"
        warmup = timedelta(seconds=input.policy.pod_warmup_timeout_seconds)
        healthy = workflow.start_activity(
            "await_pod_healthy",
            AwaitPodHealthyInput(pod=self._pod, timeout=warmup),
            result_type=PodRef,
            summary=f"wait for {input.pod_name} /health",
            **options.await_pod_healthy(warmup),
        )
        await workflow.wait_condition(lambda: healthy.done() or self._stop is not None)
        if not healthy.done():
            healthy.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await healthy
            return "stopped before the pod was healthy"
        try:
            self._pod = healthy.result()
        except ActivityError as e:
            _raise_if_cancelled(e)
            message, _ = _failure(e)
            return f"deploy failed on {input.provider}: {message}"
        return None

    async def _wait_for_work(self, input: PodInput) -> bool:
        """Wait for an assignment or stop; while idle, check now and then that the audit exists.

        False when the audit is gone (terminated, reset): then nobody would ever stop this
        pod, so it leaves and deletes itself rather than stay rented forever.
        """
        idle_check = timedelta(seconds=input.policy.pod_idle_check_seconds)
        while True:
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending) or self._stop is not None, timeout=idle_check
                )
                return True
            except TimeoutError:
                if not await self._tell_parent(input, self._ready(input)):
                    return False

    async def _process(self, input: PodInput, assignment: Assignment) -> PromptResult:
        """Generate, render and score one prompt; model failures become a FAILED result."""
        pod_url = self._live_pod().url
        if pod_url is None:
            raise ApplicationError(f"pod {input.pod_name} has no URL", non_retryable=True)
        base = {
            "slot": input.slot,
            "attempt": input.attempt,
            "pod_name": input.pod_name,
            "assignment_id": assignment.assignment_id,
            "stem": assignment.stem,
            "audit_run_id": input.audit_run_id,
        }
        timeout = timedelta(seconds=input.policy.generation_timeout_seconds)
        try:
            await workflow.execute_activity(
                "fetch_prompt",
                FetchPromptInput(round=input.round, url=assignment.prompt_url),
                result_type=ArtifactResult,
                summary=f"fetch prompt {assignment.stem}",
                **options.FETCH_PROMPT,
            )
        except ActivityError as e:
            _raise_if_cancelled(e)
            message, _ = _failure(e)
            return PromptResult(
                **base,
                outcome=PromptResultKind.FAILED,
                error=message,
                error_type=ErrorType.PROMPT_UNAVAILABLE,
            )
        try:
            generated = await workflow.execute_activity(
                "generate",
                GenerateInput(
                    audit_id=f"{input.audit_workflow_id}/{input.audit_run_id}",
                    assignment_id=assignment.assignment_id,
                    round=input.round,
                    provider=input.provider,
                    pod_url=pod_url,
                    prompt_url=assignment.prompt_url,
                    seed=input.seed,
                    timeout=timeout,
                    max_bytes=input.policy.max_glb_bytes,
                ),
                result_type=GenerateResult,
                summary=f"generate {assignment.assignment_id}",
                **options.generate(
                    timeout, timedelta(seconds=input.policy.generation_heartbeat_seconds)
                ),
            )
        except ActivityError as e:
            _raise_if_cancelled(e)
            message, error_type = _failure(e)
            overtime = error_type == ErrorType.MINER_TIMEOUT
            return PromptResult(
                **base,
                outcome=PromptResultKind.FAILED,
                generation_time=timeout.total_seconds() if overtime else None,
                error=message,
                error_type=error_type,
            )
        try:
            preview = await workflow.execute_activity(
                "render_preview",
                RenderPreviewInput(glb_uri=generated.glb_uri),
                result_type=ArtifactResult,
                summary=f"render {assignment.stem}",
                **options.gpu(input.policy.gpu_task_queue),
            )
        except ActivityError as e:
            _raise_if_cancelled(e)
            message, _ = _failure(e)
            return PromptResult(
                **base,
                outcome=PromptResultKind.FAILED,
                glb_uri=generated.glb_uri,
                size=generated.size,
                generation_time=generated.generation_time,
                error=f"render failed: {message}",
            )
        distance, problem = await self._distance(input, assignment, preview.uri)
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

    async def _distance(
        self, input: PodInput, assignment: Assignment, png_uri: str
    ) -> tuple[float | None, str | None]:
        """DINOv3 distance to our own render of the submitted GLB; None (a mismatch) if unknown."""
        if assignment.submitted_glb_url is None:
            return None, "the submission has no GLB to compare with"
        try:
            submitted = await workflow.execute_activity(
                "fetch_artifact",
                FetchArtifactInput(
                    url=assignment.submitted_glb_url, max_bytes=input.policy.max_glb_bytes
                ),
                result_type=ArtifactResult,
                summary=f"fetch submitted {assignment.stem}",
                **options.FETCH_ARTIFACT,
            )
            submitted_preview = await workflow.execute_activity(
                "render_preview",
                RenderPreviewInput(glb_uri=submitted.uri),
                result_type=ArtifactResult,
                summary=f"render submitted {assignment.stem}",
                **options.gpu(input.policy.gpu_task_queue),
            )
            scored = await workflow.execute_activity(
                "score_distance",
                ScoreDistanceInput(png_a_uri=submitted_preview.uri, png_b_uri=png_uri),
                result_type=ScoreDistanceResult,
                summary=f"score {assignment.stem}",
                **options.gpu(input.policy.gpu_task_queue),
            )
        except ActivityError as e:
            _raise_if_cancelled(e)
            message, _ = _failure(e)
            return None, f"distance unknown: {message}"
        return scored.distance, None

    async def _health_problem(self) -> str | None:
        """After a failure: is the pod still answering /health?"""
        pod = self._live_pod()
        try:
            healthy = await workflow.execute_activity(
                "check_pod_health",
                PodHealthInput(pod=pod),
                result_type=bool,
                **options.POD_HEALTH,
            )
        except ActivityError as e:
            _raise_if_cancelled(e)
            message, _ = _failure(e)
            return f"health check failed: {message}"
        return None if healthy else "stopped answering /health"

    async def _delete(self, input: PodInput) -> str:
        """Delete by name, also when deploy failed half-way (a rented pod is never left behind)."""
        pod = self._pod or PodRef(name=input.pod_name, provider=input.provider)
        try:
            await workflow.execute_activity(
                "delete_pod",
                DeletePodInput(pod=pod),
                summary=f"delete {input.pod_name}",
                **options.DELETE_POD,
            )
        except ActivityError as e:
            # The parent must still hear that this pod ended; its sweep retries the delete.
            message, _ = _failure(e)
            workflow.logger.error("could not delete pod %s: %s", input.pod_name, message)
            return f"; delete failed: {message}"
        return ""

    async def _tell_parent(
        self, input: PodInput, message: PodReady | PromptResult | PodFinished
    ) -> bool:
        """Signal the audit by workflow id (survives its continue-as-new); False if it is gone."""
        parent = workflow.get_external_workflow_handle(input.audit_workflow_id)
        try:
            await parent.signal(message.event, message)
        except Exception as e:  # the parent closed (completed, cancelled, terminated)
            workflow.logger.warning("could not signal %s: %s", input.audit_workflow_id, e)
            return False
        return True

    # --- bookkeeping ----------------------------------------------------------------------------

    def _record(self, result: PromptResult, input: PodInput) -> None:
        s = self._stats
        update: dict[str, int] = {"processed": s.processed + 1}
        timeout = input.policy.generation_timeout_seconds
        if result.error_type == ErrorType.PROMPT_UNAVAILABLE:
            pass  # our input is broken, not the pod: no mark against it
        elif result.outcome is PromptResultKind.FAILED:
            update["hard_failed"] = s.hard_failed + 1
            if result.generation_time is not None and result.generation_time >= timeout:
                update["hard_overtime"] = s.hard_overtime + 1
        else:
            update["successful"] = s.successful + 1
            generation_time = result.generation_time or 0.0
            self._times.append(generation_time)
            if generation_time > timeout:
                update["hard_overtime"] = s.hard_overtime + 1
            if result.distance is None or result.distance > input.policy.acceptable_distance:
                self._mismatches += 1
        self._stats = s.model_copy(update=update)

    def _final_stats(self, reason: str, marked_bad: bool) -> PodStats:
        return summarize(self._stats, self._times).model_copy(
            update={"marked_bad": marked_bad, "termination_reason": reason}
        )

    def _result(self, reason: str, marked_bad: bool) -> PodWorkflowResult:
        return PodWorkflowResult(stats=self._final_stats(reason, marked_bad))

    def _ready(self, input: PodInput) -> PodReady:
        return PodReady(
            slot=input.slot,
            attempt=input.attempt,
            pod_name=input.pod_name,
            audit_run_id=input.audit_run_id,
        )

    def _live_pod(self) -> PodRef:
        if self._pod is None:
            raise ApplicationError("pod used before it was deployed", non_retryable=True)
        return self._pod

    def _carry(self) -> PodCarry:
        return PodCarry(
            pod=self._live_pod(),
            stats=self._stats,
            times=self._times,
            mismatches=self._mismatches,
            seen_assignments=self._seen,
            pending=self._pending,
            stop=self._stop,
        )
