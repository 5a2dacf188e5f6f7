"""Build tracking decisions, as upstream c263c11 makes them (pure; `build_tracker.py`).

Owns: the seed of `rounds/{n}/builds.json`, the build tag and docker image name, the job name
that ties an Actions job to a hotkey, the status a job implies, and how a poll, or the
BUILD_TIMEOUT deadline, changes the builds. No I/O and no clock: these run inside workflows;
`activities/github.py` fetches the jobs and the workflow owns the deadline.

One upstream quirk is deliberately not copied (REFERENCE.md sec. 18, item 2): upstream turns
every non-terminal build into `not_found` (terminal, so the audit is rejected with "Failed to
build a docker image") whenever one fetch of the jobs fails. Here a failed fetch changes
nothing: the caller simply does not call `apply_poll` and polls again later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from models.competition import BuildEntry, BuildStatus, Submission
from models.github import BuildJob

JOB_NAME_FORMAT = "Bake and push images to Google Cloud ({hotkey})"
"""The name of the Actions job that builds one hotkey's image (full hotkey, case kept)."""

FAILED_CONCLUSIONS = frozenset({"failure", "cancelled", "skipped", "timed_out", "action_required"})
"""Job conclusions that mean the build failed."""

_UNFINISHED = (BuildStatus.PENDING, BuildStatus.IN_PROGRESS)


def build_tag(commit: str, round_tag: str) -> str:
    """The image tag of a submission: `{commit[:7]}-{round_tag}` (e.g. `9648aad-mesh-4`)."""
    return f"{commit[:7]}-{round_tag}"


def docker_image(hotkey: str, tag: str, image_format: str) -> str:
    """`image_format` (DOCKER_IMAGE_FORMAT, `RoundPolicy.docker_image_format`)
    filled with `hotkey10` (= hotkey[:10]) and `tag`, then lowercased as a whole."""
    return image_format.format(hotkey10=hotkey[:10], tag=tag).lower()


def job_name(hotkey: str) -> str:
    """The Actions job name that belongs to `hotkey`."""
    return JOB_NAME_FORMAT.format(hotkey=hotkey)


def seed_builds(
    submissions: Mapping[str, Submission], existing: Mapping[str, BuildEntry]
) -> dict[str, BuildEntry]:
    """builds.json as upstream seeds it, merged with what is already written.

    Every submission gets a `pending` entry with its tag and no docker image (submissions order),
    unless `existing` (builds.json as read) already has an entry for the hotkey: that entry is
    kept as is, so a restart never resets a status already written. Existing entries of hotkeys
    that are not in `submissions` are kept too (after the others): nothing written is dropped.
    """
    seeded: dict[str, BuildEntry] = {}
    for hotkey, submission in submissions.items():
        entry = existing.get(hotkey)
        if entry is None:
            entry = BuildEntry(
                repo=submission.repo,
                commit=submission.commit,
                revealed_at_block=submission.revealed_at_block,
                tag=build_tag(submission.commit, submission.round),
                status=BuildStatus.PENDING,
                docker_image=None,
            )
        seeded[hotkey] = entry
    for hotkey, entry in existing.items():
        seeded.setdefault(hotkey, entry)
    return seeded


def status_of(job: BuildJob | None) -> BuildStatus:
    """The build status a job implies (REFERENCE.md sec. 4).

    No job: `not_found`. Conclusion `success`: `success`; failure, cancelled, skipped, timed_out
    or action_required: `failure`. Otherwise status `in_progress`: `in_progress`; anything else
    (queued, waiting, an unknown conclusion, ...): `pending`. As upstream, the conclusion is
    looked at before the status.
    """
    if job is None:
        return BuildStatus.NOT_FOUND
    if job.conclusion == "success":
        return BuildStatus.SUCCESS
    if job.conclusion in FAILED_CONCLUSIONS:
        return BuildStatus.FAILURE
    if job.status == "in_progress":
        return BuildStatus.IN_PROGRESS
    return BuildStatus.PENDING


def apply_poll(
    builds: Mapping[str, BuildEntry],
    jobs: Iterable[BuildJob],
    image_format: str,
) -> tuple[dict[str, BuildEntry], list[str]]:
    """The builds after one successful fetch of the run's jobs, and the hotkeys that changed.

    A job belongs to a hotkey when it is named exactly `job_name(hotkey)` (the last such job
    wins, as upstream). Terminal builds never change. A non-terminal build whose job is missing
    from the fetched jobs becomes `not_found`; one whose job succeeded gets its `docker_image`.
    Do not call this when the fetch failed (see the module docstring). Inputs are not mutated.
    """
    by_name = {job.name: job for job in jobs}
    updated: dict[str, BuildEntry] = {}
    changed: list[str] = []
    for hotkey, build in builds.items():
        updated[hotkey] = build
        if build.status.terminal:
            continue
        status = status_of(by_name.get(job_name(hotkey)))
        if status == build.status:
            continue
        update: dict[str, object] = {"status": status}
        if status is BuildStatus.SUCCESS:
            update["docker_image"] = docker_image(hotkey, build.tag, image_format)
        updated[hotkey] = build.model_copy(update=update)
        changed.append(hotkey)
    return updated, changed


def time_out(builds: Mapping[str, BuildEntry]) -> tuple[dict[str, BuildEntry], list[str]]:
    """BUILD_TIMEOUT passed: every pending or in_progress build becomes `timed_out`.

    Returns the new builds and the hotkeys that changed; inputs are not mutated.
    """
    updated: dict[str, BuildEntry] = {}
    changed: list[str] = []
    for hotkey, build in builds.items():
        if build.status in _UNFINISHED:
            build = build.model_copy(update={"status": BuildStatus.TIMED_OUT})
            changed.append(hotkey)
        updated[hotkey] = build
    return updated, changed


def all_terminal(builds: Mapping[str, BuildEntry]) -> bool:
    """Every build reached a status that never changes (True for no builds, as upstream)."""
    return all(build.status.terminal for build in builds.values())
