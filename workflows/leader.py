"""LeaderGenerationWorkflow: the current leader's outputs for every prompt of a round
(`leader-{round}`), on the same pod machinery as an audit (upstream's run_miner with hotkey
`leader` and no audit request, REFERENCE.md sec. 3 "Leader").

    read the round's seed and prompts, leader.json's last entry (empty -> fails:
    "Leader docker image not found") and rounds/{n}/leader/generated.json (resume: prompts done
    are skipped; everything done -> nothing is deployed)
    generate every prompt as an audit does (same queue, retries, bad-pod rules, pods
    `miner-{nn}-leader-{i}`), with no distance and no early exit
    write rounds/{n}/leader/generated.json and leader/pod_stats.json (upstream's messages);
    no healthy pod -> nothing is written (upstream), the result says deploy_failed

Everything but reading and finishing is AuditWorkflow's (this class extends it).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

# Only pure data modules pass through the sandbox; workflow and policy code is imported
# (and checked for non-determinism) inside it.
with workflow.unsafe.imports_passed_through():
    from models.audit import (
        AuditInput,
        AuditPolicy,
        AuditResult,
        AuditRun,
        EarlyExit,
        JsonFileWrite,
        WriteFilesInput,
        WriteFilesResult,
    )
    from models.competition import RoundFiles
    from models.rounds import (
        LEADER_HOTKEY,
        LeaderFiles,
        LeaderInput,
        LeaderResult,
        ReadLeaderFilesInput,
    )

from workflows import options
from workflows.audit import AuditWorkflow, commit_message
from workflows.failures import fail_with_cause
from workflows.policy import pod_tracker


def _as_audit(input: LeaderInput) -> AuditInput:
    return AuditInput(round=input.round, hotkey=LEADER_HOTKEY, policy=input.policy, run=input.run)


@workflow.defn(name="LeaderGenerationWorkflow")
class LeaderGenerationWorkflow(AuditWorkflow):
    """Generate the leader's baseline for one round; see the module docstring."""

    @workflow.init
    def __init__(self, input: LeaderInput) -> None:
        super().__init__(_as_audit(input))

    @workflow.run
    async def run(self, input: LeaderInput) -> LeaderResult:  # type: ignore[override]
        """Generate what is missing from leader/generated.json and write it."""
        result = await self._run_v2(_as_audit(input))
        if isinstance(result, AuditResult):  # never: _prepare and _finish return LeaderResult
            raise TypeError("leader run produced an audit verdict")
        return result

    async def _prepare(self, input: AuditInput, policy: AuditPolicy) -> AuditResult | None:
        self._competition_repo = policy.competition_repo
        try:
            leader: LeaderFiles = await workflow.execute_activity(
                "read_leader_files",
                ReadLeaderFilesInput(round=input.round, competition_repo=policy.competition_repo),
                result_type=LeaderFiles,
                summary=f"read round {input.round} prompts and leader.json",
                **options.READ_REPO,
            )
        except ActivityError as e:
            fail_with_cause(e)  # e.g. an empty leader.json, as the run's own failure
        # No distance, so no mismatch can stop the run early.
        policy = policy.model_copy(update={"early_exit": EarlyExit.NEVER})
        self._run = self._initial_run(leader.files, policy, leader.image, resume=True)
        return None

    def _audited_stems(self, files: RoundFiles) -> list[str]:
        return [prompt.stem for prompt in files.prompts]

    def _next_input(self, input: AuditInput, run: AuditRun) -> object:
        return LeaderInput(round=input.round, run=run)

    def _progress_files(self, run: AuditRun) -> list[JsonFileWrite]:
        writes = super()._progress_files(run)
        # Upstream's leader entries keep the default distance 0.0 (nothing is compared).
        generated = writes[0]
        value = {
            stem: {**entry, "distance": 0.0}
            for stem, entry in dict(generated.value).items()  # type: ignore[call-overload]
        }
        return [generated.model_copy(update={"value": value}), *writes[1:]]

    async def _finish(self) -> LeaderResult:
        run = self._require_run()
        await self._stop_all_pods(pod_tracker.REASON_NO_WORK)
        await self._settle_commit()
        if run.pods:
            await self._sweep()
        files = run.round_files
        deploy_failed = bool(run.pods) and not any(p.ever_ready for p in run.pods)
        commit = None
        if not deploy_failed:
            progress = self._progress_files(run)
            written: WriteFilesResult = await workflow.execute_activity(
                "write_files",
                WriteFilesInput(
                    message=commit_message(files, generated=True, stats=len(progress) > 1),
                    files=progress,
                    competition_repo=run.policy.competition_repo,
                ),
                result_type=WriteFilesResult,
                summary="write leader/generated.json",
                **options.WRITE_REPO,
            )
            commit = written.commit
        generated = [p for p in run.prompts.values() if p.best is not None]
        return LeaderResult(
            round=files.round,
            image=run.image,
            generated=sum(1 for p in generated if not p.best or not p.best.is_failed()),
            failed=sum(1 for p in generated if p.best is not None and p.best.is_failed()),
            prompts=len(run.prompts),
            commit=commit,
            pods_started=run.pods_started,
            deploy_failed=deploy_failed,
        )
