"""The competition repo's activities: reads at the branch head and pushed writes for workflows.

Owns: the `CompetitionRepoActivities` over one `competition.repo.CompetitionRepo`, running its
blocking git work in a thread and translating its errors into typed `ApplicationError`s. The
git layer lives in `competition.repo`, what is read and how it is parsed in `competition.rounds`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from competition.repo import (
    CompetitionRepo,
    GitPushConflictError,
    InvalidRepoPathError,
    InvalidWriteError,
    redact_url,
    repo_identity,
)
from competition.rounds import (
    load_leader_files,
    load_round_files,
    load_round_snapshot,
)
from models.audit import (
    PublishReportInput,
    PublishReportResult,
    ReadRoundFilesInput,
    WriteFilesInput,
    WriteFilesResult,
)
from models.competition import RoundFiles
from models.errors import (
    CompetitionFileError,
    ErrorType,
    UnknownHotkeyError,
    UnknownRoundError,
)
from models.rounds import (
    LeaderFiles,
    ReadLeaderFilesInput,
    ReadRoundSnapshotInput,
    RoundSnapshot,
)
from storage import ArtifactStore, ArtifactStoreError
from storage.publish import public_key, publish_generated

DEFAULT_STORAGE_PATH_TEMPLATE = "rounds/{round}/{hotkey}/generated/{filename}"
"""Upstream's STORAGE_PATH_TEMPLATE default (settings.py:221)."""

WRITE_HEARTBEAT_SECONDS = 2.0
"""`write_files` beats this often, so a write lost with its worker is retried within seconds."""


@contextlib.contextmanager
def _application_errors() -> Iterator[None]:
    """Translate the competition layer's errors into typed `ApplicationError`s for workflows."""
    try:
        yield
    except CompetitionFileError as e:
        raise ApplicationError(
            str(e), type=ErrorType.COMPETITION_FILE_INVALID, non_retryable=True
        ) from e
    except UnknownRoundError as e:
        raise ApplicationError(str(e), type=ErrorType.UNKNOWN_ROUND, non_retryable=True) from e
    except UnknownHotkeyError as e:
        raise ApplicationError(str(e), type=ErrorType.UNKNOWN_HOTKEY, non_retryable=True) from e
    except (InvalidRepoPathError, InvalidWriteError, ArtifactStoreError) as e:
        raise ApplicationError(str(e), type=ErrorType.INVALID_INPUT, non_retryable=True) from e
    except GitPushConflictError as e:
        raise ApplicationError(str(e), type=ErrorType.GIT_PUSH_CONFLICT) from e


class CompetitionRepoActivities:
    """Activities over one `CompetitionRepo` (registered as bound methods by the worker).

    Owns no state beyond the repo. Git work runs in a thread (`asyncio.to_thread`). Permanent
    errors (non-retryable): CompetitionFileInvalid, UnknownRound, UnknownHotkey, InvalidInput.
    GitPushConflict is retryable; other failures (network, git) propagate and are retried.
    """

    def __init__(
        self,
        repo: CompetitionRepo,
        store: ArtifactStore | None = None,
        storage_path_template: str = DEFAULT_STORAGE_PATH_TEMPLATE,
    ) -> None:
        """Serve activities from `repo`; generated.json's store URIs are published to `store`
        under `storage_path_template` before they are committed (None: written as they are)."""
        self._repo = repo
        self._store = store
        self._template = storage_path_template

    def activities(self) -> list[Callable[..., Any]]:
        """The bound activity methods, for `Worker(activities=...)`."""
        return [
            self.read_round_files,
            self.read_round_snapshot,
            self.read_leader_files,
            self.write_files,
            self.publish_report,
        ]

    @activity.defn(name="read_round_files")
    async def read_round_files(self, input: ReadRoundFilesInput) -> RoundFiles:
        """Read an audit's round files from one snapshot of the branch head.

        Idempotent: a pure read. Permanent errors: UnknownRound, UnknownHotkey,
        CompetitionFileInvalid.
        """
        self._check_repo(input.competition_repo)
        with _application_errors():
            return await asyncio.to_thread(self._read_round_files, input)

    @activity.defn(name="write_files")
    async def write_files(self, input: WriteFilesInput) -> WriteFilesResult:
        """Write several JSON files in one commit and push it.

        A generated.json's store URIs are first published (`storage.publish`): the file commits
        public URLs, and the public objects are the entries' own. Idempotent: a rerun publishes
        the same bytes to the same keys, finds the content at the head and makes no commit
        (commit None); merges re-read the head, so a rerun never drops a concurrent writer's
        keys. Permanent errors: InvalidInput, CompetitionFileInvalid; GitPushConflict and an
        unreachable artifact store are retryable.
        """
        self._check_repo(input.competition_repo)
        with _application_errors():
            async with heartbeating(WRITE_HEARTBEAT_SECONDS):
                files = list(input.files)
                if self._store is not None:
                    files = await publish_generated(self._store, self._template, files)
                commit = await asyncio.to_thread(self._repo.write, input.message, files)
        return WriteFilesResult(commit=commit)

    @activity.defn(name="publish_report")
    async def publish_report(self, input: PublishReportInput) -> PublishReportResult:
        """Build the audit's HTML report from the branch head (verdict, times, pods, prompts)
        and publish it beside its previews: STORAGE_PATH_TEMPLATE with `report.html`.

        The page links the public previews rather than embedding them, so it stays small.
        Idempotent: the same head gives the same page at the same key. Permanent errors:
        UnknownRound, UnknownHotkey, CompetitionFileInvalid, and no artifact store configured.
        """
        from reporting.html_report import load_report_data, render_html

        self._check_repo(input.competition_repo)
        if self._store is None:
            raise ApplicationError(
                "no artifact store on this worker", type=ErrorType.INVALID_INPUT, non_retryable=True
            )
        with _application_errors():
            data = await asyncio.to_thread(
                lambda: load_report_data(
                    self._repo.at_head(),
                    input.round,
                    input.hotkey,
                    input.policy,
                    input.pods_by_stem,
                )
            )
            page = render_html(data, lambda _url: None).encode()
            uri = await self._store.put_bytes(page, ".html")
            key = public_key(self._template, input.round, input.hotkey, "report", "html")
            url = await self._store.publish(uri, key, content_type="text/html; charset=utf-8")
        activity.logger.info("report of round %s %s at %s", input.round, input.hotkey, url)
        return PublishReportResult(url=url)

    @activity.defn(name="read_round_snapshot")
    async def read_round_snapshot(self, input: ReadRoundSnapshotInput) -> RoundSnapshot:
        """What the round loop needs, from one snapshot of the branch head: state.json, and for
        the round (`input.round`, else state.json's) its submissions, require_audit.json hotkeys,
        the hotkeys with a verdict, builds.json and the leader's image.

        Idempotent: a pure read. Permanent error: CompetitionFileInvalid (state.json missing or
        malformed names the file). Other miners' malformed entries are skipped with a warning.
        """
        with _application_errors():
            return await asyncio.to_thread(
                lambda: load_round_snapshot(self._repo.at_head(), input.round)
            )

    @activity.defn(name="read_leader_files")
    async def read_leader_files(self, input: ReadLeaderFilesInput) -> LeaderFiles:
        """The leader run's inputs at the branch head: seed, prompts, the last leader.json
        entry's image and `rounds/{n}/leader/generated.json` (it resumes from it).

        Permanent errors: UnknownRound; CompetitionFileInvalid, also for a missing or empty
        leader.json (upstream: "Leader docker image not found").
        """
        self._check_repo(input.competition_repo)
        with _application_errors():
            return await asyncio.to_thread(
                lambda: load_leader_files(self._repo.at_head(), input.round)
            )

    def _check_repo(self, wanted: str | None) -> None:
        """Serve only the workflows of this worker's repo (None: the workflow did not say)."""
        if wanted is None or repo_identity(wanted) == repo_identity(self._repo.url):
            return
        raise ApplicationError(
            f"this worker serves COMPETITION_REPO={redact_url(self._repo.url)}, but the workflow "
            f"is of {redact_url(wanted)}: left to a worker configured for that repo",
            type=ErrorType.WRONG_COMPETITION_REPO,
        )

    def _read_round_files(self, input: ReadRoundFilesInput) -> RoundFiles:
        source = self._repo.at_head()
        activity.logger.info(
            "reading round %s files of %s at %s", input.round, input.hotkey, source.commit[:10]
        )
        return load_round_files(source, input.round, input.hotkey)
