"""Build tracking policy (workflows/policy/builds.py) against upstream c263c11 build_tracker.py."""

from __future__ import annotations

import pytest

from models.competition import BuildEntry, BuildStatus, Submission
from models.github import BuildJob
from workflows.policy.builds import (
    all_terminal,
    apply_poll,
    build_tag,
    docker_image,
    job_name,
    seed_builds,
    status_of,
    time_out,
)

IMAGE_FORMAT = "europe-west3-docker.pkg.dev/gen-456515/active-competition/{hotkey10}:{tag}"
HK_A = "5F4HanqjaXLtAaBsRjy4zgUS3rbaGHSP5ZBXQYBD6UFfHbbN"
HK_B = "5GgpGaDxzTyBAME1Ju9ZhUstWj2VTm1n4tAUkRHLi4birQZg"


def submission(commit: str = "9648aad0c1e2f3", tag: str = "mesh-4") -> Submission:
    return Submission(repo="miner/repo", commit=commit, revealed_at_block=123, round=tag)


def build(status: BuildStatus, image: str | None = None) -> BuildEntry:
    return BuildEntry(
        repo="miner/repo",
        commit="9648aad0c1e2f3",
        revealed_at_block=123,
        tag="9648aad-mesh-4",
        status=status,
        docker_image=image,
    )


def job(hotkey: str, status: str, conclusion: str | None = None) -> BuildJob:
    return BuildJob(name=job_name(hotkey), status=status, conclusion=conclusion)


def test_tag_image_and_job_name_follow_upstream() -> None:
    """tag = commit[:7]-round; image = format(hotkey[:10], tag) lowercased as a whole."""
    assert build_tag("9648aad0c1e2f3", "mesh-4") == "9648aad-mesh-4"
    assert docker_image(HK_A, "9648AAD-Mesh-4", IMAGE_FORMAT) == (
        "europe-west3-docker.pkg.dev/gen-456515/active-competition/5f4hanqjax:9648aad-mesh-4"
    )
    assert docker_image("HK", "T", "Registry.IO/{hotkey10}:{tag}") == "registry.io/hk:t"
    assert job_name(HK_A) == f"Bake and push images to Google Cloud ({HK_A})"


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (None, BuildStatus.NOT_FOUND),
        (BuildJob(name="j", status="queued"), BuildStatus.PENDING),
        (BuildJob(name="j", status="waiting"), BuildStatus.PENDING),
        (BuildJob(name="j", status="in_progress"), BuildStatus.IN_PROGRESS),
        (BuildJob(name="j", status="completed", conclusion="success"), BuildStatus.SUCCESS),
        (BuildJob(name="j", status="completed", conclusion="failure"), BuildStatus.FAILURE),
        (BuildJob(name="j", status="completed", conclusion="cancelled"), BuildStatus.FAILURE),
        (BuildJob(name="j", status="completed", conclusion="skipped"), BuildStatus.FAILURE),
        (BuildJob(name="j", status="completed", conclusion="timed_out"), BuildStatus.FAILURE),
        (
            BuildJob(name="j", status="completed", conclusion="action_required"),
            BuildStatus.FAILURE,
        ),
        (BuildJob(name="j", status="completed", conclusion="neutral"), BuildStatus.PENDING),
        (BuildJob(name="j", status="completed", conclusion="stale"), BuildStatus.PENDING),
    ],
)
def test_status_of_every_job_state(found: BuildJob | None, expected: BuildStatus) -> None:
    assert status_of(found) is expected


def test_seed_marks_every_submission_pending_with_its_tag() -> None:
    seeded = seed_builds({HK_A: submission(), HK_B: submission("abcdef1234", "mesh-5")}, {})

    assert list(seeded) == [HK_A, HK_B]
    assert seeded[HK_A].model_dump() == {
        "repo": "miner/repo",
        "commit": "9648aad0c1e2f3",
        "revealed_at_block": 123,
        "tag": "9648aad-mesh-4",
        "status": BuildStatus.PENDING,
        "docker_image": None,
    }
    assert seeded[HK_B].tag == "abcdef1-mesh-5"


def test_seed_keeps_existing_entries_so_a_restart_resets_nothing() -> None:
    done = build(BuildStatus.SUCCESS, "img:1")
    orphan = build(BuildStatus.FAILURE)
    existing = {HK_A: done, "someone-else": orphan}

    seeded = seed_builds({HK_A: submission("0000000fff", "mesh-9"), HK_B: submission()}, existing)

    assert seeded[HK_A] == done
    assert seeded[HK_B].status is BuildStatus.PENDING
    assert seeded["someone-else"] == orphan
    assert list(seeded) == [HK_A, HK_B, "someone-else"]


def test_apply_poll_moves_builds_and_reports_changes() -> None:
    builds = {HK_A: build(BuildStatus.PENDING), HK_B: build(BuildStatus.PENDING)}

    builds, changed = apply_poll(
        builds, [job(HK_A, "in_progress"), job(HK_B, "queued")], IMAGE_FORMAT
    )
    assert changed == [HK_A]
    assert builds[HK_A].status is BuildStatus.IN_PROGRESS
    assert builds[HK_B].status is BuildStatus.PENDING

    jobs = [job(HK_A, "completed", "success"), job(HK_B, "completed", "failure")]
    builds, changed = apply_poll(builds, jobs, IMAGE_FORMAT)
    assert changed == [HK_A, HK_B]
    assert builds[HK_A].status is BuildStatus.SUCCESS
    assert builds[HK_A].docker_image == (
        "europe-west3-docker.pkg.dev/gen-456515/active-competition/5f4hanqjax:9648aad-mesh-4"
    )
    assert builds[HK_B].status is BuildStatus.FAILURE
    assert builds[HK_B].docker_image is None
    assert all_terminal(builds)


def test_apply_poll_without_the_hotkeys_job_is_not_found() -> None:
    builds = {HK_A: build(BuildStatus.IN_PROGRESS)}
    other = BuildJob(name=job_name(HK_B), status="completed", conclusion="success")

    updated, changed = apply_poll(builds, [other], IMAGE_FORMAT)

    assert changed == [HK_A]
    assert updated[HK_A].status is BuildStatus.NOT_FOUND
    assert HK_B not in updated


def test_apply_poll_matches_the_full_hotkey_case_kept() -> None:
    builds = {HK_A: build(BuildStatus.PENDING)}
    lowered = BuildJob(name=job_name(HK_A.lower()), status="completed", conclusion="success")

    updated, _ = apply_poll(builds, [lowered], IMAGE_FORMAT)

    assert updated[HK_A].status is BuildStatus.NOT_FOUND


@pytest.mark.parametrize(
    "status",
    [BuildStatus.SUCCESS, BuildStatus.FAILURE, BuildStatus.NOT_FOUND, BuildStatus.TIMED_OUT],
)
def test_terminal_builds_never_change(status: BuildStatus) -> None:
    before = build(status, "kept:image" if status is BuildStatus.SUCCESS else None)
    builds = {HK_A: before}

    for jobs in ([], [job(HK_A, "in_progress")], [job(HK_A, "completed", "success")]):
        after, changed = apply_poll(builds, jobs, IMAGE_FORMAT)
        assert changed == []
        assert after[HK_A] == before
    after, changed = time_out(builds)
    assert changed == []
    assert after[HK_A] == before


def test_apply_poll_does_not_mutate_its_input() -> None:
    builds = {HK_A: build(BuildStatus.PENDING)}

    apply_poll(builds, [job(HK_A, "completed", "success")], IMAGE_FORMAT)

    assert builds[HK_A].status is BuildStatus.PENDING
    assert builds[HK_A].docker_image is None


def test_time_out_ends_every_unfinished_build() -> None:
    builds = {
        HK_A: build(BuildStatus.PENDING),
        HK_B: build(BuildStatus.IN_PROGRESS),
        "done": build(BuildStatus.SUCCESS, "img"),
        "gone": build(BuildStatus.NOT_FOUND),
    }
    assert not all_terminal(builds)

    after, changed = time_out(builds)

    assert changed == [HK_A, HK_B]
    assert after[HK_A].status is BuildStatus.TIMED_OUT
    assert after[HK_B].status is BuildStatus.TIMED_OUT
    assert after["done"] == builds["done"]
    assert after["gone"] == builds["gone"]
    assert builds[HK_A].status is BuildStatus.PENDING
    assert all_terminal(after)


def test_all_terminal() -> None:
    assert all_terminal({})
    assert not all_terminal({HK_A: build(BuildStatus.PENDING)})
    assert not all_terminal({HK_A: build(BuildStatus.IN_PROGRESS)})
    assert all_terminal({HK_A: build(BuildStatus.TIMED_OUT), HK_B: build(BuildStatus.FAILURE)})
