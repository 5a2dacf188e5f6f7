"""A fake GitHub Actions API for one repo, on loopback HTTP in a thread (demo and tests).

Owns: the two endpoints build tracking calls, `GET /repos/{repo}/actions/runs` and
`GET /repos/{repo}/actions/runs/{id}/jobs`, answered with GitHub-shaped payloads (newest run
first, `per_page`/`page` honoured), a record of every request, and thread-safe controls to move
jobs along and to misbehave (rate limits, 5xx, slowness, missing token, many jobs). Knows
nothing about builds.json or the orchestrator.

Run it alone with `python -m demo.fake_github --port 8765 --message "submissions for round 1"
--hotkey HK1 --hotkey HK2 --conclusion success`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from demo.static_server import LoopbackServer

DEFAULT_REPO = "404-Repo/404-competition-demo"
WORKFLOW_NAME = "Build miner images"
JOB_NAME_FORMAT = "Bake and push images to Google Cloud ({hotkey})"
"""Upstream's build job name (kept here too: the fake must not depend on the orchestrator)."""
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
RATE_LIMIT = 5000


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class _Job:
    id: int
    name: str
    status: str = "queued"
    conclusion: str | None = None
    started_at: str | None = None
    completed_at: str | None = None


@dataclass
class _Run:
    id: int
    number: int
    message: str
    sha: str
    created_at: str
    jobs: list[_Job] = field(default_factory=list)


@dataclass
class _Misbehaviour:
    rate_limits: int = 0
    rate_limit_reset_in_s: float = 60.0
    rate_limit_kind: str = "403"
    failures: int = 0
    failure_status: int = 502
    delay_s: float = 0.0
    hidden_run_polls: int = 0
    token: str | None = None


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub(LoopbackServer):
    """Serves a fake GitHub Actions API for `repo` on http://127.0.0.1:<free port> until closed.

    Use as `with FakeGitHub() as github:` and point the client at `github.api_url`. Every
    control may be called from any thread while the server runs.
    """

    def __init__(self, repo: str = DEFAULT_REPO, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._runs: list[_Run] = []  # oldest first
        self._requests: list[RecordedRequest] = []
        self._bad = _Misbehaviour()
        self._next_id = 9_000_000_001
        super().__init__(_handler_for(self), host, port)

    @property
    def api_url(self) -> str:
        """The API base URL, without a trailing slash (GitHub's is https://api.github.com)."""
        return self.base_url

    # --- state controls -----------------------------------------------------------------------

    def add_run(self, message: str, hotkeys: list[str]) -> int:
        """A new workflow run (newest first in the list) with one queued job per hotkey."""
        with self._lock:
            run = _Run(
                id=self._take_id(),
                number=len(self._runs) + 1,
                message=message,
                sha=hashlib.sha1(
                    f"{len(self._runs)}:{message}".encode(), usedforsecurity=False
                ).hexdigest(),
                created_at=_now_iso(),
            )
            run.jobs = [
                _Job(id=self._take_id(), name=JOB_NAME_FORMAT.format(hotkey=h)) for h in hotkeys
            ]
            self._runs.append(run)
            return run.id

    def set_job(self, run_id: int, hotkey: str, status: str, conclusion: str | None = None) -> None:
        """Set the job of `hotkey` (created if missing); completed jobs get `completed_at`."""
        name = JOB_NAME_FORMAT.format(hotkey=hotkey)
        with self._lock:
            run = self._run(run_id)
            job = next((j for j in run.jobs if j.name == name), None)
            if job is None:
                job = _Job(id=self._take_id(), name=name)
                run.jobs.append(job)
            job.status = status
            job.conclusion = conclusion
            if status != "queued" and job.started_at is None:
                job.started_at = _now_iso()
            job.completed_at = _now_iso() if status == "completed" else None

    def remove_job(self, run_id: int, hotkey: str) -> None:
        """Drop the job of `hotkey` from the run (GitHub then lists no such job)."""
        name = JOB_NAME_FORMAT.format(hotkey=hotkey)
        with self._lock:
            run = self._run(run_id)
            run.jobs = [j for j in run.jobs if j.name != name]

    def extra_jobs(self, n: int, run_id: int | None = None) -> None:
        """Put `n` unrelated completed jobs before the hotkeys' jobs of `run_id` (default: the
        newest run), so the hotkeys' jobs land on later pages."""
        with self._lock:
            run = self._run(run_id) if run_id is not None else self._runs[-1]
            extras = [
                _Job(
                    id=self._take_id(),
                    name=f"Prepare build matrix ({i})",
                    status="completed",
                    conclusion="success",
                    started_at=_now_iso(),
                    completed_at=_now_iso(),
                )
                for i in range(n)
            ]
            run.jobs = extras + run.jobs

    def hide_runs(self, n_polls: int) -> None:
        """The runs list is empty for the next `n_polls` runs-list requests (not found yet)."""
        with self._lock:
            self._bad.hidden_run_polls = n_polls

    # --- misbehaviour -------------------------------------------------------------------------

    def rate_limit(
        self, times: int, reset_in_s: float = 60.0, kind: Literal["403", "429"] = "403"
    ) -> None:
        """The next `times` requests are rate limited: 403 with `X-RateLimit-Remaining: 0` and
        `X-RateLimit-Reset` (primary limit), or 429 with `Retry-After` (secondary limit)."""
        with self._lock:
            self._bad.rate_limits = times
            self._bad.rate_limit_reset_in_s = reset_in_s
            self._bad.rate_limit_kind = kind

    def fail(self, times: int, status: int = 502) -> None:
        """The next `times` requests answer `status` (403 here carries no rate-limit headers)."""
        with self._lock:
            self._bad.failures = times
            self._bad.failure_status = status

    def slow(self, seconds: float) -> None:
        """Delay every response (every page) by `seconds` (0 to stop)."""
        with self._lock:
            self._bad.delay_s = seconds

    def require_token(self, token: str | None) -> None:
        """Answer 401 unless `Authorization: Bearer {token}` is sent (None: no check)."""
        with self._lock:
            self._bad.token = token

    # --- records ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    # --- serving (handler threads) ------------------------------------------------------------

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _run(self, run_id: int) -> _Run:
        for run in self._runs:
            if run.id == run_id:
                return run
        raise KeyError(f"no run {run_id}")

    def _answer(
        self, method: str, raw_path: str, authorization: str | None
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body) for one request; records it. Called without the lock."""
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self._requests.append(RecordedRequest(method, parts.path, query, authorization))
            delay = self._bad.delay_s
        if delay > 0:
            time.sleep(delay)
        with self._lock:
            return self._respond(method, parts.path, query, authorization)

    def _respond(
        self, method: str, path: str, query: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, str], Any]:
        bad = self._bad
        if bad.token is not None and authorization != f"Bearer {bad.token}":
            return 401, {}, _error("Bad credentials")
        if bad.rate_limits > 0:
            bad.rate_limits -= 1
            return self._rate_limited()
        if bad.failures > 0:
            bad.failures -= 1
            if bad.failure_status == 403:
                return 403, {}, _error("Resource not accessible by integration")
            return bad.failure_status, {}, _error("Server Error")
        base = f"/repos/{self.repo}/actions/runs"
        if method != "GET":
            return 404, {}, _error("Not Found")
        if path == base:
            return 200, _quota_headers(), self._runs_page(query)
        if path.startswith(base + "/") and path.endswith("/jobs"):
            run_part = path[len(base) + 1 : -len("/jobs")]
            if run_part.isdigit():
                run = next((r for r in self._runs if r.id == int(run_part)), None)
                if run is not None:
                    return 200, _quota_headers(), self._jobs_page(run, query)
        return 404, {}, _error("Not Found")

    def _rate_limited(self) -> tuple[int, dict[str, str], Any]:
        bad = self._bad
        if bad.rate_limit_kind == "429":
            headers = {"Retry-After": str(round(bad.rate_limit_reset_in_s))}
            return 429, headers, _error("You have exceeded a secondary rate limit.")
        headers = {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Used": str(RATE_LIMIT),
            "X-RateLimit-Reset": str(round(time.time() + bad.rate_limit_reset_in_s)),
            "X-RateLimit-Resource": "core",
        }
        return 403, headers, _error("API rate limit exceeded for installation.")

    def _runs_page(self, query: dict[str, str]) -> dict[str, Any]:
        if self._bad.hidden_run_polls > 0:
            self._bad.hidden_run_polls -= 1
            return {"total_count": 0, "workflow_runs": []}
        runs = list(reversed(self._runs))
        page = _paged(runs, query)
        return {"total_count": len(runs), "workflow_runs": [self._run_json(r) for r in page]}

    def _jobs_page(self, run: _Run, query: dict[str, str]) -> dict[str, Any]:
        page = _paged(run.jobs, query)
        return {"total_count": len(run.jobs), "jobs": [self._job_json(run, j) for j in page]}

    def _run_json(self, run: _Run) -> dict[str, Any]:
        statuses = {j.status for j in run.jobs}
        if not run.jobs or statuses == {"completed"}:
            status = "completed"
            ok = all(j.conclusion in ("success", "skipped") for j in run.jobs)
            conclusion: str | None = "success" if ok else "failure"
        else:
            status = "in_progress" if statuses - {"queued"} else "queued"
            conclusion = None
        html = f"https://github.com/{self.repo}/actions/runs/{run.id}"
        author = {"name": "submission-collector", "email": "collector@localhost"}
        return {
            "id": run.id,
            "name": WORKFLOW_NAME,
            "node_id": f"WFR_{run.id}",
            "head_branch": "main",
            "head_sha": run.sha,
            "path": ".github/workflows/build.yml",
            "display_title": run.message.splitlines()[0] if run.message else "",
            "run_number": run.number,
            "event": "push",
            "status": status,
            "conclusion": conclusion,
            "workflow_id": 161335,
            "url": f"{self.api_url}/repos/{self.repo}/actions/runs/{run.id}",
            "html_url": html,
            "jobs_url": f"{self.api_url}/repos/{self.repo}/actions/runs/{run.id}/jobs",
            "created_at": run.created_at,
            "updated_at": _now_iso(),
            "run_attempt": 1,
            "run_started_at": run.created_at,
            "head_commit": {
                "id": run.sha,
                "tree_id": hashlib.sha1(run.sha.encode(), usedforsecurity=False).hexdigest(),
                "message": run.message,
                "timestamp": run.created_at,
                "author": author,
                "committer": author,
            },
        }

    def _job_json(self, run: _Run, job: _Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "run_id": run.id,
            "run_url": f"{self.api_url}/repos/{self.repo}/actions/runs/{run.id}",
            "node_id": f"CR_{job.id}",
            "head_sha": run.sha,
            "head_branch": "main",
            "url": f"{self.api_url}/repos/{self.repo}/actions/jobs/{job.id}",
            "html_url": f"https://github.com/{self.repo}/actions/runs/{run.id}/job/{job.id}",
            "status": job.status,
            "conclusion": job.conclusion,
            "created_at": run.created_at,
            "started_at": job.started_at or run.created_at,
            "completed_at": job.completed_at,
            "name": job.name,
            "steps": [],
            "labels": ["ubuntu-latest"],
            "runner_name": "GitHub Actions 2" if job.status != "queued" else None,
            "workflow_name": WORKFLOW_NAME,
            "run_attempt": 1,
        }


def _paged(items: list[Any], query: dict[str, str]) -> list[Any]:
    """GitHub paging: `per_page` (default 30, at most 100) and 1-based `page`."""
    try:
        per_page = min(max(int(query.get("per_page", DEFAULT_PER_PAGE)), 1), MAX_PER_PAGE)
        page = max(int(query.get("page", 1)), 1)
    except ValueError:
        per_page, page = DEFAULT_PER_PAGE, 1
    start = (page - 1) * per_page
    return items[start : start + per_page]


def _error(message: str) -> dict[str, str]:
    return {"message": message, "documentation_url": "https://docs.github.com/rest"}


def _quota_headers() -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(RATE_LIMIT),
        "X-RateLimit-Remaining": str(RATE_LIMIT - 1),
        "X-RateLimit-Reset": str(round(time.time() + 3600)),
        "X-RateLimit-Resource": "core",
    }


def _handler_for(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are recorded on the fake, not logged."""

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = fake._answer(
                self.command, self.path, self.headers.get("Authorization")
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PATCH = _serve

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve one run until interrupted (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", default=DEFAULT_REPO)
    parser.add_argument("--message", default="submissions for round 1")
    parser.add_argument("--hotkey", action="append", default=[])
    parser.add_argument("--conclusion", default=None, help="complete every job with this")
    args = parser.parse_args(argv)
    with FakeGitHub(args.repo, port=args.port) as github:
        run_id = github.add_run(args.message, args.hotkey)
        if args.conclusion:
            for hotkey in args.hotkey:
                github.set_job(run_id, hotkey, "completed", args.conclusion)
        print(f"fake GitHub API for {args.repo} on {github.api_url} (run {run_id})", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
