"""BuildTrackingWorkflow: builds.json of one round from GitHub Actions (`builds-{round}`).

    seed builds.json from submissions.json (every miner pending, tag `{commit[:7]}-{round tag}`),
    keeping statuses already written (a restarted tracker never resets a build)
    loop until every build is terminal:
        poll_builds (one GitHub poll: find the round's Actions run by its head-commit message,
        then its per-miner jobs, page by page)
        rate limited -> a durable timer until the reset; run not found yet -> wait
        2 x CHECK_BUILD_INTERVAL; else apply the jobs' statuses (workflows/policy/builds.py)
        BUILD_TIMEOUT after the run was found: every open build -> timed_out
        one commit per poll that changed something ("Update build statuses for round {n}"), then
        signal `build_settled` to each audit whose build became terminal (its fallback is
        polling builds.json)
        wait CHECK_BUILD_INTERVAL; continue-as-new when the history grows long

Upstream (REFERENCE.md sec. 4) restarts BUILD_TIMEOUT with the process and marks every open
build not_found when a jobs fetch fails; here the deadline is durable (from when the run was
found, carried across restarts) and a failed fetch is retried, changing nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

# Only pure data modules pass through the sandbox; workflow and policy code is imported
# (and checked for non-determinism) inside it.
with workflow.unsafe.imports_passed_through():
    from models.audit import JsonFileWrite, WriteFilesInput, WriteFilesResult
    from models.competition import BuildEntry, CompetitionPaths
    from models.constants import audit_workflow_id
    from models.github import PollBuildsInput, PollBuildsResult
    from models.rounds import (
        BuildSettled,
        BuildTrackingInput,
        BuildTrackingResult,
        ReadRoundSnapshotInput,
        RoundPolicy,
        RoundSnapshot,
    )

from workflows import options
from workflows.failures import failure
from workflows.policy import builds as build_policy


@workflow.defn(name="BuildTrackingWorkflow")
class BuildTrackingWorkflow:
    """Track one round's Docker builds; see the module docstring."""

    def __init__(self) -> None:
        self._builds: dict[str, BuildEntry] = {}
        self._run_id: int | None = None

    @workflow.run
    async def run(self, input: BuildTrackingInput) -> BuildTrackingResult:
        """Write every status change of the round's builds until all are terminal."""
        policy = input.policy
        self._run_id = input.run_id
        found_at = input.run_found_at
        snapshot = await self._read(input.round)
        seeded = build_policy.seed_builds(snapshot.submissions, snapshot.builds)
        self._builds = seeded
        if seeded != snapshot.builds:
            await self._write(input.round, seeded)
        interval = timedelta(seconds=policy.check_build_interval_seconds)
        message = policy.build_commit_message.format(current_round=input.round)
        while not build_policy.all_terminal(self._builds):
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    input.model_copy(update={"run_id": self._run_id, "run_found_at": found_at})
                )
            polled = await self._poll(input.round, message)
            wait = interval
            changed: list[str] = []
            if polled is not None and polled.run_id is not None:
                if self._run_id is None:
                    workflow.logger.info(
                        "round %d: builds run %d found", input.round, polled.run_id
                    )
                    self._run_id = polled.run_id
                    found_at = workflow.now()
                if polled.jobs is not None:
                    self._builds, changed = build_policy.apply_poll(
                        self._builds, polled.jobs, policy.docker_image_format
                    )
                elif polled.error:
                    workflow.logger.warning(
                        "round %d: jobs not read: %s", input.round, polled.error
                    )
            elif polled is not None:
                wait = 2 * interval  # upstream polls for the run itself every 240 s
            if found_at is not None and workflow.now() - found_at >= timedelta(
                seconds=policy.build_timeout_seconds
            ):
                self._builds, timed_out = build_policy.time_out(self._builds)
                changed += timed_out
            if changed:
                await self._write(input.round, self._builds)
                await self._tell_audits(input.round, changed)
                await self._wake_round(input.round_workflow_id)
            if polled is not None and polled.rate_limited_until is not None:
                wait = max(polled.rate_limited_until - workflow.now(), timedelta(seconds=1))
                workflow.logger.warning("GitHub rate limit: next poll in %s", wait)
            if not build_policy.all_terminal(self._builds):
                await workflow.sleep(self._until_deadline(wait, found_at, policy))
        return BuildTrackingResult(round=input.round, builds=self._builds, run_id=self._run_id)

    @workflow.query(name="builds")
    def builds(self) -> dict[str, BuildEntry]:
        """The builds as last written."""
        return self._builds

    def _until_deadline(
        self, wait: timedelta, found_at: datetime | None, policy: RoundPolicy
    ) -> timedelta:
        """`wait`, cut short so BUILD_TIMEOUT is applied on time."""
        if found_at is None:
            return wait
        left = found_at + timedelta(seconds=policy.build_timeout_seconds) - workflow.now()
        return wait if wait <= left else max(left, timedelta(seconds=1))

    async def _read(self, round_number: int) -> RoundSnapshot:
        snapshot: RoundSnapshot = await workflow.execute_activity(
            "read_round_snapshot",
            ReadRoundSnapshotInput(round=round_number),
            result_type=RoundSnapshot,
            summary=f"read round {round_number} submissions and builds",
            **options.READ_REPO,
        )
        return snapshot

    async def _poll(self, round_number: int, message: str) -> PollBuildsResult | None:
        """One GitHub poll; None when it failed for good this time (the loop polls again)."""
        try:
            result: PollBuildsResult = await workflow.execute_activity(
                "poll_builds",
                PollBuildsInput(
                    round=round_number,
                    run_id=self._run_id,
                    hotkeys=sorted(self._builds),
                    commit_message=message,
                ),
                result_type=PollBuildsResult,
                summary=f"poll GitHub Actions for round {round_number}",
                **options.POLL_GITHUB,
            )
        except ActivityError as e:
            workflow.logger.warning("round %d: GitHub poll failed: %s", round_number, failure(e)[0])
            return None
        return result

    async def _write(self, round_number: int, builds: dict[str, BuildEntry]) -> None:
        await workflow.execute_activity(
            "write_files",
            WriteFilesInput(
                message=f"Update build statuses for round {round_number}",
                files=[
                    JsonFileWrite(
                        path=CompetitionPaths.builds(round_number),
                        value={h: b.model_dump(mode="json") for h, b in builds.items()},
                    )
                ],
            ),
            result_type=WriteFilesResult,
            summary="write builds.json",
            **options.WRITE_REPO,
        )

    async def _wake_round(self, round_workflow_id: str | None) -> None:
        """The round loop starts audits whose build settled without waiting for its tick."""
        if round_workflow_id is None:
            return
        try:
            await workflow.get_external_workflow_handle(round_workflow_id).signal("wake")
        except Exception:  # the loop is not running: it reads builds.json when it starts
            workflow.logger.debug("round workflow %s not running", round_workflow_id)

    async def _tell_audits(self, round_number: int, hotkeys: list[str]) -> None:
        """Wake the audits waiting for these builds (an audit not running yet reads the file)."""
        for hotkey in hotkeys:
            build = self._builds[hotkey]
            if not build.status.terminal:
                continue
            handle = workflow.get_external_workflow_handle(audit_workflow_id(round_number, hotkey))
            try:
                await handle.signal("build_settled", BuildSettled(hotkey=hotkey, build=build))
            except Exception:  # no such audit running: nothing to wake
                workflow.logger.debug("no running audit of %s to tell", hotkey)
