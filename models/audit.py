"""Wire models of the audit: workflow inputs/results, signals between parent and pods, activity I/O.

Every workflow, activity and signal takes exactly one of these models. Payloads carry artifact
URIs, never GLB/PNG bytes. Inputs/results are frozen; new fields always get defaults.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.competition import GenerationAudit, GenerationEntry, PodStats, RoundFiles
from models.constants import GPU_TASK_QUEUE


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ProviderName(StrEnum):
    """GPU providers, in the spelling of GPU_PROVIDERS."""

    TARGON = "targon"
    VERDA = "verda"
    RUNPOD = "runpod"
    LOCAL = "local"


class AuditPolicy(_Frozen):
    """Thresholds an audit decides with (REFERENCE.md defaults); recorded in workflow history."""

    gpu_providers: list[ProviderName] = Field(default_factory=lambda: [ProviderName.TARGON])
    competition_repo: str | None = Field(
        None,
        description="COMPETITION_REPO of whoever started the audit (starter.py, the round loop): "
        "its reads and writes are refused by workers configured for another repo",
    )
    pods_per_miner: int = 4
    initial_pod_count: int = 2
    max_pod_attempts: int = 6
    max_prompt_attempts: int = 3
    pod_min_samples: int = 8
    pod_failure_threshold: int = 8
    median_limit_seconds: float = 90.0
    trim_count: int = 6
    generation_timeout_seconds: float = 180.0
    acceptable_distance: float = 0.1
    max_mismatched_prompts: int = 6
    max_mismatched_critical_prompts: int = 1
    build_timeout_seconds: float = 10800.0
    check_build_interval_seconds: float = 120.0
    pod_warmup_timeout_seconds: float = 3600.0
    max_glb_bytes: int = 256 * 1024 * 1024
    gpu_task_queue: str = Field(GPU_TASK_QUEUE, description="task queue of render/score workers")
    stop_early: bool = Field(True, description="stop once mismatches make the verdict final")
    generation_heartbeat_seconds: float = Field(
        20.0, gt=0, description="a generate call silent this long means its worker died"
    )
    pod_idle_check_seconds: float = Field(
        300.0,
        gt=0,
        description="a pod that has not heard from its audit this long checks that it still "
        "exists (busy or idle; pods of audits without the `pod-watchdog` marker: idle only)",
    )
    pod_liveness_check_seconds: float = Field(
        120.0, gt=0, description="how often the audit checks that its pod children still run"
    )
    service_notice_seconds: float = Field(
        120.0,
        gt=0,
        description="a call to our own services (render, score, store, prompts) unanswered this "
        "long makes the audit show waiting_for_service",
    )
    service_outage_limit_seconds: float = Field(
        21600.0,
        gt=0,
        description="how long a pod waits for our own services; past it the audit fails without "
        "a verdict (an outage of ours is never charged to the miner)",
    )
    assignment_overhead_seconds: float = Field(
        1800.0,
        gt=0,
        description="besides the generation's own timeouts, how long fetching, rendering and "
        "scoring one prompt may take before its pod counts as stuck",
    )
    # Upstream c263c11 rules added with AuditWorkflow v2 (REFERENCE.md sections 6-12).
    prompt_lock_timeout_seconds: float = Field(600.0, gt=0, description="PROMPT_LOCK_TIMEOUT")
    warmup_half_window: int = Field(4, ge=1, description="WARMUP_HALF_WINDOW")
    rolling_median_limit_seconds: float = Field(120.0, gt=0, description="ROLLING_MEDIAN_LIMIT")
    rolling_median_window: int = Field(8, ge=1, description="upstream's fixed window of 8")
    retry_delta_min_samples: int = Field(3, ge=0, description="RETRY_DELTA_MIN_SAMPLES")
    download_timeout_seconds: float = Field(180.0, gt=0, description="DOWNLOAD_TIMEOUT")
    check_pod_interval_seconds: float = Field(30.0, gt=0, description="CHECK_POD_INTERVAL")
    pod_acquisition_retry_interval_seconds: float = Field(
        120.0, ge=0, description="POD_ACQUISITION_RETRY_INTERVAL"
    )
    pod_acquisition_max_attempts: int = Field(720, ge=1, description="POD_ACQUISITION_MAX_ATTEMPTS")
    pod_visibility_timeout_seconds: float = Field(
        1800.0, gt=0, description="POD_VISIBILITY_TIMEOUT"
    )
    pod_start_delay_seconds: float = Field(30.0, ge=0, description="POD_START_DELAY")
    max_concurrent_prompts_per_pod: int = Field(
        4, ge=1, description="MAX_CONCURRENT_PROMPTS_PER_POD: loops per pod sharing its GPU slot"
    )
    speculative_reexecution: bool = Field(
        False,
        description="SPECULATIVE_REEXECUTION: at the tail an idle pod copies prompts a slower pod "
        "holds; the first final result wins, the other copies are revoked (ours, not upstream's)",
    )
    generated_commit_interval_seconds: float = Field(
        600.0, ge=0, description="at most one generated.json commit this often (upstream's batcher)"
    )
    early_exit: EarlyExit = Field(
        default_factory=lambda: EarlyExit.MISMATCH_LIMIT,
        description="when an audit stops generating before every prompt is settled",
    )
    notify: bool = Field(
        False, description="DISCORD_WEBHOOK_URL is set: the audit sends notices (`notify`)"
    )
    progress_notice_seconds: float = Field(
        900.0, gt=0, description="DISCORD_PROGRESS_INTERVAL: a progress notice this often"
    )
    gpu_hour_prices: dict[ProviderName, float] = Field(
        default_factory=dict, description="PROVIDER_PRICES: USD per GPU-hour (cost estimates)"
    )
    gpus_per_pod: dict[ProviderName, int] = Field(
        default_factory=dict, description="GPUs a pod of each provider rents (default 1)"
    )


class EarlyExit(StrEnum):
    """When an audit stops generating early (the written entry is upstream's formula either way)."""

    MISMATCH_LIMIT = "mismatch_limit"
    """Upstream: once 2 x MAX_MISMATCHED_PROMPTS prompts are final mismatches."""
    VERDICT_FINAL = "verdict_final"
    """Ours, opt-in: as soon as the mismatches already exceed a tolerance (saves rented time)."""
    NEVER = "never"
    """Generate every prompt whatever the mismatches."""


# --- workflows ----------------------------------------------------------------------------------


class AuditInput(_Frozen):
    """Input of AuditWorkflow (`temporal workflow start --input '{"round": 1, "hotkey": "X"}'`).

    `policy` overrides the worker's configured policy for this audit only.
    """

    round: int
    hotkey: str
    policy: AuditPolicy | None = None
    resume: bool = Field(
        True,
        description="resume from the miner's generated.json (False: a deliberate re-audit)",
    )
    state: AuditState | None = Field(None, description="set only by continue-as-new (v1 runs)")
    run: AuditRun | None = Field(None, description="set only by continue-as-new (v2 runs)")


class PodCost(_Frozen):
    """What one rented pod cost (seconds of wall-clock rental; extra pod_stats.json fields).

    Rented: deploy answered -> delete answered. Warm-up: deploy -> /health 200 (all of it when
    never healthy). Productive: the pod's generation times. Wasted: all of a bad or never
    healthy pod, else warm-up + idle (rented - warm-up - productive).
    """

    provider: ProviderName
    rented_seconds: float = 0.0
    warmup_seconds: float = 0.0
    productive_seconds: float = 0.0
    wasted_seconds: float = 0.0
    gpu_seconds: float = Field(0.0, description="rented seconds x GPUs per pod")
    estimated_cost_usd: float | None = Field(None, description="None: no PROVIDER_PRICES entry")


class AuditCost(_Frozen):
    """The sum of an audit's pod costs (pods that never got as far as a deploy cost nothing)."""

    pods: int = 0
    rented_seconds: float = 0.0
    warmup_seconds: float = 0.0
    productive_seconds: float = 0.0
    wasted_seconds: float = 0.0
    gpu_seconds: float = 0.0
    estimated_cost_usd: float | None = None


class AuditResult(_Frozen):
    """Result of AuditWorkflow: the generation_audits.json entry plus what it cost."""

    audit: GenerationAudit
    commit: str | None = Field(None, description="commit that wrote the results, None if unchanged")
    generations: int = Field(0, description="generate calls made by this audit (all attempts)")
    pods_started: int = 0
    early_exit: bool = False
    report_url: str | None = Field(
        None, description="the audit's HTML report (published beside its previews), if written"
    )
    cost: AuditCost | None = Field(None, description="rented GPU time and its estimated cost")


class AuditStatus(StrEnum):
    """Value of the AuditStatus search attribute and of the progress query."""

    READING = "reading"
    WAITING_FOR_BUILD = "waiting_for_build"
    GENERATING = "generating"
    WAITING_FOR_SERVICE = "waiting_for_service"
    """A pod waits for one of our services (GPU queue, store): nothing is charged meanwhile."""
    WRITING = "writing"
    PASSED = "passed"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AuditProgress(_Frozen):
    """Answer of AuditWorkflow's `progress` query."""

    status: AuditStatus
    total: int = 0
    done: int = 0
    in_flight: int = 0
    mismatches: int = 0
    critical_mismatches: int = 0
    pods_active: int = 0
    pods_started: int = 0
    waiting_for: list[str] = Field(
        default_factory=list, description="our services pods are waiting for (an outage)"
    )
    median_seconds: float | None = Field(
        None, description="median generation time of the done prompts so far (seconds)"
    )
    pods: list[PodProgress] = Field(default_factory=list, description="every pod started")


class PodProgress(_Frozen):
    """One pod of an audit as the `progress` query shows it (the status board's pod column)."""

    index: int
    pod_name: str
    phase: PodPhase
    waiting_for: str | None = None
    in_flight: int = 0
    processed: int = 0
    successful: int = 0
    failed: int = 0


class NotifyInput(_Frozen):
    """Input of `notify`: one Discord-compatible embed (upstream's notices, REFERENCE sec. 17)."""

    title: str
    description: str
    color: int = Field(description="embed colour, e.g. 0x2ECC71 green, 0xE74C3C red")


class PodRef(_Frozen):
    """A rented pod: enough to reach it and to delete it."""

    name: str
    provider: ProviderName
    container_id: str | None = None
    url: str | None = None
    deployed_at: datetime | None = Field(None, description="when deploy_pod got the pod")
    healthy_at: datetime | None = Field(None, description="when /health first answered 200")


class PodCarry(_Frozen):
    """PodWorkflow state carried across its continue-as-new."""

    pod: PodRef
    stats: PodStats
    times: list[float] = Field(default_factory=list)
    mismatches: int = 0
    seen_assignments: list[str] = Field(default_factory=list)
    pending: list[Assignment] = Field(default_factory=list)
    stop: StopPod | None = None
    failed_attempts: list[PodCost] = Field(default_factory=list)


class PodInput(_Frozen):
    """Input of PodWorkflow (id `audit-{round}-{hotkey}-pod-{slot}-{attempt}`)."""

    audit_workflow_id: str
    audit_run_id: str = Field("", description="first run id of the audit's run chain")
    round: int
    hotkey: str
    slot: int
    attempt: int
    pod_name: str
    provider: ProviderName
    image: str
    seed: int
    policy: AuditPolicy
    # carried across the pod's own continue-as-new
    carried: PodCarry | None = None
    protocol: int = Field(
        1, description="1: pods of v1 audits (per-slot attempts); 2: v2 (upstream acquisition)"
    )


class PodWorkflowResult(_Frozen):
    """Result of PodWorkflow (the parent learns it through the `pod_finished` signal)."""

    stats: PodStats


class Assignment(_Frozen):
    """Signal parent -> pod: generate this prompt. id = `stem#attempt` (dedup key)."""

    assignment_id: str
    stem: str
    attempt: int
    prompt_url: str
    submitted_glb_url: str | None = None
    submitted_png_url: str | None = Field(
        None,
        description="the submitted preview (upstream compares with it); set by audits with the "
        "`compare-submitted-png` marker, else the pod renders the submitted GLB itself",
    )


class PodReady(_Frozen):
    """Signal pod -> parent: the pod is healthy and wants work."""

    event: Literal["pod_ready"] = "pod_ready"
    audit_run_id: str = ""
    pod_workflow_id: str = Field("", description="the sender (a foreign run's pod is stopped)")
    slot: int
    attempt: int
    pod_name: str
    provider: ProviderName | None = Field(None, description="where the pod was rented")


class PromptResultKind(StrEnum):
    """How one generation attempt ended."""

    GENERATED = "generated"
    FAILED = "failed"


class PromptResult(_Frozen):
    """Signal pod -> parent: one assignment's outcome (also means "ready for more")."""

    event: Literal["pod_result"] = "pod_result"
    audit_run_id: str = ""
    pod_workflow_id: str = Field("", description="the sender (a foreign run's pod is stopped)")
    slot: int
    attempt: int
    pod_name: str = ""
    assignment_id: str
    stem: str
    outcome: PromptResultKind
    glb_uri: str | None = None
    png_uri: str | None = None
    size: int | None = None
    generation_time: float | None = None  # seconds
    distance: float | None = None
    error: str | None = None
    error_type: str | None = Field(None, description="ErrorType of a failure, when known")


class PodFinished(_Frozen):
    """Signal pod -> parent: the pod is gone (stopped, bad, failed to deploy)."""

    event: Literal["pod_finished"] = "pod_finished"
    audit_run_id: str = ""
    pod_workflow_id: str = Field("", description="the sender (a foreign run's pod is stopped)")
    slot: int
    attempt: int
    pod_name: str
    stats: PodStats
    marked_bad: bool = False
    deployed: bool = True
    reason: str = ""
    unfinished_assignment: str | None = None
    cost: PodCost | None = Field(None, description="rental times (pod-cost patch); no productive")
    failed_attempts: list[PodCost] = Field(
        default_factory=list,
        description="pods rented by this slot's failed acquisition attempts (all wasted)",
    )


class PodWaiting(_Frozen):
    """Signal pod -> parent: a call to one of our services has not answered for a while (or
    has now); the audit shows waiting_for_service meanwhile."""

    event: Literal["pod_waiting"] = "pod_waiting"
    audit_run_id: str = ""
    pod_workflow_id: str = ""
    slot: int
    attempt: int
    pod_name: str
    service: str
    waiting: bool


PodEvent = Annotated[
    PodReady | PromptResult | PodFinished | PodWaiting, Field(discriminator="event")
]
"""Anything a pod tells its parent; the parent's inbox holds these in arrival order."""


class StopPod(_Frozen):
    """Signal parent -> pod: no more work; delete the pod and finish."""

    reason: str = "audit finished"


# --- activities ---------------------------------------------------------------------------------


class ReadRoundFilesInput(_Frozen):
    """Input of `read_round_files`."""

    round: int
    hotkey: str
    competition_repo: str | None = Field(
        None, description="the audit's COMPETITION_REPO: a worker configured for another refuses"
    )


class JsonFileWrite(_Frozen):
    """One file of a commit. With `merge_key`, `value` is set at that key of the JSON object
    already at the branch head (re-read on every retry, so concurrent writers are merged)."""

    path: str
    value: object
    merge_key: str | None = None


class WriteFilesInput(_Frozen):
    """Input of `write_files`: several files in one commit."""

    message: str
    files: list[JsonFileWrite]
    competition_repo: str | None = Field(
        None, description="the audit's COMPETITION_REPO: a worker configured for another refuses"
    )


class WriteFilesResult(_Frozen):
    """Result of `write_files`; commit is None when nothing changed (no empty commits)."""

    commit: str | None


class DeployPodInput(_Frozen):
    """Input of `deploy_pod`; idempotent by `name`."""

    name: str
    provider: ProviderName
    image: str


class AwaitPodHealthyInput(_Frozen):
    """Input of `await_pod_healthy` (heartbeating poll).

    With `visibility_timeout` (v2 pods), a pod the provider has not listed with a URL within it
    fails with POD_NOT_VISIBLE (the pod workflow deletes it and retries the acquisition), and
    `timeout` (the warm-up) counts from visibility. `poll_interval` overrides the worker's.
    """

    pod: PodRef
    timeout: timedelta
    visibility_timeout: timedelta | None = None
    poll_interval: timedelta | None = None


class DeletePodInput(_Frozen):
    """Input of `delete_pod`; an already-gone pod is success."""

    pod: PodRef


class SweepPodsInput(_Frozen):
    """Input of `sweep_pods`: delete every pod whose name starts with `prefix`."""

    prefix: str
    providers: list[ProviderName]


class SweepPodsResult(_Frozen):
    """Result of `sweep_pods`."""

    deleted: list[str] = Field(default_factory=list)


class FetchPromptInput(_Frozen):
    """Input of `fetch_prompt`: the prompt image, downloaded once per (round, URL)."""

    round: int
    url: str


class PrefetchPromptsInput(_Frozen):
    """Input of `prefetch_prompts`: every prompt image of an audit, cached before pods ask."""

    round: int
    urls: list[str]


class PrefetchPromptsResult(_Frozen):
    """Result of `prefetch_prompts`: prompts that can never be fetched (url -> why)."""

    unavailable: dict[str, str] = Field(default_factory=dict)


class GenerateInput(_Frozen):
    """Input of `generate`: call the miner once and store the GLB.

    Idempotent by (`audit_id`, `assignment_id`): a rerun after success returns the stored result
    without calling the miner again.
    """

    audit_id: str
    assignment_id: str
    round: int
    provider: ProviderName
    pod_url: str
    prompt_url: str
    seed: int
    timeout: timedelta
    max_bytes: int
    download_timeout: timedelta | None = Field(
        None,
        description="set by v2 pods: the read timeout is timeout + this, per socket read, and a "
        "slower generation keeps its real time (upstream); None: `timeout` bounds the whole call",
    )


class GenerateResult(_Frozen):
    """Result of `generate`."""

    glb_uri: str
    size: int
    generation_time: float  # seconds, request sent -> response headers


class FetchArtifactInput(_Frozen):
    """Input of `fetch_artifact`: download a URL into the artifact store (cached by URL)."""

    url: str
    max_bytes: int


class ArtifactResult(_Frozen):
    """An artifact store URI."""

    uri: str
    size: int


class RenderPreviewInput(_Frozen):
    """Input of `render_preview` (gpu queue): GLB URI -> 2x2 PNG preview URI."""

    glb_uri: str
    stem: str | None = Field(None, description="the prompt (traces and logs; not the cache key)")


class ScoreDistanceInput(_Frozen):
    """Input of `score_distance` (gpu queue): DINOv3 distance between two PNG previews."""

    png_a_uri: str
    png_b_uri: str
    stem: str | None = Field(None, description="the prompt (traces and logs)")


class ScoreDistanceResult(_Frozen):
    """Result of `score_distance`: 1 - cosine similarity of the CLS embeddings."""

    distance: float


class PodHealthInput(_Frozen):
    """Input of `check_pod_health`."""

    pod: PodRef


# --- AuditWorkflow state (carried across continue-as-new) ----------------------------------------


class PromptState(BaseModel):
    """One submitted stem's progress in an audit."""

    stem: str
    url: str
    submitted_glb_url: str | None = None
    attempts: int = 0
    tried_on: list[str] = Field(default_factory=list, description="pod names already tried")
    in_flight: str | None = Field(None, description="outstanding assignment id")
    entry: GenerationEntry | None = None
    done: bool = False


class SlotStatus(StrEnum):
    """Lifecycle of a pod slot's current attempt."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    FINISHED = "finished"


class SlotState(BaseModel):
    """One pod slot; `attempt` counts replacements (a new pod per attempt)."""

    slot: int
    attempt: int
    provider: ProviderName
    pod_name: str
    workflow_id: str
    status: SlotStatus = SlotStatus.STARTING
    assignment: str | None = None
    ever_ready: bool = False


class AuditState(BaseModel):
    """Everything AuditWorkflow knows; passed whole to continue-as-new."""

    round_files: RoundFiles
    policy: AuditPolicy
    image: str
    run_chain_id: str = Field("", description="first run id: keys this audit's side effects")
    prompts: dict[str, PromptState]
    slots: list[SlotState] = Field(default_factory=list)
    inbox: list[PodEvent] = Field(default_factory=list)
    pod_stats: dict[str, PodStats] = Field(default_factory=dict)
    generations: int = 0
    pods_started: int = 0
    any_pod_ready: bool = False
    early_exit: bool = False
    expanded: bool = False


# --- AuditWorkflow v2 state (upstream c263c11 coordinator and trackers) -----------------------


class QueuedPrompt(BaseModel):
    """One audited stem: upstream's PromptEntry (prompt_coordinator.py), in prompts.txt order."""

    stem: str
    url: str
    submitted_glb_url: str | None = None
    attempts: int = Field(0, description="results recorded (upstream's `attempts`)")
    attempted_by: list[str] = Field(
        default_factory=list, description="short ids of pods that were assigned it"
    )
    locked_by: str | None = None
    lock_expires: datetime | None = None
    best: GenerationEntry | None = None
    done: bool = False
    issued: int = Field(0, description="assignments handed out; the next id is stem#issued+1")


class PodTracker(BaseModel):
    """Upstream's PodTracker counters for one pod (pod_tracker.py); pure data."""

    processed: int = 0
    successful: int = 0
    hard_failed: int = 0
    hard_overtime: int = 0
    performance_samples: list[float] = Field(
        default_factory=list, description="times of fresh (non-retry) successes, in order"
    )
    marked_bad: bool = False
    termination_reason: str = "stopped"
    retry_cumulative_delta: float = 0.0
    retry_delta_count: int = 0


class PodPhase(StrEnum):
    """Where one pod of a v2 audit is."""

    ACQUIRING = "acquiring"
    READY = "ready"
    STOPPING = "stopping"
    FINISHED = "finished"


class Outstanding(BaseModel):
    """An assignment handed to a pod and not yet answered."""

    assignment_id: str
    stem: str
    is_retry: bool
    issued_at: datetime | None = Field(
        None, description="when it was handed out (keyed audits: the busy-slot deadline)"
    )
    speculative: bool = Field(
        False, description="a copy of a prompt another pod holds (SPECULATIVE_REEXECUTION)"
    )


class AuditPod(BaseModel):
    """One started pod of a v2 audit (index i = upstream's i-th start; name miner-NN-hk10-i)."""

    index: int
    pod_name: str
    workflow_id: str
    phase: PodPhase = PodPhase.ACQUIRING
    ever_ready: bool = False
    waiting_for: str | None = Field(None, description="our service it waits for (an outage)")
    outstanding: list[Outstanding] = Field(default_factory=list)
    tracker: PodTracker = Field(default_factory=PodTracker)
    productive_seconds: float = Field(0.0, description="sum of its results' generation times")
    last_result_at: datetime | None = Field(
        None, description="when its latest result arrived (its current generation began about then)"
    )
    cost: PodCost | None = None
    failed_attempts: list[PodCost] = Field(default_factory=list)
    provider: ProviderName | None = Field(None, description="from pod_ready (notices)")


class AuditRun(BaseModel):
    """Everything a v2 AuditWorkflow knows; passed whole to continue-as-new."""

    round_files: RoundFiles
    policy: AuditPolicy
    image: str
    run_chain_id: str = Field("", description="first run id: keys this audit's side effects")
    prompts: dict[str, QueuedPrompt] = Field(default_factory=dict)
    pods: list[AuditPod] = Field(default_factory=list)
    inbox: list[PodEvent] = Field(default_factory=list)
    pod_stats: dict[str, PodStats] = Field(default_factory=dict, description="in finishing order")
    generations: int = 0
    pods_started: int = 0
    starts_wanted: int = Field(0, description="pods to start, POD_START_DELAY apart")
    next_start_at: datetime | None = None
    expanded: bool = False
    early_stop: str | None = Field(None, description="why generation stopped before all was done")
    generated_dirty: bool = False
    stats_dirty: bool = False
    last_commit_at: datetime | None = None


class PublishReportInput(_Frozen):
    """Input of `publish_report`: build the audit's HTML page from the repo and publish it."""

    round: int
    hotkey: str
    policy: AuditPolicy = Field(description="the thresholds the audit ran with (shown on the page)")
    competition_repo: str | None = None
    pods_by_stem: dict[str, list[str]] = Field(
        default_factory=dict, description="short ids of the pods assigned each prompt"
    )


class PublishReportResult(_Frozen):
    """Result of `publish_report`: the page's public URL."""

    url: str
