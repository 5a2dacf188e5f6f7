"""Pydantic models of every competition-repo file, their paths, and the one parser that reads them.

No I/O here: the competition-repo layer (`competition.repo`) reads text at the branch
head and hands it to `parse_competition_file`, so a bad file yields one `CompetitionFileError`
naming the file and field. Entry models keep unknown fields (`extra="allow"`): the upstream repo
evolves and a round trip through us must not drop its data.

Files shared by every miner (submissions.json, builds.json, require_audit.json) are read per
entry with `parse_submissions`, `parse_builds` and `parse_require_audit`: one miner's odd or
unknown entry never fails another miner's audit. Only the audited hotkey's entry must validate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator

from models.errors import CompetitionFileError


class _Entry(BaseModel):
    """Base of competition-file objects: unknown fields survive a round trip."""

    model_config = ConfigDict(extra="allow")


class StateFile(_Entry):
    """`state.json`."""

    current_round: int
    stage: str
    next_stage_eta: str | None = None


class ConfigFile(_Entry):
    """`config.json` (only the fields we use are required to exist)."""

    name: str = ""
    prompts_per_round: int | None = None
    win_margin: float | None = None


class LeaderEntry(_Entry):
    """One entry of `leader.json`."""

    hotkey: str
    repo: str
    commit: str
    docker: str
    weight: float = 0.0
    effective_block: int


class LeaderFile(RootModel[list[LeaderEntry]]):
    """`leader.json`: an append-only list of leader transitions."""

    def latest(self) -> LeaderEntry | None:
        """The last entry (upstream's get_latest: its docker image is the leader run's), or None
        for an empty file."""
        return self.root[-1] if self.root else None


class SeedFile(_Entry):
    """`rounds/{n}/seed.json`."""

    seed: int


class Submission(_Entry):
    """One miner's entry of `rounds/{n}/submissions.json`."""

    repo: str
    commit: str
    cdn_url: str | None = None
    revealed_at_block: int | None = None
    round: str = Field(description="round tag, e.g. 'mesh-4'")


class SubmissionsFile(RootModel[dict[str, Submission]]):
    """`rounds/{n}/submissions.json`: hotkey -> submission."""


class RequireAuditEntry(_Entry):
    """One entry of `rounds/{n}/require_audit.json`."""

    hotkey: str
    critical_prompts: list[str] = Field(default_factory=list)


class RequireAuditFile(RootModel[list[RequireAuditEntry]]):
    """`rounds/{n}/require_audit.json`."""

    def critical_prompts(self, hotkey: str) -> list[str]:
        """Critical stems for `hotkey` (empty if the miner is not listed)."""
        for entry in self.root:
            if entry.hotkey == hotkey:
                return list(entry.critical_prompts)
        return []

    def hotkeys(self) -> list[str]:
        """Hotkeys that require an audit, in file order."""
        return [e.hotkey for e in self.root]


class GenerationEntry(_Entry):
    """One stem of submitted.json / generated.json / leader/generated.json.

    glb/png are URLs, or null when the generation failed. `distance` is the DINOv3 distance
    between the submitted and the regenerated preview; null means "not measured".
    """

    glb: str | None = None
    png: str | None = None
    generation_time: float = 0.0  # seconds, request sent -> response headers
    size: int | None = None  # GLB bytes
    attempts: int = 0
    distance: float | None = None

    def is_failed(self) -> bool:
        """Upstream's rule: a result without a GLB or a preview URL failed."""
        return self.glb is None or self.png is None


class GenerationsFile(RootModel[dict[str, GenerationEntry]]):
    """`submitted.json` / `generated.json`: stem -> entry."""


class BuildStatus(StrEnum):
    """Docker build state of a submission (every status upstream's build tracker writes)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    NOT_FOUND = "not_found"
    TIMED_OUT = "timed_out"

    @property
    def failed(self) -> bool:
        """The build ended without an image: the audit is rejected without generating."""
        return self in (BuildStatus.FAILURE, BuildStatus.NOT_FOUND, BuildStatus.TIMED_OUT)

    @property
    def terminal(self) -> bool:
        """The build will not change any more (upstream: success, failure, not_found, timed_out)."""
        return self is BuildStatus.SUCCESS or self.failed


class BuildEntry(_Entry):
    """One miner's entry of `rounds/{n}/builds.json`."""

    repo: str
    commit: str
    revealed_at_block: int | None = None
    tag: str
    status: BuildStatus
    docker_image: str | None = None


class BuildsFile(RootModel[dict[str, BuildEntry]]):
    """`rounds/{n}/builds.json`: hotkey -> build."""


class AuditOutcome(StrEnum):
    """Verdict of a generation audit."""

    PASSED = "passed"
    REJECTED = "rejected"


class GenerationAudit(_Entry):
    """One miner's entry of `rounds/{n}/generation_audits.json`.

    failed_prompts counts non-critical mismatches; generation_time is the trimmed median (s).
    """

    hotkey: str
    outcome: AuditOutcome
    checked_prompts: int
    failed_prompts: int
    failed_critical: int
    generation_time: float | None
    reason: str


class GenerationAuditsFile(RootModel[dict[str, GenerationAudit]]):
    """`rounds/{n}/generation_audits.json`: hotkey -> audit."""


class PodStats(_Entry):
    """One pod of `rounds/{n}/{hotkey}/pod_stats.json` (times in seconds), upstream's shape.

    Times summarise the pod's fresh successful generations (0.0 when there are none). Files
    written by older versions of this tool may hold null times; they still load.
    """

    pod_id: str = ""
    processed: int = 0
    successful: int = 0
    hard_failed: int = 0
    hard_overtime: int = 0
    time_min: float | None = 0.0
    time_max: float | None = 0.0
    time_avg: float | None = 0.0
    time_median: float | None = 0.0
    marked_bad: bool = False
    retry_cumulative_delta: float = 0.0
    retry_delta_count: int = 0
    termination_reason: str | None = ""


class PodStatsFile(RootModel[dict[str, PodStats]]):
    """`rounds/{n}/{hotkey}/pod_stats.json`: pod id -> stats."""


class Prompt(BaseModel):
    """One line of prompts.txt: the image URL and its stem (file name without extension)."""

    model_config = ConfigDict(frozen=True)

    url: str
    stem: str


class PromptsFile(RootModel[list[Prompt]]):
    """`rounds/{n}/prompts.txt`, parsed."""


# --- paths --------------------------------------------------------------------------------------


def _checked_segment(value: str, what: str) -> str:
    """Reject a path segment that could escape its folder (a hotkey with '/' or '..')."""
    if not value or value in {".", ".."} or "/" in value or "\\" in value or "\x00" in value:
        raise CompetitionFileError(f"<{what}>", f"invalid {what} {value!r}: not a plain name")
    return value


class CompetitionPaths:
    """Repo-relative paths of the competition files (upstream layout)."""

    STATE = "state.json"
    CONFIG = "config.json"
    LEADER = "leader.json"

    @staticmethod
    def round_dir(round_number: int) -> str:
        """`rounds/{n}`."""
        if round_number < 0:
            raise CompetitionFileError("<round>", f"invalid round {round_number}: must be >= 0")
        return f"rounds/{round_number}"

    @classmethod
    def seed(cls, n: int) -> str:
        """`rounds/{n}/seed.json`."""
        return f"{cls.round_dir(n)}/seed.json"

    @classmethod
    def prompts(cls, n: int) -> str:
        """`rounds/{n}/prompts.txt`."""
        return f"{cls.round_dir(n)}/prompts.txt"

    @classmethod
    def submissions(cls, n: int) -> str:
        """`rounds/{n}/submissions.json`."""
        return f"{cls.round_dir(n)}/submissions.json"

    @classmethod
    def require_audit(cls, n: int) -> str:
        """`rounds/{n}/require_audit.json`."""
        return f"{cls.round_dir(n)}/require_audit.json"

    @classmethod
    def builds(cls, n: int) -> str:
        """`rounds/{n}/builds.json`."""
        return f"{cls.round_dir(n)}/builds.json"

    @classmethod
    def generation_audits(cls, n: int) -> str:
        """`rounds/{n}/generation_audits.json`."""
        return f"{cls.round_dir(n)}/generation_audits.json"

    @classmethod
    def submitted(cls, n: int, hotkey: str) -> str:
        """`rounds/{n}/{hotkey}/submitted.json`."""
        return f"{cls.round_dir(n)}/{_checked_segment(hotkey, 'hotkey')}/submitted.json"

    @classmethod
    def generated(cls, n: int, hotkey: str) -> str:
        """`rounds/{n}/{hotkey}/generated.json`."""
        return f"{cls.round_dir(n)}/{_checked_segment(hotkey, 'hotkey')}/generated.json"

    @classmethod
    def pod_stats(cls, n: int, hotkey: str) -> str:
        """`rounds/{n}/{hotkey}/pod_stats.json`."""
        return f"{cls.round_dir(n)}/{_checked_segment(hotkey, 'hotkey')}/pod_stats.json"

    @classmethod
    def leader_generated(cls, n: int) -> str:
        """`rounds/{n}/leader/generated.json`."""
        return f"{cls.round_dir(n)}/leader/generated.json"


# --- parsing ------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def _first_problem(error: ValidationError) -> tuple[str, str]:
    """(what is wrong, dotted field path or "") of a validation error's first problem."""
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    return f"{first['msg']} (got {first.get('input')!r:.80})", loc


SkipHandler = Callable[[CompetitionFileError], None]
"""Told about each entry of another miner that was ignored because it does not validate."""


def _json_document(path: str, text: str | None) -> Any:
    if text is None:
        raise CompetitionFileError(path, "file is missing")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CompetitionFileError(path, f"not valid JSON ({e.msg} at line {e.lineno})") from e


def parse_competition_file(model: type[M], path: str, text: str | None) -> M:
    """Parse a JSON competition file; raise `CompetitionFileError` naming file and field."""
    data = _json_document(path, text)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problem, loc = _first_problem(e)
        raise CompetitionFileError(path, problem, field=loc or "<root>") from e


def _wrong_root(path: str, expected: str, data: object) -> CompetitionFileError:
    return CompetitionFileError(
        path, f"expected a JSON {expected}, got {type(data).__name__}", field="<root>"
    )


def _entry_error(path: str, hotkey: str, error: ValidationError) -> CompetitionFileError:
    """The first problem of one hotkey's entry; the field starts with the hotkey."""
    problem, loc = _first_problem(error)
    return CompetitionFileError(path, problem, field=f"{hotkey}.{loc}" if loc else hotkey)


def _keyed_entries(
    model: type[M], path: str, text: str | None, hotkey: str | None, on_skip: SkipHandler | None
) -> dict[str, M]:
    """A JSON object hotkey -> entry, validated entry by entry (see `parse_submissions`)."""
    data = _json_document(path, text)
    if not isinstance(data, dict):
        raise _wrong_root(path, "object", data)
    entries: dict[str, M] = {}
    for key, value in data.items():
        try:
            entries[key] = model.model_validate(value)
        except ValidationError as e:
            error = _entry_error(path, key, e)
            if key == hotkey:
                raise error from e
            if on_skip is not None:
                on_skip(error)
    return entries


def parse_submissions(
    path: str, text: str | None, hotkey: str | None = None, on_skip: SkipHandler | None = None
) -> SubmissionsFile:
    """submissions.json, entry by entry: the valid entries (file order).

    The file must be a JSON object. The entry of `hotkey` (the audited miner) must validate,
    else `CompetitionFileError` whose field starts with the hotkey; every other malformed entry
    is left out and passed to `on_skip`.
    """
    return SubmissionsFile(_keyed_entries(Submission, path, text, hotkey, on_skip))


def parse_builds(
    path: str, text: str | None, hotkey: str | None = None, on_skip: SkipHandler | None = None
) -> BuildsFile:
    """builds.json, entry by entry, like `parse_submissions` (an unknown status is malformed)."""
    return BuildsFile(_keyed_entries(BuildEntry, path, text, hotkey, on_skip))


def parse_require_audit(
    path: str, text: str | None, hotkey: str | None = None, on_skip: SkipHandler | None = None
) -> RequireAuditFile:
    """require_audit.json, entry by entry: one valid entry per hotkey (file order).

    The file must be a JSON list. As upstream, the first entry of a hotkey wins and later ones
    are ignored. The first entry of `hotkey` must validate, else `CompetitionFileError` whose
    field starts with the hotkey; another miner's malformed first entry drops that miner (passed
    to `on_skip`), and so does an entry whose `hotkey` is not a string.
    """
    data = _json_document(path, text)
    if not isinstance(data, list):
        raise _wrong_root(path, "list", data)
    seen: set[str] = set()
    entries: list[RequireAuditEntry] = []
    for index, value in enumerate(data):
        key = value.get("hotkey") if isinstance(value, dict) else None
        if not isinstance(key, str):
            if on_skip is not None:
                on_skip(
                    CompetitionFileError(path, "entry without a string hotkey", field=str(index))
                )
            continue
        if key in seen:
            continue
        seen.add(key)
        try:
            entries.append(RequireAuditEntry.model_validate(value))
        except ValidationError as e:
            error = _entry_error(path, key, e)
            if key == hotkey:
                raise error from e
            if on_skip is not None:
                on_skip(error)
    return RequireAuditFile(entries)


def stem_of(url: str) -> str:
    """The prompt's stem: the URL's file name without extension."""
    name = PurePosixPath(urlparse(url).path).name
    return name.rsplit(".", 1)[0] if "." in name else name


def parse_prompts(path: str, text: str | None) -> PromptsFile:
    """Parse prompts.txt (one image URL per line; blank lines ignored)."""
    if text is None:
        raise CompetitionFileError(path, "file is missing")
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parsed = urlparse(line)
        if parsed.scheme not in {"http", "https"}:
            raise CompetitionFileError(
                path, f"not an http(s) URL: {line!r}", field=f"line {lineno}"
            )
        stem = stem_of(line)
        try:
            _checked_segment(stem, "stem")
        except CompetitionFileError as e:
            raise CompetitionFileError(path, e.problem, field=f"line {lineno}") from e
        if stem in seen:
            raise CompetitionFileError(
                path, f"duplicate stem {stem!r} (also line {seen[stem]})", field=f"line {lineno}"
            )
        seen[stem] = lineno
        prompts.append(Prompt(url=line, stem=stem))
    return PromptsFile(prompts)


class RoundFiles(BaseModel):
    """Everything an audit reads about one round and one miner."""

    @field_validator("critical_prompts")
    @classmethod
    def _sorted(cls, v: list[str]) -> list[str]:
        return sorted(v)

    round: int
    hotkey: str
    seed: int
    prompts: list[Prompt]
    submitted: dict[str, GenerationEntry]
    critical_prompts: list[str]
    build: BuildEntry | None = None
    submission: Submission | None = None
    generated: dict[str, GenerationEntry] = Field(
        default_factory=dict,
        description="the miner's generated.json at the branch head (an audit resumes from it)",
    )

    def audited_stems(self) -> list[str]:
        """Upstream's audited set: submitted stems whose glb and png are both present."""
        return [stem for stem, entry in self.submitted.items() if not entry.is_failed()]
