"""GitHubActivities.poll_builds against FakeGitHub, a real loopback HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.github import (
    GITHUB_ACCESS_DENIED,
    GITHUB_REPO_NOT_FOUND,
    GITHUB_UNAVAILABLE,
    GitHubActivities,
    _rate_limited_until,
)
from demo.fake_github import FakeGitHub
from models.github import BuildJob, PollBuildsInput, PollBuildsResult
from workflows.policy.builds import job_name

REPO = "404-Repo/404-competition-test"
TOKEN = "ghs_test_token"
HK_A = "5F4HanqjaXLtAaBsRjy4zgUS3rbaGHSP5ZBXQYBD6UFfHbbN"
HK_B = "5GgpGaDxzTyBAME1Ju9ZhUstWj2VTm1n4tAUkRHLi4birQZg"
MESSAGE = "submissions for round 3"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(REPO) as fake:
        yield fake


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def acts(github: FakeGitHub, http: httpx.AsyncClient) -> GitHubActivities:
    return GitHubActivities(http, github.api_url, REPO, TOKEN)


def poll_input(run_id: int | None = None, hotkeys: list[str] | None = None) -> PollBuildsInput:
    return PollBuildsInput(
        round=3, run_id=run_id, hotkeys=hotkeys or [HK_A, HK_B], commit_message=MESSAGE
    )


async def poll(acts: GitHubActivities, input: PollBuildsInput | None = None) -> PollBuildsResult:
    return await ActivityEnvironment().run(acts.poll_builds, input or poll_input())


async def poll_error(
    acts: GitHubActivities, input: PollBuildsInput | None = None
) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await poll(acts, input)
    return info.value


def paths(github: FakeGitHub) -> list[str]:
    return [r.path for r in github.requests]


async def test_finds_the_run_by_message_suffix_and_lists_the_hotkeys_jobs(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    """The newest run whose message ends with the suffix (trailing whitespace ignored)."""
    github.add_run("Add submissions for round 3\n", [HK_A, HK_B])  # older match
    wanted = github.add_run("Re-collect submissions for round 3  \n", [HK_A, HK_B, "other"])
    github.add_run("Add submissions for round 3 (draft)", [HK_A])  # newest, no match
    github.set_job(wanted, HK_A, "in_progress")
    github.set_job(wanted, HK_B, "completed", "failure")

    result = await poll(acts)

    assert result == PollBuildsResult(
        run_id=wanted,
        jobs=[
            BuildJob(name=job_name(HK_A), status="in_progress", conclusion=None),
            BuildJob(name=job_name(HK_B), status="completed", conclusion="failure"),
        ],
    )
    runs, jobs = github.requests
    assert runs.path == f"/repos/{REPO}/actions/runs"
    assert runs.query == {}
    assert jobs.path == f"/repos/{REPO}/actions/runs/{wanted}/jobs"
    assert jobs.query == {"per_page": "100", "page": "1"}


async def test_sends_the_token_as_bearer(github: FakeGitHub, acts: GitHubActivities) -> None:
    github.require_token(TOKEN)
    github.add_run(MESSAGE, [HK_A])

    result = await poll(acts)

    assert result.jobs is not None
    assert [r.authorization for r in github.requests] == [f"Bearer {TOKEN}"] * 2


async def test_without_a_token_no_authorization_is_sent(
    github: FakeGitHub, http: httpx.AsyncClient
) -> None:
    github.add_run(MESSAGE, [HK_A])

    await poll(GitHubActivities(http, github.api_url, REPO, None))

    assert [r.authorization for r in github.requests] == [None, None]


async def test_a_rejected_token_is_not_retried(github: FakeGitHub, http: httpx.AsyncClient) -> None:
    github.require_token(TOKEN)
    github.add_run(MESSAGE, [HK_A])

    error = await poll_error(GitHubActivities(http, github.api_url, REPO, "wrong"))

    assert error.non_retryable
    assert error.type == GITHUB_ACCESS_DENIED
    assert "HTTP 401" in error.message


async def test_run_not_found_yet_then_found(github: FakeGitHub, acts: GitHubActivities) -> None:
    run_id = github.add_run(MESSAGE, [HK_A])
    github.hide_runs(1)

    assert await poll(acts) == PollBuildsResult(run_id=None, jobs=None)
    assert paths(github) == [f"/repos/{REPO}/actions/runs"]  # no jobs request without a run

    result = await poll(acts)
    assert result.run_id == run_id
    assert result.jobs == [BuildJob(name=job_name(HK_A), status="queued", conclusion=None)]


async def test_only_runs_with_the_suffix_count(github: FakeGitHub, acts: GitHubActivities) -> None:
    github.add_run("submissions for round 13", [HK_A])
    github.add_run("submissions for round 3 retry", [HK_A])

    assert await poll(acts) == PollBuildsResult(run_id=None, jobs=None)


async def test_a_known_run_is_not_looked_up_again(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    run_id = github.add_run("unrelated message", [HK_A])
    github.set_job(run_id, HK_A, "completed", "success")

    result = await poll(acts, poll_input(run_id=run_id))

    assert result.jobs == [BuildJob(name=job_name(HK_A), status="completed", conclusion="success")]
    assert paths(github) == [f"/repos/{REPO}/actions/runs/{run_id}/jobs"]


async def test_pages_through_more_than_100_jobs(github: FakeGitHub, acts: GitHubActivities) -> None:
    """150 unrelated jobs come first: the hotkeys' jobs are on page 2, which ends the paging."""
    run_id = github.add_run(MESSAGE, [HK_A, HK_B])
    github.extra_jobs(150)
    github.set_job(run_id, HK_B, "completed", "success")

    result = await poll(acts, poll_input(run_id=run_id))

    assert result.jobs == [
        BuildJob(name=job_name(HK_A), status="queued", conclusion=None),
        BuildJob(name=job_name(HK_B), status="completed", conclusion="success"),
    ]
    assert [r.query["page"] for r in github.requests] == ["1", "2"]


async def test_a_full_last_page_is_followed_by_an_empty_one(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    run_id = github.add_run(MESSAGE, [HK_A, HK_B])
    github.extra_jobs(98)

    result = await poll(acts, poll_input(run_id=run_id))

    assert result.jobs is not None
    assert len(result.jobs) == 2
    assert [r.query["page"] for r in github.requests] == ["1", "2"]


async def test_a_missing_job_is_left_out(github: FakeGitHub, acts: GitHubActivities) -> None:
    run_id = github.add_run(MESSAGE, [HK_A, HK_B])
    github.remove_job(run_id, HK_B)

    result = await poll(acts)

    assert result.run_id == run_id
    assert result.jobs == [BuildJob(name=job_name(HK_A), status="queued", conclusion=None)]


async def test_403_rate_limit_returns_the_reset_time(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    github.add_run(MESSAGE, [HK_A])
    github.rate_limit(1, reset_in_s=120)
    before = datetime.now(UTC)

    result = await poll(acts)

    assert result.run_id is None
    assert result.jobs is None
    assert result.rate_limited_until is not None
    assert result.rate_limited_until.tzinfo is not None
    # X-RateLimit-Reset is whole epoch seconds
    assert before + timedelta(seconds=118) <= result.rate_limited_until
    assert result.rate_limited_until <= datetime.now(UTC) + timedelta(seconds=121)
    assert result.error is not None
    assert "HTTP 403" in result.error
    assert len(github.requests) == 1

    assert (await poll(acts)).jobs is not None  # the limit is over


async def test_429_retry_after_while_listing_jobs_keeps_the_run(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    run_id = github.add_run(MESSAGE, [HK_A])
    github.rate_limit(1, reset_in_s=30, kind="429")
    before = datetime.now(UTC)

    result = await poll(acts, poll_input(run_id=run_id))

    assert result.run_id == run_id
    assert result.jobs is None
    assert result.rate_limited_until is not None
    assert before + timedelta(seconds=30) <= result.rate_limited_until
    assert result.rate_limited_until <= datetime.now(UTC) + timedelta(seconds=30)


async def test_502_is_a_retryable_error_naming_url_and_status(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    github.add_run(MESSAGE, [HK_A])
    github.fail(1, status=502)

    error = await poll_error(acts)

    assert not error.non_retryable
    assert error.type == GITHUB_UNAVAILABLE
    assert f"{github.api_url}/repos/{REPO}/actions/runs" in error.message
    assert "HTTP 502" in error.message
    assert (await poll(acts)).jobs is not None  # the retry succeeds


async def test_5xx_on_the_jobs_is_retried_too(github: FakeGitHub, acts: GitHubActivities) -> None:
    run_id = github.add_run(MESSAGE, [HK_A])
    github.fail(1, status=503)

    error = await poll_error(acts, poll_input(run_id=run_id))

    assert not error.non_retryable
    assert f"/actions/runs/{run_id}/jobs" in error.message
    assert "HTTP 503" in error.message


async def test_a_timeout_is_a_retryable_error(github: FakeGitHub, http: httpx.AsyncClient) -> None:
    github.add_run(MESSAGE, [HK_A])
    github.slow(0.5)
    acts = GitHubActivities(http, github.api_url, REPO, TOKEN, timeout=0.05)

    error = await poll_error(acts)

    assert not error.non_retryable
    assert error.type == GITHUB_UNAVAILABLE
    assert "/actions/runs" in error.message


async def test_403_without_rate_limit_headers_is_not_retried(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    github.add_run(MESSAGE, [HK_A])
    github.fail(1, status=403)

    error = await poll_error(acts)

    assert error.non_retryable
    assert error.type == GITHUB_ACCESS_DENIED
    assert f"{github.api_url}/repos/{REPO}/actions/runs" in error.message
    assert "lacks access" in error.message


async def test_an_unknown_repo_is_not_retried(github: FakeGitHub, http: httpx.AsyncClient) -> None:
    acts = GitHubActivities(http, github.api_url, "nobody/nothing", TOKEN)

    error = await poll_error(acts)

    assert error.non_retryable
    assert error.type == GITHUB_REPO_NOT_FOUND
    assert "GITHUB_REPO 'nobody/nothing'" in error.message


async def test_other_jobs_errors_leave_jobs_unknown(
    github: FakeGitHub, acts: GitHubActivities
) -> None:
    """A run that vanished (404 on its jobs) is reported, not raised: nothing changes."""
    result = await poll(acts, poll_input(run_id=123))

    assert result.run_id == 123
    assert result.jobs is None
    assert result.rate_limited_until is None
    assert result.error is not None
    assert "HTTP 404" in result.error
    assert "/actions/runs/123/jobs" in result.error


def test_activity_is_registered_by_name(acts: GitHubActivities) -> None:
    [fn] = acts.activities()
    assert fn == acts.poll_builds


NOW = datetime(2026, 4, 9, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (403, {"Retry-After": "7"}, "", NOW + timedelta(seconds=7)),
        (429, {"Retry-After": "Thu, 09 Apr 2026 12:05:00 GMT"}, "", NOW + timedelta(minutes=5)),
        (
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW.timestamp()) + 90)},
            "",
            NOW + timedelta(seconds=90),
        ),
        (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}, "", NOW),  # past reset
        (
            403,
            {},
            '{"message": "You have exceeded a secondary rate limit"}',
            NOW + timedelta(seconds=60),
        ),
        (429, {}, "", NOW + timedelta(seconds=60)),
        (403, {"X-RateLimit-Remaining": "12"}, '{"message": "Forbidden"}', None),
        (403, {}, '{"message": "Resource not accessible by integration"}', None),
    ],
)
def test_rate_limit_signals(
    status: int, headers: dict[str, str], body: str, expected: datetime | None
) -> None:
    """Retry-After wins, then X-RateLimit-Reset at 0 remaining, then a minute for a 429 or a
    message naming a rate limit; never earlier than now."""
    response = httpx.Response(status, headers=headers, text=body)
    assert _rate_limited_until(response, NOW) == expected


async def test_fake_github_payloads_look_like_githubs(
    github: FakeGitHub, http: httpx.AsyncClient
) -> None:
    """The fake's runs and jobs carry GitHub's fields, newest run first, paged 30 by default."""
    for i in range(35):
        github.add_run(f"commit {i}", [HK_A])
    last = github.add_run(MESSAGE, [HK_A, HK_B])
    github.set_job(last, HK_A, "completed", "success")

    runs = (await http.get(f"{github.api_url}/repos/{REPO}/actions/runs")).json()
    assert runs["total_count"] == 36
    assert len(runs["workflow_runs"]) == 30
    newest = runs["workflow_runs"][0]
    assert newest["id"] == last
    assert newest["head_commit"]["message"] == MESSAGE
    assert newest["head_commit"]["id"] == newest["head_sha"]
    assert {"name", "head_branch", "status", "conclusion", "created_at"} <= set(newest)
    assert newest["status"] == "in_progress"

    url = f"{github.api_url}/repos/{REPO}/actions/runs/{last}/jobs"
    page = (await http.get(url, params={"per_page": 1, "page": 2})).json()
    assert page["total_count"] == 2
    [job] = page["jobs"]
    assert job["name"] == job_name(HK_B)
    assert job["run_id"] == last
    assert {"id", "status", "conclusion", "started_at", "completed_at"} <= set(job)
