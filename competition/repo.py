"""The competition repo over git: a local clone, reads at the branch head, pushed writes.

Owns: the local clone of COMPETITION_REPO (GitPython), reading files from git objects at the head
of `origin/<branch>` (never from a work tree), the read-only `CompetitionSource`s (a commit of the
clone, or a plain directory such as test fixtures), and writing several JSON files in one commit
with retry-on-conflict. Does not own the file formats (`models.competition`), what an audit reads
(`competition.rounds`) or the activities over it (`activities.competition_repo`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import git
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError, to_jsonable_python

from models.audit import JsonFileWrite
from models.errors import CompetitionFileError

logger = logging.getLogger(__name__)

COMMITTER_NAME = "generation-orchestrator"
COMMITTER_EMAIL = "orchestrator@localhost"

_BRANCH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$")
# Push output (LC_ALL=C) that means "someone else moved the branch": fetch and re-apply.
_CONFLICT_MARKERS = (
    "[rejected]",
    "fetch first",
    "non-fast-forward",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
)


class CompetitionRepoError(RuntimeError):
    """The competition repo cannot be reached or used (bad URL, missing branch, push refused)."""


class GitPushConflictError(CompetitionRepoError):
    """Every push attempt was rejected because other writers kept moving the branch."""


class InvalidRepoPathError(ValueError):
    """A repo path is absolute, contains '..', '.git' or empty segments, or escapes the root."""


class InvalidWriteError(ValueError):
    """A write's value cannot be serialized as JSON (NaN, unsupported type)."""


# --- sources ------------------------------------------------------------------------------------


class CompetitionSource(Protocol):
    """Read access to competition files by repo-relative path."""

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when the file does not exist."""
        ...


def validate_repo_path(path: str) -> str:
    """Return `path` if it is a plain repo-relative path, else raise `InvalidRepoPathError`.

    Rejected: empty, absolute, backslashes, NUL, and any '', '.', '..' or '.git' segment.
    """
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidRepoPathError(f"invalid repo path {path!r}: must be repo-relative")
    for part in path.split("/"):
        if part in {"", ".", ".."} or part.lower() == ".git":
            raise InvalidRepoPathError(f"invalid repo path {path!r}: segment {part!r} not allowed")
    return path


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CompetitionFileError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from e


class DirectorySource:
    """A competition repo checked out (or copied) as a plain directory, e.g. test fixtures.

    Owns nothing but the root path; paths that escape the root (also through symlinks) are
    rejected with `InvalidRepoPathError`.
    """

    def __init__(self, root: Path) -> None:
        """Read files below `root`."""
        self._root = root.resolve()

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it does not exist."""
        full = (self._root / validate_repo_path(path)).resolve()
        if not full.is_relative_to(self._root):
            raise InvalidRepoPathError(f"invalid repo path {path!r}: escapes {self._root}")
        if not full.exists():
            return None
        if not full.is_file():
            raise CompetitionFileError(path, "not a regular file")
        return _decode(path, full.read_bytes())


class CommitSource:
    """The files of one commit of a `CompetitionRepo`: a consistent snapshot for several reads."""

    def __init__(self, repo: CompetitionRepo, commit: str) -> None:
        """Read files at `commit` (a full sha) of `repo`."""
        self._repo = repo
        self.commit = commit

    def read_text(self, path: str) -> str | None:
        """The file's text at this commit, or None when it does not exist there."""
        data = self._repo.read_bytes_at(self.commit, validate_repo_path(path))
        return None if data is None else _decode(path, data)


# --- the repo -----------------------------------------------------------------------------------


class PushRetry(BaseModel):
    """Bounded exponential backoff between push attempts rejected by a concurrent writer."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(5, ge=1, description="push attempts in total")
    initial_delay: float = Field(0.2, ge=0, description="seconds before the second attempt")
    multiplier: float = Field(2.0, ge=1)
    max_delay: float = Field(5.0, ge=0, description="cap of one delay, seconds")

    def delays(self) -> list[float]:
        """The sleeps between attempts (one fewer than `attempts`)."""
        out: list[float] = []
        delay = self.initial_delay
        for _ in range(self.attempts - 1):
            out.append(min(delay, self.max_delay))
            delay *= self.multiplier
        return out


def _is_local_path(url: str) -> bool:
    if "://" in url:
        return False
    # scp-like "user@host:path" (but not a Windows drive, irrelevant here) is remote.
    return not re.match(r"^[^/]+:", url)


def redact_url(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def repo_identity(url: str) -> str:
    """COMPETITION_REPO as workers compare it: a local path resolved, a URL without a trailing
    slash or `.git` (two spellings of one repo are the same repo)."""
    text = url.strip().removeprefix("file://")
    if "://" in text or re.match(r"^[\w.-]+@[\w.-]+:", text):
        return text.rstrip("/").removesuffix(".git")
    return str(Path(text).expanduser().resolve())


class CompetitionRepo:
    """A bare, single-branch clone of the competition repo under `work_dir`.

    Owns the clone (created lazily on first use; its folder name derives from a hash of url and
    branch, so several repos can share one work dir) and serializes every git operation on it
    with one lock, so concurrent activities in one worker never interleave. Reads come from git
    objects at the head of `origin/<branch>` right after a fetch; writes build one commit on top
    of that head with a temporary index and push it, re-applying on a fresh head when another
    writer got there first. One instance must own its folder; it keeps no work tree.
    """

    def __init__(
        self,
        url: str,
        branch: str,
        work_dir: Path,
        *,
        retry: PushRetry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        before_push: Callable[[], None] | None = None,
    ) -> None:
        """Configure the clone; nothing touches the network or disk until first use.

        Args:
            url: git URL or local path (a bare repo works) of COMPETITION_REPO.
            branch: the branch that holds the competition state.
            work_dir: folder for local state; the clone lives in a subfolder of it.
            retry: backoff between push attempts rejected by a concurrent writer.
            sleep: how to wait between attempts (tests pass a recorder).
            before_push: called right before every push attempt (tests inject a concurrent
                writer here).
        """
        if not _BRANCH_RE.match(branch) or ".." in branch or branch.endswith((".lock", "/")):
            raise ValueError(f"invalid branch name {branch!r}")
        if _is_local_path(url):
            url = str(Path(url).expanduser().resolve())
        self.url = url
        self.branch = branch
        digest = hashlib.sha256(f"{url}\0{branch}".encode()).hexdigest()[:16]
        self.path = work_dir.resolve() / f"competition-{digest}.git"
        self._retry = retry or PushRetry()
        self._sleep = sleep
        self._before_push = before_push
        self._lock = threading.RLock()
        self._repo: git.Repo | None = None

    # -- public API --

    def at_head(self) -> CommitSource:
        """Fetch, then return a source pinned to the head of `origin/<branch>`."""
        with self._lock:
            return CommitSource(self, self._fetch())

    def read_text(self, path: str) -> str | None:
        """Fetch, then read `path` at the head of `origin/<branch>` (None when absent)."""
        return self.at_head().read_text(path)

    def read_bytes_at(self, commit: str, path: str) -> bytes | None:
        """Bytes of `path` at `commit`, or None when the file does not exist there."""
        with self._lock:
            return self._blob_bytes(self._ensure_clone().commit(commit), validate_repo_path(path))

    def write(self, message: str, files: list[JsonFileWrite]) -> str | None:
        """Apply `files` in one commit on top of `origin/<branch>` and push it.

        Without `merge_key` a file becomes `value` as JSON (indent 2, trailing newline, key
        order kept). With `merge_key` the JSON object at the head (or `{}`) gets
        `[merge_key] = value`, keeping every other key. On a rejected push the writes are
        re-applied on the fresh head (a merge re-reads its file) and pushed again.

        Returns:
            The new commit's sha, or None when the head already has this content (no commit).

        Raises:
            InvalidRepoPathError: a path is not a plain repo-relative path.
            InvalidWriteError: a value cannot be serialized as JSON.
            CompetitionFileError: a merge target at the head is not a JSON object.
            GitPushConflictError: every attempt was rejected by concurrent writers.
        """
        for f in files:
            validate_repo_path(f.path)
            _render(f, None)  # fail on unserializable values before touching git
        if not files:
            return None
        with self._lock:
            delays = self._retry.delays()
            for attempt in range(1, self._retry.attempts + 1):
                head = self._fetch()
                commit = self._commit_on(head, message, files)
                if commit is None:
                    logger.info("competition repo: %s already at head %s", message, head[:10])
                    return None
                if self._before_push is not None:
                    self._before_push()
                if self._push(commit):
                    logger.info("competition repo: pushed %s (%s)", commit[:10], message)
                    return commit
                logger.warning(
                    "competition repo: push of %r rejected (attempt %d/%d), re-applying",
                    message,
                    attempt,
                    self._retry.attempts,
                )
                if attempt <= len(delays):
                    self._sleep(delays[attempt - 1])
        raise GitPushConflictError(
            f"push to {redact_url(self.url)} branch {self.branch!r} rejected "
            f"{self._retry.attempts} times by concurrent writers: {message!r}"
        )

    # -- internals (call with the lock held) --

    def _ensure_clone(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        repo: git.Repo | None = None
        if self.path.exists():
            with contextlib.suppress(
                git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError
            ):
                candidate = git.Repo(self.path)
                if candidate.bare and candidate.remote("origin").url == self.url:
                    repo = candidate
            if repo is None:
                logger.warning("competition repo: replacing unusable clone at %s", self.path)
                shutil.rmtree(self.path)
        if repo is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{self.path.name}.", dir=self.path.parent))
            try:
                fresh = git.Repo.init(staging, bare=True)
                with fresh.config_writer() as config:
                    config.set_value('remote "origin"', "url", self.url)
                    config.set_value(
                        'remote "origin"',
                        "fetch",
                        f"+refs/heads/{self.branch}:{self._tracking_ref}",
                    )
                    config.set_value("user", "name", COMMITTER_NAME)
                    config.set_value("user", "email", COMMITTER_EMAIL)
                    config.set_value("gc", "auto", "0")
                try:
                    staging.rename(self.path)
                except OSError:
                    if not self.path.is_dir():
                        raise
                    # Another worker sharing WORK_DIR made the clone first: use theirs.
                    shutil.rmtree(staging, ignore_errors=True)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            repo = git.Repo(self.path)
        self._repo = repo
        return repo

    @property
    def _tracking_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _fetch(self) -> str:
        """Fetch the branch and return the sha of its head."""
        repo = self._ensure_clone()
        status, _out, err = repo.git.fetch(
            "--no-tags",
            "origin",
            f"+refs/heads/{self.branch}:{self._tracking_ref}",
            with_extended_output=True,
            with_exceptions=False,
        )
        if status != 0:
            if "couldn't find remote ref" in err:
                raise CompetitionRepoError(
                    f"branch {self.branch!r} not found in {redact_url(self.url)}"
                )
            raise CompetitionRepoError(f"fetch from {redact_url(self.url)} failed: {err.strip()}")
        return str(repo.git.rev_parse("--verify", f"{self._tracking_ref}^{{commit}}"))

    def _blob_bytes(self, commit: git.Commit, path: str) -> bytes | None:
        try:
            obj = commit.tree / path
        except KeyError:
            return None
        if obj.type != "blob":
            raise CompetitionFileError(path, f"not a file (a {obj.type}) at {commit.hexsha[:10]}")
        data: bytes = obj.data_stream.read()
        return data

    def _commit_on(self, head: str, message: str, files: list[JsonFileWrite]) -> str | None:
        """A commit (not pushed) applying `files` on `head`, or None when nothing changes."""
        repo = self._ensure_clone()
        head_commit = repo.commit(head)
        at_head: dict[str, bytes | None] = {}
        staged: dict[str, bytes] = {}
        for f in files:
            if f.path not in at_head:
                at_head[f.path] = self._blob_bytes(head_commit, f.path)
            base = staged[f.path] if f.path in staged else at_head[f.path]
            staged[f.path] = _render(f, base)
        changed = {
            path: data for path, data in staged.items() if not _same_json(at_head[path], data)
        }
        if not changed:
            return None
        with tempfile.TemporaryDirectory(prefix="index-", dir=repo.git_dir) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            repo.git.read_tree(head, env=env)
            content = Path(tmp) / "content"
            for path, data in changed.items():
                content.write_bytes(data)
                sha = repo.git.hash_object("-w", "--no-filters", str(content))
                repo.git.update_index("--add", "--cacheinfo", f"100644,{sha},{path}", env=env)
            tree = str(repo.git.write_tree(env=env))
        if tree == head_commit.tree.hexsha:
            return None
        return str(repo.git.commit_tree(tree, "-p", head, "-m", message))

    def _push(self, commit: str) -> bool:
        """Push `commit` to the branch; False when a concurrent writer moved the branch."""
        repo = self._ensure_clone()
        status, out, err = repo.git.push(
            "--porcelain",
            "origin",
            f"{commit}:refs/heads/{self.branch}",
            with_extended_output=True,
            with_exceptions=False,
        )
        if status == 0:
            return True
        text = f"{out}\n{err}"
        if any(marker in text for marker in _CONFLICT_MARKERS):
            return False
        raise CompetitionRepoError(f"push to {redact_url(self.url)} failed: {err.strip() or out}")


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()


def _jsonable(path: str, value: object) -> Any:
    try:
        data = to_jsonable_python(value)
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError, PydanticSerializationError) as e:
        raise InvalidWriteError(f"{path}: value is not JSON-serializable ({e})") from e
    return data


def _render(write: JsonFileWrite, base: bytes | None) -> bytes:
    """The file's new bytes given its current bytes `base` (None when absent)."""
    value = _jsonable(write.path, write.value)
    if write.merge_key is None:
        return _dump(value)
    obj: Any = {}
    if base is not None:
        obj = parse_json_object(write.path, _decode(write.path, base))
    obj[write.merge_key] = value
    return _dump(obj)


def parse_json_object(path: str, text: str) -> dict[str, Any]:
    """Parse `text` as a JSON object (key order kept); else raise `CompetitionFileError`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompetitionFileError(path, f"not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, dict):
        raise CompetitionFileError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _same_json(old: bytes | None, new: bytes) -> bool:
    """True when `old` already holds `new`'s content (formatting differences ignored)."""
    if old is None:
        return False
    if old == new:
        return True
    try:
        return _dump(json.loads(old)) == new
    except ValueError:
        return False
