"""GitHub Actions access for build tracking: the `poll_builds` activity.

Owns: the GitHub REST calls that find a round's build run and list its jobs (upstream c263c11
`subnet_common/github.py:124-159`: same endpoints, headers and 30 s timeout), and the mapping of
GitHub's answers onto results and errors. One call is one poll: it never sleeps. Deciding what a
job means for builds.json is `workflows.policy.builds`; when to poll again is the workflow's.

Errors (upstream has no rate-limit handling; this is ours):
- rate limited (403/429 with `Retry-After`, or `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset`,
  or a 403/429 whose message says "rate limit", which GitHub asks to wait a minute for): a
  result with `rate_limited_until` and what was found before;
- 5xx, 408 and network errors: a retryable `ApplicationError` (Temporal's retry policy backs
  off durably);
- 401, or 403 without rate-limit signs: non-retryable GITHUB_ACCESS_DENIED naming the URL;
- 404 on the runs list: non-retryable GITHUB_REPO_NOT_FOUND naming GITHUB_REPO (another 4xx
  there: non-retryable GITHUB_REQUEST_REJECTED);
- any other failure to list the jobs of a found run: a result with `jobs` None and `error`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.github import BuildJob, PollBuildsInput, PollBuildsResult
from workflows.policy.builds import job_name

GITHUB_ACCESS_DENIED = "GitHubAccessDenied"
"""`ApplicationError.type`: GITHUB_TOKEN is missing, invalid or lacks access (non-retryable)."""
GITHUB_REPO_NOT_FOUND = "GitHubRepoNotFound"
"""`ApplicationError.type`: GITHUB_REPO has no Actions runs list (non-retryable)."""
GITHUB_UNAVAILABLE = "GitHubUnavailable"
"""`ApplicationError.type`: 5xx, timeout, network error or unreadable payload; retryable."""
GITHUB_REQUEST_REJECTED = "GitHubRequestRejected"
"""`ApplicationError.type`: the runs list answered another 4xx (non-retryable)."""

REQUEST_TIMEOUT_SECONDS = 30.0
"""Upstream's GitHub client timeout."""
JOBS_PER_PAGE = 100
MAX_JOB_PAGES = 50
"""A run with more than 5000 jobs is not a build run; stop paging rather than loop."""
DEFAULT_RATE_LIMIT_WAIT = timedelta(seconds=60)
"""GitHub: on a secondary rate limit without headers, wait at least one minute."""
ERROR_BODY_CHARS = 200

_RETRYABLE_STATUSES = frozenset({408})


class _RateLimited(Exception):
    """GitHub asked us to wait until `until` (internal; becomes a result)."""

    def __init__(self, url: str, status: int, until: datetime) -> None:
        self.until = until
        super().__init__(f"GET {url}: HTTP {status}, rate limited until {until.isoformat()}")


class _JobsUnavailable(Exception):
    """The jobs of a found run could not be listed this time (internal; becomes a result)."""


class GitHubActivities:
    """Activities that read the competition repo's GitHub Actions: `poll_builds`.

    Owns an injected `httpx.AsyncClient` (not closed here: the worker owns its lifetime), the
    API base URL, GITHUB_REPO and GITHUB_TOKEN (secrets arrive through the constructor, never
    through workflow inputs).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_url: str,
        repo: str,
        token: str | None,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        """Bind the activity to its dependencies.

        Args:
            http: Shared client; requests carry their own headers and timeout.
            api_url: GitHub API base, e.g. `https://api.github.com` (no trailing slash needed).
            repo: GITHUB_REPO, `owner/name`.
            token: GITHUB_TOKEN, sent as `Authorization: Bearer ...` when set.
            timeout: Seconds per request (upstream: 30).
        """
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._repo = repo
        self._timeout = timeout
        self._headers = {
            "Accept": "application/vnd.github.v3+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def activities(self) -> list[Callable[..., Any]]:
        """The bound activity methods, for `Worker(activities=...)`."""
        return [self.poll_builds]

    @activity.defn(name="poll_builds")
    async def poll_builds(self, input: PollBuildsInput) -> PollBuildsResult:
        """One poll of the round's build run: find the run if `input.run_id` is None, then list
        the jobs of `input.hotkeys`. Never sleeps; read-only, so safe to retry.

        The run is the first one of the runs list's first page (as upstream) whose head commit
        message, trailing whitespace stripped, ends with `input.commit_message`.

        Raises:
            ApplicationError: Retryable GITHUB_UNAVAILABLE on 5xx, 408, a network error or an
                unreadable runs list; non-retryable GITHUB_ACCESS_DENIED (401, or 403 that is
                not a rate limit) and GITHUB_REPO_NOT_FOUND (404 on the runs list).
        """
        run_id = input.run_id
        if run_id is None:
            try:
                run_id = await self._find_run(input.commit_message)
            except _RateLimited as e:
                return PollBuildsResult(
                    run_id=None, jobs=None, rate_limited_until=e.until, error=str(e)
                )
            if run_id is None:
                return PollBuildsResult(run_id=None, jobs=None)
            activity.logger.info("round %d: build run %d found", input.round, run_id)
        try:
            jobs = await self._jobs(run_id, input.hotkeys)
        except _RateLimited as e:
            return PollBuildsResult(
                run_id=run_id, jobs=None, rate_limited_until=e.until, error=str(e)
            )
        except _JobsUnavailable as e:
            activity.logger.warning("round %d: %s", input.round, e)
            return PollBuildsResult(run_id=run_id, jobs=None, error=str(e))
        return PollBuildsResult(run_id=run_id, jobs=jobs)

    # --- calls ------------------------------------------------------------------------------

    async def _find_run(self, commit_message: str) -> int | None:
        """Id of the first run on the runs list's first page whose message ends as asked."""
        url = f"{self._api_url}/repos/{self._repo}/actions/runs"
        response = await self._get(url)
        if response.status_code == 404:
            raise ApplicationError(
                f"GET {url}: HTTP 404: GITHUB_REPO {self._repo!r} not found "
                "(or GITHUB_TOKEN cannot see it)",
                type=GITHUB_REPO_NOT_FOUND,
                non_retryable=True,
            )
        if not response.is_success:
            raise ApplicationError(
                f"GET {url}: HTTP {response.status_code}: {_body(response)}",
                type=GITHUB_REQUEST_REJECTED,
                non_retryable=True,
            )
        try:
            runs = response.json()["workflow_runs"]
            for run in runs:
                head = run.get("head_commit") or {}
                message = head.get("message")
                if isinstance(message, str) and message.rstrip().endswith(commit_message):
                    return int(run["id"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ApplicationError(
                f"GET {url}: unexpected runs payload ({type(e).__name__}: {e}), will retry",
                type=GITHUB_UNAVAILABLE,
            ) from e
        return None

    async def _jobs(self, run_id: int, hotkeys: list[str]) -> list[BuildJob]:
        """The jobs of `run_id` named after one of `hotkeys`, over every page."""
        wanted = {job_name(hotkey) for hotkey in hotkeys}
        url = f"{self._api_url}/repos/{self._repo}/actions/runs/{run_id}/jobs"
        jobs: list[BuildJob] = []
        for page in range(1, MAX_JOB_PAGES + 1):
            response = await self._get(url, {"per_page": JOBS_PER_PAGE, "page": page})
            if not response.is_success:
                raise _JobsUnavailable(
                    f"GET {url} page {page}: HTTP {response.status_code}: {_body(response)}"
                )
            try:
                batch = response.json()["jobs"]
                for raw in batch:
                    if raw["name"] in wanted:
                        jobs.append(
                            BuildJob(
                                name=raw["name"],
                                status=raw["status"],
                                conclusion=raw.get("conclusion"),
                            )
                        )
                size = len(batch)
            except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as e:
                raise _JobsUnavailable(
                    f"GET {url} page {page}: unexpected jobs payload ({type(e).__name__}: {e})"
                ) from e
            if size < JOBS_PER_PAGE:
                return jobs
        raise _JobsUnavailable(f"GET {url}: more than {MAX_JOB_PAGES} pages of jobs")

    async def _get(self, url: str, params: dict[str, int] | None = None) -> httpx.Response:
        """GET with upstream's headers; raises on what every endpoint treats alike (see the
        module docstring) and returns any other response."""
        try:
            response = await self._http.get(
                url,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
                follow_redirects=True,
            )
        except httpx.TransportError as e:
            raise ApplicationError(
                f"GET {url}: {type(e).__name__}: {e}, will retry", type=GITHUB_UNAVAILABLE
            ) from e
        status = response.status_code
        if status in (403, 429):
            until = _rate_limited_until(response, datetime.now(UTC))
            if until is not None:
                raise _RateLimited(url, status, until)
        if status in (401, 403):
            raise ApplicationError(
                f"GET {url}: HTTP {status}: GITHUB_TOKEN lacks access to {self._repo} "
                f"({_body(response)})",
                type=GITHUB_ACCESS_DENIED,
                non_retryable=True,
            )
        if status >= 500 or status in _RETRYABLE_STATUSES:
            raise ApplicationError(
                f"GET {url}: HTTP {status}: {_body(response)}, will retry",
                type=GITHUB_UNAVAILABLE,
            )
        return response


def _rate_limited_until(response: httpx.Response, now: datetime) -> datetime | None:
    """When a 403/429 lets us call again, or None when it is not a rate limit.

    `Retry-After` (seconds or an HTTP date) wins; then `X-RateLimit-Remaining: 0` with
    `X-RateLimit-Reset` (epoch seconds); then a 429, or a message naming a rate limit, means a
    minute (GitHub's advice for secondary limits without headers). Never earlier than `now`.
    """
    headers = response.headers
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        until = _parse_retry_after(retry_after.strip(), now)
        if until is not None:
            return max(until, now)
    reset = headers.get("X-RateLimit-Reset")
    if headers.get("X-RateLimit-Remaining", "").strip() == "0" and reset is not None:
        try:
            return max(datetime.fromtimestamp(float(reset), UTC), now)
        except (ValueError, OverflowError, OSError):
            pass
    if response.status_code == 429 or "rate limit" in response.text.lower():
        return now + DEFAULT_RATE_LIMIT_WAIT
    return None


def _parse_retry_after(value: str, now: datetime) -> datetime | None:
    """A `Retry-After` value (delay seconds or HTTP date) as a UTC time, None if unreadable."""
    try:
        return now + timedelta(seconds=max(0.0, float(value)))
    except (ValueError, OverflowError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _body(response: httpx.Response) -> str:
    """The start of an error body, for messages (GitHub's JSON `message` when there is one)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:ERROR_BODY_CHARS]
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str):
        return message[:ERROR_BODY_CHARS]
    return response.text[:ERROR_BODY_CHARS]
