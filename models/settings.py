"""The one settings model: environment variables (upstream names and defaults) parsed once.

Only `worker.py`, `starter.py` and `demo/` instantiate it. Invalid values fail at start-up with a
message naming the variable (`load_settings`). Decision thresholds are copied into an `AuditPolicy`
that travels in workflow history, so every audit records the policy it ran with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.audit import AuditPolicy, EarlyExit, ProviderName
from models.constants import DEFAULT_DINOV3_MODEL, GPU_TASK_QUEUE, TASK_QUEUE
from models.rounds import RoundPolicy


class SettingsError(ValueError):
    """Invalid configuration; the message names each bad environment variable."""


class Settings(BaseSettings):
    """Environment configuration. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # Temporal
    temporal_address: str = Field("localhost:7233", alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", alias="TEMPORAL_NAMESPACE")
    temporal_tls: bool = Field(False, alias="TEMPORAL_TLS")
    temporal_api_key: SecretStr | None = Field(None, alias="TEMPORAL_API_KEY")
    temporal_ui_url: str | None = Field(
        None,
        alias="TEMPORAL_UI_URL",
        description="Web UI base URL for printed links; derived from TEMPORAL_ADDRESS if unset",
    )
    task_queue: str = Field(TASK_QUEUE, min_length=1, alias="TASK_QUEUE")
    gpu_task_queue: str = Field(GPU_TASK_QUEUE, min_length=1, alias="GPU_TASK_QUEUE")

    # Competition repo and local storage
    competition_repo: str | None = Field(None, alias="COMPETITION_REPO")
    competition_branch: str = Field("main", alias="COMPETITION_BRANCH")
    work_dir: Path = Field(Path(".work"), alias="WORK_DIR")
    artifacts_dir: Path = Field(Path("artifacts"), alias="ARTIFACTS_DIR")
    artifact_store: Literal["auto", "local", "s3"] = Field(
        "auto", alias="ARTIFACT_STORE", description="auto: s3 when R2_ENDPOINT is set"
    )
    artifact_cache_bytes: int = Field(
        5 * 1024**3, ge=0, alias="ARTIFACT_CACHE_BYTES", description="s3: local cache bound"
    )
    local_artifacts_url: str = Field(
        "http://127.0.0.1:8790",
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
        alias="LOCAL_ARTIFACTS_URL",
        description="local store: base of the public URLs; a loopback one is served by the worker",
    )
    r2_access_key_id: SecretStr | None = Field(None, alias="R2_ACCESS_KEY_ID")
    r2_secret_access_key: SecretStr | None = Field(None, alias="R2_SECRET_ACCESS_KEY")
    r2_endpoint: str | None = Field(None, alias="R2_ENDPOINT")
    r2_bucket: str = Field("404-gen", min_length=3, alias="R2_BUCKET")
    r2_region: str = Field("auto", min_length=1, alias="R2_REGION")
    r2_object_acl: str | None = Field(
        None, alias="R2_OBJECT_ACL", description="e.g. public-read (MinIO, S3); R2 needs none"
    )
    storage_path_template: str = Field(
        "rounds/{round}/{hotkey}/generated/{filename}", alias="STORAGE_PATH_TEMPLATE"
    )
    cdn_url: str = Field("https://subnet404.xyz", alias="CDN_URL")
    dinov3_model: str = Field(DEFAULT_DINOV3_MODEL, alias="DINOV3_MODEL")
    dinov3_model_revision: str | None = Field(None, alias="DINOV3_MODEL_REVISION")

    # Providers (priority order)
    gpu_providers: Annotated[list[ProviderName], NoDecode] = Field(
        default_factory=lambda: [ProviderName.TARGON], alias="GPU_PROVIDERS"
    )
    targon_api_key: SecretStr | None = Field(None, alias="TARGON_API_KEY")
    targon_base_url: str = Field("https://api.targon.com", alias="TARGON_BASE_URL")
    verda_client_id: str | None = Field(None, alias="VERDA_CLIENT_ID")
    verda_client_secret: SecretStr | None = Field(None, alias="VERDA_CLIENT_SECRET")
    verda_base_url: str = Field("https://api.verda.com", alias="VERDA_BASE_URL")
    verda_generation_token: SecretStr | None = Field(None, alias="VERDA_GENERATION_TOKEN")
    # Not RUNPOD_API_KEY: RunPod sets that (scope-limited) in every pod, shadowing ours (upstream).
    runpod_api_key: SecretStr | None = Field(None, alias="RUNPOD_PROVIDER_API_KEY")
    runpod_base_url: str = Field("https://rest.runpod.io", alias="RUNPOD_BASE_URL")
    runpod_proxy_url: str = Field(
        "https://{pod_id}-{port}.proxy.runpod.net",
        alias="RUNPOD_PROXY_URL",
        description="how a pod is reached; {pod_id} and {port} are filled in",
    )
    runpod_gpu_type: str = Field("H200", alias="RUNPOD_GPU_TYPE")
    runpod_gpu_count: int = Field(1, ge=1, alias="RUNPOD_GPU_COUNT")
    provider_prices: dict[ProviderName, float] = Field(
        default_factory=dict,
        alias="PROVIDER_PRICES",
        description='JSON: provider -> USD per GPU-hour, e.g. {"targon": 3.99} (cost estimates)',
    )
    provider_breaker_failures: int = Field(3, ge=1, alias="PROVIDER_BREAKER_FAILURES")
    provider_breaker_cooldown_seconds: float = Field(300.0, ge=0, alias="PROVIDER_BREAKER_COOLDOWN")
    github_token: SecretStr | None = Field(None, alias="GITHUB_TOKEN")
    github_repo: str | None = Field(
        None, pattern=r"^[\w.-]+/[\w.-]+$", alias="GITHUB_REPO", description="owner/name"
    )
    github_api_url: str = Field("https://api.github.com", alias="GITHUB_API_URL")
    local_pods_dir: Path = Field(Path(".work/local-pods"), alias="LOCAL_PODS_DIR")
    local_miner_call_log: Path | None = Field(None, alias="LOCAL_MINER_CALL_LOG")
    local_images: dict[str, str] = Field(
        default_factory=dict,
        alias="LOCAL_IMAGES",
        description="JSON: docker image -> local/reference-miner?... it stands for",
    )
    local_pod_slowdown: dict[int, float] = Field(
        default_factory=dict,
        alias="LOCAL_POD_SLOWDOWN",
        description="JSON: pod index (upstream's i) -> factor on its miner's delay (benchmarks)",
    )
    local_pod_dies_after: dict[int, int] = Field(
        default_factory=dict,
        alias="LOCAL_POD_DIES_AFTER",
        description="JSON: pod index (upstream's i) -> generations its miner answers before it "
        "dies during the next (benchmarks)",
    )

    # Audit policy (upstream defaults)
    pods_per_miner: int = Field(4, ge=1, alias="PODS_PER_MINER")
    initial_pod_count: int = Field(2, ge=1, alias="INITIAL_POD_COUNT")
    max_pod_attempts: int = Field(6, ge=1, alias="MAX_POD_ATTEMPTS")
    max_prompt_attempts: int = Field(3, ge=1, alias="MAX_PROMPT_ATTEMPTS")
    pod_min_samples: int = Field(8, ge=1, alias="POD_MIN_SAMPLES")
    pod_failure_threshold: int = Field(8, ge=1, alias="POD_FAILURE_THRESHOLD")
    generation_median_limit_seconds: float = Field(90.0, gt=0, alias="GENERATION_MEDIAN_LIMIT")
    generation_median_trim_count: int = Field(6, ge=0, alias="GENERATION_MEDIAN_TRIM_COUNT")
    generation_timeout_seconds: float = Field(180.0, gt=0, alias="GENERATION_TIMEOUT")
    acceptable_distance: float = Field(0.1, ge=0, alias="ACCEPTABLE_DISTANCE")
    max_mismatched_prompts: int = Field(6, ge=0, alias="MAX_MISMATCHED_PROMPTS")
    max_mismatched_critical_prompts: int = Field(1, ge=0, alias="MAX_MISMATCHED_CRITICAL_PROMPTS")
    max_concurrent_miners: int = Field(4, ge=1, alias="MAX_CONCURRENT_MINERS")
    build_timeout_seconds: float = Field(10800.0, gt=0, alias="BUILD_TIMEOUT")
    check_build_interval_seconds: float = Field(120.0, gt=0, alias="CHECK_BUILD_INTERVAL")
    check_audit_interval_seconds: float = Field(120.0, gt=0, alias="CHECK_AUDIT_INTERVAL")
    min_check_state_interval_seconds: float = Field(120.0, gt=0, alias="MIN_CHECK_STATE_INTERVAL")
    max_check_state_interval_seconds: float = Field(1800.0, gt=0, alias="MAX_CHECK_STATE_INTERVAL")
    miner_start_stagger_seconds: float = Field(5.0, ge=0, alias="MINER_START_STAGGER")
    build_commit_message: str = Field(
        "submissions for round {current_round}", min_length=1, alias="BUILD_COMMIT_MESSAGE"
    )
    docker_image_format: str = Field(
        "europe-west3-docker.pkg.dev/gen-456515/active-competition/{hotkey10}:{tag}",
        alias="DOCKER_IMAGE_FORMAT",
    )
    generate_leader: bool = Field(True, alias="GENERATE_LEADER")
    generation_port: int = Field(10006, ge=1, le=65535, alias="GENERATION_PORT")
    pod_warmup_timeout_seconds: float = Field(3600.0, gt=0, alias="POD_WARMUP_TIMEOUT")
    pod_visibility_timeout_seconds: float = Field(1800.0, gt=0, alias="POD_VISIBILITY_TIMEOUT")
    max_glb_bytes: int = Field(256 * 1024 * 1024, ge=1, alias="MAX_GLB_BYTES")
    prompt_lock_timeout_seconds: float = Field(600.0, gt=0, alias="PROMPT_LOCK_TIMEOUT")
    warmup_half_window: int = Field(4, ge=1, alias="WARMUP_HALF_WINDOW")
    rolling_median_limit_seconds: float = Field(120.0, gt=0, alias="ROLLING_MEDIAN_LIMIT")
    retry_delta_min_samples: int = Field(3, ge=0, alias="RETRY_DELTA_MIN_SAMPLES")
    download_timeout_seconds: float = Field(180.0, gt=0, alias="DOWNLOAD_TIMEOUT")
    check_pod_interval_seconds: float = Field(30.0, gt=0, alias="CHECK_POD_INTERVAL")
    cpu_workers: int = Field(2, ge=1, alias="CPU_WORKERS")
    max_concurrent_activities: int = Field(200, ge=1, alias="MAX_CONCURRENT_ACTIVITIES")
    max_concurrent_workflow_tasks: int = Field(100, ge=1, alias="MAX_CONCURRENT_WORKFLOW_TASKS")
    max_concurrent_gpu_activities: int = Field(4, ge=1, alias="MAX_CONCURRENT_GPU_ACTIVITIES")
    pod_idle_check_seconds: float = Field(300.0, gt=0, alias="POD_IDLE_CHECK")
    pod_liveness_check_seconds: float = Field(120.0, gt=0, alias="POD_LIVENESS_CHECK")
    service_notice_seconds: float = Field(120.0, gt=0, alias="SERVICE_NOTICE")
    service_outage_limit_seconds: float = Field(21600.0, gt=0, alias="SERVICE_OUTAGE_LIMIT")
    pod_acquisition_retry_interval_seconds: float = Field(
        120.0, ge=0, alias="POD_ACQUISITION_RETRY_INTERVAL"
    )
    pod_acquisition_max_attempts: int = Field(720, ge=1, alias="POD_ACQUISITION_MAX_ATTEMPTS")
    pod_start_delay_seconds: float = Field(30.0, ge=0, alias="POD_START_DELAY")
    max_concurrent_prompts_per_pod: int = Field(4, ge=1, alias="MAX_CONCURRENT_PROMPTS_PER_POD")
    speculative_reexecution: bool = Field(False, alias="SPECULATIVE_REEXECUTION")
    generated_commit_interval_seconds: float = Field(600.0, ge=0, alias="GENERATED_COMMIT_INTERVAL")
    early_exit: EarlyExit = Field(EarlyExit.MISMATCH_LIMIT, alias="EARLY_EXIT")
    hf_token: SecretStr = Field(SecretStr(""), alias="HF_TOKEN")
    discord_webhook_url: SecretStr | None = Field(None, alias="DISCORD_WEBHOOK_URL")
    discord_progress_interval_seconds: float = Field(900.0, gt=0, alias="DISCORD_PROGRESS_INTERVAL")

    @field_validator("gpu_providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            names = [part.strip().lower() for part in value.split(",") if part.strip()]
            if not names:
                raise ValueError("must name at least one provider")
            return names
        return value

    @field_validator("cdn_url", "local_artifacts_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")  # upstream strips CDN_URL's trailing slash

    @field_validator("storage_path_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        try:
            value.format(round=1, hotkey="h", filename="f.glb")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"may use only {{round}}, {{hotkey}}, {{filename}}: {e}") from e
        if "{filename}" not in value:
            raise ValueError("must contain {filename}")
        return value

    @property
    def uses_s3(self) -> bool:
        """Whether artifacts go to the S3-compatible store (ARTIFACT_STORE; auto: R2_ENDPOINT)."""
        if self.artifact_store == "auto":
            return bool(self.r2_endpoint)
        return self.artifact_store == "s3"

    @model_validator(mode="after")
    def _invariants(self) -> Settings:
        # Upstream's validators (settings.py:259-274): a pod never retakes a prompt, so a
        # prompt's attempts need as many distinct pods.
        if self.initial_pod_count > self.pods_per_miner:
            raise ValueError("INITIAL_POD_COUNT must be <= PODS_PER_MINER")
        if self.max_prompt_attempts > self.pods_per_miner:
            raise ValueError(
                f"MAX_PROMPT_ATTEMPTS ({self.max_prompt_attempts}) must be <= PODS_PER_MINER "
                f"({self.pods_per_miner}): a pod never retakes a prompt it tried"
            )
        if self.min_check_state_interval_seconds > self.max_check_state_interval_seconds:
            raise ValueError("MIN_CHECK_STATE_INTERVAL must be <= MAX_CHECK_STATE_INTERVAL")
        if self.uses_s3 and not (
            self.r2_endpoint and self.r2_access_key_id and self.r2_secret_access_key
        ):
            raise ValueError(
                "the S3 artifact store needs R2_ENDPOINT, R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY"
            )
        if self.pods_per_miner > self.max_pod_attempts:
            raise ValueError(
                f"PODS_PER_MINER ({self.pods_per_miner}) must be <= MAX_POD_ATTEMPTS "
                f"({self.max_pod_attempts})"
            )
        return self

    def round_policy(self) -> RoundPolicy:
        """What the round loop runs with (recorded in its history)."""
        return RoundPolicy(
            check_audit_interval_seconds=self.check_audit_interval_seconds,
            min_check_state_interval_seconds=self.min_check_state_interval_seconds,
            max_check_state_interval_seconds=self.max_check_state_interval_seconds,
            max_concurrent_miners=self.max_concurrent_miners,
            miner_start_stagger_seconds=self.miner_start_stagger_seconds,
            check_build_interval_seconds=self.check_build_interval_seconds,
            build_timeout_seconds=self.build_timeout_seconds,
            build_commit_message=self.build_commit_message,
            docker_image_format=self.docker_image_format,
            track_builds=self.github_repo is not None,
            generate_leader=self.generate_leader,
            notify=self.discord_webhook_url is not None,
        )

    def audit_policy(self) -> AuditPolicy:
        """The decision thresholds an audit runs with (recorded in its history)."""
        return AuditPolicy(
            gpu_providers=list(self.gpu_providers),
            competition_repo=self.competition_repo,
            pods_per_miner=self.pods_per_miner,
            initial_pod_count=self.initial_pod_count,
            max_pod_attempts=self.max_pod_attempts,
            max_prompt_attempts=self.max_prompt_attempts,
            pod_min_samples=self.pod_min_samples,
            pod_failure_threshold=self.pod_failure_threshold,
            median_limit_seconds=self.generation_median_limit_seconds,
            trim_count=self.generation_median_trim_count,
            generation_timeout_seconds=self.generation_timeout_seconds,
            acceptable_distance=self.acceptable_distance,
            max_mismatched_prompts=self.max_mismatched_prompts,
            max_mismatched_critical_prompts=self.max_mismatched_critical_prompts,
            build_timeout_seconds=self.build_timeout_seconds,
            check_build_interval_seconds=self.check_build_interval_seconds,
            pod_warmup_timeout_seconds=self.pod_warmup_timeout_seconds,
            max_glb_bytes=self.max_glb_bytes,
            gpu_task_queue=self.gpu_task_queue,
            prompt_lock_timeout_seconds=self.prompt_lock_timeout_seconds,
            warmup_half_window=self.warmup_half_window,
            rolling_median_limit_seconds=self.rolling_median_limit_seconds,
            retry_delta_min_samples=self.retry_delta_min_samples,
            download_timeout_seconds=self.download_timeout_seconds,
            check_pod_interval_seconds=self.check_pod_interval_seconds,
            pod_idle_check_seconds=self.pod_idle_check_seconds,
            pod_liveness_check_seconds=self.pod_liveness_check_seconds,
            service_notice_seconds=self.service_notice_seconds,
            service_outage_limit_seconds=self.service_outage_limit_seconds,
            pod_acquisition_retry_interval_seconds=self.pod_acquisition_retry_interval_seconds,
            pod_acquisition_max_attempts=self.pod_acquisition_max_attempts,
            pod_visibility_timeout_seconds=self.pod_visibility_timeout_seconds,
            pod_start_delay_seconds=self.pod_start_delay_seconds,
            max_concurrent_prompts_per_pod=self.max_concurrent_prompts_per_pod,
            speculative_reexecution=self.speculative_reexecution,
            generated_commit_interval_seconds=self.generated_commit_interval_seconds,
            early_exit=self.early_exit,
            notify=self.discord_webhook_url is not None,
            progress_notice_seconds=self.discord_progress_interval_seconds,
            gpu_hour_prices=dict(self.provider_prices),
            gpus_per_pod={ProviderName.RUNPOD: self.runpod_gpu_count},
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; on bad values raise `SettingsError` naming each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = [str(p) for p in err.get("loc", ())]
            name = loc[0] if loc else "settings"
            field = Settings.model_fields.get(name)
            env = field.alias if field is not None and field.alias else name
            lines.append(f"{env}: {err['msg']} (got {err.get('input')!r:.60})")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from e
