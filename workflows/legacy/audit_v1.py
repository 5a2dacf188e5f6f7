"""AuditWorkflow v1 (frozen; see workflows/legacy/__init__.py): the audit before upstream's rules.

AuditWorkflow delegates a v1 run here. Id `audit-{round}-{hotkey}`.

    read the round's files (unknown round/hotkey -> non-retryable failure)
    wait for the miner's docker build (builds.json); failed -> "Failed to build a docker image"
    start INITIAL_POD_COUNT PodWorkflow children, expand to PODS_PER_MINER once one is healthy
    loop: drain the inbox of pod signals (pod_ready / pod_result / pod_finished), then
          hand every idle pod the prompt with the fewest attempts it has not tried,
          replace bad pods (next provider in GPU_PROVIDERS, up to MAX_POD_ATTEMPTS per slot),
          stop early once mismatches make the verdict final,
          continue-as-new (state carried whole) when the history grows long
    stop every pod, sweep leftovers by name prefix, decide the verdict, and write
    generated.json + pod_stats.json + the miner's generation_audits.json entry in one commit.

Signal handlers only append to the inbox; `run` makes every decision, so replay is exact.
Cancelling the audit cancels the pods, sweeps them and writes nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

# Only pure data modules pass through the sandbox; workflow and policy code is imported
# (and checked for non-determinism) inside it.
with workflow.unsafe.imports_passed_through():
    from models.audit import (
        Assignment,
        AuditInput,
        AuditPolicy,
        AuditProgress,
        AuditResult,
        AuditState,
        AuditStatus,
        JsonFileWrite,
        PodEvent,
        PodFinished,
        PodInput,
        PodReady,
        PromptResult,
        PromptState,
        ReadRoundFilesInput,
        SlotState,
        SlotStatus,
        StopPod,
        SweepPodsInput,
        SweepPodsResult,
        WriteFilesInput,
        WriteFilesResult,
    )
    from models.competition import (
        BuildStatus,
        CompetitionPaths,
        GenerationAudit,
        PodStats,
        RoundFiles,
    )
    from models.constants import (
        SEARCH_ATTRIBUTE_AUDIT_STATUS,
        SEARCH_ATTRIBUTE_HOTKEY,
        SEARCH_ATTRIBUTE_ROUND,
        pod_name,
        pod_name_prefix,
        pod_workflow_id,
    )

from workflows import options
from workflows.failures import failure as _failure
from workflows.legacy import queue_v1 as queue
from workflows.legacy import verdict_v1 as verdict

ROUND_KEY = SearchAttributeKey.for_int(SEARCH_ATTRIBUTE_ROUND)
HOTKEY_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_HOTKEY)
STATUS_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_AUDIT_STATUS)
POD_SHUTDOWN_GRACE = timedelta(minutes=15)


class AuditV1:
    """A v1 audit run; AuditWorkflow owns the signal handlers and shares its inbox list."""

    def __init__(self, input: AuditInput, inbox: list[PodEvent]) -> None:
        self._state: AuditState | None = input.state
        self._inbox = inbox
        self._status = AuditStatus.GENERATING if input.state else AuditStatus.READING

    async def run(self, input: AuditInput) -> AuditResult:
        """Audit the miner and return its generation_audits.json entry."""
        try:
            if self._state is None:
                workflow.upsert_search_attributes(
                    [ROUND_KEY.value_set(input.round), HOTKEY_KEY.value_set(input.hotkey)]
                )
                policy = input.policy or await workflow.execute_activity(
                    "load_audit_policy", result_type=AuditPolicy, **options.LOAD_POLICY
                )
                files = await self._read_round_files(input)
                image = await self._await_build(files, policy)
                if image is None:
                    return await self._write_verdict(
                        files,
                        verdict.rejected_without_generation(
                            input.hotkey, verdict.BUILD_FAILED_REASON
                        ),
                    )
                self._state = self._initial_state(files, policy, image)
                if not self._state.prompts:
                    return await self._write_verdict(files, self._decide())
                self._set_status(AuditStatus.GENERATING)
                await self._start_pods(self._state.policy.initial_pod_count)
            state = self._state
            while not self._generation_over():
                await workflow.wait_condition(lambda: bool(self._inbox))
                await self._drain_inbox()
                await self._dispatch()
                if workflow.info().is_continue_as_new_suggested():
                    await self._continue_as_new(input)
            await self._stop_pods("audit finished" if not state.early_exit else "verdict is final")
            try:
                await self._sweep()
            except ActivityError as e:
                # Only a safety net (each pod deleted its own): the verdict is still written.
                workflow.logger.error("final sweep failed: %s", _failure(e)[0])
            return await self._write_verdict(state.round_files, self._decide())
        except workflow.ContinueAsNewError:
            raise
        except (Exception, asyncio.CancelledError) as e:
            # Cancelled or failed: pods must not outlive the audit; nothing half-done is written.
            # Not BaseException: GeneratorExit (a stopped worker's cached run being collected) and
            # the SDK's eviction error must pass untouched, or the cleanup would issue commands
            # off this run's event loop. Awaited directly (no asyncio.shield): Temporal cancels a
            # run once, and a shielded task would outlive an eviction.
            cancelled = isinstance(e, asyncio.CancelledError)
            self._set_status(AuditStatus.CANCELLED if cancelled else AuditStatus.FAILED)
            if self._state is not None and self._state.slots:
                await self._abandon_pods()
            raise

    def progress(self) -> AuditProgress:
        """What an operator wants to see while the audit runs."""
        state = self._state
        if state is None:
            return AuditProgress(status=self._status)
        counts = self._mismatch_counts()
        return AuditProgress(
            status=self._status,
            total=len(state.prompts),
            done=sum(1 for p in state.prompts.values() if p.done),
            in_flight=sum(1 for p in state.prompts.values() if p.in_flight is not None),
            mismatches=counts.non_critical,
            critical_mismatches=counts.critical,
            pods_active=sum(1 for s in state.slots if s.status is not SlotStatus.FINISHED),
            pods_started=state.pods_started,
        )

    # --- reading and the build ------------------------------------------------------------------

    async def _read_round_files(self, input: AuditInput) -> RoundFiles:
        try:
            files: RoundFiles = await workflow.execute_activity(
                "read_round_files",
                ReadRoundFilesInput(round=input.round, hotkey=input.hotkey),
                result_type=RoundFiles,
                summary=f"read round {input.round} files of {input.hotkey}",
                **options.READ_REPO,
            )
        except ActivityError as e:
            message, error_type = _failure(e)
            raise ApplicationError(message, type=error_type, non_retryable=True) from e
        return files

    async def _await_build(self, files: RoundFiles, policy: AuditPolicy) -> str | None:
        """The docker image to audit, or None when the build failed or never finished."""
        deadline = workflow.now() + timedelta(seconds=policy.build_timeout_seconds)
        while True:
            build = files.build
            if build is not None and build.status is BuildStatus.SUCCESS and build.docker_image:
                return build.docker_image
            if build is not None and build.status.failed:
                return None
            if workflow.now() >= deadline:
                return None
            self._set_status(AuditStatus.WAITING_FOR_BUILD)
            await workflow.sleep(timedelta(seconds=policy.check_build_interval_seconds))
            files = await self._read_round_files(AuditInput(round=files.round, hotkey=files.hotkey))

    def _initial_state(self, files: RoundFiles, policy: AuditPolicy, image: str) -> AuditState:
        urls = {p.stem: p.url for p in files.prompts}
        prompts = {
            stem: PromptState(
                stem=stem,
                url=urls.get(stem, ""),
                submitted_glb_url=entry.glb,
            )
            for stem, entry in files.submitted.items()
        }
        return AuditState(
            round_files=files,
            policy=policy,
            image=image,
            prompts=prompts,
            run_chain_id=workflow.info().first_execution_run_id,
        )

    # --- the loop -------------------------------------------------------------------------------

    async def _drain_inbox(self) -> None:
        state = self._require_state()
        while self._inbox:
            event = self._inbox.pop(0)
            if event.audit_run_id != state.run_chain_id:
                # A pod of an earlier audit with this id (failed, re-run): not ours.
                workflow.logger.warning("ignoring %s of another run: %s", event.event, event)
                continue
            if isinstance(event, PodReady):
                await self._on_ready(state, event)
            elif isinstance(event, PromptResult):
                self._on_result(state, event)
            elif isinstance(event, PodFinished):
                await self._on_finished(state, event)

    async def _on_ready(self, state: AuditState, event: PodReady) -> None:
        slot = self._slot(event.slot, event.attempt)
        if slot is None or slot.status is not SlotStatus.STARTING:
            return
        slot.status = SlotStatus.IDLE
        slot.ever_ready = True
        state.any_pod_ready = True
        if not state.expanded:
            state.expanded = True
            pending = sum(1 for p in state.prompts.values() if not p.done)
            wanted = min(state.policy.pods_per_miner, max(pending, 1))
            await self._start_pods(wanted - len(state.slots))

    def _on_result(self, state: AuditState, event: PromptResult) -> None:
        slot = self._slot(event.slot, event.attempt)
        if slot is not None and slot.assignment == event.assignment_id:
            slot.assignment = None
            if slot.status is SlotStatus.BUSY:
                slot.status = SlotStatus.IDLE
        prompt = state.prompts.get(event.stem)
        if prompt is None or prompt.in_flight != event.assignment_id:
            return  # stale or duplicate: that attempt was already settled
        state.generations += 1
        queue.apply_result(prompt, event, state.policy.max_prompt_attempts)
        if state.policy.stop_early and verdict.verdict_is_final(
            self._mismatch_counts(), state.policy
        ):
            state.early_exit = True

    async def _on_finished(self, state: AuditState, event: PodFinished) -> None:
        state.pod_stats[event.pod_name] = event.stats
        slot = self._slot(event.slot, event.attempt)
        if slot is None:
            return
        if slot.assignment is not None:
            stem = slot.assignment.split("#", 1)[0]
            prompt = state.prompts.get(stem)
            if prompt is not None and prompt.in_flight == slot.assignment:
                started = slot.assignment == event.unfinished_assignment
                queue.release(prompt, state.policy.max_prompt_attempts, started, slot.pod_name)
            slot.assignment = None
        stopping = slot.status is SlotStatus.STOPPING
        slot.status = SlotStatus.FINISHED
        if stopping or not self._work_left():
            return
        if slot.attempt + 1 < state.policy.max_pod_attempts:
            await self._start_slot(slot.slot, slot.attempt + 1)

    async def _dispatch(self) -> None:
        """Hand work to idle pods; stop pods that can have none."""
        state = self._require_state()
        if self._generation_over():
            return
        sends = []
        live = [s.pod_name for s in state.slots if s.status in (SlotStatus.IDLE, SlotStatus.BUSY)]
        for slot in state.slots:
            if slot.status is not SlotStatus.IDLE:
                continue
            prompt = queue.next_prompt(
                state.prompts.values(), slot.pod_name, state.policy.max_prompt_attempts, live
            )
            if prompt is None:
                continue  # stays idle: in-flight work may still fail and come back
            prompt.attempts += 1
            prompt.tried_on.append(slot.pod_name)
            prompt.in_flight = queue.assignment_id(prompt.stem, prompt.attempts)
            slot.assignment = prompt.in_flight
            slot.status = SlotStatus.BUSY
            sends.append(self._assign(slot, prompt))
        if sends:
            await asyncio.gather(*sends)

    async def _assign(self, slot: SlotState, prompt: PromptState) -> None:
        """Signal the assignment; a pod that is already gone gives it back, unstarted."""
        try:
            await self._signal_assignment(slot, prompt)
        except Exception as e:  # the child closed without telling us (e.g. terminated)
            workflow.logger.warning("pod %s is gone: %s", slot.workflow_id, e)
            self._pod_vanished(slot)

    def _pod_vanished(self, slot: SlotState) -> None:
        """A pod child closed without pod_finished: release its work and count it finished."""
        state = self._require_state()
        self._inbox.append(
            PodFinished(
                slot=slot.slot,
                attempt=slot.attempt,
                pod_name=slot.pod_name,
                stats=state.pod_stats.get(slot.pod_name, PodStats(pod_id=slot.pod_name)).model_copy(
                    update={"termination_reason": "pod workflow closed unexpectedly"}
                ),
                marked_bad=True,
                reason="pod workflow closed unexpectedly",
                audit_run_id=state.run_chain_id,
            )
        )

    async def _signal_assignment(self, slot: SlotState, prompt: PromptState) -> None:
        if prompt.in_flight is None:
            raise ApplicationError(f"{prompt.stem} assigned without an id", non_retryable=True)
        handle = workflow.get_external_workflow_handle(slot.workflow_id)
        await handle.signal(
            "assign",
            Assignment(
                assignment_id=prompt.in_flight,
                stem=prompt.stem,
                attempt=prompt.attempts,
                prompt_url=prompt.url,
                submitted_glb_url=prompt.submitted_glb_url,
            ),
        )

    def _work_left(self) -> bool:
        """Prompts still to generate, and the verdict not yet final."""
        state = self._require_state()
        return not state.early_exit and not all(p.done for p in state.prompts.values())

    def _generation_over(self) -> bool:
        state = self._require_state()
        if not self._work_left():
            return True
        live = [s for s in state.slots if s.status is not SlotStatus.FINISHED]
        return not live and bool(state.slots)

    # --- pods -----------------------------------------------------------------------------------

    async def _start_pods(self, count: int) -> None:
        state = self._require_state()
        first = len(state.slots)
        await asyncio.gather(*(self._start_slot(first + i, 0) for i in range(max(count, 0))))

    async def _start_slot(self, slot_index: int, attempt: int) -> None:
        state = self._require_state()
        info = workflow.info()
        files = state.round_files
        providers = state.policy.gpu_providers
        provider = providers[(slot_index + attempt) % len(providers)]
        name = pod_name(files.round, files.hotkey, slot_index, attempt)
        child_id = pod_workflow_id(info.workflow_id, slot_index, attempt)
        slot = SlotState(
            slot=slot_index, attempt=attempt, provider=provider, pod_name=name, workflow_id=child_id
        )
        existing = [i for i, s in enumerate(state.slots) if s.slot == slot_index]
        if existing:
            state.slots[existing[0]] = slot
        else:
            state.slots.append(slot)
        state.pods_started += 1
        await workflow.start_child_workflow(
            "PodWorkflow",
            PodInput(
                audit_workflow_id=info.workflow_id,
                audit_run_id=state.run_chain_id,
                round=files.round,
                hotkey=files.hotkey,
                slot=slot_index,
                attempt=attempt,
                pod_name=name,
                provider=provider,
                image=state.image,
                seed=files.seed,
                policy=state.policy,
            ),
            id=child_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"pod {slot_index} attempt {attempt} on {provider}",
        )

    async def _stop_pods(self, reason: str) -> None:
        """Ask every live pod to finish; wait (bounded) until each reports it is gone."""
        state = self._require_state()
        sends = []
        for slot in state.slots:
            if slot.status in (SlotStatus.FINISHED, SlotStatus.STOPPING):
                continue
            slot.status = SlotStatus.STOPPING
            sends.append(self._stop_pod(slot, reason))
        if sends:
            await asyncio.gather(*sends)
        try:
            while any(s.status is not SlotStatus.FINISHED for s in state.slots):
                await workflow.wait_condition(lambda: bool(self._inbox), timeout=POD_SHUTDOWN_GRACE)
                await self._drain_inbox()
        except TimeoutError:
            workflow.logger.warning("pods did not finish in %s; sweeping them", POD_SHUTDOWN_GRACE)
            await self._abandon_pods()

    async def _stop_pod(self, slot: SlotState, reason: str) -> None:
        try:
            handle = workflow.get_external_workflow_handle(slot.workflow_id)
            await handle.signal("stop", StopPod(reason=reason))
        except Exception as e:  # the child closed without telling us
            workflow.logger.warning("pod %s is gone: %s", slot.workflow_id, e)
            self._pod_vanished(slot)

    async def _sweep(self) -> list[str]:
        state = self._require_state()
        files = state.round_files
        result = await workflow.execute_activity(
            "sweep_pods",
            SweepPodsInput(
                prefix=pod_name_prefix(files.round, files.hotkey),
                providers=sorted(set(state.policy.gpu_providers)),
            ),
            result_type=SweepPodsResult,
            summary="delete every pod of this audit",
            **options.SWEEP_PODS,
        )
        return list(result.deleted)

    async def _abandon_pods(self) -> None:
        """Cancel every pod child still running, then sweep pods by prefix."""
        state = self._require_state()
        for slot in state.slots:
            if slot.status is SlotStatus.FINISHED:
                continue
            try:
                await workflow.get_external_workflow_handle(slot.workflow_id).cancel()
            except Exception as e:  # already closed
                workflow.logger.info("pod %s not cancelled: %s", slot.workflow_id, e)
        await self._sweep()

    async def _continue_as_new(self, input: AuditInput) -> None:
        state = self._require_state()
        await workflow.wait_condition(workflow.all_handlers_finished)
        state.inbox = list(self._inbox)
        workflow.continue_as_new(AuditInput(round=input.round, hotkey=input.hotkey, state=state))

    # --- verdict --------------------------------------------------------------------------------

    def _mismatch_counts(self) -> verdict.MismatchCounts:
        state = self._require_state()
        done = [p.stem for p in state.prompts.values() if p.done]
        entries = {p.stem: p.entry for p in state.prompts.values() if p.entry is not None}
        return verdict.count_mismatches(
            done, entries, state.round_files.critical_prompts, state.policy
        )

    def _decide(self) -> GenerationAudit:
        state = self._require_state()
        files = state.round_files
        if not state.any_pod_ready and state.prompts:
            return verdict.rejected_without_generation(files.hotkey, verdict.DEPLOY_FAILED_REASON)
        entries = {p.stem: p.entry for p in state.prompts.values() if p.entry is not None}
        checked = (
            [p.stem for p in state.prompts.values() if p.done]
            if state.early_exit
            else list(state.prompts)
        )
        return verdict.decide(files.hotkey, checked, entries, files.critical_prompts, state.policy)

    async def _write_verdict(self, files: RoundFiles, audit: GenerationAudit) -> AuditResult:
        self._set_status(AuditStatus.WRITING)
        writes = [
            JsonFileWrite(
                path=CompetitionPaths.generation_audits(files.round),
                value=audit.model_dump(mode="json"),
                merge_key=files.hotkey,
            )
        ]
        state = self._state
        if state is not None:
            generated = {
                p.stem: p.entry.model_dump(mode="json")
                for p in state.prompts.values()
                if p.entry is not None
            }
            stats = {name: s.model_dump(mode="json") for name, s in state.pod_stats.items()}
            writes = [
                JsonFileWrite(
                    path=CompetitionPaths.generated(files.round, files.hotkey), value=generated
                ),
                JsonFileWrite(
                    path=CompetitionPaths.pod_stats(files.round, files.hotkey), value=stats
                ),
                *writes,
            ]
        written = await workflow.execute_activity(
            "write_files",
            WriteFilesInput(
                message=(
                    f"Generation audit of {files.hotkey} (round {files.round}): {audit.outcome}"
                ),
                files=writes,
            ),
            result_type=WriteFilesResult,
            summary="write the verdict",
            **options.WRITE_REPO,
        )
        self._set_status(AuditStatus(audit.outcome.value))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return AuditResult(
            audit=audit,
            commit=written.commit,
            generations=state.generations if state else 0,
            pods_started=state.pods_started if state else 0,
            early_exit=state.early_exit if state else False,
        )

    # --- helpers --------------------------------------------------------------------------------

    def _require_state(self) -> AuditState:
        if self._state is None:
            raise ApplicationError(
                "audit state used before the build was known", non_retryable=True
            )
        return self._state

    def _slot(self, index: int, attempt: int) -> SlotState | None:
        for slot in self._require_state().slots:
            if slot.slot == index and slot.attempt == attempt:
                return slot
        return None

    def _set_status(self, status: AuditStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([STATUS_KEY.value_set(status.value)])
