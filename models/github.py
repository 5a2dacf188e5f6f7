"""Wire models of build tracking: one poll of the competition repo's GitHub Actions run.

Owns the input and result of the `poll_builds` activity (activities/github.py) and the one
job shape the build policy (workflows/policy/builds.py) reads. No I/O, no decisions here.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BuildJob(_Frozen):
    """One GitHub Actions job, as build tracking needs it.

    `status` is GitHub's (queued, in_progress, completed, waiting, ...); `conclusion` is set once
    the job completed (success, failure, cancelled, skipped, timed_out, action_required, ...).
    """

    name: str
    status: str
    conclusion: str | None = None


class PollBuildsInput(_Frozen):
    """One poll of a round's build run.

    `run_id` None means the run was not found yet: the activity looks it up by `commit_message`
    (BUILD_COMMIT_MESSAGE already formatted, e.g. "submissions for round 3"), which the run's head
    commit message must end with. Only the jobs of `hotkeys` are returned.
    """

    round: int
    run_id: int | None = None
    hotkeys: list[str]
    commit_message: str


class PollBuildsResult(_Frozen):
    """What one poll saw.

    `run_id` None: the run is not found yet (`jobs` is None too). `jobs` None with a `run_id`:
    the jobs could not be fetched this time (`error` says why; poll again, nothing changed).
    `jobs` holds only the jobs named after a requested hotkey; a hotkey without one has no job.
    `rate_limited_until` set: GitHub asked us not to call before then (UTC); whatever was found
    before the limit hit is kept (a run id, never a partial job list) and `error` says where.
    """

    run_id: int | None
    jobs: list[BuildJob] | None
    rate_limited_until: datetime | None = Field(
        default=None, description="UTC time before which GitHub should not be asked again"
    )
    error: str | None = None
