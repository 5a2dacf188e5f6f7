"""Inputs, results and state of the workflows that run rounds: RoundWorkflow (the competition
loop), BuildTrackingWorkflow (builds.json from GitHub Actions) and LeaderGenerationWorkflow.

Upstream's stage rules and intervals are in shared/REFERENCE.md sec. 3-4 (c263c11
generation_iteration.py, build_tracker.py).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from models.audit import AuditPolicy, AuditRun
from models.competition import BuildEntry, RoundFiles, StateFile, Submission

GENERATING_STAGES = frozenset({"miner_generation", "downloading", "duels"})
"""Stages in which upstream generates (generation_iteration.py:43-74, 203-296)."""

LEADER_HOTKEY = "leader"
"""The hotkey the leader's outputs are written under (`rounds/{n}/leader/...`)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoundPolicy(_Frozen):
    """What the round loop runs with (from settings; recorded in each run's history)."""

    check_audit_interval_seconds: float = 120.0
    min_check_state_interval_seconds: float = 120.0
    max_check_state_interval_seconds: float = 1800.0
    max_concurrent_miners: int = 4
    miner_start_stagger_seconds: float = 5.0
    check_build_interval_seconds: float = 120.0
    build_timeout_seconds: float = 10800.0
    build_commit_message: str = "submissions for round {current_round}"
    docker_image_format: str = (
        "europe-west3-docker.pkg.dev/gen-456515/active-competition/{hotkey10}:{tag}"
    )
    track_builds: bool = Field(
        True, description="run BuildTrackingWorkflow (False: builds.json is written by others)"
    )
    generate_leader: bool = True
    notify: bool = Field(
        False, description="DISCORD_WEBHOOK_URL is set: loop errors are sent as notices"
    )


class RoundSnapshot(_Frozen):
    """What the round loop reads from the branch head each tick (`read_round_snapshot`)."""

    state: StateFile
    submissions: dict[str, Submission] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list, description="require_audit.json hotkeys")
    audited: list[str] = Field(
        default_factory=list, description="hotkeys with a verdict in generation_audits.json"
    )
    builds: dict[str, BuildEntry] = Field(default_factory=dict)
    leader_image: str | None = Field(None, description="the last leader.json entry's docker")
    prompt_count: int = Field(0, description="unused, never filled; kept so histories decode")


class ReadRoundSnapshotInput(_Frozen):
    """Input of `read_round_snapshot`: the round to read (None: only state.json's round)."""

    round: int | None = None


class RoundInput(_Frozen):
    """Input of RoundWorkflow (id `competition`; `temporal workflow start --input '{}'`)."""

    policy: RoundPolicy | None = None
    audit_policy: AuditPolicy | None = None
    carried: RoundCarry | None = Field(None, description="set only by continue-as-new")


class RoundCarry(_Frozen):
    """What a RoundWorkflow run hands to the next one."""

    round: int | None = None
    started: list[str] = Field(default_factory=list, description="hotkeys audited this round")
    running: list[str] = Field(default_factory=list, description="workflow ids still running")
    finished: list[str] = Field(default_factory=list)
    last_start_at: datetime | None = None
    leader_tried: str | None = Field(None, description="leader image already run this round")
    builds_started: bool = False


class RoundStatus(_Frozen):
    """The `status` query of RoundWorkflow: what an operator sees in the Web UI."""

    round: int | None = None
    stage: str | None = None
    phase: str = "starting"
    running: list[str] = Field(default_factory=list)
    waiting: list[str] = Field(default_factory=list, description="required, not started yet")
    finished: list[str] = Field(default_factory=list)


class BuildTrackingInput(_Frozen):
    """Input of BuildTrackingWorkflow (id `builds-{round}`)."""

    round: int
    policy: RoundPolicy = Field(default_factory=RoundPolicy)
    run_id: int | None = Field(None, description="carried: the Actions run once found")
    run_found_at: datetime | None = Field(None, description="carried: BUILD_TIMEOUT runs from it")
    round_workflow_id: str | None = Field(None, description="woken after each builds.json change")


class BuildTrackingResult(_Frozen):
    """Result of BuildTrackingWorkflow: every build's final status."""

    round: int
    builds: dict[str, BuildEntry]
    run_id: int | None = None


class BuildSettled(_Frozen):
    """Signal `build_settled` to an AuditWorkflow: its miner's build is terminal."""

    hotkey: str
    build: BuildEntry


RoundInput.model_rebuild()


class LeaderInput(_Frozen):
    """Input of LeaderGenerationWorkflow (id `leader-{round}`)."""

    round: int
    policy: AuditPolicy | None = None
    run: AuditRun | None = Field(None, description="set only by continue-as-new")


class LeaderResult(_Frozen):
    """Result of LeaderGenerationWorkflow."""

    round: int
    image: str
    generated: int = Field(description="prompts with an output in leader/generated.json")
    failed: int = Field(0, description="prompts whose every attempt failed")
    prompts: int
    commit: str | None = None
    pods_started: int = 0
    deploy_failed: bool = False


class ReadLeaderFilesInput(_Frozen):
    """Input of `read_leader_files`."""

    round: int
    competition_repo: str | None = Field(
        None, description="the audit's COMPETITION_REPO: a worker configured for another refuses"
    )


class LeaderFiles(_Frozen):
    """What the leader run reads: the round (hotkey `leader`, no submissions) and the image."""

    files: RoundFiles
    image: str


class WorkflowStatusesInput(_Frozen):
    """Input of `workflow_statuses`: workflow ids to look up."""

    ids: list[str]


class WorkflowStatusesResult(_Frozen):
    """id -> RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED, TIMED_OUT, CONTINUED_AS_NEW or
    NOT_FOUND (the latest run of each id)."""

    statuses: dict[str, str]
